#pragma once
/// \file
/// `cac::AutocastGuard`: mixed precision (autocast) for a scope, the C++ twin of Python's
/// `with torch.autocast(device_type, dtype):`, on every LibTorch cac supports.
///
/// LibTorch's C++ API has no autocast scope object, and its functions changed between releases:
/// 1.x has `at::autocast::set_cpu_enabled` / `set_enabled` (CUDA) and per-device dtype setters,
/// 2.x has `at::autocast::set_autocast_enabled(device_type, bool)` and deprecates the old family
/// (every call warns). This guard calls whichever the LibTorch it is compiled against provides.
///
/// cac's modules and functionals need no guard of their own: they are autocast-safe (see
/// docs/api.md, "Mixed precision"). This guard is for turning autocast on around your model.
///
/// ```
/// {
///   cac::AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
///   auto outputs = classifier->forward_train(generator->forward(images), labels);
///   auto losses = loss->forward(outputs, labels);  // float32, computed in float32
/// }
/// losses.total.backward();  // outside the scope, as in PyTorch
/// ```

#include <cac/detail/autocast.hpp>

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

namespace cac {

/// Whether autocast is on for `device_type` (`kCPU` or `kCUDA`) in this thread.
inline bool autocast_enabled(c10::DeviceType device_type) {
  TORCH_CHECK(device_type == c10::DeviceType::CPU || device_type == c10::DeviceType::CUDA,
              "cac::autocast_enabled: expected a CPU or CUDA device type but got ", device_type);
  return detail::autocast_is_enabled(device_type);
}

/// Turns autocast on for `device_type` with `dtype` for its lifetime, then restores the previous
/// state and dtype and clears autocast's weight cache (as leaving `torch.autocast` does).
///
/// `dtype` is the lower precision autocast computes in: `torch::kBFloat16` on CPU (LibTorch's CPU
/// autocast supports only bfloat16 before 2.x), `torch::kHalf` or `torch::kBFloat16` on CUDA.
/// Guards nest. A guard constructed with `enabled = false` does nothing, so one code path serves
/// both precisions.
class AutocastGuard {
 public:
  /// Enables autocast for `device_type` (`kCPU` or `kCUDA`) in `dtype` when `enabled`.
  AutocastGuard(c10::DeviceType device_type, c10::ScalarType dtype, bool enabled = true)
      : device_type_(device_type), active_(enabled) {
    TORCH_CHECK(device_type == c10::DeviceType::CPU || device_type == c10::DeviceType::CUDA,
                "cac::AutocastGuard: expected a CPU or CUDA device type but got ", device_type);
    TORCH_CHECK(dtype == c10::ScalarType::BFloat16 || dtype == c10::ScalarType::Half,
                "cac::AutocastGuard: expected dtype bfloat16 or float16 but got ", dtype);
    if (!active_) return;
    previous_enabled_ = detail::autocast_is_enabled(device_type);
    previous_dtype_ = detail::autocast_get_dtype(device_type);
    detail::autocast_set_dtype(device_type, dtype);
    detail::autocast_set_enabled(device_type, true);
  }
  ~AutocastGuard() {
    if (!active_) return;
    detail::autocast_set_dtype(device_type_, previous_dtype_);
    detail::autocast_set_enabled(device_type_, previous_enabled_);
    if (!previous_enabled_) at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_type_;
  bool active_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::BFloat16;
};

}  // namespace cac
