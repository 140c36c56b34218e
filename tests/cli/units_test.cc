#include "units.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace aiokit::tool
