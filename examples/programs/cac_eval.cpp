// cac-eval CONFIG CHECKPOINT [--checkpoint-source mmseg|cac|...] [--mode whole|slide] [--aug-test]
//          [--show-dir DIR] [--opacity 0.5] [--out results.json] [--branches] [--set key=value ...]
//          [--device ...] [--nproc N]
// Evaluates any checkpoint (cac-train's, or an mmseg / official CAC .pth, loaded strictly) on the
// config's validation split: per-class table, mIoU/mAcc/aAcc,
// optionally palette masks and overlays, and a JSON file of every figure. With `--nproc N` (or
// under torchrun/SLURM) each process evaluates its share of the images and rank 0 reports the
// metrics of the whole split.
#include "engine/cli.hpp"
#include "engine/trainer.hpp"
#include "engine/weights.hpp"
#include "eval/visualize.hpp"
#include "io/atomic_file.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  CLI::App app("cac-eval: evaluate a checkpoint on the validation split of a config");
  std::string config_file, checkpoint, checkpoint_source, mode, show_dir, out, device = "cpu";
  std::vector<std::string> overrides;
  bool aug_test = false, branches = false;
  double opacity = 0.5;
  int64_t nproc = 1;
  app.add_option("config", config_file, "config file (YAML)")->required()->check(CLI::ExistingFile);
  app.add_option("checkpoint", checkpoint,
                 "checkpoint: cac-train's (latest.pt, best.pt, iter_N.pt) or a PyTorch .pth (zip or legacy torch.save)")
      ->required()
      ->check(CLI::ExistingFile);
  cac_engine::add_checkpoint_source_option(app, checkpoint_source);
  app.add_option("--mode", mode, "whole or slide (default: evaluation.mode)")->check(CLI::IsMember({"whole", "slide"}));
  app.add_flag("--aug-test", aug_test, "multi-scale (0.5 ... 1.75) and flip test");
  app.add_option("--show-dir", show_dir, "write palette masks and overlays here");
  app.add_option("--opacity", opacity, "overlay opacity")->check(CLI::Range(0.0, 1.0));
  app.add_option("--out", out, "write the metrics as JSON here");
  app.add_flag("--branches", branches, "also score p, pp and the oracle py of a CAC model");
  app.add_option("--set", overrides, "override a config key: key.sub=value (repeatable)");
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  app.add_option("--nproc", nproc, "worker processes to start on this machine, each evaluating a share")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  CLI11_PARSE(app, argc, argv);
  cac_engine::DistributedEnv env;
  if (const auto code = cac_engine::launch_workers_if_asked("cac-eval", nproc, argc, argv, env)) return *code;
  return cac_engine::run_program("cac-eval", [&] {
    const auto config = cac_engine::Config::load(config_file, overrides);
    auto target = cac_engine::parse_device(device);
    const auto group = cac_engine::join_environment_group(target);
    auto model = cac_engine::build_model(config);
    const std::string loaded = cac_engine::load_checkpoint(*model, checkpoint, checkpoint_source, /*strict=*/true);
    if (group->rank() == 0) fmt::print("{}\n", loaded);
    model->to(target);
    auto inference = cac_engine::inference_options(config);
    if (!mode.empty()) inference.mode(mode);
    if (aug_test) inference.scales({0.5, 0.75, 1.0, 1.25, 1.5, 1.75}).flip(true);
    const auto info = cac_engine::dataset_info(config);
    auto options = cac_engine::EvaluateOptions().device(target).inference(inference).branches(branches).group(group);
    if (!show_dir.empty()) {
      options.on_prediction([&](const cac_engine::Prediction& p) {
        cac_eval::write_prediction(show_dir, p.name, p.dataset.load(static_cast<size_t>(p.index)).image, p.mask,
                                   info.palette, opacity);
      });
    }
    const auto result = cac_engine::evaluate(model, config, options);
    if (group->rank() != 0) return;
    fmt::print("{}\n{} images, {:.1f} ms/img: mIoU {:.2f} mAcc {:.2f} aAcc {:.2f}\n",
               cac_eval::format_table(result.metrics, info.classes), result.images, result.ms_per_image,
               100 * result.metrics.mIoU, 100 * result.metrics.mAcc, 100 * result.metrics.aAcc);
    nlohmann::json json = cac_eval::to_json(result.metrics, info.classes);
    for (const auto& [name, metrics] : result.branches) {
      fmt::print("branch {}: mIoU {:.2f}\n", name, 100 * metrics.mIoU);
      json["branches"][name] = cac_eval::to_json(metrics, info.classes);
    }
    if (!out.empty()) {
      cac_io::write_file(out, json.dump(2) + "\n");
      fmt::print("wrote {}\n", out);
    }
  });
}
