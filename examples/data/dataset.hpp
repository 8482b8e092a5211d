#pragma once
/// \file
/// Segmentation datasets on disk (mmsegmentation 0.x `ADE20KDataset`, `COCOStuffDataset`,
/// `CityscapesDataset`, `PascalContextDataset59`, `CustomDataset`): the class names and palettes
/// of each, a reader per directory layout and the factory `make_dataset`. See docs/datasets.md.

#include <torch/arg.h>

#include <opencv2/core.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cac_data {

/// The label value that marks pixels excluded from the loss and the metrics (mmseg `ignore_index`).
constexpr uint8_t kIgnoreIndex = 255;

/// An RGB colour.
using Rgb = std::array<uint8_t, 3>;

/// Names and display colours of a dataset's classes, indexed by train id.
struct DatasetInfo {
  /// Dataset name (`"ade20k"`, `"coco_stuff164k"`, ...).
  std::string name;
  /// Class names, one per train id (mmseg `CLASSES`).
  std::vector<std::string> classes;
  /// RGB display colour per class (mmseg `PALETTE`), same length as `classes`.
  std::vector<Rgb> palette;
  /// Number of classes.
  int64_t num_classes() const { return static_cast<int64_t>(classes.size()); }
};

/// ADE20K / SceneParse150: 150 classes (mmseg 0.x `ADE20KDataset`).
const DatasetInfo& ade20k_info();
/// COCO-Stuff 164K: 171 classes, train ids 0..170 (mmseg 0.x `COCOStuffDataset`).
const DatasetInfo& coco_stuff164k_info();
/// Cityscapes: 19 classes (mmseg 0.x `CityscapesDataset`).
const DatasetInfo& cityscapes_info();
/// Pascal-Context 59 (background excluded; mmseg 0.x `PascalContextDataset59`).
const DatasetInfo& pascal_context59_info();

/// One decoded sample, before any transform.
struct RawSample {
  /// BGR uint8 image `H×W×3` (`CV_8UC3`), as `cv::imread` returns it.
  cv::Mat image;
  /// Train ids `H×W` (`CV_8UC1`) after `reduce_zero_label`; 255 = ignored.
  cv::Mat label;
  /// The image's path relative to the image directory, without suffix (e.g. `ADE_val_00000001`,
  /// `frankfurt/frankfurt_000000_000294`).
  std::string name;
};

/// A finite, indexable set of samples. `load` is thread-safe (the loader's workers call it).
class Dataset {
 public:
  virtual ~Dataset();
  /// Number of samples.
  virtual size_t size() const = 0;
  /// Decodes sample `index` (`index < size()`); thread-safe.
  virtual RawSample load(size_t index) const = 0;
  /// Class names and palette.
  virtual const DatasetInfo& info() const = 0;
  /// Path of the image of sample `index`.
  virtual std::string image_path(size_t index) const = 0;
};

/// Which dataset to read and where.
///
/// `make_dataset(DatasetOptions("ade20k", "/data/ade").split("val"))`
struct DatasetOptions {
  /// A dataset of layout `type` under `root`.
  DatasetOptions(std::string type, std::string root) : type_(std::move(type)), root_(std::move(root)) {}
  /// `"ade20k"`, `"coco_stuff164k"`, `"cityscapes"`, `"pascal_context59"`, `"context_shift"`
  /// (the generated dataset of context_shift.hpp: ADE20K layout, `.png` images, classes from its
  /// stamp) or `"custom"`. No default.
  TORCH_ARG(std::string, type);
  /// Dataset root (mmseg `data_root`). ADE20K accepts the directory containing
  /// `ADEChallengeData2016` or that directory itself. No default.
  TORCH_ARG(std::string, root);
  /// `"train"` or `"val"` (mapped to each layout's directory names).
  /// Default: "train"
  TORCH_ARG(std::string, split) = "train";
  /// Image suffix; unset = the layout's (`.jpg`; Cityscapes `_leftImg8bit.png`).
  /// Default: std::nullopt
  TORCH_ARG(std::optional<std::string>, img_suffix) = std::nullopt;
  /// Label suffix; unset = the layout's (`.png`; COCO-Stuff `_labelTrainIds.png`; Cityscapes
  /// `_gtFine_labelTrainIds.png`).
  /// Default: std::nullopt
  TORCH_ARG(std::optional<std::string>, seg_map_suffix) = std::nullopt;
  /// Map label 0 to 255 and v to v - 1; unset = the layout's (true for ADE20K, Pascal-Context 59
  /// and context-shift, false otherwise).
  /// Default: std::nullopt
  TORCH_ARG(std::optional<bool>, reduce_zero_label) = std::nullopt;
  /// `"custom"` only: image directory, relative to `root` unless absolute.
  /// Default: ""
  TORCH_ARG(std::string, img_dir) = "";
  /// `"custom"` only: label directory, relative to `root` unless absolute.
  /// Default: ""
  TORCH_ARG(std::string, ann_dir) = "";
  /// `"custom"` only: a text file of sample names (one per line, without suffix), relative to
  /// `root` unless absolute; empty = every image under `img_dir` (recursively).
  /// Default: ""
  TORCH_ARG(std::string, split_file) = "";
  /// Class names; required for `"custom"`, overrides the layout's for the others.
  /// Default: {}
  TORCH_ARG(std::vector<std::string>, classes) = {};
  /// RGB palette, one per class; empty = a generated one (custom) or the layout's.
  /// Default: {}
  TORCH_ARG(std::vector<Rgb>, palette) = {};
};

/// Reads the dataset described by `options`; every image is paired with its label when the
/// dataset is built (a missing label is an error), label values are checked when loaded.
/// Files are sorted by relative path.
std::shared_ptr<Dataset> make_dataset(const DatasetOptions& options);

/// `n` distinct, deterministic, non-black RGB colours for datasets without a palette (mmseg's
/// random palette replaced by a deterministic one): the PASCAL VOC colour map (bits of the index
/// spread over the channels' high bits) of indices 1..n, distinct for 0 <= n < 2²⁴ − 1 (class 0
/// is (128, 0, 0), class 1 (0, 128, 0), ...). The only palette generator of the examples.
std::vector<Rgb> default_palette(int64_t n);

}  // namespace cac_data
