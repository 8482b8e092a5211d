#pragma once
/// \file
/// Writing images: the one PNG writer of the examples (datasets generated on disk, predictions,
/// curves), atomic through `cac_io`.

#include <opencv2/core/mat.hpp>

#include <filesystem>

namespace cac_data {

/// Encodes `image` (8- or 16-bit, 1, 3 or 4 channels, BGR order) as PNG and writes it to `path`
/// atomically with `cac_io::write_file` (a failed write leaves `path` as it was and throws an
/// error naming it). Creates missing parent directories.
///
/// ```
/// cac_data::write_png("mask.png", cv::Mat(4, 4, CV_8UC1, cv::Scalar(1)));
/// ```
void write_png(const std::filesystem::path& path, const cv::Mat& image);

}  // namespace cac_data
