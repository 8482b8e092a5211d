#pragma once
/// \file
/// The inputs of `cac-infer`, checked before any work: image arguments (files, or directories of
/// images), test-scale sizes that leave an image, and the memory whole-image inference needs.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace cac_eval {

/// Whether `path`'s extension is one of the image formats OpenCV reads (`.jpg`, `.jpeg`, `.png`,
/// `.bmp`, `.tif`, `.tiff`, `.webp`, `.ppm`, `.pgm`, `.pbm`, `.pnm`, `.jp2`, `.exr`, `.hdr`;
/// any case).
bool is_image_file(const std::filesystem::path& path);

/// The images of the command line `arguments`, in order: a file stays as it is (its format is
/// checked when it is decoded); a directory becomes its image files (`is_image_file`), sorted by
/// name, not recursive (subdirectories and other files are left out). Throws `c10::Error` naming
/// the argument when it does not exist or is a directory without images.
std::vector<std::string> expand_image_arguments(const std::vector<std::string>& arguments);

/// Bytes whole-image inference of a `num_classes`-class model holds for one `height × width`
/// output: the class scores at the output size (`num_classes × height × width` float32), twice
/// (resized and softmax; three times with more than one `views`, for their sum), and the int64
/// mask. The network's own activations at the test scale come on top.
int64_t inference_score_bytes(int64_t num_classes, int64_t height, int64_t width, int64_t views = 1);

/// Memory available now (Linux: `MemAvailable` of /proc/meminfo; elsewhere: free physical pages),
/// in bytes; 0 when unknown.
int64_t available_memory_bytes();

}  // namespace cac_eval
