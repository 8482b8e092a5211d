#include "image_file.hpp"

#include "io/atomic_file.hpp"

#include <c10/util/Exception.h>
#include <opencv2/imgcodecs.hpp>

#include <string_view>
#include <vector>

namespace cac_data {

void write_png(const std::filesystem::path& path, const cv::Mat& image) {
  TORCH_CHECK(!image.empty(), "cac_data::write_png: expected a non-empty image for ", path, " but got an empty one");
  TORCH_CHECK((image.depth() == CV_8U || image.depth() == CV_16U) &&
                  (image.channels() == 1 || image.channels() == 3 || image.channels() == 4),
              "cac_data::write_png: expected an 8- or 16-bit image with 1, 3 or 4 channels but got depth ",
              image.depth(), " with ", image.channels(), " channels");
  std::vector<uchar> bytes;
  TORCH_CHECK(cv::imencode(".png", image, bytes), "cac_data::write_png: expected OpenCV to encode a PNG for ", path,
              " but it failed");
  cac_io::write_file(path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

}  // namespace cac_data
