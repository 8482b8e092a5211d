// cac::io::load_state_dict, state_dict_of and key maps, including an mmseg-shaped checkpoint
// synthesized from a key list that tests/fixtures/io/make_io_fixtures.py transcribed from
// mmsegmentation's module definitions. The zoo's checkpoint conversions are tested with the zoo
// (tests/models/test_converters.cpp).

#include "io/io_test_support.hpp"

using namespace io_test;

namespace {

// conv (with bias) -> batch norm -> linear: parameters, buffers and an int64 counter.
struct NetImpl : torch::nn::Module {
  NetImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)));
    bn = register_module("bn", torch::nn::BatchNorm2d(4));
    fc = register_module("fc", torch::nn::Linear(4, 2));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(Net);

cac::io::StateDict filled(const cac::io::StateDict& like, double value) {
  cac::io::StateDict out;
  for (const auto& [key, t] : like) out[key] = torch::full_like(t, value);
  return out;
}

// Tensors of the shapes in a keys.json (random floats; int64 counters), as a checkpoint would have.
cac::io::StateDict synthesize(const nlohmann::json& keys) {
  torch::manual_seed(0);
  cac::io::StateDict out;
  for (const auto& [key, shape] : keys.items()) {
    const auto sizes = shape.get<std::vector<int64_t>>();
    out[key] = key.size() > 19 && key.compare(key.size() - 19, 19, "num_batches_tracked") == 0
                   ? torch::full(sizes, 160000, torch::kLong)
                   : torch::randn(sizes);
  }
  return out;
}

}  // namespace

TEST_CASE("state_dict_of lists parameters and buffers", "[io][load]") {
  Net net;
  const auto sd = cac::io::state_dict_of(*net);
  const std::vector<std::string> expected = {"bn.bias",         "bn.num_batches_tracked",
                                             "bn.running_mean", "bn.running_var",
                                             "bn.weight",       "conv.bias",
                                             "conv.weight",     "fc.bias",
                                             "fc.weight"};
  std::vector<std::string> keys;
  for (const auto& entry : sd) keys.push_back(entry.first);
  CHECK(keys == expected);
  CHECK(sd.at("bn.num_batches_tracked").scalar_type() == torch::kLong);
}

TEST_CASE("load_state_dict copies parameters and buffers", "[io][load]") {
  Net source, target;
  {
    torch::NoGradGuard no_grad;
    source->bn->running_mean.uniform_(-1, 1);
    source->bn->running_var.uniform_(1, 2);
    source->bn->num_batches_tracked.fill_(42);
  }
  const auto report = cac::io::load_state_dict(*target, cac::io::state_dict_of(*source));
  CHECK(report.ok());
  CHECK(report.loaded_keys.size() == 9);
  for (const auto& [key, t] : cac::io::state_dict_of(*target)) {
    INFO(key);
    CHECK(torch::equal(t, cac::io::state_dict_of(*source).at(key)));
  }
  CHECK(target->bn->num_batches_tracked.item<int64_t>() == 42);
  CHECK(target->conv->weight.requires_grad());  // still a parameter
}

TEST_CASE("strict loading of a mismatched checkpoint lists exactly the bad keys", "[io][load]") {
  Net net;
  auto sd = filled(cac::io::state_dict_of(*net), 0.5);
  sd.erase("fc.bias");                            // missing
  sd["fc.extra"] = torch::ones(3);                // unexpected
  sd["conv.weight"] = torch::ones({5, 3, 3, 3});  // other shape
  sd.erase("bn.num_batches_tracked");             // allowed to be missing by default

  SECTION("strict: throws, lists them, copies nothing") {
    const auto before = net->fc->weight.clone();
    const auto message = error_of([&] { cac::io::load_state_dict(*net, sd); });
    CHECK_THAT(message,
               Catch::Contains("cac::io::load_state_dict: expected the checkpoint's keys and shapes to match"));
    CHECK_THAT(message, Catch::Contains("missing keys:\n  fc.bias\n"));
    CHECK_THAT(message, Catch::Contains("unexpected keys:\n  fc.extra\n"));
    CHECK_THAT(message,
               Catch::Contains("shape mismatches:\n  conv.weight: checkpoint [5, 3, 3, 3], module [4, 3, 3, 3]"));
    CHECK_THAT(message, !Catch::Contains("num_batches_tracked"));
    CHECK(torch::equal(net->fc->weight, before));
  }
  SECTION("non-strict: copies the rest and reports") {
    const auto report = cac::io::load_state_dict(*net, sd, cac::io::LoadOptions().strict(false));
    CHECK(report.missing_keys == std::vector<std::string>{"fc.bias"});
    CHECK(report.unexpected_keys == std::vector<std::string>{"fc.extra"});
    REQUIRE(report.mismatched_keys.size() == 1);
    CHECK(report.mismatched_keys[0].key == "conv.weight");
    CHECK(report.mismatched_keys[0].checkpoint_shape == std::vector<int64_t>{5, 3, 3, 3});
    CHECK(report.loaded_keys.size() == 6);
    CHECK(torch::all(net->fc->weight == 0.5).item<bool>());
  }
  SECTION("num_batches_tracked reported when asked") {
    const auto report = cac::io::load_state_dict(
        *net, sd, cac::io::LoadOptions().strict(false).allow_missing_num_batches_tracked(false));
    CHECK(report.missing_keys == std::vector<std::string>{"bn.num_batches_tracked", "fc.bias"});
  }
}

TEST_CASE("prefix stripping and key maps", "[io][load]") {
  Net net;
  cac::io::StateDict sd;
  for (const auto& [key, t] : filled(cac::io::state_dict_of(*net), 2.0)) sd["module." + key] = t;
  SECTION("strip_prefix") {
    CHECK(cac::io::load_state_dict(*net, sd, cac::io::LoadOptions().strip_prefix("module.")).ok());
    CHECK(torch::all(net->bn->weight == 2.0).item<bool>());
  }
  SECTION("key map after stripping") {
    cac::io::StateDict renamed;
    for (const auto& [key, t] : sd) renamed[key == "module.fc.weight" ? "module.classifier.weight" : key] = t;
    const auto options = cac::io::LoadOptions().strip_prefix("module.").key_map({{"classifier.", "fc."}});
    CHECK(cac::io::load_state_dict(*net, renamed, options).ok());
  }
  SECTION("two keys mapping to one") {
    sd["fc.weight"] = torch::ones({2, 4});
    CHECK_THAT(error_of([&] { cac::io::load_state_dict(*net, sd, cac::io::LoadOptions().strip_prefix("module.")); }),
               Catch::Contains("two checkpoint keys map to 'fc.weight'"));
  }
  SECTION("dtype conversion as copy_ does") {
    cac::io::StateDict half;
    for (const auto& [key, t] : sd) half[key] = t.is_floating_point() ? t.to(torch::kHalf) : t;
    CHECK(cac::io::load_state_dict(*net, half, cac::io::LoadOptions().strip_prefix("module.")).ok());
    CHECK(net->conv->weight.scalar_type() == torch::kFloat);
  }
}

TEST_CASE("an mmseg-shaped FCN-MobileNetV2 checkpoint round-trips bit-exactly", "[io][mmseg]") {
  const auto keys = read_json(fixture("mmseg_fcn_mobilenetv2.keys.json"));
  CHECK(keys["keys"].size() == 334);  // 306 backbone + 20 decode + 8 auxiliary keys (see the script)
  const auto sd = synthesize(keys["keys"]);
  TempDir dir;
  cac::io::write_state_dict(sd, dir.file("fcn.pth"));
  const auto back = cac::io::read_state_dict(dir.file("fcn.pth"));
  REQUIRE(back.size() == sd.size());
  for (const auto& [key, t] : sd) {
    INFO(key);
    CHECK(back.at(key).sizes() == t.sizes());
    CHECK(torch::equal(back.at(key), t));
  }
}
