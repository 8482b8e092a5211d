#include "weights.hpp"

#include "trainer.hpp"

#include "models/converters.hpp"

#include <cac/io/io.hpp>

#include <fmt/format.h>
#include <torch/torch.h>

#include <regex>

namespace cac_engine {

namespace {

constexpr size_t kListedKeys = 8;  // keys listed per kind in an error; the counts are always complete

/// What strict loading would report, without copying anything: the model's keys against the
/// checkpoint's (as `cac::io::load_state_dict` names them; `num_batches_tracked` may be missing).
cac::io::LoadReport compare(torch::nn::Module& model, const cac::io::StateDict& state_dict) {
  cac::io::LoadReport report;
  const cac::io::StateDict own = cac::io::state_dict_of(model);
  for (const auto& [key, value] : own) {
    const auto found = state_dict.find(key);
    if (found == state_dict.end()) {
      const std::string tracked = "num_batches_tracked";
      const bool tracked_key =
          key.size() >= tracked.size() && key.compare(key.size() - tracked.size(), tracked.size(), tracked) == 0;
      if (!tracked_key) report.missing_keys.push_back(key);
    } else if (found->second.sizes() != value.sizes()) {
      report.mismatched_keys.push_back({key, found->second.sizes().vec(), value.sizes().vec()});
    } else {
      report.loaded_keys.push_back(key);
    }
  }
  for (const auto& entry : state_dict) {
    if (own.find(entry.first) == own.end()) report.unexpected_keys.push_back(entry.first);
  }
  return report;
}

/// `cac` when a decode head's keys are named as the official CAC release names its projectors
/// (`decode_head[.N].proj.*`, `decode_head[.N].apd_proj.*`; no zoo module has those names), else `mmseg`.
std::string detect_source(const cac::io::StateDict& state_dict) {
  static const std::regex official(R"(^decode_head\.(\d+\.)?(apd_)?proj\.)");
  for (const auto& entry : state_dict) {
    if (std::regex_search(entry.first, official)) return "cac";
  }
  return "mmseg";
}

/// "mmseg, cac, backbone, ...": the names `--checkpoint-source` takes.
std::string source_names() {
  std::string names;
  for (const auto& name : cac_models::checkpoint_source_names()) names += (names.empty() ? "" : ", ") + name;
  return names;
}

/// A hint for a strict mismatch: the official CAC projectors under another layout, or the config.
std::string mismatch_hint(const cac::io::LoadReport& report, const std::string& source) {
  bool official_projectors = false, zoo_projectors = false;
  for (const auto& key : report.unexpected_keys) {
    official_projectors =
        official_projectors || key.find(".proj.") != std::string::npos || key.find(".apd_proj.") != std::string::npos;
    zoo_projectors = zoo_projectors || key.find(".cac.context_projector.") != std::string::npos;
  }
  if (official_projectors && source != "cac")
    return "its projectors are named as the official CAC release names them: use --checkpoint-source cac";
  if (report.loaded_keys.empty()) return "no key matched: check --checkpoint-source (" + source_names() + ")";
  if (zoo_projectors || !report.mismatched_keys.empty() || !report.missing_keys.empty())
    return "use the config of the model the checkpoint holds (model.name, model.num_classes, model.cac)";
  return "check --checkpoint-source and the config's model";
}

}  // namespace

std::string checkpoint_kind(const std::filesystem::path& path) {
  return cac::io::is_torchscript_archive(path.string()) ? "a cac-train checkpoint"
                                                        : "a PyTorch checkpoint (torch.save)";
}

std::string load_checkpoint(torch::nn::Module& model, const std::filesystem::path& path, const std::string& source,
                            bool strict) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cac_engine::load_checkpoint: expected a checkpoint at ",
              path.string(), " but there is none");
  if (cac::io::is_torchscript_archive(path.string())) {  // written by train or save_weights
    load_weights(model, path);                           // every key must match; a mismatch says what the file holds
    return "loaded every key of " + path.string() + " (a cac-train checkpoint)";
  }
  const cac::io::StateDict read = cac::io::read_state_dict(path.string());
  const std::string layout = source.empty() ? detect_source(read) : source;
  const std::string described = layout + (source.empty() ? " layout, detected" : " layout");
  const cac::io::StateDict state_dict = cac_models::convert_state_dict(read, cac_models::checkpoint_source(layout));
  if (strict) {
    const cac::io::LoadReport report = compare(model, state_dict);
    TORCH_CHECK(report.ok(), "cac_engine::load_checkpoint: expected ", path.string(),
                " (a PyTorch checkpoint read in the ", described,
                ") to hold every key of the model with its shape, and no other (strict: evaluation and "
                "inference need every weight), but got:\n",
                report.to_string(kListedKeys), "\n", mismatch_hint(report, layout));
    cac::io::load_state_dict(model, state_dict);
    return fmt::format("loaded every key of {} ({} tensors, {})", path.string(), report.loaded_keys.size(), described);
  }
  const cac::io::LoadReport report = cac::io::load_state_dict(model, state_dict, cac::io::LoadOptions().strict(false));
  TORCH_CHECK(!report.loaded_keys.empty(), "cac_engine::load_checkpoint: expected ", path.string(), " (as ", layout,
              ") to share keys with the model but none matched:\n", report.to_string());
  return report.to_string();
}

std::string load_pretrained(torch::nn::Module& model, const std::filesystem::path& path, const std::string& source) {
  TORCH_CHECK(std::filesystem::is_regular_file(path), "cac_engine::load_pretrained: expected initial weights at ",
              path.string(), " but there is none");
  return load_checkpoint(model, path, source, /*strict=*/false);
}

}  // namespace cac_engine
