#pragma once
/// \file
/// Mixed precision for the training engine (`runtime.amp`): the forward pass under autocast
/// (float16 on CUDA, bfloat16 on CPU by default) and, for float16, dynamic loss scaling as
/// PyTorch's `GradScaler` does it (LibTorch 1.13 has no C++ `GradScaler`).
///
/// ```
/// cac_engine::MixedPrecision amp(true, device);
/// auto losses = amp.forward([&] { return model->forward_train(images, labels); });
/// amp.backward_and_step(losses.at("total"), *optimizer, model->parameters(), grad_clip);
/// ```

#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace cac_engine {

/// Autocast and loss scaling for one device.
class MixedPrecision {
 public:
  /// Off when `enabled` is false (every call is then the plain float32 path). `dtype` is the
  /// autocast type: `kHalf` (CUDA only) or `kBFloat16`; undefined = float16 on CUDA, bfloat16 on
  /// CPU. Loss scaling is used with float16 only, starting at `init_scale`, halved after a step
  /// with non-finite gradients (which is skipped) and doubled after `growth_interval` good steps.
  MixedPrecision(bool enabled, const torch::Device& device, c10::optional<c10::ScalarType> dtype = c10::nullopt,
                 double init_scale = 65536.0, int64_t growth_interval = 2000);

  /// Runs `body` under autocast (or plainly when off).
  std::map<std::string, torch::Tensor> forward(const std::function<std::map<std::string, torch::Tensor>()>& body) const;

  /// `loss.backward()` (scaled with float16), `after_backward()` when given (data-parallel
  /// training averages the gradients there), unscales and clips the gradients to `grad_clip`
  /// (0 = no clipping), then `optimizer.step()` unless a gradient is non-finite. Returns whether
  /// the step was taken.
  bool backward_and_step(const torch::Tensor& loss, torch::optim::Optimizer& optimizer,
                         const std::vector<torch::Tensor>& parameters, double grad_clip,
                         const std::function<void()>& after_backward = {});

  /// Whether autocast is on.
  bool enabled() const { return enabled_; }
  /// The autocast dtype.
  c10::ScalarType dtype() const { return dtype_; }
  /// The current loss scale (1 without scaling).
  double scale() const { return scale_; }

 private:
  bool enabled_;
  torch::Device device_;
  c10::ScalarType dtype_;
  bool scaling_;
  double scale_;
  int64_t growth_interval_, good_steps_ = 0;
};

}  // namespace cac_engine
