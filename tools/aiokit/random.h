// Pseudo-random numbers for `aiokit bench`: where requests go, which way they
// go, and the data written. Fast and well spread, not cryptographic; each
// object belongs to one thread.

#ifndef AIOKIT_TOOLS_AIOKIT_RANDOM_H_
#define AIOKIT_TOOLS_AIOKIT_RANDOM_H_

#include <algorithm>
#include <bit>
#include <cstdint>

namespace aiokit::tool {

// xorshift64*: fast, and good enough to spread offsets.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed != 0 ? seed : 0x9E3779B97F4A7C15ULL) {}
  uint64_t Next() noexcept {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1DULL;
  }
  // Uniform in [0, n) by Lemire's multiply-shift.
  uint64_t Below(uint64_t n) noexcept {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >>
                                 64);
  }

 private:
  uint64_t s_;
};

// A random permutation of [0, n), one value per call, repeating after n
// calls, in constant memory: a full-period linear congruential sequence modulo
// the next power of two (Hull-Dobell: odd increment, multiplier 1 mod 4), with
// the values past n skipped (fewer than half of them).
class Permutation {
 public:
  Permutation() = default;
  Permutation(uint64_t n, Rng& rng) : n_(n) {
    mask_ = std::bit_ceil(std::max<uint64_t>(n, 2)) - 1;
    a_ = (rng.Next() & mask_ & ~uint64_t{3}) | 1;  // 1 mod 4
    c_ = rng.Next() | 1;
    x_ = rng.Below(n);
    shift_ = std::max(1U, static_cast<unsigned>(std::bit_width(mask_)) / 2);
  }
  uint64_t Next() noexcept {
    uint64_t y;
    do {
      x_ = (a_ * x_ + c_) & mask_;
      // The low bits of such a sequence have short periods; scramble them
      // with bijections of [0, mask] (odd multiply, xor-shift).
      y = (x_ * 0x9E3779B97F4A7C15ULL) & mask_;
      y ^= y >> shift_;
      y = (y * 0xBF58476D1CE4E5B9ULL) & mask_;
    } while (y >= n_);
    return y;
  }

 private:
  uint64_t n_ = 1, mask_ = 1, a_ = 1, c_ = 1, x_ = 0;
  unsigned shift_ = 1;
};

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_RANDOM_H_
