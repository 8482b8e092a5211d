#pragma once
/// \file
/// MobileNetV2 (mmsegmentation 0.x `MobileNetV2`, mmseg/models/backbones/mobilenet_v2.py, with its
/// `InvertedResidual` from mmseg/models/utils): a stride-2 `ConvModule` stem and seven layers of
/// inverted residual blocks, ReLU6 activations. Module names follow mmseg's state-dict keys
/// (`conv1.conv`, `conv1.bn`, `layer2.0.conv.0.conv`, `layer2.0.conv.1.bn`, ...).

#include "../common.hpp"

#include <torch/nn/modules/container/sequential.h>

#include <memory>
#include <ostream>
#include <vector>

namespace cac_models {

/// Options of an `InvertedResidual` block.
struct InvertedResidualOptions {
  /// A block from `in_channels` to `out_channels` with hidden width `round(in · expand_ratio)`.
  InvertedResidualOptions(int64_t in_channels, int64_t out_channels, int64_t expand_ratio)
      : in_channels_(in_channels), out_channels_(out_channels), expand_ratio_(expand_ratio) {}
  /// Input channels. No default.
  TORCH_ARG(int64_t, in_channels);
  /// Output channels. No default.
  TORCH_ARG(int64_t, out_channels);
  /// Expansion of the hidden layer; 1 has no expanding 1×1 convolution. No default.
  TORCH_ARG(int64_t, expand_ratio);
  /// Stride of the depthwise convolution.
  /// Default: 1
  TORCH_ARG(int64_t, stride) = 1;
  /// Dilation (and padding) of the depthwise convolution.
  /// Default: 1
  TORCH_ARG(int64_t, dilation) = 1;
  /// Batch norm of every layer.
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
};

/// mmseg's `InvertedResidual`: `conv` = [1×1 expand `ConvModule` (ReLU6) if expand_ratio ≠ 1,]
/// 3×3 depthwise `ConvModule` (ReLU6), 1×1 linear `ConvModule`; a residual connection when the
/// stride is 1 and the width is kept.
class InvertedResidualImpl : public torch::nn::Cloneable<InvertedResidualImpl> {
 public:
  explicit InvertedResidualImpl(const InvertedResidualOptions& options_);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x);
  /// Prints `cac_models::InvertedResidual(16->24, expand_ratio=6, stride=2, dilation=1)`.
  void pretty_print(std::ostream& stream) const override;
  /// Whether the block adds its input to its output.
  bool use_residual() const;

  InvertedResidualOptions options;
  /// The `ConvModule`s (`conv.0`, `conv.1`, `conv.2`).
  torch::nn::Sequential conv{nullptr};
};
TORCH_MODULE(InvertedResidual);

/// Options of `MobileNetV2` (mmseg `MobileNetV2` arguments).
///
/// ```
/// // The D8 variant of every Table 1 MobileNetV2 model:
/// auto backbone = MobileNetV2(MobileNetV2Options::d8());
/// ```
struct MobileNetV2Options {
  /// Width multiplier of every layer (channels rounded to multiples of 8).
  /// Default: 1.0
  TORCH_ARG(double, widen_factor) = 1.0;
  /// Stride of the first block of each of the 7 layers.
  /// Default: {1, 2, 2, 2, 1, 2, 1}
  TORCH_ARG(std::vector<int64_t>, strides) = std::vector<int64_t>{1, 2, 2, 2, 1, 2, 1};
  /// Dilation of the first block of each of the 7 layers (the other blocks use 1, as mmseg does).
  /// Default: {1, 1, 1, 1, 1, 1, 1}
  TORCH_ARG(std::vector<int64_t>, dilations) = std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1};
  /// Layers (0-based) whose outputs `forward` returns.
  /// Default: {1, 2, 4, 6}
  TORCH_ARG(std::vector<int64_t>, out_indices) = std::vector<int64_t>{1, 2, 4, 6};
  /// Batch norm of every layer.
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
  /// Keep every batch norm in eval mode even in training (mmseg `norm_eval`).
  /// Default: false
  TORCH_ARG(bool, norm_eval) = false;

 public:
  /// The Table 1 configuration: strides (1, 2, 2, 1, 1, 1, 1), dilations (1, 1, 1, 2, 2, 4, 4),
  /// outputs 24, 32, 96, 320 channels at strides 4, 8, 8, 8.
  static MobileNetV2Options d8() {
    return MobileNetV2Options().strides({1, 2, 2, 1, 1, 1, 1}).dilations({1, 1, 1, 2, 2, 4, 4});
  }
};

/// mmseg's `MobileNetV2`: `conv1` (3×3 stride 2 → 32, BN, ReLU6) then `layer1`..`layer7` with
/// (expand ratio, channels, blocks) = (1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3),
/// (6, 160, 3), (6, 320, 1). 1,811,712 parameters at widen factor 1.
class MobileNetV2Impl : public BackboneImpl {
 public:
  explicit MobileNetV2Impl(const MobileNetV2Options& options_ = {});
  std::vector<torch::Tensor> forward(const torch::Tensor& x) override;
  std::vector<int64_t> out_channels() const override;
  /// Prints `cac_models::MobileNetV2(widen_factor=1, strides=(...), dilations=(...), out_indices=(...))`.
  void pretty_print(std::ostream& stream) const override;

  /// Stem `ConvModule`.
  ConvModule conv1{nullptr};
  /// `layer1`..`layer7`.
  std::vector<torch::nn::Sequential> layers;

  /// The options this backbone was built with.
  MobileNetV2Options options;

 protected:
  /// `options.norm_eval()`.
  bool norm_eval() const override { return options.norm_eval(); }

 private:
  std::vector<int64_t> out_channels_;
};
TORCH_MODULE(MobileNetV2);

}  // namespace cac_models
