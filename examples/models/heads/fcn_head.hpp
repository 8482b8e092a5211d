#pragma once
/// \file
/// `FCNHead` (mmsegmentation 0.x `FCNHead`): a stack of convolutions, optionally concatenated
/// with the input. Used as the decode head of FCN, as every auxiliary head, and as OCRNet's
/// first stage; optionally with an image-level context branch (ASPPHead's `image_pool`).

#include "decode_head.hpp"

#include <torch/nn/modules/container/sequential.h>

namespace cac_models {

/// Options of `FCNHead`.
///
/// ```
/// FCNHead head(FCNHeadOptions(DecodeHeadOptions({320}, 512, 150)).num_convs(2).concat_input(true));
/// ```
struct FCNHeadOptions {
  /// The head's common options.
  /* implicit */ FCNHeadOptions(DecodeHeadOptions decode) : decode_(std::move(decode)) {}
  /// Options shared by every decode head. No default.
  TORCH_ARG(DecodeHeadOptions, decode);
  /// Number of `ConvModule`s in `convs` (0: the input is the feature; it must have `channels` channels).
  /// Default: 2
  TORCH_ARG(int64_t, num_convs) = 2;
  /// Kernel size of every convolution (padding `kernel_size / 2 · dilation`).
  /// Default: 3
  TORCH_ARG(int64_t, kernel_size) = 3;
  /// Concatenate the input with the convs' output and fuse them with `conv_cat`.
  /// Default: true
  TORCH_ARG(bool, concat_input) = true;
  /// Dilation of the convs in `convs` (not of `conv_cat`).
  /// Default: 1
  TORCH_ARG(int64_t, dilation) = 1;
  /// Add an image-level context branch as mmseg's `ASPPHead` has: `image_pool` (global average
  /// pooling, then a 1×1 ConvModule input → channels) broadcast to the feature's size,
  /// concatenated before the feature and fused back to `channels` by `bottleneck` (3×3 ConvModule).
  /// Not part of mmseg's FCNHead (the context-shift demo's global-context baseline).
  /// Default: false
  TORCH_ARG(bool, global_context) = false;
};

/// mmseg's `FCNHead`: `convs` (a Sequential of `num_convs` `ConvModule`s, keys `convs.0.conv.weight`,
/// ...) and with `concat_input` a `conv_cat` ConvModule on `cat(input, convs(input))`. The final
/// feature f is `conv_cat`'s output (or the convs'), where the released FCN CAC head hooks in.
/// With `global_context`, f = `bottleneck(cat(resize(image_pool(x)), f))` (keys `image_pool.1.conv.weight`,
/// `bottleneck.conv.weight`, ... as in mmseg's ASPPHead).
class FCNHeadImpl : public DecodeHeadImpl {
 public:
  /// Builds the head. See `FCNHeadOptions`.
  explicit FCNHeadImpl(const FCNHeadOptions& options_);
  /// The final feature f `[B, channels, h, w]` of the selected input stage(s).
  torch::Tensor features(const std::vector<torch::Tensor>& inputs) override;

  /// The head's options (`options.decode()`: the common ones, see `decode_options()`).
  FCNHeadOptions options;
  /// `options.decode()`.
  const DecodeHeadOptions& decode_options() const override { return options.decode(); }
  /// The `num_convs` ConvModules (empty when `num_convs` is 0).
  torch::nn::Sequential convs{nullptr};
  /// `ConvModule(in + channels → channels)` with `concat_input`, else null.
  ConvModule conv_cat{nullptr};
  /// `Sequential(AdaptiveAvgPool2d(1), ConvModule(in → channels, 1×1))` with `global_context`, else null.
  torch::nn::Sequential image_pool{nullptr};
  /// `ConvModule(2 · channels → channels, 3×3)` with `global_context`, else null.
  ConvModule bottleneck{nullptr};

 protected:
  /// `options.decode()`, writable.
  DecodeHeadOptions& mutable_decode_options() override { return options.decode(); }
  /// `, num_convs=..., kernel_size=..., concat_input=..., dilation=...` (`, global_context=true` when set).
  void pretty_print_options(std::ostream& stream) const override;
};
/// A `ModuleHolder` for `FCNHeadImpl`. See `FCNHeadOptions`.
TORCH_MODULE(FCNHead);

}  // namespace cac_models
