#include "amp.hpp"

#include <cac/autocast.hpp>
#include <torch/torch.h>

namespace cac_engine {

MixedPrecision::MixedPrecision(bool enabled, const torch::Device& device, c10::optional<c10::ScalarType> dtype,
                               double init_scale, int64_t growth_interval)
    : enabled_(enabled),
      device_(device),
      dtype_(dtype ? *dtype : (device.is_cuda() ? torch::kHalf : torch::kBFloat16)),
      scaling_(enabled && dtype_ == torch::kHalf),
      scale_(scaling_ ? init_scale : 1.0),
      growth_interval_(growth_interval) {
  TORCH_CHECK(dtype_ == torch::kHalf || dtype_ == torch::kBFloat16,
              "cac_engine::MixedPrecision: expected float16 or bfloat16 but got ", dtype_);
  TORCH_CHECK(!enabled || device.is_cuda() || dtype_ == torch::kBFloat16,
              "cac_engine::MixedPrecision: expected bfloat16 for CPU autocast but got ", dtype_);
  TORCH_CHECK(init_scale > 0 && growth_interval > 0,
              "cac_engine::MixedPrecision: expected a positive init_scale and growth_interval but got ", init_scale,
              " and ", growth_interval);
}

std::map<std::string, torch::Tensor> MixedPrecision::forward(
    const std::function<std::map<std::string, torch::Tensor>()>& body) const {
  if (!enabled_) return body();
  cac::AutocastGuard autocast(device_.type(), dtype_);
  return body();
}

bool MixedPrecision::backward_and_step(const torch::Tensor& loss, torch::optim::Optimizer& optimizer,
                                       const std::vector<torch::Tensor>& parameters, double grad_clip,
                                       const std::function<void()>& after_backward) {
  (scaling_ ? loss.to(torch::kFloat) * scale_ : loss).backward();
  if (after_backward) after_backward();
  bool finite = true;
  if (scaling_) {
    torch::NoGradGuard no_grad;
    for (const auto& p : parameters) {
      if (!p.grad().defined()) continue;
      p.grad().div_(scale_);
      finite = finite && torch::isfinite(p.grad()).all().item<bool>();
    }
  }
  if (finite && grad_clip > 0) torch::nn::utils::clip_grad_norm_(parameters, grad_clip);
  if (finite) optimizer.step();
  if (scaling_) {
    if (!finite) {
      scale_ /= 2;
      good_steps_ = 0;
    } else if (++good_steps_ == growth_interval_) {
      scale_ *= 2;
      good_steps_ = 0;
    }
  }
  return finite;
}

}  // namespace cac_engine
