// libFuzzer target: cac::io::read_checkpoint over arbitrary bytes (in memory). Any input must
// either load or throw c10::Error; crashes, leaks and sanitizer reports are bugs. See
// fuzz/CMakeLists.txt and docs/checkpoints.md for the 60-second command.

#include <cac/io/checkpoint.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto checkpoint = cac::io::read_checkpoint(data, size, "fuzz.pth");
    auto state_dict = checkpoint.state_dict(cac::io::ReadOptions().warn(false));
    for (const auto& entry : state_dict) (void)entry.second.sizes();
    (void)checkpoint.root()->repr();
  } catch (const c10::Error&) {
  }
  return 0;
}
