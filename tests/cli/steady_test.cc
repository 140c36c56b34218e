// fio's steadystate criteria (tools/aiokit/steady.h), judged on windows of
// samples whose verdicts are worked out by hand.

#include "steady.h"

#include <gtest/gtest.h>

#include <vector>

namespace aiokit::tool {
namespace {

TEST(SteadyStateTest, DeviationFromTheMean) {
  // Mean 100, the farthest sample 4 away: 4%.
  const std::vector<double> s = {96, 100, 104, 100};
  SteadyVerdict v = JudgeSteadyState(s, false, 5, true);
  EXPECT_TRUE(v.attained);
  EXPECT_DOUBLE_EQ(v.mean, 100);
  EXPECT_DOUBLE_EQ(v.max_deviation, 4);
  EXPECT_DOUBLE_EQ(v.criterion, 4);
  EXPECT_FALSE(JudgeSteadyState(s, false, 3.9, true).attained);
  // An absolute limit: within 4 of the mean.
  EXPECT_TRUE(JudgeSteadyState(s, false, 4, false).attained);
  EXPECT_FALSE(JudgeSteadyState(s, false, 3, false).attained);
}

TEST(SteadyStateTest, LeastSquaresSlope) {
  // 100, 110, 120: a slope of 10 a second, 9.09% of the mean 110.
  const std::vector<double> rising = {100, 110, 120};
  SteadyVerdict v = JudgeSteadyState(rising, true, 10, true);
  EXPECT_DOUBLE_EQ(v.slope, 10);
  EXPECT_NEAR(v.criterion, 100.0 * 10 / 110, 1e-9);
  EXPECT_TRUE(v.attained);
  EXPECT_FALSE(JudgeSteadyState(rising, true, 9, true).attained);
  // A falling series counts by its size, as fio's.
  const std::vector<double> falling = {120, 110, 100};
  EXPECT_DOUBLE_EQ(JudgeSteadyState(falling, true, 1, false).slope, -10);
  EXPECT_FALSE(JudgeSteadyState(falling, true, 9.9, false).attained);
  EXPECT_TRUE(JudgeSteadyState(falling, true, 10, false).attained);
  // Noisy: a small slope, a large deviation.
  const std::vector<double> flat = {90, 110, 90, 110, 100, 100};
  EXPECT_NEAR(JudgeSteadyState(flat, true, 0.5, true).slope, 20 / 17.5, 1e-9);
  EXPECT_FALSE(JudgeSteadyState(flat, false, 5, true).attained);
}

TEST(SteadyStateTest, NothingMovingIsNotSteadyByAPercentage) {
  const std::vector<double> idle = {0, 0, 0};
  EXPECT_FALSE(JudgeSteadyState(idle, false, 50, true).attained);
  EXPECT_TRUE(JudgeSteadyState(idle, false, 0, false).attained);
}

}  // namespace
}  // namespace aiokit::tool
