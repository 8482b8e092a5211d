#pragma once
/// \file
/// `OCRHead` (mmsegmentation 0.x, the OCRNet decoder's second stage): object-contextual
/// representations from the previous head's class scores.

#include "decode_head.hpp"

#include <torch/nn/modules/container/sequential.h>

namespace cac_models {

/// mmseg's `ObjectAttentionBlock` (a `SelfAttentionBlock`): queries from the pixel features,
/// keys and values from the class (object) contexts. Keys `query_project.{0,1}.*`,
/// `key_project.{0,1}.*` (two 1×1 ConvModules each), `value_project.*`, `out_project.*` (one
/// 1×1 ConvModule each) and `bottleneck.*` (1×1 ConvModule on `cat(context, query)`).
class ObjectAttentionBlockImpl : public torch::nn::Module {
 public:
  /// `in_channels` of the pixel features and contexts, `channels` of the attention.
  ObjectAttentionBlockImpl(int64_t in_channels, int64_t channels, const NormOptions& norm);
  /// `query` `[B, in, h, w]`, `key` `[B, in, n, 1]` → `[B, in, h, w]`.
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& key);

  /// Channels of the attention (`ocr_channels`).
  int64_t channels;
  /// Two ConvModules `in → channels → channels` on the keys (the contexts).
  torch::nn::Sequential key_project{nullptr};
  /// Two ConvModules `in → channels → channels` on the queries (the pixels).
  torch::nn::Sequential query_project{nullptr};
  /// ConvModule `in → channels` on the contexts.
  ConvModule value_project{nullptr};
  /// ConvModule `channels → in` on the attended context.
  ConvModule out_project{nullptr};
  /// ConvModule `2·in → in` on `cat(context, query)`.
  ConvModule bottleneck{nullptr};
};
/// A `ModuleHolder` for `ObjectAttentionBlockImpl`.
TORCH_MODULE(ObjectAttentionBlock);

/// Options of `OCRHead`.
///
/// ```
/// OCRHead head(OCRHeadOptions(DecodeHeadOptions({18, 36, 72, 144}, 512, 150)
///                                 .in_index({0, 1, 2, 3})
///                                 .input_transform(InputTransform::ResizeConcat)
///                                 .dropout_ratio(-1)));
/// ```
struct OCRHeadOptions {
  /// The head's common options.
  /* implicit */ OCRHeadOptions(DecodeHeadOptions decode) : decode_(std::move(decode)) {}
  /// Options shared by every decode head. No default.
  TORCH_ARG(DecodeHeadOptions, decode);
  /// Channels of the object attention block.
  /// Default: 256
  TORCH_ARG(int64_t, ocr_channels) = 256;
};

/// mmseg's `OCRHead` (scale 1): `bottleneck` (3×3 ConvModule on the inputs), the spatial
/// gather (class contexts = softmax over pixels of the previous logits × features; no
/// parameters) and `object_context_block`. The final feature f is the object-context block's
/// output, where the released OCRNet CAC head hooks in. mmseg's `scale` option (query
/// downsampling, broken for values > 1 in mmseg 0.x) is not offered.
class OCRHeadImpl : public CascadeDecodeHeadImpl {
 public:
  /// Builds the head. See `OCRHeadOptions`.
  explicit OCRHeadImpl(const OCRHeadOptions& options_);
  using CascadeDecodeHeadImpl::features;
  /// The final feature f `[B, channels, h, w]` for the stages and the previous head's logits
  /// `[B, num_classes, h, w]` (at the transformed input's resolution).
  torch::Tensor features(const std::vector<torch::Tensor>& inputs, const torch::Tensor& prev_logits) override;

  /// The head's options (`options.decode()`: the common ones, see `decode_options()`).
  OCRHeadOptions options;
  /// `options.decode()`.
  const DecodeHeadOptions& decode_options() const override { return options.decode(); }
  /// `ConvModule(in → channels, 3)`.
  ConvModule bottleneck{nullptr};
  /// The object attention block on `channels` with `ocr_channels`.
  ObjectAttentionBlock object_context_block{nullptr};

 protected:
  /// `options.decode()`, writable.
  DecodeHeadOptions& mutable_decode_options() override { return options.decode(); }
  /// `, ocr_channels=...`.
  void pretty_print_options(std::ostream& stream) const override;
};
/// A `ModuleHolder` for `OCRHeadImpl`. See `OCRHeadOptions`.
TORCH_MODULE(OCRHead);

/// mmseg's `SpatialGatherModule` (scale 1): class contexts `[B, d, n, 1]` from `features`
/// `[B, d, h, w]` and class scores `probs` `[B, n, h, w]` (softmax over the pixels).
torch::Tensor spatial_gather(const torch::Tensor& features, const torch::Tensor& probs);

}  // namespace cac_models
