#include "train_log.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace cac_engine {

namespace {

using Clock = std::chrono::steady_clock;

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return fmt::format("{:02d}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
}

}  // namespace

int64_t truncate_log(const std::filesystem::path& jsonl, int64_t iteration) {
  std::ifstream in(jsonl);
  if (!in.good()) return 0;
  std::string kept;
  int64_t dropped = 0;
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool after = record.is_object() && record.contains("iter") && record["iter"].is_number_integer() &&
                       record["iter"].get<int64_t>() > iteration;
    if (after) {
      ++dropped;
    } else {
      kept += line + "\n";
    }
  }
  if (dropped > 0) cac_io::write_file(jsonl, kept);
  return dropped;
}

TrainLog::TrainLog(TrainLogOptions options, ProcessGroup& group)
    : options_(std::move(options)), group_(group), first_(options_.resume_from().value_or(0)), started_(Clock::now()) {
  if (options_.path().empty()) return;
  if (options_.resume_from()) truncate_log(options_.path(), *options_.resume_from());
  file_.emplace(options_.path(), /*truncate=*/!options_.resume_from());
}

void TrainLog::write(const nlohmann::json& record) {
  if (file_) file_->append(record.dump() + "\n");
}

void TrainLog::add(const std::map<std::string, torch::Tensor>& losses, double data_seconds, double step_seconds) {
  data_time_ += data_seconds;
  step_time_ += step_seconds;
  for (const auto& [name, value] : losses) sums_[name] += value.item<double>();
  ++count_;
}

nlohmann::json TrainLog::flush(int64_t iteration, double lr, int64_t epoch, int64_t images_per_step) {
  // Means over the interval and the ranks (one all-reduce; the keys are the same on every rank).
  const auto count = static_cast<double>(std::max<int64_t>(count_, 1));
  std::vector<double> values;
  for (const auto& [name, sum] : sums_) values.push_back(sum / count);
  values.push_back(data_time_ / count);
  values.push_back(step_time_ / count);
  std::vector<torch::Tensor> reduced{torch::tensor(values, torch::kDouble)};
  group_.all_reduce_sum(reduced);
  const auto world = static_cast<double>(group_.size());
  const auto mean = [&](size_t i) { return reduced[0][static_cast<int64_t>(i)].item<double>() / world; };
  nlohmann::json record{{"iter", iteration}, {"mode", "train"}, {"lr", lr}, {"epoch", epoch}};
  std::string terms;
  size_t i = 0;
  for (const auto& [name, sum] : sums_) {
    record[name] = mean(i++);
    if (name != "total") terms += fmt::format(" {} {:.4f}", name, record[name].get<double>());
  }
  const double data_seconds = mean(i), step_seconds = mean(i + 1);
  const double per_iteration = data_seconds + step_seconds;
  record["data_time"] = data_seconds;
  record["time"] = per_iteration;
  step_times_.push_back(per_iteration);
  const double loss = record.contains("total") ? record["total"].get<double>() : 0.0;
  losses_.emplace_back(iteration, loss);
  write(record);
  if (options_.verbose()) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
    const double eta = iteration > first_ ? elapsed / static_cast<double>(iteration - first_) *
                                                static_cast<double>(std::max<int64_t>(options_.total() - iteration, 0))
                                          : 0.0;
    fmt::print("iter {}/{} | loss {:.4f} |{} | lr {:.3e} | data {:.3f}s step {:.3f}s | {:.1f} img/s | ETA {}\n",
               iteration, options_.total(), loss, terms, lr, data_seconds, step_seconds,
               static_cast<double>(images_per_step) / per_iteration, duration(eta));
    std::fflush(stdout);
  }
  sums_.clear();
  data_time_ = step_time_ = 0.0;
  count_ = 0;
  return record;
}

void TrainLog::evaluation(int64_t iteration, const cac_eval::Metrics& metrics, int64_t images, double ms_per_image) {
  write({{"iter", iteration}, {"mode", "val"}, {"mIoU", metrics.mIoU}, {"mAcc", metrics.mAcc}, {"aAcc", metrics.aAcc}});
  if (!options_.verbose()) return;
  fmt::print("iter {}/{} | val mIoU {:.2f} mAcc {:.2f} aAcc {:.2f} ({} images, {:.1f} ms/img)\n", iteration,
             options_.total(), 100 * metrics.mIoU, 100 * metrics.mAcc, 100 * metrics.aAcc, images, ms_per_image);
  std::fflush(stdout);
}

double TrainLog::seconds_per_iteration() const {
  if (step_times_.empty()) return 0.0;
  std::vector<double> values = step_times_;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2), values.end());
  return values[values.size() / 2];
}

}  // namespace cac_engine
