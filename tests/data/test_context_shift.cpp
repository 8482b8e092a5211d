// The bundled context-shift dataset: byte-identical regeneration, idempotence, atomic
// replacement, its reader, and statistics showing the per-image shift does what it claims.

#include "data_test_support.hpp"

#include "data/context_shift.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <sstream>

using namespace cac_data;
using cac_data_test::TempDir;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

std::map<std::string, std::string> read_tree(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file()) {
      std::ifstream stream(entry.path(), std::ios::binary);
      std::ostringstream bytes;
      bytes << stream.rdbuf();
      files[entry.path().lexically_relative(root).generic_string()] = bytes.str();
    }
  }
  return files;
}

ContextShiftOptions tiny() { return ContextShiftOptions().num_train(6).num_val(3).image_size(32); }

struct ShiftStatistics {
  double across_images_spread;   // mean over classes of the std across images of the class's mean colour
  double global_accuracy;        // nearest class mean, means over the whole split
  double within_image_accuracy;  // nearest class mean, means of the pixel's own image
  double normalised_accuracy;    // nearest class mean after standardising each image's channels (what an
                                 // image-level statistic can undo)
};

ShiftStatistics statistics(const ContextShiftOptions& options, int images) {
  const int64_t k = options.num_classes();
  std::vector<std::vector<std::array<double, 4>>> per_image;  // [image][class] = sum r, g, b, count
  std::vector<RawSample> samples;
  for (int i = 0; i < images; ++i) {
    samples.push_back(context_shift_sample(options, "train", i));
    std::vector<std::array<double, 4>> sums(static_cast<size_t>(k + 1), {0, 0, 0, 0});
    const RawSample& s = samples.back();
    for (int y = 0; y < s.image.rows; ++y) {
      for (int x = 0; x < s.image.cols; ++x) {
        const auto p = s.image.at<cv::Vec3b>(y, x);
        auto& sum = sums[s.label.at<uint8_t>(y, x)];
        sum[0] += p[0], sum[1] += p[1], sum[2] += p[2], sum[3] += 1;
      }
    }
    per_image.push_back(sums);
  }
  std::vector<std::array<double, 3>> global(static_cast<size_t>(k + 1), {0, 0, 0});
  double spread = 0;
  for (int64_t c = 1; c <= k; ++c) {
    std::array<double, 4> total{0, 0, 0, 0};
    std::vector<std::array<double, 3>> means;
    for (const auto& sums : per_image) {
      if (sums[c][3] > 0) {
        means.push_back({sums[c][0] / sums[c][3], sums[c][1] / sums[c][3], sums[c][2] / sums[c][3]});
      }
      for (int j = 0; j < 4; ++j) total[j] += sums[c][j];
    }
    global[c] = {total[0] / total[3], total[1] / total[3], total[2] / total[3]};
    double variance = 0;
    for (const auto& m : means) {
      for (int j = 0; j < 3; ++j) variance += (m[j] - global[c][j]) * (m[j] - global[c][j]) / means.size();
    }
    spread += std::sqrt(variance) / k;
  }
  auto nearest = [&](const cv::Vec3b& p, auto&& mean_of, auto&& present) {
    int64_t best_class = 0;
    double best = 1e300;
    for (int64_t c = 1; c <= k; ++c) {
      if (!present(c)) continue;
      const auto m = mean_of(c);
      const double d = (p[0] - m[0]) * (p[0] - m[0]) + (p[1] - m[1]) * (p[1] - m[1]) + (p[2] - m[2]) * (p[2] - m[2]);
      if (d < best) best = d, best_class = c;
    }
    return best_class;
  };
  // Each image's pixels standardised per channel (mean 0, std 1 over the image), then class means
  // of the standardised colours over the whole split.
  std::vector<std::array<double, 6>> moments;  // [image] = mean b, g, r, std b, g, r
  for (const auto& s : samples) {
    cv::Scalar mean, deviation;
    cv::meanStdDev(s.image, mean, deviation);
    moments.push_back({mean[0], mean[1], mean[2], deviation[0] + 1e-9, deviation[1] + 1e-9, deviation[2] + 1e-9});
  }
  auto standardised = [&](size_t i, const cv::Vec3b& p) {
    return std::array<double, 3>{(p[0] - moments[i][0]) / moments[i][3], (p[1] - moments[i][1]) / moments[i][4],
                                 (p[2] - moments[i][2]) / moments[i][5]};
  };
  std::vector<std::array<double, 4>> normalised_sums(static_cast<size_t>(k + 1), {0, 0, 0, 0});
  for (size_t i = 0; i < samples.size(); ++i) {
    for (int y = 0; y < samples[i].image.rows; ++y) {
      for (int x = 0; x < samples[i].image.cols; ++x) {
        const auto v = standardised(i, samples[i].image.at<cv::Vec3b>(y, x));
        auto& sum = normalised_sums[samples[i].label.at<uint8_t>(y, x)];
        sum[0] += v[0], sum[1] += v[1], sum[2] += v[2], sum[3] += 1;
      }
    }
  }
  int64_t correct_global = 0, correct_local = 0, correct_normalised = 0, total = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto& sums = per_image[i];
    for (int y = 0; y < samples[i].image.rows; ++y) {
      for (int x = 0; x < samples[i].image.cols; ++x) {
        const int64_t truth = samples[i].label.at<uint8_t>(y, x);
        if (truth == 0) continue;
        const auto p = samples[i].image.at<cv::Vec3b>(y, x);
        ++total;
        correct_global += nearest(
                              p, [&](int64_t c) { return global[c]; }, [](int64_t) { return true; }) == truth;
        correct_local += nearest(
                             p,
                             [&](int64_t c) {
                               return std::array<double, 3>{sums[c][0] / sums[c][3], sums[c][1] / sums[c][3],
                                                            sums[c][2] / sums[c][3]};
                             },
                             [&](int64_t c) { return sums[c][3] > 0; }) == truth;
        const auto v = standardised(i, p);
        int64_t best_class = 0;
        double best = 1e300;
        for (int64_t c = 1; c <= k; ++c) {
          const auto& m = normalised_sums[c];
          double d = 0;
          for (int j = 0; j < 3; ++j) d += (v[j] - m[j] / m[3]) * (v[j] - m[j] / m[3]);
          if (d < best) best = d, best_class = c;
        }
        correct_normalised += best_class == truth;
      }
    }
  }
  return {spread, static_cast<double>(correct_global) / total, static_cast<double>(correct_local) / total,
          static_cast<double>(correct_normalised) / total};
}

}  // namespace

TEST_CASE("generate_context_shift: deterministic, idempotent, atomic", "[context_shift]") {
  TempDir dir;
  generate_context_shift(dir.path() / "a", tiny());
  generate_context_shift(dir.path() / "b", tiny());
  const auto a = read_tree(dir.path() / "a");
  CHECK(a.size() == 2 * (6 + 3) + 1);
  CHECK(a.count("ADEChallengeData2016/images/training/cs_train_00000005.png") == 1);
  CHECK(a.count("ADEChallengeData2016/annotations/validation/cs_val_00000002.png") == 1);
  CHECK(a == read_tree(dir.path() / "b"));              // byte-identical
  CHECK(read_tree(dir.path()).size() == 2 * a.size());  // no temporary directories left

  SECTION("same options: nothing rewritten") {
    std::ofstream(dir.path() / "a" / "marker") << "kept";
    generate_context_shift(dir.path() / "a", tiny());
    CHECK(fs::exists(dir.path() / "a" / "marker"));
  }
  SECTION("other options: replaced") {
    std::ofstream(dir.path() / "a" / "marker") << "gone";
    generate_context_shift(dir.path() / "a", tiny().seed(1));
    CHECK_FALSE(fs::exists(dir.path() / "a" / "marker"));
    const auto c = read_tree(dir.path() / "a");
    CHECK(c.size() == a.size());
    CHECK(c != a);
    CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 2);
  }
  SECTION("a directory holding other files is refused") {
    fs::create_directories(dir.path() / "other");
    std::ofstream(dir.path() / "other" / "mine.txt") << "data";
    CHECK_THROWS_WITH(generate_context_shift(dir.path() / "other", tiny()),
                      Contains("to be absent, empty or a context-shift dataset but it holds other files"));
    CHECK_THROWS_WITH(generate_context_shift(dir.path() / "x", tiny().num_classes(1)),
                      Contains("expected num_classes in [2, 254] but got 1"));
  }
}

TEST_CASE("the context-shift dataset reads as ADE20K with its own classes", "[context_shift]") {
  TempDir dir;
  generate_context_shift(dir.path(), tiny().num_classes(4));
  const auto train = make_dataset(DatasetOptions("context_shift", dir.path().string()));
  const auto val = make_dataset(DatasetOptions("context_shift", dir.path().string()).split("val"));
  CHECK(train->size() == 6);
  CHECK(val->size() == 3);
  CHECK(train->info().name == "context_shift");
  CHECK(train->info().classes == std::vector<std::string>{"class1", "class2", "class3", "class4"});
  CHECK((train->info().palette == context_shift_info(4).palette));
  const RawSample sample = val->load(2);
  const RawSample rendered = context_shift_sample(tiny().num_classes(4), "val", 2);
  CHECK(sample.name == rendered.name);
  CHECK(cv::norm(sample.image, rendered.image, cv::NORM_INF) == 0);  // PNG is lossless
  for (int y = 0; y < sample.label.rows; ++y) {
    for (int x = 0; x < sample.label.cols; ++x) {
      const int raw = rendered.label.at<uint8_t>(y, x), reduced = sample.label.at<uint8_t>(y, x);
      REQUIRE(reduced == (raw == 0 ? 255 : raw - 1));
    }
  }
  // The ADE20K reader with the override reads the same files.
  const auto as_ade = make_dataset(
      DatasetOptions("ade20k", dir.path().string()).img_suffix(".png").classes(context_shift_info(4).classes));
  CHECK(as_ade->size() == 6);
  CHECK_THROWS_WITH(make_dataset(DatasetOptions("context_shift", (dir.path() / "ADEChallengeData2016").string())),
                    Contains("expected the context-shift stamp"));
}

TEST_CASE("the shift moves class colours across images, not within them", "[context_shift]") {
  const auto options = ContextShiftOptions().image_size(48);
  const ShiftStatistics shifted = statistics(options, 48);
  const ShiftStatistics control = statistics(ContextShiftOptions(options).shift(false), 48);
  INFO("spread shifted " << shifted.across_images_spread << ", control " << control.across_images_spread);
  INFO("global accuracy shifted " << shifted.global_accuracy << ", control " << control.global_accuracy);
  INFO("within-image accuracy shifted " << shifted.within_image_accuracy << ", control "
                                        << control.within_image_accuracy);
  CHECK(shifted.across_images_spread > 4 * control.across_images_spread);
  CHECK(shifted.global_accuracy < control.global_accuracy - 0.15);
  CHECK(shifted.within_image_accuracy > 0.9);
  CHECK(control.global_accuracy > 0.9);
  // Same seed, same layouts: the control differs only in pixel values.
  const RawSample a = context_shift_sample(options, "train", 3),
                  b = context_shift_sample(ContextShiftOptions(options).shift(false), "train", 3);
  CHECK(cv::norm(a.label, b.label, cv::NORM_INF) == 0);
}

TEST_CASE("the class-wise shift is not undone by image-level statistics", "[context_shift]") {
  const auto options = ContextShiftOptions().image_size(48);
  const ShiftStatistics image_wide = statistics(options, 48);
  const ShiftStatistics class_wise = statistics(ContextShiftOptions(options).class_wise(true), 48);
  const ShiftStatistics control = statistics(ContextShiftOptions(options).shift(false), 48);
  INFO("normalised accuracy image-wide " << image_wide.normalised_accuracy << ", class-wise "
                                         << class_wise.normalised_accuracy << ", control "
                                         << control.normalised_accuracy);
  INFO("global accuracy image-wide " << image_wide.global_accuracy << ", class-wise " << class_wise.global_accuracy);
  INFO("within-image accuracy class-wise " << class_wise.within_image_accuracy);
  // Standardising each image's channels (an image-level correction) helps against an image-wide
  // cast and hurts against a class-wise one (measured: 0.787 -> 0.832 and 0.776 -> 0.712).
  CHECK(image_wide.normalised_accuracy > image_wide.global_accuracy + 0.02);
  CHECK(class_wise.normalised_accuracy < class_wise.global_accuracy - 0.03);
  CHECK(class_wise.normalised_accuracy < image_wide.normalised_accuracy - 0.08);
  // Across images the class colours overlap as much as under the image-wide cast.
  CHECK(class_wise.global_accuracy < control.global_accuracy - 0.1);
  // Within an image, classes stay separable by colour alone.
  CHECK(class_wise.within_image_accuracy > 0.85);
  // Same layouts as the other variants; with class_wise false nothing changes.
  const RawSample a = context_shift_sample(ContextShiftOptions(options).class_wise(true), "val", 2),
                  b = context_shift_sample(options, "val", 2);
  CHECK(cv::norm(a.label, b.label, cv::NORM_INF) == 0);
  CHECK(cv::norm(a.image, b.image, cv::NORM_INF) > 0);
  const RawSample control_a =
                      context_shift_sample(ContextShiftOptions(options).shift(false).class_wise(true), "val", 2),
                  control_b = context_shift_sample(ContextShiftOptions(options).shift(false), "val", 2);
  CHECK(cv::norm(control_a.image, control_b.image, cv::NORM_INF) == 0);
}
