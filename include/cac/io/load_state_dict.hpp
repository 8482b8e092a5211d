#pragma once
/// \file
/// Loading a state dict into a module by key (`cac::io::load_state_dict`, like PyTorch's
/// `Module.load_state_dict`, with a report of missing, unexpected and shape-mismatched keys),
/// a module's own state dict (`cac::io::state_dict_of`) and prefix renaming by a caller-supplied
/// key map (`cac::io::map_key`). Conversions of particular checkpoint families (mmsegmentation,
/// the official CAC release, ImageNet backbones) belong to the models they describe: the example
/// model zoo's are in examples/models/converters.hpp. See docs/checkpoints.md.

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
///     cac::io::LoadOptions().strict(false).strip_prefix("module.").key_map({{"classifier.", "fc."}}));
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
    out << "loaded " << loaded_keys.size() << " keys, " << missing_keys.size() << " missing, " << unexpected_keys.size()
        << " unexpected, " << mismatched_keys.size() << " with another shape";
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
inline std::ostream& operator<<(std::ostream& stream, const LoadReport& report) { return stream << report.to_string(); }

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
/// auto weights = cac::io::read_state_dict("model.pth");
/// auto report = cac::io::load_state_dict(*model, weights);  // strict: throws on any mismatch
/// auto renamed = cac::io::load_state_dict(*model, weights,
///                                         cac::io::LoadOptions().key_map({{"classifier.", "fc."}}));
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
      const bool counter =
          key.size() >= suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
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

}  // namespace io
}  // namespace cac
