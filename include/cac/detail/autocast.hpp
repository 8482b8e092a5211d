#pragma once
/// \file
/// Autocast state for one device type on every LibTorch cac supports, and `AutocastOff`, the
/// scope the cac maths runs in. Not part of the public API (see `cac::AutocastGuard`).
///
/// LibTorch 1.x has per-device functions (`at::autocast::is_cpu_enabled`, `set_enabled` for
/// CUDA, ...); 2.4+ has `at::autocast::{is,set}_autocast_enabled(device_type, ...)` and
/// deprecates the old family (every call warns). These helpers call whichever exists.

#include <ATen/autocast_mode.h>
#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/version.h>

/// 1 when LibTorch has the per-device-type autocast functions (2.4 and later).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define CAC_AUTOCAST_DEVICE_TYPE_API 1
#else
#define CAC_AUTOCAST_DEVICE_TYPE_API 0
#endif

namespace cac {
namespace detail {

/// Whether LibTorch has an autocast state for `device_type` (1.x: CPU and CUDA as far as cac is
/// concerned; 2.4+: every device type LibTorch lists, e.g. XPU and MPS too).
inline bool autocast_available(c10::DeviceType device_type) {
#if CAC_AUTOCAST_DEVICE_TYPE_API
  return at::autocast::is_autocast_available(device_type);
#else
  return device_type == c10::DeviceType::CPU || device_type == c10::DeviceType::CUDA;
#endif
}

/// Whether autocast is on for `device_type` in this thread (false where it is not available).
inline bool autocast_is_enabled(c10::DeviceType device_type) {
  if (!autocast_available(device_type)) return false;
#if CAC_AUTOCAST_DEVICE_TYPE_API
  return at::autocast::is_autocast_enabled(device_type);
#else
  return device_type == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

/// Switches autocast on or off for `device_type` (one of `autocast_available`).
inline void autocast_set_enabled(c10::DeviceType device_type, bool enabled) {
#if CAC_AUTOCAST_DEVICE_TYPE_API
  at::autocast::set_autocast_enabled(device_type, enabled);
#else
  if (device_type == c10::DeviceType::CUDA) {
    at::autocast::set_enabled(enabled);
  } else {
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

/// The lower precision autocast uses for `device_type` (one of `autocast_available`).
inline c10::ScalarType autocast_get_dtype(c10::DeviceType device_type) {
#if CAC_AUTOCAST_DEVICE_TYPE_API
  return at::autocast::get_autocast_dtype(device_type);
#else
  return device_type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                              : at::autocast::get_autocast_cpu_dtype();
#endif
}

/// Sets the lower precision autocast uses for `device_type` (one of `autocast_available`).
inline void autocast_set_dtype(c10::DeviceType device_type, c10::ScalarType dtype) {
#if CAC_AUTOCAST_DEVICE_TYPE_API
  at::autocast::set_autocast_dtype(device_type, dtype);
#else
  if (device_type == c10::DeviceType::CUDA) {
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

/// Autocast switched off for one device type for a scope, then restored: the C++ twin of
/// Python's `with torch.autocast(device_type, enabled=False):`.
///
/// Every cac function runs its maths under this guard for its tensors' device, so the maths runs
/// in the dtypes cac chooses (float32 for float16/bfloat16 inputs, see `compute_dtype`) rather
/// than in the ones autocast's per-op policy would pick (it casts `bmm`, `linear`, `matmul` to
/// the lower precision, and the policy differs between LibTorch releases). The custom autograd
/// functions' backward passes take it too, as a `backward()` called inside an autocast scope runs
/// them with autocast on. Does nothing when autocast is already off.
class AutocastOff {
 public:
  /// Switches autocast off for `device`'s type if it is on.
  explicit AutocastOff(const c10::Device& device)
      : device_type_(device.type()), was_enabled_(autocast_is_enabled(device_type_)) {
    if (was_enabled_) autocast_set_enabled(device_type_, false);
  }
  ~AutocastOff() {
    if (was_enabled_) autocast_set_enabled(device_type_, true);
  }
  AutocastOff(const AutocastOff&) = delete;
  AutocastOff& operator=(const AutocastOff&) = delete;

  /// Whether autocast was on for the device when the guard was made (the caller's state).
  bool was_enabled() const { return was_enabled_; }

 private:
  c10::DeviceType device_type_;
  bool was_enabled_;
};

}  // namespace detail
}  // namespace cac
