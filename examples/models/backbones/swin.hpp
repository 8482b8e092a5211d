#pragma once
/// \file
/// Swin Transformer (mmsegmentation 0.x `SwinTransformer`, mmseg/models/backbones/swin.py, with
/// `PatchEmbed`/`PatchMerging` of mmseg/models/utils/embed.py and mmcv's `FFN`). Module names
/// follow mmseg's state-dict keys one-to-one: `patch_embed.projection`, `patch_embed.norm`,
/// `stages.0.blocks.1.attn.w_msa.qkv`, `...w_msa.relative_position_bias_table`,
/// `...ffn.layers.0.0`, `...ffn.layers.1`, `stages.0.downsample.reduction`, `norm0` ... `norm3`.
/// Official Swin checkpoints need mmseg's key conversion (checkpoint loading does it).

#include "../common.hpp"

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <memory>
#include <ostream>
#include <utility>
#include <vector>

namespace cac_models {

/// Options of `SwinTransformer` (mmseg `SwinTransformer` arguments; absolute position
/// embeddings, unused by every Table 1 config, are not supported).
///
/// ```
/// SwinTransformer backbone(SwinTransformerOptions::tiny());
/// ```
struct SwinTransformerOptions {
  /// Channels of the input image.
  /// Default: 3
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Channels C of stage 1 (stage i has C·2^i).
  /// Default: 96
  TORCH_ARG(int64_t, embed_dims) = 96;
  /// Side of the non-overlapping patches of the patch embedding.
  /// Default: 4
  TORCH_ARG(int64_t, patch_size) = 4;
  /// Side of the attention windows.
  /// Default: 7
  TORCH_ARG(int64_t, window_size) = 7;
  /// Hidden width of the MLPs relative to the block width.
  /// Default: 4
  TORCH_ARG(int64_t, mlp_ratio) = 4;
  /// Blocks per stage.
  /// Default: {2, 2, 6, 2}
  TORCH_ARG(std::vector<int64_t>, depths) = std::vector<int64_t>{2, 2, 6, 2};
  /// Attention heads per stage.
  /// Default: {3, 6, 12, 24}
  TORCH_ARG(std::vector<int64_t>, num_heads) = std::vector<int64_t>{3, 6, 12, 24};
  /// Bias of the qkv projections.
  /// Default: true
  TORCH_ARG(bool, qkv_bias) = true;
  /// Dropout after the patch embedding, after attention projections and in the MLPs.
  /// Default: 0
  TORCH_ARG(double, drop_rate) = 0.0;
  /// Dropout of the attention weights.
  /// Default: 0
  TORCH_ARG(double, attn_drop_rate) = 0.0;
  /// Stochastic depth: block k of K drops its residual branches with rate `drop_path_rate · k/(K-1)`
  /// (0.3 in every Table 1 config; mmseg's own default is 0.1).
  /// Default: 0.3
  TORCH_ARG(double, drop_path_rate) = 0.3;
  /// Layer norms after the patch embedding and in every patch merging (mmseg passes `norm_cfg`
  /// to both only with `patch_norm`).
  /// Default: true
  TORCH_ARG(bool, patch_norm) = true;

 public:
  /// Swin-T: C = 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window 7 (27,520,698 parameters).
  static SwinTransformerOptions tiny() { return SwinTransformerOptions(); }
  /// Swin-B (ImageNet-22K, 384): C = 128, depths (2, 2, 18, 2), heads (4, 8, 16, 32), window 12.
  static SwinTransformerOptions base() {
    return SwinTransformerOptions().embed_dims(128).depths({2, 2, 18, 2}).num_heads({4, 8, 16, 32}).window_size(12);
  }
  /// Swin-L (ImageNet-22K, 384): C = 192, depths (2, 2, 18, 2), heads (6, 12, 24, 48), window 12.
  static SwinTransformerOptions large() {
    return SwinTransformerOptions().embed_dims(192).depths({2, 2, 18, 2}).num_heads({6, 12, 24, 48}).window_size(12);
  }
};

/// mmseg's `PatchEmbed`: zero-pads the image at the bottom/right to a multiple of the patch size
/// (`padding='corner'`), `projection` (conv patch×patch, stride patch, with bias), flattens to
/// tokens `[B, H·W, C]` and applies `norm` (LayerNorm).
class PatchEmbedImpl : public torch::nn::Module {
 public:
  PatchEmbedImpl(int64_t in_channels, int64_t embed_dims, int64_t patch_size, bool norm);
  /// Tokens `[B, h·w, C]` and their grid `{h, w}`.
  std::pair<torch::Tensor, std::vector<int64_t>> forward(const torch::Tensor& x);
  torch::nn::Conv2d projection{nullptr};
  torch::nn::LayerNorm norm{nullptr};

 private:
  int64_t patch_size_;
};
TORCH_MODULE(PatchEmbed);

/// mmseg's `WindowMSA`: multi-head self-attention inside windows of `window_size²` tokens with a
/// learned relative position bias (`relative_position_bias_table` `[(2w-1)², heads]`, indexed by
/// the persistent buffer `relative_position_index` `[w², w²]`).
class WindowMSAImpl : public torch::nn::Module {
 public:
  WindowMSAImpl(int64_t embed_dims, int64_t num_heads, int64_t window_size, bool qkv_bias, double attn_drop,
                double proj_drop);
  /// `x` `[B·nW, w², C]`; `mask` `[nW, w², w²]` (0 or -100) or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask = {});
  torch::Tensor relative_position_bias_table, relative_position_index;
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  torch::nn::Dropout attn_drop{nullptr}, proj_drop{nullptr};

 private:
  int64_t num_heads_;
};
TORCH_MODULE(WindowMSA);

/// mmseg's `ShiftWindowMSA`: pads the token grid to multiples of the window, cyclically shifts it
/// by `shift_size` (with the attention mask that keeps shifted regions apart), runs `w_msa` per
/// window, undoes shift and padding, then drop path.
class ShiftWindowMSAImpl : public torch::nn::Module {
 public:
  ShiftWindowMSAImpl(int64_t embed_dims, int64_t num_heads, int64_t window_size, int64_t shift_size, bool qkv_bias,
                     double attn_drop, double proj_drop, double drop_path);
  /// `x` `[B, H·W, C]` on the grid `hw`.
  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& hw);
  WindowMSA w_msa{nullptr};

 private:
  int64_t window_size_, shift_size_;
  double drop_path_;
};
TORCH_MODULE(ShiftWindowMSA);

/// A Swin block (mmseg `SwinBlock`; LayerNorms run in float32 under autocast): `x + attn(norm1(x))`, then `x +
/// ffn(norm2(x))` where `ffn` is mmcv's `FFN` (`layers.0.0` Linear C→rC, GELU, dropout, `layers.1` Linear rC→C,
/// dropout, drop path).
class SwinBlockImpl : public torch::nn::Module {
 public:
  SwinBlockImpl(int64_t embed_dims, int64_t num_heads, int64_t mlp_ratio, int64_t window_size, bool shift,
                bool qkv_bias, double drop_rate, double attn_drop_rate, double drop_path);
  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& hw);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  ShiftWindowMSA attn{nullptr};
  /// mmcv `FFN.layers`: `0` = Sequential(Linear, GELU, Dropout), `1` = Linear, `2` = Dropout.
  torch::nn::Sequential ffn_layers{nullptr};

 private:
  double drop_rate_, drop_path_;
};
TORCH_MODULE(SwinBlock);

/// mmseg's `PatchMerging` (2×2, stride 2): pads the grid to even sizes, gathers each 2×2
/// neighbourhood as `nn.Unfold` orders it (channel-major: c·4 + 2·dy + dx), `norm` (LayerNorm 4C)
/// and `reduction` (Linear 4C→2C, no bias); without `norm` the LayerNorm is absent.
class PatchMergingImpl : public torch::nn::Module {
 public:
  PatchMergingImpl(int64_t in_channels, int64_t out_channels, bool norm = true);
  std::pair<torch::Tensor, std::vector<int64_t>> forward(const torch::Tensor& x, const std::vector<int64_t>& hw);
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear reduction{nullptr};
};
TORCH_MODULE(PatchMerging);

/// mmseg's `SwinBlockSequence`: `blocks` (window attention alternately unshifted and shifted by
/// half a window), then `downsample` (a `PatchMerging`, absent in the last stage).
class SwinBlockSequenceImpl : public torch::nn::Module {
 public:
  SwinBlockSequenceImpl(int64_t embed_dims, int64_t num_heads, int64_t depth, const SwinTransformerOptions& options,
                        const std::vector<double>& drop_paths, bool downsample);
  torch::nn::ModuleList blocks{nullptr};
  PatchMerging downsample{nullptr};
};
TORCH_MODULE(SwinBlockSequence);

/// mmseg's `SwinTransformer` with every stage as an output: `patch_embed`, `stages.0..3`, and a
/// LayerNorm `norm<i>` on each output. Outputs C, 2C, 4C, 8C channels at strides 4, 8, 16, 32
/// (sizes rounded up at every stage).
class SwinTransformerImpl : public BackboneImpl {
 public:
  explicit SwinTransformerImpl(const SwinTransformerOptions& options_ = {});
  std::vector<torch::Tensor> forward(const torch::Tensor& x) override;
  std::vector<int64_t> out_channels() const override;
  /// Prints `cac_models::SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)`.
  void pretty_print(std::ostream& stream) const override;

  PatchEmbed patch_embed{nullptr};
  torch::nn::Dropout drop_after_pos{nullptr};
  torch::nn::ModuleList stages{nullptr};
  /// `norm0`..`norm3`.
  std::vector<torch::nn::LayerNorm> norms;

  /// The options this backbone was built with.
  SwinTransformerOptions options;
};
TORCH_MODULE(SwinTransformer);

}  // namespace cac_models
