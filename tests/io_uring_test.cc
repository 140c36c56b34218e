// What only the io_uring engine does: the setup flags it asks for, how it falls
// back when the kernel refuses one, and what Capabilities says about it.

#include <linux/io_uring.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "test_util.h"

namespace aiokit {
namespace {

std::unique_ptr<Engine> MakeUring(EngineOptions o) {
  o.kind = EngineKind::kIoUring;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  if (!e.ok()) return nullptr;
  return std::move(*e);
}

bool Mentions(const std::vector<std::string>& lines, const std::string& what) {
  return std::any_of(lines.begin(), lines.end(), [&](const std::string& l) {
    return l.find(what) != std::string::npos;
  });
}

// Reads 8 blocks through `e` and checks them.
void ReadBack(Engine& e) {
  File f = testing::ScratchFile(64 * 1024, 50);
  std::vector<std::vector<char>> bufs(8, std::vector<char>(4096));
  std::vector<Request> reqs(8);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  }
  SubmitResult sr = e.Submit(testing::Pointers(reqs));
  ASSERT_EQ(sr.accepted, reqs.size()) << sr.status.ToString();
  testing::ExpectExactlyOnce(testing::ReapAll(e, reqs.size()),
                             testing::Pointers(reqs));
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].rval, 4096) << Describe(reqs[i]);
    EXPECT_EQ(testing::FirstMismatch(bufs[i].data(), 4096, 50, i * 4096), -1);
  }
}

class IoUringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions o;
    if (MakeUring(o) == nullptr) {
      Result<std::unique_ptr<Engine>> e =
          testing::MakeNamedEngine("io_uring", o);
      GTEST_SKIP() << "io_uring refused here: " << e.status().ToString();
    }
  }
};

TEST_F(IoUringTest, OneThreadGetsSingleIssuerDeferTaskrunAndARegisteredRingFd) {
  EngineOptions o;
  o.single_thread = true;
  std::unique_ptr<Engine> e = MakeUring(o);
  ASSERT_NE(e, nullptr);
  const Capabilities& c = e->GetCapabilities();
  // This kernel (6.1 and later) has them all; an older one lists why not.
  if (!c.defer_taskrun) {
    EXPECT_TRUE(Mentions(c.fallbacks, "DEFER_TASKRUN")) << c.fallbacks.size();
  }
  if (!c.registered_ring_fd) {
    EXPECT_TRUE(Mentions(c.fallbacks, "registered ring fd"));
  }
  EXPECT_FALSE(c.coop_taskrun && c.defer_taskrun);
  ReadBack(*e);
}

TEST_F(IoUringTest, ManyThreadsGetNoneOfThemAndSaySo) {
  std::unique_ptr<Engine> e = MakeUring({});
  ASSERT_NE(e, nullptr);
  const Capabilities& c = e->GetCapabilities();
  EXPECT_FALSE(c.single_issuer);
  EXPECT_FALSE(c.defer_taskrun);
  EXPECT_FALSE(c.registered_ring_fd);
  EXPECT_TRUE(Mentions(c.fallbacks, "single_thread is false"));
}

// A kernel that refuses DEFER_TASKRUN (before 6.1): the engine gives it up,
// uses COOP_TASKRUN instead, says so, and works.
int RefuseDeferTaskrun(unsigned /*entries*/, unsigned flags) {
  return (flags & IORING_SETUP_DEFER_TASKRUN) != 0 ? -EINVAL : 0;
}

TEST_F(IoUringTest, ARefusedSetupFlagFallsBackVisibly) {
  sys::FaultHooks hooks;
  hooks.io_uring_setup = &RefuseDeferTaskrun;
  sys::SetFaultHooks(&hooks);
  EngineOptions o;
  o.single_thread = true;
  std::unique_ptr<Engine> e = MakeUring(o);
  sys::SetFaultHooks(nullptr);
  ASSERT_NE(e, nullptr);
  const Capabilities& c = e->GetCapabilities();
  EXPECT_FALSE(c.defer_taskrun);
  EXPECT_TRUE(c.coop_taskrun);
  EXPECT_TRUE(Mentions(c.fallbacks, "DEFER_TASKRUN: refused by this kernel"))
      << (c.fallbacks.empty() ? "" : c.fallbacks[0]);
  ReadBack(*e);
}

// Every optional flag refused: a plain ring, still correct.
int RefuseAllOptional(unsigned /*entries*/, unsigned flags) {
  const unsigned optional = IORING_SETUP_DEFER_TASKRUN |
                            IORING_SETUP_SINGLE_ISSUER |
                            IORING_SETUP_COOP_TASKRUN |
                            IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL;
  return (flags & optional) != 0 ? -EINVAL : 0;
}

TEST_F(IoUringTest, EveryOptionalFlagRefusedStillWorks) {
  sys::FaultHooks hooks;
  hooks.io_uring_setup = &RefuseAllOptional;
  sys::SetFaultHooks(&hooks);
  EngineOptions o;
  o.single_thread = true;
  std::unique_ptr<Engine> e = MakeUring(o);
  sys::SetFaultHooks(nullptr);
  ASSERT_NE(e, nullptr);
  const Capabilities& c = e->GetCapabilities();
  EXPECT_FALSE(c.defer_taskrun || c.coop_taskrun || c.single_issuer);
  EXPECT_TRUE(Mentions(c.fallbacks, "SUBMIT_ALL"));
  ReadBack(*e);
}

TEST_F(IoUringTest, SqpollIsUsedWhenAskedAndItsRefusalIsAnError) {
  EngineOptions o;
  o.sqpoll = true;
  o.sqpoll_idle = std::chrono::milliseconds(5);
  std::unique_ptr<Engine> e = MakeUring(o);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(e->GetCapabilities().sqpoll);
  ReadBack(*e);
  // The poller falls asleep after 5 ms; the next submission wakes it.
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ReadBack(*e);

  testing::ScopedFaults faults;
  faults.state().uring_setup_errno = EPERM;  // as before 5.11 without privilege
  o.kind = EngineKind::kIoUring;
  Result<std::unique_ptr<Engine>> refused = MakeEngine(o);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().ToString().find("SQPOLL"), std::string::npos)
      << refused.status().ToString();
}

}  // namespace
}  // namespace aiokit
