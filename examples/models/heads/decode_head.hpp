#pragma once
/// \file
/// `DecodeHeadImpl`, the base of every decode head (mmsegmentation 0.x `BaseDecodeHead` and
/// `BaseCascadeDecodeHead`), with the optional context-aware classifier of the CAC paper.

#include "../common.hpp"

#include <cac/context_aware_head.hpp>
#include <cac/context_aware_loss.hpp>
#include <cac/options.hpp>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/types.h>

#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

namespace cac_models {

/// How a head picks its inputs from the backbone's stages (mmseg `input_transform`).
enum class InputTransform {
  /// One stage, `in_index[0]` (mmseg `None`).
  Single,
  /// The `in_index` stages, bilinearly resized to the first one's size and concatenated
  /// (mmseg `'resize_concat'`, the HRNet heads).
  ResizeConcat,
  /// The `in_index` stages as a list (mmseg `'multiple_select'`, UPerHead).
  MultipleSelect,
};

/// Prints `Single`, `ResizeConcat` or `MultipleSelect`.
std::ostream& operator<<(std::ostream& stream, InputTransform transform);

/// The context-aware head's settings that a decode head does not derive from its own options
/// (`channels`, `num_classes` and `ignore_index` come from `DecodeHeadOptions`).
///
/// ```
/// DecodeHeadOptions({320}, 512, 150).cac(true).cac_head(CACHeadSettings().tau(10).hidden_channels(128));
/// ```
struct CACHeadSettings {
  /// The library's options of a context-aware head with these settings on `channels` features and
  /// `num_classes` classes, `ignore_index` marking unlabelled pixels.
  cac::ContextAwareHeadOptions head_options(int64_t channels, int64_t num_classes, int64_t ignore_index) const;

  /// Scale τ of the cosine classifiers (`cac::ContextAwareHeadOptions::tau`).
  /// Default: 15.0
  TORCH_ARG(double, tau) = cac::ContextAwareHeadOptions(1, 1).tau();
  /// Pooling scope of the oracle prototypes (`cac::ContextAwareHeadOptions::oracle_scope`).
  /// Default: cac::OracleScope::Batch
  TORCH_ARG(cac::OracleScope, oracle_scope) = cac::ContextAwareHeadOptions(1, 1).oracle_scope();
  /// Bottleneck width of both projectors; unset, the library's default `channels / 2` (the
  /// released heads).
  /// Default: std::nullopt
  TORCH_ARG(std::optional<int64_t>, hidden_channels) = std::nullopt;
};

/// Options shared by every decode head (mmseg `BaseDecodeHead` arguments).
///
/// ```
/// DecodeHeadOptions options({320}, 512, 150);   // one input stage of 320 channels
/// options.in_index({3}).cac(true);
/// ```
struct DecodeHeadOptions {
  /// `in_channels` of the selected stages (one value for `InputTransform::Single`), the head's
  /// width `channels` (d) and the number of classes.
  DecodeHeadOptions(std::vector<int64_t> in_channels, int64_t channels, int64_t num_classes)
      : in_channels_(std::move(in_channels)), channels_(channels), num_classes_(num_classes) {}

  /// Channels of each selected input stage. No default.
  TORCH_ARG(std::vector<int64_t>, in_channels);
  /// Channels d of the head's final feature map, the input of `conv_seg`. No default.
  TORCH_ARG(int64_t, channels);
  /// Number of classes n, the output channels of `conv_seg`. No default.
  TORCH_ARG(int64_t, num_classes);
  /// Indices of the selected backbone stages (negative values count from the end), one per
  /// `in_channels` entry.
  /// Default: {-1}
  TORCH_ARG(std::vector<int64_t>, in_index) = {-1};
  /// How the selected stages are combined.
  /// Default: InputTransform::Single
  TORCH_ARG(InputTransform, input_transform) = InputTransform::Single;
  /// Channel-dropout (`Dropout2d`) ratio before `conv_seg`, in training only; ≤ 0 disables it
  /// (mmseg's OCR configs use −1).
  /// Default: 0.1
  TORCH_ARG(double, dropout_ratio) = 0.1;
  /// `align_corners` of every bilinear resize in the head and of the logits to the label size.
  /// Default: false
  TORCH_ARG(bool, align_corners) = false;
  /// Weight of every loss term of this head (mmseg `loss_decode.loss_weight`).
  /// Default: 1.0
  TORCH_ARG(double, loss_weight) = 1.0;
  /// Label value of unlabelled pixels.
  /// Default: 255
  TORCH_ARG(int64_t, ignore_index) = 255;
  /// Add the context-aware classifier (`cac::ContextAwareHead`, registered as `cac`) on the
  /// head's final feature: inference returns pp and training adds the CAC loss terms.
  /// Default: false
  TORCH_ARG(bool, cac) = false;
  /// Settings of the context-aware head; used when `cac` is true.
  /// Default: CACHeadSettings() (τ 15, oracle pooled over the batch, bottleneck d/2: the released heads)
  TORCH_ARG(CACHeadSettings, cac_head) = {};
  /// Options of the CAC objective (`align_corners`/`ignore_index` are taken from this struct);
  /// used when `cac` is true.
  /// Default: cac::ContextAwareLossOptions()
  TORCH_ARG(cac::ContextAwareLossOptions, cac_loss) = {};
  /// Batch norm of every `ConvModule` of the head.
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
};

/// The base of the decode heads (mmseg `BaseDecodeHead`): input selection, the classifier
/// `conv_seg` (`Conv2d(channels, num_classes, 1)`), channel dropout, the losses, and with
/// `cac` the context-aware classifier `cac` beside `conv_seg`.
///
/// A head computes its final feature map f `[B, d, h, w]` in `features` (before dropout: the
/// point where the released CAC heads hook in); this class turns f into logits and losses:
/// p = conv_seg(Dropout2d(f)), inference returns pp (`cac`) or p, and training reports
/// `loss_ce` (CE(pp) with `cac`, else CE(p)), plus `loss_pre_self` (CE(p)), `loss_pre` (CE(py))
/// and `loss_kl` with `cac`, every term times `loss_weight`. See `DecodeHeadOptions`.
///
/// CAC is reached only through the library's public modules, as a user would: a
/// `cac::ContextAwareHead` (`cac`) fed with `conv_seg`'s weight and logits, and a
/// `cac::ContextAwareLoss` (`criterion`) whose `total` is what trains. (`cac::ContextAwareClassifier`
/// would hold the classifier itself, renaming mmseg's keys `conv_seg.*` and `cac.*` that the
/// released checkpoints use.)
///
/// Each head keeps its options in one public member `options` (e.g. `FCNHeadOptions`), whose
/// `decode()` part this class reads and updates through `decode_options()`.
class DecodeHeadImpl : public torch::nn::Module {
 public:
  /// Checks the common options and registers `conv_seg` (and `cac`). `who` names the head in
  /// messages. The subclass keeps `options`; this class reads it through `decode_options()`.
  DecodeHeadImpl(const DecodeHeadOptions& options, std::string who);

  /// The head's common options (the `decode()` part of the subclass's `options`).
  virtual const DecodeHeadOptions& decode_options() const = 0;

  /// The head's final feature map f `[B, channels, h, w]` for the backbone's stages `inputs`.
  virtual torch::Tensor features(const std::vector<torch::Tensor>& inputs) = 0;

  /// p = conv_seg(Dropout2d(f)) `[B, num_classes, h, w]`; dropout only in training.
  torch::Tensor logits(const torch::Tensor& features);
  /// What inference uses for the features f: pp with `cac`, else p. `[B, num_classes, h, w]`.
  torch::Tensor predict(const torch::Tensor& features);
  /// p, pp and py (`cac::ContextAwareHead::forward_train` on `conv_seg`) for the features f and
  /// int64 labels `[B, H, W]`. Throws unless the head has `cac`.
  cac::ContextAwareOutput forward_cac(const torch::Tensor& features, const torch::Tensor& labels);
  /// The three classifiers of a CAC head for the features f and labels `[B, H, W]`: `logits` (p),
  /// `context` (pp) and `oracle` (py, which needs the labels), `[B, num_classes, h, w]` each.
  /// Throws unless the head has `cac`. Used to evaluate the oracle branch.
  std::map<std::string, torch::Tensor> branches(const torch::Tensor& features, const torch::Tensor& labels);
  /// The loss terms for the features f and int64 labels `[B, H, W]` (any resolution;
  /// `ignore_index` marks unlabelled pixels), each times its weights and detached, for logging,
  /// and `total`, what to back-propagate (with `cac`: `cac::ContextAwareLoss`'s total, which leaves
  /// zero-weight terms out, times `loss_weight`).
  std::map<std::string, torch::Tensor> losses(const torch::Tensor& features, const torch::Tensor& labels);

  /// `predict(features(inputs))`: the head's inference output at the feature resolution.
  torch::Tensor forward_test(const std::vector<torch::Tensor>& inputs);
  /// `losses(features(inputs), labels)`.
  std::map<std::string, torch::Tensor> forward_train(const std::vector<torch::Tensor>& inputs,
                                                     const torch::Tensor& labels);
  /// Same as `forward_test`.
  torch::Tensor forward(const std::vector<torch::Tensor>& inputs) { return forward_test(inputs); }

  /// Changes the channel-dropout ratio (< 1; ≤ 0 removes `dropout`), updating the options.
  void set_dropout_ratio(double ratio);

  /// Channels of the tensor `transform_inputs` returns (`Single`: the stage's channels,
  /// `ResizeConcat`: their sum). Not defined for `MultipleSelect`.
  int64_t input_channels() const;
  /// The selected stage (`Single`) or the resized concatenation (`ResizeConcat`) (mmseg
  /// `_transform_inputs`).
  torch::Tensor transform_inputs(const std::vector<torch::Tensor>& inputs) const;
  /// The selected stages in `in_index` order (`MultipleSelect`).
  std::vector<torch::Tensor> select_inputs(const std::vector<torch::Tensor>& inputs) const;

  /// Prints `cac_models::X(in_channels=[...], channels=..., num_classes=..., ...)` followed by the
  /// head's own options (`pretty_print_options`).
  void pretty_print(std::ostream& stream) const override;

  /// The classifier C: `Conv2d(channels, num_classes, 1)`, weights N(0, 0.01), bias 0 (mmseg init).
  torch::nn::Conv2d conv_seg{nullptr};
  /// `Dropout2d(dropout_ratio)` (no parameters), null when the ratio is ≤ 0.
  torch::nn::Dropout2d dropout{nullptr};
  /// The context-aware classifier (both projectors), null unless `cac`.
  /// Keys `cac.context_projector.{0,2}.*` and `cac.oracle_projector.{0,2}.*`.
  cac::ContextAwareHead cac{nullptr};
  /// The CAC objective (`cac_loss` with the head's `align_corners` and `ignore_index`); no
  /// parameters, not registered. Null unless `cac`.
  cac::ContextAwareLoss criterion{nullptr};

 protected:
  /// The common options, writable (for `set_dropout_ratio`).
  virtual DecodeHeadOptions& mutable_decode_options() = 0;
  /// Prints the subclass's own options as `, name=value` pairs inside `pretty_print`'s parentheses.
  virtual void pretty_print_options(std::ostream& /*stream*/) const {}
  /// The head's name in messages, e.g. `cac_models::FCNHead`.
  std::string who_;

 private:
  /// Registers `dropout` for `ratio` > 0, removes it otherwise.
  void apply_dropout(double ratio);
};

/// The base of a head that also reads the previous head's logits (mmseg `BaseCascadeDecodeHead`),
/// e.g. OCRHead after an FCN head in OCRNet.
class CascadeDecodeHeadImpl : public DecodeHeadImpl {
 public:
  using DecodeHeadImpl::DecodeHeadImpl;
  using DecodeHeadImpl::features;
  using DecodeHeadImpl::forward_test;
  using DecodeHeadImpl::forward_train;

  /// The final feature map for the backbone's stages and the previous head's output
  /// `prev_logits` `[B, num_classes, h', w']`.
  virtual torch::Tensor features(const std::vector<torch::Tensor>& inputs, const torch::Tensor& prev_logits) = 0;
  /// A cascade head needs the previous head's logits: always throws.
  torch::Tensor features(const std::vector<torch::Tensor>& inputs) override;

  /// `predict(features(inputs, prev_logits))`.
  torch::Tensor forward_test(const std::vector<torch::Tensor>& inputs, const torch::Tensor& prev_logits);
  /// `losses(features(inputs, prev_logits), labels)`.
  std::map<std::string, torch::Tensor> forward_train(const std::vector<torch::Tensor>& inputs,
                                                     const torch::Tensor& prev_logits, const torch::Tensor& labels);
};

}  // namespace cac_models
