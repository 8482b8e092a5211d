#pragma once
/// \file
/// ResNet and ResNetV1c (mmsegmentation 0.x `ResNet`/`ResNetV1c`, mmseg/models/backbones/resnet.py):
/// the residual blocks, mmseg's `ResLayer` (with `contract_dilation`) and the backbone, with module
/// names that follow mmseg's state-dict keys (`stem.0`, `stem.1`, `layer1.0.conv1`,
/// `layer1.0.downsample.0`, ...). HRNet builds its branches from the same blocks.

#include "../common.hpp"

#include <torch/nn/modules/container/sequential.h>

#include <memory>
#include <ostream>
#include <vector>

namespace cac_models {

/// The residual block of a ResNet layer or an HRNet branch (mmseg `BasicBlock`/`Bottleneck`).
enum class ResidualBlockType {
  /// Two 3×3 convolutions (stride and dilation on the first only), expansion 1 (mmseg
  /// `BasicBlock`, HRNet's `'BASIC'`).
  Basic,
  /// 1×1, 3×3, 1×1 convolutions, expansion 4, stride and dilation on the 3×3 (mmseg `Bottleneck`
  /// with `style='pytorch'`, HRNet's `'BOTTLENECK'`).
  Bottleneck,
};

/// Channel expansion of `block`: 1 for `Basic`, 4 for `Bottleneck`.
int64_t expansion(ResidualBlockType block);

/// Options of one residual block.
struct ResidualBlockOptions {
  /// A block of type `block` from `in_channels` to `planes · expansion(block)` channels.
  ResidualBlockOptions(ResidualBlockType block, int64_t in_channels, int64_t planes)
      : block_(block), in_channels_(in_channels), planes_(planes) {}
  /// Block type. No default.
  TORCH_ARG(ResidualBlockType, block);
  /// Input channels. No default.
  TORCH_ARG(int64_t, in_channels);
  /// Width of the block before the expansion. No default.
  TORCH_ARG(int64_t, planes);
  /// Stride of the first 3×3 convolution (and of the `downsample` branch).
  /// Default: 1
  TORCH_ARG(int64_t, stride) = 1;
  /// Dilation (and padding) of the strided 3×3 convolution (`conv2` of a Bottleneck, `conv1` of
  /// a Basic block).
  /// Default: 1
  TORCH_ARG(int64_t, dilation) = 1;
  /// Batch norm of every layer.
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
};

/// A residual block (`Basic` or `Bottleneck`): keys `conv1`, `bn1`, `conv2`, `bn2` (`conv3`,
/// `bn3`) and, when the stride or the width changes, `downsample.0` (1×1 conv) and
/// `downsample.1` (BN). `relu(block(x) + shortcut(x))`.
class ResidualBlockImpl : public torch::nn::Cloneable<ResidualBlockImpl> {
 public:
  explicit ResidualBlockImpl(const ResidualBlockOptions& options_);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  /// Prints `cac_models::ResidualBlock(bottleneck, 64->256, stride=1, dilation=1)`.
  void pretty_print(std::ostream& stream) const override;

  /// Output channels: `planes · expansion(block)`.
  int64_t out_channels() const { return options.planes() * expansion(options.block()); }

  ResidualBlockOptions options;
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  Norm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  /// Shortcut projection; null when the block keeps its stride and width.
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(ResidualBlock);

/// mmseg's `ResLayer`: `blocks` residual blocks, the first with `stride` and a `downsample`
/// branch where needed; with `contract_dilation` and `dilation` > 1 the first block uses
/// `dilation / 2` (mmseg `contract_dilation=True`), the others `dilation`. Children `0`, `1`, ...
torch::nn::Sequential make_res_layer(ResidualBlockType block, int64_t in_channels, int64_t planes, int64_t blocks,
                                     int64_t stride = 1, int64_t dilation = 1, bool contract_dilation = false,
                                     const NormOptions& norm = {});

/// Options of `ResNet` (mmseg `ResNet`; `ResNetOptions(50)` is mmseg's `ResNetV1c` with depth 50).
///
/// ```
/// // DeepLabV3+ R-50-D8: output stride 8, dilations (1, 1, 2, 4).
/// ResNet backbone(ResNetOptions(50).strides({1, 2, 1, 1}).dilations({1, 1, 2, 4}));
/// ```
struct ResNetOptions {
  /// A ResNet of `depth` 18, 34 (Basic blocks), 50, 101 or 152 (Bottlenecks).
  /* implicit */ ResNetOptions(int64_t depth) : depth_(depth) {}
  /// Depth: 18, 34, 50, 101 or 152. No default.
  TORCH_ARG(int64_t, depth);
  /// Channels of the input image.
  /// Default: 3
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Channels of the stem output.
  /// Default: 64
  TORCH_ARG(int64_t, stem_channels) = 64;
  /// Width of layer 1; layer i has `base_channels · 2^i` before the expansion.
  /// Default: 64
  TORCH_ARG(int64_t, base_channels) = 64;
  /// Stride of the first block of each of the 4 layers.
  /// Default: {1, 2, 2, 2}
  TORCH_ARG(std::vector<int64_t>, strides) = std::vector<int64_t>{1, 2, 2, 2};
  /// Dilation of each of the 4 layers.
  /// Default: {1, 1, 1, 1}
  TORCH_ARG(std::vector<int64_t>, dilations) = std::vector<int64_t>{1, 1, 1, 1};
  /// Stem of three 3×3 convolutions (`stem_channels/2`, `stem_channels/2`, `stem_channels`, the
  /// first with stride 2; mmseg `ResNetV1c`), instead of one 7×7 stride-2 convolution.
  /// Default: true
  TORCH_ARG(bool, deep_stem) = true;
  /// First block of a dilated layer uses half the dilation (mmseg `contract_dilation`, set by
  /// every Table 1 config).
  /// Default: true
  TORCH_ARG(bool, contract_dilation) = true;
  /// Batch norm of every layer (mmseg `norm_cfg`).
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
  /// Keep every batch norm in eval mode even in training (mmseg `norm_eval`).
  /// Default: false
  TORCH_ARG(bool, norm_eval) = false;
  /// Start every residual block as the identity: the last batch norm of each block (`bn3` of a
  /// Bottleneck, `bn2` of a BasicBlock) gets weight 0 and bias 0 (mmseg 0.x `zero_init_residual`,
  /// on by default and in every Table 1 config; used when no checkpoint is loaded).
  /// Default: true
  TORCH_ARG(bool, zero_init_residual) = true;
};

/// mmseg's `ResNet` with all four layers as outputs (`out_indices (0, 1, 2, 3)`): stem (deep:
/// `stem.0/1` conv+BN 3→32 stride 2, `stem.3/4` 32→32, `stem.6/7` 32→64; else `conv1` 7×7 and
/// `bn1`), 3×3 stride-2 max pooling, then `layer1`..`layer4`. ResNetV1c-50: 23,527,264
/// parameters, outputs 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32 (4, 8, 8, 8 for D8).
///
/// Initialised as mmseg 0.x's `ResNet` without a checkpoint: `mmcv_default_init` (Kaiming normal
/// fan_out for every conv, batch norms (1, 0)), then `zero_init_residual`.
class ResNetImpl : public BackboneImpl {
 public:
  explicit ResNetImpl(const ResNetOptions& options_);
  std::vector<torch::Tensor> forward(const torch::Tensor& x) override;
  std::vector<int64_t> out_channels() const override;
  /// Prints `cac_models::ResNet(depth=50, deep_stem=true, strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1))`.
  void pretty_print(std::ostream& stream) const override;

  /// Deep stem (null without `deep_stem`).
  torch::nn::Sequential stem{nullptr};
  /// 7×7 stem convolution and its batch norm (null with `deep_stem`).
  torch::nn::Conv2d conv1{nullptr};
  Norm2d bn1{nullptr};
  /// The four residual layers.
  torch::nn::Sequential layer1{nullptr}, layer2{nullptr}, layer3{nullptr}, layer4{nullptr};

  /// The options this backbone was built with.
  ResNetOptions options;

 protected:
  /// `options.norm_eval()`.
  bool norm_eval() const override { return options.norm_eval(); }

 private:
  std::vector<int64_t> out_channels_;
};
TORCH_MODULE(ResNet);

}  // namespace cac_models
