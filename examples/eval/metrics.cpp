#include "metrics.hpp"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace cac_eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// a / b as mmseg's float division; b is 0 only with a = 0 (intersect ≤ union, label area), giving NaN.
double ratio(int64_t a, int64_t b) { return b == 0 ? kNaN : double(a) / double(b); }

// np.nanmean: NaN when every entry is NaN.
double nanmean(const std::vector<double>& values) {
  double sum = 0.0;
  int64_t count = 0;
  for (double v : values) {
    if (!std::isnan(v)) {
      sum += v;
      ++count;
    }
  }
  return count == 0 ? kNaN : sum / double(count);
}

std::vector<std::string> names_or_indices(const std::vector<std::string>& class_names, size_t n, const char* who) {
  TORCH_CHECK(class_names.empty() || class_names.size() == n, who, ": expected ", n,
              " class names (one per class) or none but got ", class_names.size());
  if (!class_names.empty()) return class_names;
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

// What mmseg prints for a fraction: `np.round(v * 100, 2)` shown as Python's repr of a float
// (shortest round trip, `71.5`, `100.0`, `nan`).
std::string percent(double v) {
  if (std::isnan(v)) return "nan";
  const double rounded = std::nearbyint(v * 100.0 * 100.0) / 100.0;
  std::string text = fmt::format("{}", rounded);
  if (text.find_first_of(".eni") == std::string::npos) text += ".0";
  return text;
}

// PrettyTable's centring (`_justify(text, width, "c")`): the odd space goes right of odd-length
// text and left of even-length text.
std::string centre(const std::string& text, size_t width) {
  const size_t excess = width - text.size();
  size_t left = excess / 2, right = excess / 2;
  if (excess % 2 == 1) {
    if (text.size() % 2 == 1) {
      ++right;
    } else {
      ++left;
    }
  }
  return std::string(left, ' ') + text + std::string(right, ' ');
}

// A PrettyTable with a header row, centred columns and one space of padding.
std::string pretty_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& h : header) widths.push_back(h.size());
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string rule = "+";
  for (size_t w : widths) rule += std::string(w + 2, '-') + "+";
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out = "|";
    for (size_t c = 0; c < cells.size(); ++c) out += " " + centre(cells[c], widths[c]) + " |";
    return out + "\n";
  };
  std::string out = rule + "\n" + line(header) + rule + "\n";
  for (const auto& row : rows) out += line(row);
  return out + rule;
}

nlohmann::json number_or_null(double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); }

}  // namespace

ConfusionMatrix::ConfusionMatrix(int64_t num_classes, int64_t ignore_index)
    : num_classes_(num_classes), ignore_index_(ignore_index) {
  TORCH_CHECK(num_classes > 0, "cac_eval::ConfusionMatrix: expected num_classes > 0 but got ", num_classes);
  matrix_ = torch::zeros({num_classes, num_classes}, torch::kLong);
}

ConfusionMatrix::ConfusionMatrix(const torch::Tensor& matrix, int64_t ignore_index) : ignore_index_(ignore_index) {
  TORCH_CHECK(matrix.defined() && matrix.dim() == 2 && matrix.size(0) == matrix.size(1) && matrix.size(0) > 0,
              "cac_eval::ConfusionMatrix: expected a matrix of shape [n, n] with n > 0 but got ",
              matrix.defined() ? matrix.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(matrix.scalar_type() == torch::kLong, "cac_eval::ConfusionMatrix: expected an int64 matrix but got ",
              matrix.scalar_type());
  TORCH_CHECK(matrix.numel() == 0 || matrix.min().item<int64_t>() >= 0,
              "cac_eval::ConfusionMatrix: expected non-negative counts but got a minimum of ",
              matrix.min().item<int64_t>());
  num_classes_ = matrix.size(0);
  matrix_ = matrix.to(torch::kCPU).contiguous().clone();
}

void ConfusionMatrix::update(const torch::Tensor& prediction, const torch::Tensor& label) {
  constexpr const char* kWho = "cac_eval::ConfusionMatrix::update";
  TORCH_CHECK(prediction.defined() && label.defined(), kWho, ": expected defined prediction and label tensors");
  TORCH_CHECK(prediction.scalar_type() == torch::kLong, kWho, ": expected an int64 prediction but got ",
              prediction.scalar_type());
  TORCH_CHECK(label.scalar_type() == torch::kLong, kWho, ": expected an int64 label but got ", label.scalar_type());
  TORCH_CHECK(prediction.sizes() == label.sizes(), kWho, ": expected prediction and label of equal shape but got ",
              prediction.sizes(), " and ", label.sizes());
  TORCH_CHECK(prediction.device() == label.device(), kWho,
              ": expected prediction and label on the same device but got ", prediction.device(), " and ",
              label.device());
  const torch::Tensor valid = label != ignore_index_;
  const torch::Tensor l = label.masked_select(valid);
  const torch::Tensor p = prediction.masked_select(valid);
  if (l.numel() == 0) return;
  const int64_t n = num_classes_;
  const int64_t l_min = l.min().item<int64_t>(), l_max = l.max().item<int64_t>();
  TORCH_CHECK(l_min >= 0 && l_max < n, kWho, ": expected labels in [0, ", n, ") or ", ignore_index_,
              " (ignored) but got values in [", l_min, ", ", l_max, "]");
  const int64_t p_min = p.min().item<int64_t>(), p_max = p.max().item<int64_t>();
  TORCH_CHECK(p_min >= 0 && p_max < n, kWho, ": expected predictions in [0, ", n, ") but got values in [", p_min, ", ",
              p_max, "]");
  const torch::Tensor counts = torch::bincount(l * n + p, {}, n * n);
  matrix_.add_(counts.view({n, n}).to(torch::kCPU));
}

void ConfusionMatrix::merge(const ConfusionMatrix& other) {
  TORCH_CHECK(other.num_classes_ == num_classes_, "cac_eval::ConfusionMatrix::merge: expected a matrix of ",
              num_classes_, " classes but got ", other.num_classes_);
  matrix_.add_(other.matrix_);
}

void ConfusionMatrix::reset() { matrix_.zero_(); }

torch::Tensor ConfusionMatrix::matrix() const { return matrix_.clone(); }

Metrics ConfusionMatrix::compute() const {
  const int64_t n = num_classes_;
  const auto m = matrix_.accessor<int64_t, 2>();
  Metrics out;
  out.area_intersect.assign(size_t(n), 0);
  out.area_pred.assign(size_t(n), 0);
  out.area_label.assign(size_t(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    out.area_intersect[size_t(i)] = m[i][i];
    for (int64_t j = 0; j < n; ++j) {
      out.area_label[size_t(i)] += m[i][j];
      out.area_pred[size_t(j)] += m[i][j];
    }
  }
  int64_t total_intersect = 0, total_label = 0;
  for (size_t c = 0; c < size_t(n); ++c) {
    out.area_union.push_back(out.area_pred[c] + out.area_label[c] - out.area_intersect[c]);
    out.iou.push_back(ratio(out.area_intersect[c], out.area_union[c]));
    out.acc.push_back(ratio(out.area_intersect[c], out.area_label[c]));
    total_intersect += out.area_intersect[c];
    total_label += out.area_label[c];
  }
  out.aAcc = ratio(total_intersect, total_label);
  out.mIoU = nanmean(out.iou);
  out.mAcc = nanmean(out.acc);
  return out;
}

std::string format_table(const Metrics& metrics, const std::vector<std::string>& class_names) {
  TORCH_CHECK(metrics.iou.size() == metrics.acc.size(),
              "cac_eval::format_table: expected as many IoU as Acc values but got ", metrics.iou.size(), " and ",
              metrics.acc.size());
  const auto names = names_or_indices(class_names, metrics.iou.size(), "cac_eval::format_table");
  std::vector<std::vector<std::string>> rows;
  for (size_t c = 0; c < names.size(); ++c)
    rows.push_back({names[c], percent(metrics.iou[c]), percent(metrics.acc[c])});
  return "per class results:\n\n" + pretty_table({"Class", "IoU", "Acc"}, rows) + "\nSummary:\n\n" +
         pretty_table({"aAcc", "mIoU", "mAcc"},
                      {{percent(metrics.aAcc), percent(metrics.mIoU), percent(metrics.mAcc)}}) +
         "\n";
}

nlohmann::json to_json(const Metrics& metrics, const std::vector<std::string>& class_names) {
  const size_t n = metrics.iou.size();
  TORCH_CHECK(metrics.acc.size() == n && metrics.area_intersect.size() == n && metrics.area_union.size() == n &&
                  metrics.area_pred.size() == n && metrics.area_label.size() == n,
              "cac_eval::to_json: expected every per-class vector to have ", n, " entries (one per IoU) but got Acc ",
              metrics.acc.size(), ", areas ", metrics.area_intersect.size(), "/", metrics.area_union.size(), "/",
              metrics.area_pred.size(), "/", metrics.area_label.size());
  const auto names = names_or_indices(class_names, n, "cac_eval::to_json");
  nlohmann::json classes = nlohmann::json::array();
  for (size_t c = 0; c < n; ++c) {
    classes.push_back({{"name", names[c]},
                       {"IoU", number_or_null(metrics.iou[c])},
                       {"Acc", number_or_null(metrics.acc[c])},
                       {"area_intersect", metrics.area_intersect[c]},
                       {"area_union", metrics.area_union[c]},
                       {"area_pred", metrics.area_pred[c]},
                       {"area_label", metrics.area_label[c]}});
  }
  return {{"aAcc", number_or_null(metrics.aAcc)},
          {"mIoU", number_or_null(metrics.mIoU)},
          {"mAcc", number_or_null(metrics.mAcc)},
          {"classes", classes}};
}

ConfusionMatrix all_reduce(const ConfusionMatrix& confusion, const AllReduceSum& sum, torch::Device device) {
  std::vector<torch::Tensor> tensors{confusion.matrix().to(device).contiguous()};
  sum(tensors);
  return ConfusionMatrix(tensors[0].cpu(), confusion.ignore_index());
}

}  // namespace cac_eval
