#pragma once
/// \file
/// Training curves drawn from the `log.jsonl` of one or more runs: the one picture of the total
/// loss and the validation mIoU, used by `cac_engine::train` (`curves.png`) and cac-demo.
///
/// ```
/// cac_eval::write_png("curves.png", cac_eval::draw_training_curves({{"total loss", "work_dirs/run/log.jsonl"}}));
/// ```

#include "visualize.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace cac_eval {

/// A run's log: its legend entry and its `log.jsonl` (written by `cac_engine::TrainLog`).
struct TrainingLog {
  /// Legend entry of the run's curves.
  std::string name;
  /// The run's `log.jsonl`: train records `{"iter", "mode": "train", "total", ...}` and val
  /// records `{"iter", "mode": "val", "mIoU", ...}`.
  std::filesystem::path path;
};

/// The curves of a run read from its `log.jsonl`: `loss` (total loss of every train record) and
/// `miou` (mIoU × 100 of every val record), both over iterations, in the file's order. Throws
/// naming the file and line when the file cannot be read or a line is not a JSON record.
struct TrainingCurves {
  /// The total training loss.
  Curve loss;
  /// The validation mIoU in percent.
  Curve miou;
};

/// Reads the curves of `log` (see `TrainingCurves`).
TrainingCurves read_training_curves(const TrainingLog& log);

/// Two line charts stacked: "training loss" over "validation mIoU (%)", one curve per run (in
/// matplotlib's colour cycle), x axis "iteration". An 8-bit BGR image 900 × 1000.
cv::Mat draw_training_curves(const std::vector<TrainingLog>& logs);

}  // namespace cac_eval
