#include "image_inputs.hpp"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace cac_eval {

bool is_image_file(const std::filesystem::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  for (const char* known : {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
                            ".jp2", ".exr", ".hdr"}) {
    if (ext == known) return true;
  }
  return false;
}

std::vector<std::string> expand_image_arguments(const std::vector<std::string>& arguments) {
  namespace fs = std::filesystem;
  std::vector<std::string> images;
  for (const auto& argument : arguments) {
    std::error_code error;
    const fs::file_status status = fs::status(argument, error);
    TORCH_CHECK(fs::exists(status), "expected an image file or a directory of images but ", argument,
                " does not exist");
    if (!fs::is_directory(status)) {
      images.push_back(argument);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& entry : fs::directory_iterator(argument)) {
      if (entry.is_regular_file() && is_image_file(entry.path())) found.push_back(entry.path().string());
    }
    TORCH_CHECK(!found.empty(), "expected images (.jpg, .png, ...) in the directory ", argument,
                " but found none (subdirectories are not searched)");
    std::sort(found.begin(), found.end());
    images.insert(images.end(), found.begin(), found.end());
  }
  return images;
}

int64_t inference_score_bytes(int64_t num_classes, int64_t height, int64_t width, int64_t views) {
  const int64_t pixels = height * width, copies = views > 1 ? 3 : 2;
  return copies * num_classes * pixels * int64_t(sizeof(float)) + pixels * int64_t(sizeof(int64_t));
}

int64_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string line;
  while (std::getline(meminfo, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream fields(line.substr(13));
      int64_t kib = 0;
      if (fields >> kib) return kib * 1024;
    }
  }
#if defined(_SC_AVPHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return int64_t(pages) * int64_t(page);
#endif
  return 0;
}

}  // namespace cac_eval
