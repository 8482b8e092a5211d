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

  /// Checks the options; the loss has no parameters.
  void reset() override { detail::check_kl_options("cac::ContextAwareLoss", options.kl()); }

  /// Prints `cac::ContextAwareLoss(kl_weight=..., ...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << std::boolalpha << "cac::ContextAwareLoss(kl_weight=" << options.kl_weight()
           << ", logits_weight=" << options.logits_weight() << ", context_weight=" << options.context_weight()
           << ", oracle_weight=" << options.oracle_weight() << ", align_corners=" << options.align_corners()
           << ", ignore_index=" << options.ignore_index() << ", teacher_weight=" << options.kl().teacher_weight()
           << ", entropy_weighted=" << options.kl().entropy_weighted()
           << ", class_wise=" << options.kl().class_wise() << ")";
  }

  /// Every term and the weighted total for the head's `output` and `labels` `[B, *spatial']`
  /// (integer, at any resolution). `output.oracle_logits` may be undefined only when the oracle
  /// and distillation weights are 0. Every term is 0-dim float32 (float64 for float64 pp), computed
  /// in float32 for float16/bfloat16 logits (which may be mixed with float32) with or without
  /// autocast, like LibTorch's own losses under autocast.
  ContextAwareLosses forward(const ContextAwareOutput& output, const torch::Tensor& labels) {
    detail::check_loss_inputs("cac::ContextAwareLoss", output, labels, options);
    return detail::context_aware_loss(output, labels, options);
  }

  /// The options the loss was built with.
  ContextAwareLossOptions options;
};

/// A `ModuleHolder` for `ContextAwareLossImpl`. See `cac::ContextAwareLossOptions`.
TORCH_MODULE(ContextAwareLoss);

}  // namespace cac
