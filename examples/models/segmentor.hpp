#pragma once
/// \file
/// `EncoderDecoder`: mmsegmentation 0.x's `EncoderDecoder` and `CascadeEncoderDecoder` segmentors.

#include "common.hpp"
#include "heads/decode_head.hpp"

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace cac_models {

/// A backbone, a decode head (or a cascade of heads) and an optional auxiliary head.
///
/// Keys follow mmseg: `backbone.*`, `decode_head.*` (a cascade: `decode_head.0.*`,
/// `decode_head.1.*`), `auxiliary_head.*`. `forward` is inference: the last head's output
/// (pp for a CAC head) bilinearly resized to the input size; `forward_train` returns every
/// loss term for logging, prefixed `decode.` (cascade: `decode_0.`, `decode_1.`, ...) and `aux.`,
/// plus `total`, the sum of the heads' totals, what to back-propagate.
///
/// ```
/// EncoderDecoder model = make_model("fcn_mobilenetv2", ModelOptions().cac(true));
/// auto losses = model->forward_train(images, labels);   // {"decode.loss_ce", ..., "total"}
/// losses["total"].backward();
/// auto prediction = model->forward(images).argmax(1);   // [B, H, W]
/// if (model->has_cac()) auto branches = model->forward_branches(images, labels);  // p, pp, py
/// ```
class EncoderDecoderImpl : public torch::nn::Module {
 public:
  /// A single decode head (mmseg `EncoderDecoder`); `auxiliary_head` may be null.
  EncoderDecoderImpl(std::shared_ptr<BackboneImpl> backbone, std::shared_ptr<DecodeHeadImpl> decode_head,
                     std::shared_ptr<DecodeHeadImpl> auxiliary_head = nullptr);
  /// A cascade (mmseg `CascadeEncoderDecoder`): `decode_heads[0]` is an ordinary head, every
  /// later one a `CascadeDecodeHeadImpl` reading the previous head's output.
  EncoderDecoderImpl(std::shared_ptr<BackboneImpl> backbone, std::vector<std::shared_ptr<DecodeHeadImpl>> decode_heads,
                     std::shared_ptr<DecodeHeadImpl> auxiliary_head = nullptr);

  /// The backbone's stages for `images` `[B, 3, H, W]`.
  std::vector<torch::Tensor> extract_features(const torch::Tensor& images);
  /// Logits `[B, num_classes, H, W]` at the input resolution (bilinear, the last head's
  /// `align_corners`): what inference uses.
  torch::Tensor forward(const torch::Tensor& images);
  /// Every loss term for `images` `[B, 3, H, W]` and int64 `labels` `[B, H, W]` (255 = ignored),
  /// prefixed by the head it comes from and detached (for logging), and `total`, the sum of the
  /// heads' totals (what to back-propagate).
  std::map<std::string, torch::Tensor> forward_train(const torch::Tensor& images, const torch::Tensor& labels);
  /// For a model whose last head has CAC (`has_cac()`): p (`logits`), pp (`context`) and the
  /// oracle py (`oracle`, computed with `labels` `[B, H, W]`) of the last head, each resized to
  /// the input size (bilinear, `align_corners()`). Call in eval mode to evaluate the branches as
  /// the paper's oracle rows do. Throws unless `has_cac()`.
  std::map<std::string, torch::Tensor> forward_branches(const torch::Tensor& images, const torch::Tensor& labels);

  /// True when the last decode head (the one inference uses) has the context-aware classifier:
  /// `forward` returns pp and `forward_branches` is available.
  bool has_cac() const { return !heads_.back()->cac.is_empty(); }
  /// `align_corners` of the last decode head: how `forward` and `forward_branches` resize their
  /// logits to the input, and how callers should resize them further (mmseg
  /// `EncoderDecoder.align_corners`).
  bool align_corners() const { return heads_.back()->decode_options().align_corners(); }
  /// True for a cascade of decode heads.
  bool is_cascade() const { return heads_.size() > 1; }
  /// The decode heads in order (one unless a cascade).
  const std::vector<std::shared_ptr<DecodeHeadImpl>>& decode_heads() const { return heads_; }
  /// The number of classes of the (last) decode head.
  int64_t num_classes() const { return heads_.back()->decode_options().num_classes(); }

  /// Prints `cac_models::EncoderDecoder(cascade=..., num_classes=...)`.
  void pretty_print(std::ostream& stream) const override;

  /// The backbone, registered as `backbone`.
  std::shared_ptr<BackboneImpl> backbone;
  /// The single decode head, registered as `decode_head` (null for a cascade).
  std::shared_ptr<DecodeHeadImpl> decode_head;
  /// The cascade's heads, registered as `decode_head` (null for a single head).
  torch::nn::ModuleList decode_head_list{nullptr};
  /// The auxiliary head (training only), registered as `auxiliary_head`; may be null.
  std::shared_ptr<DecodeHeadImpl> auxiliary_head;

 private:
  std::vector<std::shared_ptr<DecodeHeadImpl>> heads_;
};
/// A `ModuleHolder` for `EncoderDecoderImpl`.
TORCH_MODULE(EncoderDecoder);

}  // namespace cac_models
