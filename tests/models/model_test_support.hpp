#pragma once
// Helpers shared by the model-zoo tests (tests/models/test_backbone_*.cpp): parameter counts, the
// state dict as PyTorch lists it, the FNV-1a hash of key lists, and the deterministic weights,
// inputs and output statistics of the PyTorch reference ports (tests/models/reference_common.py,
// hrnet_reference.py, backbone_reference.py), which compute the same things in Python.

#include <cac/autocast.hpp>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <ATen/autocast_mode.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cac_models_test {

inline int64_t count_parameters(torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

// The state-dict entries (parameters then buffers of each module, modules in pre-order), as
// PyTorch's `state_dict()` lists them.
inline std::vector<std::pair<std::string, torch::Tensor>> state_dict(torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> entries;
  for (const auto& item : module.named_modules()) {
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) {
      entries.emplace_back(prefix + p.key(), p.value());
    }
    for (const auto& b : item.value()->named_buffers(/*recurse=*/false)) {
      entries.emplace_back(prefix + b.key(), b.value());
    }
  }
  return entries;
}

inline uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// FNV-1a 64 of the ordered state-dict keys joined by newlines (as the reference ports print it).
inline uint64_t key_list_hash(torch::nn::Module& module) {
  const auto entries = state_dict(module);
  std::string joined;
  for (size_t i = 0; i < entries.size(); ++i) joined += (i ? "\n" : "") + entries[i].first;
  return fnv1a64(joined);
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Same rule as `fill` in reference_common.py: entry k of the state dict gets v[n] = sin(0.37 n + k);
// weights of two or more dimensions (convolutions, linear layers) v / sqrt(fan_in) with fan_in =
// t[0].numel(), other weights (batch and layer norms) 0.3 + 0.05 v, running vars 1 + 0.5 |v|,
// everything else (biases, running means, relative position bias tables) 0.1 v; integer entries
// (num_batches_tracked, relative_position_index) untouched but counted in k.
inline void fill(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  int64_t k = 0;
  for (auto& entry : state_dict(module)) {
    const std::string& name = entry.first;
    torch::Tensor& t = entry.second;
    if (t.scalar_type() != torch::kLong) {
      torch::Tensor v = torch::sin(torch::arange(t.numel(), torch::kDouble) * 0.37 + static_cast<double>(k))
                            .reshape(t.sizes());
      if (ends_with(name, "weight") && t.dim() >= 2) {
        v = v / std::sqrt(static_cast<double>(t[0].numel()));
      } else if (ends_with(name, "running_var")) {
        v = 1 + 0.5 * v.abs();
      } else if (ends_with(name, "weight")) {
        v = 0.3 + 0.05 * v;
      } else {
        v = 0.1 * v;
      }
      t.copy_(v.to(t.scalar_type()));
    }
    ++k;
  }
}

// The deterministic input of `input_image` in reference_common.py: cos(0.11 n) over the flattened
// tensor.
inline torch::Tensor image(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return torch::cos(torch::arange(n, torch::kDouble) * 0.11).reshape(shape).to(torch::kFloat);
}

struct Golden {
  std::vector<int64_t> shape;
  double sum;      // sum of the map
  double weighted; // sum of map.flatten()[n] · cos(0.7 n)
  // L1 norm of the map (the scale of the tolerances); 0 when not given (HRNet's ReLU'd maps,
  // whose L1 norm is their sum).
  double abs_sum = 0;
};

// Compares each output with its golden statistics: sum, weighted sum (and L1 norm, when given)
// within `relative` of the L1 norm.
inline void check_golden(const std::vector<torch::Tensor>& outputs, const std::vector<Golden>& golden,
                         double relative = 1e-6) {
  REQUIRE(outputs.size() == golden.size());
  for (size_t i = 0; i < golden.size(); ++i) {
    INFO("output " << i);
    const torch::Tensor flat = outputs[i].to(torch::kDouble).flatten();
    CHECK(outputs[i].sizes() == torch::IntArrayRef(golden[i].shape));
    const double sum = flat.sum().item<double>();
    const double weighted = (flat * torch::cos(torch::arange(flat.numel(), torch::kDouble) * 0.7)).sum().item<double>();
    const double abs_sum = flat.abs().sum().item<double>();
    const double scale = golden[i].abs_sum > 0 ? golden[i].abs_sum : std::abs(golden[i].sum);
    CHECK(sum == Approx(golden[i].sum).margin(relative * scale));
    CHECK(weighted == Approx(golden[i].weighted).margin(relative * scale));
    if (golden[i].abs_sum > 0) CHECK(abs_sum == Approx(golden[i].abs_sum).margin(relative * scale));
  }
}

// The largest deviation of `outputs` from `golden` relative to the L1 norm (to measure the
// agreement of the two implementations).
inline double golden_deviation(const std::vector<torch::Tensor>& outputs, const std::vector<Golden>& golden) {
  double worst = 0;
  for (size_t i = 0; i < golden.size() && i < outputs.size(); ++i) {
    const torch::Tensor flat = outputs[i].to(torch::kDouble).flatten();
    const double scale = golden[i].abs_sum > 0 ? golden[i].abs_sum : std::abs(golden[i].sum);
    const double sum = flat.sum().item<double>();
    const double weighted = (flat * torch::cos(torch::arange(flat.numel(), torch::kDouble) * 0.7)).sum().item<double>();
    worst = std::max(worst, std::abs(sum - golden[i].sum) / scale);
    worst = std::max(worst, std::abs(weighted - golden[i].weighted) / scale);
    if (golden[i].abs_sum > 0) worst = std::max(worst, std::abs(flat.abs().sum().item<double>() - golden[i].abs_sum) / scale);
  }
  return worst;
}

// Runs `fn` with bfloat16 CPU autocast on, switching it off (and clearing the cache) afterwards
// even when `fn` throws.
template <typename Fn>
auto with_cpu_autocast(Fn&& fn) -> decltype(fn()) {
  cac::AutocastGuard autocast(torch::kCPU, torch::kBFloat16);
  return fn();
}

/// Backpropagates `loss` and checks that every parameter of `model` received a nonzero gradient.
inline void check_every_parameter_learns(torch::nn::Module& model, const torch::Tensor& loss) {
  loss.backward();
  for (const auto& p : model.named_parameters()) {
    INFO(p.key());
    REQUIRE(p.value().grad().defined());
    CHECK(p.value().grad().abs().sum().item<double>() > 0);
  }
}

/// Runs `model` (a backbone) on `x` under bfloat16 CPU autocast, checks one finite output per
/// stage with the backbone's channels, and returns Σ mean(y²) in float32 for a backward pass
/// outside autocast.
template <typename Backbone>
torch::Tensor autocast_outputs_loss(Backbone& model, const torch::Tensor& x) {
  const std::vector<torch::Tensor> out = with_cpu_autocast([&] { return model->forward(x); });
  const std::vector<int64_t> channels = model->out_channels();
  REQUIRE(out.size() == channels.size());
  torch::Tensor loss = torch::zeros({});
  for (size_t i = 0; i < out.size(); ++i) {
    CHECK(out[i].size(1) == channels[i]);
    CHECK(torch::isfinite(out[i]).all().item<bool>());
    loss = loss + out[i].to(torch::kFloat).pow(2).mean();
  }
  return loss;
}

}  // namespace cac_models_test
