// The suites' engine list and make-or-skip helper (engines.h): what a test
// skips is a refusal of this machine, and nothing else.

#include "engines.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/status.h"
#include "test_util.h"

namespace aiokit::testing {
namespace {

TEST(EnginesTest, EveryListedEngineAndVariantIsMadeOrRefusedHere) {
  for (const std::string& p : AllEngines()) {
    Result<std::unique_ptr<Engine>> e = MakeNamedEngine(p);
    EXPECT_TRUE(e.ok() || EngineRefusedHere(e.status()))
        << p << ": " << e.status().ToString();
  }
}

TEST(EnginesTest, PlainEnginesAreEachEngineOnceWithoutAVariant) {
  EXPECT_EQ(PlainEngines(), (std::vector<std::string>{"linux-aio", "io_uring",
                                                      "threads", "sync"}));
}

TEST(EnginesTest, AMisspeltVariantIsAnErrorNotTheDefaultEngine) {
  Result<std::unique_ptr<Engine>> e = MakeNamedEngine("threads/oredred");
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().Is(Errc::kInvalidArgument)) << e.status().ToString();
  EXPECT_FALSE(EngineRefusedHere(e.status()));
}

// Regression: EngineRefusedHere compared the status with
// std::errc::permission_denied, which is EACCES, so an engine that a seccomp
// filter or container policy refuses with EPERM failed the test instead of
// skipping it.
TEST(EnginesTest, AnEngineRefusedWithEpermIsRefusedHere) {
  ScopedFaults faults;
  faults.state().setup_errno = EPERM;
  Result<std::unique_ptr<Engine>> e = MakeNamedEngine("linux-aio");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().Errno(), EPERM) << e.status().ToString();
  EXPECT_TRUE(EngineRefusedHere(e.status())) << e.status().ToString();
}

TEST(EnginesTest, AKernelWithoutTheEngineIsRefusedHere) {
  ScopedFaults faults;
  faults.state().setup_errno = ENOSYS;
  Result<std::unique_ptr<Engine>> e = MakeNamedEngine("linux-aio");
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(EngineRefusedHere(e.status())) << e.status().ToString();
}

// A limit reached is the test's business (or a bug), not this machine's
// refusal: no skip.
TEST(EnginesTest, TheAioEventLimitReachedIsNotRefusedHere) {
  ScopedFaults faults;
  faults.state().setup_errno = EAGAIN;
  Result<std::unique_ptr<Engine>> e = MakeNamedEngine("linux-aio");
  ASSERT_FALSE(e.ok());
  EXPECT_FALSE(EngineRefusedHere(e.status())) << e.status().ToString();
}

}  // namespace
}  // namespace aiokit::testing
