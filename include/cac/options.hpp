#pragma once
/// \file
/// Options of every cac module and functional, and the enums they use.

#include <torch/arg.h>

#include <cstdint>
#include <ostream>

namespace cac {

/// Where the oracle branch pools its ground-truth prototypes (paper Eq. 1).
///
/// `Batch` is what the released code does: one oracle classifier per batch,
/// each class's prototype being the mean feature over every pixel of every
/// image labelled with it. `Image` follows the paper's Eq. 1 literally: one
/// oracle classifier per image.
enum class OracleScope {
  /// Pool over the whole batch (released code). One `[n, d]` oracle classifier.
  Batch,
  /// Pool per image (paper Eq. 1). One `[n, d]` oracle classifier per image.
  Image,
};

/// Prints `Batch` or `Image`.
inline std::ostream& operator<<(std::ostream& stream, OracleScope scope) {
  return stream << (scope == OracleScope::Batch ? "Batch" : "Image");
}

/// Options of `cac::ContextAwareHead` (paper Eqs. 1-6).
///
/// Example:
/// ```
/// cac::ContextAwareHead head(cac::ContextAwareHeadOptions(512, 150).tau(15));
/// ```
struct ContextAwareHeadOptions {
  /// `channels` is d, the feature width; `num_classes` is n. The projectors'
  /// bottleneck defaults to `channels / 2` as in the released heads.
  ContextAwareHeadOptions(int64_t channels, int64_t num_classes)
      : channels_(channels), num_classes_(num_classes), hidden_channels_(channels / 2) {}

  /// Feature width d of `features` `[B, d, *spatial]` and of the classifier
  /// weight `[n, d]`. No default.
  TORCH_ARG(int64_t, channels);
  /// Number of classes n. No default.
  TORCH_ARG(int64_t, num_classes);
  /// Bottleneck width of both projectors θp and θy
  /// (Linear 2d→hidden without bias, ReLU, Linear hidden→d).
  /// Default: channels / 2
  TORCH_ARG(int64_t, hidden_channels);
  /// Scale τ of the cosine classifier (paper Eqs. 3 and 6).
  /// Default: 15.0
  TORCH_ARG(double, tau) = 15.0;
  /// Pooling scope of the oracle prototypes (paper Eq. 1 or released code).
  /// Default: OracleScope::Batch
  TORCH_ARG(OracleScope, oracle_scope) = OracleScope::Batch;
  /// Label value that marks unlabelled pixels; they never form prototypes.
  /// Default: 255
  TORCH_ARG(int64_t, ignore_index) = 255;
};

/// Options of `cac::EntropyAwareKL`, the distillation loss of paper Eqs. 7, 10, 11.
///
/// The four settings of `entropy_weighted` × `class_wise` are the rows of the
/// paper's Table 3 (vanilla, entropy, class-wise, class-wise entropy).
///
/// Example:
/// ```
/// cac::EntropyAwareKL kl(cac::EntropyAwareKLOptions().teacher_weight(1.0));  // paper Eq. 11
/// ```
struct EntropyAwareKLOptions {
  /// Weight of softmax(teacher) in the target; the rest goes on the one-hot
  /// label (the released `smoothness`). `1.0` gives the paper's Eq. 11.
  /// Default: 0.5
  TORCH_ARG(double, teacher_weight) = 0.5;
  /// Weigh each pixel by the entropy of softmax(teacher) (paper Eq. 9-10);
  /// otherwise every labelled pixel weighs 1.
  /// Default: true
  TORCH_ARG(bool, entropy_weighted) = true;
  /// Average within each class present in the labels, then over those classes
  /// (paper Eq. 11); otherwise one weighted mean over all labelled pixels.
  /// Default: true
  TORCH_ARG(bool, class_wise) = true;
  /// Label value that marks unlabelled pixels; they weigh 0.
  /// Default: 255
  TORCH_ARG(int64_t, ignore_index) = 255;
};

/// Options of `cac::ContextAwareLoss`, the training objective of paper Eq. 8.
///
/// Zero weights reproduce the rows of the paper's Table 2. The weights must be
/// finite and >= 0 (checked when the loss is built and on every functional call).
///
/// Example:
/// ```
/// cac::ContextAwareLoss loss(cac::ContextAwareLossOptions().kl_weight(0));  // no distillation
/// ```
struct ContextAwareLossOptions {
  /// λ, the weight of the distillation loss (paper Eq. 8).
  /// Default: 1.0
  TORCH_ARG(double, kl_weight) = 1.0;
  /// Weight of the cross-entropy on the original logits p (L^ce).
  /// Default: 1.0
  TORCH_ARG(double, logits_weight) = 1.0;
  /// Weight of the cross-entropy on the context-aware logits pp (L^ce_p).
  /// Default: 1.0
  TORCH_ARG(double, context_weight) = 1.0;
  /// Weight of the cross-entropy on the oracle logits py (L^ce_y).
  /// Default: 1.0
  TORCH_ARG(double, oracle_weight) = 1.0;
  /// `align_corners` of the (bi/tri)linear upsampling of each logits tensor to
  /// the label size before its cross-entropy.
  /// Default: false
  TORCH_ARG(bool, align_corners) = false;
  /// Label value excluded from every cross-entropy and from the distillation.
  /// Default: 255
  TORCH_ARG(int64_t, ignore_index) = 255;
  /// Options of the distillation term. Its `ignore_index` is overridden by
  /// this struct's `ignore_index`.
  /// Default: EntropyAwareKLOptions()
  TORCH_ARG(EntropyAwareKLOptions, kl) = {};
  /// Check that every loss term is finite and throw a `c10::Error` naming the
  /// non-finite terms and how many NaN/Inf each input holds. One synchronisation
  /// per call when on; off, NaN/Inf inputs give NaN/Inf losses silently.
  /// Default: false
  TORCH_ARG(bool, check_finite) = false;
};

/// Options of `cac::ContextAwareClassifier`, the drop-in classifier wrapper.
///
/// Example:
/// ```
/// cac::ContextAwareClassifier<> cls(cac::ContextAwareClassifierOptions(512, 150).dropout(0.1));
/// ```
struct ContextAwareClassifierOptions {
  /// `channels` is d, `num_classes` is n (see `ContextAwareHeadOptions`).
  ContextAwareClassifierOptions(int64_t channels, int64_t num_classes) : head_(channels, num_classes) {}
  /// Builds the options around existing head options.
  /* implicit */ ContextAwareClassifierOptions(ContextAwareHeadOptions head) : head_(head) {}

  /// Options of the owned `ContextAwareHead`. No default.
  TORCH_ARG(ContextAwareHeadOptions, head);
  /// Channel-dropout ratio applied to the features before the original
  /// classifier only (the prototypes and cosine logits use the un-dropped
  /// features, as in the released heads). 0 disables it.
  /// Default: 0.0
  TORCH_ARG(double, dropout) = 0.0;
};

}  // namespace cac
