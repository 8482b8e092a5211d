#pragma once
/// \file
/// `AllocatorBase<Derived>`: a `c10::Allocator` whose `allocate` calls `Derived::track(n) const`,
/// with the signature of the LibTorch it is compiled against (the tests' and benchmarks' CPU
/// allocators that count bytes derive from it).

#include <c10/core/Allocator.h>
#include <torch/version.h>

#include <cstddef>

namespace cac_test {

template <typename Derived>
class AllocatorBase : public c10::Allocator {
 public:
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  // LibTorch 2.3 made `allocate` non-const and added the pure `copy_data`.
  c10::DataPtr allocate(std::size_t n) override { return static_cast<const Derived*>(this)->track(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#else
  c10::DataPtr allocate(std::size_t n) const override { return static_cast<const Derived*>(this)->track(n); }
#endif
};

}  // namespace cac_test
