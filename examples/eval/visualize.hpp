#pragma once
/// \file
/// Visualisation: label maps in a palette's colours, overlays on images (mmseg 0.x `show_result`),
/// atomic PNG writing and line charts, with OpenCV core/imgproc/imgcodecs only.

#include "data/dataset.hpp"
#include "data/image_file.hpp"

#include <opencv2/core.hpp>
#include <torch/arg.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace cac_eval {

/// An RGB colour per class: a dataset's `cac_data::DatasetInfo::palette` (generated ones come
/// from `cac_data::default_palette`).
using Palette = std::vector<cac_data::Rgb>;

/// The label map `mask` (int64 `[H, W]`, any device) in colours: an 8-bit BGR `cv::Mat` `H × W`
/// where class c gets `palette[c]` (RGB, stored as BGR) and 255 (ignored) is black. Values must
/// be in [0, palette.size()) or 255.
cv::Mat colorize(const torch::Tensor& mask, const Palette& palette);

/// `image_bgr · (1 − opacity) + color_mask_bgr · opacity`, rounded (mmseg `show_result`, which
/// truncates): both 8-bit 3-channel of equal size, opacity in [0, 1].
cv::Mat overlay(const cv::Mat& image_bgr, const cv::Mat& color_mask_bgr, double opacity = 0.5);

/// The PNG writer of the examples (`cac_data::write_png`: atomic, checked).
using cac_data::write_png;

/// The pictures of one prediction (mmseg's `show_dir`): `dir/<name>.png`, the label map `mask`
/// (int64 `[H, W]`) in `palette`'s colours, and `dir/<name>_overlay.png`, that mask over
/// `image_bgr` with `opacity`. Used by cac-eval `--show-dir` and cac-infer.
void write_prediction(const std::filesystem::path& dir, const std::string& name, const cv::Mat& image_bgr,
                      const torch::Tensor& mask, const Palette& palette, double opacity = 0.5);

/// One series of a line chart.
///
/// ```
/// cac_eval::Curve loss{"baseline", iterations, losses};
/// cac_eval::Curve cac{"+ CAC", iterations, cac_losses, cv::Scalar(40, 39, 214)};
/// ```
struct Curve {
  /// Legend entry.
  std::string name;
  /// Abscissae (e.g. iterations); as many as `y`.
  std::vector<double> x;
  /// Ordinates (e.g. loss or mIoU); a non-finite value breaks the line.
  std::vector<double> y;
  /// Line colour (BGR); unset: the `index`-th colour of matplotlib's `tab10` cycle.
  std::optional<cv::Scalar> color;
};

/// Layout of `plot_curves`.
///
/// ```
/// cac_eval::plot_curves("loss.png", {baseline, cac}, cac_eval::PlotOptions().title("loss").x_label("iteration"));
/// ```
struct PlotOptions {
  /// Image width in pixels.
  /// Default: 900
  TORCH_ARG(int, width) = 900;
  /// Image height in pixels.
  /// Default: 500
  TORCH_ARG(int, height) = 500;
  /// Title above the plot (none when empty).
  /// Default: ""
  TORCH_ARG(std::string, title) = "";
  /// Label under the x axis.
  /// Default: ""
  TORCH_ARG(std::string, x_label) = "";
  /// Label left of the y axis (drawn rotated).
  /// Default: ""
  TORCH_ARG(std::string, y_label) = "";
  /// Fixed y range {min, max}; empty: the data's range, widened to round ticks.
  /// Default: {}
  TORCH_ARG(std::vector<double>, y_range) = std::vector<double>{};
  /// Line thickness in pixels.
  /// Default: 2
  TORCH_ARG(int, thickness) = 2;
  /// Anti-aliased lines and text.
  /// Default: true
  TORCH_ARG(bool, antialias) = true;
  /// Background colour (BGR).
  /// Default: white
  TORCH_ARG(cv::Scalar, background) = cv::Scalar(255, 255, 255);
};

/// The colour (BGR) `plot_curves` gives the `index`-th curve without one: matplotlib's `tab10`
/// cycle (blue, orange, green, red, purple, ...).
cv::Scalar curve_color(size_t index);

/// A line chart of `curves` as an 8-bit BGR image `height × width`: axes with round ticks and
/// labels, light grid, one polyline per curve, a legend (in the corner of the plot that covers
/// the fewest curve points, top right first; beside the plot when every corner covers some) and
/// the title.
cv::Mat draw_curves(const std::vector<Curve>& curves, const PlotOptions& options = {});

/// `draw_curves` written to `png` with `write_png` (atomically).
void plot_curves(const std::filesystem::path& png, const std::vector<Curve>& curves, const PlotOptions& options = {});

}  // namespace cac_eval
