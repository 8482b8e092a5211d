// MobileNetV2 (mmseg 0.x `MobileNetV2` with its `InvertedResidual`): parameter counts, mmseg
// state-dict keys, depthwise/dilated convolutions of the D8 variant, output channels, strides and
// sizes (odd sizes included), golden outputs against an independent PyTorch port, train vs eval
// batch norm, norm_eval, gradients, autocast and invalid configurations.
//
// Golden values come from tests/models/backbone_reference.py (a PyTorch port of mmseg 0.x's
// mobilenet_v2.py, utils/inverted_residual.py, utils/make_divisible.py and mmcv's ConvModule, run
// with /usr/bin/python3 and PyTorch 1.13), with the deterministic weights of `fill` (`fill_hashed`
// in train mode) on the deterministic image of `image` (model_test_support.hpp, same rules as
// reference_common.py).
#include "models/backbones/mobilenet_v2.hpp"

#include "model_test_support.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

using namespace cac_models;
using namespace cac_models_test;

namespace {

std::shared_ptr<torch::nn::Conv2dImpl> conv(torch::nn::Module& model, const std::string& name) {
  auto modules = model.named_modules();
  REQUIRE(modules.contains(name));
  auto c = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(modules[name]);
  REQUIRE(c);
  return c;
}

int64_t dilation(const std::shared_ptr<torch::nn::Conv2dImpl>& c) { return c->options.dilation()->at(0); }
int64_t stride(const std::shared_ptr<torch::nn::Conv2dImpl>& c) { return c->options.stride()->at(0); }
int64_t padding(const std::shared_ptr<torch::nn::Conv2dImpl>& c) {
#if TORCH_VERSION_MAJOR >= 2  // LibTorch 2.x options hold std::variant, 1.x c10::variant
  return std::get<torch::ExpandingArray<2>>(c->options.padding())->at(0);
#else
  return c10::get<torch::ExpandingArray<2>>(c->options.padding())->at(0);
#endif
}

int64_t ceil_half(int64_t n) { return (n + 1) / 2; }

}  // namespace

TEST_CASE("mobilenetv2: parameter counts", "[mobilenetv2]") {
  // Widen factor 1: 1,811,712 from the spec; the PyTorch port gives the same. 0.5: 480,320 from the
  // port (make_divisible rounds every width to a multiple of 8).
  auto model = MobileNetV2(MobileNetV2Options());
  CHECK(count_parameters(*model) == 1811712);
  CHECK(model->out_channels() == std::vector<int64_t>{24, 32, 96, 320});
  auto d8 = MobileNetV2(MobileNetV2Options::d8());
  CHECK(count_parameters(*d8) == 1811712);
  CHECK(d8->out_channels() == std::vector<int64_t>{24, 32, 96, 320});
  auto half = MobileNetV2(MobileNetV2Options().widen_factor(0.5));
  CHECK(count_parameters(*half) == 480320);
  CHECK(half->out_channels() == std::vector<int64_t>{16, 16, 48, 160});
  CHECK(MobileNetV2(MobileNetV2Options().out_indices({6}))->out_channels() == std::vector<int64_t>{320});
  CHECK(MobileNetV2(MobileNetV2Options().out_indices({0, 3, 5}))->out_channels() == std::vector<int64_t>{16, 64, 160});
}

TEST_CASE("mobilenetv2: state-dict keys follow mmseg one-to-one", "[mobilenetv2]") {
  auto model = MobileNetV2(MobileNetV2Options::d8());
  const auto entries = state_dict(*model);
  // 51 ConvModules (conv without bias + BN): 153 parameter tensors, 306 entries with the buffers.
  CHECK(model->parameters().size() == 153);
  CHECK(entries.size() == 306);
  // The whole ordered key list, hashed the same way by backbone_reference.py.
  CHECK(key_list_hash(*model) == 0x445a6586685a1af4ULL);

  auto params = model->named_parameters();
  auto buffers = model->named_buffers();
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{
      {"conv1.conv.weight", {32, 3, 3, 3}},
      {"conv1.bn.weight", {32}},
      {"conv1.bn.bias", {32}},
      // Expand ratio 1: no expanding conv, the depthwise conv comes first.
      {"layer1.0.conv.0.conv.weight", {32, 1, 3, 3}},
      {"layer1.0.conv.1.conv.weight", {16, 32, 1, 1}},
      {"layer1.0.conv.1.bn.weight", {16}},
      {"layer2.0.conv.0.conv.weight", {96, 16, 1, 1}},
      {"layer2.0.conv.1.conv.weight", {96, 1, 3, 3}},
      {"layer2.0.conv.2.conv.weight", {24, 96, 1, 1}},
      {"layer2.1.conv.0.conv.weight", {144, 24, 1, 1}},
      {"layer4.3.conv.1.conv.weight", {384, 1, 3, 3}},
      {"layer6.2.conv.2.bn.bias", {160}},
      {"layer7.0.conv.0.conv.weight", {960, 160, 1, 1}},
      {"layer7.0.conv.2.conv.weight", {320, 960, 1, 1}},
  };
  for (const auto& s : shapes) {
    INFO(s.first);
    REQUIRE(params.contains(s.first));
    CHECK(params[s.first].sizes() == torch::IntArrayRef(s.second));
  }
  for (const char* key : {"conv1.bn.running_mean", "conv1.bn.num_batches_tracked", "layer7.0.conv.2.bn.running_var",
                          "layer1.0.conv.0.bn.running_var"}) {
    INFO(key);
    CHECK(buffers.contains(key));
  }
  CHECK(buffers["layer7.0.conv.2.bn.running_var"].sizes() == torch::IntArrayRef({320}));
  for (const char* key : {"conv1.conv.bias", "layer1.0.conv.2.conv.weight", "layer2.0.conv.2.conv.bias",
                          "layer8.0.conv.0.conv.weight", "layer7.1.conv.0.conv.weight"}) {
    INFO(key);
    CHECK_FALSE(params.contains(key));
  }

  std::ostringstream printed;
  model->pretty_print(printed);
  CHECK(printed.str() ==
        "cac_models::MobileNetV2(widen_factor=1, strides=(1, 2, 2, 1, 1, 1, 1), dilations=(1, 1, 1, 2, 2, 4, 4), "
        "out_indices=(1, 2, 4, 6))");
}

TEST_CASE("mobilenetv2: depthwise convolutions, D8 strides and dilations", "[mobilenetv2]") {
  auto model = MobileNetV2(MobileNetV2Options::d8());
  // Depthwise: groups = channels.
  CHECK(conv(*model, "layer1.0.conv.0.conv")->options.groups() == 32);
  CHECK(conv(*model, "layer2.0.conv.1.conv")->options.groups() == 96);
  CHECK(conv(*model, "layer2.0.conv.0.conv")->options.groups() == 1);
  CHECK(stride(conv(*model, "conv1.conv")) == 2);
  CHECK(stride(conv(*model, "layer2.0.conv.1.conv")) == 2);
  CHECK(stride(conv(*model, "layer2.0.conv.0.conv")) == 1);
  CHECK(stride(conv(*model, "layer3.0.conv.1.conv")) == 2);
  CHECK(stride(conv(*model, "layer4.0.conv.1.conv")) == 1);  // D8: layer 4 keeps the resolution
  CHECK(stride(conv(*model, "layer6.0.conv.1.conv")) == 1);
  // mmseg applies a layer's dilation to its first block only; the others use dilation 1.
  CHECK(dilation(conv(*model, "layer4.0.conv.1.conv")) == 2);
  CHECK(padding(conv(*model, "layer4.0.conv.1.conv")) == 2);
  CHECK(dilation(conv(*model, "layer4.1.conv.1.conv")) == 1);
  CHECK(padding(conv(*model, "layer4.1.conv.1.conv")) == 1);
  CHECK(dilation(conv(*model, "layer5.0.conv.1.conv")) == 2);
  CHECK(dilation(conv(*model, "layer6.0.conv.1.conv")) == 4);
  CHECK(padding(conv(*model, "layer6.0.conv.1.conv")) == 4);
  CHECK(dilation(conv(*model, "layer6.2.conv.1.conv")) == 1);
  CHECK(dilation(conv(*model, "layer7.0.conv.1.conv")) == 4);
  CHECK(dilation(conv(*model, "layer7.0.conv.0.conv")) == 1);

  SECTION("residual connections: stride 1 and the same width") {
    auto block = [&](const std::string& name) {
      auto modules = model->named_modules();
      REQUIRE(modules.contains(name));
      auto b = std::dynamic_pointer_cast<InvertedResidualImpl>(modules[name]);
      REQUIRE(b);
      return b;
    };
    CHECK_FALSE(block("layer1.0")->use_residual());  // 32 -> 16
    CHECK_FALSE(block("layer2.0")->use_residual());  // stride 2
    CHECK(block("layer2.1")->use_residual());
    CHECK_FALSE(block("layer4.0")->use_residual());  // 32 -> 64 at stride 1 (D8)
    CHECK(block("layer4.1")->use_residual());
    CHECK_FALSE(block("layer7.0")->use_residual());
    std::ostringstream printed;
    block("layer2.0")->pretty_print(printed);
    CHECK(printed.str() == "cac_models::InvertedResidual(16->24, expand_ratio=6, stride=2, dilation=1)");
  }
}

TEST_CASE("mobilenetv2: output channels, strides and sizes (even and odd inputs)", "[mobilenetv2]") {
  torch::NoGradGuard no_grad;
  auto d8 = MobileNetV2(MobileNetV2Options::d8());
  d8->eval();
  auto plain = MobileNetV2(MobileNetV2Options());
  plain->eval();
  SECTION("64x64: D8 strides 4, 8, 8, 8; default strides 4, 8, 16, 32") {
    const auto out = d8->forward(torch::randn({1, 3, 64, 64}));
    REQUIRE(out.size() == 4);
    CHECK(out[0].sizes() == torch::IntArrayRef({1, 24, 16, 16}));
    CHECK(out[1].sizes() == torch::IntArrayRef({1, 32, 8, 8}));
    CHECK(out[2].sizes() == torch::IntArrayRef({1, 96, 8, 8}));
    CHECK(out[3].sizes() == torch::IntArrayRef({1, 320, 8, 8}));
    const auto out2 = plain->forward(torch::randn({1, 3, 64, 64}));
    REQUIRE(out2.size() == 4);
    CHECK(out2[2].sizes() == torch::IntArrayRef({1, 96, 4, 4}));
    CHECK(out2[3].sizes() == torch::IntArrayRef({1, 320, 2, 2}));
  }
  SECTION("odd sizes: every stride-2 conv rounds up") {
    for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{66, 50}, {35, 97}, {17, 9}}) {
      INFO(hw.first << "x" << hw.second);
      const auto out = d8->forward(torch::randn({2, 3, hw.first, hw.second}));
      REQUIRE(out.size() == 4);
      const int64_t h4 = ceil_half(ceil_half(hw.first)), w4 = ceil_half(ceil_half(hw.second));
      const int64_t h8 = ceil_half(h4), w8 = ceil_half(w4);
      CHECK(out[0].sizes() == torch::IntArrayRef({2, 24, h4, w4}));
      CHECK(out[1].sizes() == torch::IntArrayRef({2, 32, h8, w8}));
      CHECK(out[2].sizes() == torch::IntArrayRef({2, 96, h8, w8}));
      CHECK(out[3].sizes() == torch::IntArrayRef({2, 320, h8, w8}));
      const auto out2 = plain->forward(torch::randn({1, 3, hw.first, hw.second}));
      CHECK(out2[3].sizes() == torch::IntArrayRef({1, 320, ceil_half(ceil_half(h8)), ceil_half(ceil_half(w8))}));
    }
  }
}

TEST_CASE("mobilenetv2: outputs match the PyTorch port of mmseg (train and eval BN, odd size)", "[mobilenetv2]") {
  // Each case starts from freshly filled weights and running statistics (as backbone_reference.py
  // does): `fill` in eval mode, `fill_hashed` in train mode, where batch norm over the batch statistics
  // of `fill`'s rank-2 convolutions would be ill-conditioned (model_test_support.hpp). The outputs end
  // with a linear (BN, no ReLU6) conv, so they are signed (in train mode their sum is the bias times
  // the pixels): tolerance kTrainTolerance (3e-5) or kEvalTolerance (1e-6) of the L1 norm; the worst
  // deviation over kernels and thread counts is 6.7e-7 and 1.4e-8 (docs/testing.md).
  torch::NoGradGuard no_grad;
  struct Case {
    MobileNetV2Options options;
    std::vector<int64_t> shape;
    bool train;
    std::vector<Golden> golden;
  };
  const std::vector<Case> cases{
      {MobileNetV2Options::d8(),
       {1, 3, 64, 64},
       true,
       {{{1, 24, 16, 16}, 233.4832918, -11.79710164, 2271.608267},
        {{1, 32, 8, 8}, 16.87125321, -37.09701109, 907.9453608},
        {{1, 96, 8, 8}, 16.92469544, 34.07600557, 2667.955713},
        {{1, 320, 8, 8}, 4.340565471, 18.97462916, 5061.672065}}},
      {MobileNetV2Options::d8(),
       {1, 3, 64, 64},
       false,
       {{{1, 24, 16, 16}, 183.0375394, 1.702365334, 663.9601724},
        {{1, 32, 8, 8}, 17.16718796, -0.0073719956, 318.1978713},
        {{1, 96, 8, 8}, -0.02202213742, 0.7685603194, 1392.37628},
        {{1, 320, 8, 8}, 19.36259989, -0.04060366508, 2564.587475}}},
      {MobileNetV2Options::d8(),
       {2, 3, 66, 50},
       true,
       {{{2, 24, 17, 13}, 403.1234474, -21.32036756, 3851.585148},
        {{2, 32, 9, 7}, 33.21528058, 9.203719419, 1775.350883},
        {{2, 96, 9, 7}, 33.32047115, 94.32947433, 5223.713362},
        {{2, 320, 9, 7}, 8.545485897, 56.01456354, 9892.006093}}},
      {MobileNetV2Options::d8(),
       {2, 3, 66, 50},
       false,
       {{{2, 24, 17, 13}, 315.9762223, 0.6799605415, 1146.288232},
        {{2, 32, 9, 7}, 33.89666025, -0.007232952372, 625.4389788},
        {{2, 96, 9, 7}, -0.03346102359, -0.1563162513, 2739.446328},
        {{2, 320, 9, 7}, 38.15281762, 0.003751868899, 5033.411071}}},
      {MobileNetV2Options(),
       {1, 3, 64, 64},
       false,
       {{{1, 24, 16, 16}, 183.0375394, 1.702365334, 663.9601724},
        {{1, 32, 8, 8}, 17.16718796, -0.0073719956, 318.1978713},
        {{1, 96, 4, 4}, 0.05726963887, -0.006591321445, 346.9862629},
        {{1, 320, 2, 2}, 1.210183015, 0.2300433264, 160.2766034}}},
  };
  for (const auto& c : cases) {
    std::ostringstream name;
    name << "MobileNetV2 strides " << torch::IntArrayRef(c.options.strides()) << " input "
         << torch::IntArrayRef(c.shape) << (c.train ? " train" : " eval");
    INFO(name.str());
    auto model = MobileNetV2(c.options);
    if (c.train) {
      fill_hashed(*model);
    } else {
      fill(*model);
    }
    model->train(c.train);
    check_golden(model->forward(image(c.shape)), c.golden, c.train ? kTrainTolerance : kEvalTolerance, name.str());
  }
}

TEST_CASE("mobilenetv2: train vs eval batch norm, norm_eval", "[mobilenetv2]") {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 3, 40, 36});
  SECTION("train mode uses batch statistics and updates the running ones; eval does neither") {
    auto model = MobileNetV2(MobileNetV2Options::d8());
    fill(*model);
    auto buffers = model->named_buffers();
    const torch::Tensor mean = buffers["layer7.0.conv.2.bn.running_mean"].clone();

    torch::NoGradGuard no_grad;
    model->eval();
    const auto both = model->forward(x);
    const auto alone = model->forward(x.slice(0, 0, 1));
    for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(both[i].slice(0, 0, 1), alone[i], 1e-4, 1e-4));
    CHECK(torch::equal(buffers["layer7.0.conv.2.bn.running_mean"], mean));
    CHECK(buffers["conv1.bn.num_batches_tracked"].item<int64_t>() == 0);

    model->train();
    const auto train_both = model->forward(x);
    const auto train_alone = model->forward(x.slice(0, 0, 1));
    CHECK_FALSE(torch::allclose(train_both[0].slice(0, 0, 1), train_alone[0], 1e-3, 1e-3));
    CHECK_FALSE(torch::allclose(train_both[0], both[0], 1e-3, 1e-3));
    CHECK_FALSE(torch::equal(buffers["layer7.0.conv.2.bn.running_mean"], mean));
    CHECK(buffers["conv1.bn.num_batches_tracked"].item<int64_t>() == 2);
  }
  SECTION("norm_eval keeps every batch norm in eval mode in training") {
    auto frozen = MobileNetV2(MobileNetV2Options::d8().norm_eval(true));
    auto reference = MobileNetV2(MobileNetV2Options::d8());
    fill(*frozen);
    fill(*reference);
    frozen->train();
    reference->eval();
    CHECK(frozen->is_training());
    int64_t norms = 0;
    for (const auto& module : frozen->modules()) {
      if (auto* norm = module->as<cac_models::Norm2dImpl>()) {
        CHECK_FALSE(norm->is_training());
        ++norms;
      }
    }
    CHECK(norms == 51);
    torch::NoGradGuard no_grad;
    const auto a = frozen->forward(x);
    const auto b = reference->forward(x);
    for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(a[i], b[i]));
    CHECK(frozen->named_buffers()["conv1.bn.num_batches_tracked"].item<int64_t>() == 0);
  }
}

TEST_CASE("mobilenetv2: every parameter gets a gradient; CPU autocast runs", "[mobilenetv2]") {
  torch::manual_seed(5);
  auto model = MobileNetV2(MobileNetV2Options::d8());
  model->train();
  const torch::Tensor x = torch::randn({2, 3, 33, 47});
  SECTION("float32 gradients") {
    torch::Tensor loss = torch::zeros({});
    for (const auto& y : model->forward(x)) loss = loss + y.pow(2).mean();
    check_every_parameter_learns(*model, loss);
  }
  SECTION("bfloat16 autocast forward, backward outside it") {
    autocast_outputs_loss(model, x).backward();
    CHECK(model->conv1->conv->weight.grad().defined());
  }
}

TEST_CASE("mobilenetv2: invalid configurations and inputs", "[mobilenetv2]") {
  CHECK_THROWS_AS(MobileNetV2(MobileNetV2Options().widen_factor(0)), c10::Error);
  CHECK_THROWS_WITH(MobileNetV2(MobileNetV2Options().widen_factor(0)),
                    Catch::Contains("cac_models::MobileNetV2: expected a positive widen_factor but got 0"));
  CHECK_THROWS_WITH(MobileNetV2(MobileNetV2Options().strides({1, 2, 2, 2})),
                    Catch::Contains("cac_models::MobileNetV2: expected 7 strides and 7 dilations but got 4 and 7"));
  CHECK_THROWS_WITH(
      MobileNetV2(MobileNetV2Options().out_indices({1, 7})),
      Catch::Contains("cac_models::MobileNetV2: expected increasing out_indices in [0, 6] but got [1, 7]"));
  CHECK_THROWS_WITH(MobileNetV2(MobileNetV2Options().out_indices({})),
                    Catch::Contains("cac_models::MobileNetV2: expected at least one out index but got none"));
  CHECK_THROWS_WITH(MobileNetV2(MobileNetV2Options().strides({1, 2, 3, 2, 1, 2, 1})),
                    Catch::Contains("cac_models::MobileNetV2: expected strides of 1 or 2 and positive dilations but "
                                    "got strides [1, 2, 3, 2, 1, 2, 1] and dilations [1, 1, 1, 1, 1, 1, 1]"));
  CHECK_THROWS_WITH(MobileNetV2(MobileNetV2Options().dilations({1, 1, 1, 0, 1, 1, 1})),
                    Catch::Contains("cac_models::MobileNetV2: expected strides of 1 or 2 and positive dilations but "
                                    "got strides [1, 2, 2, 2, 1, 2, 1] and dilations [1, 1, 1, 0, 1, 1, 1]"));
  CHECK_THROWS_WITH(InvertedResidual(InvertedResidualOptions(16, 24, 6).stride(3)),
                    Catch::Contains("cac_models::InvertedResidual: expected stride 1 or 2 but got 3"));
  auto model = MobileNetV2(MobileNetV2Options());
  CHECK_THROWS_WITH(
      model->forward(torch::randn({1, 4, 32, 32})),
      Catch::Contains("cac_models::MobileNetV2: expected an input of shape [B, 3, H, W] but got [1, 4, 32, 32]"));
}
