// Whole-model benchmarks: the cost of CAC in the reference models, baseline vs `+ CAC` with the
// same weights, measured in one process and interleaved (A B B A A B ...), so that drift of the
// machine hits both sides alike.
//
//   BM_ModelInference/<model>/<size>  eval mode, NoGradGuard, batch 1, size×size input
//   BM_ModelTrain/<model>/<size>      train mode, batch 2: forward_train + backward + SGD step
//
// Rounds are few (2-4 pairs; 1 for the UperNet training step) to keep the whole command near 10
// minutes on a 2-core CPU; raise them for tighter figures.
//
// Each run reports counters that main.cpp turns into the whole-model table:
//   base_ms, cac_ms      median time of one call
//   time_ratio           median over rounds of cac/base (the rounds pair adjacent calls)
//   base_MB, cac_MB      peak bytes held by tensors during one call plus the model's own
//                        parameters and buffers (LibTorch's CPU allocator; BLAS and oneDNN
//                        scratch buffers outside it are not seen)
//   memory_ratio         cac_MB / base_MB
//   activation_ratio     the same without parameters and buffers (what the forward pass adds)
//   params_delta         parameters of the CAC model minus the baseline's

#include "models/registry.hpp"

#include <benchmark/benchmark.h>
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include "support/allocator_base.hpp"  // tests/support

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace {

/// A CPU allocator that forwards to the default one and tracks the bytes it has handed out and
/// not yet had back, and their peak, while installed (`PeakAllocator::Scope`; one at a time).
/// Pointers keep data == context, as some operators' `raw_allocate` requires.
class PeakAllocator final : public cac_test::AllocatorBase<PeakAllocator> {
 public:
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

 private:
  friend class cac_test::AllocatorBase<PeakAllocator>;
  c10::DataPtr track(size_t n) const {
    c10::DataPtr inner = base_->allocate(n);
    TORCH_CHECK(inner.get() == inner.get_context() && inner.get_deleter() == base_deleter_,
                "cac-bench: expected the default CPU allocator underneath");
    void* data = inner.release_context();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_[data] = n;
      live_ += n;
      peak_ = std::max(peak_, live_);
    }
    return {data, data, &release, c10::Device(c10::kCPU)};
  }

 public:
  /// Installs the tracker as the CPU allocator for its lifetime, starting from zero.
  class Scope {
   public:
    explicit Scope(PeakAllocator& tracker) : previous_(c10::GetCPUAllocator()) {
      tracker.base_ = previous_;
      tracker.base_deleter_ = previous_->raw_deleter();
      tracker.live_ = tracker.peak_ = 0;
      active_ = &tracker;
      c10::SetCPUAllocator(&tracker, /*priority=*/100);
    }
    ~Scope() { c10::SetCPUAllocator(previous_, /*priority=*/100); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    c10::Allocator* previous_;
  };

  /// Peak of the live bytes since the scope began.
  size_t peak() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return peak_;
  }

 private:
  // Memory from this tracker may be freed after its scope ends, so it must live as long as the
  // process (`compare` keeps it static).
  static void release(void* data) {
    PeakAllocator* self = active_;
    {
      std::lock_guard<std::mutex> lock(self->mutex_);
      auto it = self->sizes_.find(data);
      if (it != self->sizes_.end()) {
        self->live_ -= it->second;
        self->sizes_.erase(it);
      }
    }
    self->base_deleter_(data);
  }

  static inline PeakAllocator* active_ = nullptr;
  c10::Allocator* base_ = nullptr;
  c10::DeleterFnPtr base_deleter_ = nullptr;
  mutable std::mutex mutex_;
  mutable std::unordered_map<void*, size_t> sizes_;
  mutable size_t live_ = 0, peak_ = 0;
};

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

size_t state_bytes(const torch::nn::Module& module) {
  size_t n = 0;
  for (const auto& p : module.parameters()) n += p.nbytes();
  for (const auto& b : module.buffers()) n += b.nbytes();
  return n;
}

/// The baseline and the `+ CAC` model with the baseline's weights in every shared module.
struct ModelPair {
  cac_models::EncoderDecoder base{nullptr}, cac{nullptr};
};

ModelPair make_pair(const std::string& name) {
  torch::manual_seed(0);
  ModelPair pair{cac_models::make_model(name, {150, false}), cac_models::make_model(name, {150, true})};
  torch::NoGradGuard no_grad;
  auto target_params = pair.cac->named_parameters();
  auto target_buffers = pair.cac->named_buffers();
  for (const auto& item : pair.base->named_parameters()) target_params[item.key()].copy_(item.value());
  for (const auto& item : pair.base->named_buffers()) target_buffers[item.key()].copy_(item.value());
  return pair;
}

double seconds(const std::function<void()>& run) {
  const auto start = std::chrono::steady_clock::now();
  run();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/// Times `run(base)` and `run(cac)` over `rounds` rounds in the order A B, B A, A B, ... after
/// one warm-up call each, measures the peak memory of one call each, and sets the counters.
void compare(benchmark::State& state, ModelPair& pair, int rounds,
             const std::function<void(cac_models::EncoderDecoder&)>& run) {
  std::vector<double> base, cac, ratios;
  for (auto _ : state) {
    run(pair.base);
    run(pair.cac);
    for (int r = 0; r < rounds; ++r) {
      double a = 0, b = 0;
      if (r % 2 == 0) {
        a = seconds([&] { run(pair.base); });
        b = seconds([&] { run(pair.cac); });
      } else {
        b = seconds([&] { run(pair.cac); });
        a = seconds([&] { run(pair.base); });
      }
      base.push_back(a);
      cac.push_back(b);
      ratios.push_back(b / a);
    }
  }
  double peak[2], activations[2];
  cac_models::EncoderDecoder* models[2] = {&pair.base, &pair.cac};
  // One tracker for the whole process: tensors allocated under it (gradients, optimizer state)
  // may be freed long after its scope ends.
  static PeakAllocator tracker;
  for (int i = 0; i < 2; ++i) {
    {
      PeakAllocator::Scope scope(tracker);
      run(*models[i]);
    }
    activations[i] = static_cast<double>(tracker.peak()) / (1 << 20);
    peak[i] = activations[i] + static_cast<double>(state_bytes(**models[i])) / (1 << 20);
  }
  state.counters["base_ms"] = median(base) * 1e3;
  state.counters["cac_ms"] = median(cac) * 1e3;
  state.counters["time_ratio"] = median(ratios);
  state.counters["base_MB"] = peak[0];
  state.counters["cac_MB"] = peak[1];
  state.counters["memory_ratio"] = peak[1] / peak[0];
  state.counters["activation_ratio"] = activations[1] / activations[0];
  state.counters["params_delta"] = static_cast<double>(count_parameters(*pair.cac) - count_parameters(*pair.base));
}

void BM_ModelInference(benchmark::State& state, const std::string& name, int64_t size, int rounds) {
  ModelPair pair = make_pair(name);
  pair.base->eval();
  pair.cac->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor images = torch::randn({1, 3, size, size});
  compare(state, pair, rounds,
          [&](cac_models::EncoderDecoder& model) { benchmark::DoNotOptimize(model->forward(images).data_ptr()); });
}

void BM_ModelTrain(benchmark::State& state, const std::string& name, int64_t size, int rounds) {
  ModelPair pair = make_pair(name);
  pair.base->train();
  pair.cac->train();
  torch::optim::SGD base_sgd(pair.base->parameters(), torch::optim::SGDOptions(1e-4).momentum(0.9));
  torch::optim::SGD cac_sgd(pair.cac->parameters(), torch::optim::SGDOptions(1e-4).momentum(0.9));
  torch::manual_seed(1);
  const torch::Tensor images = torch::randn({2, 3, size, size});
  torch::Tensor labels = torch::randint(0, 150, {2, size, size}, torch::kLong);
  compare(state, pair, rounds, [&](cac_models::EncoderDecoder& model) {
    torch::optim::SGD& sgd = model.ptr() == pair.base.ptr() ? base_sgd : cac_sgd;
    sgd.zero_grad();
    model->forward_train(images, labels).at("total").backward();
    sgd.step();
  });
}

}  // namespace

// The paper's Table 1 models at 512×512 (and 1024×1024 for the MobileNetV2 models), inference.
#define CAC_INFERENCE(model, size, rounds)                                 \
  BENCHMARK_CAPTURE(BM_ModelInference, model / size, #model, size, rounds) \
      ->Iterations(1)                                                      \
      ->Unit(benchmark::kMillisecond)                                      \
      ->UseRealTime()
CAC_INFERENCE(fcn_mobilenetv2, 512, 4);
CAC_INFERENCE(fcn_mobilenetv2, 1024, 2);
CAC_INFERENCE(deeplabv3plus_mobilenetv2, 512, 4);
CAC_INFERENCE(deeplabv3plus_mobilenetv2, 1024, 2);
CAC_INFERENCE(ocrnet_hrnetv2_w18, 512, 4);
CAC_INFERENCE(upernet_r50, 512, 2);
CAC_INFERENCE(deeplabv3plus_r50, 512, 2);
CAC_INFERENCE(upernet_swin_tiny, 512, 2);

// Training step at the 512×512 crop, batch 2.
#define CAC_TRAIN(model, size, rounds)                                 \
  BENCHMARK_CAPTURE(BM_ModelTrain, model / size, #model, size, rounds) \
      ->Iterations(1)                                                  \
      ->Unit(benchmark::kMillisecond)                                  \
      ->UseRealTime()
CAC_TRAIN(fcn_mobilenetv2, 512, 2);
CAC_TRAIN(upernet_r50, 512, 1);
