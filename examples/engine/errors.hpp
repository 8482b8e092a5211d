#pragma once
/// \file
/// The message of an exception as the programs print it: a `c10::Error`'s text without LibTorch's
/// backtrace, any other exception's `what()`.

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace cac_engine {

/// `error`'s message without a backtrace.
inline std::string error_message(const std::exception& error) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&error)) return c10_error->what_without_backtrace();
  return error.what();
}

}  // namespace cac_engine
