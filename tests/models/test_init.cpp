// The zoo's fresh weights follow mmcv/mmseg 0.x's initialisation, checked against mmcv's formulas:
// ConvModule convs (mmcv/cnn/bricks/conv_module.py `init_weights`: kaiming_init(conv, a=0,
// mode='fan_out', nonlinearity='relu', distribution='normal'), bias 0; norms constant (1, 0)),
// `conv_seg` N(0, 0.01) (mmseg BaseDecodeHead init_cfg), the backbones' defaults without a
// checkpoint (mmseg 0.x ResNet/HRNet/MobileNetV2 `init_cfg`: Kaiming on Conv2d, Constant 1 on
// batch norms; ResNet's zero_init_residual), and the CAC projectors left at nn.Linear's default as
// in the released heads (tianzhuotao/CAC mmseg/models/decode_heads/*_cac.py `self.proj`).
#include "models/backbones/hrnet.hpp"
#include "models/backbones/resnet.hpp"
#include "models/common.hpp"
#include "models/heads/decode_head.hpp"
#include "models/registry.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <string>

using namespace cac_models;

namespace {

// Kaiming normal, fan_out, ReLU gain √2: std = √(2 / fan_out), fan_out = out · k_h · k_w
// (PyTorch's `_calculate_fan_in_and_fan_out`: the groups do not enter).
double kaiming_fan_out_std(const torch::Tensor& weight) {
  return std::sqrt(2.0 / static_cast<double>(weight.size(0) * weight.size(2) * weight.size(3)));
}

// `weight` looks like n independent draws of N(0, σ²): its sample mean within 6 standard errors
// σ/√n of 0 and its sample standard deviation within 6 standard errors σ/√(2(n − 1)) of σ.
void check_normal(const torch::Tensor& weight, double sigma, const std::string& name) {
  const auto n = static_cast<double>(weight.numel());
  const torch::Tensor w = weight.detach().to(torch::kDouble);
  const double mean = w.mean().item<double>();
  const double std = w.std().item<double>();
  INFO(name << ": n " << n << ", mean " << mean << ", std " << std << ", expected std " << sigma);
  CHECK(std::abs(mean) < 6.0 * sigma / std::sqrt(n));
  CHECK(std::abs(std - sigma) < 6.0 * sigma / std::sqrt(2.0 * (n - 1.0)));
}

void check_constant(const torch::Tensor& tensor, double value, const std::string& name) {
  INFO(name);
  REQUIRE(tensor.defined());
  CHECK(torch::equal(tensor.detach(), torch::full_like(tensor, value)));
}

// Every ConvModule under `module`: conv Kaiming fan_out, conv bias (if any) 0, bn (1, 0).
int64_t check_conv_modules(torch::nn::Module& module, const std::string& prefix) {
  int64_t count = 0;
  for (const auto& item : module.named_modules(prefix)) {
    auto* block = item.value()->as<ConvModuleImpl>();
    if (block == nullptr) continue;
    check_normal(block->conv->weight, kaiming_fan_out_std(block->conv->weight), item.key() + ".conv.weight");
    if (block->conv->bias.defined()) check_constant(block->conv->bias, 0.0, item.key() + ".conv.bias");
    if (block->bn) {
      check_constant(block->bn->weight, 1.0, item.key() + ".bn.weight");
      check_constant(block->bn->bias, 0.0, item.key() + ".bn.bias");
    }
    ++count;
  }
  return count;
}

}  // namespace

TEST_CASE("init: ConvModule is initialised as mmcv's ConvModule.init_weights", "[init]") {
  torch::manual_seed(0);
  SECTION("3x3 512 -> 512 with batch norm: std sqrt(2 / (512 * 9)), not LibTorch's default") {
    ConvModule block(ConvModuleOptions(512, 512, 3).padding(1));
    const double expected = std::sqrt(2.0 / (512.0 * 9.0));
    check_normal(block->conv->weight, expected, "conv.weight");
    CHECK_FALSE(block->conv->bias.defined());  // mmcv bias='auto': none before a norm
    check_constant(block->bn->weight, 1.0, "bn.weight");
    check_constant(block->bn->bias, 0.0, "bn.bias");
    // LibTorch's default (kaiming_uniform a = √5: std 1/√(3 · fan_in)) is 2.45× smaller.
    CHECK(expected / (1.0 / std::sqrt(3.0 * 512 * 9)) == Approx(std::sqrt(6.0)));
  }
  SECTION("without a norm the conv has a bias, set to exactly 0; the activation does not change the gain") {
    ConvModule block(ConvModuleOptions(64, 128, 1).norm(false).activation(Activation::None));
    check_normal(block->conv->weight, std::sqrt(2.0 / 128.0), "conv.weight");
    check_constant(block->conv->bias, 0.0, "conv.bias");
  }
  SECTION("depthwise: fan_out counts output channels and kernel, not groups") {
    ConvModule block(ConvModuleOptions(256, 256, 3).padding(1).groups(256).activation(Activation::ReLU6));
    REQUIRE(block->conv->weight.sizes() == torch::IntArrayRef({256, 1, 3, 3}));
    check_normal(block->conv->weight, std::sqrt(2.0 / (256.0 * 9.0)), "conv.weight");
  }
  SECTION("reset() re-initialises the same way (clone keeps the weights)") {
    ConvModule block(ConvModuleOptions(32, 48, 3));
    auto copy = std::dynamic_pointer_cast<ConvModuleImpl>(block->clone());
    CHECK(torch::equal(copy->conv->weight, block->conv->weight));
  }
}

TEST_CASE("init: kaiming_init, constant_init and mmcv_default_init follow mmcv's weight_init.py", "[init]") {
  torch::manual_seed(1);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(96, 200, 3));  // LibTorch's default first
  kaiming_init(*conv);
  check_normal(conv->weight, std::sqrt(2.0 / (200.0 * 9.0)), "weight");
  check_constant(conv->bias, 0.0, "bias");
  Norm2d norm(8, NormOptions());
  constant_init(*norm, 0.0, 0.5);
  check_constant(norm->weight, 0.0, "norm.weight");
  check_constant(norm->bias, 0.5, "norm.bias");
  torch::nn::Sequential stack(torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 300, 1)), Norm2d(300, NormOptions()));
  constant_init(*stack[1]->as<Norm2dImpl>(), 7.0, 7.0);
  mmcv_default_init(*stack);
  check_normal(stack[0]->as<torch::nn::Conv2dImpl>()->weight, std::sqrt(2.0 / 300.0), "0.weight");
  check_constant(stack[0]->as<torch::nn::Conv2dImpl>()->bias, 0.0, "0.bias");
  check_constant(stack[1]->as<Norm2dImpl>()->weight, 1.0, "1.weight");
  check_constant(stack[1]->as<Norm2dImpl>()->bias, 0.0, "1.bias");
}

TEST_CASE("init: heads as mmseg (ConvModules Kaiming, conv_seg N(0, 0.01)), CAC projectors as nn.Linear", "[init]") {
  torch::manual_seed(2);
  EncoderDecoder model = make_model("deeplabv3plus_mobilenetv2", {150, /*cac=*/true});
  int64_t blocks = 0;
  for (const auto& item : model->named_children()) {
    if (item.key() == "backbone") continue;
    blocks += check_conv_modules(*item.value(), item.key());
  }
  CHECK(blocks >= 10);  // image pool, 4 ASPP branches (3 separable: 2 blocks each), bottleneck, c1, sep 2×2, aux
  for (const auto& head : model->decode_heads()) {
    check_normal(head->conv_seg->weight, 0.01, "conv_seg.weight");
    check_constant(head->conv_seg->bias, 0.0, "conv_seg.bias");
  }
  // nn.Linear's default (kaiming_uniform a = √5): U(−1/√fan_in, 1/√fan_in); its std is 1/√(3·fan_in).
  const auto& projectors = model->decode_heads().back()->cac->named_parameters();
  for (const std::string name : {"context_projector.0.weight", "oracle_projector.0.weight"}) {
    const torch::Tensor w = projectors[name];
    const double bound = 1.0 / std::sqrt(static_cast<double>(w.size(1)));
    INFO(name);
    CHECK(w.abs().max().item<double>() <= bound);
    check_normal(w, bound / std::sqrt(3.0), name);  // a uniform's sample std has the same error order
  }
}

TEST_CASE("init: backbones as mmseg 0.x without a checkpoint", "[init]") {
  torch::manual_seed(3);
  SECTION("ResNetV1c-50: every conv Kaiming fan_out, batch norms (1, 0), bn3 of each block zero") {
    ResNet backbone(ResNetOptions(50));
    int64_t convs = 0, zeroed = 0;
    for (const auto& item : backbone->named_modules()) {
      if (auto* conv = item.value()->as<torch::nn::Conv2dImpl>()) {
        check_normal(conv->weight, kaiming_fan_out_std(conv->weight), item.key());
        ++convs;
      }
      if (auto* norm = item.value()->as<Norm2dImpl>()) {
        const bool last = item.key().size() > 4 && item.key().substr(item.key().size() - 4) == ".bn3";
        check_constant(norm->weight, last ? 0.0 : 1.0, item.key() + ".weight");
        check_constant(norm->bias, 0.0, item.key() + ".bias");
        zeroed += last;
      }
    }
    CHECK(convs == 3 + 16 * 3 + 4);  // deep stem, 16 bottlenecks, 4 downsamples
    CHECK(zeroed == 16);
    ResNet plain(ResNetOptions(50).zero_init_residual(false));
    check_constant(plain->layer1->ptr(0)->as<ResidualBlockImpl>()->bn3->weight, 1.0, "layer1.0.bn3.weight");
  }
  SECTION("HRNetV2-W18: every conv Kaiming fan_out, every batch norm (1, 0)") {
    std::shared_ptr<BackboneImpl> backbone = make_hrnetv2(18);
    int64_t convs = 0;
    for (const auto& item : backbone->named_modules()) {
      if (auto* conv = item.value()->as<torch::nn::Conv2dImpl>()) {
        check_normal(conv->weight, kaiming_fan_out_std(conv->weight), item.key());
        ++convs;
      }
      if (auto* norm = item.value()->as<Norm2dImpl>()) check_constant(norm->weight, 1.0, item.key() + ".weight");
    }
    CHECK(convs > 100);
  }
  SECTION("MobileNetV2: ConvModules throughout") {
    EncoderDecoder model = make_model("fcn_mobilenetv2", {150});
    CHECK(check_conv_modules(*model->backbone, "backbone") == 1 + 17 * 3 - 1);  // conv1, 17 blocks (first: 2 convs)
  }
}

TEST_CASE("init: MobileNetV2 rows keep plain batch norm in the backbone, SyncBN in the heads", "[init][norm]") {
  ModelOptions options;
  options.norm.sync(true);
  for (const std::string name : {"fcn_mobilenetv2", "deeplabv3plus_mobilenetv2", "upernet_r50"}) {
    EncoderDecoder model = make_model(name, options);
    int64_t backbone_sync = 0, backbone_norms = 0, head_sync = 0;
    for (const auto& item : model->named_modules()) {
      auto* norm = item.value()->as<Norm2dImpl>();
      if (norm == nullptr) continue;
      if (item.key().rfind("backbone.", 0) == 0) {
        ++backbone_norms;
        backbone_sync += norm->sync;
      } else {
        head_sync += norm->sync;
      }
    }
    INFO(name);
    CHECK(backbone_norms > 0);
    CHECK(backbone_sync == (name == "upernet_r50" ? backbone_norms : 0));
    CHECK(head_sync > 0);
  }
}
