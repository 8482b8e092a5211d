#pragma once
/// \file
/// The checkpoints of a training run (mmcv's `CheckpointHook`): `iter_N.pt` every
/// `runtime.checkpoint_interval`, `latest.pt` (a second name of the newest, published atomically),
/// the last `runtime.keep_last` kept, `best.pt` (the best mIoU's weights), and the state that makes
/// a resumed run bit-identical to an uninterrupted one. Every file is written with
/// `cac_io::AtomicFile`: a full disk or a killed process never leaves a truncated checkpoint.
///
/// ```
/// cac_engine::CheckpointStore store("work_dirs/run", /*keep_last=*/3, /*writes=*/rank == 0);
/// cac_engine::TrainState state = store.resume(*model, *optimizer, loader.options(), loader.batches_per_epoch());
/// ...
/// store.save(*model, *optimizer, state, loader.options(), config);
/// ```

#include "config.hpp"

#include "data/loader.hpp"

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <filesystem>
#include <utility>
#include <vector>

namespace cac_engine {

/// What a checkpoint holds besides the weights and the optimizer state.
struct TrainState {
  /// Iterations done.
  int64_t iteration = 0;
  /// Where the training loader continues.
  cac_data::LoaderState loader;
  /// The best validation mIoU so far (-1 before the first evaluation).
  double best_miou = -1.0;
  /// The evaluation due at `iteration` failed after this checkpoint was written (a resume runs it
  /// first); false in checkpoints written before this entry existed.
  bool evaluation_pending = false;
};

/// The checkpoints of one work directory. Only the process constructed with `writes` (rank 0)
/// touches files; the others keep the same state so that every rank agrees.
class CheckpointStore {
 public:
  /// The store of `dir`, keeping the last `keep_last` numbered checkpoints (0 = all).
  CheckpointStore(std::filesystem::path dir, int64_t keep_last, bool writes);

  /// Writes `iter_<state.iteration>.pt` (weights, optimizer, `state`, the loader's samples per
  /// step, the CPU RNG and `config`), makes `latest.pt` name it, and removes the numbered
  /// checkpoints beyond `keep_last`, oldest first.
  void save(torch::nn::Module& model, torch::optim::Optimizer& optimizer, const TrainState& state,
            const cac_data::LoaderOptions& loader, const Config& config) const;

  /// Loads `latest.pt` into `model` and `optimizer`, restores the CPU RNG and returns the state,
  /// the loader position converted to `loader`'s samples per step (a checkpoint resumes on any
  /// number of processes). Throws naming the file when it is missing or lacks an entry.
  TrainState resume(torch::nn::Module& model, torch::optim::Optimizer& optimizer, const cac_data::LoaderOptions& loader,
                    int64_t batches_per_epoch) const;

  /// When `miou` beats `state.best_miou`: records it and writes `model`'s weights to `best.pt`.
  /// Returns whether it did.
  bool update_best(torch::nn::Module& model, double miou, TrainState& state) const;

  /// `dir/latest.pt`.
  std::filesystem::path latest() const { return dir_ / "latest.pt"; }
  /// `dir/best.pt`.
  std::filesystem::path best() const { return dir_ / "best.pt"; }
  /// The numbered checkpoints `iter_N.pt` of the directory, oldest first.
  std::vector<std::pair<int64_t, std::filesystem::path>> numbered() const;
  /// Every checkpoint the directory holds: the numbered ones, `latest.pt` and `best.pt` (none when
  /// the directory does not exist).
  std::vector<std::filesystem::path> files() const;

 private:
  std::filesystem::path dir_;
  int64_t keep_last_;
  bool writes_;
};

/// Where a loader of `options` continues after `saved`, a position of a run that took
/// `saved_step` samples per step over all ranks: the same epoch, after the same number of samples
/// rounded down to a whole step of this run (so at most one step's samples are seen twice).
cac_data::LoaderState convert_loader_state(const cac_data::LoaderState& saved, int64_t saved_step,
                                           const cac_data::LoaderOptions& options, int64_t batches_per_epoch);

}  // namespace cac_engine
