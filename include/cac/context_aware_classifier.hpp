#pragma once
/// \file
/// `cac::ContextAwareClassifier`: a drop-in replacement for a model's final classifier.

#include <cac/context_aware_head.hpp>
#include <cac/detail/autocast.hpp>
#include <cac/detail/tensor_utils.hpp>
#include <cac/options.hpp>
#include <cac/outputs.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/version.h>

#include <memory>
#include <ostream>
#include <type_traits>
#include <variant>

namespace cac {
namespace detail {

/// A fresh 1×1 classifier `d → n` of the given type (with bias, LibTorch's default init).
template <class Classifier>
Classifier make_classifier(int64_t channels, int64_t num_classes) {
  if constexpr (std::is_same_v<Classifier, torch::nn::Linear>) {
    return torch::nn::Linear(torch::nn::LinearOptions(channels, num_classes));
  } else if constexpr (std::is_same_v<Classifier, torch::nn::Conv1d>) {
    return torch::nn::Conv1d(torch::nn::Conv1dOptions(channels, num_classes, 1));
  } else if constexpr (std::is_same_v<Classifier, torch::nn::Conv2d>) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, num_classes, 1));
  } else {
    static_assert(std::is_same_v<Classifier, torch::nn::Conv3d>,
                  "cac::ContextAwareClassifier supports Conv1d, Conv2d, Conv3d and Linear classifiers");
    return torch::nn::Conv3d(torch::nn::Conv3dOptions(channels, num_classes, 1));
  }
}

}  // namespace detail

/// The drop-in context-aware classifier: the model's own classifier C plus a
/// `cac::ContextAwareHead`, behind one module.
///
/// Recipe to turn an existing segmentation model into a CAC model: replace its final 1×1
/// classifier (`Conv2d(d, n, 1)`, or `Conv1d`/`Conv3d`/`Linear`) by this wrapper holding that
/// same classifier, call `forward_train(features, labels)` in training and feed the result to
/// `cac::ContextAwareLoss`; `forward(features)` returns pp, what inference uses. Features are
/// channels-first `[B, d, *spatial]` for every classifier type (a `Linear` acts on the channel
/// dim). As in the released heads, the optional channel dropout applies to the features that
/// feed the original classifier only: p = C(dropout(f)), while prototypes and cosine logits use f.
/// See `cac::ContextAwareClassifierOptions`.
///
/// ```
/// cac::ContextAwareClassifier<torch::nn::Conv2d> classifier(
///     torch::nn::Conv2d(torch::nn::Conv2dOptions(512, 150, 1)), cac::ContextAwareHeadOptions(512, 150), 0.1);
/// ```
template <class Classifier = torch::nn::Conv2d>
class ContextAwareClassifierImpl : public torch::nn::Cloneable<ContextAwareClassifierImpl<Classifier>> {
 public:
  /// Builds a fresh 1×1 classifier `d → n` and the head.
  explicit ContextAwareClassifierImpl(const ContextAwareClassifierOptions& options_) : options(options_) { reset(); }
  /// Wraps the user's existing `classifier` (kept as is, weights included).
  ContextAwareClassifierImpl(Classifier classifier_, const ContextAwareClassifierOptions& options_)
      : options(options_), classifier(std::move(classifier_)) {
    reset();
  }
  /// Wraps the user's existing `classifier` with a head of `head_options` and the given dropout ratio.
  ContextAwareClassifierImpl(Classifier classifier_, const ContextAwareHeadOptions& head_options, double dropout = 0.0)
      : ContextAwareClassifierImpl(std::move(classifier_),
                                   ContextAwareClassifierOptions(head_options).dropout(dropout)) {}

  /// Checks the options and the classifier, registers the classifier (a fresh one if none was
  /// given) as `classifier` and a new head as `head`.
  void reset() override {
    constexpr const char* who = "cac::ContextAwareClassifier";
    TORCH_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0, who, ": expected dropout in [0, 1) but got ",
                options.dropout());
    detail::check_head_options(who, options.head());
    const int64_t d = options.head().channels(), n = options.head().num_classes();
    if (!classifier) classifier = detail::make_classifier<Classifier>(d, n);
    const torch::Tensor& weight = classifier->weight;
    bool one_by_one = weight.dim() >= 2 && weight.size(0) == n && weight.size(1) == d;
    for (int64_t i = 2; i < weight.dim(); ++i) one_by_one = one_by_one && weight.size(i) == 1;
    TORCH_CHECK(one_by_one, who, ": expected a classifier with weight of shape [", n, ", ", d,
                ", 1, ...] (a 1x1 map from d = ", d, " channels to n = ", n, " classes) but got ", weight.sizes());
    classifier = this->register_module("classifier", classifier);
    head = this->register_module("head", ContextAwareHead(options.head()));
  }

  /// A deep copy: the classifier is cloned with its own `clone()`, the head with its parameters.
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto classifier_copy = std::dynamic_pointer_cast<typename Classifier::Impl>(classifier->clone(device));
    auto copy = std::make_shared<ContextAwareClassifierImpl>(Classifier(classifier_copy), options);
    copy->head = copy->replace_module(
        "head", ContextAwareHead(std::dynamic_pointer_cast<ContextAwareHeadImpl>(head->clone(device))));
    copy->train(this->is_training());
    return copy;
  }

  /// Prints `cac::ContextAwareClassifier(channels=..., num_classes=..., dropout=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "cac::ContextAwareClassifier(channels=" << options.head().channels()
           << ", num_classes=" << options.head().num_classes() << ", dropout=" << options.dropout() << ")";
  }

  /// The original classifier's logits p = C(dropout(f)) `[B, n, *spatial]`; dropout only in training.
  ///
  /// `features` must be on C's device and, without autocast, in C's dtype (under autocast any mix
  /// of float32, float16 and bfloat16, as autocast casts them). float16 on the CPU, where
  /// LibTorch 1.13 has no float16 convolution or matrix product, is computed in float32 as the
  /// per-pixel map `W·f + b` of the 1×1 classifier and returned in float16 (convolutions with a
  /// stride or padding other than 1 and 0 are refused there), the dropout too. NaN/Inf in `features`
  /// or C propagate.
  torch::Tensor classifier_logits(const torch::Tensor& features) {
    const bool half_on_cpu = check_features(features);
    const torch::Tensor source =
        half_on_cpu ? features.to(at::kFloat) : features;  // dropout too: no CPU float16 bernoulli
    const torch::Tensor input = (this->is_training() && options.dropout() > 0.0)
                                    ? at::feature_dropout(source, options.dropout(), /*train=*/true)
                                    : source;
    if (half_on_cpu) {
      const torch::Tensor& weight = classifier->weight;
      const torch::Tensor& bias = classifier->bias;
      const torch::Tensor flat =
          at::linear(input.movedim(1, -1), weight.reshape({weight.size(0), weight.size(1)}).to(at::kFloat),
                     bias.defined() ? bias.to(at::kFloat) : torch::Tensor());
      return flat.movedim(-1, 1).to(at::kHalf);
    }
    if constexpr (std::is_same_v<Classifier, torch::nn::Linear>) {
      return classifier->forward(input.movedim(1, -1)).movedim(-1, 1);
    } else {
      return classifier->forward(input);
    }
  }

  /// pp `[B, n, *spatial]` for `features` `[B, d, *spatial]`: what inference uses (argmax over dim 1).
  ///
  /// Dtypes and devices as `classifier_logits` checks them; NaN/Inf in `features` or in the
  /// weights propagate to pp (not checked, see `ContextAwareLossOptions::check_finite`).
  ///
  /// Autocast-safe: under the caller's autocast the classifier C runs as autocast decides (p in
  /// reduced precision), the CAC maths in float32 with C's own float32 weights, and pp comes out in
  /// float32. Without autocast pp has the features' dtype (see `cac::ContextAwareHead::forward`).
  torch::Tensor forward(const torch::Tensor& features) {
    torch::Tensor logits = classifier_logits(features);
    return head->forward(features, classifier->weight, logits);
  }

  /// p, pp and py for `features` `[B, d, *spatial]` and integer `labels` `[B, *spatial']`,
  /// ready for `cac::ContextAwareLoss`.
  /// Dtypes as in `forward`: p as the classifier returns it, pp and py in float32 under autocast.
  /// NaN/Inf in the inputs or weights propagate (not checked).
  ContextAwareOutput forward_train(const torch::Tensor& features, const torch::Tensor& labels) {
    torch::Tensor logits = classifier_logits(features);
    return head->forward_train(features, classifier->weight, logits, labels);
  }

  /// The options the wrapper was built with.
  ContextAwareClassifierOptions options;
  /// The original classifier C (the model's own, e.g. `conv_seg`).
  Classifier classifier{nullptr};
  /// The context-aware head holding both projectors.
  ContextAwareHead head{nullptr};

 private:
  /// Checks `features` against the options and C; returns whether C must run in float32 because
  /// both are float16 on the CPU without autocast (LibTorch 1.13 has no CPU float16 conv/addmm).
  bool check_features(const torch::Tensor& features) const {
    constexpr const char* who = "cac::ContextAwareClassifier";
    detail::check_features(who, features, options.head().channels());
    const torch::Tensor& weight = classifier->weight;
    if constexpr (!std::is_same_v<Classifier, torch::nn::Linear>) {
      TORCH_CHECK(features.dim() == weight.dim(), who, ": expected features with ", weight.dim() - 2,
                  " spatial dims for this convolution classifier but got ", features.sizes());
    }
    TORCH_CHECK(features.device() == weight.device(), who, ": expected features on the classifier's device ",
                weight.device(), " but got ", features.device());
    const c10::ScalarType type = features.scalar_type(), weight_type = weight.scalar_type();
    const bool autocast = detail::autocast_is_enabled(features.device().type());
    TORCH_CHECK(type == weight_type || (autocast && detail::compatible_dtypes(type, weight_type)), who,
                ": expected features of the classifier's dtype ", weight_type, " but got ", type,
                autocast ? " (under autocast only float32, float16 and bfloat16 may be mixed)"
                         : " (float32, float16 and bfloat16 may be mixed only under autocast: cac::AutocastGuard)");
    const bool half_on_cpu = !autocast && features.is_cpu() && type == at::kHalf;
    if constexpr (!std::is_same_v<Classifier, torch::nn::Linear>) {
      if (half_on_cpu) {
        const auto& conv = classifier->options;
        bool pointwise = true;
        for (const int64_t stride : at::IntArrayRef(conv.stride())) pointwise = pointwise && stride == 1;
        using Sizes = std::decay_t<decltype(conv.stride())>;
#if TORCH_VERSION_MAJOR >= 2  // the padding variant is std::variant in LibTorch 2.x, c10::variant in 1.x
        const auto* padding = std::get_if<Sizes>(&conv.padding());
#else
        const auto* padding = c10::get_if<Sizes>(&conv.padding());
#endif
        if (padding) {
          for (const int64_t size : at::IntArrayRef(*padding)) pointwise = pointwise && size == 0;
        }
        TORCH_CHECK(pointwise, who,
                    ": float16 on the CPU runs the classifier in float32 as a 1x1 map, which needs "
                    "stride 1 and padding 0, but the classifier has stride ",
                    at::IntArrayRef(conv.stride()), " or a non-zero padding; use bfloat16 or float32 on the CPU");
      }
    }
    return half_on_cpu;
  }
};

/// A `ModuleHolder` for `ContextAwareClassifierImpl<Classifier>` (`TORCH_MODULE` for a template).
template <class Classifier = torch::nn::Conv2d>
class ContextAwareClassifier : public torch::nn::ModuleHolder<ContextAwareClassifierImpl<Classifier>> {
 public:
  using torch::nn::ModuleHolder<ContextAwareClassifierImpl<Classifier>>::ModuleHolder;
  /// The implementation type.
  using Impl = ContextAwareClassifierImpl<Classifier>;
};

}  // namespace cac
