#pragma once
// Shared helpers of the cac test suite: finite-difference gradient checks, a CPU allocator
// that records allocation sizes, and the loader of the PyTorch-made fixtures in tests/fixtures.

#include <torch/torch.h>

#include <c10/core/CPUAllocator.h>

#include "allocator_base.hpp"

#include <atomic>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <vector>

namespace cac_test {

/// Largest absolute difference between two tensors (0 for two empty tensors).
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.numel() == 0) return 0.0;
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

/// True when `a` and `b` have the same shape and agree to `atol + rtol·|b|` element-wise.
inline bool all_close(const torch::Tensor& a, const torch::Tensor& b, double rtol = 1e-6, double atol = 1e-8) {
  return a.sizes() == b.sizes() && torch::allclose(a.to(torch::kDouble), b.to(torch::kDouble), rtol, atol);
}

/// Result of a finite-difference check: the worst absolute error and the input it came from.
struct GradCheckResult {
  double max_error = 0.0;
  size_t worst_input = 0;
  bool ok = true;
};

/// Compares autograd gradients of `fn(inputs)` (any shape; reduced with a fixed random
/// projection so every output element matters) against central differences with step `eps`.
/// Inputs must be double; only those with requires_grad() are checked.
inline GradCheckResult gradcheck(const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& fn,
                                 std::vector<torch::Tensor> inputs, double eps = 1e-6, double atol = 1e-5,
                                 double rtol = 1e-4) {
  torch::Tensor projection;
  auto scalar = [&](const std::vector<torch::Tensor>& xs) {
    torch::Tensor out = fn(xs);
    if (!projection.defined()) {
      auto generator = at::detail::createCPUGenerator(1234);
      projection = at::rand(out.sizes(), generator, out.options().requires_grad(false));
    }
    return (out * projection).sum();
  };
  for (auto& x : inputs) {
    if (x.requires_grad()) x.mutable_grad().reset();
  }
  auto analytic_inputs = inputs;
  scalar(analytic_inputs).backward();
  GradCheckResult result;
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (!inputs[k].requires_grad()) continue;
    torch::Tensor analytic = inputs[k].grad().defined() ? inputs[k].grad().clone() : torch::zeros_like(inputs[k]);
    torch::Tensor flat = inputs[k].view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double original = flat[i].item<double>();
      flat[i] = original + eps;
      const double plus = scalar(inputs).item<double>();
      flat[i] = original - eps;
      const double minus = scalar(inputs).item<double>();
      flat[i] = original;
      const double numeric = (plus - minus) / (2 * eps);
      const double a = analytic.view(-1)[i].item<double>();
      const double error = std::abs(numeric - a);
      if (error > result.max_error) {
        result.max_error = error;
        result.worst_input = k;
      }
      if (error > atol + rtol * std::abs(numeric)) result.ok = false;
    }
  }
  return result;
}

/// A CPU allocator that forwards to the default one and records the largest single allocation
/// and the total bytes allocated while installed. Install with `AllocationTracker::Scope`.
class AllocationTracker final : public cac_test::AllocatorBase<AllocationTracker> {
 public:
  c10::DeleterFnPtr raw_deleter() const override { return base->raw_deleter(); }

  /// Installs the tracker as the CPU allocator for its lifetime.
  struct Scope {
    explicit Scope(AllocationTracker& tracker) : previous(c10::GetCPUAllocator()) {
      tracker.base = previous;
      tracker.largest = 0;
      tracker.total = 0;
      c10::SetCPUAllocator(&tracker, /*priority=*/100);
    }
    ~Scope() { c10::SetCPUAllocator(previous, /*priority=*/100); }
    c10::Allocator* previous;
  };

 private:
  friend class cac_test::AllocatorBase<AllocationTracker>;
  c10::DataPtr track(size_t n) const {
    size_t seen = largest.load();
    while (n > seen && !largest.compare_exchange_weak(seen, n)) {
    }
    total += n;
    return base->allocate(n);
  }

 public:
  c10::Allocator* base = nullptr;
  mutable std::atomic<size_t> largest{0};
  mutable std::atomic<size_t> total{0};
};

/// Loads `tests/fixtures/<name>.pt` (a plain dict of tensors written by make_fixtures.py).
inline std::map<std::string, torch::Tensor> load_fixture(const std::string& name) {
  const std::string path = std::string(CAC_TEST_FIXTURES_DIR) + "/" + name + ".pt";
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error("cannot open fixture " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const torch::IValue value = torch::pickle_load(bytes);
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : value.toGenericDict()) out[item.key().toStringRef()] = item.value().toTensor();
  return out;
}

}  // namespace cac_test
