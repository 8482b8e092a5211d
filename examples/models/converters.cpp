#include "converters.hpp"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <sstream>
#include <utility>

namespace cac_models {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

/// `s` with the first occurrence of `from` replaced by `to`.
std::string replace_first(std::string s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

/// The names of the sources, in `CheckpointSource` order: the one list.
const std::vector<std::pair<std::string, CheckpointSource>>& source_table() {
  static const std::vector<std::pair<std::string, CheckpointSource>> table{
      {"mmseg", CheckpointSource::MMSeg},       {"cac", CheckpointSource::OfficialCAC},
      {"backbone", CheckpointSource::Backbone}, {"mmcls", CheckpointSource::MMCls},
      {"swin", CheckpointSource::OfficialSwin}, {"torchvision", CheckpointSource::TorchVision}};
  return table;
}

/// `state_dict` without the keys that start with one of `dropped`, the others prefixed `backbone.`.
cac::io::StateDict as_backbone(const cac::io::StateDict& state_dict, const std::vector<std::string>& dropped) {
  cac::io::StateDict out;
  for (const auto& [key, value] : state_dict) {
    bool drop = false;
    for (const auto& prefix : dropped) drop = drop || starts_with(key, prefix);
    if (!drop) out["backbone." + key] = value;
  }
  return out;
}

/// The permutation (0, 2, 1, 3) of the four 2×2 neighbour blocks of Swin's patch merging.
at::Tensor unfold_order() { return at::tensor(std::vector<int64_t>{0, 2, 1, 3}); }

}  // namespace

const std::vector<std::string>& checkpoint_source_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& entry : source_table()) out.push_back(entry.first);
    return out;
  }();
  return names;
}

const std::string& name_of(CheckpointSource source) {
  for (const auto& entry : source_table()) {
    if (entry.second == source) return entry.first;
  }
  TORCH_CHECK(false, "cac_models::name_of: expected a CheckpointSource but got ", static_cast<int>(source));
}

std::ostream& operator<<(std::ostream& stream, CheckpointSource source) { return stream << name_of(source); }

CheckpointSource checkpoint_source(const std::string& name) {
  std::ostringstream known;
  for (const auto& entry : source_table()) {
    if (entry.first == name) return entry.second;
    known << (known.tellp() > 0 ? ", " : "") << entry.first;
  }
  TORCH_CHECK(false, "cac_models::checkpoint_source: expected one of ", known.str(), " but got '", name, "'");
}

cac::io::KeyMap official_cac_key_map() {
  cac::io::KeyMap map;
  for (std::string head : {"decode_head.", "decode_head.0.", "decode_head.1.", "decode_head.2.", "decode_head.3."}) {
    map.push_back({head + "proj.", head + "cac.context_projector."});
    map.push_back({head + "apd_proj.", head + "cac.oracle_projector."});
  }
  return map;
}

at::Tensor swin_reduction_to_mmseg(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) % 4 == 0, "cac_models::swin_reduction_to_mmseg: expected a ",
              "weight of shape [out, 4C] but got ", weight.sizes());
  const int64_t out = weight.size(0), in = weight.size(1);
  return weight.reshape({out, 4, in / 4})
      .index_select(1, unfold_order())
      .transpose(1, 2)
      .reshape({out, in})
      .contiguous();
}

at::Tensor swin_norm_to_mmseg(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) % 4 == 0, "cac_models::swin_norm_to_mmseg: expected a vector ",
              "of 4C elements but got ", weight.sizes());
  const int64_t in = weight.size(0);
  return weight.reshape({4, in / 4}).index_select(0, unfold_order()).transpose(0, 1).reshape({in}).contiguous();
}

cac::io::StateDict convert_official_swin(const cac::io::StateDict& state_dict) {
  cac::io::StateDict out;
  for (const auto& [key, value] : state_dict) {
    std::string name = key;
    at::Tensor tensor = value;
    if (starts_with(key, "head")) continue;
    if (starts_with(key, "layers")) {
      if (contains(key, "attn.")) {
        name = replace_first(key, "attn.", "attn.w_msa.");
      } else if (contains(key, "mlp.fc1.")) {
        name = replace_first(key, "mlp.fc1.", "ffn.layers.0.0.");
      } else if (contains(key, "mlp.fc2.")) {
        name = replace_first(key, "mlp.fc2.", "ffn.layers.1.");
      } else if (contains(key, "mlp.")) {
        name = replace_first(key, "mlp.", "ffn.");
      } else if (contains(key, "downsample") && contains(key, "reduction.")) {
        tensor = swin_reduction_to_mmseg(value);
      } else if (contains(key, "downsample") && contains(key, "norm.")) {
        tensor = swin_norm_to_mmseg(value);
      }
      name = replace_first(name, "layers", "stages");
    } else if (starts_with(key, "patch_embed") && contains(key, "proj")) {
      name = replace_first(key, "proj", "projection");
    }
    out[name] = tensor;
  }
  return out;
}

cac::io::StateDict convert_state_dict(const cac::io::StateDict& state_dict, CheckpointSource source) {
  switch (source) {
    case CheckpointSource::MMSeg: return state_dict;
    case CheckpointSource::OfficialCAC: {
      const auto options = cac::io::LoadOptions().key_map(official_cac_key_map());
      cac::io::StateDict out;
      for (const auto& [key, value] : state_dict) out[cac::io::map_key(key, options)] = value;
      return out;
    }
    case CheckpointSource::Backbone: return as_backbone(state_dict, {"fc.", "head."});
    case CheckpointSource::MMCls: {
      cac::io::StateDict out;
      for (const auto& [key, value] : state_dict) {
        if (starts_with(key, "backbone.")) out[key] = value;
      }
      return out;
    }
    case CheckpointSource::OfficialSwin: return as_backbone(convert_official_swin(state_dict), {});
    case CheckpointSource::TorchVision: return as_backbone(state_dict, {"fc.", "classifier."});
  }
  TORCH_CHECK(false, "cac_models::convert_state_dict: expected a CheckpointSource but got ", static_cast<int>(source));
}

}  // namespace cac_models
