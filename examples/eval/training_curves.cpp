#include "training_curves.hpp"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <fstream>

namespace cac_eval {

TrainingCurves read_training_curves(const TrainingLog& log) {
  std::ifstream in(log.path);
  TORCH_CHECK(in.good(), "cac_eval::read_training_curves: expected a log.jsonl at ", log.path.string(),
              " but could not open it");
  TrainingCurves curves{{log.name, {}, {}, std::nullopt}, {log.name, {}, {}, std::nullopt}};
  int64_t number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    if (line.empty()) continue;
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    TORCH_CHECK(record.is_object() && record.contains("iter") && record.contains("mode"),
                "cac_eval::read_training_curves: expected a JSON record with 'iter' and 'mode' on line ", number,
                " of ", log.path.string(), " but got: ", line.substr(0, 80));
    const auto iteration = static_cast<double>(record.at("iter").get<int64_t>());
    if (record.at("mode") == "train" && record.contains("total")) {
      curves.loss.x.push_back(iteration);
      curves.loss.y.push_back(record.at("total").get<double>());
    } else if (record.at("mode") == "val" && record.contains("mIoU")) {
      curves.miou.x.push_back(iteration);
      curves.miou.y.push_back(record.at("mIoU").is_number() ? 100.0 * record.at("mIoU").get<double>() : NAN);
    }
  }
  return curves;
}

cv::Mat draw_training_curves(const std::vector<TrainingLog>& logs) {
  std::vector<Curve> loss, miou;
  for (const TrainingLog& log : logs) {
    TrainingCurves curves = read_training_curves(log);
    loss.push_back(std::move(curves.loss));
    miou.push_back(std::move(curves.miou));
  }
  const cv::Mat top = draw_curves(loss, PlotOptions().title("training loss (total)").x_label("iteration"));
  const cv::Mat bottom = draw_curves(miou, PlotOptions().title("validation mIoU (%)").x_label("iteration"));
  cv::Mat both;
  cv::vconcat(top, bottom, both);
  return both;
}

}  // namespace cac_eval
