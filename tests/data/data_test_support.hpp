#pragma once
// Helpers of the cac_data suite: a self-removing temporary directory, fixture writers and an
// in-memory dataset.

#include "data/dataset.hpp"

#include <opencv2/imgcodecs.hpp>

#include <atomic>
#include <filesystem>
#include <functional>
#include <random>
#include <string>

#include <unistd.h>

namespace cac_data_test {

namespace fs = std::filesystem;

/// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ =
        fs::temp_directory_path() / ("cac_data_test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// Writes `mat` to `path`, creating the parent directories.
inline void write(const fs::path& path, const cv::Mat& mat) {
  fs::create_directories(path.parent_path());
  if (!cv::imwrite(path.string(), mat)) {
    throw std::runtime_error("cannot write " + path.string());
  }
}

/// A `height×width` label filled with `value`.
inline cv::Mat constant_label(int height, int width, int value) {
  return cv::Mat(height, width, CV_8UC1, cv::Scalar(value));
}

/// A BGR image whose blue channel is 2·x and green channel 2·y (x < 128, y < 128); red = 100.
inline cv::Mat coordinate_image(int height, int width) {
  cv::Mat image(height, width, CV_8UC3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at<cv::Vec3b>(y, x) = cv::Vec3b(static_cast<uint8_t>(2 * x), static_cast<uint8_t>(2 * y), 100);
    }
  }
  return image;
}

/// The label of `coordinate_image`: blocks of 16×16 pixels, class (x / 16) · 6 + y / 16.
inline cv::Mat coordinate_label(int height, int width) {
  cv::Mat label(height, width, CV_8UC1);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      label.at<uint8_t>(y, x) = static_cast<uint8_t>((x / 16) * 6 + y / 16);
    }
  }
  return label;
}

/// An in-memory dataset of `n` coordinate images of varying size; `load(fail_index)` throws.
class SyntheticDataset : public cac_data::Dataset {
 public:
  explicit SyntheticDataset(size_t n, long fail_index = -1) : n_(n), fail_index_(fail_index) {
    info_.name = "synthetic";
    for (int k = 0; k < 48; ++k) {
      info_.classes.push_back("c" + std::to_string(k));
    }
    info_.palette = cac_data::default_palette(48);
  }
  size_t size() const override { return n_; }
  const cac_data::DatasetInfo& info() const override { return info_; }
  std::string image_path(size_t index) const override { return "memory/" + std::to_string(index); }
  cac_data::RawSample load(size_t index) const override {
    if (static_cast<long>(index) == fail_index_) {
      throw std::runtime_error("synthetic load failure at index " + std::to_string(index));
    }
    const int height = 64 + static_cast<int>(index % 3) * 16, width = 96 + static_cast<int>(index % 2) * 32;
    return {coordinate_image(height, width), coordinate_label(height, width), "s" + std::to_string(index)};
  }

 private:
  size_t n_;
  long fail_index_;
  cac_data::DatasetInfo info_;
};

}  // namespace cac_data_test
