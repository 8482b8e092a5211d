// cac-train CONFIG [--work-dir DIR] [--resume] [--load-from CKPT] [--set key=value ...]
//                  [--device cpu|cuda|cuda:N] [--seed N] [--deterministic]
// Trains the model of CONFIG (docs/training.md), evaluating it on the way, and prints the final
// metrics table.
#include "engine/cli.hpp"
#include "engine/trainer.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

int main(int argc, char** argv) {
  CLI::App app("cac-train: train a segmentation model of the cac model zoo from a config");
  std::string config_file, work_dir, load_from, device = "cpu";
  std::vector<std::string> overrides;
  bool resume = false, deterministic = false;
  std::optional<int64_t> seed;
  int64_t stop_at = 0;
  app.add_option("config", config_file, "config file (YAML)")->required()->check(CLI::ExistingFile);
  app.add_option("--work-dir", work_dir, "work directory (default: work_dirs/<config name>)");
  app.add_flag("--resume", resume, "continue from WORK_DIR/latest.pt");
  app.add_option("--load-from", load_from, "initial weights (a cac-train checkpoint)");
  app.add_option("--set", overrides, "override a config key: key.sub=value (repeatable)");
  app.add_option("--device", device, "cpu, cuda or cuda:N");
  app.add_option("--seed", seed, "random seed (overrides runtime.seed)");
  app.add_flag("--deterministic", deterministic, "use deterministic algorithms only");
  app.add_option("--stop-at", stop_at, "stop after this iteration (checkpointed, resumable)");
  CLI11_PARSE(app, argc, argv);
  return cac_engine::run_program("cac-train", [&] {
    const auto config = cac_engine::Config::load(config_file, overrides);
    if (work_dir.empty()) work_dir = "work_dirs/" + std::filesystem::path(config_file).stem().string();
    const auto result = cac_engine::train(config, cac_engine::TrainOptions()
                                                      .work_dir(work_dir)
                                                      .resume(resume)
                                                      .load_from(load_from)
                                                      .device(cac_engine::parse_device(device))
                                                      .seed(seed)
                                                      .deterministic(deterministic)
                                                      .stop_at(stop_at));
    if (!result.evaluations.empty()) {
      const auto info = cac_engine::dataset_info(config);
      fmt::print("{}\nfinal (iteration {}): mIoU {:.2f}\n", cac_eval::format_table(result.final, info.classes),
                 result.iteration, 100 * result.final.mIoU);
    }
    fmt::print("work dir: {}\n", work_dir);
  });
}
