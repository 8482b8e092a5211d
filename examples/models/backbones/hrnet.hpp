#pragma once
/// \file
/// HRNetV2 (mmsegmentation 0.x `HRNet`, mmseg/models/backbones/hrnet.py): a stem of two stride-2
/// 3×3 convolutions, a Bottleneck layer, then stages of `HRModule`s that keep parallel branches
/// at strides 4, 8, 16, 32 and exchange information between them after every module. Module names
/// follow mmseg's state-dict keys (`conv1`, `bn1`, `layer1.0.downsample.0`, `transition1.1.0.0`,
/// `stage2.0.branches.0.0.conv1`, `stage2.0.fuse_layers.0.1.0`, ...).

#include "../common.hpp"
#include "resnet.hpp"

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include <memory>
#include <ostream>
#include <vector>

namespace cac_models {

/// The residual block of an HRNet stage (mmseg `blocks_dict`: `'BASIC'` or `'BOTTLENECK'`).
using HRNetBlock = ResidualBlockType;

/// One stage of `HRNet` (an entry `stageN` of mmseg's `extra`); the number of branches is the
/// length of `num_blocks` (which must equal that of `num_channels`).
///
/// ```
/// HRNetStage stage3 = HRNetStage(HRNetBlock::Basic, {4, 4, 4}, {18, 36, 72}).num_modules(4);
/// ```
struct HRNetStage {
  /// `block`, `num_blocks` and `num_channels` of every branch.
  HRNetStage(HRNetBlock block, std::vector<int64_t> num_blocks, std::vector<int64_t> num_channels)
      : block_(block), num_blocks_(std::move(num_blocks)), num_channels_(std::move(num_channels)) {}
  /// Residual block of every branch. No default.
  TORCH_ARG(HRNetBlock, block);
  /// Blocks per branch. No default.
  TORCH_ARG(std::vector<int64_t>, num_blocks);
  /// Width of each branch before the block expansion. No default.
  TORCH_ARG(std::vector<int64_t>, num_channels);
  /// Number of `HRModule`s in the stage.
  /// Default: 1
  TORCH_ARG(int64_t, num_modules) = 1;
};

/// The four stages of HRNetV2-W`width` (mmseg configs/_base_/models/*_hr18.py and the `hr48`
/// overrides): stage 1 one module of 4 Bottlenecks at 64 channels; stage 2 one module, blocks
/// (4, 4), widths (w, 2w); stage 3 four modules, (4, 4, 4), (w, 2w, 4w); stage 4 three modules,
/// (4, 4, 4, 4), (w, 2w, 4w, 8w); Basic blocks from stage 2 on.
std::vector<HRNetStage> hrnetv2_stages(int64_t width);

/// Options of `HRNet` besides its stages (mmseg `HRNet` arguments).
///
/// ```
/// auto backbone = make_hrnetv2(18, HRNetOptions().norm(NormOptions().sync(true)));
/// ```
struct HRNetOptions {
  /// Channels of the input image.
  /// Default: 3
  TORCH_ARG(int64_t, in_channels) = 3;
  /// Batch norm of every layer (mmseg `norm_cfg`).
  /// Default: NormOptions()
  TORCH_ARG(NormOptions, norm) = {};
  /// Keep every batch norm in eval mode (running statistics, no updates) even when the module is
  /// in training mode (mmseg `norm_eval`).
  /// Default: false
  TORCH_ARG(bool, norm_eval) = false;
  /// Output every branch of the last stage; false outputs only the highest-resolution branch
  /// (the last module of stage 4 then fuses into branch 0 only; mmseg `multiscale_output`).
  /// Default: true
  TORCH_ARG(bool, multiscale_output) = true;
};

/// A `ModuleList` of `Sequential`s whose entries may be absent, like Python's
/// `nn.ModuleList([..., None, ...])` in mmseg's transition and fuse layers: an absent entry keeps
/// its index (so the state-dict keys of the others match mmseg's) and registers nothing.
class OptionalSequentialListImpl : public torch::nn::Module {
 public:
  /// Appends `entry` (a null `NestedSequential` for an absent entry) under the name of its index.
  void push_back(NestedSequential entry);
  /// Entry `index` (null if absent).
  NestedSequential operator[](size_t index) const { return entries_.at(index); }
  /// Number of entries, absent ones included.
  size_t size() const { return entries_.size(); }
  /// Prints `cac_models::OptionalSequentialList(size=N)`.
  void pretty_print(std::ostream& stream) const override;

 private:
  std::vector<NestedSequential> entries_;
};
TORCH_MODULE(OptionalSequentialList);

/// mmseg's `HRModule`: `branches` (one `Sequential` of residual blocks per branch) then
/// `fuse_layers` (for every output branch i and input branch j: j > i a 1×1 conv + BN + bilinear
/// upsampling by 2^(j-i), j == i nothing, j < i a chain of i-j stride-2 3×3 conv + BN, with ReLU
/// between them), summed and passed through a ReLU.
class HRModuleImpl : public torch::nn::Module {
 public:
  /// A module of `stage`'s configuration whose branches receive `in_channels` channels.
  /// `multiscale_output` false fuses into branch 0 only.
  HRModuleImpl(const HRNetStage& stage, std::vector<int64_t> in_channels, bool multiscale_output,
               const NormOptions& norm);
  /// `x`: one tensor per branch, branch i at half the resolution of branch i-1 (rounded up).
  /// Returns one tensor per output branch at the size of the input of that branch.
  std::vector<torch::Tensor> forward(std::vector<torch::Tensor> x);
  /// Channels of each output branch.
  const std::vector<int64_t>& out_channels() const { return out_channels_; }
  /// Prints `cac_models::HRModule(channels=(c0, c1, ...), multiscale_output=...)`.
  void pretty_print(std::ostream& stream) const override;

  /// One `Sequential` of residual blocks per branch (`branches.i.k`).
  torch::nn::ModuleList branches{nullptr};
  /// `fuse_layers.i` = row of output branch i, an `OptionalSequentialList` over input branches j
  /// (entry i absent). Null with a single branch (mmseg's `fuse_layers = None`).
  torch::nn::ModuleList fuse_layers{nullptr};

 private:
  std::vector<int64_t> out_channels_;
  bool multiscale_output_;
};
TORCH_MODULE(HRModule);

/// mmseg's `HRNet` backbone; `forward` returns the branches of the last stage, highest
/// resolution first (HRNetV2-W18: 18, 36, 72, 144 channels at strides 4, 8, 16, 32, sizes
/// rounded up at every stride-2 convolution).
/// Initialised as mmseg 0.x's `HRNet` without a checkpoint: `mmcv_default_init` (Kaiming normal
/// fan_out for every conv, batch norms (1, 0)).
///
/// ```
/// HRNet backbone(hrnetv2_stages(18));
/// auto features = backbone->forward(torch::randn({1, 3, 64, 64}));  // 4 maps, 16×16 ... 2×2
/// ```
class HRNetImpl : public BackboneImpl {
 public:
  /// A backbone with the 4 `stages` of mmseg's `extra` (stage 1 a single branch).
  explicit HRNetImpl(std::vector<HRNetStage> stages, const HRNetOptions& options_ = {});
  std::vector<torch::Tensor> forward(const torch::Tensor& x) override;
  std::vector<int64_t> out_channels() const override;
  /// Prints `cac_models::HRNet(channels=(18, 36, 72, 144), norm_eval=false)`.
  void pretty_print(std::ostream& stream) const override;

  /// The stages this backbone was built with.
  const std::vector<HRNetStage>& stages() const { return stages_; }
  /// Stem: 3×3 stride-2 conv `in_channels` → 64 (no bias), BN, ReLU, twice.
  torch::nn::Conv2d conv1{nullptr};
  /// Stem batch norm after `conv1` (mmseg `norm1`, named `bn1`).
  Norm2d bn1{nullptr};
  /// Second stem convolution, 64 → 64, stride 2.
  torch::nn::Conv2d conv2{nullptr};
  /// Stem batch norm after `conv2` (mmseg `norm2`, named `bn2`).
  Norm2d bn2{nullptr};
  /// Stage 1: a `Sequential` of residual blocks (`layer1.k`, downsample `layer1.0.downsample`).
  torch::nn::Sequential layer1{nullptr};
  /// `transition1`..`transition3`: from the branches of stage s to those of stage s+1 (entry i
  /// absent when branch i keeps its width; a new branch comes from the last one by stride-2 convs).
  OptionalSequentialList transition1{nullptr}, transition2{nullptr}, transition3{nullptr};
  /// `stage2`..`stage4`: `ModuleList`s of `HRModule`s.
  torch::nn::ModuleList stage2{nullptr}, stage3{nullptr}, stage4{nullptr};

  /// The options this backbone was built with.
  HRNetOptions options;

 protected:
  /// `options.norm_eval()`.
  bool norm_eval() const override { return options.norm_eval(); }

 private:
  std::vector<HRNetStage> stages_;
  std::vector<int64_t> out_channels_;
};
TORCH_MODULE(HRNet);

/// HRNetV2-W`width` (18 and 48 in the paper's Table 1): `HRNet(hrnetv2_stages(width), options)`.
/// Outputs channels (w, 2w, 4w, 8w) at strides 4, 8, 16, 32; W18 has 9,562,260 parameters.
std::shared_ptr<BackboneImpl> make_hrnetv2(int64_t width, const HRNetOptions& options = {});

}  // namespace cac_models
