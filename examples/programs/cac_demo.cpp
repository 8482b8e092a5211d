// cac-demo: the README's main job. Generates the bundled context-shift dataset (and its control
// without the per-image shift), trains the baseline and the + CAC variant of the same small model
// with the same schedule on each, evaluates them (p, pp and the oracle branch py), and prints the
// comparison table; writes a predictions grid and the training curves as PNG.
//
// Usage: cac-demo [--work-dir work_dirs/demo] [--iterations 800] [--seed 0] [--no-control]
#include "engine/cli.hpp"
#include "engine/trainer.hpp"

#include "data/transforms.hpp"
#include "eval/inference.hpp"
#include "eval/training_curves.hpp"
#include "eval/visualize.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

namespace {

struct Run {
  std::string dataset, model;
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

std::string percent(const std::map<std::string, cac_eval::Metrics>& branches, const std::string& name) {
  const auto it = branches.find(name);
  return it == branches.end() ? "-" : fmt::format("{:.2f}", 100 * it->second.mIoU);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("cac-demo: baseline vs + CAC on the bundled context-shift dataset (the README's main job)");
  std::string work_dir = "work_dirs/demo";
  int64_t iterations = 0, seed = 0;
  bool no_control = false;
  app.add_option("--work-dir", work_dir, "where data, checkpoints, logs and pictures go");
  app.add_option("--iterations", iterations, "training iterations per model (default: the configs', 800)");
  app.add_option("--seed", seed, "random seed of the training runs");
  app.add_flag("--no-control", no_control, "skip the control dataset (no per-image shift)");
  CLI11_PARSE(app, argc, argv);
  return cac_engine::run_program("cac-demo", [&] {
    const std::filesystem::path dir(work_dir);
    const auto start = std::chrono::steady_clock::now();
    std::vector<Run> runs;
    for (const std::string dataset : {"context shift", "control"}) {
      if (dataset == "control" && no_control) continue;
      const std::string suffix = dataset == "control" ? "_control" : "";
      for (const std::string model : {"baseline", "+ CAC"}) {
        const std::string file = std::string(model == "baseline" ? "fcn_tiny_baseline" : "fcn_tiny_cac") + suffix;
        std::vector<std::string> overrides{"data.root=" + (dir / ("data/context_shift" + suffix)).string()};
        if (iterations > 0) overrides.push_back("schedule.iterations=" + std::to_string(iterations));
        Run run{dataset, model,
                cac_engine::Config::load(cac_engine::configs_dir() / "context_shift" / (file + ".yaml"), overrides)};
        fmt::print("\n== {} | {} ({}) ==\n", dataset, model, file);
        std::fflush(stdout);
        const std::filesystem::path run_dir = dir / file;
        run.work_dir = run_dir;
        run.training =
            cac_engine::train(run.config, cac_engine::TrainOptions().work_dir(run_dir).overwrite(true).seed(seed));
        run.network = cac_engine::build_model(run.config);
        cac_engine::load_weights(*run.network, run_dir / "latest.pt");
        run.evaluation = cac_engine::evaluate(run.network, run.config, cac_engine::EvaluateOptions().branches(true));
        for (const auto& p : run.network->parameters()) run.parameters += p.numel();
        runs.push_back(std::move(run));
      }
    }
    fmt::print(
        "\n| dataset | model | mIoU | p (fixed classifier) | pp (context-aware) | oracle py | parameters | ms/img |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& run : runs) {
      fmt::print("| {} | {} | {:.2f} | {} | {} | {} | {} | {:.2f} |\n", run.dataset, run.model,
                 100 * run.evaluation.metrics.mIoU,
                 run.model == "baseline" ? fmt::format("{:.2f}", 100 * run.evaluation.metrics.mIoU)
                                         : percent(run.evaluation.branches, "logits"),
                 percent(run.evaluation.branches, "context"), percent(run.evaluation.branches, "oracle"),
                 run.parameters, run.evaluation.ms_per_image);
    }
    for (size_t i = 0; i + 1 < runs.size(); i += 2) {
      fmt::print("{}: + CAC {:+.2f} mIoU over the baseline\n", runs[i].dataset,
                 100 * (runs[i + 1].evaluation.metrics.mIoU - runs[i].evaluation.metrics.mIoU));
    }
    cac_eval::write_png(dir / "predictions.png", predictions_grid({&runs[0], &runs[1]}, 6));
    std::vector<cac_eval::TrainingLog> logs;
    for (const auto& run : runs) logs.push_back({run.dataset + ", " + run.model, run.work_dir / "log.jsonl"});
    cac_eval::write_png(dir / "curves.png", cac_eval::draw_training_curves(logs));
    fmt::print("wrote {} and {} ({:.0f} s in all)\n", (dir / "predictions.png").string(), (dir / "curves.png").string(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  });
}
