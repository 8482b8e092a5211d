// Data-parallel scaling on this machine: FCN-MobileNetV2 (+ SyncBN) training steps with W worker
// processes of one thread each (W = 1 and 2), batch 2 per process at 256×256, gradients averaged
// over Gloo on 127.0.0.1 — the engine's own path (`synchronize_batch_norms`, `broadcast_parameters`,
// `average_gradients`). The workers are copies of cac-bench started by `launch_workers`; each run
// reports seconds per step and the share of it spent averaging gradients. Scaling efficiency
// = (throughput with 2 processes) / (2 × throughput with 1) = t(1) / t(2) at a fixed batch per process.

#include "engine/distributed.hpp"
#include "engine/launcher.hpp"
#include "models/registry.hpp"

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

constexpr int64_t kSize = 256;
constexpr int64_t kBatch = 2;  // per process
constexpr int kWarmup = 1;
constexpr int kSteps = 3;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct Measured {
  double seconds_per_step = 0;
  double average_seconds = 0;
};

// How the workers of `run_workers` train.
enum class Mode { SyncBN, PlainBN, Independent };

// Starts `world` workers (one thread each) and reads rank 0's figures. `SyncBN`: data-parallel with
// synchronised batch norms (the reference configs); `PlainBN`: data-parallel with per-process batch
// statistics; `Independent`: no group, each worker trains alone beside the others (the machine's
// own contention, without communication).
Measured run_workers(int64_t world, Mode mode = Mode::SyncBN) {
  const auto out = std::filesystem::temp_directory_path() /
                   ("cac_bench_scaling_" + std::to_string(::getpid()) + "_" + std::to_string(world) + ".txt");
  std::filesystem::remove(out);
  setenv("CAC_BENCH_WORKER", out.c_str(), 1);
  setenv("OMP_NUM_THREADS", "1", 1);
  setenv("CAC_BENCH_MODE", mode == Mode::SyncBN ? "sync" : (mode == Mode::PlainBN ? "plain" : "independent"), 1);
  const auto result = cac_engine::launch_workers(world, {"cac-bench"});
  unsetenv("CAC_BENCH_MODE");
  unsetenv("CAC_BENCH_WORKER");
  unsetenv("OMP_NUM_THREADS");
  TORCH_CHECK(result.exit_code == 0, "cac-bench: expected the scaling workers to succeed but rank ", result.failed_rank,
              " exited with ", result.exit_code);
  Measured measured;
  std::ifstream(out) >> measured.seconds_per_step >> measured.average_seconds;
  std::filesystem::remove(out);
  TORCH_CHECK(measured.seconds_per_step > 0, "cac-bench: expected a time from the scaling workers in ", out.string());
  return measured;
}

void BM_DataParallelScaling(benchmark::State& state) {
  Measured one, two, plain, side_by_side;
  for (auto _ : state) {
    one = run_workers(1);
    two = run_workers(2);
    plain = run_workers(2, Mode::PlainBN);
    side_by_side = run_workers(2, Mode::Independent);
  }
  state.counters["s_per_step_1proc"] = one.seconds_per_step;
  state.counters["s_per_step_2proc"] = two.seconds_per_step;
  state.counters["s_per_step_2alone"] = side_by_side.seconds_per_step;
  state.counters["engine_efficiency"] = side_by_side.seconds_per_step / two.seconds_per_step;
  state.counters["s_per_step_2proc_plain_bn"] = plain.seconds_per_step;
  state.counters["efficiency_plain_bn"] = one.seconds_per_step / plain.seconds_per_step;
  state.counters["allreduce_share_2proc"] = two.average_seconds / two.seconds_per_step;
  state.counters["speedup"] = 2 * one.seconds_per_step / two.seconds_per_step;
  state.counters["efficiency"] = one.seconds_per_step / two.seconds_per_step;
}

}  // namespace

namespace cac_bench {

int run_scaling_worker(const char* out) {
  try {
    torch::set_num_threads(1);
    const auto env = cac_engine::DistributedEnv::from_env();
    const std::string mode = std::getenv("CAC_BENCH_MODE") ? std::getenv("CAC_BENCH_MODE") : "sync";
    auto group = std::make_shared<cac_engine::ProcessGroup>();
    if (mode != "independent") group->init(env, torch::kCPU, std::chrono::minutes(5));
    cac_models::ModelOptions options;
    options.norm.sync(mode == "sync");
    torch::manual_seed(0);
    auto model = cac_models::make_model("fcn_mobilenetv2", options);
    cac_engine::synchronize_batch_norms(*model, group);
    cac_engine::broadcast_parameters(*model, *group);
    model->train();
    torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(1e-4).momentum(0.9));
    torch::manual_seed(1 + env.rank);
    const torch::Tensor images = torch::randn({kBatch, 3, kSize, kSize});
    const torch::Tensor labels = torch::randint(0, 150, {kBatch, kSize, kSize}, torch::kLong);
    std::vector<double> steps, averages;
    for (int step = 0; step < kWarmup + kSteps; ++step) {
      group->barrier();
      const double start = now();
      sgd.zero_grad();
      model->forward_train(images, labels).at("total").backward();
      const double averaging = now();
      cac_engine::average_gradients(*model, *group);
      const double averaged = now();
      sgd.step();
      if (step >= kWarmup) {
        steps.push_back(now() - start);
        averages.push_back(averaged - averaging);
      }
    }
    if (env.rank == 0) std::ofstream(out) << median(steps) << ' ' << median(averages) << '\n';
    group->barrier();
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "cac-bench scaling worker: %s\n", error.what());
    return 1;
  }
}

}  // namespace cac_bench

BENCHMARK(BM_DataParallelScaling)->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();
