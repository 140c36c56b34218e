// A log-linear latency histogram with fixed memory and bounded relative error
// (HdrHistogram's layout): values below 256 have a bucket each; above, every
// power-of-two range is cut into 128 equal buckets, so a reported value is
// within 1/256 (0.4%) of a value that was recorded. About 7,400 buckets, 58
// KiB, cover 1 ns to 2^63 ns. Recording is a handful of instructions and no
// allocation.

#ifndef AIOKIT_TOOLS_AIOKIT_HISTOGRAM_H_
#define AIOKIT_TOOLS_AIOKIT_HISTOGRAM_H_

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace aiokit::tool {

class LatencyHistogram {
 public:
  static constexpr unsigned kSubBits = 8;  // 256 sub-buckets per range...
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr uint64_t kHalf =
      kSub / 2;  // ...of which the upper 128 are used above 256
  static constexpr size_t kBuckets = kSub + (64 - kSubBits) * kHalf;

  LatencyHistogram() : counts_(kBuckets, 0) {}

  void Record(uint64_t v) noexcept { RecordN(v, 1); }
  void RecordN(uint64_t v, uint64_t n) noexcept {
    counts_[Index(v)] += n;
    count_ += n;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
    const auto d = static_cast<double>(v);
    sum_ += d * static_cast<double>(n);
    sum_sq_ += d * d * static_cast<double>(n);
  }
  void Merge(const LatencyHistogram& o) noexcept {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
    count_ += o.count_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
    sum_ += o.sum_;
    sum_sq_ += o.sum_sq_;
  }

  [[nodiscard]] uint64_t count() const noexcept { return count_; }
  [[nodiscard]] uint64_t min() const noexcept { return count_ == 0 ? 0 : min_; }
  [[nodiscard]] uint64_t max() const noexcept { return max_; }
  [[nodiscard]] double mean() const noexcept {
    return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_);
  }
  [[nodiscard]] double stddev() const noexcept {
    if (count_ < 2) return 0.0;
    const double m = mean();
    const double var = sum_sq_ / static_cast<double>(count_) - m * m;
    return var > 0 ? std::sqrt(var) : 0.0;
  }

  // The value at percentile p (0 < p <= 100): the smallest recorded bucket at
  // or above rank ceil(p% of count), reported as the middle of that bucket,
  // clamped to [min, max].
  [[nodiscard]] uint64_t Percentile(double p) const noexcept {
    if (count_ == 0) return 0;
    auto rank = static_cast<uint64_t>(
        std::ceil(p / 100.0 * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        const uint64_t lo = LowestValue(i);
        const uint64_t hi = HighestValue(i);
        return std::clamp<uint64_t>(lo + (hi - lo) / 2, min(), max_);
      }
    }
    return max_;
  }

  // Calls f(lowest value, count) for every bucket with a count, lowest
  // first.
  template <typename F>
  void ForEachBucket(F f) const {
    for (size_t i = 0; i < kBuckets; ++i) {
      if (counts_[i] != 0) f(LowestValue(i), counts_[i]);
    }
  }

  // Bucket arithmetic, public for tests.
  static size_t Index(uint64_t v) noexcept {
    if (v < kSub) return static_cast<size_t>(v);
    const unsigned msb = 63U - static_cast<unsigned>(std::countl_zero(v));
    const unsigned shift = msb - (kSubBits - 1);  // v >> shift is in [128, 256)
    return static_cast<size_t>(kSub + (shift - 1) * kHalf +
                               ((v >> shift) - kHalf));
  }
  static uint64_t LowestValue(size_t i) noexcept {
    if (i < kSub) return i;
    const size_t shift = (i - kSub) / kHalf + 1;
    const uint64_t sub = (i - kSub) % kHalf + kHalf;
    return sub << shift;
  }
  static uint64_t HighestValue(size_t i) noexcept {
    if (i < kSub) return i;
    const size_t shift = (i - kSub) / kHalf + 1;
    return LowestValue(i) + ((uint64_t{1} << shift) - 1);
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
  double sum_ = 0;
  double sum_sq_ = 0;
};

// fio's latency buckets (its stat.h: 29 groups of 64), the layout of its
// json+ "bins" and histogram logs. Values below 128 ns have a bucket each;
// above, each power of two is cut into 64. Every LatencyHistogram bucket lies
// inside one of these (its buckets are half as wide and aligned alike), so
// converting loses nothing fio would have kept.
struct FioBuckets {
  static constexpr unsigned kBits = 6;
  static constexpr uint64_t kVal = uint64_t{1} << kBits;
  static constexpr size_t kCount = 29 * kVal;

  // The bucket of a value in ns (the last one for anything above its range).
  static size_t Index(uint64_t v) noexcept {
    const unsigned msb =
        v == 0 ? 0 : 63U - static_cast<unsigned>(std::countl_zero(v));
    if (msb <= kBits) return static_cast<size_t>(v);
    const unsigned error_bits = msb - kBits;
    const uint64_t i = ((uint64_t{error_bits} + 1) << kBits) +
                       ((kVal - 1) & (v >> error_bits));
    return static_cast<size_t>(std::min<uint64_t>(i, kCount - 1));
  }
  // The value fio reports for a bucket: the middle of its range.
  static uint64_t Value(size_t i) noexcept {
    if (i < 2 * kVal) return i;
    const size_t error_bits = (i >> kBits) - 1;
    const uint64_t base = uint64_t{1} << (error_bits + kBits);
    const uint64_t k = i % kVal;
    return base + static_cast<uint64_t>(
                      (static_cast<double>(k) + 0.5) *
                      static_cast<double>(uint64_t{1} << error_bits));
  }
  // A histogram's counts in these buckets (kCount of them).
  static std::vector<uint64_t> From(const LatencyHistogram& h) {
    std::vector<uint64_t> out(kCount, 0);
    h.ForEachBucket([&](uint64_t v, uint64_t n) { out[Index(v)] += n; });
    return out;
  }
};

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_HISTOGRAM_H_
