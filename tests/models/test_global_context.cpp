// The image-level context branch of FCNHead (`FCNHeadOptions::global_context`, the demo's
// `fcn_tiny_gc`): mmseg ASPPHead's key names and shapes, parameter counts derived by hand, the
// branch's output computed by hand on real values, and the property the demo relies on: a pixel's
// prediction depends on pixels outside its receptive field (through the image mean) only with it.
#include "model_test_support.hpp"

#include "models/heads/fcn_head.hpp"
#include "models/registry.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <map>
#include <sstream>
#include <string>

using namespace cac_models;
using cac_models_test::count_parameters;
using cac_models_test::state_dict;

namespace {

std::map<std::string, std::vector<int64_t>> shapes(torch::nn::Module& module) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& [key, value] : state_dict(module)) out[key] = value.sizes().vec();
  return out;
}

}  // namespace

TEST_CASE("global context: ASPPHead's image_pool and bottleneck keys, shapes and parameters", "[global_context]") {
  // in 8, channels 4, one 3×3 conv: image_pool 1×1 conv 8·4 = 32 + BN 2·4 = 8; bottleneck 3×3
  // conv (4 + 4)·4·9 = 288 + BN 8; 336 parameters more than the plain head.
  FCNHead plain(FCNHeadOptions(DecodeHeadOptions({8}, 4, 3)).num_convs(1).concat_input(false));
  FCNHead head(FCNHeadOptions(DecodeHeadOptions({8}, 4, 3)).num_convs(1).concat_input(false).global_context(true));
  CHECK(count_parameters(*head) - count_parameters(*plain) == 336);
  const auto keys = shapes(*head);
  CHECK(keys.at("image_pool.1.conv.weight") == std::vector<int64_t>{4, 8, 1, 1});
  CHECK(keys.at("image_pool.1.bn.weight") == std::vector<int64_t>{4});
  CHECK(keys.at("image_pool.1.bn.running_var") == std::vector<int64_t>{4});
  CHECK(keys.at("bottleneck.conv.weight") == std::vector<int64_t>{4, 8, 3, 3});
  CHECK(keys.at("bottleneck.bn.bias") == std::vector<int64_t>{4});
  CHECK(keys.count("image_pool.1.conv.bias") == 0);  // bias='auto': none before a norm
  CHECK(keys.count("bottleneck.conv.bias") == 0);
  // Without the option the head's keys are exactly mmseg FCNHead's (nothing added).
  for (const auto& [key, shape] : shapes(*plain)) CHECK(keys.at(key) == shape);
  CHECK(keys.size() == shapes(*plain).size() + 12);  // 2 convs, 2 BNs (weight, bias, 3 buffers)
  for (const auto& [key, shape] : shapes(*plain)) {
    CHECK(key.rfind("image_pool", 0) == std::string::npos);
    CHECK(key.rfind("bottleneck", 0) == std::string::npos);
  }
  std::ostringstream printed;
  head->pretty_print(printed);
  CHECK(printed.str().find("global_context=true") != std::string::npos);
  // Shapes: the feature keeps the input's size and the head's width.
  head->eval();
  CHECK(head->features({torch::randn({2, 8, 5, 7})}).sizes() == std::vector<int64_t>{2, 4, 5, 7});
}

TEST_CASE("global context: fcn_tiny_gc is fcn_tiny plus 43968 parameters, baseline or + CAC", "[global_context]") {
  // d = 48: image_pool conv 48·48 = 2304 + BN 96; bottleneck conv 96·48·9 = 41472 + BN 96.
  for (bool cac : {false, true}) {
    INFO("cac " << cac);
    EncoderDecoder tiny = make_model("fcn_tiny", {6, cac});
    EncoderDecoder gc = make_model("fcn_tiny_gc", {6, cac});
    CHECK(count_parameters(*gc) - count_parameters(*tiny) == 2304 + 96 + 41472 + 96);
    CHECK(gc->has_cac() == cac);
    // fcn_tiny's keys are unchanged; fcn_tiny_gc has them all plus the branch's.
    const auto tiny_keys = shapes(*tiny), gc_keys = shapes(*gc);
    for (const auto& [key, shape] : tiny_keys) CHECK(gc_keys.at(key) == shape);
    CHECK(gc_keys.at("decode_head.image_pool.1.conv.weight") == std::vector<int64_t>{48, 48, 1, 1});
    CHECK(gc_keys.at("decode_head.bottleneck.conv.weight") == std::vector<int64_t>{48, 96, 3, 3});
    CHECK(tiny_keys.count("decode_head.image_pool.1.conv.weight") == 0);
    gc->eval();
    torch::NoGradGuard no_grad;
    CHECK(gc->forward(torch::randn({2, 3, 64, 48})).sizes() == std::vector<int64_t>{2, 6, 64, 48});
  }
}

TEST_CASE("global context: the branch's output by hand (f = ReLU(BN(conv(cat(pool, x)))))", "[global_context]") {
  // in = channels = 2, no convs: the feature is the input. image_pool's conv and the bottleneck's
  // are identities on chosen channels; batch norms in eval mode with running mean 0, variance 1:
  // y = x / sqrt(1 + 1e-5). So f[o](p) = ReLU((ReLU(mean(x[o]) / s) + x[o](p)) / s), s = sqrt(1 + 1e-5).
  FCNHead head(FCNHeadOptions(DecodeHeadOptions({2}, 2, 3)).num_convs(0).concat_input(false).global_context(true));
  head->eval();
  torch::NoGradGuard no_grad;
  auto* pool_conv = head->image_pool[1]->as<ConvModuleImpl>();
  REQUIRE(pool_conv != nullptr);
  pool_conv->conv->weight.copy_(torch::eye(2).view({2, 2, 1, 1}));
  head->bottleneck->conv->weight.zero_();
  for (int64_t o = 0; o < 2; ++o) {
    head->bottleneck->conv->weight[o][o][1][1] = 1.0;      // the context channel o (concatenated first)
    head->bottleneck->conv->weight[o][2 + o][1][1] = 1.0;  // the feature channel o
  }
  // Channel 0: 0, 1, ..., 15 (mean 7.5); channel 1: −(0..15) (mean −7.5, pooled context ReLU'd to 0).
  const torch::Tensor ramp = torch::arange(16, torch::kFloat).view({1, 1, 4, 4});
  const torch::Tensor x = torch::cat({ramp, -ramp}, 1);
  const torch::Tensor f = head->features({x});
  const double s = std::sqrt(1 + 1e-5);
  CHECK(f[0][0][0][0].item<double>() == Approx(7.5 / s / s).epsilon(1e-6));         // 7.499925
  CHECK(f[0][0][3][3].item<double>() == Approx((7.5 / s + 15) / s).epsilon(1e-6));  // 22.499850
  CHECK(f[0][1].abs().max().item<double>() == 0.0);                                 // ReLU(−x / s) = 0
  CHECK(f[0][0][1][2].item<double>() == Approx((7.5 / s + 6) / s).epsilon(1e-6));   // 13.499865
  // Changing one pixel moves every pixel's feature by the change of the mean: +16 at (3, 3) → +1.
  torch::Tensor y = x.clone();
  y[0][0][3][3] += 16;
  const torch::Tensor g = head->features({y});
  CHECK(g[0][0][0][0].item<double>() - f[0][0][0][0].item<double>() == Approx(1.0 / s / s).epsilon(1e-5));
  // Without the branch: f = x, and a pixel's change stays where it is.
  FCNHead plain(FCNHeadOptions(DecodeHeadOptions({2}, 2, 3)).num_convs(0).concat_input(false));
  CHECK(torch::equal(plain->features({x}), x));
}

TEST_CASE("global context: pixels far outside the receptive field change a prediction only with the branch",
          "[global_context]") {
  // fcn_tiny's receptive field (six 3×3 convs at strides 2, 2, 1 and the head's 3×3 at stride 4,
  // then ×4 bilinear) spans well under 48 pixels: the bottom-right 16×16 corner of a 64×64 image
  // cannot reach pixel (0, 0) of fcn_tiny's logits, but it moves the image mean fcn_tiny_gc pools.
  torch::manual_seed(0);
  const torch::Tensor image = torch::randn({1, 3, 64, 64});
  torch::Tensor changed = image.clone();
  changed.index_put_({0, torch::indexing::Slice(), torch::indexing::Slice(48, 64), torch::indexing::Slice(48, 64)},
                     3.0);
  torch::NoGradGuard no_grad;
  for (const std::string name : {"fcn_tiny", "fcn_tiny_gc"}) {
    INFO(name);
    EncoderDecoder model = make_model(name, {6, false});
    model->eval();
    const torch::Tensor before = model->forward(image), after = model->forward(changed);
    const double near = (after - before).abs().index({0, torch::indexing::Slice(), 0, 0}).max().item<double>();
    const double far = (after - before).abs().index({0, torch::indexing::Slice(), 63, 63}).max().item<double>();
    CHECK(far > 1e-3);  // the changed pixels themselves
    if (name == "fcn_tiny") {
      CHECK(near < 1e-6);
    } else {
      CHECK(near > 1e-4);
    }
  }
}
