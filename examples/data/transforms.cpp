#include "transforms.hpp"

#include "random.hpp"

#include <torch/torch.h>

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

namespace cac_data {

namespace {

void check_image(const cv::Mat& image, const char* where) {
  TORCH_CHECK(image.type() == CV_8UC3, "cac_data::", where,
              ": expected a BGR uint8 image (CV_8UC3) but got OpenCV type ", image.type());
}

void check_pair(const cv::Mat& image, const cv::Mat& label, const char* where) {
  check_image(image, where);
  TORCH_CHECK(label.type() == CV_8UC1 && label.rows == image.rows && label.cols == image.cols, "cac_data::", where,
              ": expected a uint8 label (CV_8UC1) of the image's size ", image.cols, "x", image.rows,
              " but got OpenCV type ", label.type(), " of size ", label.cols, "x", label.rows);
}

/// mmseg `PhotoMetricDistortion.convert` as a lookup table: `uint8(clip(float32(x) · alpha + beta, 0, 255))`.
cv::Mat affine_lut(double alpha, double beta) {
  cv::Mat lut(1, 256, CV_8UC1);
  for (int v = 0; v < 256; ++v) {
    const float y = static_cast<float>(v) * static_cast<float>(alpha) + static_cast<float>(beta);
    lut.at<uint8_t>(v) = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, y)));  // astype truncates
  }
  return lut;
}

cv::Mat apply_lut(const cv::Mat& image, const cv::Mat& lut) {
  cv::Mat out;
  cv::LUT(image, lut, out);
  return out;
}

/// Applies `lut` to channel `channel` of the HSV version of `image` (mmcv `bgr2hsv`/`hsv2bgr`).
cv::Mat hsv_channel_lut(const cv::Mat& image, int channel, const cv::Mat& lut) {
  cv::Mat hsv;
  cv::cvtColor(image, hsv, cv::COLOR_BGR2HSV);
  std::vector<cv::Mat> planes;
  cv::split(hsv, planes);
  planes[channel] = apply_lut(planes[channel], lut);
  cv::merge(planes, hsv);
  cv::Mat out;
  cv::cvtColor(hsv, out, cv::COLOR_HSV2BGR);
  return out;
}

cv::Mat continuous(const cv::Mat& mat) { return mat.isContinuous() ? mat : mat.clone(); }

}  // namespace

std::pair<int, int> rescale_size(int width, int height, const Int2& scale) {
  TORCH_CHECK(width > 0 && height > 0 && scale[0] > 0 && scale[1] > 0,
              "cac_data::rescale_size: expected a positive image size and scale but got ", width, "x", height,
              " and scale (", scale[0], ", ", scale[1], ")");
  const double long_edge = static_cast<double>(std::max(scale[0], scale[1]));
  const double short_edge = static_cast<double>(std::min(scale[0], scale[1]));
  const double factor = std::min(long_edge / std::max(width, height), short_edge / std::min(width, height));
  return {static_cast<int>(width * factor + 0.5), static_cast<int>(height * factor + 0.5)};
}

void rescale(cv::Mat& image, cv::Mat& label, const Int2& scale) {
  check_image(image, "rescale");
  const auto [width, height] = rescale_size(image.cols, image.rows, scale);
  cv::Mat resized;
  cv::resize(image, resized, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  image = resized;
  if (!label.empty()) {
    cv::Mat resized_label;
    cv::resize(label, resized_label, cv::Size(width, height), 0, 0, cv::INTER_NEAREST);
    label = resized_label;
  }
}

void random_resize(cv::Mat& image, cv::Mat& label, const Int2& img_scale, const Range& ratio_range,
                   std::mt19937_64& rng) {
  TORCH_CHECK(ratio_range[0] > 0 && ratio_range[0] <= ratio_range[1],
              "cac_data::random_resize: expected 0 < ratio_range[0] <= ratio_range[1] but got (", ratio_range[0], ", ",
              ratio_range[1], ")");
  const double ratio = uniform_real(rng, ratio_range[0], ratio_range[1]);
  rescale(image, label,
          {static_cast<int64_t>(static_cast<double>(img_scale[0]) * ratio),
           static_cast<int64_t>(static_cast<double>(img_scale[1]) * ratio)});
}

void random_crop(cv::Mat& image, cv::Mat& label, const Int2& crop_size, double cat_max_ratio, int64_t ignore_index,
                 std::mt19937_64& rng) {
  check_pair(image, label, "random_crop");
  TORCH_CHECK(crop_size[0] > 0 && crop_size[1] > 0, "cac_data::random_crop: expected a positive crop_size but got (",
              crop_size[0], ", ", crop_size[1], ")");
  const int crop_h = static_cast<int>(std::min<int64_t>(crop_size[0], image.rows));
  const int crop_w = static_cast<int>(std::min<int64_t>(crop_size[1], image.cols));
  auto draw = [&] {
    const int y = static_cast<int>(uniform_int(rng, 0, image.rows - crop_h));
    const int x = static_cast<int>(uniform_int(rng, 0, image.cols - crop_w));
    return cv::Rect(x, y, crop_w, crop_h);
  };
  cv::Rect box = draw();
  if (cat_max_ratio < 1.0) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      int64_t counts[256] = {0};
      const cv::Mat window = label(box);
      for (int y = 0; y < window.rows; ++y) {
        const uint8_t* row = window.ptr<uint8_t>(y);
        for (int x = 0; x < window.cols; ++x) {
          ++counts[row[x]];
        }
      }
      int64_t total = 0, largest = 0, present = 0;
      for (int v = 0; v < 256; ++v) {
        if (v != ignore_index && counts[v] > 0) {
          total += counts[v];
          largest = std::max(largest, counts[v]);
          ++present;
        }
      }
      if (present > 1 && static_cast<double>(largest) / static_cast<double>(total) < cat_max_ratio) {
        break;
      }
      box = draw();
    }
  }
  image = image(box);
  label = label(box);
}

void random_flip(cv::Mat& image, cv::Mat& label, double prob, std::mt19937_64& rng) {
  if (bernoulli(rng, prob)) {
    cv::Mat flipped_image, flipped_label;
    cv::flip(image, flipped_image, 1);
    cv::flip(label, flipped_label, 1);
    image = flipped_image;
    label = flipped_label;
  }
}

void photo_metric_distortion(cv::Mat& image, const PhotoMetricOptions& options, std::mt19937_64& rng) {
  check_image(image, "photo_metric_distortion");
  auto coin = [&] { return uniform_int(rng, 0, 1) == 1; };
  auto contrast = [&] {
    if (coin()) {
      image =
          apply_lut(image, affine_lut(uniform_real(rng, options.contrast_range()[0], options.contrast_range()[1]), 0));
    }
  };
  if (coin()) {  // brightness
    image = apply_lut(image, affine_lut(1, uniform_real(rng, -options.brightness_delta(), options.brightness_delta())));
  }
  const bool contrast_first = uniform_int(rng, 0, 1) == 1;
  if (contrast_first) {
    contrast();
  }
  if (coin()) {  // saturation
    const double alpha = uniform_real(rng, options.saturation_range()[0], options.saturation_range()[1]);
    image = hsv_channel_lut(image, 1, affine_lut(alpha, 0));
  }
  if (coin()) {  // hue
    const int64_t delta = options.hue_delta() > 0 ? uniform_int(rng, -options.hue_delta(), options.hue_delta() - 1) : 0;
    cv::Mat lut(1, 256, CV_8UC1);
    for (int v = 0; v < 256; ++v) {
      lut.at<uint8_t>(v) = static_cast<uint8_t>(((v + delta) % 180 + 180) % 180);
    }
    image = hsv_channel_lut(image, 0, lut);
  }
  if (!contrast_first) {
    contrast();
  }
}

torch::Tensor normalize(const cv::Mat& image, const NormalizeOptions& options) {
  check_image(image, "normalize");
  const cv::Mat data = continuous(image);
  torch::Tensor x = torch::from_blob(data.data, {data.rows, data.cols, 3}, torch::kUInt8).to(torch::kFloat32);
  if (options.to_rgb()) {
    x = x.flip({2});
  }
  const auto& mean = options.mean();
  const auto& std = options.std();
  const torch::Tensor mean_t =
      torch::tensor({static_cast<float>(mean[0]), static_cast<float>(mean[1]), static_cast<float>(mean[2])});
  const torch::Tensor inv_std_t = torch::tensor(
      {static_cast<float>(1.0 / std[0]), static_cast<float>(1.0 / std[1]), static_cast<float>(1.0 / std[2])});
  return ((x - mean_t) * inv_std_t).permute({2, 0, 1}).contiguous();
}

torch::Tensor label_to_tensor(const cv::Mat& label) {
  TORCH_CHECK(label.type() == CV_8UC1,
              "cac_data::label_to_tensor: expected a uint8 label (CV_8UC1) but got OpenCV type ", label.type());
  const cv::Mat data = continuous(label);
  return torch::from_blob(data.data, {data.rows, data.cols}, torch::kUInt8).to(torch::kInt64);
}

void pad_to(torch::Tensor& image, torch::Tensor& label, const Int2& size, double pad_val, int64_t seg_pad_val) {
  const int64_t height = image.size(1), width = image.size(2);
  TORCH_CHECK(height <= size[0] && width <= size[1] && label.size(0) == height && label.size(1) == width,
              "cac_data::pad_to: expected an image and label of at most ", size[0], "x", size[1],
              " (height x width) with equal sizes but got image ", image.sizes(), " and label ", label.sizes());
  if (height == size[0] && width == size[1]) {
    return;
  }
  image = torch::constant_pad_nd(image, {0, size[1] - width, 0, size[0] - height}, pad_val);
  label = torch::constant_pad_nd(label, {0, size[1] - width, 0, size[0] - height}, seg_pad_val);
}

Sample train_transform(const RawSample& raw, const TrainPipelineOptions& options, std::mt19937_64& rng) {
  check_pair(raw.image, raw.label, "train_transform");
  cv::Mat image = raw.image, label = raw.label;  // every step writes new buffers: raw is never modified
  random_resize(image, label, options.img_scale(), options.ratio_range(), rng);
  random_crop(image, label, options.crop_size(), options.cat_max_ratio(), options.seg_pad_val(), rng);
  random_flip(image, label, options.flip_prob(), rng);
  if (options.photometric()) {
    photo_metric_distortion(image, options.photometric_options(), rng);
  }
  Sample sample{normalize(image, options.normalize()), label_to_tensor(label), raw.name};
  pad_to(sample.image, sample.label, options.crop_size(), options.pad_val(), options.seg_pad_val());
  return sample;
}

Sample test_transform(const RawSample& raw, const TestPipelineOptions& options) {
  cv::Mat image = raw.image, no_label;
  rescale(image, no_label, options.img_scale());
  return {normalize(image, options.normalize()), raw.label.empty() ? torch::Tensor() : label_to_tensor(raw.label),
          raw.name};
}

}  // namespace cac_data
