#pragma once
/// \file
/// `cac::functional`: the maths of the context-aware classifier as free functions.
///
/// Every module's `forward` delegates here, so code without modules can call the maths
/// directly. Shapes: features `[B, d, *spatial]`, class scores `[B, n, *spatial]`, classifier
/// weights `[n, d]` (or a 1×1 convolution's `[n, d, 1, ...]`), labels `[B, *spatial']` at any
/// resolution.
///
/// Precision (docs/api.md, "Mixed precision"): float64 and float32 run natively; float16 and
/// bfloat16 inputs are computed in float32, and float32, float16 and bfloat16 inputs may be mixed.
/// Every function runs its maths with autocast off for its device (`detail::AutocastOff`), so
/// autocast never re-casts it. Prototypes and losses come out in the compute dtype (float32 for
/// reduced precision); logits (cosine, pp, py) in the features' dtype, or in their compute dtype
/// when the caller has autocast on for the features' device, as autocast's float32 ops do.

#include <cac/detail/autocast.hpp>
#include <cac/detail/tensor_utils.hpp>
#include <cac/options.hpp>
#include <cac/outputs.hpp>

#include <ATen/ATen.h>
#include <ATen/core/Reduction.h>
#include <c10/core/GradMode.h>
#include <c10/util/accumulate.h>
#include <torch/csrc/autograd/custom_function.h>

#include <cmath>
#include <sstream>
#include <utility>
#include <vector>

namespace cac {

/// The weights of one projector θ (paper Eqs. 2 and 5): Linear(2d → h, no bias), ReLU,
/// Linear(h → d).
struct ProjectorWeights {
  /// First linear layer's weight `[h, 2d]`.
  at::Tensor fc1_weight;
  /// Second linear layer's weight `[d, h]`.
  at::Tensor fc2_weight;
  /// Second linear layer's bias `[d]` (may be undefined: no bias).
  at::Tensor fc2_bias;
};

/// Options of `cac::functional::ground_truth_prototypes`.
struct GroundTruthPrototypesFuncOptions {
  /// Pool over the batch (released code) or per image (paper Eq. 1).
  /// Default: OracleScope::Batch
  TORCH_ARG(OracleScope, scope) = OracleScope::Batch;
  /// Label value that never forms a prototype.
  /// Default: 255
  TORCH_ARG(int64_t, ignore_index) = 255;
};

/// Options of `cac::functional::context_logits` and `cac::functional::oracle_logits`.
using ContextAwareHeadFuncOptions = ContextAwareHeadOptions;
/// Options of `cac::functional::entropy_aware_kl`.
using EntropyAwareKLFuncOptions = EntropyAwareKLOptions;
/// Options of `cac::functional::context_aware_loss`.
using ContextAwareLossFuncOptions = ContextAwareLossOptions;

namespace detail {

/// The dtype logits (cosine, pp, py) are returned in for `features`: their own dtype, or their
/// compute dtype (float32 for float16/bfloat16) when the caller had autocast on for their device
/// (`autocast.was_enabled()`), as autocast's float32 ops (softmax, losses) return float32.
inline c10::ScalarType logits_dtype(const at::Tensor& features, const AutocastOff& autocast) {
  return autocast.was_enabled() ? compute_dtype(features.scalar_type()) : features.scalar_type();
}

/// `tensor` `[B, c, *spatial]` viewed (or copied) as `[B, c, S]`.
inline at::Tensor flatten_spatial(const at::Tensor& tensor) {
  return tensor.reshape({tensor.size(0), tensor.size(1), c10::multiply_integers(tensor.sizes().slice(2))});
}

/// Eq. 4 as one autograd node whose backward uses batched products only (the generic graph
/// accumulates a transposed `[B, S, d]` gradient into f, a strided add slower than the products).
/// Inputs: `features` `[B, d, S]` (compute dtype), `logits` `[B, n, S]`.
struct SoftPrototypesFunction : public torch::autograd::Function<SoftPrototypesFunction> {
  /// P = (s fᵀ) / (Σ_i s + 1e-12) with s = softmax(logits) over classes.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& features,
                            const at::Tensor& logits) {
    const at::Tensor weights = at::softmax(logits, 1, features.scalar_type());             // s, [B, n, S]
    const at::Tensor denominator = weights.sum(-1, /*keepdim=*/true).add_(1e-12);          // [B, n, 1]
    at::Tensor prototypes = at::bmm(weights, features.transpose(1, 2)).div_(denominator);  // [B, n, d]
    ctx->save_for_backward({features, weights, denominator, prototypes});
    ctx->saved_data["logits_dtype"] = static_cast<int64_t>(logits.scalar_type());
    return prototypes;
  }

  /// With g = dL/dP and h = g / den: dL/df = hᵀ s; dL/ds = h f − Σ_d h·P; then the softmax
  /// backward s·(dL/ds − Σ_k s·dL/ds), its class sum taken as a product with ones.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &features = saved[0], &weights = saved[1], &denominator = saved[2], &prototypes = saved[3];
    const AutocastOff no_autocast(features.device());  // backward() may be called inside an autocast scope
    const at::Tensor scaled = grads[0] / denominator;  // h, [B, n, d]
    at::Tensor grad_features = at::bmm(scaled.transpose(1, 2), weights);  // [B, d, S]
    at::Tensor grad_weights = at::bmm(scaled, features);                  // [B, n, S]
    grad_weights.sub_((scaled * prototypes).sum(-1, /*keepdim=*/true));
    const at::Tensor ones = at::ones({weights.size(0), 1, weights.size(1)}, weights.options());
    const at::Tensor class_sum = at::bmm(ones, weights * grad_weights);  // [B, 1, S]
    at::Tensor grad_logits = grad_weights.sub_(class_sum).mul_(weights);
    const auto logits_type = static_cast<c10::ScalarType>(ctx->saved_data["logits_dtype"].toInt());
    return {grad_features, grad_logits.to(logits_type)};
  }
};

/// Unchecked Eq. 4. `features` `[B, d, S]` in the compute dtype, `logits` `[B, n, S]`.
inline at::Tensor soft_prototypes(const at::Tensor& features, const at::Tensor& logits) {
  if (c10::GradMode::is_enabled() && (features.requires_grad() || logits.requires_grad())) {
    return SoftPrototypesFunction::apply(features, logits);
  }
  const at::Tensor weights = at::softmax(logits, 1, features.scalar_type());  // [B, n, S]
  const at::Tensor sums = at::bmm(weights, features.transpose(1, 2));         // [B, n, d]
  return sums.div_(weights.sum(-1, /*keepdim=*/true).add_(1e-12));
}

/// Unchecked Eq. 1 (batch or image scope). `features` `[B, d, S]`, `classifier_weight` `[n, d]`,
/// `labels` int64 `[B, S]` on the features' grid. Returns `[n, d]` or `[B, n, d]`.
inline at::Tensor ground_truth_prototypes(const at::Tensor& features, const at::Tensor& classifier_weight,
                                          const at::Tensor& labels, OracleScope scope, int64_t ignore_index) {
  const at::Tensor masks =
      one_hot_masks(labels, classifier_weight.size(0), ignore_index, features.scalar_type());  // [B, n, S]
  // f·maskᵀ rather than mask·fᵀ: the gradient reaches f as a contiguous product, not a transposed add.
  at::Tensor sums = at::bmm(features, masks.transpose(1, 2)).transpose(1, 2);  // [B, n, d]
  at::Tensor counts = masks.sum(-1);                                           // [B, n]
  if (scope == OracleScope::Batch) {
    sums = sums.sum(0);
    counts = counts.sum(0);
  }
  const at::Tensor means = sums / (counts.unsqueeze(-1) + 1e-12);
  return at::where((counts > 0).unsqueeze(-1), means, classifier_weight.detach().expand_as(means));
}

/// Per-pixel L2 norms `[B, 1, S]` of `features` `[B, d, S]`, outside autograd. On CPU, LibTorch
/// 1.13's strided reduction over d is ~5-10x slower than accumulating the d channel rows, so the
/// rows are accumulated there; only `[B, 1, S]` is allocated either way.
inline at::Tensor pixel_norms(const at::Tensor& features) {
  if (!features.is_cpu()) return features.norm(2, {1}, /*keepdim=*/true);
  at::Tensor sum = at::zeros({features.size(0), 1, features.size(2)}, features.options());
  at::Tensor row_sum = sum.select(1, 0);
  for (int64_t k = 0; k < features.size(1); ++k) {
    const at::Tensor row = features.select(1, k);
    row_sum.addcmul_(row, row);
  }
  return sum.sqrt_();
}

/// τ·cos(f, w) as one autograd node whose backward uses batched products only (LibTorch's
/// generic graph for `bmm · τ/‖f‖` spends most of its time in strided reductions over d and n).
/// Inputs: `features` `[B, d, S]`, `unit` `[B, n, d]` (rows already normalised), `tau`.
struct CosineLogitsFunction : public torch::autograd::Function<CosineLogitsFunction> {
  /// out = z·s with z = unit @ features and s = τ / (‖f‖ + 1e-12) per pixel.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& features, const at::Tensor& unit,
                            double tau) {
    const at::Tensor norms = pixel_norms(features);                    // [B, 1, S]
    const at::Tensor scale = (norms + 1e-12).reciprocal_().mul_(tau);  // [B, 1, S]
    at::Tensor out = at::bmm(unit, features).mul_(scale);              // [B, n, S]
    ctx->save_for_backward({features, unit, out, norms, scale});
    ctx->saved_data["tau"] = tau;
    return out;
  }

  /// With g = dL/dout: dL/dunit = (g·s) fᵀ and
  /// dL/df = unitᵀ (g·s) − f · (Σ_k g·out) · s / (τ‖f‖), the last term 0 where ‖f‖ = 0.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &features = saved[0], &unit = saved[1], &out = saved[2], &norms = saved[3], &scale = saved[4];
    const AutocastOff no_autocast(features.device());  // backward() may be called inside an autocast scope
    const double tau = ctx->saved_data["tau"].toDouble();
    const at::Tensor& grad = grads[0];
    const at::Tensor scaled = grad * scale;                            // [B, n, S]
    at::Tensor grad_unit = at::bmm(scaled, features.transpose(1, 2));  // [B, n, d]
    at::Tensor grad_features = at::bmm(unit.transpose(1, 2), scaled);  // [B, d, S]
    const at::Tensor ones = at::ones({out.size(0), 1, out.size(1)}, out.options());
    at::Tensor coefficient = at::bmm(ones, grad * out);  // Σ_k g·out, [B, 1, S]
    coefficient.mul_(scale).div_(norms * tau).masked_fill_(norms == 0, 0);
    grad_features.addcmul_(features, coefficient, /*value=*/-1.0);
    return {grad_features, grad_unit, at::Tensor()};
  }
};

/// Unchecked Eqs. 3/6: τ·cos(f, w) without a normalised copy of `features` `[B, d, S]`;
/// `weight` is `[n, d]` or `[B, n, d]`. Returns `[B, n, S]`.
inline at::Tensor cosine_logits(const at::Tensor& features, const at::Tensor& weight, double tau) {
  const int64_t batch = features.size(0);
  at::Tensor unit = weight / (weight.norm(2, {-1}, /*keepdim=*/true) + 1e-12);
  if (unit.dim() == 2) unit = unit.unsqueeze(0).expand({batch, unit.size(0), unit.size(1)});
  if (c10::GradMode::is_enabled() && (unit.requires_grad() || features.requires_grad())) {
    return CosineLogitsFunction::apply(features, unit, tau);
  }
  at::Tensor scale = pixel_norms(features);  // [B, 1, S]
  scale.add_(1e-12).reciprocal_().mul_(tau);
  return at::bmm(unit, features).mul_(scale);
}

/// Unchecked projector θ applied to `input` `[..., 2d]`, in the input's dtype.
inline at::Tensor project(const at::Tensor& input, const ProjectorWeights& projector) {
  const auto type = input.scalar_type();
  const at::Tensor hidden = at::relu(at::linear(input, projector.fc1_weight.to(type)));
  return at::linear(hidden, projector.fc2_weight.to(type),
                    projector.fc2_bias.defined() ? projector.fc2_bias.to(type) : at::Tensor());
}

/// Unchecked pp (Eqs. 4-6). `classifier_weight` is `[n, d]`. Returns `logits_dtype`.
inline at::Tensor context_logits(const at::Tensor& features, const at::Tensor& classifier_weight,
                                 const at::Tensor& logits, const ProjectorWeights& projector, double tau) {
  const AutocastOff autocast(features.device());
  const at::Tensor f = flatten_spatial(to_compute(features));
  const at::Tensor prototypes = soft_prototypes(f, flatten_spatial(logits));  // [B, n, d]
  const at::Tensor classifier = classifier_weight.to(f.scalar_type()).unsqueeze(0).expand_as(prototypes);
  const at::Tensor context = project(at::cat({prototypes, classifier}, -1), projector);
  return cosine_logits(f, context, tau).view(logits.sizes()).to(logits_dtype(features, autocast));
}

/// Unchecked py (Eqs. 1-3). `classifier_weight` is `[n, d]`; `labels` at any resolution.
/// Returns `logits_dtype`.
inline at::Tensor oracle_logits(const at::Tensor& features, const at::Tensor& classifier_weight,
                                const at::Tensor& labels, const ProjectorWeights& projector,
                                const ContextAwareHeadOptions& options) {
  const AutocastOff autocast(features.device());
  const at::Tensor f = flatten_spatial(to_compute(features));
  const at::Tensor classifier = classifier_weight.to(f.scalar_type());
  const at::Tensor grid_labels =
      resize_labels_nearest(labels, features.sizes().slice(2)).reshape({f.size(0), f.size(2)});
  const at::Tensor prototypes =
      ground_truth_prototypes(f, classifier, grid_labels, options.oracle_scope(), options.ignore_index());
  const at::Tensor oracle =
      project(at::cat({prototypes, classifier.expand_as(prototypes)}, -1), projector);  // [n|B×n, d]
  std::vector<int64_t> shape = features.sizes().vec();
  shape[1] = classifier.size(0);
  return cosine_logits(f, oracle, options.tau()).view(shape).to(logits_dtype(features, autocast));
}

/// Unchecked Eqs. 7/10/11 with the released label mixing; 0-dim in the student's compute dtype.
inline at::Tensor entropy_aware_kl(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                                   const EntropyAwareKLOptions& options) {
  const AutocastOff no_autocast(student.device());
  const auto type = compute_dtype(student.scalar_type());
  const int64_t batch = student.size(0), classes = student.size(1);
  const at::Tensor log_p = at::log_softmax(flatten_spatial(student), 1, type);   // [B, n, S]
  const at::Tensor q = at::softmax(flatten_spatial(teacher).detach(), 1, type);  // [B, n, S]
  const at::Tensor y = resize_labels_nearest(labels, student.sizes().slice(2)).reshape({batch, log_p.size(2)});
  const at::Tensor is_ignored = y == options.ignore_index();
  const at::Tensor valid = is_ignored.logical_not().to(type);
  const double w = options.teacher_weight();
  // Per-pixel cross-entropy against w·softmax(py) + (1 − w)·onehot(y), without the one-hot tensor.
  at::Tensor pixel_loss;
  if (w != 0.0) pixel_loss = (q * log_p).sum(1) * (-w);
  if (w != 1.0) {
    const at::Tensor label_term = log_p.gather(1, y.masked_fill(is_ignored, 0).unsqueeze(1)).squeeze(1) * (w - 1.0);
    pixel_loss = pixel_loss.defined() ? pixel_loss + label_term : label_term;
  }
  // The entropy (Eq. 9) is ≥ 0; the +1e-12 makes it ≈ −1e-12 for a one-hot teacher in double, so floor it at 0.
  const at::Tensor weight =
      options.entropy_weighted() ? (q * (q + 1e-12).log()).sum(1).neg_().clamp_min_(0).mul_(valid) : valid;
  if (!options.class_wise()) return (pixel_loss * weight).sum() / (weight.sum() + 1e-12);
  const at::Tensor masks = one_hot_masks(y, classes, options.ignore_index(), type);                     // [B, n, S]
  const at::Tensor stats = at::bmm(masks, at::stack({pixel_loss * weight, weight, valid}, -1)).sum(0);  // [n, 3]
  const at::Tensor per_class = stats.select(1, 0) / (stats.select(1, 1) + 1e-12);
  const at::Tensor present = (stats.select(1, 2) > 0).sum().clamp_min(1).to(type);
  return per_class.sum() / present;
}

/// Unchecked cross-entropy of `logits` `[B, n, *spatial]` upsampled (linear, bilinear or
/// trilinear) to the size of `labels` `[B, *spatial']`, averaged over non-ignored pixels.
inline at::Tensor cross_entropy(const at::Tensor& logits, const at::Tensor& labels, bool align_corners,
                                int64_t ignore_index) {
  at::Tensor x = to_compute(logits);
  if (x.numel() == 0) return x.sum();
  const at::IntArrayRef size = labels.sizes().slice(1);
  if (!x.sizes().slice(2).equals(size)) {
    switch (size.size()) {
      case 1: x = at::upsample_linear1d(x, size, align_corners); break;
      case 2: x = at::upsample_bilinear2d(x, size, align_corners); break;
      default: x = at::upsample_trilinear3d(x, size, align_corners); break;
    }
  }
  const at::Tensor target = labels.to(at::kLong);
  const at::Tensor sum = at::cross_entropy_loss(x, target, {}, at::Reduction::Sum, ignore_index);
  return sum / (target != ignore_index).sum().clamp_min(1).to(x.scalar_type());
}

/// Checks a projector's weights against d.
inline void check_projector(const char* who, const ProjectorWeights& projector, int64_t channels) {
  TORCH_CHECK(
      projector.fc1_weight.defined() && projector.fc1_weight.dim() == 2 && projector.fc1_weight.size(1) == 2 * channels,
      who, ": expected projector fc1_weight of shape [h, ", 2 * channels, "] but got ",
      projector.fc1_weight.defined() ? projector.fc1_weight.sizes() : at::IntArrayRef{});
  TORCH_CHECK(projector.fc2_weight.defined() && projector.fc2_weight.dim() == 2 &&
                  projector.fc2_weight.size(0) == channels &&
                  projector.fc2_weight.size(1) == projector.fc1_weight.size(0),
              who, ": expected projector fc2_weight of shape [", channels, ", ", projector.fc1_weight.size(0),
              "] but got ", projector.fc2_weight.defined() ? projector.fc2_weight.sizes() : at::IntArrayRef{});
  TORCH_CHECK(
      !projector.fc2_bias.defined() || (projector.fc2_bias.dim() == 1 && projector.fc2_bias.size(0) == channels), who,
      ": expected projector fc2_bias of shape [", channels, "] but got ",
      projector.fc2_bias.defined() ? projector.fc2_bias.sizes() : at::IntArrayRef{});
}

/// Checks the options of a context-aware head.
inline void check_head_options(const char* who, const ContextAwareHeadOptions& options) {
  TORCH_CHECK(options.channels() > 0, who, ": expected channels > 0 but got ", options.channels());
  TORCH_CHECK(options.num_classes() > 0, who, ": expected num_classes > 0 but got ", options.num_classes());
  TORCH_CHECK(options.hidden_channels() > 0, who, ": expected hidden_channels > 0 but got ", options.hidden_channels());
  check_real_option(who, "tau", options.tau(), Bound::Positive);
}

/// Checks the options of the distillation loss.
inline void check_kl_options(const char* who, const EntropyAwareKLOptions& options) {
  TORCH_CHECK(options.teacher_weight() >= 0.0 && options.teacher_weight() <= 1.0, who,
              ": expected teacher_weight in [0, 1] but got ", options.teacher_weight());
}

/// Checks the inputs of the distillation loss.
inline void check_kl_inputs(const char* who, const at::Tensor& student, const at::Tensor& teacher,
                            const at::Tensor& labels, int64_t ignore_index) {
  check_features(who, student, -1, "student");
  check_logits(who, "teacher", teacher, student, student.size(1));
  check_labels(who, labels, student.size(0), student.dim() - 2, student.size(1), ignore_index, student.device());
}

/// Checks the options of the training objective: the distillation's, and four finite weights >= 0.
inline void check_loss_options(const char* who, const ContextAwareLossOptions& options) {
  check_kl_options(who, options.kl());
  check_real_option(who, "kl_weight", options.kl_weight(), Bound::NonNegative);
  check_real_option(who, "logits_weight", options.logits_weight(), Bound::NonNegative);
  check_real_option(who, "context_weight", options.context_weight(), Bound::NonNegative);
  check_real_option(who, "oracle_weight", options.oracle_weight(), Bound::NonNegative);
}

/// Checks the inputs of the training objective.
inline void check_loss_inputs(const char* who, const ContextAwareOutput& output, const at::Tensor& labels,
                              const ContextAwareLossOptions& options) {
  check_loss_options(who, options);
  const at::Tensor& reference = output.context_logits;
  check_features(who, reference, -1, "context_logits");
  TORCH_CHECK(reference.dim() >= 3 && reference.dim() <= 5, who,
              ": expected context_logits with 1 to 3 spatial dims but got ", reference.sizes());
  const int64_t classes = reference.size(1);
  if (output.logits.defined()) check_logits(who, "logits", output.logits, reference, classes);
  if (output.oracle_logits.defined()) check_logits(who, "oracle_logits", output.oracle_logits, reference, classes);
  TORCH_CHECK(output.logits.defined() || options.logits_weight() == 0.0, who,
              ": expected defined logits (p) for logits_weight ", options.logits_weight());
  TORCH_CHECK(output.oracle_logits.defined() || (options.oracle_weight() == 0.0 && options.kl_weight() == 0.0), who,
              ": expected defined oracle_logits (py, from forward_train) for oracle_weight ", options.oracle_weight(),
              " and kl_weight ", options.kl_weight());
  check_labels(who, labels, reference.size(0), reference.dim() - 2, classes, options.ignore_index(),
               reference.device());
}

/// Unchecked training objective (paper Eq. 8); every term 0-dim in pp's compute dtype.
inline ContextAwareLosses context_aware_loss(const ContextAwareOutput& output, const at::Tensor& labels,
                                             const ContextAwareLossOptions& options) {
  const AutocastOff no_autocast(output.context_logits.device());
  const bool align = options.align_corners();
  const int64_t ignore = options.ignore_index();
  const at::Tensor zero =
      at::zeros({}, output.context_logits.options().dtype(compute_dtype(output.context_logits.scalar_type())));
  ContextAwareLosses losses;
  losses.context_ce = cross_entropy(output.context_logits, labels, align, ignore);
  losses.logits_ce = output.logits.defined() ? cross_entropy(output.logits, labels, align, ignore) : zero;
  losses.oracle_ce = output.oracle_logits.defined() ? cross_entropy(output.oracle_logits, labels, align, ignore) : zero;
  losses.kl = output.oracle_logits.defined()
                  ? entropy_aware_kl(output.context_logits, output.oracle_logits, labels,
                                     EntropyAwareKLOptions(options.kl()).ignore_index(ignore))
                  : zero;
  // Terms with weight 0 stay out of the sum (and of its gradient) but are still reported.
  losses.total = zero;
  for (const auto& term :
       {std::make_pair(options.logits_weight(), losses.logits_ce),
        std::make_pair(options.context_weight(), losses.context_ce),
        std::make_pair(options.oracle_weight(), losses.oracle_ce), std::make_pair(options.kl_weight(), losses.kl)}) {
    if (term.first != 0.0) losses.total = losses.total + term.second * term.first;
  }
  return losses;
}

/// With `options.check_finite()`, throws unless every term of `losses` (weighted or not) is
/// finite: the message names each non-finite term and value and how many NaN/Inf each input holds,
/// e.g. "who: expected finite loss terms (check_finite) but got kl = nan, total = nan; inputs:
/// logits finite, context_logits 3 nan and 0 inf of 160 values, oracle_logits finite". One
/// synchronisation when every term is finite.
inline void check_finite_losses(const char* who, const ContextAwareLosses& losses, const ContextAwareOutput& output,
                                const ContextAwareLossOptions& options) {
  if (!options.check_finite()) return;
  const std::pair<const char*, at::Tensor> terms[] = {{"logits_ce", losses.logits_ce},
                                                      {"context_ce", losses.context_ce},
                                                      {"oracle_ce", losses.oracle_ce},
                                                      {"kl", losses.kl},
                                                      {"total", losses.total}};
  std::vector<at::Tensor> values;
  for (const auto& term : terms) values.push_back(term.second.detach().reshape({}));
  const at::Tensor all = at::stack(values).to(at::kDouble).cpu();
  if (at::isfinite(all).all().item<bool>()) return;
  std::ostringstream message;
  message << who << ": expected finite loss terms (check_finite) but got ";
  const char* separator = "";
  for (size_t i = 0; i < values.size(); ++i) {
    const double value = all[static_cast<int64_t>(i)].item<double>();
    if (std::isfinite(value)) continue;
    message << separator << terms[i].first << " = " << (std::isnan(value) ? "nan" : value > 0 ? "inf" : "-inf");
    separator = ", ";
  }
  message << "; inputs: logits " << non_finite_summary(output.logits) << ", context_logits "
          << non_finite_summary(output.context_logits) << ", oracle_logits "
          << non_finite_summary(output.oracle_logits);
  TORCH_CHECK(false, message.str());
}

}  // namespace detail

namespace functional {

/// Estimated class prototypes (paper Eq. 4): for each image b and class k,
/// `Σ_i softmax(logits)[b,k,i]·f[b,:,i] / (Σ_i softmax(logits)[b,k,i] + 1e-12)`.
///
/// `features` `[B, d, *spatial]`, `logits` `[B, n, *spatial]` → `[B, n, d]` in the features' compute
/// dtype (float32 for float16/bfloat16, with or without autocast).
/// NaN/Inf in `features` or `logits` propagate to the result (not checked).
/// ```
/// auto prototypes = cac::functional::soft_prototypes(features, classifier(features));
/// ```
inline at::Tensor soft_prototypes(const at::Tensor& features, const at::Tensor& logits) {
  constexpr const char* who = "cac::functional::soft_prototypes";
  detail::check_features(who, features, -1);
  TORCH_CHECK(logits.defined() && logits.dim() >= 2, who, ": expected logits of shape [B, n, *spatial] but got ",
              logits.defined() ? logits.sizes() : at::IntArrayRef{});
  detail::check_logits(who, "logits", logits, features, logits.size(1));
  const detail::AutocastOff no_autocast(features.device());
  return detail::soft_prototypes(detail::flatten_spatial(detail::to_compute(features)),
                                 detail::flatten_spatial(logits));
}

/// Ground-truth class prototypes (paper Eq. 1, released batch pooling by default): labels are
/// resized to the feature grid with nearest; each class present gets the mean feature of its
/// pixels, each absent class keeps its (detached) row of `classifier_weight`.
///
/// Returns `[n, d]` for `OracleScope::Batch`, `[B, n, d]` for `OracleScope::Image`, in the features'
/// compute dtype (float32 for float16/bfloat16, with or without autocast). NaN/Inf in `features`
/// propagate to the prototypes of the classes whose pixels hold them, in `classifier_weight` to
/// the absent classes' rows (not checked).
/// ```
/// auto oracle = cac::functional::ground_truth_prototypes(f, conv->weight, labels);
/// ```
inline at::Tensor ground_truth_prototypes(const at::Tensor& features, const at::Tensor& classifier_weight,
                                          const at::Tensor& labels,
                                          const GroundTruthPrototypesFuncOptions& options = {}) {
  constexpr const char* who = "cac::functional::ground_truth_prototypes";
  detail::check_features(who, features, -1);
  const at::Tensor weight = detail::check_classifier_weight(who, classifier_weight, features, -1);
  detail::check_labels(who, labels, features.size(0), features.dim() - 2, weight.size(0), options.ignore_index(),
                       features.device());
  const detail::AutocastOff no_autocast(features.device());
  const at::Tensor f = detail::flatten_spatial(detail::to_compute(features));
  const at::Tensor grid_labels =
      detail::resize_labels_nearest(labels, features.sizes().slice(2)).reshape({f.size(0), f.size(2)});
  return detail::ground_truth_prototypes(f, weight.to(f.scalar_type()), grid_labels, options.scope(),
                                         options.ignore_index());
}

/// Cosine classifier (paper Eqs. 3 and 6): `τ · ⟨f/(‖f‖+1e-12), w/(‖w‖+1e-12)⟩` per pixel and class.
///
/// `features` `[B, d, *spatial]`, `weight` `[n, d]` (shared) or `[B, n, d]` (per image)
/// → `[B, n, *spatial]`, computed in float32 for float16/bfloat16 and returned in the features'
/// dtype, or in float32 when the caller has autocast on. No normalised copy of the features is made.
/// NaN/Inf in `features` or `weight` propagate (an Inf feature gives NaN logits); not checked.
/// ```
/// auto logits = cac::functional::cosine_logits(features, prototypes, 15.0);
/// ```
inline at::Tensor cosine_logits(const at::Tensor& features, const at::Tensor& weight, double tau = 15.0) {
  constexpr const char* who = "cac::functional::cosine_logits";
  detail::check_features(who, features, -1);
  detail::check_real_option(who, "tau", tau, detail::Bound::Positive);
  TORCH_CHECK(weight.defined() && (weight.dim() == 2 || (weight.dim() == 3 && weight.size(0) == features.size(0))) &&
                  weight.size(-1) == features.size(1),
              who, ": expected weight of shape [n, ", features.size(1), "] or [", features.size(0), ", n, ",
              features.size(1), "] but got ", weight.defined() ? weight.sizes() : at::IntArrayRef{});
  detail::check_same_device_dtype(who, "weight", weight, features);
  const detail::AutocastOff autocast(features.device());
  const at::Tensor f = detail::flatten_spatial(detail::to_compute(features));
  std::vector<int64_t> shape = features.sizes().vec();
  shape[1] = weight.size(-2);
  return detail::cosine_logits(f, weight.to(f.scalar_type()), tau)
      .view(shape)
      .to(detail::logits_dtype(features, autocast));
}

/// Estimated context-aware logits pp (paper Eqs. 4-6): soft prototypes from softmax(`logits`),
/// `A = θp(prototypes ⊕ C)` per image, `pp = τ·cos(f, A)`.
///
/// Computed in float32 for float16/bfloat16 inputs; returned in the features' dtype, or in their
/// compute dtype (float32) when the caller has autocast on for the features' device.
///
/// NaN/Inf in any input or projector weight propagate to pp (not checked).
///
/// See `cac::ContextAwareHead::forward`, which calls this with its `context_projector`.
inline at::Tensor context_logits(const at::Tensor& features, const at::Tensor& classifier_weight,
                                 const at::Tensor& logits, const ProjectorWeights& projector,
                                 const ContextAwareHeadFuncOptions& options) {
  constexpr const char* who = "cac::functional::context_logits";
  detail::check_head_options(who, options);
  detail::check_features(who, features, options.channels());
  const at::Tensor weight = detail::check_classifier_weight(who, classifier_weight, features, options.num_classes());
  detail::check_logits(who, "logits", logits, features, options.num_classes());
  detail::check_projector(who, projector, options.channels());
  return detail::context_logits(features, weight, logits, projector, options.tau());
}

/// Oracle context-aware logits py (paper Eqs. 1-3): ground-truth prototypes,
/// `A_y = θy(prototypes ⊕ C)`, `py = τ·cos(f, A_y)`. Training only.
///
/// Returned in the features' dtype, or float32 under autocast, as `context_logits`.
///
/// NaN/Inf in any input or projector weight propagate to py (not checked).
///
/// See `cac::ContextAwareHead::forward_train`, which calls this with its `oracle_projector`.
inline at::Tensor oracle_logits(const at::Tensor& features, const at::Tensor& classifier_weight,
                                const at::Tensor& labels, const ProjectorWeights& projector,
                                const ContextAwareHeadFuncOptions& options) {
  constexpr const char* who = "cac::functional::oracle_logits";
  detail::check_head_options(who, options);
  detail::check_features(who, features, options.channels());
  const at::Tensor weight = detail::check_classifier_weight(who, classifier_weight, features, options.num_classes());
  detail::check_labels(who, labels, features.size(0), features.dim() - 2, options.num_classes(), options.ignore_index(),
                       features.device());
  detail::check_projector(who, projector, options.channels());
  return detail::oracle_logits(features, weight, labels, projector, options);
}

/// Entropy-aware, class-wise distillation from `teacher` (py) to `student` (pp)
/// (paper Eqs. 7, 10, 11; released label mixing by default). `labels` are resized to the
/// logits' grid with nearest; `teacher` is detached. Returns a 0-dim tensor in the student's
/// compute dtype (float32 for float16/bfloat16 inputs, float64 for float64), autocast or not.
/// NaN/Inf in `student` or `teacher` give a NaN/Inf loss (not checked; the loss's `check_finite`
/// option of `cac::functional::context_aware_loss` checks it).
/// ```
/// auto kl = cac::functional::entropy_aware_kl(out.context_logits, out.oracle_logits, labels);
/// ```
inline at::Tensor entropy_aware_kl(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                                   const EntropyAwareKLFuncOptions& options = {}) {
  constexpr const char* who = "cac::functional::entropy_aware_kl";
  detail::check_kl_options(who, options);
  detail::check_kl_inputs(who, student, teacher, labels, options.ignore_index());
  return detail::entropy_aware_kl(student, teacher, labels, options);
}

/// The context-aware training objective (paper Eq. 8):
/// `logits_weight·CE(p) + context_weight·CE(pp) + oracle_weight·CE(py) + kl_weight·KL(py → pp)`.
///
/// Each cross-entropy upsamples its logits to the label size ((bi/tri)linear, `align_corners`)
/// and averages over non-ignored pixels (0 when all are ignored); the distillation runs at the
/// logits' resolution. Every term is 0-dim in pp's compute dtype (float32 for float16/bfloat16,
/// float64 for float64), autocast or not. NaN/Inf in the logits give NaN/Inf terms silently
/// unless `options.check_finite()`, which throws naming the non-finite terms and counting each
/// input's NaN/Inf. The weights must be finite and >= 0. See `cac::ContextAwareLoss`.
inline ContextAwareLosses context_aware_loss(const ContextAwareOutput& output, const at::Tensor& labels,
                                             const ContextAwareLossFuncOptions& options = {}) {
  constexpr const char* who = "cac::functional::context_aware_loss";
  detail::check_loss_inputs(who, output, labels, options);
  ContextAwareLosses losses = detail::context_aware_loss(output, labels, options);
  detail::check_finite_losses(who, losses, output, options);
  return losses;
}

/// `labels` `[B, *spatial']` resized to `[B, *size]` exactly as PyTorch's
/// `F.interpolate(labels.float(), size, mode='nearest')` does, returned as int64.
inline at::Tensor resize_labels(const at::Tensor& labels, at::IntArrayRef size) {
  constexpr const char* who = "cac::functional::resize_labels";
  TORCH_CHECK(labels.defined() && labels.dim() == static_cast<int64_t>(size.size()) + 1, who,
              ": expected labels of shape [B, ", size.size(), " spatial dims] but got ",
              labels.defined() ? labels.sizes() : at::IntArrayRef{});
  TORCH_CHECK(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false), who,
              ": expected integer labels but got dtype ", labels.scalar_type());
  for (size_t i = 0; i < size.size(); ++i) {
    const int64_t in = labels.size(static_cast<int64_t>(i) + 1);
    TORCH_CHECK(size[i] >= 0 && (in > 0 || size[i] == 0), who, ": expected output sizes >= 0 (and 0 for an empty ",
                "input dim) but got ", size, " for labels of shape ", labels.sizes());
  }
  return detail::resize_labels_nearest(labels, size);
}

}  // namespace functional
}  // namespace cac
