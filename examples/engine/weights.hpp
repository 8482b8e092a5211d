#pragma once
/// \file
/// Weights from any checkpoint the examples read into a model of the zoo: checkpoints of cac-train
/// (LibTorch archives: `latest.pt`, `best.pt`, `iter_N.pt`) and PyTorch `.pth` files (zip or
/// legacy `torch.save`, read by `cac::io`) in one of the layouts of `cac_models::CheckpointSource`.
/// `load_checkpoint` is the one loader: strict for evaluation and inference (`cac-eval`,
/// `cac-infer`), non-strict for initial weights (`load_pretrained`, `model.pretrained`,
/// `--load-from`). See docs/checkpoints.md.
///
/// ```
/// auto model = cac_engine::build_model(config);
/// std::cout << cac_engine::load_checkpoint(*model, "cac_fcn.pth", "cac", /*strict=*/true) << "\n";
/// ```

#include <torch/nn/module.h>

#include <filesystem>
#include <string>

namespace cac_engine {

/// Loads the weights of the checkpoint at `path` into `model` and returns a one-line summary.
///
/// A cac-train checkpoint (a LibTorch archive, `cac::io::is_torchscript_archive`) is loaded with
/// `load_weights`: every key must match, whatever `strict` and `source` say. Any other file is read
/// with `cac::io::read_state_dict` (zip or legacy `torch.save`; mmcv's `{'meta', 'state_dict'}`,
/// timm's `{'model'}` or a plain dict) and its keys converted from `source` (one of
/// `cac_models::checkpoint_source_names()`: `mmseg`, `cac`, `backbone`, `mmcls`, `swin`,
/// `torchvision`); an empty `source` is detected: `cac` when the decode head's keys name the
/// official CAC projectors (`decode_head[.N].proj.*`, `apd_proj.*`), else `mmseg`. `strict`: every key of the model
/// present with its shape and no other key (else nothing is copied and the error names the file, the layout and the
/// missing, unexpected and mismatched keys); not strict: the matching keys are copied, and at least one must match.
std::string load_checkpoint(torch::nn::Module& model, const std::filesystem::path& path, const std::string& source,
                            bool strict);

/// Loads initial weights into `model`: `load_checkpoint(model, path, source, /*strict=*/false)`
/// (a cac-train checkpoint must still match every key); returns the load report's summary.
std::string load_pretrained(torch::nn::Module& model, const std::filesystem::path& path, const std::string& source);

/// What a file is, for messages: "a cac-train checkpoint" or "a PyTorch checkpoint (torch.save)".
std::string checkpoint_kind(const std::filesystem::path& path);

}  // namespace cac_engine
