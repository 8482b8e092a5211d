// libFuzzer target: cac::io::read_checkpoint over arbitrary bytes (in memory), both formats it
// reads: the zip archive of PyTorch >= 1.6 and the legacy stream (pickles, then raw storages; see
// cac/io/legacy.hpp), told apart by the first bytes as for files. Any input must either load or
// throw c10::Error; crashes, leaks and sanitizer reports are bugs. Seed corpus: every
// tests/fixtures/io/*.pth (zip ones and the legacy_*.pth / legacy.pth ones). See
// fuzz/CMakeLists.txt and docs/checkpoints.md for the 60-second command.

#include <cac/io/checkpoint.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto checkpoint = cac::io::read_checkpoint(data, size, "fuzz.pth");
    auto state_dict = checkpoint.state_dict(cac::io::ReadOptions().warn(false));
    uint8_t sink = 0;
    for (const auto& entry : state_dict) {
      const at::Tensor& tensor = entry.second;
      (void)tensor.sizes();
      // Touch every element of small tensors, so ASan sees any view reaching outside its
      // storage (a legacy storage view is a window on another storage's memory).
      if (tensor.numel() > (1 << 16)) continue;
      const at::Tensor contiguous = tensor.contiguous();
      const auto* bytes = static_cast<const uint8_t*>(contiguous.data_ptr());
      for (size_t i = 0; i < contiguous.nbytes(); ++i) sink ^= bytes[i];
    }
    (void)checkpoint.root()->repr();
    volatile uint8_t keep = sink;
    (void)keep;
  } catch (const c10::Error&) {
  }
  return 0;
}
