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
#include <cstdlib>
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
      torch::Tensor v =
          torch::sin(torch::arange(t.numel(), torch::kDouble) * 0.37 + static_cast<double>(k)).reshape(t.sizes());
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

// Same as `hashed_values` in reference_common.py: `numel` pseudo-random values in [-1, 1) for
// state-dict entry k, in exact integer arithmetic (products below 2^62):
// h = ((48271 n + 69621 k + 12345) mod p)^2 mod p, h = 48271 h mod p, v = h / p * 2 - 1, p = 2^31 - 1.
inline torch::Tensor hashed_values(int64_t numel, int64_t k) {
  constexpr int64_t p = 2147483647;
  torch::Tensor h = (torch::arange(numel, torch::kLong) * 48271 + k * 69621 + 12345).remainder(p);
  h = (h * h).remainder(p);
  h = (h * 48271).remainder(p);
  return h.to(torch::kDouble) / static_cast<double>(p) * 2 - 1;
}

// Same as `fill_hashed` in reference_common.py: `fill`, then every weight of two or more dimensions
// replaced by hashed_values(numel, k) / sqrt(fan_in). For the train-mode batch-norm cases: a `fill`
// weight has rank 2 (every row is a cos(0.37 i) + b sin(0.37 i)), so each convolution's output
// channels are combinations of two maps, and train-mode batch norm, dividing each channel by its
// batch standard deviation, blows up float rounding in the channels where they nearly cancel (a
// 2^-24 relative change of the input moves the outputs by up to 14% of their L1 norm). With these
// full-rank weights the same change moves them by about 1e-6 (docs/testing.md).
inline void fill_hashed(torch::nn::Module& module) {
  fill(module);
  torch::NoGradGuard no_grad;
  int64_t k = 0;
  for (auto& entry : state_dict(module)) {
    torch::Tensor& t = entry.second;
    if (ends_with(entry.first, "weight") && t.dim() >= 2) {
      const double fan_in = static_cast<double>(t[0].numel());
      t.copy_((hashed_values(t.numel(), k).reshape(t.sizes()) / std::sqrt(fan_in)).to(t.scalar_type()));
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
  double sum;       // sum of the map
  double weighted;  // sum of map.flatten()[n] · cos(0.7 n)
  // L1 norm of the map (the scale of the tolerances); 0 when not given (HRNet's ReLU'd maps,
  // whose L1 norm is their sum).
  double abs_sum = 0;
};

// Tolerances of the golden comparisons of the backbones, relative to the L1 norm of each output, for
// any x86-64 CPU, kernel and thread count. Worst deviations measured over ATen's default and AVX2
// kernels, oneDNN's SSE4.1, AVX2 and AVX-512 kernels, OpenBLAS's Prescott, Haswell and SkylakeX
// kernels and 1 or 2 threads (docs/testing.md): 4e-6 with train-mode batch norm (and fill_hashed),
// 1.6e-7 in eval mode (Swin: 5.4e-8). The smallest bugs tried move the outputs by 4e-4 in train mode
// (every batch-norm eps 1e-5 -> 2e-5) and by 1.8e-5 in eval mode (stride on the 1x1 instead of the
// 3x3 convolution; Swin: 2.3e-5, relative_position_index transposed).
constexpr double kTrainTolerance = 3e-5;
constexpr double kEvalTolerance = 1e-6;

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
    if (golden[i].abs_sum > 0)
      worst = std::max(worst, std::abs(flat.abs().sum().item<double>() - golden[i].abs_sum) / scale);
  }
  return worst;
}

// Compares each output with its golden statistics: sum, weighted sum (and L1 norm, when given)
// within `relative` of the L1 norm. With CAC_TEST_DEVIATIONS set in the environment it also
// warns the largest deviation of the case (named `label`) next to `relative` (docs/testing.md).
inline void check_golden(const std::vector<torch::Tensor>& outputs, const std::vector<Golden>& golden,
                         double relative = 1e-6, const std::string& label = "") {
  REQUIRE(outputs.size() == golden.size());
  if (std::getenv("CAC_TEST_DEVIATIONS") != nullptr) {
    WARN("golden deviation " << label << ": " << golden_deviation(outputs, golden) << " of the L1 norm, tolerance "
                             << relative);
  }
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
