#include "swin.hpp"

#include <torch/nn/functional/padding.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>

#include <cmath>
#include <numeric>
#include <string>
#include <tuple>

namespace cac_models {

namespace {

constexpr const char* kWho = "cac_models::SwinTransformer";

torch::nn::LayerNorm layer_norm(int64_t channels) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({channels}));
}

/// `norm(x)` in float32 when `x` is half or bfloat16 (autocast), as CUDA autocast runs LayerNorm;
/// LibTorch 1.13's CPU autocast passes reduced-precision inputs to the float32 weights instead.
torch::Tensor apply_norm(torch::nn::LayerNorm& norm, const torch::Tensor& x) {
  const auto type = x.scalar_type();
  if ((type == torch::kHalf || type == torch::kBFloat16) && norm->weight.scalar_type() != type) {
    return norm->forward(x.to(norm->weight.scalar_type()));
  }
  return norm->forward(x);
}

/// A Linear layer initialised as mmseg's `SwinTransformer.init_weights` without a checkpoint:
/// weights N(0, 0.02) (mmcv's truncation at ±2 is 100 standard deviations away), biases 0.
torch::nn::Linear linear(int64_t in, int64_t out, bool bias = true) {
  torch::nn::Linear layer(torch::nn::LinearOptions(in, out).bias(bias));
  torch::NoGradGuard no_grad;
  layer->weight.normal_(0.0, 0.02);
  if (bias) layer->bias.zero_();
  return layer;
}

/// mmcv's `DropPath`: in training, zeroes the residual branch of a whole sample with probability
/// `p` and scales the kept ones by 1 / (1 - p).
torch::Tensor drop_path(const torch::Tensor& x, double p, bool training) {
  if (p <= 0.0 || !training) return x;
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  const torch::Tensor mask = (torch::rand(shape, x.options()) + keep).floor_();
  return x.div(keep) * mask;
}

/// `[B, H, W, C]` → `[B·nW, ws, ws, C]` windows, row-major over the window grid.
torch::Tensor window_partition(const torch::Tensor& x, int64_t ws) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  return x.view({B, H / ws, ws, W / ws, ws, C}).permute({0, 1, 3, 2, 4, 5}).reshape({-1, ws, ws, C});
}

/// Inverse of `window_partition` for a `H`×`W` grid.
torch::Tensor window_reverse(const torch::Tensor& windows, int64_t H, int64_t W, int64_t ws) {
  const int64_t B = windows.size(0) / (H / ws * (W / ws));
  return windows.view({B, H / ws, W / ws, ws, ws, -1}).permute({0, 1, 3, 2, 4, 5}).reshape({B, H, W, -1});
}

/// The attention mask of shifted windows on a padded `H`×`W` grid: tokens of a window that came
/// from different regions of the unshifted grid (mmseg's 3×3 slices) get -100, others 0.
torch::Tensor shift_mask(int64_t H, int64_t W, int64_t ws, int64_t shift, const torch::TensorOptions& options) {
  const auto region = [&](int64_t n) {
    const torch::Tensor i = torch::arange(n, torch::kLong);
    return (i >= n - ws).to(torch::kLong) + (i >= n - shift).to(torch::kLong);
  };
  const torch::Tensor ids = (region(H).unsqueeze(1) * 3 + region(W).unsqueeze(0)).view({1, H, W, 1});
  const torch::Tensor windows = window_partition(ids, ws).view({-1, ws * ws});
  const torch::Tensor differ = windows.unsqueeze(1) != windows.unsqueeze(2);
  return torch::zeros(differ.sizes(), options).masked_fill_(differ.to(options.device()), -100.0);
}

}  // namespace

// ---- PatchEmbed --------------------------------------------------------------------------------

PatchEmbedImpl::PatchEmbedImpl(int64_t in_channels, int64_t embed_dims, int64_t patch_size, bool norm_)
    : patch_size_(patch_size) {
  projection = register_module(
      "projection",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, embed_dims, patch_size).stride(patch_size)));
  if (norm_) norm = register_module("norm", layer_norm(embed_dims));
}

std::pair<torch::Tensor, std::vector<int64_t>> PatchEmbedImpl::forward(const torch::Tensor& x) {
  const int64_t pad_h = (patch_size_ - x.size(2) % patch_size_) % patch_size_;
  const int64_t pad_w = (patch_size_ - x.size(3) % patch_size_) % patch_size_;
  torch::Tensor y = pad_h || pad_w ? torch::constant_pad_nd(x, {0, pad_w, 0, pad_h}) : x;
  y = projection->forward(y);
  std::vector<int64_t> hw{y.size(2), y.size(3)};
  y = y.flatten(2).transpose(1, 2);
  if (norm) y = apply_norm(norm, y);
  return {y, hw};
}

// ---- WindowMSA ---------------------------------------------------------------------------------

WindowMSAImpl::WindowMSAImpl(int64_t embed_dims, int64_t num_heads, int64_t window_size, bool qkv_bias,
                             double attn_drop_rate, double proj_drop_rate)
    : num_heads_(num_heads) {
  const int64_t side = 2 * window_size - 1;
  relative_position_bias_table =
      register_parameter("relative_position_bias_table", torch::empty({side * side, num_heads}).normal_(0.0, 0.02));
  // Token a = (ya, xa), b = (yb, xb) of a window: index (ya - yb + w - 1)·(2w - 1) + (xa - xb + w - 1).
  const torch::Tensor y = torch::arange(window_size, torch::kLong).repeat_interleave(window_size);
  const torch::Tensor x = torch::arange(window_size, torch::kLong).repeat({window_size});
  relative_position_index =
      register_buffer("relative_position_index", (y.unsqueeze(1) - y.unsqueeze(0) + window_size - 1) * side +
                                                     (x.unsqueeze(1) - x.unsqueeze(0) + window_size - 1));
  qkv = register_module("qkv", linear(embed_dims, 3 * embed_dims, qkv_bias));
  attn_drop = register_module("attn_drop", torch::nn::Dropout(attn_drop_rate));
  proj = register_module("proj", linear(embed_dims, embed_dims));
  proj_drop = register_module("proj_drop", torch::nn::Dropout(proj_drop_rate));
}

torch::Tensor WindowMSAImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
  const int64_t B = x.size(0), N = x.size(1), C = x.size(2);
  const torch::Tensor qkv_ = qkv->forward(x).reshape({B, N, 3, num_heads_, C / num_heads_}).permute({2, 0, 3, 1, 4});
  const double scale = 1.0 / std::sqrt(static_cast<double>(C / num_heads_));
  torch::Tensor attn = torch::matmul(qkv_[0] * scale, qkv_[1].transpose(-2, -1));
  // LibTorch's Module::to(dtype) converts integer buffers too (PyTorch's does not): after
  // `model->to(torch::kDouble)` or kHalf the indices (< (2·window − 1)², exact in any float type)
  // arrive as floats, so they are read back as int64 here.
  const torch::Tensor bias =
      relative_position_bias_table.index_select(0, relative_position_index.view(-1).to(torch::kLong))
          .view({N, N, -1})
          .permute({2, 0, 1});
  attn = attn + bias.unsqueeze(0).to(attn.scalar_type());
  if (mask.defined()) {
    const int64_t windows = mask.size(0);
    attn = (attn.view({B / windows, windows, num_heads_, N, N}) + mask.unsqueeze(1).unsqueeze(0).to(attn.scalar_type()))
               .view({-1, num_heads_, N, N});
  }
  attn = attn_drop->forward(torch::softmax(attn, -1));
  torch::Tensor y = torch::matmul(attn, qkv_[2]).transpose(1, 2).reshape({B, N, C});
  return proj_drop->forward(proj->forward(y));
}

// ---- ShiftWindowMSA ----------------------------------------------------------------------------

ShiftWindowMSAImpl::ShiftWindowMSAImpl(int64_t embed_dims, int64_t num_heads, int64_t window_size, int64_t shift_size,
                                       bool qkv_bias, double attn_drop, double proj_drop, double drop_path_rate)
    : window_size_(window_size), shift_size_(shift_size), drop_path_(drop_path_rate) {
  TORCH_CHECK(shift_size >= 0 && shift_size < window_size, "cac_models::ShiftWindowMSA: expected a shift in [0, ",
              window_size, ") but got ", shift_size);
  w_msa = register_module("w_msa", WindowMSA(embed_dims, num_heads, window_size, qkv_bias, attn_drop, proj_drop));
}

torch::Tensor ShiftWindowMSAImpl::forward(const torch::Tensor& x, const std::vector<int64_t>& hw) {
  const int64_t B = x.size(0), C = x.size(2), H = hw[0], W = hw[1], ws = window_size_, shift = shift_size_;
  TORCH_CHECK(x.size(1) == H * W, "cac_models::ShiftWindowMSA: expected ", H, "x", W, " tokens but got ", x.size(1));
  torch::Tensor y = x.reshape({B, H, W, C});
  const int64_t pad_r = (ws - W % ws) % ws, pad_b = (ws - H % ws) % ws;
  if (pad_r || pad_b) y = torch::constant_pad_nd(y, {0, 0, 0, pad_r, 0, pad_b});
  const int64_t Hp = H + pad_b, Wp = W + pad_r;
  torch::Tensor mask;
  if (shift > 0) {
    y = torch::roll(y, {-shift, -shift}, {1, 2});
    mask = shift_mask(Hp, Wp, ws, shift, y.options());
  }
  torch::Tensor windows = w_msa->forward(window_partition(y, ws).view({-1, ws * ws, C}), mask);
  y = window_reverse(windows.view({-1, ws, ws, C}), Hp, Wp, ws);
  if (shift > 0) y = torch::roll(y, {shift, shift}, {1, 2});
  if (pad_r || pad_b) y = y.slice(1, 0, H).slice(2, 0, W);
  return drop_path(y.reshape({B, H * W, C}), drop_path_, is_training());
}

// ---- SwinBlock ---------------------------------------------------------------------------------

SwinBlockImpl::SwinBlockImpl(int64_t embed_dims, int64_t num_heads, int64_t mlp_ratio, int64_t window_size, bool shift,
                             bool qkv_bias, double drop_rate, double attn_drop_rate, double drop_path_rate)
    : drop_rate_(drop_rate), drop_path_(drop_path_rate) {
  norm1 = register_module("norm1", layer_norm(embed_dims));
  attn = register_module("attn", ShiftWindowMSA(embed_dims, num_heads, window_size, shift ? window_size / 2 : 0,
                                                qkv_bias, attn_drop_rate, drop_rate, drop_path_rate));
  norm2 = register_module("norm2", layer_norm(embed_dims));
  const int64_t hidden = embed_dims * mlp_ratio;
  // mmcv `FFN` registers its Sequential as `layers` inside a module named `ffn`.
  auto ffn = register_module("ffn", std::make_shared<torch::nn::Module>("FFN"));
  ffn_layers = ffn->register_module(
      "layers", torch::nn::Sequential(
                    NestedSequential(linear(embed_dims, hidden), torch::nn::GELU(), torch::nn::Dropout(drop_rate)),
                    linear(hidden, embed_dims), torch::nn::Dropout(drop_rate)));
}

torch::Tensor SwinBlockImpl::forward(const torch::Tensor& x, const std::vector<int64_t>& hw) {
  torch::Tensor y = x + attn->forward(apply_norm(norm1, x), hw);
  return y + drop_path(ffn_layers->forward(apply_norm(norm2, y)), drop_path_, is_training());
}

// ---- PatchMerging ------------------------------------------------------------------------------

PatchMergingImpl::PatchMergingImpl(int64_t in_channels, int64_t out_channels, bool norm_) {
  if (norm_) norm = register_module("norm", layer_norm(4 * in_channels));
  reduction = register_module("reduction", linear(4 * in_channels, out_channels, /*bias=*/false));
}

std::pair<torch::Tensor, std::vector<int64_t>> PatchMergingImpl::forward(const torch::Tensor& x,
                                                                         const std::vector<int64_t>& hw) {
  const int64_t B = x.size(0), C = x.size(2), H = hw[0], W = hw[1];
  torch::Tensor y = x.reshape({B, H, W, C}).permute({0, 3, 1, 2});
  if (H % 2 || W % 2) y = torch::constant_pad_nd(y, {0, W % 2, 0, H % 2});
  const int64_t h = (H + 1) / 2, w = (W + 1) / 2;
  // nn.Unfold(2, stride 2) order: feature c·4 + 2·dy + dx of output position (i, j).
  y = y.reshape({B, C, h, 2, w, 2}).permute({0, 2, 4, 1, 3, 5}).reshape({B, h * w, 4 * C});
  return {reduction->forward(norm ? apply_norm(norm, y) : y), {h, w}};
}

// ---- SwinBlockSequence -------------------------------------------------------------------------

SwinBlockSequenceImpl::SwinBlockSequenceImpl(int64_t embed_dims, int64_t num_heads, int64_t depth,
                                             const SwinTransformerOptions& o, const std::vector<double>& drop_paths,
                                             bool with_downsample) {
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t j = 0; j < depth; ++j) {
    blocks->push_back(SwinBlock(embed_dims, num_heads, o.mlp_ratio(), o.window_size(), j % 2 == 1, o.qkv_bias(),
                                o.drop_rate(), o.attn_drop_rate(), drop_paths.at(static_cast<size_t>(j))));
  }
  if (with_downsample)
    downsample = register_module("downsample", PatchMerging(embed_dims, 2 * embed_dims, o.patch_norm()));
}

// ---- SwinTransformer ---------------------------------------------------------------------------

SwinTransformerImpl::SwinTransformerImpl(const SwinTransformerOptions& options_) : options(options_) {
  const auto& o = options;
  TORCH_CHECK(o.depths().size() == 4 && o.num_heads().size() == 4, kWho, ": expected 4 depths and 4 num_heads but got ",
              o.depths().size(), " and ", o.num_heads().size());
  TORCH_CHECK(
      o.in_channels() > 0 && o.embed_dims() > 0 && o.patch_size() > 0 && o.window_size() > 0 && o.mlp_ratio() > 0, kWho,
      ": expected positive in_channels, embed_dims, patch_size, window_size and mlp_ratio but got ", o.in_channels(),
      ", ", o.embed_dims(), ", ", o.patch_size(), ", ", o.window_size(), ", ", o.mlp_ratio());
  TORCH_CHECK(o.drop_path_rate() >= 0 && o.drop_path_rate() < 1 && o.drop_rate() >= 0 && o.drop_rate() < 1 &&
                  o.attn_drop_rate() >= 0 && o.attn_drop_rate() < 1,
              kWho, ": expected drop_rate, attn_drop_rate and drop_path_rate in [0, 1) but got ", o.drop_rate(), ", ",
              o.attn_drop_rate(), ", ", o.drop_path_rate());
  for (size_t i = 0; i < 4; ++i) {
    const int64_t channels = o.embed_dims() << i;
    TORCH_CHECK(o.depths()[i] > 0 && o.num_heads()[i] > 0 && channels % o.num_heads()[i] == 0, kWho,
                ": expected stage ", i, " to have a positive depth and a number of heads dividing its ", channels,
                " channels but got depth ", o.depths()[i], " and ", o.num_heads()[i], " heads");
  }
  patch_embed =
      register_module("patch_embed", PatchEmbed(o.in_channels(), o.embed_dims(), o.patch_size(), o.patch_norm()));
  drop_after_pos = register_module("drop_after_pos", torch::nn::Dropout(o.drop_rate()));
  const int64_t total = std::accumulate(o.depths().begin(), o.depths().end(), int64_t{0});
  std::vector<double> rates;  // torch.linspace(0, drop_path_rate, total)
  for (int64_t k = 0; k < total; ++k) rates.push_back(total > 1 ? o.drop_path_rate() * k / (total - 1) : 0.0);
  stages = register_module("stages", torch::nn::ModuleList());
  size_t first = 0;
  for (size_t i = 0; i < 4; ++i) {
    const auto depth = static_cast<size_t>(o.depths()[i]);
    const std::vector<double> stage_rates(rates.begin() + static_cast<std::ptrdiff_t>(first),
                                          rates.begin() + static_cast<std::ptrdiff_t>(first + depth));
    stages->push_back(SwinBlockSequence(o.embed_dims() << i, o.num_heads()[i], o.depths()[i], o, stage_rates, i < 3));
    first += depth;
  }
  for (size_t i = 0; i < 4; ++i) {
    norms.push_back(register_module("norm" + std::to_string(i), layer_norm(o.embed_dims() << i)));
  }
}

std::vector<torch::Tensor> SwinTransformerImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), kWho, ": expected an input of shape [B, ",
              options.in_channels(), ", H, W] but got ", x.sizes());
  auto embedded = patch_embed->forward(x);
  torch::Tensor tokens = drop_after_pos->forward(embedded.first);
  std::vector<int64_t> hw = std::move(embedded.second);
  std::vector<torch::Tensor> outs;
  for (size_t i = 0; i < stages->size(); ++i) {
    auto* stage = stages[i]->as<SwinBlockSequenceImpl>();
    for (const auto& block : *stage->blocks) tokens = block->as<SwinBlockImpl>()->forward(tokens, hw);
    const int64_t channels = tokens.size(2);
    outs.push_back(apply_norm(norms[i], tokens).view({-1, hw[0], hw[1], channels}).permute({0, 3, 1, 2}).contiguous());
    if (stage->downsample) std::tie(tokens, hw) = stage->downsample->forward(tokens, hw);
  }
  return outs;
}

std::vector<int64_t> SwinTransformerImpl::out_channels() const {
  std::vector<int64_t> channels;
  for (int64_t i = 0; i < 4; ++i) channels.push_back(options.embed_dims() << i);
  return channels;
}

void SwinTransformerImpl::pretty_print(std::ostream& stream) const {
  stream << "cac_models::SwinTransformer(embed_dims=" << options.embed_dims() << ", depths=";
  print_list(stream, options.depths());
  stream << ", num_heads=";
  print_list(stream, options.num_heads());
  stream << ", window_size=" << options.window_size() << ")";
}

}  // namespace cac_models
