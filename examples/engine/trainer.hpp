#pragma once
/// \file
/// The training engine (mmsegmentation's `train_segmentor` + `IterBasedRunner`): `train` over a
/// `CheckpointStore` (checkpoint_store.hpp), a `TrainLog` (train_log.hpp) and `evaluate`
/// (evaluator.hpp), plus the weights helpers of the programs (and weights.hpp: any checkpoint).
///
/// ```
/// cac_engine::Config config = cac_engine::Config::load("configs/context_shift/fcn_tiny_cac.yaml");
/// cac_engine::TrainResult result = cac_engine::train(config, cac_engine::TrainOptions().work_dir("work/cac"));
/// std::printf("mIoU %.2f\n", 100 * result.final.mIoU);
/// ```

#include "builders.hpp"
#include "config.hpp"
#include "distributed.hpp"
#include "evaluator.hpp"
#include "weights.hpp"

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
  /// Continue from `work_dir/latest.pt` (model, optimizer, iteration, RNG and loader state). A run
  /// already at its end is left as it is (`TrainResult::already_finished`); one whose last
  /// evaluation failed runs that evaluation first.
  /// Default: false
  TORCH_ARG(bool, resume) = false;
  /// Replace the run a work dir already holds (its `iter_N.pt`, `latest.pt`, `best.pt`,
  /// `log.jsonl`, `config.yaml` and `curves.png` are deleted first). Without it, or `resume`, a
  /// work dir holding a run is refused: two runs never mix.
  /// Default: false
  TORCH_ARG(bool, overwrite) = false;
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
  /// `resume` found the run already at its end (the schedule's, or `stop_at`): nothing was
  /// trained, evaluated or written, and the reason was printed.
  bool already_finished = false;
};

/// Trains the model of `config` (see docs/training.md for the keys) and evaluates it every
/// `evaluation.interval` iterations and at the end (an evaluation that fails writes the
/// checkpoint of its iteration first, so no training is lost). Writes `work_dir/iter_N.pt` every
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

/// Saves `model`'s parameters and buffers to `path` atomically (a checkpoint readable by
/// `load_weights` and `cac-eval`).
void save_weights(torch::nn::Module& model, const std::filesystem::path& path);

/// Loads the model weights of a checkpoint written by `train` or `save_weights` into `model`
/// (by key; every key must match in name and shape). A checkpoint of another model or class count
/// is refused with what the file holds (from the config stored in it) and what the model expects.
void load_weights(torch::nn::Module& model, const std::filesystem::path& path);

/// The device named by `spec` (`cpu`, `cuda`, `cuda:N`), checked to be available.
torch::Device parse_device(const std::string& spec);

}  // namespace cac_engine
