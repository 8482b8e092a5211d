#pragma once
/// \file
/// Multi-threaded data loading: `TrainLoader`, an infinite iteration-based stream of augmented
/// batches (mmseg's `IterBasedRunner` over a `DistributedSampler`), and `EvalLoader`, one pass over
/// a rank's share of a dataset with the test pipeline. Worker threads decode and transform into a
/// bounded queue; the output depends only on the seed, never on the number of workers or on
/// timing. See docs/datasets.md.

#include "dataset.hpp"
#include "transforms.hpp"

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace cac_data {

/// Batching, threading and sharding of a loader.
///
/// `TrainLoader loader(dataset, TrainPipelineOptions(), LoaderOptions().batch_size(4).seed(1));`
struct LoaderOptions {
  /// Samples per batch and rank (mmseg `samples_per_gpu`); `EvalLoader` always uses 1.
  /// Default: 4
  TORCH_ARG(int64_t, batch_size) = 4;
  /// Worker threads; 0 = load on the calling thread inside `next()`.
  /// Default: 4
  TORCH_ARG(int64_t, num_workers) = 4;
  /// Batches prepared ahead of `next()` at most (the bounded queue's length); values below
  /// `num_workers` leave workers idle.
  /// Default: 4
  TORCH_ARG(int64_t, prefetch) = 4;
  /// Seed of the epoch permutations and of every sample's augmentation.
  /// Default: 0
  TORCH_ARG(uint64_t, seed) = 0;
  /// Permute the samples each epoch (`TrainLoader` only).
  /// Default: true
  TORCH_ARG(bool, shuffle) = true;
  /// Drop a rank's last incomplete batch of each epoch (`TrainLoader` only); mmseg keeps it.
  /// Default: false
  TORCH_ARG(bool, drop_last) = false;
  /// This process's rank in [0, world_size).
  /// Default: 0
  TORCH_ARG(int64_t, rank) = 0;
  /// Number of processes sharing the dataset.
  /// Default: 1
  TORCH_ARG(int64_t, world_size) = 1;
  /// Put batches in page-locked memory (only when CUDA is available; ignored otherwise).
  /// Default: false
  TORCH_ARG(bool, pin_memory) = false;
  /// Device of the returned tensors (copied in `next()`, non-blocking from pinned memory).
  /// Default: torch::kCPU
  TORCH_ARG(torch::Device, device) = torch::kCPU;
};

/// A collated batch.
struct Batch {
  /// Images, float32 `[B, 3, H, W]`.
  torch::Tensor images;
  /// Labels, int64 `[B, H, W]` (255 = ignored); for `EvalLoader` at the original resolution.
  torch::Tensor labels;
  /// Sample names.
  std::vector<std::string> names;
  /// Dataset indices of the samples.
  std::vector<int64_t> indices;
  /// Epoch the batch belongs to (0 for `EvalLoader`).
  int64_t epoch = 0;
};

/// Where a `TrainLoader` stands: the next batch is batch `position` of epoch `epoch`.
struct LoaderState {
  /// Current epoch.
  int64_t epoch = 0;
  /// Batches of `epoch` already returned.
  int64_t position = 0;
};

/// The dataset indices rank `rank` visits in epoch `epoch` (torch `DistributedSampler`): all
/// `n` indices, permuted from `(seed, epoch)` if `shuffle`, padded by repeating from the start to
/// a multiple of `world_size`, then every `world_size`-th from offset `rank`. Each rank gets
/// `ceil(n / world_size)` indices and the ranks together cover every index.
std::vector<int64_t> shard_indices(int64_t n, int64_t rank, int64_t world_size, bool shuffle, uint64_t seed,
                                   int64_t epoch);

/// The seed of the augmentation of dataset index `index` in epoch `epoch`.
uint64_t sample_seed(uint64_t seed, int64_t epoch, int64_t index);

namespace detail {
class Prefetcher;
}

/// An infinite stream of training batches: epoch after epoch of this rank's shard
/// (`shard_indices`), each sample transformed by `train_transform` with a generator seeded by
/// `sample_seed(seed, epoch, index)`. Identical for any `num_workers`; `state()`/`restore()`
/// resume it exactly. Errors of a worker (a corrupt file, ...) are re-thrown by `next()` for the
/// batch they belong to, which counts as consumed.
class TrainLoader {
 public:
  /// Starts the workers at epoch 0, batch 0.
  TrainLoader(std::shared_ptr<const Dataset> dataset, TrainPipelineOptions pipeline, LoaderOptions options = {});
  /// Stops and joins the workers (waits for the batches in progress, never for the queue).
  ~TrainLoader();
  TrainLoader(const TrainLoader&) = delete;
  TrainLoader& operator=(const TrainLoader&) = delete;

  /// The next batch; blocks until it is ready.
  Batch next();
  /// The position of the next batch.
  LoaderState state() const;
  /// Continues from `state` (discarding prepared batches): the following `next()` returns what
  /// it would have returned at that point of an uninterrupted run.
  void restore(const LoaderState& state);
  /// Batches per epoch on this rank.
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  /// Samples per epoch on this rank (`ceil(size / world_size)`).
  int64_t samples_per_rank() const { return samples_per_rank_; }
  /// The options.
  const LoaderOptions& options() const { return options_; }

 private:
  Batch make_batch(int64_t global_batch) const;
  std::shared_ptr<const std::vector<int64_t>> epoch_indices(int64_t epoch) const;
  void start(int64_t global_batch);

  std::shared_ptr<const Dataset> dataset_;
  TrainPipelineOptions pipeline_;
  LoaderOptions options_;
  int64_t samples_per_rank_ = 0;
  int64_t batches_per_epoch_ = 0;
  mutable std::mutex cache_mutex_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::shared_ptr<const std::vector<int64_t>> cached_indices_;
  std::unique_ptr<detail::Prefetcher> prefetcher_;
};

/// One pass over rank `rank`'s share of a dataset with `test_transform`, in order, batch size 1:
/// indices `rank, rank + world_size, ...` (no padding, so the ranks together evaluate every sample
/// exactly once). Images are resized, labels keep the original size. Uses `num_workers`,
/// `prefetch`, `rank`, `world_size`, `pin_memory` and `device` of the options.
class EvalLoader {
 public:
  /// Starts the workers at the first sample.
  EvalLoader(std::shared_ptr<const Dataset> dataset, TestPipelineOptions pipeline, LoaderOptions options = {});
  /// Stops and joins the workers.
  ~EvalLoader();
  EvalLoader(const EvalLoader&) = delete;
  EvalLoader& operator=(const EvalLoader&) = delete;

  /// The next sample as a batch of one, or `std::nullopt` after the last.
  std::optional<Batch> next();
  /// Samples of this rank.
  int64_t size() const { return static_cast<int64_t>(indices_.size()); }
  /// The dataset indices of this rank, in order.
  const std::vector<int64_t>& indices() const { return indices_; }
  /// Starts the pass again.
  void reset();

 private:
  std::shared_ptr<const Dataset> dataset_;
  TestPipelineOptions pipeline_;
  LoaderOptions options_;
  std::vector<int64_t> indices_;
  std::unique_ptr<detail::Prefetcher> prefetcher_;
};

}  // namespace cac_data
