#include "inference.hpp"

#include "models/common.hpp"

#include <torch/torch.h>

#include <algorithm>

namespace cac_eval {

namespace {

constexpr const char* kWho = "cac_eval::predict_logits";

void check_options(const InferenceOptions& options) {
  TORCH_CHECK(options.mode() == "whole" || options.mode() == "slide", kWho,
              ": expected mode \"whole\" or \"slide\" but got \"", options.mode(), "\"");
  if (options.mode() == "slide") {
    TORCH_CHECK(options.crop().size() == 2 && options.crop()[0] > 0 && options.crop()[1] > 0, kWho,
                ": expected crop {h, w} with positive sides but got ", torch::IntArrayRef(options.crop()));
    TORCH_CHECK(options.stride().size() == 2 && options.stride()[0] > 0 && options.stride()[1] > 0, kWho,
                ": expected stride {h, w} with positive sides but got ", torch::IntArrayRef(options.stride()));
  }
  TORCH_CHECK(!options.scales().empty(), kWho, ": expected at least one scale but got none");
  for (double r : options.scales()) {
    TORCH_CHECK(r > 0.0, kWho, ": expected positive scales but got ", r);
  }
  TORCH_CHECK(options.img_scale().empty() ||
                  (options.img_scale().size() == 2 && options.img_scale()[0] > 0 && options.img_scale()[1] > 0),
              kWho, ": expected img_scale empty or {long, short} with positive sides but got ",
              torch::IntArrayRef(options.img_scale()));
  TORCH_CHECK(options.max_crops_per_batch() >= 0, kWho, ": expected max_crops_per_batch >= 0 but got ",
              options.max_crops_per_batch());
}

// mmseg's `slide_inference` without the final resize: logits [B, n, h, w] averaged over windows.
torch::Tensor slide(cac_models::EncoderDecoder& model, const torch::Tensor& image, const InferenceOptions& options) {
  const int64_t h = image.size(2), w = image.size(3);
  const auto windows = slide_windows(h, w, options.crop(), options.stride());
  torch::Tensor preds, count = torch::zeros({1, 1, h, w}, image.options());
  auto add = [&](const std::array<int64_t, 4>& win, const torch::Tensor& logits) {
    if (!preds.defined()) preds = torch::zeros({image.size(0), logits.size(1), h, w}, logits.options());
    preds.slice(2, win[0], win[1]).slice(3, win[2], win[3]).add_(logits);
    count.slice(2, win[0], win[1]).slice(3, win[2], win[3]).add_(1);
  };
  auto crop = [&](const std::array<int64_t, 4>& win) {
    return image.slice(2, win[0], win[1]).slice(3, win[2], win[3]);
  };
  const int64_t batch = image.size(0);
  const size_t per_forward = !options.batch_crops()              ? 1
                             : options.max_crops_per_batch() > 0 ? size_t(options.max_crops_per_batch())
                                                                 : windows.size();
  for (size_t first = 0; first < windows.size(); first += per_forward) {
    const size_t last = std::min(windows.size(), first + per_forward);
    if (last - first == 1) {
      add(windows[first], model->forward(crop(windows[first])));
      continue;
    }
    std::vector<torch::Tensor> crops;
    for (size_t i = first; i < last; ++i) crops.push_back(crop(windows[i]));
    const torch::Tensor logits = model->forward(torch::cat(crops, 0));
    for (size_t i = first; i < last; ++i) add(windows[i], logits.narrow(0, int64_t(i - first) * batch, batch));
  }
  return preds / count;
}

}  // namespace

std::vector<int64_t> rescale_size(const std::vector<int64_t>& size, const std::vector<int64_t>& scale) {
  TORCH_CHECK(size.size() == 2 && size[0] > 0 && size[1] > 0,
              "cac_eval::rescale_size: expected size {h, w} with positive sides but got ", torch::IntArrayRef(size));
  TORCH_CHECK(scale.size() == 2 && scale[0] > 0 && scale[1] > 0,
              "cac_eval::rescale_size: expected scale {long, short} with positive sides but got ",
              torch::IntArrayRef(scale));
  const double long_edge = double(std::max(scale[0], scale[1])), short_edge = double(std::min(scale[0], scale[1]));
  const double factor =
      std::min(long_edge / double(std::max(size[0], size[1])), short_edge / double(std::min(size[0], size[1])));
  return {int64_t(double(size[0]) * factor + 0.5), int64_t(double(size[1]) * factor + 0.5)};
}

std::vector<std::array<int64_t, 4>> slide_windows(int64_t h, int64_t w, const std::vector<int64_t>& crop,
                                                  const std::vector<int64_t>& stride) {
  TORCH_CHECK(h > 0 && w > 0, "cac_eval::slide_windows: expected a positive image size but got ", h, "x", w);
  TORCH_CHECK(crop.size() == 2 && crop[0] > 0 && crop[1] > 0,
              "cac_eval::slide_windows: expected crop {h, w} with positive sides but got ", torch::IntArrayRef(crop));
  TORCH_CHECK(stride.size() == 2 && stride[0] > 0 && stride[1] > 0,
              "cac_eval::slide_windows: expected stride {h, w} with positive sides but got ",
              torch::IntArrayRef(stride));
  const int64_t h_grids = std::max<int64_t>(h - crop[0] + stride[0] - 1, 0) / stride[0] + 1;
  const int64_t w_grids = std::max<int64_t>(w - crop[1] + stride[1] - 1, 0) / stride[1] + 1;
  std::vector<std::array<int64_t, 4>> windows;
  for (int64_t hi = 0; hi < h_grids; ++hi) {
    for (int64_t wi = 0; wi < w_grids; ++wi) {
      const int64_t y2 = std::min(hi * stride[0] + crop[0], h), x2 = std::min(wi * stride[1] + crop[1], w);
      windows.push_back({std::max<int64_t>(y2 - crop[0], 0), y2, std::max<int64_t>(x2 - crop[1], 0), x2});
    }
  }
  return windows;
}

torch::Tensor predict_logits(cac_models::EncoderDecoder& model, const torch::Tensor& image,
                             const InferenceOptions& options, std::vector<int64_t> out_size) {
  TORCH_CHECK(!model.is_empty(), kWho, ": expected a model but got an empty EncoderDecoder");
  TORCH_CHECK(image.defined() && image.dim() == 4 && image.size(0) > 0 && image.size(2) > 0 && image.size(3) > 0, kWho,
              ": expected an image of shape [B, C, h, w] but got ",
              image.defined() ? image.sizes() : torch::IntArrayRef{});
  TORCH_CHECK(image.is_floating_point(), kWho, ": expected a floating-point (normalised) image but got ",
              image.scalar_type());
  if (out_size.empty()) out_size = {image.size(2), image.size(3)};
  TORCH_CHECK(out_size.size() == 2 && out_size[0] > 0 && out_size[1] > 0, kWho,
              ": expected out_size {H, W} with positive sides (or empty) but got ", torch::IntArrayRef(out_size));
  check_options(options);
  if (model->is_training()) {
    TORCH_WARN_ONCE(kWho,
                    ": the model is in training mode (batch norm uses batch statistics, dropout is on); call "
                    "model->eval() before inference");
  }
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> size{image.size(2), image.size(3)};
  torch::Tensor sum;
  int64_t views = 0;
  for (double r : options.scales()) {
    std::vector<int64_t> scaled;
    if (options.img_scale().empty()) {
      scaled = {int64_t(double(size[0]) * r + 0.5), int64_t(double(size[1]) * r + 0.5)};
    } else {
      scaled = rescale_size(out_size,
                            {int64_t(double(options.img_scale()[0]) * r), int64_t(double(options.img_scale()[1]) * r)});
    }
    TORCH_CHECK(scaled[0] > 0 && scaled[1] > 0, kWho, ": expected scale ", r, " to leave a non-empty image but got ",
                torch::IntArrayRef(scaled));
    const torch::Tensor resized = scaled == size ? image : cac_models::resize(image, scaled, /*align_corners=*/false);
    for (bool flip : {false, true}) {
      if (flip && !options.flip()) break;
      const torch::Tensor input = flip ? resized.flip({3}) : resized;
      torch::Tensor out = options.mode() == "whole" ? model->forward(input) : slide(model, input, options);
      if (torch::IntArrayRef(out_size) != out.sizes().slice(2)) {
        out = cac_models::resize(out, out_size, options.align_corners());
      }
      if (options.softmax()) out = torch::softmax(out, 1);
      if (flip) out = out.flip({3});
      sum = sum.defined() ? sum.add_(out) : out;
      ++views;
    }
  }
  return views == 1 ? sum : sum / double(views);
}

torch::Tensor predict(cac_models::EncoderDecoder& model, const torch::Tensor& image, const InferenceOptions& options,
                      std::vector<int64_t> out_size) {
  TORCH_CHECK(image.defined() && image.dim() == 4 && image.size(0) == 1,
              "cac_eval::predict: expected an image of shape [1, C, h, w] but got ",
              image.defined() ? image.sizes() : torch::IntArrayRef{});
  return predict_logits(model, image, options, std::move(out_size)).argmax(1).squeeze(0);
}

}  // namespace cac_eval
