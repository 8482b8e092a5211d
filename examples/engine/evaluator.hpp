#pragma once
/// \file
/// The evaluation loop (mmseg's `single_gpu_test`/`multi_gpu_test` + `evaluate`): metrics only.
/// Pictures are the programs' job: they receive every prediction through
/// `EvaluateOptions::on_prediction` (cac-eval `--show-dir` writes them with
/// `cac_eval::write_prediction`).
///
/// ```
/// cac_engine::EvaluateResult result = cac_engine::evaluate(model, config,
/// cac_engine::EvaluateOptions().branches(true)); std::printf("mIoU %.2f\n", 100 * result.metrics.mIoU);
/// ```

#include "builders.hpp"
#include "config.hpp"
#include "distributed.hpp"

#include "data/dataset.hpp"
#include "eval/inference.hpp"
#include "eval/metrics.hpp"

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace cac_engine {

/// One image's prediction, as `EvaluateOptions::on_prediction` receives it.
struct Prediction {
  /// The dataset evaluated (`dataset.load(index)` gives the original image).
  const cac_data::Dataset& dataset;
  /// Index of the image in `dataset`.
  int64_t index;
  /// The image's name (file stem).
  std::string name;
  /// The predicted label map, int64 `[H, W]` at the original size.
  torch::Tensor mask;
};

/// Options of `evaluate`.
struct EvaluateOptions {
  /// Device of the model.
  /// Default: torch::kCPU
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Inference settings (mode, scales, flip).
  /// Default: from the config
  TORCH_ARG(std::optional<cac_eval::InferenceOptions>, inference) = std::nullopt;
  /// Also score the branches of a CAC model (p, pp and the oracle py, whole-image inference):
  /// `EvaluateResult::branches`.
  /// Default: false
  TORCH_ARG(bool, branches) = false;
  /// Evaluate the first this many images of the split only (0 = all).
  /// Default: 0
  TORCH_ARG(int64_t, limit) = 0;
  /// Process group: each rank evaluates its share (images rank, rank + W, ...) and every rank
  /// gets the metrics of the whole split, exactly the single-process ones. Null: one process.
  /// Default: nullptr
  TORCH_ARG(std::shared_ptr<ProcessGroup>, group) = nullptr;
  /// Called with every prediction of this rank's share, e.g. to write pictures
  /// (`cac_eval::write_prediction`); not timed in `ms_per_image`.
  /// Default: none
  TORCH_ARG(std::function<void(const Prediction&)>, on_prediction) = nullptr;
};

/// What `evaluate` returns.
struct EvaluateResult {
  /// The model's prediction (pp for a CAC model).
  cac_eval::Metrics metrics;
  /// With `branches`: `logits` (p), `context` (pp) and `oracle` (py).
  std::map<std::string, cac_eval::Metrics> branches;
  /// Milliseconds per image of inference (without loading), over all ranks.
  double ms_per_image = 0.0;
  /// Images evaluated (by all ranks).
  int64_t images = 0;
};

/// Evaluates `model` (put in eval mode) on the `val` split of `config`'s dataset.
EvaluateResult evaluate(cac_models::EncoderDecoder& model, const Config& config, const EvaluateOptions& options = {});

}  // namespace cac_engine
