#pragma once
/// \file
/// Portable random helpers on `std::mt19937_64`: the engine's output sequence is fixed by the C++
/// standard, but `std::uniform_*_distribution` and `std::normal_distribution` are not, so every
/// draw of the data pipeline and of the context-shift generator goes through these functions and
/// is identical across standard libraries.

#include <cstdint>
#include <random>

namespace cac_data {

/// SplitMix64's finaliser: a bijective 64-bit mix, used to derive independent seeds.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

/// A seed derived from `seed` and up to two stream coordinates (e.g. epoch and sample slot):
/// different coordinates give statistically independent `std::mt19937_64` streams.
inline uint64_t derive_seed(uint64_t seed, uint64_t a, uint64_t b = 0) { return mix64(mix64(mix64(seed) ^ a) + b); }

/// A double uniform in [0, 1) from the top 53 bits of one draw (numpy's `random_sample`).
inline double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0); }

/// A double uniform in [lo, hi) (numpy's `uniform(lo, hi)`).
inline double uniform_real(std::mt19937_64& rng, double lo, double hi) { return lo + (hi - lo) * uniform01(rng); }

/// An integer uniform in [lo, hi] (both ends included), unbiased by rejection; `lo <= hi`.
inline int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t range = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (range == UINT64_MAX) {
    return static_cast<int64_t>(rng());
  }
  const uint64_t span = range + 1;
  const uint64_t limit = UINT64_MAX - UINT64_MAX % span;  // accept draws below a multiple of span
  uint64_t draw = rng();
  while (draw >= limit) {
    draw = rng();
  }
  return lo + static_cast<int64_t>(draw % span);
}

/// True with probability `p` (numpy's `rand() < p`).
inline bool bernoulli(std::mt19937_64& rng, double p) { return uniform01(rng) < p; }

}  // namespace cac_data
