#pragma once
/// \file
/// `UPerHead` (mmsegmentation 0.x, the UperNet decoder): a pyramid pooling module on the last
/// stage and an FPN over all stages.

#include "decode_head.hpp"

#include <torch/nn/modules/container/modulelist.h>

namespace cac_models {

/// Options of `UPerHead`.
///
/// ```
/// UPerHead head(UPerHeadOptions(DecodeHeadOptions({256, 512, 1024, 2048}, 512, 150)
///                                   .in_index({0, 1, 2, 3})
///                                   .input_transform(InputTransform::MultipleSelect)));
/// ```
struct UPerHeadOptions {
  /// The head's common options (`input_transform` must be `MultipleSelect`).
  /* implicit */ UPerHeadOptions(DecodeHeadOptions decode) : decode_(std::move(decode)) {}
  /// Options shared by every decode head. No default.
  TORCH_ARG(DecodeHeadOptions, decode);
  /// Output sizes of the pyramid pooling branches on the last stage.
  /// Default: {1, 2, 3, 6}
  TORCH_ARG(std::vector<int64_t>, pool_scales) = std::vector<int64_t>{1, 2, 3, 6};
};

/// mmseg's `UPerHead`: `psp_modules.i` (AdaptiveAvgPool2d(scale), ConvModule `psp_modules.i.1`),
/// `bottleneck` (3×3 on the last stage and the pooled branches), `lateral_convs.i` (1×1) and
/// `fpn_convs.i` (3×3) for every other stage, and `fpn_bottleneck` (3×3 on all levels resized
/// to the first). The final feature f is `fpn_bottleneck`'s output, where the released UperNet
/// CAC head hooks in.
class UPerHeadImpl : public DecodeHeadImpl {
 public:
  /// Builds the head. See `UPerHeadOptions`.
  explicit UPerHeadImpl(const UPerHeadOptions& options_);
  /// The final feature f `[B, channels, h0, w0]` at the first selected stage's resolution.
  torch::Tensor features(const std::vector<torch::Tensor>& inputs) override;

  /// The head's options (`options.decode()`: the common ones, see `decode_options()`).
  UPerHeadOptions options;
  /// `options.decode()`.
  const DecodeHeadOptions& decode_options() const override { return options.decode(); }
  /// One `Sequential(AdaptiveAvgPool2d(scale), ConvModule(in_last → channels, 1))` per pool scale.
  torch::nn::ModuleList psp_modules{nullptr};
  /// `ConvModule(in_last + scales·channels → channels, 3)`.
  ConvModule bottleneck{nullptr};
  /// `ConvModule(in_i → channels, 1)` for every stage but the last.
  torch::nn::ModuleList lateral_convs{nullptr};
  /// `ConvModule(channels → channels, 3)` for every stage but the last.
  torch::nn::ModuleList fpn_convs{nullptr};
  /// `ConvModule(stages·channels → channels, 3)`.
  ConvModule fpn_bottleneck{nullptr};

 protected:
  /// `options.decode()`, writable.
  DecodeHeadOptions& mutable_decode_options() override { return options.decode(); }
  /// `, pool_scales=[...]`.
  void pretty_print_options(std::ostream& stream) const override;
};
/// A `ModuleHolder` for `UPerHeadImpl`. See `UPerHeadOptions`.
TORCH_MODULE(UPerHead);

}  // namespace cac_models
