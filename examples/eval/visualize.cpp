#include "visualize.hpp"

#include "io/atomic_file.hpp"

#include <fmt/format.h>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

namespace cac_eval {

namespace {

constexpr int64_t kIgnore = 255;
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

// A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` intervals over `range`.
double nice_step(double range, int target) {
  const double raw = range / target;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double fraction = raw / magnitude;
  const double nice = fraction < 1.5 ? 1.0 : fraction < 3.0 ? 2.0 : fraction < 7.0 ? 5.0 : 10.0;
  return nice * magnitude;
}

// An axis: the range shown and its ticks.
struct Axis {
  double lo = 0.0, hi = 1.0, step = 0.2;
  int decimals = 1;
  std::vector<double> ticks;
};

// Ticks for the data range [lo, hi]; `widen` extends the range to whole steps.
Axis make_axis(double lo, double hi, bool widen, int target) {
  if (!(hi > lo)) {
    const double pad = lo == 0.0 ? 0.5 : std::abs(lo) * 0.05;
    lo -= pad;
    hi += pad;
  }
  Axis axis;
  axis.step = nice_step(hi - lo, target);
  axis.lo = widen ? std::floor(lo / axis.step + 1e-9) * axis.step : lo;
  axis.hi = widen ? std::ceil(hi / axis.step - 1e-9) * axis.step : hi;
  axis.decimals = std::max(0, -int(std::floor(std::log10(axis.step) + 1e-9)));
  for (double t = std::ceil(axis.lo / axis.step - 1e-9) * axis.step; t <= axis.hi + axis.step * 1e-6; t += axis.step) {
    axis.ticks.push_back(std::abs(t) < axis.step * 1e-9 ? 0.0 : t);
  }
  return axis;
}

std::string tick_label(double value, int decimals) { return fmt::format("{:.{}f}", value, decimals); }

cv::Size text_size(const std::string& text, double scale, int thickness) {
  int baseline = 0;
  return cv::getTextSize(text, kFont, scale, thickness, &baseline);
}

// Where the legend covers the fewest points of the curves (sampled every 2 pixels along their segments): the top
// right, top left, bottom right or bottom left corner of the plot, in that order of preference;
// with the number of points it covers there.
template <typename ToX, typename ToY>
std::pair<cv::Rect, int64_t> legend_box(const std::vector<Curve>& curves, const cv::Rect& plot, const cv::Size& size,
                                        ToX px, ToY py) {
  const int margin = 8;
  const int left = plot.x + margin, right = plot.x + plot.width - margin - size.width;
  const int top = plot.y + margin, bottom = plot.y + plot.height - margin - size.height;
  const std::array<cv::Rect, 4> candidates{cv::Rect({right, top}, size), cv::Rect({left, top}, size),
                                           cv::Rect({right, bottom}, size), cv::Rect({left, bottom}, size)};
  std::array<int64_t, 4> covered{0, 0, 0, 0};
  for (const Curve& curve : curves) {
    for (size_t i = 0; i < curve.x.size(); ++i) {
      if (!std::isfinite(curve.x[i]) || !std::isfinite(curve.y[i])) continue;
      const bool next = i + 1 < curve.x.size() && std::isfinite(curve.x[i + 1]) && std::isfinite(curve.y[i + 1]);
      // Every 2 pixels along the segment, so that a long straight segment counts as well.
      const int samples =
          next ? std::max(1,
                          int(std::hypot(px(curve.x[i + 1]) - px(curve.x[i]), py(curve.y[i + 1]) - py(curve.y[i])) / 2))
               : 1;
      for (int s = 0; s < samples; ++s) {
        const double t = double(s) / samples;
        const double x = px(next ? curve.x[i] + t * (curve.x[i + 1] - curve.x[i]) : curve.x[i]);
        const double y = py(next ? curve.y[i] + t * (curve.y[i + 1] - curve.y[i]) : curve.y[i]);
        for (size_t c = 0; c < candidates.size(); ++c) {
          covered[c] += candidates[c].contains(cv::Point(int(std::lround(x)), int(std::lround(y))));
        }
      }
    }
  }
  const size_t best = size_t(std::min_element(covered.begin(), covered.end()) - covered.begin());
  return {candidates[best], covered[best]};
}

}  // namespace

cv::Mat colorize(const torch::Tensor& mask, const Palette& palette) {
  TORCH_CHECK(mask.defined() && mask.dim() == 2, "cac_eval::colorize: expected a mask of shape [H, W] but got ",
              mask.defined() ? mask.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(mask.scalar_type() == torch::kLong, "cac_eval::colorize: expected an int64 mask but got ",
              mask.scalar_type());
  const auto n = int64_t(palette.size());
  const torch::Tensor m = mask.to(torch::kCPU);
  const torch::Tensor ignored = m == kIgnore;
  const torch::Tensor bad = ((m < 0) | (m >= n)) & ~ignored;
  TORCH_CHECK(!bad.any().item<bool>(), "cac_eval::colorize: expected mask values in [0, ", n, ") or 255 but got ",
              m.masked_select(bad)[0].item<int64_t>());
  // A BGR lookup table with one more (black) row for the ignored pixels.
  torch::Tensor lut = torch::zeros({n + 1, 3}, torch::kUInt8);
  auto table = lut.accessor<uint8_t, 2>();
  for (int64_t c = 0; c < n; ++c) {
    for (int ch = 0; ch < 3; ++ch) table[c][ch] = palette[size_t(c)][size_t(2 - ch)];
  }
  const torch::Tensor index = torch::where(ignored, torch::full_like(m, n), m);
  const torch::Tensor bgr = lut.index_select(0, index.flatten()).contiguous();
  cv::Mat out(int(m.size(0)), int(m.size(1)), CV_8UC3);
  if (bgr.numel() > 0) std::memcpy(out.data, bgr.data_ptr<uint8_t>(), size_t(bgr.numel()));
  return out;
}

cv::Mat overlay(const cv::Mat& image_bgr, const cv::Mat& color_mask_bgr, double opacity) {
  TORCH_CHECK(image_bgr.type() == CV_8UC3, "cac_eval::overlay: expected an 8-bit 3-channel image but got type ",
              image_bgr.type(), " with ", image_bgr.channels(), " channels");
  TORCH_CHECK(color_mask_bgr.type() == CV_8UC3,
              "cac_eval::overlay: expected an 8-bit 3-channel colour mask but got type ", color_mask_bgr.type(),
              " with ", color_mask_bgr.channels(), " channels");
  TORCH_CHECK(image_bgr.size() == color_mask_bgr.size(), "cac_eval::overlay: expected a colour mask of size ",
              image_bgr.cols, "x", image_bgr.rows, " (the image's) but got ", color_mask_bgr.cols, "x",
              color_mask_bgr.rows);
  TORCH_CHECK(opacity >= 0.0 && opacity <= 1.0, "cac_eval::overlay: expected opacity in [0, 1] but got ", opacity);
  cv::Mat out;
  cv::addWeighted(image_bgr, 1.0 - opacity, color_mask_bgr, opacity, 0.0, out);
  return out;
}

void write_prediction(const std::filesystem::path& dir, const std::string& name, const cv::Mat& image_bgr,
                      const torch::Tensor& mask, const Palette& palette, double opacity) {
  const cv::Mat color = colorize(mask, palette);
  write_png(dir / (name + ".png"), color);
  write_png(dir / (name + "_overlay.png"), overlay(image_bgr, color, opacity));
}

cv::Scalar curve_color(size_t index) {
  // matplotlib's tab10 (#1f77b4, #ff7f0e, #2ca02c, #d62728, #9467bd, #8c564b, #e377c2, #7f7f7f,
  // #bcbd22, #17becf) in BGR.
  static const std::array<cv::Scalar, 10> kTab10{
      cv::Scalar(180, 119, 31),  cv::Scalar(14, 127, 255), cv::Scalar(44, 160, 44),   cv::Scalar(40, 39, 214),
      cv::Scalar(189, 103, 148), cv::Scalar(75, 86, 140),  cv::Scalar(194, 119, 227), cv::Scalar(127, 127, 127),
      cv::Scalar(34, 189, 188),  cv::Scalar(207, 190, 23)};
  return kTab10[index % kTab10.size()];
}

cv::Mat draw_curves(const std::vector<Curve>& curves, const PlotOptions& options) {
  constexpr const char* kWho = "cac_eval::draw_curves";
  TORCH_CHECK(options.width() >= 200 && options.height() >= 150, kWho, ": expected a size of at least 200x150 but got ",
              options.width(), "x", options.height());
  TORCH_CHECK(options.thickness() >= 1, kWho, ": expected thickness >= 1 but got ", options.thickness());
  TORCH_CHECK(
      options.y_range().empty() || (options.y_range().size() == 2 && options.y_range()[1] > options.y_range()[0]), kWho,
      ": expected y_range empty or {min, max} with max > min but got ", c10::ArrayRef<double>(options.y_range()));
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const Curve& curve : curves) {
    TORCH_CHECK(curve.x.size() == curve.y.size(), kWho, ": expected as many x as y values in curve \"", curve.name,
                "\" but got ", curve.x.size(), " and ", curve.y.size());
    for (size_t i = 0; i < curve.x.size(); ++i) {
      if (!std::isfinite(curve.x[i]) || !std::isfinite(curve.y[i])) continue;
      x_lo = std::min(x_lo, curve.x[i]);
      x_hi = std::max(x_hi, curve.x[i]);
      y_lo = std::min(y_lo, curve.y[i]);
      y_hi = std::max(y_hi, curve.y[i]);
    }
  }
  if (!(x_hi >= x_lo)) x_lo = 0.0, x_hi = 1.0;
  if (!(y_hi >= y_lo)) y_lo = 0.0, y_hi = 1.0;
  const bool fixed_y = !options.y_range().empty();
  const double y_margin = 0.04 * (y_hi - y_lo);  // headroom so that lines do not run along the frame
  const Axis xa = make_axis(x_lo, x_hi, true, 8);
  const Axis ya = fixed_y ? make_axis(options.y_range()[0], options.y_range()[1], false, 6)
                          : make_axis(y_lo - y_margin, y_hi + y_margin, true, 6);

  const int line_type = options.antialias() ? cv::LINE_AA : cv::LINE_8;
  const double tick_scale = 0.45, label_scale = 0.55, title_scale = 0.7;
  const cv::Scalar black(0, 0, 0), grey(90, 90, 90), grid(225, 225, 225);
  int tick_width = 0;
  for (double t : ya.ticks)
    tick_width = std::max(tick_width, text_size(tick_label(t, ya.decimals), tick_scale, 1).width);
  const int tick_height = text_size("0", tick_scale, 1).height;
  const int label_height = text_size("Ag", label_scale, 1).height;
  const int left = 14 + tick_width + 8 + (options.y_label().empty() ? 0 : label_height + 14);
  const int right = std::max(
      25, text_size(tick_label(xa.ticks.empty() ? 0.0 : xa.ticks.back(), xa.decimals), tick_scale, 1).width / 2 + 8);
  const int top = options.title().empty() ? 20 : 20 + text_size("Ag", title_scale, 2).height + 16;
  const int bottom = 14 + tick_height + 10 + (options.x_label().empty() ? 0 : label_height + 14);
  cv::Rect plot(left, top, std::max(1, options.width() - left - right), std::max(1, options.height() - top - bottom));

  cv::Mat image(options.height(), options.width(), CV_8UC3, options.background());
  auto px = [&](double x) { return plot.x + (x - xa.lo) / (xa.hi - xa.lo) * plot.width; };
  auto py = [&](double y) { return plot.y + plot.height - (y - ya.lo) / (ya.hi - ya.lo) * plot.height; };

  // Legend: in the corner of the plot that covers the fewest curve points; when every corner
  // covers some and the plot keeps at least half its width, beside the plot instead (its right
  // margin grows, px follows the narrower plot).
  const int legend_row = label_height + 10, legend_sample = 28;
  cv::Rect legend;
  if (!curves.empty()) {
    int name_width = 0;
    for (const Curve& curve : curves) name_width = std::max(name_width, text_size(curve.name, label_scale, 1).width);
    const cv::Size box_size(name_width + legend_sample + 18, int(curves.size()) * legend_row + 8);
    int64_t covered = 0;
    std::tie(legend, covered) = legend_box(curves, plot, box_size, px, py);
    if (covered > 0 && box_size.width + 12 <= plot.width / 2) {
      plot.width -= box_size.width + 12;
      legend = cv::Rect({plot.x + plot.width + 12, plot.y}, box_size);
    }
  }

  // Grid, ticks and tick labels.
  for (double t : xa.ticks) {
    const int x = int(std::lround(px(t)));
    cv::line(image, {x, plot.y}, {x, plot.y + plot.height}, grid, 1, cv::LINE_8);
    cv::line(image, {x, plot.y + plot.height}, {x, plot.y + plot.height + 5}, black, 1, cv::LINE_8);
    const std::string text = tick_label(t, xa.decimals);
    const cv::Size size = text_size(text, tick_scale, 1);
    cv::putText(image, text, {x - size.width / 2, plot.y + plot.height + 9 + size.height}, kFont, tick_scale, grey, 1,
                line_type);
  }
  for (double t : ya.ticks) {
    const int y = int(std::lround(py(t)));
    cv::line(image, {plot.x, y}, {plot.x + plot.width, y}, grid, 1, cv::LINE_8);
    cv::line(image, {plot.x - 5, y}, {plot.x, y}, black, 1, cv::LINE_8);
    const std::string text = tick_label(t, ya.decimals);
    const cv::Size size = text_size(text, tick_scale, 1);
    cv::putText(image, text, {plot.x - 9 - size.width, y + size.height / 2}, kFont, tick_scale, grey, 1, line_type);
  }

  // The series, clipped to the plot area (drawn into its region of interest).
  cv::Mat area = image(plot);
  const double shift_x = plot.x, shift_y = plot.y;
  for (size_t k = 0; k < curves.size(); ++k) {
    const Curve& curve = curves[k];
    const cv::Scalar color = curve.color.value_or(curve_color(k));
    std::optional<cv::Point> previous;
    for (size_t i = 0; i < curve.x.size(); ++i) {
      if (!std::isfinite(curve.x[i]) || !std::isfinite(curve.y[i])) {
        previous.reset();
        continue;
      }
      const cv::Point p(int(std::lround(px(curve.x[i]) - shift_x)), int(std::lround(py(curve.y[i]) - shift_y)));
      if (previous) {
        cv::line(area, *previous, p, color, options.thickness(), line_type);
      } else if (i + 1 >= curve.x.size() || !std::isfinite(curve.x[i + 1]) || !std::isfinite(curve.y[i + 1])) {
        cv::circle(area, p, options.thickness() + 1, color, cv::FILLED, line_type);  // an isolated point
      }
      previous = p;
    }
  }
  cv::rectangle(image, plot, black, 1, cv::LINE_8);

  // The legend, where it was placed above.
  if (!curves.empty()) {
    cv::rectangle(image, legend, options.background(), cv::FILLED);
    cv::rectangle(image, legend, cv::Scalar(160, 160, 160), 1, cv::LINE_8);
    for (size_t k = 0; k < curves.size(); ++k) {
      const int y = legend.y + 4 + int(k) * legend_row + legend_row / 2;
      const cv::Scalar color = curves[k].color.value_or(curve_color(k));
      cv::line(image, {legend.x + 6, y}, {legend.x + 6 + legend_sample, y}, color, options.thickness() + 1, line_type);
      cv::putText(image, curves[k].name, {legend.x + 12 + legend_sample, y + label_height / 2}, kFont, label_scale,
                  black, 1, line_type);
    }
  }

  // Title and axis labels.
  if (!options.title().empty()) {
    const cv::Size size = text_size(options.title(), title_scale, 2);
    cv::putText(image, options.title(), {(options.width() - size.width) / 2, 14 + size.height}, kFont, title_scale,
                black, 2, line_type);
  }
  if (!options.x_label().empty()) {
    const cv::Size size = text_size(options.x_label(), label_scale, 1);
    cv::putText(image, options.x_label(), {plot.x + (plot.width - size.width) / 2, options.height() - 10}, kFont,
                label_scale, black, 1, line_type);
  }
  if (!options.y_label().empty()) {
    // Drawn horizontally on its own canvas, rotated a quarter turn anticlockwise into place.
    int baseline = 0;
    const cv::Size size = cv::getTextSize(options.y_label(), kFont, label_scale, 1, &baseline);
    cv::Mat text(size.height + baseline + 4, size.width + 4, CV_8UC3, options.background());
    cv::putText(text, options.y_label(), {2, size.height + 2}, kFont, label_scale, black, 1, line_type);
    cv::Mat rotated;
    cv::rotate(text, rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
    const int x = 8, y = std::max(0, plot.y + (plot.height - rotated.rows) / 2);
    const cv::Rect target(x, y, std::min(rotated.cols, options.width() - x),
                          std::min(rotated.rows, options.height() - y));
    rotated(cv::Rect(0, 0, target.width, target.height)).copyTo(image(target));
  }
  return image;
}

void plot_curves(const std::filesystem::path& png, const std::vector<Curve>& curves, const PlotOptions& options) {
  write_png(png, draw_curves(curves, options));
}

}  // namespace cac_eval
