#pragma once
/// \file
/// The training engine (mmsegmentation's `IterBasedRunner`) and the evaluation loop.
///
/// ```
/// cac_engine::Config config = cac_engine::Config::load("configs/context_shift/fcn_tiny_cac.yaml");
/// cac_engine::TrainResult result = cac_engine::train(config, cac_engine::TrainOptions().work_dir("work/cac"));
/// std::printf("mIoU %.2f\n", 100 * result.final.mIoU);
/// ```

#include "builders.hpp"
#include "config.hpp"
#include "distributed.hpp"

#include "eval/metrics.hpp"

#include <torch/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cac_engine {

/// Options of `train` that are not part of the config (the command line of `cac-train`).
struct TrainOptions {
  /// Work directory: checkpoints, `log.jsonl`, `config.yaml`, curves.
  /// Default: "work_dirs/run"
  TORCH_ARG(std::filesystem::path, work_dir) = "work_dirs/run";
  /// Continue from `work_dir/latest.pt` (model, optimizer, iteration, RNG and loader state).
  /// Default: false
  TORCH_ARG(bool, resume) = false;
  /// Initial weights loaded by key before training: a checkpoint of this engine, or a PyTorch
  /// `.pth` (mmseg layout; `model.pretrained_source` in the config names other layouts).
  /// Default: ""
  TORCH_ARG(std::string, load_from) = "";
  /// Device to train on.
  /// Default: torch::kCPU
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// Overrides `runtime.seed` when set.
  /// Default: std::nullopt
  TORCH_ARG(std::optional<int64_t>, seed) = std::nullopt;
  /// Deterministic algorithms (`at::globalContext().setDeterministicAlgorithms`).
  /// Default: false
  TORCH_ARG(bool, deterministic) = false;
  /// Print the progress lines.
  /// Default: true
  TORCH_ARG(bool, verbose) = true;
  /// Stop after this iteration (0 = the schedule's end); the checkpoint written there resumes.
  /// Default: 0
  TORCH_ARG(int64_t, stop_at) = 0;
  /// The process group of data-parallel training; null joins the group the environment
  /// describes (`DistributedEnv::from_env`: torchrun or SLURM variables), which is a world of one
  /// when they are unset. See docs/distributed.md.
  /// Default: nullptr
  TORCH_ARG(std::shared_ptr<ProcessGroup>, group) = nullptr;
  /// Timeout of joining the environment's group and of every collective (a dead or stuck peer).
  /// Default: 30 min
  TORCH_ARG(std::chrono::milliseconds, timeout) = ProcessGroup::kDefaultTimeout;
};

/// An evaluation during training.
struct EvalRecord {
  /// Iteration after which the model was evaluated.
  int64_t iteration = 0;
  /// Its metrics.
  cac_eval::Metrics metrics;
};

/// What `train` returns.
struct TrainResult {
  /// The iteration reached.
  int64_t iteration = 0;
  /// Every evaluation (`evaluation.interval` and the end).
  std::vector<EvalRecord> evaluations;
  /// The metrics of the last evaluation.
  cac_eval::Metrics final;
  /// Iterations and total losses (every `runtime.log_interval`).
  std::vector<std::pair<int64_t, double>> losses;
  /// Seconds per training iteration (median of the logged intervals).
  double seconds_per_iteration = 0.0;
};

/// Trains the model of `config` (see docs/training.md for the keys) and evaluates it every
/// `evaluation.interval` iterations and at the end. Writes `work_dir/iter_N.pt` every
/// `runtime.checkpoint_interval` (keeping the last `runtime.keep_last`), `latest.pt`,
/// `best.pt` (best mIoU), `log.jsonl`, `config.yaml` and `curves.png`. Every file is written
/// atomically. On CPU, resuming gives bit-identical weights to an uninterrupted run.
///
/// Data-parallel with a group of W > 1 processes (every rank calls `train` with the same config):
/// rank 0's initial weights are broadcast, each rank trains on its shard of every epoch with
/// `data.batch_size` samples per step (W × batch in all), gradients are averaged before the
/// optimizer step, `model.sync_bn` synchronises the batch norms, losses are averaged for the log,
/// each rank evaluates its share of the validation set and the confusion matrices are summed, and
/// rank 0 alone prints and writes files (`work_dir` must be shared for `resume` across machines).
/// A checkpoint resumes on any number of processes. Every rank returns the same result.
TrainResult train(const Config& config, const TrainOptions& options);

/// Options of `evaluate`.
struct EvaluateOptions {
  /// Device of the model.
  /// Default: torch::kCPU
  TORCH_ARG(torch::Device, device) = torch::kCPU;
  /// When set, writes `<name>.png` (palette mask) and `<name>_overlay.png` per image there.
  /// Default: ""
  TORCH_ARG(std::filesystem::path, show_dir) = "";
  /// Opacity of the overlays.
  /// Default: 0.5
  TORCH_ARG(double, opacity) = 0.5;
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

/// Saves `model`'s parameters and buffers to `path` atomically (a checkpoint readable by
/// `load_weights` and `cac-eval`).
void save_weights(torch::nn::Module& model, const std::filesystem::path& path);

/// Loads the model weights of a checkpoint written by `train` or `save_weights` into `model`
/// (by key; every key must match in name and shape).
void load_weights(torch::nn::Module& model, const std::filesystem::path& path);

/// Loads initial weights into `model`: a checkpoint of this engine (every key must match), else a
/// PyTorch checkpoint read with `cac::io` and converted from `source` (`mmseg`, `cac`, `backbone`,
/// `mmcls`, `swin`, `torchvision`), loaded non-strictly; returns the load report's summary.
std::string load_pretrained(torch::nn::Module& model, const std::filesystem::path& path, const std::string& source);

/// The device named by `spec` (`cpu`, `cuda`, `cuda:N`), checked to be available.
torch::Device parse_device(const std::string& spec);

}  // namespace cac_engine
