// cac-infer's inputs: directories of images, and the memory estimate of an image's class scores.
#include "eval/image_inputs.hpp"

#include <catch2/catch.hpp>
#include <c10/util/Exception.h>

#include <fstream>

namespace fs = std::filesystem;

TEST_CASE("expand_image_arguments: a directory stands for its images, sorted, not recursive", "[image_inputs]") {
  const fs::path dir = fs::temp_directory_path() / "cac_image_inputs";
  fs::remove_all(dir);
  fs::create_directories(dir / "photos" / "sub");
  fs::create_directories(dir / "empty");
  for (const char* name : {"photos/b.jpg", "photos/a.PNG", "photos/c.txt", "photos/sub/d.png", "single.webp"})
    std::ofstream(dir / name) << "x";
  const std::string photos = (dir / "photos").string(), single = (dir / "single.webp").string();
  CHECK(cac_eval::expand_image_arguments({single, photos}) ==
        std::vector<std::string>{single, (dir / "photos" / "a.PNG").string(), (dir / "photos" / "b.jpg").string()});
  CHECK_THROWS_WITH(cac_eval::expand_image_arguments({(dir / "empty").string()}),
                    Catch::Contains("in the directory " + (dir / "empty").string() + " but found none"));
  CHECK_THROWS_WITH(cac_eval::expand_image_arguments({(dir / "missing.png").string()}),
                    Catch::Contains((dir / "missing.png").string() + " does not exist"));
  CHECK(cac_eval::is_image_file("x.JPEG"));
  CHECK_FALSE(cac_eval::is_image_file("x.pth"));
}

TEST_CASE("inference_score_bytes: the class scores at the output size, twice or three times", "[image_inputs]") {
  // 150 classes at 8000×8000: 38.4 GB per copy of the scores, two copies, and the int64 mask.
  CHECK(cac_eval::inference_score_bytes(150, 8000, 8000) == 2 * 150 * 64000000LL * 4 + 64000000LL * 8);
  CHECK(cac_eval::inference_score_bytes(6, 10, 10, 4) == 3 * 6 * 100 * 4 + 100 * 8);
  CHECK(cac_eval::available_memory_bytes() > 0);  // Linux: /proc/meminfo
}
