// Configs: _base_ inheritance (order, deep merge, _delete_), --set overrides, typed access, and
// errors that name the file, the key and what was expected.
#include "engine/builders.hpp"
#include "engine/config.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <fstream>

using cac_engine::Config;
namespace fs = std::filesystem;

namespace {

// A fresh directory with the given files (path → YAML text).
fs::path write_files(const std::string& name, const std::map<std::string, std::string>& files) {
  const fs::path dir = fs::temp_directory_path() / ("cac_config_test_" + name);
  fs::remove_all(dir);
  for (const auto& [path, text] : files) {
    fs::create_directories((dir / path).parent_path());
    std::ofstream(dir / path) << text;
  }
  return dir;
}

}  // namespace

TEST_CASE("config: _base_ chains merge in order, children win, _delete_ replaces", "[config]") {
  const fs::path dir = write_files("inherit", {
      {"_base_/a.yaml", "optimizer: {type: sgd, lr: 0.01, momentum: 0.9}\ndata: {batch_size: 4, train_pipeline: {crop_size: [512, 512], flip_prob: 0.5}}\n"},
      {"_base_/b.yaml", "optimizer: {lr: 0.02}\nschedule: {iterations: 100}\n"},
      {"models/c.yaml", "_base_: [../_base_/a.yaml, ../_base_/b.yaml]\ndata: {train_pipeline: {_delete_: true, crop_size: [64, 64]}}\n"},
      {"d.yaml", "_base_: models/c.yaml\noptimizer: {momentum: 0.5}\n"},
  });
  const Config config = Config::load(dir / "d.yaml");
  CHECK(config.get<std::string>("optimizer.type") == "sgd");
  CHECK(config.get<double>("optimizer.lr") == 0.02);           // b over a
  CHECK(config.get<double>("optimizer.momentum") == 0.5);      // d over a
  CHECK(config.get<int64_t>("schedule.iterations") == 100);
  CHECK(config.get<int64_t>("data.batch_size") == 4);
  CHECK(config.get<std::vector<int64_t>>("data.train_pipeline.crop_size") == std::vector<int64_t>{64, 64});
  CHECK_FALSE(config.has("data.train_pipeline.flip_prob"));   // replaced, not merged
  CHECK_FALSE(config.has("data.train_pipeline._delete_"));
  CHECK(config.origin("optimizer.lr") == fs::weakly_canonical(dir / "_base_/b.yaml").string());
  CHECK(config.origin("optimizer.momentum") == fs::weakly_canonical(dir / "d.yaml").string());
  CHECK(config.get<double>("optimizer.weight_decay", 5e-4) == 5e-4);
  // The dump is a config that loads back to the same values.
  const Config again = Config::parse(config.dump());
  CHECK(again.get<double>("optimizer.lr") == 0.02);
  CHECK(again.get<std::vector<int64_t>>("data.train_pipeline.crop_size") == std::vector<int64_t>{64, 64});
}

TEST_CASE("config: --set overrides any key, parsed as YAML", "[config]") {
  Config config = Config::parse("optimizer: {lr: 0.01}\nmodel: {name: fcn_tiny}\n", "inline");
  config.set("optimizer.lr=0.5");
  config.set("data.train_pipeline.crop_size=[32, 48]");
  config.set("model.cac=true");
  config.set("model.name=fcn_mobilenetv2");
  CHECK(config.get<double>("optimizer.lr") == 0.5);
  CHECK(config.get<std::vector<int64_t>>("data.train_pipeline.crop_size") == std::vector<int64_t>{32, 48});
  CHECK(config.get<bool>("model.cac"));
  CHECK(config.get<std::string>("model.name") == "fcn_mobilenetv2");
  CHECK(config.origin("optimizer.lr") == "--set");
  CHECK_THROWS_WITH(config.set("no_equals_sign"),
                    Catch::Contains("config error in --set: expected key=value but got 'no_equals_sign'"));
  CHECK_THROWS_WITH(config.set("optimizer..lr=1"), Catch::Contains("expected a dotted key like optimizer.lr"));
  CHECK_THROWS_WITH(config.set("optimizer.lr.x=1"),
                    Catch::Contains("key 'optimizer.lr.x': expected 'lr' to be a mapping but got '0.5'"));
}

TEST_CASE("config: errors name the file, the key, the expectation and the value", "[config]") {
  const fs::path dir = write_files("errors", {
      {"bad_type.yaml", "optimizer: {lr: fast}\n"},
      {"syntax.yaml", "optimizer: {lr: [1, 2\n"},
      {"cycle_a.yaml", "_base_: cycle_b.yaml\n"},
      {"cycle_b.yaml", "_base_: cycle_a.yaml\n"},
      {"missing_base.yaml", "_base_: nowhere.yaml\n"},
      {"list.yaml", "- 1\n- 2\n"},
      {"unknown.yaml", "optimizer: {type: sgd, lr: 0.01, momentun: 0.9}\n"},
  });
  const std::string bad = fs::weakly_canonical(dir / "bad_type.yaml").string();
  CHECK_THROWS_WITH(Config::load(dir / "bad_type.yaml").get<double>("optimizer.lr"),
                    Catch::Contains("config error in " + bad + ": key 'optimizer.lr': expected a number but got 'fast'"));
  CHECK_THROWS_WITH(Config::load(dir / "bad_type.yaml").get<int64_t>("schedule.iterations"),
                    Catch::Contains("key 'schedule.iterations': expected an integer but it is missing"));
  CHECK_THROWS_WITH(Config::load(dir / "syntax.yaml"), Catch::Contains("syntax.yaml: invalid YAML at line"));
  CHECK_THROWS_WITH(Config::load(dir / "cycle_a.yaml"), Catch::Contains("expected an acyclic _base_ chain"));
  CHECK_THROWS_WITH(Config::load(dir / "missing_base.yaml"),
                    Catch::Contains("expected a config file at") && Catch::Contains("nowhere.yaml but it does not exist"));
  CHECK_THROWS_WITH(Config::load(dir / "list.yaml"), Catch::Contains("expected a mapping at the top level"));
  const Config unknown = Config::load(dir / "unknown.yaml");
  CHECK_THROWS_WITH(cac_engine::build_optimizer(unknown, *torch::nn::Linear(2, 2)),
                    Catch::Contains("key 'optimizer.momentun': unknown key; expected one of type, lr, momentum"));
  CHECK_THROWS_WITH(Config::parse("model: {name: pspnet, num_classes: 3}").get_choice("model.name", {"fcn_tiny"}),
                    Catch::Contains("key 'model.name': expected one of fcn_tiny but got 'pspnet'"));
}

TEST_CASE("config: learning-rate schedules follow mmcv's poly and linear warm-up", "[config]") {
  const Config poly = Config::parse("optimizer: {lr: 0.01}\nschedule: {iterations: 100, power: 0.9, min_lr: 0.0001}");
  const cac_engine::LrSchedule schedule(poly);
  CHECK(schedule.at(0) == Approx(0.01));
  CHECK(schedule.at(50) == Approx((0.01 - 1e-4) * std::pow(0.5, 0.9) + 1e-4));
  CHECK(schedule.at(100) == Approx(1e-4));
  const Config warm = Config::parse(
      "optimizer: {lr: 0.00006}\nschedule: {iterations: 1000, power: 1.0, min_lr: 0.0, warmup_iterations: 10, warmup_ratio: 0.000001}");
  const cac_engine::LrSchedule swin(warm);
  CHECK(swin.at(0) == Approx(6e-5 * 1e-6));
  const double regular = 6e-5 * (1 - 5.0 / 1000);
  CHECK(swin.at(5) == Approx(regular * (1 - (1 - 5.0 / 10) * (1 - 1e-6))));
  CHECK(swin.at(10) == Approx(6e-5 * (1 - 10.0 / 1000)));
}

TEST_CASE("config: every shipped config loads and builds its model", "[config]") {
  // Every file under configs/ (not _base_) names a zoo model and a known dataset type.
  int64_t count = 0;
  for (const auto& entry : fs::recursive_directory_iterator(CAC_CONFIGS_DIR)) {
    if (entry.path().extension() != ".yaml" || entry.path().string().find("_base_") != std::string::npos) continue;
    INFO(entry.path().string());
    const Config config = Config::load(entry.path());
    CHECK_NOTHROW(config.get_choice("model.name", cac_models::model_names()));
    CHECK_NOTHROW(cac_engine::dataset_options(config, "train"));
    CHECK_NOTHROW(cac_engine::train_pipeline(config));
    CHECK_NOTHROW(cac_engine::LrSchedule(config));
    ++count;
  }
  CHECK(count >= 4);
}
