// cac-bench: runs every benchmark, prints the configuration (LibTorch, BLAS, threads, device,
// dtype), then writes results/<host-kind>.json (Google Benchmark's JSON) and results/<host-kind>.md
// with the ratios against their targets. Host kind: $CAC_HOST_KIND, default "cpu-<N>threads".

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Console output as usual, plus each run's real time kept for the ratio table.
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      if (run.run_type != Run::RT_Iteration) continue;
      times[run.benchmark_name()] = run.GetAdjustedRealTime();
      counters[run.benchmark_name()] = run.counters;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> times;
  std::map<std::string, benchmark::UserCounters> counters;
};

// "BM_Foo/d:512/n:150/h:64/w:64" -> ("BM_Foo", "d:512/n:150/h:64/w:64").
std::pair<std::string, std::string> split(const std::string& name) {
  const auto slash = name.find('/');
  return {name.substr(0, slash), slash == std::string::npos ? "" : name.substr(slash + 1)};
}

struct Ratio {
  const char* what;
  const char* numerator;
  const char* denominator;
  double target;
};

void write_atomically(const std::filesystem::path& path, const std::string& text) {
  const auto temp = path.string() + ".tmp";
  std::ofstream(temp) << text;
  std::filesystem::rename(temp, path);
}

// "fcn_mobilenetv2/512/iterations:1/real_time" -> "fcn_mobilenetv2/512".
std::string model_name(const std::string& run) { return run.substr(0, run.find("/iterations:")); }

// The whole-model A/B runs of bench_models.cpp: one row per run with its counters.
void write_model_table(std::ostream& md, const std::map<std::string, benchmark::UserCounters>& counters) {
  struct Kind {
    const char* prefix;
    const char* what;
    double time_target;
  };
  const Kind kinds[] = {{"BM_ModelInference/", "inference, batch 1", 1.02},
                        {"BM_ModelTrain/", "training step, batch 2", 1.08}};
  bool header = false;
  for (const auto& kind : kinds) {
    for (const auto& [name, c] : counters) {
      if (name.rfind(kind.prefix, 0) != 0) continue;
      if (!header) {
        md << "\n## Whole models: baseline vs + CAC (same weights, interleaved)\n\n"
           << "Time ratio: median over the rounds of each round's + CAC / baseline time. "
           << "Peak memory: bytes held by tensors (LibTorch's CPU allocator) during one call, plus the model's "
              "parameters and buffers.\n\n"
           << "| model / size | run | baseline (ms) | + CAC (ms) | time ratio | target | met | baseline (MB) | "
              "+ CAC (MB) | memory ratio | target | met | activations ratio | Δparams |\n"
           << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        header = true;
      }
      const double time_ratio = c.at("time_ratio"), memory_ratio = c.at("memory_ratio");
      char row[768];
      std::snprintf(row, sizeof row,
                    "| %s | %s | %.1f | %.1f | %.4f | ≤ %.2f | %s | %.1f | %.1f | %.4f | ≤ 1.01 | %s | %.4f | %.0f |\n",
                    model_name(name.substr(std::string(kind.prefix).size())).c_str(), kind.what, c.at("base_ms").value,
                    c.at("cac_ms").value, time_ratio, kind.time_target, time_ratio <= kind.time_target ? "yes" : "no",
                    c.at("base_MB").value, c.at("cac_MB").value, memory_ratio, memory_ratio <= 1.01 ? "yes" : "no",
                    c.at("activation_ratio").value, c.at("params_delta").value);
      md << row;
    }
  }
}

// The loader's batch time against the FCN-MobileNetV2 training step it feeds (batch 2 each).
void write_loader_row(std::ostream& md, const CollectingReporter& reporter) {
  const auto loader = std::find_if(reporter.times.begin(), reporter.times.end(),
                                   [](const auto& entry) { return entry.first.rfind("BM_LoaderBatch", 0) == 0; });
  const auto step = std::find_if(reporter.counters.begin(), reporter.counters.end(), [](const auto& entry) {
    return entry.first.rfind("BM_ModelTrain/fcn_mobilenetv2/512", 0) == 0;
  });
  if (loader == reporter.times.end() || step == reporter.counters.end()) return;
  const double step_ms = step->second.at("base_ms").value, ratio = step_ms / loader->second;
  char row[512];
  std::snprintf(
      row, sizeof row,
      "\n## Data loading\n\n| what | loader batch (ms) | FCN-MobileNetV2 training step (ms) | step / batch | "
      "target | met |\n|---|---|---|---|---|---|\n| batch of 2 at 512×512, ADE20K pipeline, 2 workers | %.1f | "
      "%.1f | %.1f | ≥ 3 | %s |\n",
      loader->second, step_ms, ratio, ratio >= 3 ? "yes" : "no");
  md << row;
}

// Data-parallel scaling (bench_distributed.cpp).
void write_scaling_row(std::ostream& md, const CollectingReporter& reporter) {
  const auto run = std::find_if(reporter.counters.begin(), reporter.counters.end(),
                                [](const auto& entry) { return entry.first.rfind("BM_DataParallelScaling", 0) == 0; });
  if (run == reporter.counters.end()) return;
  const auto& c = run->second;
  char row[768];
  std::snprintf(row, sizeof row,
                "\n## Data-parallel scaling\n\nFCN-MobileNetV2, batch 2 per process, 256×256, 1 thread per process.\n\n"
                "| 1 process (s/step) | 2 processes, SyncBN (s/step) | speedup | efficiency | gradient all-reduce "
                "share | 2 processes, plain BN (s/step) | efficiency | 2 independent processes (s/step) | SyncBN "
                "engine efficiency |\n|---|---|---|---|---|---|---|---|---|\n"
                "| %.3f | %.3f | %.2f | %.2f | %.3f | %.3f | %.2f | %.3f | %.2f |\n",
                c.at("s_per_step_1proc").value, c.at("s_per_step_2proc").value, c.at("speedup").value,
                c.at("efficiency").value, c.at("allreduce_share_2proc").value, c.at("s_per_step_2proc_plain_bn").value,
                c.at("efficiency_plain_bn").value, c.at("s_per_step_2alone").value, c.at("engine_efficiency").value);
  md << row;
}

}  // namespace

#ifdef CAC_BENCH_DISTRIBUTED
namespace cac_bench {
int run_scaling_worker(const char* out);
}
#endif

int main(int argc, char** argv) {
#ifdef CAC_BENCH_DISTRIBUTED
  if (const char* out = std::getenv("CAC_BENCH_WORKER")) return cac_bench::run_scaling_worker(out);
#endif
  const char* kind_env = std::getenv("CAC_HOST_KIND");
  const std::string kind = kind_env ? kind_env : "cpu-" + std::to_string(torch::get_num_threads()) + "threads";
  const std::filesystem::path dir = CAC_BENCH_RESULTS_DIR;
  std::filesystem::create_directories(dir);
  std::string out_flag = "--benchmark_out=" + (dir / (kind + ".json.tmp")).string();
  std::string format_flag = "--benchmark_out_format=json";
  std::vector<char*> args(argv, argv + argc);
  args.push_back(out_flag.data());
  args.push_back(format_flag.data());
  int count = static_cast<int>(args.size());

  std::printf("cac-bench: LibTorch %s, %d threads, device cpu, dtype float32\n%s\n", TORCH_VERSION,
              torch::get_num_threads(), at::show_config().c_str());
  benchmark::AddCustomContext("libtorch", TORCH_VERSION);
  benchmark::AddCustomContext("threads", std::to_string(torch::get_num_threads()));
  benchmark::AddCustomContext("device", "cpu");
  benchmark::AddCustomContext("dtype", "float32");
  benchmark::Initialize(&count, args.data());
  CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  std::filesystem::rename(dir / (kind + ".json.tmp"), dir / (kind + ".json"));

  const std::vector<Ratio> ratios = {
      {"head inference / lower bound", "BM_HeadForward", "BM_LowerBound", 1.3},
      {"CAC training step / classifier training step", "BM_CacTrain", "BM_ClassifierTrain", 2.5},
      {"checkpoint load / file read", "BM_ReadStateDict", "BM_ReadFileWarm", 1.5}};
  std::ostringstream md;
  md << "# cac benchmarks on " << kind << "\n\nLibTorch " << TORCH_VERSION << ", " << torch::get_num_threads()
     << " threads, CPU, float32, batch 1. Ratios of real times measured in one run.\n\n"
     << "| ratio | shape | time (ms) | reference (ms) | ratio | target | met |\n|---|---|---|---|---|---|---|\n";
  for (const auto& r : ratios) {
    for (const auto& [name, time] : reporter.times) {
      const auto [base, shape] = split(name);
      if (base != r.numerator) continue;
      const auto ref = reporter.times.find(std::string(r.denominator) + (shape.empty() ? "" : "/" + shape));
      if (ref == reporter.times.end()) continue;
      const double ratio = time / ref->second;
      char row[512];
      std::snprintf(row, sizeof row, "| %s | %s | %.3f | %.3f | %.2f | ≤ %.1f | %s |\n", r.what, shape.c_str(), time,
                    ref->second, ratio, r.target, ratio <= r.target ? "yes" : "no");
      md << row;
    }
  }
  write_model_table(md, reporter.counters);
  write_loader_row(md, reporter);
  write_scaling_row(md, reporter);
  write_atomically(dir / (kind + ".md"), md.str());
  std::printf("\n%s\nwrote %s and %s\n", md.str().c_str(), (dir / (kind + ".json")).c_str(),
              (dir / (kind + ".md")).c_str());
  return 0;
}
