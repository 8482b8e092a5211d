#pragma once
/// \file
/// Loading a state dict into a module by key (`cac::io::load_state_dict`, like PyTorch's
/// `Module.load_state_dict`, with a report of missing, unexpected and shape-mismatched keys),
/// a module's own state dict (`cac::io::state_dict_of`), and the key conversions that bring
/// mmsegmentation, official CAC and ImageNet-pretrained backbone checkpoints to cac's model zoo
/// (`cac::io::convert_state_dict`). See docs/checkpoints.md.

#include <cac/io/checkpoint.hpp>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace cac {
namespace io {

/// One renaming rule of a key map: a key that starts with `from` has that prefix replaced by `to`.
struct KeyRule {
  /// The prefix to replace.
  std::string from;
  /// What replaces it.
  std::string to;
};

/// An ordered list of renaming rules; the first rule whose `from` prefixes a key applies.
using KeyMap = std::vector<KeyRule>;

/// Options of `cac::io::load_state_dict`.
///
/// ```
/// auto report = cac::io::load_state_dict(*model, weights,
///     cac::io::LoadOptions().strict(false).strip_prefix("module.").key_map(cac::io::official_cac_key_map()));
/// ```
struct LoadOptions {
  /// Throw `c10::Error` (before copying anything) when a key is missing, unexpected or of another
  /// shape; otherwise copy what matches and report the rest.
  /// Default: true
  TORCH_ARG(bool, strict) = true;
  /// A prefix removed from every checkpoint key that starts with it (e.g. `module.` of
  /// `DataParallel`), before `key_map` applies.
  /// Default: ""
  TORCH_ARG(std::string, strip_prefix) = "";
  /// Renaming rules applied to each checkpoint key after `strip_prefix` (first match wins).
  /// Default: {}
  TORCH_ARG(KeyMap, key_map) = {};
  /// Do not report a missing `*.num_batches_tracked` buffer (older checkpoints lack it; PyTorch's
  /// batch norm accepts that too). The module keeps its value.
  /// Default: true
  TORCH_ARG(bool, allow_missing_num_batches_tracked) = true;
};

/// A key present in both the module and the checkpoint with different shapes.
struct ShapeMismatch {
  /// The module's key.
  std::string key;
  /// The shape in the checkpoint.
  std::vector<int64_t> checkpoint_shape;
  /// The shape in the module.
  std::vector<int64_t> module_shape;
};

/// What `cac::io::load_state_dict` did, like PyTorch's `_IncompatibleKeys` plus size mismatches.
struct LoadReport {
  /// Module keys (parameters and buffers) copied from the checkpoint, sorted.
  std::vector<std::string> loaded_keys;
  /// Module keys the checkpoint lacks (left unchanged), sorted.
  std::vector<std::string> missing_keys;
  /// Checkpoint keys (after prefix stripping and mapping) the module lacks, sorted.
  std::vector<std::string> unexpected_keys;
  /// Keys in both with different shapes (left unchanged), sorted by key.
  std::vector<ShapeMismatch> mismatched_keys;

  /// True when every module key was loaded and nothing was unexpected or mismatched.
  bool ok() const { return missing_keys.empty() && unexpected_keys.empty() && mismatched_keys.empty(); }

  /// A multi-line summary: counts, then each problem key.
  std::string to_string(size_t max_keys = 50) const {
    std::ostringstream out;
    out << "loaded " << loaded_keys.size() << " keys, " << missing_keys.size() << " missing, "
        << unexpected_keys.size() << " unexpected, " << mismatched_keys.size() << " with another shape";
    auto list = [&](const char* title, const std::vector<std::string>& keys) {
      if (keys.empty()) return;
      out << "\n" << title << ":";
      for (size_t i = 0; i < keys.size() && i < max_keys; ++i) out << "\n  " << keys[i];
      if (keys.size() > max_keys) out << "\n  ... (" << keys.size() << " in all)";
    };
    list("missing keys", missing_keys);
    list("unexpected keys", unexpected_keys);
    if (!mismatched_keys.empty()) {
      out << "\nshape mismatches:";
      for (size_t i = 0; i < mismatched_keys.size() && i < max_keys; ++i) {
        const auto& m = mismatched_keys[i];
        out << "\n  " << m.key << ": checkpoint " << c10::IntArrayRef(m.checkpoint_shape) << ", module "
            << c10::IntArrayRef(m.module_shape);
      }
    }
    return out.str();
  }
};

/// Prints `LoadReport::to_string()`.
inline std::ostream& operator<<(std::ostream& stream, const LoadReport& report) {
  return stream << report.to_string();
}

/// `key` with `options.strip_prefix()` removed and the first matching rule of
/// `options.key_map()` applied.
inline std::string map_key(const std::string& key, const LoadOptions& options) {
  std::string mapped = key;
  const auto& prefix = options.strip_prefix();
  if (!prefix.empty() && mapped.compare(0, prefix.size(), prefix) == 0) mapped.erase(0, prefix.size());
  for (const auto& rule : options.key_map()) {
    if (mapped.compare(0, rule.from.size(), rule.from) == 0) {
      mapped = rule.to + mapped.substr(rule.from.size());
      break;
    }
  }
  return mapped;
}

/// The parameters and buffers of `module` and its submodules by dotted key, as PyTorch's
/// `state_dict()` (the tensors are the module's own, not copies).
inline StateDict state_dict_of(const torch::nn::Module& module) {
  StateDict out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) out[item.key()] = item.value();
  for (const auto& item : module.named_buffers(/*recurse=*/true)) out[item.key()] = item.value();
  return out;
}

/// Copies the tensors of `state_dict` into the parameters and buffers of `module` with the same
/// key (after `options.strip_prefix()` and `options.key_map()`), converting dtypes as
/// `Tensor::copy_` does, and reports missing, unexpected and shape-mismatched keys.
/// With `options.strict()` any of those throws `c10::Error` listing them, and nothing is copied.
///
/// ```
/// auto model = cac_models::make_model("fcn_mobilenetv2", {150, true});
/// auto weights = cac::io::convert_state_dict(cac::io::read_state_dict("cac_fcn.pth"),
///                                            cac::io::CheckpointSource::OfficialCAC);
/// auto report = cac::io::load_state_dict(*model, weights);  // strict: throws on any mismatch
/// ```
inline LoadReport load_state_dict(torch::nn::Module& module, const StateDict& state_dict,
                                  const LoadOptions& options = {}) {
  const char* who = "cac::io::load_state_dict";
  StateDict mapped;
  for (const auto& [key, tensor] : state_dict) {
    const std::string name = map_key(key, options);
    TORCH_CHECK(mapped.find(name) == mapped.end(), who, ": expected distinct keys after mapping but two ",
                "checkpoint keys map to '", name, "'");
    mapped.emplace(name, tensor);
  }
  StateDict own = state_dict_of(module);
  LoadReport report;
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  for (const auto& [key, target] : own) {
    auto found = mapped.find(key);
    if (found == mapped.end()) {
      const std::string suffix = "num_batches_tracked";
      const bool counter = key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
      if (!(counter && options.allow_missing_num_batches_tracked())) report.missing_keys.push_back(key);
      continue;
    }
    TORCH_CHECK(found->second.defined(), who, ": expected a defined tensor for '", key, "'");
    if (found->second.sizes() != target.sizes()) {
      report.mismatched_keys.push_back({key, found->second.sizes().vec(), target.sizes().vec()});
      continue;
    }
    report.loaded_keys.push_back(key);
    copies.emplace_back(target, found->second);
  }
  for (const auto& entry : mapped) {
    if (own.find(entry.first) == own.end()) report.unexpected_keys.push_back(entry.first);
  }
  TORCH_CHECK(!options.strict() || report.ok(), who, ": expected the checkpoint's keys and shapes to match the ",
              "module's exactly (strict) but got:\n", report.to_string());
  at::NoGradGuard no_grad;
  for (auto& [target, source] : copies) target.copy_(source);
  return report;
}

/// Where a checkpoint comes from, for `cac::io::convert_state_dict`.
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

/// Prints the source's name (`mmseg`, `cac`, `backbone`, `mmcls`, `swin`, `torchvision`).
inline std::ostream& operator<<(std::ostream& stream, CheckpointSource source) {
  const char* names[] = {"mmseg", "cac", "backbone", "mmcls", "swin", "torchvision"};
  return stream << names[static_cast<int>(source)];
}

/// The source named `name` (`mmseg`, `cac`, `backbone`, `mmcls`, `swin`, `torchvision`); throws
/// `c10::Error` listing the names otherwise.
inline CheckpointSource checkpoint_source(const std::string& name) {
  const std::pair<const char*, CheckpointSource> table[] = {
      {"mmseg", CheckpointSource::MMSeg},   {"cac", CheckpointSource::OfficialCAC},
      {"backbone", CheckpointSource::Backbone}, {"mmcls", CheckpointSource::MMCls},
      {"swin", CheckpointSource::OfficialSwin}, {"torchvision", CheckpointSource::TorchVision}};
  for (const auto& entry : table) {
    if (name == entry.first) return entry.second;
  }
  TORCH_CHECK(false, "cac::io::checkpoint_source: expected one of mmseg, cac, backbone, mmcls, swin, torchvision ",
              "but got '", name, "'");
}

/// The key map of the official CAC checkpoints: `decode_head.proj.` → `decode_head.cac.context_projector.`,
/// `decode_head.apd_proj.` → `decode_head.cac.oracle_projector.`, and the same under
/// `decode_head.1.` (OCRNet's cascade; `decode_head.0.` … `decode_head.3.` are covered).
inline KeyMap official_cac_key_map() {
  KeyMap map;
  for (std::string head : {"decode_head.", "decode_head.0.", "decode_head.1.", "decode_head.2.", "decode_head.3."}) {
    map.push_back({head + "proj.", head + "cac.context_projector."});
    map.push_back({head + "apd_proj.", head + "cac.oracle_projector."});
  }
  return map;
}

/// mmseg's `correct_unfold_reduction_order` (tools/model_converters/swin2mmseg.py): the official
/// Swin's patch merging concatenates its 2×2 neighbours as (x0, x1, x2, x3) = ((0,0), (1,0), (0,1),
/// (1,1)) channel blocks; mmseg's `nn.Unfold` interleaves them per channel in the order (0,0),
/// (0,1), (1,0), (1,1). `weight` `[out, 4C]` is permuted to the latter.
inline at::Tensor swin_reduction_to_mmseg(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % 4 == 0, "cac::io::swin_reduction_to_mmseg: expected a weight ",
              "of shape [out, 4C] but got ", weight.sizes());
  const int64_t out = weight.size(0), in = weight.size(1);
  const auto order = at::tensor(std::vector<int64_t>{0, 2, 1, 3});
  return weight.reshape({out, 4, in / 4}).index_select(1, order).transpose(1, 2).reshape({out, in}).contiguous();
}

/// mmseg's `correct_unfold_norm_order`: the same permutation for the patch merging's norm
/// `weight`/`bias` `[4C]`. See `cac::io::swin_reduction_to_mmseg`.
inline at::Tensor swin_norm_to_mmseg(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) % 4 == 0, "cac::io::swin_norm_to_mmseg: expected a vector of ",
              "4C elements but got ", weight.sizes());
  const int64_t in = weight.size(0);
  const auto order = at::tensor(std::vector<int64_t>{0, 2, 1, 3});
  return weight.reshape({4, in / 4}).index_select(0, order).transpose(0, 1).reshape({in}).contiguous();
}

namespace detail {

inline bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

/// Replaces the first occurrence of `from` in `s` by `to`.
inline std::string replace_first(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

}  // namespace detail

/// The official Swin keys as mmseg names them (its `swin_converter`): `head.*` dropped;
/// under `layers.`: `attn.` → `attn.w_msa.`, `mlp.fc1.` → `ffn.layers.0.0.`, `mlp.fc2.` →
/// `ffn.layers.1.`, patch merging `downsample.reduction`/`downsample.norm` reordered, then the
/// first `layers` → `stages`; `patch_embed.proj` → `patch_embed.projection`. Other keys (the
/// final `norm.*`, `attn_mask` buffers) are kept and show up as unexpected when loading.
inline StateDict convert_official_swin(const StateDict& state_dict) {
  using detail::replace_first;
  StateDict out;
  for (const auto& [key, value] : state_dict) {
    std::string name = key;
    at::Tensor tensor = value;
    if (detail::starts_with(key, "head")) continue;
    if (detail::starts_with(key, "layers")) {
      if (key.find("attn.") != std::string::npos) {
        name = replace_first(key, "attn.", "attn.w_msa.");
      } else if (key.find("mlp.") != std::string::npos) {
        if (key.find("mlp.fc1.") != std::string::npos) {
          name = replace_first(key, "mlp.fc1.", "ffn.layers.0.0.");
        } else if (key.find("mlp.fc2.") != std::string::npos) {
          name = replace_first(key, "mlp.fc2.", "ffn.layers.1.");
        } else {
          name = replace_first(key, "mlp.", "ffn.");
        }
      } else if (key.find("downsample") != std::string::npos) {
        if (key.find("reduction.") != std::string::npos) {
          tensor = swin_reduction_to_mmseg(value);
        } else if (key.find("norm.") != std::string::npos) {
          tensor = swin_norm_to_mmseg(value);
        }
      }
      name = replace_first(name, "layers", "stages");
    } else if (detail::starts_with(key, "patch_embed") && key.find("proj") != std::string::npos) {
      name = replace_first(key, "proj", "projection");
    }
    out[name] = tensor;
  }
  return out;
}

/// `state_dict` with keys as cac's model zoo names them (see `cac::io::CheckpointSource`):
/// mmseg keys unchanged; official CAC projectors renamed; backbone checkpoints prefixed with
/// `backbone.` (their classifier dropped); official Swin converted as mmseg does.
///
/// ```
/// auto backbone = cac::io::convert_state_dict(cac::io::read_state_dict("swin_tiny_patch4_window7_224.pth"),
///                                             cac::io::CheckpointSource::OfficialSwin);
/// cac::io::load_state_dict(*model, backbone, cac::io::LoadOptions().strict(false));
/// ```
inline StateDict convert_state_dict(const StateDict& state_dict, CheckpointSource source) {
  StateDict out;
  switch (source) {
    case CheckpointSource::MMSeg:
      return state_dict;
    case CheckpointSource::OfficialCAC: {
      const LoadOptions options = LoadOptions().key_map(official_cac_key_map());
      for (const auto& [key, value] : state_dict) out[map_key(key, options)] = value;
      return out;
    }
    case CheckpointSource::Backbone:
      for (const auto& [key, value] : state_dict) {
        if (detail::starts_with(key, "fc.") || detail::starts_with(key, "head.")) continue;
        out["backbone." + key] = value;
      }
      return out;
    case CheckpointSource::MMCls:
      for (const auto& [key, value] : state_dict) {
        if (detail::starts_with(key, "backbone.")) out[key] = value;
      }
      return out;
    case CheckpointSource::OfficialSwin:
      for (const auto& [key, value] : convert_official_swin(state_dict)) out["backbone." + key] = value;
      return out;
    case CheckpointSource::TorchVision:
      for (const auto& [key, value] : state_dict) {
        if (detail::starts_with(key, "fc.") || detail::starts_with(key, "classifier.")) continue;
        out["backbone." + key] = value;
      }
      return out;
  }
  return state_dict;
}

}  // namespace io
}  // namespace cac
