#pragma once
/// \file
/// `cac::EntropyAwareKL`: the entropy-aware, class-wise distillation loss (paper Eqs. 7-11).

#include <cac/functional.hpp>
#include <cac/options.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

namespace cac {

/// Distils the oracle prediction py (teacher) into the estimated one pp (student).
///
/// Per pixel, the loss is the cross-entropy of log_softmax(pp) against
/// `teacher_weight·softmax(py) + (1 − teacher_weight)·onehot(y)`, weighted by the entropy of
/// softmax(py) (Eq. 9) and zero on ignored pixels; class-wise, the weighted mean is taken within
/// each class present in y, then averaged over those classes (Eq. 11). No present class gives 0.
/// See `cac::EntropyAwareKLOptions`.
///
/// ```
/// cac::EntropyAwareKL kl;
/// auto loss = kl->forward(out.context_logits, out.oracle_logits, labels);
/// ```
class EntropyAwareKLImpl : public torch::nn::Cloneable<EntropyAwareKLImpl> {
 public:
  /// Builds the loss from its options.
  explicit EntropyAwareKLImpl(const EntropyAwareKLOptions& options_ = {}) : options(options_) { reset(); }

  /// Checks the options; the loss has no parameters.
  void reset() override { detail::check_kl_options("cac::EntropyAwareKL", options); }

  /// Prints `cac::EntropyAwareKL(teacher_weight=..., ...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << std::boolalpha << "cac::EntropyAwareKL(teacher_weight=" << options.teacher_weight()
           << ", entropy_weighted=" << options.entropy_weighted() << ", class_wise=" << options.class_wise()
           << ", ignore_index=" << options.ignore_index() << ")";
  }

  /// The loss, 0-dim: float32 for float32, float16 and bfloat16 inputs (which may be mixed),
  /// float64 for float64; computed in that dtype with or without autocast. `student` and `teacher`
  /// are `[B, n, *spatial]`; `labels` `[B, *spatial']` at any resolution. `teacher` is detached.
  /// NaN/Inf in `student` or `teacher` give a NaN/Inf loss (not checked; see
  /// `ContextAwareLossOptions::check_finite`).
  torch::Tensor forward(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& labels) {
    detail::check_kl_inputs("cac::EntropyAwareKL", student, teacher, labels, options.ignore_index());
    return detail::entropy_aware_kl(student, teacher, labels, options);
  }

  /// The options the loss was built with.
  EntropyAwareKLOptions options;
};

/// A `ModuleHolder` for `EntropyAwareKLImpl`. See `cac::EntropyAwareKLOptions`.
TORCH_MODULE(EntropyAwareKL);

}  // namespace cac
