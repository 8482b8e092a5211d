#pragma once
/// \file
/// mmsegmentation 0.x's training and test pipelines on `cv::Mat` (mmseg/datasets/pipelines/
/// transforms.py with mmcv's image ops): random resize, `RandomCrop` with `cat_max_ratio`,
/// `RandomFlip`, `PhotoMetricDistortion`, `Normalize` and `Pad`. Every random transform draws from
/// an explicit `std::mt19937_64` through random.hpp, so a pipeline is a pure function of its input
/// and its seed. Defaults are mmseg's ADE20K 512×512 configuration
/// (configs/_base_/datasets/ade20k.py). See docs/datasets.md.

#include "dataset.hpp"

#include <torch/arg.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <utility>

namespace cac_data {

/// Two integers: a scale `(long, short)` or a size `(height, width)`.
using Int2 = std::array<int64_t, 2>;
/// A range `(low, high)`.
using Range = std::array<double, 2>;
/// One value per channel.
using Channels = std::array<double, 3>;

/// A transformed sample, ready for a model.
struct Sample {
  /// Normalised RGB image, float32 `[3, H, W]`.
  torch::Tensor image;
  /// Train ids, int64 `[H, W]`, 255 = ignored.
  torch::Tensor label;
  /// The raw sample's name.
  std::string name;
};

/// mmcv `imnormalize` (mmseg `Normalize`): `(x - mean) / std` per channel, after BGR → RGB.
struct NormalizeOptions {
  /// Per-channel mean, in the output (RGB) channel order.
  /// Default: {123.675, 116.28, 103.53}
  TORCH_ARG(Channels, mean) = {{123.675, 116.28, 103.53}};
  /// Per-channel standard deviation, in the output channel order.
  /// Default: {58.395, 57.12, 57.375}
  TORCH_ARG(Channels, std) = {{58.395, 57.12, 57.375}};
  /// Convert BGR (as decoded) to RGB.
  /// Default: true
  TORCH_ARG(bool, to_rgb) = true;
};

/// mmseg `PhotoMetricDistortion`: each step applied with probability 1/2, contrast first or last.
struct PhotoMetricOptions {
  /// Brightness offset drawn from [-delta, delta].
  /// Default: 32
  TORCH_ARG(double, brightness_delta) = 32;
  /// Contrast factor range.
  /// Default: {0.5, 1.5}
  TORCH_ARG(Range, contrast_range) = {{0.5, 1.5}};
  /// Saturation factor range (HSV S channel).
  /// Default: {0.5, 1.5}
  TORCH_ARG(Range, saturation_range) = {{0.5, 1.5}};
  /// Hue offset drawn from the integers in [-delta, delta) (numpy's `randint`; OpenCV hue units,
  /// period 180).
  /// Default: 18
  TORCH_ARG(int64_t, hue_delta) = 18;
};

/// The training pipeline (mmseg's ADE20K `train_pipeline` after loading).
///
/// `TrainPipelineOptions().img_scale({2048, 1024}).crop_size({512, 1024})` (Cityscapes)
struct TrainPipelineOptions {
  /// Base scale `(long, short)` of the keep-ratio resize (mmseg `Resize.img_scale`).
  /// Default: {2048, 512}
  TORCH_ARG(Int2, img_scale) = {{2048, 512}};
  /// The scale is multiplied by a ratio drawn uniformly from this range (mmseg `ratio_range`).
  /// Default: {0.5, 2.0}
  TORCH_ARG(Range, ratio_range) = {{0.5, 2.0}};
  /// Crop size `(height, width)` (mmseg `RandomCrop.crop_size`); also the padded output size.
  /// Default: {512, 512}
  TORCH_ARG(Int2, crop_size) = {{512, 512}};
  /// Largest allowed share of one class among the labelled pixels of a crop; 1 = off.
  /// Default: 0.75
  TORCH_ARG(double, cat_max_ratio) = 0.75;
  /// Horizontal flip probability.
  /// Default: 0.5
  TORCH_ARG(double, flip_prob) = 0.5;
  /// Apply `PhotoMetricDistortion`.
  /// Default: true
  TORCH_ARG(bool, photometric) = true;
  /// Its parameters.
  /// Default: PhotoMetricOptions()
  TORCH_ARG(PhotoMetricOptions, photometric_options) = {};
  /// Normalisation.
  /// Default: NormalizeOptions()
  TORCH_ARG(NormalizeOptions, normalize) = {};
  /// Image padding value (after normalisation, as mmseg pads after `Normalize`).
  /// Default: 0
  TORCH_ARG(double, pad_val) = 0;
  /// Label padding value, also the ignored value for `cat_max_ratio`.
  /// Default: 255
  TORCH_ARG(int64_t, seg_pad_val) = 255;
};

/// The test pipeline (mmseg's `test_pipeline`, single scale, no flip).
struct TestPipelineOptions {
  /// Keep-ratio resize target `(long, short)`; the label keeps its original size.
  /// Default: {2048, 512}
  TORCH_ARG(Int2, img_scale) = {{2048, 512}};
  /// Normalisation.
  /// Default: NormalizeOptions()
  TORCH_ARG(NormalizeOptions, normalize) = {};
};

/// mmcv `rescale_size`: the size `(width, height)` of a `width×height` image rescaled by
/// `min(max(scale) / max(h, w), min(scale) / min(h, w))`, each side rounded as `int(x + 0.5)`.
std::pair<int, int> rescale_size(int width, int height, const Int2& scale);

/// mmcv `imrescale` of an image (bilinear) and, if not empty, its label (nearest) to `scale`.
void rescale(cv::Mat& image, cv::Mat& label, const Int2& scale);

/// mmseg `Resize` with `ratio_range`: `rescale` to `img_scale · r`, `r` uniform in `ratio_range`
/// (each side truncated to an integer, as mmseg does).
void random_resize(cv::Mat& image, cv::Mat& label, const Int2& img_scale, const Range& ratio_range,
                   std::mt19937_64& rng);

/// mmseg `RandomCrop`: a `crop_size` (h, w) window (smaller if the image is), re-drawn up to 10
/// times until no class covers `cat_max_ratio` or more of the crop's non-`ignore_index` pixels and
/// at least two classes are present (the 11th draw is kept otherwise).
void random_crop(cv::Mat& image, cv::Mat& label, const Int2& crop_size, double cat_max_ratio, int64_t ignore_index,
                 std::mt19937_64& rng);

/// mmseg `RandomFlip` (horizontal) with probability `prob`, image and label together.
void random_flip(cv::Mat& image, cv::Mat& label, double prob, std::mt19937_64& rng);

/// mmseg `PhotoMetricDistortion` on a BGR uint8 image (HSV through `cv::cvtColor`, as mmcv).
void photo_metric_distortion(cv::Mat& image, const PhotoMetricOptions& options, std::mt19937_64& rng);

/// mmcv `imnormalize` of a BGR uint8 image to a float32 `[3, H, W]` tensor.
torch::Tensor normalize(const cv::Mat& image, const NormalizeOptions& options);

/// A uint8 `H×W` label as an int64 `[H, W]` tensor.
torch::Tensor label_to_tensor(const cv::Mat& label);

/// mmcv `impad` at the bottom and right to `size` (h, w): image `[C, H, W]` with `pad_val`,
/// label `[H, W]` with `seg_pad_val`; both must not exceed `size`.
void pad_to(torch::Tensor& image, torch::Tensor& label, const Int2& size, double pad_val, int64_t seg_pad_val);

/// The full training pipeline: random resize, crop, flip, photometric distortion, normalise, pad.
Sample train_transform(const RawSample& raw, const TrainPipelineOptions& options, std::mt19937_64& rng);

/// The test pipeline: keep-ratio resize of the image to `img_scale` and normalisation; the label
/// stays at the original resolution (mmseg evaluates there); an empty raw label gives an undefined
/// `label` tensor (inference without ground truth).
Sample test_transform(const RawSample& raw, const TestPipelineOptions& options);

}  // namespace cac_data
