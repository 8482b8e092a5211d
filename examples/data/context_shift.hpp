#pragma once
/// \file
/// The bundled "context-shift" dataset: a deterministic generator of small synthetic segmentation
/// images that embody the CAC paper's hypothesis. Every class has a fixed appearance (a colour and
/// an oriented stripe texture), and every image applies its own strong context shift (a colour
/// cast, an illumination offset and a texture scale), so the pixel statistics of one class overlap
/// across images while classes stay separable within an image. The `control` variant (`shift`
/// false) draws the same layouts without the shift. Written in the ADE20K layout with `.png`
/// images; read it with `DatasetOptions("context_shift", root)`. See docs/datasets.md.

#include "dataset.hpp"

#include <torch/arg.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace cac_data {

/// What `generate_context_shift` writes.
///
/// `generate_context_shift("data/context_shift", ContextShiftOptions().shift(false));` (control)
struct ContextShiftOptions {
  /// Number of classes K (label values 1..K; 0 = "other", ignored after reduce_zero_label).
  /// Default: 6
  TORCH_ARG(int64_t, num_classes) = 6;
  /// Side of the square images, in pixels.
  /// Default: 64
  TORCH_ARG(int64_t, image_size) = 64;
  /// Training images (`images/training`).
  /// Default: 512
  TORCH_ARG(int64_t, num_train) = 512;
  /// Validation images (`images/validation`).
  /// Default: 128
  TORCH_ARG(int64_t, num_val) = 128;
  /// Apply the per-image context shift; false = the control variant (same layouts and noise).
  /// Default: true
  TORCH_ARG(bool, shift) = true;
  /// Draw the shift per class as well as per image: in each image every class gets its own channel
  /// gains and illumination offset (same ranges as the image-wide cast, which is then not applied),
  /// so no image-level statistic undoes it and only the image's own regions of a class tell its
  /// colour there. "Other" regions keep their random colours. false = one cast for the whole image.
  /// Default: false
  TORCH_ARG(bool, class_wise) = false;
  /// Probability that a class region has no stripes, so that only its colour tells its class; with
  /// `class_wise`, that colour is known only from the image's striped regions of the same class.
  /// Default: 0
  TORCH_ARG(double, plain_ratio) = 0;
  /// Strength s of the shift: channel gains in [1 - s, 1 + s], illumination offset in
  /// [-s/2, s/2], stripe period scaled by 2^[-s, s].
  /// Default: 0.35
  TORCH_ARG(double, shift_strength) = 0.35;
  /// Seed of the layouts, textures phases, shifts and noise (class appearances do not depend on it).
  /// Default: 0
  TORCH_ARG(uint64_t, seed) = 0;
  /// Voronoi sites (regions) per image.
  /// Default: 8
  TORCH_ARG(int64_t, regions) = 8;
  /// Probability that a region is "other" (label 0, random colour, no stripes).
  /// Default: 0.1
  TORCH_ARG(double, other_ratio) = 0.1;
  /// Standard deviation of the per-pixel noise, in units of the full intensity range.
  /// Default: 0.04
  TORCH_ARG(double, noise) = 0.04;
  /// Stripe period before the texture-scale shift, in pixels.
  /// Default: 6
  TORCH_ARG(double, stripe_period) = 6;
  /// Stripe modulation depth: intensity factor 1 ± this.
  /// Default: 0.25
  TORCH_ARG(double, stripe_contrast) = 0.25;
};

/// Class names (`class1` ... `classK`) and palette (each class's base colour) of a K-class
/// context-shift dataset, named `context_shift`.
DatasetInfo context_shift_info(int64_t num_classes);

/// The info of the dataset generated under `root`, from its stamp file.
DatasetInfo read_context_shift_info(const std::filesystem::path& root);

/// The file `generate_context_shift` writes last under `root`: its options, one `key=value` a line.
std::filesystem::path context_shift_stamp(const std::filesystem::path& root);

/// Sample `index` of split `"train"` or `"val"` rendered in memory: the BGR image and the raw
/// label (0 = other, 1..K) exactly as `generate_context_shift` writes them; `name` is the file stem.
RawSample context_shift_sample(const ContextShiftOptions& options, const std::string& split, int64_t index);

/// Writes the dataset under `root` (`ADEChallengeData2016/{images,annotations}/{training,
/// validation}/cs_{train,val}_NNNNNNNN.png` and the stamp). Does nothing when the stamp already
/// records the same options; replaces a context-shift dataset with other options. Generates into a
/// temporary sibling directory and renames it, so readers never see a partial dataset and
/// concurrent calls (e.g. one per rank) are safe. Fails if `root` holds anything else.
void generate_context_shift(const std::filesystem::path& root, const ContextShiftOptions& options);

}  // namespace cac_data
