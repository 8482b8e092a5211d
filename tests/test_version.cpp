// Tests of cac/version.hpp and of the toolchain the suite was built with: the LibTorch headers
// compiled in and the LibTorch library loaded at run time are the ones CMake found (a second
// LibTorch on the system, e.g. Debian's libtorch-dev beside a pip wheel, must not shadow either).

#include <catch2/catch.hpp>

#include <cac/version.hpp>

#include <ATen/ATen.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <filesystem>
#include <sstream>
#include <string>

#if !(CAC_VERSION_MAJOR >= 0 && CAC_VERSION_MINOR >= 0 && CAC_VERSION_PATCH >= 0)
#error "CAC_VERSION_* must be usable in preprocessor conditions"
#endif

TEST_CASE("version: cac's version macros", "[version]") {
  // One source: CMake's project(VERSION), which also refuses to configure when version.hpp differs.
  std::ostringstream version;
  version << CAC_VERSION_MAJOR << "." << CAC_VERSION_MINOR << "." << CAC_VERSION_PATCH;
  CHECK(version.str() == CAC_TEST_PROJECT_VERSION);
}

TEST_CASE("version: the LibTorch headers are those of the LibTorch CMake found", "[version]") {
  std::ostringstream headers;
  headers << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH;
  // Torch_VERSION is "1.13.1" or "2.13.0"; the headers' TORCH_VERSION has the same three numbers.
  CHECK(headers.str() == CAC_TEST_TORCH_VERSION);
}

TEST_CASE("version: the LibTorch library loaded is the one CMake found", "[version]") {
  Dl_info info{};
  REQUIRE(dladdr(reinterpret_cast<void*>(&at::native::add), &info) != 0);
  REQUIRE(info.dli_fname != nullptr);
  const std::string loaded = std::filesystem::canonical(info.dli_fname).string();
  const std::string prefix = std::filesystem::canonical(CAC_TEST_TORCH_PREFIX).string();
  INFO("loaded " << loaded << ", CMake's TORCH_INSTALL_PREFIX " << prefix);
  CHECK(loaded.rfind(prefix + "/", 0) == 0);
}
