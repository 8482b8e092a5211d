// Training curves read from log.jsonl (the one function behind the trainer's curves.png and
// cac-demo's): train records give the loss curve, val records the mIoU curve in percent.
#include "eval/training_curves.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <fstream>
#include <random>

using Catch::Matchers::Contains;

namespace {

std::filesystem::path write_log(const std::string& name, const std::string& text) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("cac_eval_curves_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name) << text;
  return dir / name;
}

}  // namespace

TEST_CASE("training curves: read from log.jsonl and drawn for several runs", "[training_curves]") {
  const auto log = write_log("log.jsonl",
                             "{\"iter\": 2, \"mode\": \"train\", \"total\": 1.5, \"lr\": 0.01}\n"
                             "{\"iter\": 4, \"mode\": \"train\", \"total\": 0.5, \"lr\": 0.01}\n"
                             "{\"iter\": 4, \"mode\": \"val\", \"mIoU\": 0.25, \"mAcc\": 0.5, \"aAcc\": 0.75}\n"
                             "\n");
  const cac_eval::TrainingCurves curves = cac_eval::read_training_curves({"run", log});
  CHECK(curves.loss.name == "run");
  CHECK(curves.loss.x == std::vector<double>{2, 4});
  CHECK(curves.loss.y == std::vector<double>{1.5, 0.5});
  CHECK(curves.miou.x == std::vector<double>{4});
  CHECK(curves.miou.y == std::vector<double>{25.0});

  const cv::Mat image = cac_eval::draw_training_curves({{"a", log}, {"b", log}});
  CHECK(image.size() == cv::Size(900, 1000));  // loss over mIoU, 900 × 500 each
  cv::Mat blue;
  cv::inRange(image, cac_eval::curve_color(0), cac_eval::curve_color(0), blue);
  CHECK(cv::countNonZero(blue) > 20);

  const auto bad = write_log("bad.jsonl", "{\"iter\": 1, \"mode\": \"train\", \"total\": 1}\nnot json\n");
  CHECK_THROWS_WITH(cac_eval::read_training_curves({"bad", bad}),
                    Contains("expected a JSON record with 'iter' and 'mode' on line 2 of " + bad.string()));
  CHECK_THROWS_WITH(cac_eval::read_training_curves({"none", bad.parent_path() / "missing.jsonl"}),
                    Contains("expected a log.jsonl at"));
  std::filesystem::remove_all(log.parent_path());
  std::filesystem::remove_all(bad.parent_path());
}
