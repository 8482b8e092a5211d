#pragma once
/// \file
/// `cac::ContextAwareHead`: the context-aware classifier of Tian et al. (AAAI 2023) as a module.

#include <cac/functional.hpp>
#include <cac/options.hpp>
#include <cac/outputs.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <ostream>

namespace cac {

/// The context-aware classifier (paper Sections 3.2-3.3, Fig. 5) as a module to put beside an
/// existing classifier C.
///
/// It owns the two projectors: `context_projector` (θp, Eq. 5) turns the image's soft
/// prototypes and C into a per-image classifier A_p; `oracle_projector` (θy, Eq. 2) does the
/// same with ground-truth prototypes in training. Both are
/// `Linear(2d → hidden, bias=false), ReLU, Linear(hidden → d)`. See `cac::ContextAwareHeadOptions`.
///
/// ```
/// cac::ContextAwareHead head(cac::ContextAwareHeadOptions(512, 150));
/// auto logits = conv_seg(features);                                  // p, [B, 150, h, w]
/// auto pp = head->forward(features, conv_seg->weight, logits);       // inference
/// auto out = head->forward_train(features, conv_seg->weight, logits, labels);  // training
/// ```
class ContextAwareHeadImpl : public torch::nn::Cloneable<ContextAwareHeadImpl> {
 public:
  /// Builds the head; `channels` is d and `num_classes` is n.
  ContextAwareHeadImpl(int64_t channels, int64_t num_classes)
      : ContextAwareHeadImpl(ContextAwareHeadOptions(channels, num_classes)) {}
  /// Builds the head from its options.
  explicit ContextAwareHeadImpl(const ContextAwareHeadOptions& options_) : options(options_) { reset(); }

  /// Checks the options and (re)creates and registers both projectors with fresh weights
  /// (LibTorch's default `Linear` initialisation, as PyTorch's `nn.Linear`).
  void reset() override {
    detail::check_head_options("cac::ContextAwareHead", options);
    context_projector = register_module("context_projector", make_projector());
    oracle_projector = register_module("oracle_projector", make_projector());
  }

  /// Prints `cac::ContextAwareHead(channels=..., num_classes=..., ...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "cac::ContextAwareHead(channels=" << options.channels() << ", num_classes=" << options.num_classes()
           << ", hidden_channels=" << options.hidden_channels() << ", tau=" << options.tau()
           << ", oracle_scope=" << options.oracle_scope() << ", ignore_index=" << options.ignore_index() << ")";
  }

  /// Estimated context-aware logits pp (paper Eq. 6), what inference uses.
  ///
  /// `features` f `[B, d, *spatial]` (one or more spatial dims), `classifier_weight` C `[n, d]` or
  /// `[n, d, 1, ...]`, `logits` p `[B, n, *spatial]` (the original classifier's output, with its
  /// bias). Returns `[B, n, *spatial]` in the features' dtype, or in float32 when the caller has
  /// autocast on for the features' device (float64 stays float64). Float16 and bfloat16 inputs are
  /// computed in float32, and float32, float16 and bfloat16 inputs may be mixed (autocast gives a
  /// reduced-precision p beside a float32 C); see docs/api.md, "Mixed precision". Under
  /// `torch::NoGradGuard` it keeps at most one `[B, n, S]` temporary and never copies contiguous
  /// float features. NaN/Inf in any input or projector weight propagate to pp (not checked; see
  /// `ContextAwareLossOptions::check_finite` for training).
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& classifier_weight,
                        const torch::Tensor& logits) {
    const torch::Tensor weight = check_inputs(features, classifier_weight, logits);
    return detail::context_logits(features, weight, logits, projector_weights(context_projector), options.tau());
  }

  /// p, pp and the oracle logits py (paper Eqs. 1-6) for training.
  ///
  /// `labels` is an integer tensor `[B, *spatial']` at any resolution (values in `[0, n)` or
  /// `ignore_index`), resized to the feature grid as PyTorch's `interpolate(mode='nearest')`.
  /// Gradients reach f through every branch and C through both concatenations (the oracle starts
  /// from a detached copy of C, as released). `logits` is passed through as is; pp and py have
  /// the dtype `forward` documents. NaN/Inf in the inputs propagate to pp and py (not checked).
  ContextAwareOutput forward_train(const torch::Tensor& features, const torch::Tensor& classifier_weight,
                                   const torch::Tensor& logits, const torch::Tensor& labels) {
    const torch::Tensor weight = check_inputs(features, classifier_weight, logits);
    detail::check_labels("cac::ContextAwareHead", labels, features.size(0), features.dim() - 2, options.num_classes(),
                         options.ignore_index(), features.device());
    ContextAwareOutput out;
    out.logits = logits;
    out.context_logits =
        detail::context_logits(features, weight, logits, projector_weights(context_projector), options.tau());
    out.oracle_logits = detail::oracle_logits(features, weight, labels, projector_weights(oracle_projector), options);
    return out;
  }

  /// The weights of a projector built by this head, for `cac::functional`.
  static ProjectorWeights projector_weights(const torch::nn::Sequential& projector) {
    const auto& first = *projector->ptr(0)->as<torch::nn::LinearImpl>();
    const auto& second = *projector->ptr(2)->as<torch::nn::LinearImpl>();
    return {first.weight, second.weight, second.bias};
  }

  /// The options the head was built with.
  ContextAwareHeadOptions options;
  /// θp (paper Eq. 5): `Linear(2d → hidden, bias=false), ReLU, Linear(hidden → d)`.
  torch::nn::Sequential context_projector{nullptr};
  /// θy (paper Eq. 2), same structure as `context_projector`; used in training only.
  torch::nn::Sequential oracle_projector{nullptr};

 private:
  torch::nn::Sequential make_projector() const {
    const int64_t d = options.channels(), hidden = options.hidden_channels();
    return torch::nn::Sequential(torch::nn::Linear(torch::nn::LinearOptions(2 * d, hidden).bias(false)),
                                 torch::nn::ReLU(), torch::nn::Linear(torch::nn::LinearOptions(hidden, d)));
  }

  torch::Tensor check_inputs(const torch::Tensor& features, const torch::Tensor& classifier_weight,
                             const torch::Tensor& logits) const {
    constexpr const char* who = "cac::ContextAwareHead";
    detail::check_features(who, features, options.channels());
    const torch::Tensor weight =
        detail::check_classifier_weight(who, classifier_weight, features, options.num_classes());
    detail::check_logits(who, "logits", logits, features, options.num_classes());
    return weight;
  }
};

/// A `ModuleHolder` for `ContextAwareHeadImpl`. See its documentation and
/// `cac::ContextAwareHeadOptions`.
TORCH_MODULE(ContextAwareHead);

}  // namespace cac
