// Palettes, colourised masks, overlays, atomic PNG writing and line charts.
#include "eval/visualize.hpp"

#include <catch2/catch.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include <random>
#include <set>

using namespace cac_eval;
using Catch::Matchers::Contains;

namespace {

// A fresh empty directory under the system temp directory.
std::filesystem::path temp_dir(const std::string& name) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("cac_eval_" + name + "_" + std::to_string(std::random_device{}()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

cv::Vec3b pixel(const cv::Mat& m, int y, int x) { return m.at<cv::Vec3b>(y, x); }

int count_colour(const cv::Mat& image, const cv::Scalar& colour) {
  cv::Mat match;
  cv::inRange(image, colour, colour, match);
  return cv::countNonZero(match);
}

}  // namespace

TEST_CASE("visualize: default palette (cac_data's, the only generator)", "[visualize]") {
  using cac_data::default_palette;
  const Palette palette = default_palette(256);
  REQUIRE(palette.size() == 256);
  // The PASCAL VOC colour map of 1, 2, 3, 4, 5: (128,0,0) (0,128,0) (128,128,0) (0,0,128) (128,0,128).
  CHECK((palette[0] == std::array<uint8_t, 3>{128, 0, 0}));
  CHECK((palette[1] == std::array<uint8_t, 3>{0, 128, 0}));
  CHECK((palette[2] == std::array<uint8_t, 3>{128, 128, 0}));
  CHECK((palette[3] == std::array<uint8_t, 3>{0, 0, 128}));
  CHECK((palette[4] == std::array<uint8_t, 3>{128, 0, 128}));
  std::set<std::array<uint8_t, 3>> distinct(palette.begin(), palette.end());
  CHECK(distinct.size() == 256);
  CHECK(distinct.count({0, 0, 0}) == 0);
  CHECK((default_palette(10) == Palette(palette.begin(), palette.begin() + 10)));  // deterministic prefix
  CHECK(default_palette(0).empty());
  CHECK_THROWS_WITH(default_palette(-1), Contains("cac_data::default_palette: expected 0 <= n < 2^24 - 1 but got -1"));
}

TEST_CASE("visualize: colorize and overlay", "[visualize]") {
  const Palette palette{{255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
  const torch::Tensor mask = torch::tensor({0, 1, 255, 2, 0, 1}, torch::kLong).view({2, 3});
  const cv::Mat colour = colorize(mask, palette);
  REQUIRE(colour.type() == CV_8UC3);
  REQUIRE(colour.rows == 2);
  REQUIRE(colour.cols == 3);
  CHECK(pixel(colour, 0, 0) == cv::Vec3b(0, 0, 255));  // RGB red as BGR
  CHECK(pixel(colour, 0, 1) == cv::Vec3b(0, 255, 0));
  CHECK(pixel(colour, 0, 2) == cv::Vec3b(0, 0, 0));  // 255: black
  CHECK(pixel(colour, 1, 0) == cv::Vec3b(30, 20, 10));
  // A non-contiguous mask.
  const cv::Mat transposed = colorize(mask.t(), palette);
  CHECK(transposed.rows == 3);
  CHECK(pixel(transposed, 2, 0) == cv::Vec3b(0, 0, 0));
  CHECK(pixel(transposed, 1, 1) == cv::Vec3b(0, 0, 255));
  CHECK_THROWS_WITH(colorize(torch::tensor({0, 3}, torch::kLong).view({1, 2}), palette),
                    Contains("cac_eval::colorize: expected mask values in [0, 3) or 255 but got 3"));
  CHECK_THROWS_WITH(colorize(mask.to(torch::kInt), palette), Contains("expected an int64 mask but got Int"));

  const cv::Mat image(2, 3, CV_8UC3, cv::Scalar(100, 50, 200));
  const cv::Mat flat(2, 3, CV_8UC3, cv::Scalar(0, 255, 12));
  // 0.75·(100, 50, 200) + 0.25·(0, 255, 12) = (75, 101.25, 153).
  CHECK(pixel(overlay(image, flat, 0.25), 1, 2) == cv::Vec3b(75, 101, 153));
  CHECK(cv::norm(overlay(image, flat, 0.0), image, cv::NORM_INF) == 0);
  CHECK(cv::norm(overlay(image, flat, 1.0), flat, cv::NORM_INF) == 0);
  // Default opacity 0.5 on the colourised mask: black (ignored) pixels halve the image.
  CHECK(pixel(overlay(image, colour), 0, 2) == cv::Vec3b(50, 25, 100));
  CHECK_THROWS_WITH(overlay(image, cv::Mat(3, 3, CV_8UC3)), Contains("expected a colour mask of size 3x2"));
  CHECK_THROWS_WITH(overlay(image, flat, 1.5), Contains("expected opacity in [0, 1] but got 1.5"));
}

TEST_CASE("visualize: write_png round-trips and leaves no temporary file", "[visualize]") {
  const auto dir = temp_dir("png");
  cv::Mat image(17, 23, CV_8UC3);
  cv::randu(image, 0, 256);
  const auto path = dir / "nested" / "mask.png";
  write_png(path, image);
  write_png(path, image);  // overwrites
  const cv::Mat back = cv::imread(path.string(), cv::IMREAD_UNCHANGED);
  REQUIRE(back.type() == CV_8UC3);
  CHECK(cv::norm(back, image, cv::NORM_INF) == 0);
  cv::Mat grey(5, 7, CV_16UC1, cv::Scalar(40000));
  write_png(dir / "grey.png", grey);
  CHECK(cv::norm(cv::imread((dir / "grey.png").string(), cv::IMREAD_UNCHANGED), grey, cv::NORM_INF) == 0);
  int files = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) files += entry.is_regular_file();
  CHECK(files == 2);
  CHECK_THROWS_WITH(write_png(dir / "empty.png", cv::Mat()), Contains("expected a non-empty image"));
  CHECK_THROWS_WITH(write_png(dir / "float.png", cv::Mat(2, 2, CV_32FC1)), Contains("8- or 16-bit"));
  // A parent that is a file: the error names the PNG and the system's reason, nothing is left.
  write_png(dir / "file", grey);
  CHECK_THROWS_WITH(write_png(dir / "file" / "x.png", grey),
                    Contains("cac_io::write_file: cannot write " + (dir / "file" / "x.png").string()));
  std::filesystem::remove_all(dir);
}

TEST_CASE("visualize: write_prediction writes the palette mask and the overlay", "[visualize]") {
  const auto dir = temp_dir("prediction");
  const Palette palette{{255, 0, 0}, {0, 0, 255}};
  const cv::Mat image(2, 3, CV_8UC3, cv::Scalar(0, 0, 0));
  write_prediction(dir / "show", "a", image, torch::tensor({0, 1, 1, 0, 0, 1}, torch::kLong).view({2, 3}), palette,
                   0.5);
  const cv::Mat mask = cv::imread((dir / "show" / "a.png").string(), cv::IMREAD_COLOR);
  const cv::Mat over = cv::imread((dir / "show" / "a_overlay.png").string(), cv::IMREAD_COLOR);
  REQUIRE(mask.size() == cv::Size(3, 2));
  CHECK(pixel(mask, 0, 0) == cv::Vec3b(0, 0, 255));  // red in BGR
  CHECK(pixel(mask, 0, 1) == cv::Vec3b(255, 0, 0));  // blue in BGR
  CHECK(pixel(over, 0, 0) == cv::Vec3b(0, 0, 128));  // half of red over black, rounded
  std::filesystem::remove_all(dir);
}

TEST_CASE("visualize: plot_curves", "[visualize]") {
  const auto dir = temp_dir("plot");
  std::vector<double> iterations, baseline, cac, miou;
  for (int i = 0; i <= 80; ++i) {
    iterations.push_back(i * 1000.0);
    baseline.push_back(2.5 * std::exp(-i / 20.0) + 0.3);
    cac.push_back(2.7 * std::exp(-i / 18.0) + 0.25);
    miou.push_back(i % 8 == 0 ? 0.3 + 0.1 * std::log1p(i) : NAN);  // sparse points between gaps
  }
  const cv::Scalar red(40, 39, 214), blue(180, 119, 31);
  const std::vector<Curve> curves{{"baseline", iterations, baseline, blue},
                                  {"+ CAC", iterations, cac, red},
                                  {"mIoU (default colour)", iterations, miou, std::nullopt}};
  const auto path = dir / "loss.png";
  plot_curves(path, curves, PlotOptions().title("FCN MobileNetV2, ADE20K").x_label("iteration").y_label("loss"));
  const cv::Mat image = cv::imread(path.string(), cv::IMREAD_COLOR);
  REQUIRE(image.cols == 900);
  REQUIRE(image.rows == 500);
  CHECK(count_colour(image, blue) > 300);
  CHECK(count_colour(image, red) > 300);
  CHECK(count_colour(image, curve_color(2)) > 20);                        // isolated points and the legend sample
  CHECK(count_colour(image, cv::Scalar(0, 0, 0)) > 200);                  // axes, text
  CHECK(count_colour(image, cv::Scalar(255, 255, 255)) > 900 * 500 / 2);  // mostly background

  SECTION("other sizes, fixed y range, no curves") {
    const cv::Mat small =
        draw_curves(curves, PlotOptions().width(300).height(200).y_range({0.0, 1.0}).antialias(false));
    CHECK(small.size() == cv::Size(300, 200));
    CHECK(count_colour(small, red) > 50);
    const cv::Mat empty = draw_curves({}, PlotOptions().title("nothing"));
    CHECK(empty.size() == cv::Size(900, 500));
  }
  SECTION("a legend that would cover curves in every corner goes beside the plot") {
    // The rightmost black pixel of the middle row is the plot frame (the legend sits higher up).
    auto frame_right = [](const cv::Mat& drawn) {
      for (int x = drawn.cols - 1; x >= 0; --x) {
        if (drawn.at<cv::Vec3b>(drawn.rows / 2, x) == cv::Vec3b(0, 0, 0)) return x;
      }
      return -1;
    };
    // Two lines along the top and the bottom of a fixed y range run through all four corners.
    const std::vector<Curve> edges{{"top", {0.0, 1.0}, {0.95, 0.95}, blue}, {"bottom", {0.0, 1.0}, {0.05, 0.05}, red}};
    const cv::Mat crossed = draw_curves(edges, PlotOptions().y_range({0.0, 1.0}));
    const cv::Mat corner = draw_curves(curves);  // the top right corner is free of these
    INFO("frame right edge: crossed " << frame_right(crossed) << ", corner " << frame_right(corner));
    CHECK(frame_right(corner) > 900 - 40);
    CHECK(frame_right(crossed) < 900 - 100);
    CHECK(frame_right(crossed) > 900 / 2);
    // The legend's samples lie right of the frame.
    int64_t outside = 0;
    for (int y = 0; y < crossed.rows; ++y) {
      for (int x = frame_right(crossed) + 1; x < crossed.cols; ++x) {
        outside += crossed.at<cv::Vec3b>(y, x) == cv::Vec3b(180, 119, 31);
      }
    }
    CHECK(outside > 20);
  }
  SECTION("errors") {
    CHECK_THROWS_WITH(
        draw_curves({{"bad", {1.0, 2.0}, {1.0}, std::nullopt}}),
        Contains("cac_eval::draw_curves: expected as many x as y values in curve \"bad\" but got 2 and 1"));
    CHECK_THROWS_WITH(draw_curves(curves, PlotOptions().width(50)), Contains("expected a size of at least 200x150"));
    CHECK_THROWS_WITH(draw_curves(curves, PlotOptions().y_range({1.0, 0.0})), Contains("expected y_range empty"));
  }
  std::filesystem::remove_all(dir);
}
