// ResNetV1c (mmseg 0.x `ResNetV1c`/`ResNet`): parameter counts, mmseg state-dict keys, dilation
// and padding of the D8 variant (contract_dilation), output channels, strides and sizes (odd sizes
// included), golden outputs against an independent PyTorch port, train vs eval batch norm,
// norm_eval, gradients, autocast and invalid configurations.
//
// Golden values come from tests/models/backbone_reference.py (a PyTorch port of mmseg 0.x's
// resnet.py and utils/res_layer.py, run with /usr/bin/python3 and PyTorch 1.13): parameter counts,
// the state-dict key list and the outputs with the deterministic weights of `fill` (`fill_hashed` in
// train mode) on the deterministic image of `image` (model_test_support.hpp, same rules as
// reference_common.py).
#include "models/backbones/resnet.hpp"

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

ResNetOptions d8(int64_t depth) { return ResNetOptions(depth).strides({1, 2, 1, 1}).dilations({1, 1, 2, 4}); }

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

TEST_CASE("resnet: parameter counts", "[resnet]") {
  // ResNetV1c-50: 23,527,264 from the spec; the PyTorch port gives the same. The others from the
  // port (tests/models/backbone_reference.py).
  auto r50 = ResNet(ResNetOptions(50));
  CHECK(count_parameters(*r50) == 23527264);
  CHECK(r50->out_channels() == std::vector<int64_t>{256, 512, 1024, 2048});
  CHECK(count_parameters(*ResNet(ResNetOptions(101))) == 42519392);
  auto r18 = ResNet(ResNetOptions(18));
  CHECK(count_parameters(*r18) == 11195744);
  CHECK(r18->out_channels() == std::vector<int64_t>{64, 128, 256, 512});
  // Dilation does not change the parameters.
  CHECK(count_parameters(*ResNet(d8(50))) == 23527264);
  // mmseg `ResNet` (ResNetV1b): one 7×7 stem convolution.
  CHECK(count_parameters(*ResNet(ResNetOptions(50).deep_stem(false))) == 23508032);
}

TEST_CASE("resnet: state-dict keys follow mmseg one-to-one", "[resnet]") {
  auto model = ResNet(ResNetOptions(50));
  const auto entries = state_dict(*model);
  // 55 convolutions (3 in the stem, 48 in the blocks, 4 downsamples) and 55 batch norms: 165
  // parameter tensors, 330 entries with the buffers.
  CHECK(model->parameters().size() == 165);
  CHECK(entries.size() == 330);
  // The whole ordered key list, hashed the same way by backbone_reference.py.
  CHECK(key_list_hash(*model) == 0x6c55b991f74d4709ULL);

  auto params = model->named_parameters();
  auto buffers = model->named_buffers();
  const std::vector<std::pair<std::string, std::vector<int64_t>>> shapes{
      {"stem.0.weight", {32, 3, 3, 3}},
      {"stem.1.weight", {32}},
      {"stem.1.bias", {32}},
      {"stem.3.weight", {32, 32, 3, 3}},
      {"stem.4.weight", {32}},
      {"stem.6.weight", {64, 32, 3, 3}},
      {"stem.7.bias", {64}},
      {"layer1.0.conv1.weight", {64, 64, 1, 1}},
      {"layer1.0.conv2.weight", {64, 64, 3, 3}},
      {"layer1.0.conv3.weight", {256, 64, 1, 1}},
      {"layer1.0.bn3.weight", {256}},
      {"layer1.0.downsample.0.weight", {256, 64, 1, 1}},
      {"layer1.0.downsample.1.weight", {256}},
      {"layer1.2.bn2.bias", {64}},
      {"layer2.0.conv1.weight", {128, 256, 1, 1}},
      {"layer2.0.downsample.0.weight", {512, 256, 1, 1}},
      {"layer3.0.conv2.weight", {256, 256, 3, 3}},
      {"layer3.5.conv3.weight", {1024, 256, 1, 1}},
      {"layer4.0.downsample.0.weight", {2048, 1024, 1, 1}},
      {"layer4.2.bn3.weight", {2048}},
  };
  for (const auto& s : shapes) {
    INFO(s.first);
    REQUIRE(params.contains(s.first));
    CHECK(params[s.first].sizes() == torch::IntArrayRef(s.second));
  }
  for (const char* key : {"stem.1.running_mean", "stem.1.running_var", "stem.1.num_batches_tracked",
                          "layer1.0.downsample.1.running_var", "layer4.2.bn3.running_mean"}) {
    INFO(key);
    CHECK(buffers.contains(key));
  }
  CHECK(buffers["stem.1.running_mean"].sizes() == torch::IntArrayRef({32}));
  // No conv biases, ReLUs hold nothing, and only the first block of a layer has a downsample.
  for (const char* key : {"stem.0.bias", "stem.2.weight", "stem.5.weight", "conv1.weight", "bn1.weight",
                          "layer1.1.downsample.0.weight", "layer2.1.downsample.0.weight", "layer1.0.conv1.bias"}) {
    INFO(key);
    CHECK_FALSE(params.contains(key));
  }

  std::ostringstream printed;
  model->pretty_print(printed);
  CHECK(printed.str() == "cac_models::ResNet(depth=50, deep_stem=true, strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1))");

  SECTION("7x7 stem (deep_stem false): mmseg's conv1 and bn1") {
    auto v1b = ResNet(ResNetOptions(50).deep_stem(false));
    auto p = v1b->named_parameters();
    REQUIRE(p.contains("conv1.weight"));
    CHECK(p["conv1.weight"].sizes() == torch::IntArrayRef({64, 3, 7, 7}));
    CHECK(p.contains("bn1.weight"));
    CHECK(v1b->named_buffers().contains("bn1.running_var"));
    CHECK_FALSE(p.contains("stem.0.weight"));
    CHECK(state_dict(*v1b).size() == 330 - 3 * 6 + 6);
  }
}

TEST_CASE("resnet: D8 dilations, paddings and strides (contract_dilation)", "[resnet]") {
  SECTION("ResNetV1c-50 D8: the first block of a dilated layer uses half the dilation") {
    auto model = ResNet(d8(50));
    // layer3: dilation 2 → layer3.0 gets 1 (contract_dilation), the others 2; layer4: 4 → 2, 4.
    CHECK(dilation(conv(*model, "layer3.0.conv2")) == 1);
    CHECK(padding(conv(*model, "layer3.0.conv2")) == 1);
    CHECK(stride(conv(*model, "layer3.0.conv2")) == 1);
    for (const char* name : {"layer3.1.conv2", "layer3.5.conv2"}) {
      INFO(name);
      CHECK(dilation(conv(*model, name)) == 2);
      CHECK(padding(conv(*model, name)) == 2);
      CHECK(stride(conv(*model, name)) == 1);
    }
    CHECK(dilation(conv(*model, "layer4.0.conv2")) == 2);
    CHECK(padding(conv(*model, "layer4.0.conv2")) == 2);
    CHECK(dilation(conv(*model, "layer4.1.conv2")) == 4);
    CHECK(padding(conv(*model, "layer4.1.conv2")) == 4);
    CHECK(dilation(conv(*model, "layer4.2.conv2")) == 4);
    // 1×1 convolutions are never dilated; the downsample keeps the layer's stride (1 here).
    CHECK(dilation(conv(*model, "layer4.1.conv1")) == 1);
    CHECK(dilation(conv(*model, "layer4.1.conv3")) == 1);
    CHECK(stride(conv(*model, "layer3.0.downsample.0")) == 1);
    CHECK(stride(conv(*model, "layer2.0.conv2")) == 2);
    CHECK(stride(conv(*model, "layer2.0.conv1")) == 1);  // style 'pytorch': the stride is on the 3×3
    CHECK(stride(conv(*model, "layer2.0.downsample.0")) == 2);
    CHECK(dilation(conv(*model, "layer2.1.conv2")) == 1);
    std::ostringstream printed;
    model->pretty_print(printed);
    CHECK(printed.str() ==
          "cac_models::ResNet(depth=50, deep_stem=true, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))");
  }
  SECTION("contract_dilation false: every block of the layer uses the full dilation") {
    auto model = ResNet(d8(50).contract_dilation(false));
    CHECK(dilation(conv(*model, "layer3.0.conv2")) == 2);
    CHECK(padding(conv(*model, "layer3.0.conv2")) == 2);
    CHECK(dilation(conv(*model, "layer4.0.conv2")) == 4);
  }
  SECTION("ResNetV1c-18 D8: mmseg's BasicBlock dilates conv1 only (conv2 has padding 1, dilation 1)") {
    auto model = ResNet(d8(18));
    CHECK(dilation(conv(*model, "layer3.0.conv1")) == 1);
    CHECK(dilation(conv(*model, "layer3.1.conv1")) == 2);
    CHECK(padding(conv(*model, "layer3.1.conv1")) == 2);
    CHECK(dilation(conv(*model, "layer4.0.conv1")) == 2);
    CHECK(dilation(conv(*model, "layer4.1.conv1")) == 4);
    for (const char* name : {"layer3.1.conv2", "layer4.0.conv2", "layer4.1.conv2"}) {
      INFO(name);
      CHECK(dilation(conv(*model, name)) == 1);
      CHECK(padding(conv(*model, name)) == 1);
    }
  }
  SECTION("make_res_layer builds mmseg's ResLayer") {
    auto layer = make_res_layer(ResidualBlockType::Bottleneck, 512, 256, 3, /*stride=*/1, /*dilation=*/4,
                                /*contract_dilation=*/true);
    CHECK(layer->size() == 3);
    CHECK(dilation(conv(*layer, "0.conv2")) == 2);
    CHECK(dilation(conv(*layer, "1.conv2")) == 4);
    CHECK(layer->named_parameters().contains("0.downsample.0.weight"));
    CHECK_FALSE(layer->named_parameters().contains("1.downsample.0.weight"));
    auto same = make_res_layer(ResidualBlockType::Bottleneck, 256, 64, 2);
    CHECK_FALSE(same->named_parameters().contains("0.downsample.0.weight"));
  }
}

TEST_CASE("resnet: output channels, strides and sizes (even and odd inputs)", "[resnet]") {
  torch::NoGradGuard no_grad;
  auto model = ResNet(ResNetOptions(50));
  model->eval();
  auto d8_model = ResNet(d8(50));
  d8_model->eval();
  SECTION("64x64: strides 4, 8, 16, 32; D8: 4, 8, 8, 8") {
    const auto out = model->forward(torch::randn({1, 3, 64, 64}));
    REQUIRE(out.size() == 4);
    CHECK(out[0].sizes() == torch::IntArrayRef({1, 256, 16, 16}));
    CHECK(out[1].sizes() == torch::IntArrayRef({1, 512, 8, 8}));
    CHECK(out[2].sizes() == torch::IntArrayRef({1, 1024, 4, 4}));
    CHECK(out[3].sizes() == torch::IntArrayRef({1, 2048, 2, 2}));
    const auto out8 = d8_model->forward(torch::randn({1, 3, 64, 64}));
    REQUIRE(out8.size() == 4);
    CHECK(out8[0].sizes() == torch::IntArrayRef({1, 256, 16, 16}));
    CHECK(out8[1].sizes() == torch::IntArrayRef({1, 512, 8, 8}));
    CHECK(out8[2].sizes() == torch::IntArrayRef({1, 1024, 8, 8}));
    CHECK(out8[3].sizes() == torch::IntArrayRef({1, 2048, 8, 8}));
  }
  SECTION("odd sizes: the stem, the max pooling and every stride-2 conv round up") {
    for (auto hw : std::vector<std::pair<int64_t, int64_t>>{{66, 50}, {35, 97}, {33, 17}}) {
      INFO(hw.first << "x" << hw.second);
      const auto out = model->forward(torch::randn({2, 3, hw.first, hw.second}));
      const auto out8 = d8_model->forward(torch::randn({2, 3, hw.first, hw.second}));
      REQUIRE(out.size() == 4);
      REQUIRE(out8.size() == 4);
      int64_t h = ceil_half(ceil_half(hw.first)), w = ceil_half(ceil_half(hw.second));  // stem, max pooling
      const int64_t h8 = ceil_half(h), w8 = ceil_half(w);
      for (size_t i = 0; i < 4; ++i) {
        CHECK(out[i].sizes() == torch::IntArrayRef({2, model->out_channels()[i], h, w}));
        h = ceil_half(h), w = ceil_half(w);
      }
      CHECK(out8[1].sizes() == torch::IntArrayRef({2, 512, h8, w8}));
      CHECK(out8[3].sizes() == torch::IntArrayRef({2, 2048, h8, w8}));
    }
  }
}

TEST_CASE("resnet: outputs match the PyTorch port of mmseg (train and eval BN, D8, odd size)", "[resnet]") {
  // Each case starts from freshly filled weights and running statistics (as backbone_reference.py
  // does): `fill` in eval mode, `fill_hashed` in train mode, where batch norm over the batch statistics
  // of `fill`'s rank-2 convolutions would be ill-conditioned (model_test_support.hpp); train mode on
  // 1x3x128x128 and 2x3x66x50 keeps at least 12 values per channel in layer4. Outputs are ReLU'd
  // (sum = L1 norm). Tolerance kTrainTolerance (3e-5) or kEvalTolerance (1e-6) of the L1 norm; the
  // worst deviation over kernels and thread counts is 2.5e-6 and 9e-9 (docs/testing.md). The stride
  // on the 1x1 instead of the 3x3 convolution ('caffe' style) moves the outputs by 3e-3 (train) and
  // 1.8e-5 (eval) of their L1 norm.
  torch::NoGradGuard no_grad;
  struct Case {
    std::string name;
    ResNetOptions options;
    std::vector<int64_t> shape;
    bool train;
    std::vector<Golden> golden;
  };
  const std::vector<Case> cases{
      {"ResNetV1c-50",
       ResNetOptions(50),
       {1, 3, 128, 128},
       true,
       {{{1, 256, 32, 32}, 83572.07165, 59.24586597, 83572.07165},
        {{1, 512, 16, 16}, 50068.05881, 84.26005486, 50068.05881},
        {{1, 1024, 8, 8}, 31999.32568, 101.9839148, 31999.32568},
        {{1, 2048, 4, 4}, 10899.06591, 24.70051343, 10899.06591}}},
      {"ResNetV1c-50",
       ResNetOptions(50),
       {1, 3, 64, 64},
       false,
       {{{1, 256, 16, 16}, 7006.849804, -0.9306286694, 7006.849804},
        {{1, 512, 8, 8}, 5226.300973, 0.4637937449, 5226.300973},
        {{1, 1024, 4, 4}, 4103.478648, -0.09767978631, 4103.478648},
        {{1, 2048, 2, 2}, 1337.403173, 0.5066997297, 1337.403173}}},
      {"ResNetV1c-50",
       ResNetOptions(50),
       {2, 3, 66, 50},
       true,
       {{{2, 256, 17, 13}, 36934.10134, 92.29627521, 36934.10134},
        {{2, 512, 9, 7}, 24991.99102, -90.52415991, 24991.99102},
        {{2, 1024, 5, 4}, 20020.92442, 14.47172496, 20020.92442},
        {{2, 2048, 3, 2}, 8233.784385, 37.9557398, 8233.784385}}},
      {"ResNetV1c-50",
       ResNetOptions(50),
       {2, 3, 66, 50},
       false,
       {{{2, 256, 17, 13}, 12089.34377, 0.2811096913, 12089.34377},
        {{2, 512, 9, 7}, 10288.20455, 0.2260685465, 10288.20455},
        {{2, 1024, 5, 4}, 10258.70738, 0.6322655595, 10258.70738},
        {{2, 2048, 3, 2}, 4013.151223, -1.625976874, 4013.151223}}},
      {"ResNetV1c-50 D8",
       d8(50),
       {1, 3, 64, 64},
       false,
       {{{1, 256, 16, 16}, 7006.849804, -0.9306286694, 7006.849804},
        {{1, 512, 8, 8}, 5226.300973, 0.4637937449, 5226.300973},
        {{1, 1024, 8, 8}, 16414.16737, -2.128926214, 16414.16737},
        {{1, 2048, 8, 8}, 21399.36493, 0.2351054026, 21399.36493}}},
      {"ResNetV1c-50 D8",
       d8(50),
       {2, 3, 66, 50},
       true,
       {{{2, 256, 17, 13}, 36934.10134, 92.29627521, 36934.10134},
        {{2, 512, 9, 7}, 24991.99102, -90.52415991, 24991.99102},
        {{2, 1024, 9, 7}, 63022.4259, -54.98396094, 63022.4259},
        {{2, 2048, 9, 7}, 85393.54969, 205.2379828, 85393.54969}}},
      {"ResNetV1c-18 D8",
       d8(18),
       {1, 3, 64, 64},
       false,
       {{{1, 64, 16, 16}, 1394.808396, 0.03578848716, 1394.808396},
        {{1, 128, 8, 8}, 761.0018016, 0.2624116356, 761.0018016},
        {{1, 256, 8, 8}, 1621.265185, -0.02777302806, 1621.265185},
        {{1, 512, 8, 8}, 3805.638493, 0.05505007618, 3805.638493}}},
      // Train-mode BN is more sensitive to the structure: dilating conv2 of the BasicBlocks (which mmseg
      // does not do) moves the outputs by 2e-3 of their L1 norm here, by 1.4e-4 in the eval case above.
      {"ResNetV1c-18 D8",
       d8(18),
       {2, 3, 66, 50},
       true,
       {{{2, 64, 17, 13}, 12846.98579, -10.0708808, 12846.98579},
        {{2, 128, 9, 7}, 4308.307446, 14.20500124, 4308.307446},
        {{2, 256, 9, 7}, 8448.994375, 5.651941917, 8448.994375},
        {{2, 512, 9, 7}, 16962.45479, 42.61175831, 16962.45479}}},
      {"ResNet-50 7x7 stem",
       ResNetOptions(50).deep_stem(false),
       {1, 3, 64, 64},
       false,
       {{{1, 256, 16, 16}, 7074.780914, -1.224901331, 7074.780914},
        {{1, 512, 8, 8}, 5238.18349, 0.519710871, 5238.18349},
        {{1, 1024, 4, 4}, 4109.00617, -1.12972989, 4109.00617},
        {{1, 2048, 2, 2}, 1323.965813, 0.7311537474, 1323.965813}}},
  };
  for (const auto& c : cases) {
    std::ostringstream name;
    name << c.name << " input " << torch::IntArrayRef(c.shape) << (c.train ? " train" : " eval");
    INFO(name.str());
    auto model = ResNet(c.options);
    if (c.train) {
      fill_hashed(*model);
    } else {
      fill(*model);
    }
    model->train(c.train);
    check_golden(model->forward(image(c.shape)), c.golden, c.train ? kTrainTolerance : kEvalTolerance, name.str());
  }
}

TEST_CASE("resnet: train vs eval batch norm, norm_eval", "[resnet]") {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({2, 3, 40, 36});
  SECTION("train mode uses batch statistics and updates the running ones; eval does neither") {
    auto model = ResNet(ResNetOptions(50));
    fill(*model);
    auto buffers = model->named_buffers();
    const torch::Tensor mean = buffers["layer4.2.bn3.running_mean"].clone();

    torch::NoGradGuard no_grad;
    model->eval();
    const auto both = model->forward(x);
    const auto alone = model->forward(x.slice(0, 0, 1));
    for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(both[i].slice(0, 0, 1), alone[i], 1e-4, 1e-4));
    CHECK(torch::equal(buffers["layer4.2.bn3.running_mean"], mean));
    CHECK(buffers["stem.1.num_batches_tracked"].item<int64_t>() == 0);

    model->train();
    const auto train_both = model->forward(x);
    const auto train_alone = model->forward(x.slice(0, 0, 1));
    CHECK_FALSE(torch::allclose(train_both[0].slice(0, 0, 1), train_alone[0], 1e-3, 1e-3));
    CHECK_FALSE(torch::allclose(train_both[0], both[0], 1e-3, 1e-3));
    CHECK_FALSE(torch::equal(buffers["layer4.2.bn3.running_mean"], mean));
    CHECK(buffers["stem.1.num_batches_tracked"].item<int64_t>() == 2);
  }
  SECTION("norm_eval keeps every batch norm in eval mode in training") {
    auto frozen = ResNet(d8(50).norm_eval(true));
    auto reference = ResNet(d8(50));
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
    CHECK(norms == 55);
    torch::NoGradGuard no_grad;
    const auto a = frozen->forward(x);
    const auto b = reference->forward(x);
    for (size_t i = 0; i < 4; ++i) CHECK(torch::allclose(a[i], b[i]));
    CHECK(frozen->named_buffers()["stem.1.num_batches_tracked"].item<int64_t>() == 0);
    // Back to eval and to train again: still frozen.
    frozen->eval();
    frozen->train(true);
    CHECK_FALSE(frozen->named_modules()["layer1.0.bn1"]->is_training());
  }
}

TEST_CASE("resnet: every parameter gets a gradient; CPU autocast runs", "[resnet]") {
  torch::manual_seed(5);
  // Without zero_init_residual: with it (mmseg's default) every block starts as the identity, so
  // at the first step only its last batch norm gets a gradient (checked below).
  auto model = ResNet(d8(50).zero_init_residual(false));
  model->train();
  const torch::Tensor x = torch::randn({2, 3, 33, 29});
  SECTION("float32 gradients") {
    torch::Tensor loss = torch::zeros({});
    for (const auto& y : model->forward(x)) loss = loss + y.pow(2).mean();
    check_every_parameter_learns(*model, loss);
  }
  SECTION("zero_init_residual: the blocks' last batch norms learn first") {
    auto identity = ResNet(d8(50));
    torch::Tensor loss = torch::zeros({});
    for (const auto& y : identity->forward(x)) loss = loss + y.pow(2).mean();
    loss.backward();
    const auto parameters = identity->named_parameters();
    CHECK(parameters["layer1.0.bn3.weight"].grad().abs().sum().item<double>() > 0);
    CHECK(parameters["layer1.0.conv1.weight"].grad().abs().sum().item<double>() == 0);
    CHECK(parameters["stem.0.weight"].grad().abs().sum().item<double>() > 0);
  }
  SECTION("bfloat16 autocast forward, backward outside it") {
    autocast_outputs_loss(model, x).backward();
    CHECK(model->named_parameters()["stem.0.weight"].grad().defined());
  }
}

TEST_CASE("resnet: invalid configurations and inputs", "[resnet]") {
  CHECK_THROWS_AS(ResNet(ResNetOptions(42)), c10::Error);
  CHECK_THROWS_WITH(ResNet(ResNetOptions(42)),
                    Catch::Contains("cac_models::ResNet: expected depth 18, 34, 50, 101 or 152 but got 42"));
  CHECK_THROWS_WITH(ResNet(ResNetOptions(50).strides({1, 2, 2})),
                    Catch::Contains("cac_models::ResNet: expected 4 strides and 4 dilations but got 3 and 4"));
  CHECK_THROWS_WITH(ResNet(ResNetOptions(50).dilations({1, 1, 2, 4, 4})),
                    Catch::Contains("cac_models::ResNet: expected 4 strides and 4 dilations but got 4 and 5"));
  CHECK_THROWS_WITH(ResNet(ResNetOptions(50).stem_channels(1)),
                    Catch::Contains("cac_models::ResNet: expected positive in_channels and base_channels and "
                                    "stem_channels of at least 2 (deep stem) but got 3, 64 and 1"));
  CHECK_THROWS_WITH(ResNet(ResNetOptions(50).deep_stem(false).stem_channels(0)),
                    Catch::Contains("stem_channels of at least 1 but got 3, 64 and 0"));
  CHECK_NOTHROW(ResNet(ResNetOptions(18).deep_stem(false).stem_channels(1)));
  CHECK_THROWS_WITH(ResNet(ResNetOptions(50).strides({1, 0, 2, 2})),
                    Catch::Contains("cac_models::ResNet: expected positive strides and dilations but got strides "
                                    "[1, 0, 2, 2] and dilations [1, 1, 1, 1]"));
  CHECK_THROWS_WITH(ResNet(ResNetOptions(50).dilations({1, 1, 0, 1})),
                    Catch::Contains("cac_models::ResNet: expected positive strides and dilations but got strides "
                                    "[1, 2, 2, 2] and dilations [1, 1, 0, 1]"));
  CHECK_THROWS_WITH(
      ResidualBlock(ResidualBlockOptions(ResidualBlockType::Basic, 64, 64).stride(0)),
      Catch::Contains("cac_models::ResidualBlock: expected positive in_channels, planes, stride and dilation"));
  CHECK_THROWS_WITH(make_res_layer(ResidualBlockType::Basic, 64, 64, 0),
                    Catch::Contains("cac_models::make_res_layer: expected a positive number of blocks but got 0"));
  auto model = ResNet(ResNetOptions(18));
  CHECK_THROWS_WITH(
      model->forward(torch::randn({1, 1, 32, 32})),
      Catch::Contains("cac_models::ResNet: expected an input of shape [B, 3, H, W] but got [1, 1, 32, 32]"));
  CHECK_THROWS_WITH(model->forward(torch::randn({3, 32, 32})),
                    Catch::Contains("cac_models::ResNet: expected an input of shape [B, 3, H, W] but got [3, 32, 32]"));
}
