#pragma once
/// \file
/// Multi-process data-parallel training on LibTorch's c10d: the torchrun/SLURM environment,
/// a process group (Gloo on CPU, NCCL on CUDA) with bucketed collectives and timeouts,
/// parameter broadcast and gradient averaging, and the binding of the group to the model's
/// synchronised batch norms (`cac_models::sync_batch_norm`) and to the evaluation's confusion
/// matrices (`cac_eval::all_reduce`). The local launcher is in launcher.hpp.
///
/// ```
/// auto group = std::make_shared<cac_engine::ProcessGroup>();
/// group->init(cac_engine::DistributedEnv::from_env(), device, std::chrono::minutes(30));
/// cac_engine::broadcast_parameters(*model, *group);
/// // every step: loss.backward(); cac_engine::average_gradients(*model, *group); optimizer.step();
/// ```
/// See docs/distributed.md.

#include "models/sync_batch_norm.hpp"

#include <torch/nn/module.h>
#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

namespace cac_engine {

/// Where this process stands in the job, read from the torchrun variables `RANK`, `WORLD_SIZE`,
/// `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`, with SLURM's `SLURM_PROCID`, `SLURM_NTASKS`,
/// `SLURM_LOCALID` as fallbacks for the first three. Unset: a world of one.
struct DistributedEnv {
  /// Global rank in [0, world_size).
  int64_t rank = 0;
  /// Number of processes in the job.
  int64_t world_size = 1;
  /// Rank on this machine (selects the GPU: `cuda:<local_rank>`).
  int64_t local_rank = 0;
  /// Address of rank 0, which hosts the rendezvous store.
  std::string master_addr = "127.0.0.1";
  /// Port of the rendezvous store on rank 0.
  int64_t master_port = 29500;
  /// Whether a launcher set the variables (`RANK`/`WORLD_SIZE` or `SLURM_PROCID`/`SLURM_NTASKS`).
  bool launched = false;

  /// The environment of this process. Throws on malformed values (non-numeric, rank out of range).
  static DistributedEnv from_env();
  /// Whether there is more than one process.
  bool distributed() const { return world_size > 1; }
};

/// A c10d process group: Gloo for CPU tensors, NCCL for CUDA tensors (when LibTorch was built
/// with it, `USE_C10D_NCCL`). With a world of one (or before `init`) every collective is a no-op.
/// Every collective must be called by all ranks in the same order with tensors of the same
/// shapes and dtypes. A peer that died or stopped answering makes the collective throw a
/// `c10::Error` ("cac_engine::ProcessGroup::...: rank r of W failed ...") within the timeout.
class ProcessGroup {
 public:
  /// Bucket size of `broadcast` and `all_reduce_sum` (PyTorch DDP's `bucket_cap_mb`).
  static constexpr int64_t kDefaultBucketBytes = 25 * 1024 * 1024;
  /// PyTorch's default collective timeout.
  static constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::minutes(30);

  /// A world of one; call `init` to join a group.
  ProcessGroup();
  /// `init(env, device, timeout)`.
  ProcessGroup(const DistributedEnv& env, torch::Device device = torch::kCPU,
               std::chrono::milliseconds timeout = kDefaultTimeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  /// Joins the group of `env`: rank 0 hosts a `TCPStore` on `master_addr:master_port`, the others
  /// connect to it, then the backend connects every pair. The backend follows `device`: Gloo for
  /// the CPU, NCCL for CUDA. Joining, and every later collective, fails after `timeout` if a
  /// peer is missing. Gloo binds to `GLOO_SOCKET_IFNAME` when set, to 127.0.0.1 when the master is
  /// local, and otherwise to the address of this machine's hostname. A world of one needs no
  /// network and creates nothing.
  void init(const DistributedEnv& env, torch::Device device = torch::kCPU,
            std::chrono::milliseconds timeout = kDefaultTimeout);

  /// This process's rank.
  int64_t rank() const { return rank_; }
  /// The number of processes.
  int64_t size() const { return size_; }
  /// The device of the tensors this group reduces (CPU for Gloo, CUDA for NCCL).
  torch::Device device() const { return device_; }
  /// "gloo", "nccl", or "none" for a world of one.
  const std::string& backend() const { return backend_; }
  /// The timeout of joining and of every collective.
  std::chrono::milliseconds timeout() const { return timeout_; }
  /// Bytes per bucket of `broadcast`/`all_reduce_sum` (> 0).
  /// Default: kDefaultBucketBytes (25 MiB)
  int64_t bucket_bytes() const { return bucket_bytes_; }
  /// Sets `bucket_bytes`.
  void set_bucket_bytes(int64_t bytes);

  /// Overwrites every tensor with its value on rank `root`, in place. Tensors of one dtype and
  /// device are flattened into buckets of `bucket_bytes`, one broadcast per bucket.
  void broadcast(std::vector<torch::Tensor>& tensors, int64_t root = 0);
  /// Replaces every tensor by its sum over the ranks, in place, bucketed as `broadcast`.
  void all_reduce_sum(std::vector<torch::Tensor>& tensors);
  /// Waits until every rank has reached the barrier.
  void barrier();

 private:
  void bucketed(std::vector<torch::Tensor>& tensors, const char* what, int64_t root);
  void check_ranks(const char* what) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int64_t rank_ = 0;
  int64_t size_ = 1;
  std::string backend_ = "none";
  torch::Device device_ = torch::kCPU;
  std::chrono::milliseconds timeout_ = kDefaultTimeout;
  int64_t bucket_bytes_ = kDefaultBucketBytes;
};

/// The group of the job the environment describes (`DistributedEnv::from_env`), joined with
/// `timeout`; a world of one when no launcher set the variables. With several processes, a CUDA
/// `device` without an index becomes `cuda:<LOCAL_RANK>` (one GPU per process).
std::shared_ptr<ProcessGroup> join_environment_group(torch::Device& device,
                                                     std::chrono::milliseconds timeout = ProcessGroup::kDefaultTimeout);

/// Copies every parameter and buffer of rank 0 to the other ranks (identical initial weights and
/// batch-norm statistics), bucketed.
void broadcast_parameters(torch::nn::Module& module, ProcessGroup& group);

/// Replaces the gradient of every parameter that requires one by its mean over the ranks (sum /
/// world size), in one bucketed all-reduce. A parameter without a gradient on some rank counts as
/// zeros there; it gets the mean on every rank unless no rank had a gradient, in which case it
/// stays without one everywhere (so optimizers skip it on every rank alike).
void average_gradients(torch::nn::Module& module, ProcessGroup& group);

/// `group`'s `all_reduce_sum` as a `cac_models::AllReduceSum` (sharing ownership of the group) for
/// the code that sums over processes without knowing them: `cac_models::sync_batch_norm`,
/// `cac_eval::all_reduce`. Empty for a null group or a world of one.
cac_models::AllReduceSum sum_over(std::shared_ptr<ProcessGroup> group);

/// Synchronises every `cac_models::Norm2d` of `module` built with `sync` (mmseg `SyncBN`; the
/// zoo's `model.sync_bn`) over `group`: in training their forward becomes
/// `cac_models::sync_batch_norm` with their options, parameters and buffers. With a null group or a world of one the
/// layers stay plain batch norm. The layers share ownership of the group. Returns the number of synchronised layers.
///
/// ```
/// cac_models::Norm2d norm(torch::nn::BatchNorm2dOptions(32), /*sync=*/true);  // or a zoo model
/// cac_engine::synchronize_batch_norms(*norm, group);
/// ```
int64_t synchronize_batch_norms(torch::nn::Module& module, std::shared_ptr<ProcessGroup> group);

}  // namespace cac_engine
