#pragma once
/// \file
/// Shared pieces of the programs' command lines.

#include <c10/util/Exception.h>

#include <cstdio>
#include <exception>
#include <functional>

namespace cac_engine {

/// Runs `body` and turns an exception into `PROGRAM: message` on stderr (without LibTorch's
/// backtrace) and exit code 1.
inline int run_program(const char* program, const std::function<void()>& body) {
  try {
    body();
    return 0;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
  }
  return 1;
}

}  // namespace cac_engine
