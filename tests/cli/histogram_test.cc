#include "histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace aiokit::tool {
namespace {

TEST(LatencyHistogramTest, BucketsCoverEveryValueContiguously) {
  for (size_t i = 0; i + 1 < LatencyHistogram::kBuckets; ++i) {
    ASSERT_EQ(LatencyHistogram::HighestValue(i) + 1,
              LatencyHistogram::LowestValue(i + 1))
        << i;
  }
  for (uint64_t v : {0ULL, 1ULL, 255ULL, 256ULL, 257ULL, 511ULL, 512ULL,
                     1000000ULL, 1ULL << 40, ~0ULL}) {
    const size_t i = LatencyHistogram::Index(v);
    ASSERT_LT(i, LatencyHistogram::kBuckets);
    EXPECT_LE(LatencyHistogram::LowestValue(i), v);
    EXPECT_GE(LatencyHistogram::HighestValue(i), v);
  }
}

TEST(LatencyHistogramTest, PercentilesAreWithinTheErrorBound) {
  std::mt19937_64 gen(42);
  std::lognormal_distribution<double> dist(10.0,
                                           1.0);  // ~22 us median, long tail
  std::vector<uint64_t> values;
  LatencyHistogram h;
  for (int i = 0; i < 200000; ++i) {
    const auto v = static_cast<uint64_t>(dist(gen)) + 1;
    values.push_back(v);
    h.Record(v);
  }
  std::sort(values.begin(), values.end());
  for (double p : {1.0, 50.0, 90.0, 99.0, 99.9, 99.99}) {
    const auto rank = static_cast<size_t>(
        std::ceil(p / 100.0 * static_cast<double>(values.size())));
    const double exact = static_cast<double>(values[rank - 1]);
    const double got = static_cast<double>(h.Percentile(p));
    EXPECT_LE(std::abs(got - exact) / exact, 1.0 / 128)
        << "p" << p << " exact " << exact << " got " << got;
  }
  EXPECT_EQ(h.min(), values.front());
  EXPECT_EQ(h.max(), values.back());
  EXPECT_EQ(h.count(), values.size());
}

TEST(LatencyHistogramTest, EmptyAndSingleValue) {
  LatencyHistogram h;
  EXPECT_EQ(h.Percentile(50), 0U);
  EXPECT_EQ(h.min(), 0U);
  h.Record(12345);
  EXPECT_EQ(h.Percentile(1), 12345U);
  EXPECT_EQ(h.Percentile(100), 12345U);
  EXPECT_DOUBLE_EQ(h.mean(), 12345.0);
  EXPECT_DOUBLE_EQ(h.stddev(), 0.0);
}

TEST(LatencyHistogramTest, MergeAddsCounts) {
  LatencyHistogram a, b;
  for (uint64_t v = 1; v <= 100; ++v) a.Record(v * 1000);
  for (uint64_t v = 101; v <= 200; ++v) b.Record(v * 1000);
  a.Merge(b);
  EXPECT_EQ(a.count(), 200U);
  EXPECT_EQ(a.max(), 200000U);
  EXPECT_NEAR(static_cast<double>(a.Percentile(50)), 100000.0, 100000.0 / 128);
}

// fio's buckets: its own worked examples, its rounding, and every bucket of
// ours inside one of fio's (so json+ and histogram logs lose nothing).
TEST(FioBucketsTest, AsFioCountsThem) {
  EXPECT_EQ(FioBuckets::Index(0), 0U);
  EXPECT_EQ(FioBuckets::Index(100), 100U);
  EXPECT_EQ(FioBuckets::Index(127), 127U);
  EXPECT_EQ(FioBuckets::Index(1000), 317U);
  EXPECT_EQ(FioBuckets::Index(1000000), 954U);
  EXPECT_EQ(FioBuckets::Index(UINT64_MAX), FioBuckets::kCount - 1);
  EXPECT_EQ(FioBuckets::Value(100), 100U);
  EXPECT_EQ(FioBuckets::Value(317), 1004U);  // [1000, 1008): the middle
  for (uint64_t v = 1; v < (uint64_t{1} << 34); v = v * 3 / 2 + 1) {  // ~17 s
    const uint64_t back = FioBuckets::Value(FioBuckets::Index(v));
    EXPECT_LE(back > v ? back - v : v - back, v / 64 + 1) << v;
  }
  for (size_t i = 0; i < LatencyHistogram::kBuckets; ++i) {
    const uint64_t lo = LatencyHistogram::LowestValue(i);
    const uint64_t hi = LatencyHistogram::HighestValue(i);
    if (FioBuckets::Index(lo) == FioBuckets::kCount - 1) break;
    ASSERT_EQ(FioBuckets::Index(lo), FioBuckets::Index(hi)) << lo << "-" << hi;
  }
}

}  // namespace
}  // namespace aiokit::tool
