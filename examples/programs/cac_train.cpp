// cac-train CONFIG [--work-dir DIR] [--resume | --overwrite] [--load-from CKPT] [--set key=value ...]
//                  [--device cpu|cuda|cuda:N] [--seed N] [--deterministic] [--stop-at N]
//                  [--nproc N] [--timeout SECONDS]
// Trains the model of CONFIG (docs/training.md), evaluating it on the way, and prints the final
// metrics table. `--nproc N` starts N data-parallel worker processes on this machine (as
// `torchrun --standalone --nproc-per-node N`); under torchrun or SLURM every process joins the
// job the environment describes (docs/distributed.md).
#include "engine/cli.hpp"
#include "engine/trainer.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

int main(int argc, char** argv) {
  CLI::App app("cac-train: train a segmentation model of the cac model zoo from a config");
  std::string config_file, work_dir, load_from, device = "cpu";
  std::vector<std::string> overrides;
  bool resume = false, overwrite = false, deterministic = false;
  std::optional<int64_t> seed;
  int64_t stop_at = 0, nproc = 1;
  double timeout = 1800;
  app.add_option("config", config_file, "config file (YAML)")->required()->check(CLI::ExistingFile);
  app.add_option("--work-dir", work_dir, "work directory (default: work_dirs/<config name>)");
  auto* resume_flag = app.add_flag("--resume", resume, "continue from WORK_DIR/latest.pt");
  app.add_flag("--overwrite", overwrite,
               "replace the run WORK_DIR already holds (without it, such a work dir is refused)")
      ->excludes(resume_flag);
  app.add_option("--load-from", load_from, "initial weights (a cac-train checkpoint)");
  app.add_option("--set", overrides, "override a config key: key.sub=value (repeatable)");
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  app.add_option("--seed", seed, "random seed (overrides runtime.seed)");
  app.add_flag("--deterministic", deterministic, "use deterministic algorithms only");
  app.add_option("--stop-at", stop_at, "stop after this iteration (checkpointed, resumable)");
  app.add_option("--nproc", nproc, "data-parallel worker processes to start on this machine")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  app.add_option("--timeout", timeout, "seconds before a dead or stuck peer process fails the job (default 1800)")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  cac_engine::DistributedEnv env;
  if (const auto code = cac_engine::launch_workers_if_asked("cac-train", nproc, argc, argv, env)) return *code;
  return cac_engine::run_program("cac-train", [&] {
    const auto config = cac_engine::Config::load(config_file, overrides);
    if (work_dir.empty()) work_dir = "work_dirs/" + std::filesystem::path(config_file).stem().string();
    const auto result =
        cac_engine::train(config, cac_engine::TrainOptions()
                                      .work_dir(work_dir)
                                      .resume(resume)
                                      .overwrite(overwrite)
                                      .load_from(load_from)
                                      .device(cac_engine::parse_device(device))
                                      .seed(seed)
                                      .deterministic(deterministic)
                                      .stop_at(stop_at)
                                      .timeout(std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000))));
    if (env.rank != 0) return;
    if (!result.evaluations.empty()) {
      const auto info = cac_engine::dataset_info(config);
      fmt::print("{}\nfinal (iteration {}): mIoU {:.2f}\n", cac_eval::format_table(result.final, info.classes),
                 result.iteration, 100 * result.final.mIoU);
    }
    fmt::print("work dir: {}\n", work_dir);
  });
}
