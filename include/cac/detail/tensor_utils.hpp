#pragma once
/// \file
/// Internal helpers shared by the cac modules and functionals: input and option
/// validation, non-finite summaries, compute dtypes, nearest label resizing and one-hot masks.
/// Not part of the public API.

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

namespace cac {
namespace detail {

/// The dtype the maths runs in: float32 for half/bfloat16, else the input's.
inline c10::ScalarType compute_dtype(c10::ScalarType type) {
  return (type == at::kHalf || type == at::kBFloat16) ? at::kFloat : type;
}

/// `tensor` converted to its compute dtype (no copy when already there).
inline at::Tensor to_compute(const at::Tensor& tensor) { return tensor.to(compute_dtype(tensor.scalar_type())); }

/// The spatial sizes (everything after the first two dims) of `tensor`.
inline std::vector<int64_t> spatial_sizes(const at::Tensor& tensor) { return tensor.sizes().slice(2).vec(); }

/// The range a real option must lie in, besides being finite (`check_real_option`).
enum class Bound {
  /// Finite and >= 0 (loss weights).
  NonNegative,
  /// Finite and > 0 (scales such as tau).
  Positive,
};

/// Checks the real option `name`: finite (NaN and Inf are programming errors) and within `bound`.
/// Messages: "who: expected tau > 0 but got 0" (or nan), "who: expected tau > 0 and finite but got inf".
inline void check_real_option(const char* who, const char* name, double value, Bound bound) {
  const bool in_range = bound == Bound::Positive ? value > 0.0 : value >= 0.0;  // false for NaN
  TORCH_CHECK(in_range && std::isfinite(value), who, ": expected ", name, bound == Bound::Positive ? " > 0" : " >= 0",
              std::isinf(value) ? " and finite" : "", " but got ", value);
}

/// "finite", "undefined" or "3 nan and 1 inf of 40 values" for `tensor`, for error messages.
/// Costs one pass and one synchronisation; meant for the error path only.
inline std::string non_finite_summary(const at::Tensor& tensor) {
  if (!tensor.defined()) return "undefined";
  if (!at::isFloatingType(tensor.scalar_type())) return "finite";
  const at::Tensor counts = at::stack({at::isnan(tensor).sum(), at::isinf(tensor).sum()}).cpu();
  const int64_t nans = counts[0].item<int64_t>(), infs = counts[1].item<int64_t>();
  if (nans == 0 && infs == 0) return "finite";
  std::ostringstream text;
  text << nans << " nan and " << infs << " inf of " << tensor.numel() << " values";
  return text.str();
}

/// Checks that `tensor` (called `name` in messages) is a floating `[B, d, *spatial]` tensor
/// (d = `channels` unless `channels` < 0) with non-empty spatial dims. B = 0 is allowed (empty
/// results, losses 0); a spatial size 0 is refused, as no label can be resized onto it.
inline void check_features(const char* who, const at::Tensor& tensor, int64_t channels, const char* name = "features") {
  TORCH_CHECK(tensor.defined(), who, ": expected a defined ", name, " tensor but got an undefined one");
  TORCH_CHECK(tensor.dim() >= 3, who, ": expected ", name, " of shape [B, ",
              (std::string(name) == "features" ? "d" : "n"), ", *spatial] with at least one spatial dim but got ",
              tensor.sizes());
  TORCH_CHECK(at::isFloatingType(tensor.scalar_type()), who, ": expected floating-point ", name, " but got dtype ",
              tensor.scalar_type());
  TORCH_CHECK(channels < 0 || tensor.size(1) == channels, who, ": expected ", name, " of shape [B, ", channels,
              ", *spatial] (d = ", channels, ") but got ", tensor.sizes());
  for (int64_t i = 2; i < tensor.dim(); ++i) {
    TORCH_CHECK(tensor.size(i) > 0, who, ": expected ", name, " with non-empty spatial dims but got ", tensor.sizes(),
                " (spatial dim ", i - 2, " is 0)");
  }
}

/// Whether tensors of dtypes `a` and `b` may meet in one cac call: equal dtypes, or any mix of
/// float32, float16 and bfloat16 (what autocast produces: reduced-precision activations beside
/// float32 weights), all computed in float32.
inline bool compatible_dtypes(c10::ScalarType a, c10::ScalarType b) {
  return a == b || (compute_dtype(a) == at::kFloat && compute_dtype(b) == at::kFloat);
}

/// Checks `other` against `features`: same device and the same dtype (float32, float16 and
/// bfloat16 may be mixed, see `compatible_dtypes`).
inline void check_same_device_dtype(const char* who, const char* name, const at::Tensor& other,
                                    const at::Tensor& features) {
  TORCH_CHECK(other.device() == features.device(), who, ": expected ", name, " on the features' device ",
              features.device(), " but got ", other.device());
  TORCH_CHECK(compatible_dtypes(other.scalar_type(), features.scalar_type()), who, ": expected ", name,
              " of the features' dtype ", features.scalar_type(), " but got ", other.scalar_type(),
              " (only float32, float16 and bfloat16 may be mixed)");
}

/// Checks a classifier weight `[n, d]` or `[n, d, 1, ...]` and returns it as `[n, d]`.
/// `num_classes` < 0 accepts any n.
inline at::Tensor check_classifier_weight(const char* who, const at::Tensor& weight, const at::Tensor& features,
                                          int64_t num_classes) {
  TORCH_CHECK(weight.defined(), who, ": expected a defined classifier_weight but got an undefined one");
  const int64_t d = features.size(1);
  bool trailing_ones = weight.dim() >= 2;
  for (int64_t i = 2; i < weight.dim(); ++i) trailing_ones = trailing_ones && weight.size(i) == 1;
  TORCH_CHECK(trailing_ones, who, ": expected classifier_weight of shape [n, d] or [n, d, 1, ...] but got ",
              weight.sizes());
  TORCH_CHECK(weight.size(1) == d, who, ": expected classifier_weight with d = ", d,
              " columns (the features' channels) but got ", weight.sizes());
  TORCH_CHECK(num_classes < 0 || weight.size(0) == num_classes, who,
              ": expected classifier_weight with n = ", num_classes, " rows (num_classes) but got ", weight.sizes());
  check_same_device_dtype(who, "classifier_weight", weight, features);
  return weight.reshape({weight.size(0), d});
}

/// Checks class scores `[B, n, *spatial]` against `features` `[B, d, *spatial]`.
inline void check_logits(const char* who, const char* name, const at::Tensor& logits, const at::Tensor& features,
                         int64_t num_classes) {
  TORCH_CHECK(logits.defined(), who, ": expected a defined ", name, " tensor but got an undefined one");
  std::vector<int64_t> expected = features.sizes().vec();
  expected[1] = num_classes;
  TORCH_CHECK(logits.sizes().equals(expected), who, ": expected ", name, " of shape ", at::IntArrayRef(expected),
              " (batch, num_classes, the spatial size of the first argument) but got ", logits.sizes());
  check_same_device_dtype(who, name, logits, features);
}

/// Checks integer labels `[B, *spatial']` (any resolution, `spatial_dims` dims) with values in
/// `[0, num_classes)` or equal to `ignore_index`, on `device`.
inline void check_labels(const char* who, const at::Tensor& labels, int64_t batch, int64_t spatial_dims,
                         int64_t num_classes, int64_t ignore_index, const at::Device& device) {
  TORCH_CHECK(labels.defined(), who, ": expected a defined labels tensor but got an undefined one");
  TORCH_CHECK(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false), who,
              ": expected integer labels but got dtype ", labels.scalar_type());
  TORCH_CHECK(labels.dim() == spatial_dims + 1 && labels.size(0) == batch, who, ": expected labels of shape [", batch,
              ", ", spatial_dims, " spatial dims] but got ", labels.sizes());
  TORCH_CHECK(labels.device() == device, who, ": expected labels on the features' device ", device, " but got ",
              labels.device());
  for (int64_t i = 1; i < labels.dim(); ++i) {
    TORCH_CHECK(labels.size(i) > 0, who, ": expected labels with non-empty spatial dims but got ", labels.sizes());
  }
  if (labels.numel() == 0) return;
  const at::Tensor bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index);
  if (bad.any().item<bool>()) {
    TORCH_CHECK(false, who, ": expected label values in [0, ", num_classes, ") or ignore_index ", ignore_index,
                " but got ", labels.masked_select(bad)[0].item<int64_t>());
  }
}

/// Source index of each output position of a nearest resize from `in` to `out`, computed
/// exactly as ATen's `upsample_nearest*` does when given an output size.
inline std::vector<int64_t> nearest_source_indices(int64_t in, int64_t out) {
  std::vector<int64_t> index(static_cast<size_t>(out));
  if (out == in) {
    std::iota(index.begin(), index.end(), int64_t{0});
  } else if (out == 2 * in) {
    for (int64_t i = 0; i < out; ++i) index[static_cast<size_t>(i)] = i >> 1;
  } else {
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    for (int64_t i = 0; i < out; ++i)
      index[static_cast<size_t>(i)] = std::min(static_cast<int64_t>(std::floor(static_cast<float>(i) * scale)), in - 1);
  }
  return index;
}

/// `labels` `[B, *spatial']` resized to `[B, *size]` with PyTorch's `mode='nearest'`, as int64.
inline at::Tensor resize_labels_nearest(const at::Tensor& labels, at::IntArrayRef size) {
  at::Tensor out = labels;
  for (int64_t i = 0; i < static_cast<int64_t>(size.size()); ++i) {
    const int64_t in = out.size(i + 1);
    if (in == size[i]) continue;
    const std::vector<int64_t> index = nearest_source_indices(in, size[i]);
    out = out.index_select(i + 1, at::tensor(index, at::TensorOptions().dtype(at::kLong)).to(labels.device()));
  }
  return out.to(at::kLong);
}

/// One-hot masks `[B, n, S]` of int64 labels `[B, S]`; pixels equal to `ignore_index` get all zeros.
inline at::Tensor one_hot_masks(const at::Tensor& labels, int64_t num_classes, int64_t ignore_index,
                                c10::ScalarType dtype) {
  const at::Tensor valid = labels != ignore_index;
  const at::Tensor index = labels.masked_fill(valid.logical_not(), 0).unsqueeze(1);
  return at::zeros({labels.size(0), num_classes, labels.size(1)}, labels.options().dtype(dtype))
      .scatter_(1, index, valid.unsqueeze(1).to(dtype));
}

}  // namespace detail
}  // namespace cac
