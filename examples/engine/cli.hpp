#pragma once
/// \file
/// Shared pieces of the programs' command lines.

#include "distributed.hpp"
#include "errors.hpp"
#include "launcher.hpp"

#include "models/converters.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <functional>
#include <optional>

namespace cac_engine {

/// Adds `--checkpoint-source` to `app` (cac-eval, cac-infer): the key layout of a `.pth` checkpoint
/// for `load_checkpoint`, one of `cac_models::checkpoint_source_names()`; empty: detected.
inline void add_checkpoint_source_option(CLI::App& app, std::string& source) {
  app.add_option("--checkpoint-source", source,
                 "key layout of a .pth checkpoint (default: cac when it names the official CAC projectors, else "
                 "mmseg); ignored for cac-train's")
      ->check(CLI::IsMember(cac_models::checkpoint_source_names()));
}

/// Runs `body` and turns an exception into `PROGRAM: message` on stderr (without LibTorch's
/// backtrace) and exit code 1.
inline int run_program(const char* program, const std::function<void()>& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, error_message(e).c_str());
  }
  return 1;
}

/// The start of a program that can run data-parallel (`--nproc`): reads the torchrun/SLURM
/// environment into `env`; when `nproc` > 1 and no launcher set it, starts `nproc` copies of the
/// program with `launch_local` and returns their exit code. Returns `std::nullopt` when this
/// process should go on (a worker, or a single process); an exit code on a malformed environment.
inline std::optional<int> launch_workers_if_asked(const char* program, int64_t nproc, int argc, char** argv,
                                                  DistributedEnv& env) {
  if (const int code = run_program(program, [&] { env = DistributedEnv::from_env(); })) return code;
  if (nproc > 1 && !env.launched) return launch_local(static_cast<int>(nproc), argc, argv);
  return std::nullopt;
}

}  // namespace cac_engine
