// The process-wide cap on spinning reapers (SpinSlots) and AdaptiveSpin's use
// of it: one fewer spinners than usable CPUs, the others refused at once.

#include <gtest/gtest.h>
#include <sched.h>

#include <chrono>

#include "engine/common.h"

namespace aiokit::internal {
namespace {

int UsableCpus() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  EXPECT_EQ(sched_getaffinity(0, sizeof(mask), &mask), 0);
  return CPU_COUNT(&mask);
}

TEST(SpinSlotsTest, OneFewerThanTheUsableCpusMaySpinAtOnce) {
  int taken = 0;
  while (taken < 4096 && SpinSlots::TryTake()) ++taken;
  EXPECT_EQ(taken, UsableCpus() - 1);
  for (int i = 0; i < taken; ++i) SpinSlots::Give();
  // Given back: as many again.
  int again = 0;
  while (again < 4096 && SpinSlots::TryTake()) ++again;
  EXPECT_EQ(again, taken);
  for (int i = 0; i < again; ++i) SpinSlots::Give();
}

TEST(SpinSlotsTest, ASpinWithoutAFreeSlotReturnsAtOnceWithoutLookingAtAll) {
  int taken = 0;
  while (taken < 4096 && SpinSlots::TryTake()) ++taken;
  AdaptiveSpin spin(std::chrono::seconds(10), /*adaptive=*/false);
  int looks = 0;
  EXPECT_FALSE(spin.Spin(Clock::now() + std::chrono::seconds(10), [&] {
    ++looks;
    return false;
  }));
  EXPECT_EQ(looks, 0);
  for (int i = 0; i < taken; ++i) SpinSlots::Give();
}

TEST(SpinSlotsTest, ASpinWithAFreeSlotLooksAndGivesTheSlotBack) {
  if (UsableCpus() < 2) GTEST_SKIP() << "one usable CPU: no reaper may spin";
  AdaptiveSpin spin(std::chrono::seconds(10), /*adaptive=*/false);
  int looks = 0;
  EXPECT_TRUE(spin.Spin(Clock::now() + std::chrono::seconds(10),
                        [&] { return ++looks == 3; }));
  EXPECT_EQ(looks, 3);
  int taken = 0;
  while (taken < 4096 && SpinSlots::TryTake()) ++taken;
  EXPECT_EQ(taken, UsableCpus() - 1);
  for (int i = 0; i < taken; ++i) SpinSlots::Give();
}

}  // namespace
}  // namespace aiokit::internal
