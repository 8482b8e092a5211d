#pragma once
/// \file
/// Synchronised batch norm (mmseg `SyncBN`, PyTorch `SyncBatchNorm`) beside `Norm2d`: the batch
/// statistics and the input gradient's two per-channel sums are summed over the processes of a
/// data-parallel job by a caller-supplied `AllReduceSum`, so the model code needs no process group.
///
/// ```
/// cac_models::Norm2d norm(torch::nn::BatchNorm2dOptions(32), /*sync=*/true);
/// cac_models::set_sync_batch_norm(*norm, std::make_shared<const cac_models::AllReduceSum>(
///     [group](std::vector<torch::Tensor>& t) { group->all_reduce_sum(t); }));
/// ```
/// See docs/distributed.md.

#include "common.hpp"

#include <torch/nn/modules/batchnorm.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace cac_models {

/// Sums tensors over the processes of a data-parallel job, in place (e.g. a lambda calling
/// `cac_engine::ProcessGroup::all_reduce_sum`). Every process must call it with the same shapes.
using AllReduceSum = std::function<void(std::vector<torch::Tensor>&)>;

/// Batch norm of `input` `[N, C, H, W]` with the batch statistics of the whole group (mmseg /
/// PyTorch `SyncBatchNorm`). When batch statistics are used (`training`, or no running
/// statistics), the per-channel sum, sum of squares and count are all-reduced in the forward pass
/// and the two per-channel gradient sums in the backward pass; `running_mean`/`running_var` are
/// updated in place with the global mean and unbiased variance (identical on every rank) and
/// `num_batches_tracked` is incremented. The gradients of `weight`/`bias` are this rank's share, as
/// for any parameter (`average_gradients` turns them into the single-process values). In
/// evaluation mode, or with a world of one, this is exactly what `torch::nn::BatchNorm2d` computes.
/// Every rank must call it for the same layers in the same order; `sum` sums tensors over the ranks
/// and must live until the backward pass; an empty `sum` is a world of one. `weight`/`bias` are undefined
/// when not `affine`, the three buffers when not `track_running_stats`.
torch::Tensor sync_batch_norm(const torch::Tensor& input, const torch::nn::BatchNorm2dOptions& options, bool training,
                              const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor running_mean,
                              torch::Tensor running_var, torch::Tensor num_batches_tracked, const AllReduceSum& sum);

/// `sync_batch_norm` with the options, parameters and buffers of `norm` (e.g. to synchronise a
/// model's existing `torch::nn::BatchNorm2d` from its parent's `forward`).
torch::Tensor sync_batch_norm(const torch::Tensor& input, torch::nn::BatchNorm2dImpl& norm, const AllReduceSum& sum);

/// Installs `sync_batch_norm` with `sum` in every `Norm2d` of `module` built with `sync` (the zoo's
/// `model.sync_bn`); a null `sum` makes them plain batch norm again. The layers share ownership of
/// `sum`. Returns the number of layers changed.
int64_t set_sync_batch_norm(torch::nn::Module& module, std::shared_ptr<const AllReduceSum> sum);

}  // namespace cac_models
