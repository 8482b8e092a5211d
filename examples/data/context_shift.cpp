#include "context_shift.hpp"

#include "image_file.hpp"
#include "random.hpp"

#include "io/atomic_file.hpp"

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include <unistd.h>

namespace cac_data {

namespace fs = std::filesystem;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr const char* kStampHeader = "cac context-shift dataset v1";

void check_options(const ContextShiftOptions& o) {
  TORCH_CHECK(o.num_classes() >= 2 && o.num_classes() <= 254,
              "cac_data::ContextShiftOptions: expected num_classes in [2, 254] but got ", o.num_classes());
  TORCH_CHECK(o.image_size() >= 8, "cac_data::ContextShiftOptions: expected image_size >= 8 but got ", o.image_size());
  TORCH_CHECK(o.num_train() >= 1 && o.num_val() >= 1,
              "cac_data::ContextShiftOptions: expected num_train >= 1 and num_val >= 1 but got ", o.num_train(), ", ",
              o.num_val());
  TORCH_CHECK(o.shift_strength() >= 0 && o.shift_strength() < 1,
              "cac_data::ContextShiftOptions: expected shift_strength in [0, 1) but got ", o.shift_strength());
  TORCH_CHECK(o.regions() >= 1, "cac_data::ContextShiftOptions: expected regions >= 1 but got ", o.regions());
  TORCH_CHECK(o.plain_ratio() >= 0 && o.plain_ratio() <= 1,
              "cac_data::ContextShiftOptions: expected plain_ratio in [0, 1] but got ", o.plain_ratio());
  TORCH_CHECK(o.other_ratio() >= 0 && o.other_ratio() < 1,
              "cac_data::ContextShiftOptions: expected other_ratio in [0, 1) but got ", o.other_ratio());
  TORCH_CHECK(
      o.noise() >= 0 && o.stripe_period() > 0 && o.stripe_contrast() >= 0 && o.stripe_contrast() < 1,
      "cac_data::ContextShiftOptions: expected noise >= 0, stripe_period > 0 and stripe_contrast in [0, 1) but got ",
      o.noise(), ", ", o.stripe_period(), ", ", o.stripe_contrast());
}

/// HSV (all in [0, 1]) to RGB in [0, 1].
std::array<double, 3> hsv_to_rgb(double h, double s, double v) {
  const double sector = h * 6.0;
  const int i = static_cast<int>(std::floor(sector)) % 6;
  const double f = sector - std::floor(sector);
  const double p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  switch (i) {
    case 0: return {v, t, p};
    case 1: return {q, v, p};
    case 2: return {p, v, t};
    case 3: return {p, q, v};
    case 4: return {t, p, v};
    default: return {v, p, q};
  }
}

/// The fixed appearance of class k (0-based): evenly spaced hues and stripe orientations.
struct ClassAppearance {
  std::array<double, 3> rgb;
  double angle;
};

ClassAppearance appearance(int64_t k, int64_t num_classes) {
  const double fraction = static_cast<double>(k) / static_cast<double>(num_classes);
  return {hsv_to_rgb(fraction, 0.55, 0.75), kPi * fraction};
}

uint8_t to_byte(double v) { return static_cast<uint8_t>(std::min(255.0, std::max(0.0, v * 255.0)) + 0.5); }

std::string stamp_text(const ContextShiftOptions& o) {
  return fmt::format(
      "{}\nnum_classes={}\nimage_size={}\nnum_train={}\nnum_val={}\nshift={}\nclass_wise={}\nplain_ratio={}\nshift_"
      "strength={}\nseed={}\n"
      "regions={}\nother_ratio={}\nnoise={}\nstripe_period={}\nstripe_contrast={}\n",
      kStampHeader, o.num_classes(), o.image_size(), o.num_train(), o.num_val(), o.shift() ? 1 : 0,
      o.class_wise() ? 1 : 0, o.plain_ratio(), o.shift_strength(), o.seed(), o.regions(), o.other_ratio(), o.noise(),
      o.stripe_period(), o.stripe_contrast());
}

std::string read_text(const fs::path& path) {
  std::ifstream stream(path, std::ios::binary);
  std::ostringstream text;
  text << stream.rdbuf();
  return text.str();
}

bool has_stamp(const fs::path& root, const std::string& expected) {
  return fs::is_regular_file(context_shift_stamp(root)) && read_text(context_shift_stamp(root)) == expected;
}

/// A sibling of `root` no other process uses.
fs::path unique_sibling(const fs::path& root, const char* tag) {
  static std::atomic<uint64_t> counter{0};
  const fs::path parent = root.has_parent_path() ? root.parent_path() : fs::path(".");
  return parent / fmt::format(".{}.{}-{}-{}", root.filename().string(), tag, ::getpid(), counter++);
}

}  // namespace

DatasetInfo context_shift_info(int64_t num_classes) {
  TORCH_CHECK(num_classes >= 2 && num_classes <= 254,
              "cac_data::context_shift_info: expected num_classes in [2, 254] but got ", num_classes);
  DatasetInfo info;
  info.name = "context_shift";
  for (int64_t k = 0; k < num_classes; ++k) {
    const auto rgb = appearance(k, num_classes).rgb;
    info.classes.push_back(fmt::format("class{}", k + 1));
    info.palette.push_back({to_byte(rgb[0]), to_byte(rgb[1]), to_byte(rgb[2])});
  }
  return info;
}

fs::path context_shift_stamp(const fs::path& root) { return root / "context_shift.stamp"; }

DatasetInfo read_context_shift_info(const fs::path& root) {
  const fs::path stamp = context_shift_stamp(root);
  TORCH_CHECK(fs::is_regular_file(stamp), "cac_data::make_dataset: expected the context-shift stamp ", stamp.string(),
              " (written by generate_context_shift) but it does not exist");
  std::istringstream lines(read_text(stamp));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("num_classes=", 0) == 0) {
      return context_shift_info(std::stoll(line.substr(12)));
    }
  }
  TORCH_CHECK(false, "cac_data::make_dataset: expected a num_classes line in ", stamp.string(), " but found none");
}

RawSample context_shift_sample(const ContextShiftOptions& options, const std::string& split, int64_t index) {
  check_options(options);
  TORCH_CHECK(split == "train" || split == "val",
              "cac_data::context_shift_sample: expected split 'train' or 'val' but got '", split, "'");
  const int64_t count = split == "train" ? options.num_train() : options.num_val();
  TORCH_CHECK(index >= 0 && index < count, "cac_data::context_shift_sample: expected an index in [0, ", count,
              ") but got ", index);
  std::mt19937_64 rng(derive_seed(options.seed(), split == "train" ? 1 : 2, static_cast<uint64_t>(index)));
  const int size = static_cast<int>(options.image_size());
  const double s = options.shift_strength();

  // Layout: Voronoi sites with a class (0 = other), a stripe phase and an "other" colour each.
  struct Site {
    double x, y, phase;
    int64_t label;
    std::array<double, 3> other_rgb;
  };
  std::vector<Site> sites;
  for (int64_t r = 0; r < options.regions(); ++r) {
    Site site{};
    site.x = uniform_real(rng, 0, size);
    site.y = uniform_real(rng, 0, size);
    site.phase = uniform_real(rng, 0, 2 * kPi);
    site.label = bernoulli(rng, options.other_ratio()) ? 0 : uniform_int(rng, 1, options.num_classes());
    for (auto& c : site.other_rgb) {
      c = uniform_real(rng, 0.2, 0.8);
    }
    sites.push_back(site);
  }
  // The context shift, drawn in both variants so that the control has the same layouts and noise.
  std::array<double, 3> gain{};
  for (auto& g : gain) {
    g = 1 + s * uniform_real(rng, -1, 1);
  }
  const double offset = 0.5 * s * uniform_real(rng, -1, 1);
  const double period = options.stripe_period() * std::pow(2.0, s * uniform_real(rng, -1, 1));
  // Class-wise: each class's own gains and offset in this image, drawn after the image-wide ones so
  // that the other variants' images do not change.
  std::vector<std::array<double, 4>> class_shift;  // [class - 1] = gain r, g, b, offset
  if (options.shift() && options.class_wise()) {
    for (int64_t k = 0; k < options.num_classes(); ++k) {
      std::array<double, 4> draw{};
      for (int c = 0; c < 3; ++c) draw[c] = 1 + s * uniform_real(rng, -1, 1);
      draw[3] = 0.5 * s * uniform_real(rng, -1, 1);
      class_shift.push_back(draw);
    }
  }
  // Plain (stripeless) regions, drawn last for the same reason.
  std::vector<bool> plain(sites.size(), false);
  if (options.plain_ratio() > 0) {
    for (size_t r = 0; r < sites.size(); ++r) plain[r] = bernoulli(rng, options.plain_ratio());
  }
  if (!options.shift()) {
    gain = {1, 1, 1};
  }
  const double offset_used = options.shift() ? offset : 0.0;
  const double period_used = options.shift() ? period : options.stripe_period();

  RawSample sample;
  sample.name = fmt::format("cs_{}_{:08d}", split, index);
  sample.image.create(size, size, CV_8UC3);
  sample.label.create(size, size, CV_8UC1);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const Site* nearest = &sites.front();
      double best = 1e300;
      for (const auto& site : sites) {
        const double d = (site.x - x - 0.5) * (site.x - x - 0.5) + (site.y - y - 0.5) * (site.y - y - 0.5);
        if (d < best) {
          best = d;
          nearest = &site;
        }
      }
      std::array<double, 3> rgb = nearest->other_rgb;
      std::array<double, 3> pixel_gain = gain;
      double pixel_offset = offset_used;
      if (nearest->label > 0) {
        const ClassAppearance look = appearance(nearest->label - 1, options.num_classes());
        const double along = x * std::cos(look.angle) + y * std::sin(look.angle);
        const double contrast = plain[static_cast<size_t>(nearest - sites.data())] ? 0.0 : options.stripe_contrast();
        const double texture = 1 + contrast * std::sin(2 * kPi * along / period_used + nearest->phase);
        for (int c = 0; c < 3; ++c) {
          rgb[c] = look.rgb[c] * texture;
        }
        if (!class_shift.empty()) {
          const auto& own = class_shift[static_cast<size_t>(nearest->label - 1)];
          pixel_gain = {own[0], own[1], own[2]};
          pixel_offset = own[3];
        }
      } else if (!class_shift.empty()) {
        pixel_gain = {1, 1, 1};
        pixel_offset = 0;
      }
      cv::Vec3b& pixel = sample.image.at<cv::Vec3b>(y, x);
      for (int c = 0; c < 3; ++c) {
        // Irwin–Hall(3) noise, centred and scaled to unit variance.
        const double noise = 2 * (uniform01(rng) + uniform01(rng) + uniform01(rng) - 1.5);
        pixel[2 - c] = to_byte(rgb[c] * pixel_gain[c] + pixel_offset + options.noise() * noise);  // stored BGR
      }
      sample.label.at<uint8_t>(y, x) = static_cast<uint8_t>(nearest->label);
    }
  }
  return sample;
}

void generate_context_shift(const fs::path& root, const ContextShiftOptions& options) {
  check_options(options);
  const std::string stamp = stamp_text(options);
  if (has_stamp(root, stamp)) {
    return;
  }
  if (fs::exists(root)) {
    TORCH_CHECK(fs::is_regular_file(context_shift_stamp(root)) || fs::is_empty(root),
                "cac_data::generate_context_shift: expected ", root.string(),
                " to be absent, empty or a context-shift dataset but it holds other files");
  }
  const fs::path temp = unique_sibling(root, "tmp");
  fs::create_directories(temp);
  try {
    for (const auto& [split, dir, count] : {std::make_tuple("train", "training", options.num_train()),
                                            std::make_tuple("val", "validation", options.num_val())}) {
      const fs::path images = temp / "ADEChallengeData2016" / "images" / dir;
      const fs::path annotations = temp / "ADEChallengeData2016" / "annotations" / dir;
      fs::create_directories(images);
      fs::create_directories(annotations);
      for (int64_t i = 0; i < count; ++i) {
        const RawSample sample = context_shift_sample(options, split, i);
        write_png(images / (sample.name + ".png"), sample.image);
        write_png(annotations / (sample.name + ".png"), sample.label);
      }
    }
    cac_io::write_file(context_shift_stamp(temp), stamp);
    // Move a previous dataset (other options) or an empty directory out of the way, then publish.
    fs::path old;
    if (fs::exists(root)) {
      old = unique_sibling(root, "old");
      fs::rename(root, old);
    }
    fs::create_directories(fs::absolute(root).parent_path());
    fs::rename(temp, root);
    if (!old.empty()) {
      fs::remove_all(old);
    }
  } catch (const fs::filesystem_error&) {
    fs::remove_all(temp);
    if (has_stamp(root, stamp)) {
      return;  // another process published the same dataset first
    }
    throw;
  } catch (...) {
    fs::remove_all(temp);
    throw;
  }
}

}  // namespace cac_data
