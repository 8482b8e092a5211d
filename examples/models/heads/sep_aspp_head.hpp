#pragma once
/// \file
/// `DepthwiseSeparableASPPHead` (mmsegmentation 0.x, the DeepLabV3+ decoder) and mmcv's
/// `DepthwiseSeparableConvModule`.

#include "decode_head.hpp"

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

namespace cac_models {

/// Options of `DepthwiseSeparableConvModule`.
///
/// ```
/// DepthwiseSeparableConvModule block(DepthwiseSeparableConvModuleOptions(2048, 512, 3).padding(12).dilation(12));
/// ```
struct DepthwiseSeparableConvModuleOptions {
  /// `in_channels`, `out_channels` and the depthwise `kernel_size`.
  DepthwiseSeparableConvModuleOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  /// Input channels. No default.
  TORCH_ARG(int64_t, in_channels);
  /// Output channels. No default.
  TORCH_ARG(int64_t, out_channels);
  /// Square kernel of the depthwise convolution. No default.
  TORCH_ARG(int64_t, kernel_size);
  /// Default: 1
  TORCH_ARG(int64_t, stride) = 1;
  /// Default: 0
  TORCH_ARG(int64_t, padding) = 0;
  /// Default: 1
  TORCH_ARG(int64_t, dilation) = 1;
  /// Batch norm of both ConvModules.
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
};

/// mmcv's `DepthwiseSeparableConvModule`: `depthwise_conv` (a ConvModule `in → in` with
/// `groups = in`, BN, ReLU) then `pointwise_conv` (a 1×1 ConvModule `in → out`, BN, ReLU).
class DepthwiseSeparableConvModuleImpl : public torch::nn::Cloneable<DepthwiseSeparableConvModuleImpl> {
 public:
  /// Builds the block. See `DepthwiseSeparableConvModuleOptions`.
  explicit DepthwiseSeparableConvModuleImpl(const DepthwiseSeparableConvModuleOptions& options_) : options(options_) {
    reset();
  }
  /// Registers `depthwise_conv` and `pointwise_conv`.
  void reset() override;
  /// `pointwise_conv(depthwise_conv(x))`.
  torch::Tensor forward(const torch::Tensor& x);

  /// The options the block was built with.
  DepthwiseSeparableConvModuleOptions options;
  /// Depthwise `kernel_size` ConvModule.
  ConvModule depthwise_conv{nullptr};
  /// Pointwise 1×1 ConvModule.
  ConvModule pointwise_conv{nullptr};
};
/// A `ModuleHolder` for `DepthwiseSeparableConvModuleImpl`.
TORCH_MODULE(DepthwiseSeparableConvModule);

/// Options of `DepthwiseSeparableASPPHead`.
///
/// ```
/// DepthwiseSeparableASPPHead head(DepthwiseSeparableASPPHeadOptions(
///     DecodeHeadOptions({2048}, 512, 150).in_index({3}), /*c1_in_channels=*/256, /*c1_channels=*/48));
/// ```
struct DepthwiseSeparableASPPHeadOptions {
  /// The head's common options and the low-level (c1) branch: `c1_in_channels` channels of
  /// backbone stage 0 reduced to `c1_channels`.
  DepthwiseSeparableASPPHeadOptions(DecodeHeadOptions decode, int64_t c1_in_channels, int64_t c1_channels = 48)
      : decode_(std::move(decode)), c1_in_channels_(c1_in_channels), c1_channels_(c1_channels) {}
  /// Options shared by every decode head. No default.
  TORCH_ARG(DecodeHeadOptions, decode);
  /// Channels of backbone stage 0 (always stage 0, whatever `in_index` says, as in mmseg);
  /// 0 disables the c1 branch (then `c1_channels` must be 0 too). No default.
  TORCH_ARG(int64_t, c1_in_channels);
  /// Channels of `c1_bottleneck`'s output.
  /// Default: 48
  TORCH_ARG(int64_t, c1_channels) = 48;
  /// Dilations of the ASPP branches: 1 gives a 1×1 ConvModule, others a 3×3 depthwise separable
  /// block with that dilation.
  /// Default: {1, 12, 24, 36}
  TORCH_ARG(std::vector<int64_t>, dilations) = std::vector<int64_t>{1, 12, 24, 36};
};

/// mmseg's `DepthwiseSeparableASPPHead` (DeepLabV3+): `image_pool` (AdaptiveAvgPool2d(1) then
/// the ConvModule `image_pool.1`), `aspp_modules.i`, `bottleneck` (a plain 3×3 ConvModule on the
/// concatenation, inherited from mmseg's `ASPPHead`), `c1_bottleneck` (1×1 on stage 0), then
/// `sep_bottleneck.0/1` on
/// `cat(upsampled, c1)`. The final feature f is `sep_bottleneck`'s output, where the released
/// DeepLabV3+ CAC head hooks in.
class DepthwiseSeparableASPPHeadImpl : public DecodeHeadImpl {
 public:
  /// Builds the head. See `DepthwiseSeparableASPPHeadOptions`.
  explicit DepthwiseSeparableASPPHeadImpl(const DepthwiseSeparableASPPHeadOptions& options_);
  /// The final feature f `[B, channels, h0, w0]` at stage 0's resolution (with the c1 branch).
  torch::Tensor features(const std::vector<torch::Tensor>& inputs) override;

  /// The head's options (`options.decode()`: the common ones, see `decode_options()`).
  DepthwiseSeparableASPPHeadOptions options;
  /// `options.decode()`.
  const DecodeHeadOptions& decode_options() const override { return options.decode(); }
  /// `AdaptiveAvgPool2d(1)`, `ConvModule(in → channels, 1)`.
  torch::nn::Sequential image_pool{nullptr};
  /// One branch per dilation: `ConvModule` (dilation 1) or `DepthwiseSeparableConvModule`.
  torch::nn::ModuleList aspp_modules{nullptr};
  /// `ConvModule((branches + 1)·channels → channels, 3)`: mmseg 0.x keeps `ASPPHead`'s plain
  /// convolution here (only the ASPP branches and `sep_bottleneck` are depthwise separable).
  ConvModule bottleneck{nullptr};
  /// `ConvModule(c1_in_channels → c1_channels, 1)`, null without the c1 branch.
  ConvModule c1_bottleneck{nullptr};
  /// Two `DepthwiseSeparableConvModule`s: `channels + c1_channels → channels → channels`.
  torch::nn::Sequential sep_bottleneck{nullptr};

 protected:
  /// `options.decode()`, writable.
  DecodeHeadOptions& mutable_decode_options() override { return options.decode(); }
  /// `, c1_in_channels=..., c1_channels=..., dilations=[...]`.
  void pretty_print_options(std::ostream& stream) const override;
};
/// A `ModuleHolder` for `DepthwiseSeparableASPPHeadImpl`. See `DepthwiseSeparableASPPHeadOptions`.
TORCH_MODULE(DepthwiseSeparableASPPHead);

}  // namespace cac_models
