#pragma once
/// \file
/// The training log (mmcv's `TextLoggerHook` + `JsonLoggerHook`): every `runtime.log_interval`
/// iterations one console line and one `log.jsonl` record with the loss terms, the learning rate
/// and the timings averaged over the interval and over the ranks (one all-reduce); one line and one
/// record per evaluation. Records are appended with `cac_io::AppendFile`, one checked write each.
///
/// ```
/// cac_engine::TrainLog log(cac_engine::TrainLogOptions().path(dir / "log.jsonl").total(iterations), *group);
/// log.add(losses, data_seconds, step_seconds);
/// if (done % interval == 0) log.flush(done, lr, epoch, images_per_step);
/// ```

#include "distributed.hpp"

#include "eval/metrics.hpp"
#include "io/atomic_file.hpp"

#include <nlohmann/json.hpp>
#include <torch/arg.h>
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cac_engine {

/// Options of `TrainLog`.
struct TrainLogOptions {
  /// The JSONL file (`log.jsonl`); empty: no file (the ranks other than 0).
  /// Default: ""
  TORCH_ARG(std::filesystem::path, path) = "";
  /// Print the progress lines.
  /// Default: true
  TORCH_ARG(bool, verbose) = true;
  /// The schedule's iterations (printed as `iter done/total`).
  /// Default: 0
  TORCH_ARG(int64_t, total) = 0;
  /// The iteration the run starts from: on resume, the records after it (written by the
  /// interrupted run past its last checkpoint) are dropped, so no iteration is logged twice;
  /// otherwise the file is started afresh.
  /// Default: std::nullopt (a fresh run)
  TORCH_ARG(std::optional<int64_t>, resume_from) = std::nullopt;
};

/// The console and JSONL log of one training run. Every rank calls `add` and `flush` alike
/// (`flush` all-reduces); only a log with a path writes.
class TrainLog {
 public:
  /// Opens the log; `group` averages the logged values over the ranks.
  TrainLog(TrainLogOptions options, ProcessGroup& group);

  /// Adds one iteration: its loss terms (scalars; the same names on every rank) and the seconds
  /// spent waiting for data and in the step.
  void add(const std::map<std::string, torch::Tensor>& losses, double data_seconds, double step_seconds);

  /// Ends an interval after iteration `iteration`: the means over its iterations and the ranks
  /// become a record `{"iter", "mode": "train", "lr", "epoch", <terms>, "data_time", "time"}` and
  /// a console line (with `images_per_step` over all ranks for the throughput). Returns the record.
  nlohmann::json flush(int64_t iteration, double lr, int64_t epoch, int64_t images_per_step);

  /// Logs an evaluation after `iteration`: `{"iter", "mode": "val", "mIoU", "mAcc", "aAcc"}` and a
  /// console line with the images and ms per image.
  void evaluation(int64_t iteration, const cac_eval::Metrics& metrics, int64_t images, double ms_per_image);

  /// (iteration, mean total loss) of every flushed interval.
  const std::vector<std::pair<int64_t, double>>& losses() const { return losses_; }
  /// Median seconds per iteration over the flushed intervals (0 before any).
  double seconds_per_iteration() const;

 private:
  void write(const nlohmann::json& record);
  TrainLogOptions options_;
  ProcessGroup& group_;
  std::optional<cac_io::AppendFile> file_;
  std::map<std::string, double> sums_;
  double data_time_ = 0.0;
  double step_time_ = 0.0;
  int64_t count_ = 0;
  int64_t first_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::vector<std::pair<int64_t, double>> losses_;
  std::vector<double> step_times_;
};

/// Keeps the records of `jsonl` up to iteration `iteration` (replacing the file atomically);
/// returns the number dropped. A missing file is left missing.
int64_t truncate_log(const std::filesystem::path& jsonl, int64_t iteration);

}  // namespace cac_engine
