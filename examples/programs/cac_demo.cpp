// cac-demo: the README's main job. Generates the bundled context-shift dataset in three variants
// (an image-wide colour cast, a class-wise one, and the control without a shift), trains the baseline, the
// global-context baseline (an image-level pooling branch, as ASPP's image pool) and the + CAC variant of the same small
// model with the same schedule on each, evaluates them (p, pp and the oracle branch py), and prints the comparison
// table; writes a predictions grid per dataset and the training curves as PNG. With several seeds it also
// prints the mean ± standard deviation over them.
//
// Usage: cac-demo [--work-dir work_dirs/demo] [--iterations 800] [--seed 0 | --seeds 0,1,2]
//                 [--datasets shift,classwise,control] [--models baseline,gc,cac] [--reuse]
//                 [--set key=value ...]
#include "engine/cli.hpp"
#include "engine/trainer.hpp"

#include "data/transforms.hpp"
#include "eval/inference.hpp"
#include "eval/training_curves.hpp"
#include "eval/visualize.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <optional>

namespace {

// The demo's models: table label, --models name and config file (without the dataset's suffix).
struct Model {
  std::string label, option, file;
};
const std::vector<Model> kModels{{"baseline", "baseline", "fcn_tiny_baseline"},
                                 {"global context", "gc", "fcn_tiny_gc"},
                                 {"+ CAC", "cac", "fcn_tiny_cac"}};

// The demo's datasets: table label, --datasets name and the configs' file-name suffix.
struct DatasetVariant {
  std::string label, option, suffix;
};
const std::vector<DatasetVariant> kDatasets{{"context shift", "shift", ""},
                                            {"class-wise shift", "classwise", "_classwise"},
                                            {"control (no shift)", "control", "_control"}};

// The entries of `all` whose option is in `chosen` (every entry when `chosen` is empty), in order.
template <typename T>
std::vector<T> select(const std::vector<T>& all, const std::vector<std::string>& chosen) {
  std::vector<T> out;
  for (const auto& entry : all) {
    if (chosen.empty() || std::find(chosen.begin(), chosen.end(), entry.option) != chosen.end()) out.push_back(entry);
  }
  return out;
}

struct Run {
  std::string dataset, model;
  int64_t seed = 0;
  bool cac = false;
  cac_engine::Config config;
  cac_engine::TrainResult training;
  cac_engine::EvaluateResult evaluation;
  int64_t parameters = 0;
  cac_models::EncoderDecoder network{nullptr};
  std::filesystem::path work_dir;  // holds its log.jsonl
};

// Image | ground truth | one prediction per run, for the first `count` validation images.
cv::Mat predictions_grid(std::vector<Run*> runs, int64_t count) {
  const auto dataset = cac_engine::build_dataset(runs.front()->config, "val");
  const auto& info = dataset->info();
  const cac_eval::Palette& palette = info.palette;
  const auto pipeline = cac_engine::test_pipeline(runs.front()->config);
  std::vector<cv::Mat> rows;
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < std::min<int64_t>(count, static_cast<int64_t>(dataset->size())); ++i) {
    const cac_data::RawSample raw = dataset->load(static_cast<size_t>(i));
    const cac_data::Sample sample = cac_data::test_transform(raw, pipeline);
    std::vector<cv::Mat> tiles{raw.image, cac_eval::colorize(sample.label, palette)};
    for (Run* run : runs) {
      run->network->eval();
      tiles.push_back(cac_eval::colorize(
          cac_eval::predict(run->network, sample.image.unsqueeze(0), {}, {raw.image.rows, raw.image.cols}), palette));
    }
    for (auto& tile : tiles) cv::resize(tile, tile, {160, 160}, 0, 0, cv::INTER_NEAREST);
    cv::Mat row;
    cv::hconcat(tiles, row);
    rows.push_back(row);
  }
  cv::Mat grid;
  cv::vconcat(rows, grid);
  cv::Mat header(28, grid.cols, CV_8UC3, cv::Scalar(255, 255, 255));
  std::vector<std::string> titles{"image", "ground truth"};
  for (Run* run : runs) titles.push_back(run->model);
  for (size_t t = 0; t < titles.size(); ++t) {
    cv::putText(header, titles[t], {static_cast<int>(t) * 160 + 6, 20}, cv::FONT_HERSHEY_SIMPLEX, 0.5,
                cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  }
  cv::Mat out;
  cv::vconcat(header, grid, out);
  return out;
}

// mIoU × 100 of a branch (nullopt when the run has no such branch).
std::optional<double> branch(const Run& run, const std::string& name) {
  const auto it = run.evaluation.branches.find(name);
  if (it == run.evaluation.branches.end()) return std::nullopt;
  return 100 * it->second.mIoU;
}

// The table's columns of one run: mIoU, p (a model without CAC: its prediction), pp, py.
std::vector<std::optional<double>> columns(const Run& run) {
  const double miou = 100 * run.evaluation.metrics.mIoU;
  return {miou, run.cac ? branch(run, "logits") : miou, branch(run, "context"), branch(run, "oracle")};
}

std::string cell(const std::optional<double>& value) { return value ? fmt::format("{:.2f}", *value) : "-"; }

// "mean ± std" (sample standard deviation, n − 1) of the values; "-" when there are none.
std::string mean_std(const std::vector<double>& values) {
  if (values.empty()) return "-";
  double mean = 0, squares = 0;
  for (double v : values) mean += v / static_cast<double>(values.size());
  for (double v : values) squares += (v - mean) * (v - mean);
  const double deviation = values.size() > 1 ? std::sqrt(squares / static_cast<double>(values.size() - 1)) : 0.0;
  return fmt::format("{:.2f} ± {:.2f}", mean, deviation);
}

constexpr const char* kHeader =
    "\n| dataset | model | mIoU | p (fixed classifier) | pp (context-aware) | oracle py | parameters | ms/img |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|\n";

// The run of `model` on `dataset` with `seed`, or null.
const Run* find_run(const std::vector<Run>& runs, const std::string& dataset, const std::string& model, int64_t seed) {
  for (const auto& run : runs) {
    if (run.dataset == dataset && run.model == model && run.seed == seed) return &run;
  }
  return nullptr;
}

// The mean ± std table over the seeds, then each model's gain over the baseline.
void print_summary(const std::vector<Run>& runs, const std::vector<std::string>& datasets,
                   const std::vector<Model>& models, const std::vector<int64_t>& seeds) {
  fmt::print("\nMean ± standard deviation over seeds {}:{}", fmt::join(seeds, ", "), kHeader);
  for (const auto& dataset : datasets) {
    for (const auto& model : models) {
      std::vector<std::vector<double>> values(4);
      std::vector<double> ms;
      int64_t parameters = 0;
      for (int64_t seed : seeds) {
        const Run* run = find_run(runs, dataset, model.label, seed);
        const auto row = columns(*run);
        for (size_t c = 0; c < row.size(); ++c) {
          if (row[c]) values[c].push_back(*row[c]);
        }
        ms.push_back(run->evaluation.ms_per_image);
        parameters = run->parameters;
      }
      fmt::print("| {} | {} | {} | {} | {} | {} | {} | {} |\n", dataset, model.label, mean_std(values[0]),
                 mean_std(values[1]), mean_std(values[2]), mean_std(values[3]), parameters, mean_std(ms));
    }
  }
  for (const auto& dataset : datasets) {
    for (const auto& model : models) {
      if (model.label == "baseline" || !find_run(runs, dataset, "baseline", seeds.front())) continue;
      std::vector<double> gains;
      for (int64_t seed : seeds) {
        gains.push_back(100 * (find_run(runs, dataset, model.label, seed)->evaluation.metrics.mIoU -
                               find_run(runs, dataset, "baseline", seed)->evaluation.metrics.mIoU));
      }
      fmt::print("{}: {} {} mIoU over the baseline (mean ± std)\n", dataset, model.label, mean_std(gains));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(
      "cac-demo: baseline, global-context baseline and + CAC on the bundled context-shift dataset (the README's main "
      "job)");
  std::string work_dir = "work_dirs/demo";
  int64_t iterations = 0, seed = 0;
  std::vector<int64_t> seeds;
  std::vector<std::string> model_options, dataset_options, sets;
  bool reuse = false;
  app.add_option("--work-dir", work_dir, "where data, checkpoints, logs and pictures go");
  app.add_option("--iterations", iterations, "training iterations per model (default: the configs', 800)");
  auto* seed_option = app.add_option("--seed", seed, "random seed of the training runs");
  app.add_option("--seeds", seeds, "several seeds (e.g. 0,1,2): every run per seed, then mean ± std")
      ->delimiter(',')
      ->excludes(seed_option);
  app.add_option("--models", model_options, "a subset of baseline, gc (global context), cac")
      ->delimiter(',')
      ->check(CLI::IsMember({"baseline", "gc", "cac"}));
  app.add_option("--datasets", dataset_options,
                 "a subset of shift (image-wide cast), classwise (class-wise cast), control (no shift)")
      ->delimiter(',')
      ->check(CLI::IsMember({"shift", "classwise", "control"}));
  app.add_option("--set", sets,
                 "override a key of every run's config: key.sub=value (repeatable; e.g. "
                 "data.context_shift.other_ratio=0.5 with its own --work-dir)");
  app.add_flag("--reuse", reuse,
               "do not retrain a run whose work directory holds latest.pt (same settings assumed): evaluate it, "
               "redraw the pictures");
  CLI11_PARSE(app, argc, argv);
  return cac_engine::run_program("cac-demo", [&] {
    const std::filesystem::path dir(work_dir);
    const auto start = std::chrono::steady_clock::now();
    if (seeds.empty()) seeds.push_back(seed);
    const std::vector<Model> models = select(kModels, model_options);
    const std::vector<DatasetVariant> variants = select(kDatasets, dataset_options);
    std::vector<std::string> datasets;
    for (const auto& variant : variants) datasets.push_back(variant.label);
    std::vector<Run> runs;
    for (int64_t s : seeds) {
      const size_t first = runs.size();
      const std::filesystem::path seed_dir = seeds.size() > 1 ? dir / fmt::format("seed_{}", s) : dir;
      for (const auto& variant : variants) {
        const std::string& dataset = variant.label;
        const std::string& suffix = variant.suffix;
        for (const Model& model : models) {
          const std::string file = model.file + suffix;
          std::vector<std::string> overrides{"data.root=" + (dir / ("data/context_shift" + suffix)).string()};
          if (iterations > 0) overrides.push_back("schedule.iterations=" + std::to_string(iterations));
          overrides.insert(overrides.end(), sets.begin(), sets.end());
          Run run{dataset, model.label, s, model.option == "cac",
                  cac_engine::Config::load(cac_engine::configs_dir() / "context_shift" / (file + ".yaml"), overrides)};
          fmt::print("\n== {} | {} ({}, seed {}) ==\n", dataset, model.label, file, s);
          std::fflush(stdout);
          const std::filesystem::path run_dir = seed_dir / file;
          run.work_dir = run_dir;
          if (!reuse || !std::filesystem::exists(run_dir / "latest.pt")) {
            run.training =
                cac_engine::train(run.config, cac_engine::TrainOptions().work_dir(run_dir).overwrite(true).seed(s));
          }
          run.network = cac_engine::build_model(run.config);
          cac_engine::load_weights(*run.network, run_dir / "latest.pt");
          run.evaluation = cac_engine::evaluate(run.network, run.config, cac_engine::EvaluateOptions().branches(true));
          for (const auto& p : run.network->parameters()) run.parameters += p.numel();
          runs.push_back(std::move(run));
        }
      }
      fmt::print("\nSeed {}:{}", s, kHeader);
      for (size_t i = first; i < runs.size(); ++i) {
        const auto row = columns(runs[i]);
        fmt::print("| {} | {} | {} | {} | {} | {} | {} | {:.2f} |\n", runs[i].dataset, runs[i].model, cell(row[0]),
                   cell(row[1]), cell(row[2]), cell(row[3]), runs[i].parameters, runs[i].evaluation.ms_per_image);
      }
      for (const auto& dataset : datasets) {
        const Run* baseline = find_run(runs, dataset, "baseline", s);
        for (const auto& model : models) {
          const Run* run = find_run(runs, dataset, model.label, s);
          if (!baseline || run == baseline) continue;
          fmt::print("{}: {} {:+.2f} mIoU over the baseline\n", dataset, model.label,
                     100 * (run->evaluation.metrics.mIoU - baseline->evaluation.metrics.mIoU));
        }
      }
    }
    if (seeds.size() > 1) print_summary(runs, datasets, models, seeds);
    // One predictions grid per dataset (the first seed's runs): predictions{,_classwise,_control}.png.
    std::vector<std::string> written;
    for (const auto& variant : variants) {
      std::vector<Run*> shown;
      for (auto& run : runs) {
        if (run.dataset == variant.label && run.seed == seeds.front()) shown.push_back(&run);
      }
      written.push_back((dir / ("predictions" + variant.suffix + ".png")).string());
      cac_eval::write_png(written.back(), predictions_grid(shown, 6));
    }
    // Every run's curves when they fit matplotlib's 10 colours, else the first seed's.
    std::vector<cac_eval::TrainingLog> logs;
    for (const auto& run : runs) {
      if (runs.size() > 10 && run.seed != seeds.front()) continue;
      const std::string seed_label = seeds.size() > 1 ? fmt::format(", seed {}", run.seed) : "";
      logs.push_back({run.dataset + ", " + run.model + seed_label, run.work_dir / "log.jsonl"});
    }
    cac_eval::write_png(dir / "curves.png", cac_eval::draw_training_curves(logs));
    written.push_back((dir / "curves.png").string());
    fmt::print("wrote {} ({:.0f} s in all)\n", fmt::join(written, ", "),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  });
}
