#pragma once
/// \file
/// Test-time inference of a segmentor: whole-image or sliding-window, single- or multi-scale with
/// flips, as mmsegmentation 0.x's `EncoderDecoder.inference`, `whole_inference`,
/// `slide_inference` and `aug_test`.

#include "models/segmentor.hpp"

#include <torch/arg.h>
#include <torch/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace cac_eval {

/// How `predict_logits` runs a model on one image (mmseg's `test_cfg` and the test pipeline's
/// `MultiScaleFlipAug`).
///
/// ```
/// // ADE20K, multi-scale + flip, sliding 512×512 windows with stride 341:
/// auto options = cac_eval::InferenceOptions().mode("slide").scales({0.5, 0.75, 1.0, 1.25, 1.5, 1.75}).flip(true);
/// ```
struct InferenceOptions {
  /// `"whole"` (one forward on the whole image) or `"slide"` (overlapping `crop` windows every
  /// `stride` pixels, logits averaged where they overlap) (mmseg `test_cfg.mode`).
  /// Default: "whole"
  TORCH_ARG(std::string, mode) = "whole";
  /// Sliding-window size {h, w} (mmseg `test_cfg.crop_size`); windows are clipped to the image.
  /// Default: {512, 512}
  TORCH_ARG(std::vector<int64_t>, crop) = std::vector<int64_t>{512, 512};
  /// Sliding-window stride {h, w} (mmseg `test_cfg.stride`).
  /// Default: {341, 341}
  TORCH_ARG(std::vector<int64_t>, stride) = std::vector<int64_t>{341, 341};
  /// Test scales as ratios of the given image's size (mmseg `img_ratios`): the image is resized
  /// bilinearly by each ratio (see `img_scale`) and every scale's output is resized to `out_size`.
  /// Default: {1.0}
  TORCH_ARG(std::vector<double>, scales) = std::vector<double>{1.0};
  /// Also run every scale on the horizontally flipped image and flip its output back (mmseg
  /// `flip=True`).
  /// Default: false
  TORCH_ARG(bool, flip) = false;
  /// `align_corners` of the resize of the outputs to `out_size` (mmseg `EncoderDecoder.align_corners`,
  /// the decode head's); image resizes always use `align_corners=false` like OpenCV.
  /// Default: false
  TORCH_ARG(bool, align_corners) = false;
  /// Pass the windows of a slide through the model as one batch (mmseg runs them one by one); the
  /// result equals the unbatched one up to floating-point rounding. The model must be in eval mode
  /// (batch statistics would otherwise mix windows).
  /// Default: true
  TORCH_ARG(bool, batch_crops) = true;
  /// With `batch_crops`, at most this many windows per forward (0: all of them), to bound memory.
  /// Default: 0
  TORCH_ARG(int64_t, max_crops_per_batch) = 0;
  /// mmseg's test `img_scale` {long, short} (e.g. {2048, 512} for ADE20K): when set, ratio r resizes
  /// the image to what mmcv's keep-ratio `Resize` makes of an `out_size` image for the scale
  /// `(int(long·r), int(short·r))` (mmcv `rescale_size`), so the sizes match mmseg exactly given the
  /// original image's `out_size`. Empty: ratio r resizes the given image (already at the test
  /// scale) to `int(h·r + 0.5) × int(w·r + 0.5)`.
  /// Default: {}
  TORCH_ARG(std::vector<int64_t>, img_scale) = std::vector<int64_t>{};
  /// Average softmax probabilities over windows' logits, scales and flips as mmseg's `inference`
  /// does (true); false averages the raw logits instead (same `predict` for one scale, no flip).
  /// Default: true
  TORCH_ARG(bool, softmax) = true;
};

/// Scores `[B, n, H, W]` for the normalised `image` `[B, C, h, w]` (B is 1 in mmseg's tests) at
/// `out_size` {H, W} (the original image size; empty: the image's size), as mmseg 0.x's
/// `simple_test`/`aug_test` before the argmax.
///
/// For each ratio of `options.scales` and each flip (none, plus horizontal with `options.flip`):
/// resize the image, run `whole` (one forward) or `slide` (windows of `crop` every `stride`, as
/// mmseg's `slide_inference`: window logits summed into place and divided by the count of windows
/// covering each pixel), resize the logits to `out_size` (bilinear, `align_corners`), apply
/// softmax over the classes (unless `softmax(false)`), flip back; the result is the mean over the
/// scales × flips. Runs under `torch::NoGradGuard` on the image's device; the caller puts the
/// model on that device and in eval mode (`model->eval()`; a model in training mode is warned
/// about). See `InferenceOptions`.
///
/// ```
/// model->eval();
/// torch::Tensor scores = cac_eval::predict_logits(model, image, cac_eval::InferenceOptions(), {512, 683});
/// ```
torch::Tensor predict_logits(cac_models::EncoderDecoder& model, const torch::Tensor& image,
                             const InferenceOptions& options = {}, std::vector<int64_t> out_size = {});

/// The predicted label map: int64 `[H, W]`, the argmax over classes of `predict_logits` for an
/// image `[1, C, h, w]`. See `predict_logits`.
torch::Tensor predict(cac_models::EncoderDecoder& model, const torch::Tensor& image,
                      const InferenceOptions& options = {}, std::vector<int64_t> out_size = {});

/// The size {h, w} mmcv's keep-ratio `Resize` gives an `h × w` image for the scale `scale`
/// {long, short}: factor `min(long / max(h, w), short / min(h, w))`, sides `int(side · factor + 0.5)`
/// (mmcv `rescale_size`).
std::vector<int64_t> rescale_size(const std::vector<int64_t>& size, const std::vector<int64_t>& scale);

/// The windows {y1, y2, x1, x2} of mmseg's `slide_inference` over an `h × w` image, row by row:
/// `crop`-sized (clipped to the image) every `stride` pixels, the last row/column shifted to end
/// at the border.
std::vector<std::array<int64_t, 4>> slide_windows(int64_t h, int64_t w, const std::vector<int64_t>& crop,
                                                  const std::vector<int64_t>& stride);

}  // namespace cac_eval
