// cac_engine::configs_dir (declared in config.hpp): where the shipped configs are.
#include "config.hpp"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <system_error>

namespace cac_engine {

namespace {

// The first directory of `candidates` (canonical), or an error listing them and `how` they were chosen.
std::filesystem::path first_existing(const std::vector<std::filesystem::path>& candidates, const std::string& how) {
  for (const auto& candidate : candidates) {
    std::error_code error;
    if (std::filesystem::is_directory(candidate, error)) return std::filesystem::weakly_canonical(candidate);
  }
  std::string searched;
  for (const auto& candidate : candidates) searched += (searched.empty() ? "" : ", ") + candidate.string();
  C10_THROW_ERROR(
      Error, "cac_engine::configs_dir: expected the shipped configs in " + searched + " but none exists (" + how + ")");
}

}  // namespace

std::filesystem::path configs_dir(const std::filesystem::path& executable) {
  if (const char* env = std::getenv("CAC_CONFIGS_DIR"); env && *env) {
    return first_existing({env}, "set by the environment variable CAC_CONFIGS_DIR");
  }
  return first_existing({executable.parent_path() / CAC_INSTALL_CONFIGS_RELATIVE, CAC_SOURCE_CONFIGS_DIR},
                        "installed beside the program, or the source tree's; set CAC_CONFIGS_DIR to choose");
}

std::filesystem::path configs_dir() {
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  return configs_dir(error ? std::filesystem::path() : self);
}

}  // namespace cac_engine
