#pragma once
/// \file
/// The local launcher of data-parallel jobs (`torchrun --standalone --nproc-per-node N`): starts
/// N copies of the program with the torchrun variables set, waits for them, and stops the others
/// when one fails. Used by the programs' `--nproc` (cli.hpp) and the distributed tests.
///
/// ```
/// if (nproc > 1 && !cac_engine::DistributedEnv::from_env().launched)
///   return cac_engine::launch_local(nproc, argc, argv);
/// ```
/// See docs/distributed.md.

#include <torch/arg.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace cac_engine {

/// Knobs of `launch_local`/`launch_workers`.
struct LaunchOptions {
  /// Address the workers rendezvous on (`MASTER_ADDR`).
  /// Default: "127.0.0.1"
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  /// Port of the rendezvous (`MASTER_PORT`); 0 picks a free one.
  /// Default: 0
  TORCH_ARG(int64_t, master_port) = 0;
  /// Stop the other workers (SIGTERM, then SIGKILL after `kill_grace`) when one exits non-zero.
  /// Default: true
  TORCH_ARG(bool, kill_on_failure) = true;
  /// Time between SIGTERM and SIGKILL when stopping workers.
  /// Default: 5 s
  TORCH_ARG(std::chrono::milliseconds, kill_grace) = std::chrono::seconds(5);
  /// Sets `OMP_NUM_THREADS=1` in the workers when it is unset and there are several (as torchrun).
  /// Default: true
  TORCH_ARG(bool, single_thread_default) = true;
};

/// The outcome of `launch_workers`.
struct LaunchResult {
  /// Exit status of each rank: the exit code, or 128 + signal for a worker killed by a signal.
  std::vector<int> exit_codes;
  /// The exit code of the first worker that failed (by time of exit), 0 if none did.
  int exit_code = 0;
  /// The rank of that worker, -1 if none failed.
  int64_t failed_rank = -1;
};

/// Starts `nproc` (> 0) copies of this program (`/proc/self/exe`) with the arguments `args`
/// (`args[0]` is the program name they see) and the variables `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` set, and waits for all of them. Workers die with
/// the launcher (`PR_SET_PDEATHSIG`).
LaunchResult launch_workers(int64_t nproc, const std::vector<std::string>& args, const LaunchOptions& options = {});

/// `torchrun --standalone --nproc-per-node nproc`: `launch_workers(nproc, argv)` on 127.0.0.1 with
/// a free port; returns the first non-zero exit code (after stopping the other workers), or 0.
/// Prints a line naming the failed rank on stderr.
int launch_local(int nproc, int argc, char** argv);

/// A free TCP port on 127.0.0.1 (bound and released; another process could take it meanwhile).
int64_t free_port();

}  // namespace cac_engine
