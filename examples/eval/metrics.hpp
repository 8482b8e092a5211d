#pragma once
/// \file
/// Segmentation metrics from a confusion matrix: aAcc, mIoU, mAcc and per-class IoU/Acc exactly as
/// mmsegmentation 0.x's `eval_metrics` (`mmseg/core/evaluation/metrics.py`), with int64 counts.

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cac_eval {

/// The metrics of a confusion matrix (mmseg 0.x `total_area_to_metrics` with `['mIoU']`).
///
/// Every value is a fraction in [0, 1] (mmseg's log prints them ×100, rounded to two decimals).
/// A class whose union is empty (absent from both prediction and label) has NaN IoU and Acc; a
/// class absent from the label but predicted has IoU 0 and NaN Acc. The means skip NaN entries
/// (`np.nanmean`) and are NaN when every entry is NaN.
struct Metrics {
  /// Overall pixel accuracy: Σ intersect / Σ label area (mmseg `aAcc`); NaN without labelled pixels.
  double aAcc = 0.0;
  /// Mean of the non-NaN per-class IoU (mmseg `mIoU`).
  double mIoU = 0.0;
  /// Mean of the non-NaN per-class accuracy (mmseg `mAcc`).
  double mAcc = 0.0;
  /// Per-class intersection over union: intersect / union, NaN where the union is 0.
  std::vector<double> iou;
  /// Per-class accuracy: intersect / label area, NaN where the label area is 0.
  std::vector<double> acc;
  /// Per-class pixels predicted as the class and labelled as it (the matrix diagonal).
  std::vector<int64_t> area_intersect;
  /// Per-class pixels predicted as the class or labelled as it.
  std::vector<int64_t> area_union;
  /// Per-class pixels predicted as the class (among labelled pixels).
  std::vector<int64_t> area_pred;
  /// Per-class pixels labelled as the class.
  std::vector<int64_t> area_label;
};

/// An int64 confusion matrix accumulated over images: `matrix()[label][prediction]` counts the
/// labelled pixels (label ≠ `ignore_index`) with that label and prediction.
///
/// ```
/// cac_eval::ConfusionMatrix confusion(150);
/// for (auto& [image, label] : dataset) confusion.update(cac_eval::predict(model, image, options, size), label);
/// cac_eval::Metrics metrics = confusion.compute();
/// std::cout << cac_eval::format_table(metrics, class_names);
/// ```
class ConfusionMatrix {
 public:
  /// An all-zero matrix for `num_classes` (> 0) classes; labels equal to `ignore_index` are skipped.
  explicit ConfusionMatrix(int64_t num_classes, int64_t ignore_index = 255);
  /// A matrix with the given counts: int64 `[n, n]`, non-negative (e.g. one saved earlier).
  explicit ConfusionMatrix(const torch::Tensor& matrix, int64_t ignore_index = 255);

  /// Adds the pixels of `prediction` and `label`: int64 tensors of equal shape (any shape, any
  /// device), predictions in [0, n), labels in [0, n) or `ignore_index`. The counts are made with
  /// `bincount` on the inputs' device and added to the CPU int64 matrix, exactly.
  void update(const torch::Tensor& prediction, const torch::Tensor& label);
  /// Adds the counts of `other` (same number of classes): e.g. the matrices of several workers.
  void merge(const ConfusionMatrix& other);
  /// Sets every count to zero.
  void reset();

  /// The counts: int64 `[n, n]` on the CPU, rows = label, columns = prediction (a copy).
  torch::Tensor matrix() const;
  /// The number of classes n.
  int64_t num_classes() const { return num_classes_; }
  /// The label value that `update` skips.
  int64_t ignore_index() const { return ignore_index_; }

  /// aAcc, mIoU, mAcc and per-class IoU/Acc of the accumulated counts. See `Metrics`.
  Metrics compute() const;

 private:
  int64_t num_classes_;
  int64_t ignore_index_;
  torch::Tensor matrix_;
};

/// Sums tensors over the processes of a data-parallel job, in place (e.g. a lambda calling
/// `cac_engine::ProcessGroup::all_reduce_sum`). Every process must call it with the same shapes.
using AllReduceSum = std::function<void(std::vector<torch::Tensor>&)>;

/// The sum of the confusion matrices of all processes (each evaluated its share of the images),
/// exact: the int64 counts are summed with `sum` on `device` (the group's: CPU for Gloo, CUDA for
/// NCCL). Every process gets the total.
///
/// ```
/// auto total = cac_eval::all_reduce(confusion, [&](auto& t) { group.all_reduce_sum(t); }, group.device());
/// ```
ConfusionMatrix all_reduce(const ConfusionMatrix& confusion, const AllReduceSum& sum, torch::Device device);

/// mmseg 0.x's evaluation log: `per class results:` with a `Class | IoU | Acc` table, then
/// `Summary:` with `aAcc | mIoU | mAcc`, values ×100 with two decimals (NaN as `nan`), in
/// PrettyTable's layout. `class_names` has one name per class, or is empty (names `0`, `1`, ...).
std::string format_table(const Metrics& metrics, const std::vector<std::string>& class_names = {});

/// The metrics as JSON: `{"aAcc", "mIoU", "mAcc", "classes": [{"name", "IoU", "Acc",
/// "area_intersect", "area_union", "area_pred", "area_label"}, ...]}`, fractions in [0, 1], NaN as
/// `null`. `class_names` as in `format_table`.
nlohmann::json to_json(const Metrics& metrics, const std::vector<std::string>& class_names = {});

}  // namespace cac_eval
