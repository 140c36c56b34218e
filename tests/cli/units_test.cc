#include "units.h"

#include <gtest/gtest.h>

#include <vector>

namespace aiokit::tool {
namespace {

TEST(ParseSizeTest, AcceptsFioStyleSizes) {
  EXPECT_EQ(ParseSize("4096"), 4096U);
  EXPECT_EQ(ParseSize("4k"), 4096U);
  EXPECT_EQ(ParseSize("4K"), 4096U);
  EXPECT_EQ(ParseSize("4KiB"), 4096U);
  EXPECT_EQ(ParseSize("1m"), 1U << 20);
  EXPECT_EQ(ParseSize("2g"), 2ULL << 30);
  EXPECT_EQ(ParseSize("512b"), 512U);
}

TEST(ParseSizeTest, RefusesJunkNegativesAndOverflow) {
  EXPECT_FALSE(ParseSize(""));
  EXPECT_FALSE(ParseSize("k"));
  EXPECT_FALSE(ParseSize("-4k"));
  EXPECT_FALSE(ParseSize("4q"));
  EXPECT_FALSE(ParseSize("4.5k"));
  EXPECT_FALSE(ParseSize("99999999999999999999"));
  EXPECT_FALSE(ParseSize("99999999999t"));
}

TEST(ParseDurationTest, SecondsByDefaultAndSuffixes) {
  EXPECT_EQ(ParseDurationUs("5"), 5000000U);
  EXPECT_EQ(ParseDurationUs("5s"), 5000000U);
  EXPECT_EQ(ParseDurationUs("250ms"), 250000U);
  EXPECT_EQ(ParseDurationUs("2m"), 120000000U);
  EXPECT_EQ(ParseDurationUs("10us"), 10U);
  EXPECT_FALSE(ParseDurationUs("soon"));
  EXPECT_FALSE(ParseDurationUs("5 s"));
}

TEST(FormatTest, BytesAndCounts) {
  EXPECT_EQ(FormatBytes(4096), "4KiB");
  EXPECT_EQ(FormatBytes(1536), "1.5KiB");
  EXPECT_EQ(FormatBytes(100), "100B");
  EXPECT_EQ(FormatCount(183456), "183k");
  EXPECT_EQ(FormatCount(1234567), "1.23M");
  EXPECT_EQ(FormatCount(999), "999");
}

TEST(CpuListTest, ParsesTheKernelsListForm) {
  using V = std::vector<unsigned>;
  EXPECT_EQ(ParseCpuList("0"), V({0}));
  EXPECT_EQ(ParseCpuList("0,5,8-11"), V({0, 5, 8, 9, 10, 11}));
  EXPECT_EQ(ParseCpuList("3,1-2,2"), V({1, 2, 3}));  // sorted, no repeats
  EXPECT_EQ(ParseCpuList("65535"), V({65535}));
  for (const char* bad : {"", ",", "1,", ",1", "a", "1-", "-1", "3-1", "1--2",
                          "65536", "0x1", " 1", "1 "}) {
    EXPECT_FALSE(ParseCpuList(bad).has_value()) << bad;
  }
  EXPECT_EQ(FormatCpuList({0, 1, 2, 3, 5, 7, 8}), "0-3,5,7-8");
  EXPECT_EQ(FormatCpuList({4}), "4");
  EXPECT_EQ(FormatCpuList({}), "");
}

}  // namespace
}  // namespace aiokit::tool
