#pragma once
/// \file
/// `cac::ContextAwareLoss`: the training objective of paper Eq. 8.

#include <cac/functional.hpp>
#include <cac/options.hpp>
#include <cac/outputs.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

namespace cac {

/// `L = CE(p) + CE(pp) + CE(py) + λ·KL` (paper Eq. 8), each term with its own weight.
///
/// The three cross-entropies upsample their logits to the label size (linear, bilinear or
/// trilinear for 1-, 2- or 3-D) and average over non-ignored pixels; the distillation
/// (`cac::EntropyAwareKL`) runs at the logits' resolution. Zero weights reproduce the rows of the
/// paper's Table 2. See `cac::ContextAwareLossOptions`.
///
/// ```
/// cac::ContextAwareLoss criterion;
/// auto losses = criterion->forward(classifier->forward_train(features, labels), labels);
/// losses.total.backward();
/// ```
class ContextAwareLossImpl : public torch::nn::Cloneable<ContextAwareLossImpl> {
 public:
  /// Builds the loss from its options.
  explicit ContextAwareLossImpl(const ContextAwareLossOptions& options_ = {}) : options(options_) { reset(); }

  /// Checks the options (the weights finite and >= 0, teacher_weight in [0, 1]); the loss has no
  /// parameters.
  void reset() override { detail::check_loss_options("cac::ContextAwareLoss", options); }

  /// Prints `cac::ContextAwareLoss(kl_weight=..., ...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << std::boolalpha << "cac::ContextAwareLoss(kl_weight=" << options.kl_weight()
           << ", logits_weight=" << options.logits_weight() << ", context_weight=" << options.context_weight()
           << ", oracle_weight=" << options.oracle_weight() << ", align_corners=" << options.align_corners()
           << ", ignore_index=" << options.ignore_index() << ", teacher_weight=" << options.kl().teacher_weight()
           << ", entropy_weighted=" << options.kl().entropy_weighted() << ", class_wise=" << options.kl().class_wise()
           << ", check_finite=" << options.check_finite() << ")";
  }

  /// Every term and the weighted total for the head's `output` and `labels` `[B, *spatial']`
  /// (integer, at any resolution). `output.oracle_logits` may be undefined only when the oracle
  /// and distillation weights are 0. Every term is 0-dim float32 (float64 for float64 pp), computed
  /// in float32 for float16/bfloat16 logits (which may be mixed with float32) with or without
  /// autocast, like LibTorch's own losses under autocast. NaN/Inf in the logits give NaN/Inf terms
  /// silently unless `options.check_finite`, which throws a `c10::Error` naming the non-finite
  /// terms and how many NaN/Inf each input holds.
  ContextAwareLosses forward(const ContextAwareOutput& output, const torch::Tensor& labels) {
    constexpr const char* who = "cac::ContextAwareLoss";
    detail::check_loss_inputs(who, output, labels, options);
    ContextAwareLosses losses = detail::context_aware_loss(output, labels, options);
    detail::check_finite_losses(who, losses, output, options);
    return losses;
  }

  /// The options the loss was built with.
  ContextAwareLossOptions options;
};

/// A `ModuleHolder` for `ContextAwareLossImpl`. See `cac::ContextAwareLossOptions`.
TORCH_MODULE(ContextAwareLoss);

}  // namespace cac
