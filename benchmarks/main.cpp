// cac-bench: runs every benchmark, prints the configuration (LibTorch, BLAS, threads, device,
// dtype), then writes results/<host-kind>.json (Google Benchmark's JSON) and results/<host-kind>.md
// with the ratios against their targets. Host kind: $CAC_HOST_KIND, default "cpu-<N>threads".

#include <benchmark/benchmark.h>
#include <torch/torch.h>

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
      if (run.run_type == Run::RT_Iteration) times[run.benchmark_name()] = run.GetAdjustedRealTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> times;
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

}  // namespace

int main(int argc, char** argv) {
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

  const std::vector<Ratio> ratios = {{"head inference / lower bound", "BM_HeadForward", "BM_LowerBound", 1.3},
                                     {"CAC training step / classifier training step", "BM_CacTrain",
                                      "BM_ClassifierTrain", 2.5}};
  std::ostringstream md;
  md << "# cac benchmarks on " << kind << "\n\nLibTorch " << TORCH_VERSION << ", " << torch::get_num_threads()
     << " threads, CPU, float32, batch 1. Ratios of real times measured in one run.\n\n"
     << "| ratio | shape | time (ms) | reference (ms) | ratio | target | met |\n|---|---|---|---|---|---|---|\n";
  for (const auto& r : ratios) {
    for (const auto& [name, time] : reporter.times) {
      const auto [base, shape] = split(name);
      if (base != r.numerator) continue;
      const auto ref = reporter.times.find(std::string(r.denominator) + "/" + shape);
      if (ref == reporter.times.end()) continue;
      const double ratio = time / ref->second;
      char row[512];
      std::snprintf(row, sizeof row, "| %s | %s | %.3f | %.3f | %.2f | ≤ %.1f | %s |\n", r.what, shape.c_str(), time,
                    ref->second, ratio, r.target, ratio <= r.target ? "yes" : "no");
      md << row;
    }
  }
  write_atomically(dir / (kind + ".md"), md.str());
  std::printf("\n%s\nwrote %s and %s\n", md.str().c_str(), (dir / (kind + ".json")).c_str(),
              (dir / (kind + ".md")).c_str());
  return 0;
}
