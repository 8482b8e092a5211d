#pragma once
/// \file
/// Checkpoint conversions of the model zoo (like mmsegmentation's `tools/model_converters/`):
/// the keys of mmsegmentation, official CAC, ImageNet backbone and official Swin checkpoints
/// renamed as the zoo's modules are named, ready for `cac::io::load_state_dict`. The library
/// (`<cac/io/io.hpp>`) reads and loads checkpoints; which names a checkpoint family uses is the
/// zoo's business, so it lives here. See docs/checkpoints.md and docs/models.md.
///
/// ```
/// auto model = cac_models::make_model("fcn_mobilenetv2", {150, /*cac=*/true});
/// auto weights = cac_models::convert_state_dict(cac::io::read_state_dict("cac_fcn.pth"),
///                                               cac_models::checkpoint_source("cac"));
/// auto report = cac::io::load_state_dict(*model, weights);  // strict: throws on any mismatch
/// ```

#include <cac/io/checkpoint.hpp>
#include <cac/io/load_state_dict.hpp>

#include <ATen/core/Tensor.h>

#include <ostream>
#include <string>
#include <vector>

namespace cac_models {

/// Where a checkpoint comes from, for `cac_models::convert_state_dict`.
enum class CheckpointSource {
  /// mmsegmentation 0.x (`backbone.*`, `decode_head.*`, `auxiliary_head.*`): keys kept as they are.
  MMSeg,
  /// The official CAC release (mmseg keys, `decode_head[.N].proj.*` and `decode_head[.N].apd_proj.*`
  /// for the projectors): `official_cac_key_map()`.
  OfficialCAC,
  /// An ImageNet backbone whose keys are the backbone's own (open-mmlab ResNetV1c, msra HRNetV2
  /// via open-mmlab): `backbone.` is prepended; classifier keys (`fc.*`, `head.*`) are dropped.
  Backbone,
  /// An mmcls classifier (MobileNetV2 from mmcls): the `backbone.*` keys are kept, the rest
  /// (`head.*`) dropped, as mmcv's `mmcls://` loader does.
  MMCls,
  /// The official Swin release (`{'model': ...}`): mmseg's `swin_converter` (keys renamed, patch
  /// merging weights reordered), then `backbone.` prepended.
  OfficialSwin,
  /// A torchvision classifier: `backbone.` prepended, `fc.*`/`classifier.*` dropped (layer names of
  /// ResNet match mmseg's; stems and other backbones differ and show up in the load report).
  TorchVision,
};

/// The names of the sources in `CheckpointSource` order: `mmseg`, `cac`, `backbone`, `mmcls`,
/// `swin`, `torchvision` (the values of `cac-convert --from` and `model.pretrained_source`).
const std::vector<std::string>& checkpoint_source_names();

/// The source's name (one of `checkpoint_source_names()`).
const std::string& name_of(CheckpointSource source);

/// Prints `name_of(source)`.
std::ostream& operator<<(std::ostream& stream, CheckpointSource source);

/// The source named `name` (one of `checkpoint_source_names()`); throws `c10::Error` listing the
/// names otherwise.
CheckpointSource checkpoint_source(const std::string& name);

/// The key map of the official CAC checkpoints: `decode_head.proj.` → `decode_head.cac.context_projector.`,
/// `decode_head.apd_proj.` → `decode_head.cac.oracle_projector.`, and the same under
/// `decode_head.N.` for N in 0…3 (OCRNet's cascade is `decode_head.1.`).
cac::io::KeyMap official_cac_key_map();

/// mmseg's `correct_unfold_reduction_order` (tools/model_converters/swin2mmseg.py): the official
/// Swin's patch merging concatenates its 2×2 neighbours as (x0, x1, x2, x3) = ((0,0), (1,0), (0,1),
/// (1,1)) channel blocks; mmseg's `nn.Unfold` interleaves them per channel in the order (0,0),
/// (0,1), (1,0), (1,1). `weight` `[out, 4C]` is permuted to the latter.
at::Tensor swin_reduction_to_mmseg(const at::Tensor& weight);

/// mmseg's `correct_unfold_norm_order`: the same permutation for the patch merging's norm
/// `weight`/`bias` `[4C]`. See `cac_models::swin_reduction_to_mmseg`.
at::Tensor swin_norm_to_mmseg(const at::Tensor& weight);

/// The official Swin keys as mmseg names them (its `swin_converter`): `head.*` dropped;
/// under `layers.`: `attn.` → `attn.w_msa.`, `mlp.fc1.` → `ffn.layers.0.0.`, `mlp.fc2.` →
/// `ffn.layers.1.`, patch merging `downsample.reduction`/`downsample.norm` reordered, then the
/// first `layers` → `stages`; `patch_embed.proj` → `patch_embed.projection`. Other keys (the
/// final `norm.*`, `attn_mask` buffers) are kept and show up as unexpected when loading.
cac::io::StateDict convert_official_swin(const cac::io::StateDict& state_dict);

/// `state_dict` with keys as the zoo names them (see `cac_models::CheckpointSource`): mmseg keys
/// unchanged; official CAC projectors renamed; backbone checkpoints prefixed with `backbone.`
/// (their classifier dropped); official Swin converted as mmseg does.
///
/// ```
/// auto backbone = cac_models::convert_state_dict(cac::io::read_state_dict("swin_tiny_patch4_window7_224.pth"),
///                                                cac_models::CheckpointSource::OfficialSwin);
/// cac::io::load_state_dict(*model, backbone, cac::io::LoadOptions().strict(false));
/// ```
cac::io::StateDict convert_state_dict(const cac::io::StateDict& state_dict, CheckpointSource source);

}  // namespace cac_models
