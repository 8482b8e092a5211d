// cac_data transforms: mmcv's rescale arithmetic (golden values by hand from mmcv.rescale_size),
// image/label alignment through resize, crop and flip, the crop's cat_max_ratio, padding,
// photometric distortion and determinism under a seed.

#include "data_test_support.hpp"

#include "data/random.hpp"
#include "data/transforms.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <opencv2/imgproc.hpp>

#include <cmath>
#include <set>

using namespace cac_data;
using cac_data_test::coordinate_image;
using cac_data_test::coordinate_label;
using Catch::Matchers::Contains;

namespace {

/// Counts pixels whose label disagrees with the coordinates decoded from the image (blue = 2x,
/// green = 2y of the source), ignoring pixels within `margin` source pixels of a block border.
int64_t misaligned(const cv::Mat& image, const cv::Mat& label, double margin, int64_t* checked) {
  int64_t wrong = 0;
  for (int y = 0; y < image.rows; ++y) {
    for (int x = 0; x < image.cols; ++x) {
      const cv::Vec3b pixel = image.at<cv::Vec3b>(y, x);
      const double sx = pixel[0] / 2.0, sy = pixel[1] / 2.0;
      const double dx = std::fmod(sx, 16.0), dy = std::fmod(sy, 16.0);
      if (dx < margin || dx > 16 - margin || dy < margin || dy > 16 - margin) {
        continue;
      }
      ++*checked;
      wrong += label.at<uint8_t>(y, x) != (static_cast<int>(sx) / 16) * 6 + static_cast<int>(sy) / 16;
    }
  }
  return wrong;
}

/// The uint8 BGR image back from a normalised float tensor (inverse of `normalize`, defaults).
cv::Mat denormalize(const torch::Tensor& image) {
  const NormalizeOptions n;
  const auto mean = torch::tensor({n.mean()[0], n.mean()[1], n.mean()[2]}, torch::kFloat32).view({3, 1, 1});
  const auto std = torch::tensor({n.std()[0], n.std()[1], n.std()[2]}, torch::kFloat32).view({3, 1, 1});
  const torch::Tensor bgr =
      (image * std + mean).round().clamp(0, 255).to(torch::kUInt8).flip({0}).permute({1, 2, 0}).contiguous();
  cv::Mat out(static_cast<int>(bgr.size(0)), static_cast<int>(bgr.size(1)), CV_8UC3);
  std::memcpy(out.data, bgr.data_ptr(), static_cast<size_t>(bgr.numel()));
  return out;
}

cv::Mat label_mat(const torch::Tensor& label) {
  const torch::Tensor bytes = label.to(torch::kUInt8).contiguous();
  cv::Mat out(static_cast<int>(bytes.size(0)), static_cast<int>(bytes.size(1)), CV_8UC1);
  std::memcpy(out.data, bytes.data_ptr(), static_cast<size_t>(bytes.numel()));
  return out;
}

TrainPipelineOptions small_pipeline() { return TrainPipelineOptions().img_scale({256, 64}).crop_size({48, 40}); }

}  // namespace

TEST_CASE("portable random helpers", "[transforms]") {
  std::mt19937_64 rng(7);
  std::set<int64_t> seen;
  for (int i = 0; i < 2000; ++i) {
    const int64_t v = uniform_int(rng, -2, 3);
    REQUIRE(v >= -2);
    REQUIRE(v <= 3);
    seen.insert(v);
    const double u = uniform_real(rng, 0.5, 2.0);
    REQUIRE(u >= 0.5);
    REQUIRE(u < 2.0);
  }
  CHECK(seen.size() == 6);
  // Fixed by the standard: the 10000th output of a default-seeded mt19937_64.
  std::mt19937_64 standard;
  standard.discard(9999);
  CHECK(standard() == 9981545732273789042ULL);
  CHECK(derive_seed(0, 1, 2) != derive_seed(0, 2, 1));
}

TEST_CASE("rescale_size follows mmcv", "[transforms]") {
  // mmcv.rescale_size((w, h), (2048, 512)): factor min(2048 / max(w, h), 512 / min(w, h)).
  CHECK(rescale_size(640, 480, {2048, 512}) == std::pair<int, int>(683, 512));  // 640·16/15 = 682.67
  CHECK(rescale_size(640, 480, {1024, 256}) == std::pair<int, int>(341, 256));  // ratio 0.5
  CHECK(rescale_size(2048, 1024, {2048, 1024}) == std::pair<int, int>(2048, 1024));
  CHECK(rescale_size(480, 2000, {2048, 512}) == std::pair<int, int>(492, 2048));  // long side bound: 2048/2000
  CHECK_THROWS_WITH(rescale_size(0, 4, {2048, 512}), Contains("expected a positive image size"));
}

TEST_CASE("label resize is nearest, image resize bilinear", "[transforms]") {
  cv::Mat image = coordinate_image(32, 48), label(32, 48, CV_8UC1);
  for (int y = 0; y < 32; ++y) {
    for (int x = 0; x < 48; ++x) {
      label.at<uint8_t>(y, x) = ((x + y) % 2) ? 3 : 7;
    }
  }
  rescale(image, label, {100, 45});  // factor min(100/48, 45/32) = 1.40625 → 68×45
  CHECK(image.cols == 68);
  CHECK(image.rows == 45);
  CHECK(label.cols == 68);
  std::set<int> values;
  for (int y = 0; y < label.rows; ++y) {
    for (int x = 0; x < label.cols; ++x) {
      values.insert(label.at<uint8_t>(y, x));
    }
  }
  CHECK(values == std::set<int>{3, 7});
  // Bilinear: the blue channel (2x) takes values between the even source values.
  bool odd = false;
  for (int x = 0; x < image.cols; ++x) {
    odd = odd || image.at<cv::Vec3b>(10, x)[0] % 2 == 1;
  }
  CHECK(odd);
}

TEST_CASE("resize, crop and flip keep the label aligned with the image", "[transforms]") {
  const cv::Mat source_image = coordinate_image(96, 128), source_label = coordinate_label(96, 128);
  int flips = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed);
    cv::Mat image = source_image, label = source_label;
    random_resize(image, label, {256, 64}, {0.5, 2.0}, rng);
    random_crop(image, label, {48, 40}, 0.75, 255, rng);
    const cv::Mat before = image.clone();
    random_flip(image, label, 0.5, rng);
    flips += cv::norm(before, image, cv::NORM_INF) > 0;
    CHECK(image.rows == label.rows);
    CHECK(image.cols == label.cols);
    CHECK(image.rows <= 48);
    CHECK(image.cols <= 40);
    int64_t checked = 0;
    CHECK(misaligned(image, label, 3.0, &checked) == 0);
    CHECK(checked > 0);
  }
  CHECK(flips > 3);
  CHECK(flips < 17);
}

TEST_CASE("the full training pipeline: alignment, padding, photometric leaves labels", "[transforms]") {
  const RawSample raw{coordinate_image(96, 128), coordinate_label(96, 128), "coords"};
  bool padded = false;
  for (uint64_t seed = 0; seed < 16; ++seed) {
    std::mt19937_64 rng(seed), rng_photo(seed), rng_again(seed);
    const Sample plain = train_transform(raw, small_pipeline().photometric(false), rng);
    REQUIRE(plain.image.sizes() == torch::IntArrayRef({3, 48, 40}));
    REQUIRE(plain.label.sizes() == torch::IntArrayRef({48, 40}));
    CHECK(plain.image.dtype() == torch::kFloat32);
    CHECK(plain.label.dtype() == torch::kInt64);
    CHECK(plain.name == "coords");
    // Padding: label 255 exactly where the image is 0 in every channel (normalised space).
    const torch::Tensor pad = plain.label == 255;
    padded = padded || pad.any().item<bool>();
    CHECK(torch::equal(pad, (plain.image == 0).all(0)));
    // Alignment through the whole pipeline (pixels outside the padding).
    const cv::Mat image = denormalize(plain.image), label = label_mat(plain.label);
    int64_t checked = 0, wrong = 0;
    const int rows = static_cast<int>((~pad).any(1).sum().item<int64_t>());
    const int cols = static_cast<int>((~pad).any(0).sum().item<int64_t>());
    wrong = misaligned(image(cv::Rect(0, 0, cols, rows)), label(cv::Rect(0, 0, cols, rows)), 3.0, &checked);
    CHECK(wrong == 0);
    // Photometric distortion draws after the geometry: same labels, other pixels.
    const Sample photo = train_transform(raw, small_pipeline(), rng_photo);
    CHECK(torch::equal(photo.label, plain.label));
    // Determinism under the seed.
    const Sample again = train_transform(raw, small_pipeline(), rng_again);
    CHECK(torch::equal(again.image, photo.image));
    CHECK(torch::equal(again.label, photo.label));
  }
  CHECK(padded);
}

TEST_CASE("random_crop respects cat_max_ratio", "[transforms]") {
  // Left half class 1, right half class 2, a strip of ignored pixels: a 100-wide crop has no
  // class above 75% only when its left edge lies in (25, 75).
  cv::Mat label(60, 200, CV_8UC1, cv::Scalar(1));
  label(cv::Rect(100, 0, 100, 60)).setTo(2);
  label(cv::Rect(0, 0, 200, 5)).setTo(255);
  const cv::Mat image = coordinate_image(60, 200);
  auto dominant_share = [](const cv::Mat& crop) {
    const int ones = cv::countNonZero(crop == 1), twos = cv::countNonZero(crop == 2);
    return static_cast<double>(std::max(ones, twos)) / (ones + twos);
  };
  int unconstrained_violations = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    std::mt19937_64 rng(seed), rng_free(seed);
    cv::Mat i1 = image, l1 = label, i2 = image, l2 = label;
    random_crop(i1, l1, {60, 100}, 0.75, 255, rng);
    CHECK(dominant_share(l1) < 0.75);
    CHECK(l1.cols == 100);
    random_crop(i2, l2, {60, 100}, 1.0, 255, rng_free);
    unconstrained_violations += dominant_share(l2) >= 0.75;
    // The image is cropped at the label's window: blue = 2x at the crop's first column.
    CHECK(i1.at<cv::Vec3b>(10, 0)[0] % 2 == 0);
  }
  CHECK(unconstrained_violations > 5);
}

TEST_CASE("photometric distortion changes pixels within its bounds", "[transforms]") {
  cv::Mat image(8, 8, CV_8UC3, cv::Scalar(90, 120, 150));
  bool changed = false;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed);
    cv::Mat out = image.clone();
    photo_metric_distortion(out, PhotoMetricOptions(), rng);
    CHECK(out.type() == CV_8UC3);
    changed = changed || cv::norm(out, image, cv::NORM_INF) > 0;
  }
  CHECK(changed);
  // A grey image with only brightness enabled (grey survives the HSV round trip exactly): one
  // uniform offset of at most 32 levels.
  const cv::Mat grey(8, 8, CV_8UC3, cv::Scalar(100, 100, 100));
  for (uint64_t seed = 0; seed < 8; ++seed) {
    std::mt19937_64 rng(seed);
    cv::Mat out = grey.clone();
    photo_metric_distortion(out, PhotoMetricOptions().contrast_range({1, 1}).saturation_range({1, 1}).hue_delta(0),
                            rng);
    double low = 0, high = 0;
    cv::minMaxLoc(out, &low, &high);
    CHECK(low == high);
    CHECK(std::abs(low - 100) <= 32);
  }
}

TEST_CASE("normalize and the test pipeline", "[transforms]") {
  cv::Mat image(2, 3, CV_8UC3, cv::Scalar(10, 20, 30));  // BGR
  const torch::Tensor x = normalize(image, NormalizeOptions());
  REQUIRE(x.sizes() == torch::IntArrayRef({3, 2, 3}));
  CHECK(x[0][0][0].item<float>() == Approx((30 - 123.675) / 58.395).epsilon(1e-6));  // R first
  CHECK(x[2][1][2].item<float>() == Approx((10 - 103.53) / 57.375).epsilon(1e-6));
  const RawSample raw{coordinate_image(96, 128), coordinate_label(96, 128), "t"};
  const Sample sample = test_transform(raw, TestPipelineOptions().img_scale({256, 64}));
  CHECK(sample.image.sizes() == torch::IntArrayRef({3, 64, 85}));  // 128·(64/96) = 85.3
  CHECK(sample.label.sizes() == torch::IntArrayRef({96, 128}));    // original resolution
  CHECK(sample.label[20][40].item<int64_t>() == (40 / 16) * 6 + 20 / 16);
  const Sample unlabeled = test_transform(RawSample{raw.image, cv::Mat(), "u"}, TestPipelineOptions());
  CHECK_FALSE(unlabeled.label.defined());
  CHECK_THROWS_WITH(normalize(cv::Mat(2, 2, CV_8UC1), NormalizeOptions()),
                    Contains("cac_data::normalize: expected a BGR uint8 image (CV_8UC3)"));
}
