// What only the io_uring engine does: the setup flags it asks for, how it falls
// back when the kernel refuses one, and what Capabilities says about it.

#include <linux/io_uring.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
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
  // Skips every test where this machine refuses io_uring.
  void SetUp() override {
    AIOKIT_MAKE_ENGINE_OR_SKIP(probe, "io_uring", EngineOptions{});
  }
};

TEST_F(IoUringTest, OneThreadGetsSingleIssuerCoopTaskrunAndARegisteredRingFd) {
  EngineOptions o;
  o.single_thread = true;
  std::unique_ptr<Engine> e = MakeUring(o);
  ASSERT_NE(e, nullptr);
  const Capabilities& c = e->GetCapabilities();
  // This kernel (6.0 and later) has them all; an older one lists why not.
  if (!c.coop_taskrun) {
    EXPECT_TRUE(Mentions(c.fallbacks, "COOP_TASKRUN")) << c.fallbacks.size();
  }
  if (!c.single_issuer) {
    EXPECT_TRUE(Mentions(c.fallbacks, "SINGLE_ISSUER"));
  }
  EXPECT_FALSE(c.defer_taskrun);  // only when asked for
  if (!c.registered_ring_fd) {
    EXPECT_TRUE(Mentions(c.fallbacks, "registered ring fd"));
  }
  EXPECT_FALSE(c.coop_taskrun && c.defer_taskrun);
  ReadBack(*e);
}

TEST_F(IoUringTest, DeferTaskrunWhenAskedFor) {
  EngineOptions o;
  o.single_thread = true;
  o.defer_taskrun = true;
  std::unique_ptr<Engine> e = MakeUring(o);
  ASSERT_NE(e, nullptr);
  const Capabilities& c = e->GetCapabilities();
  if (!c.defer_taskrun) {
    EXPECT_TRUE(Mentions(c.fallbacks, "DEFER_TASKRUN"));
  } else {
    EXPECT_FALSE(c.coop_taskrun);
  }
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
  o.defer_taskrun = true;
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

// Regression: SQEs that a failed io_uring_enter (outside Submit's retry
// policy) left in the ring were never sent, and the reaper slept beside them.
TEST_F(IoUringTest, SqesLeftByAFailedEnterAreSentBeforeTheReaperSleeps) {
  EngineOptions o;
  o.queue_depth = 1;  // one request in the kernel at a time; the rest queue
  o.spin_before_wait = std::chrono::microseconds(0);
  std::unique_ptr<Engine> e = MakeUring(o);
  ASSERT_NE(e, nullptr);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  char byte = 0;
  Request blocked;
  blocked.PrepRead(fds[0], &byte, 1, 0);
  File f = testing::ScratchFile(16384, 51);
  std::vector<char> b1(4096), b2(4096);
  Request r1, r2;
  r1.PrepRead(f.fd(), b1.data(), 4096, 0);
  r2.PrepRead(f.fd(), b2.data(), 4096, 4096);
  Request* first = &blocked;
  ASSERT_EQ(e->Submit({&first, 1}).accepted, 1U);
  std::vector<Request*> rest = {&r1, &r2};
  ASSERT_EQ(e->Submit(rest).accepted, 2U);  // both wait behind the cap
  testing::ScopedFaults faults;
  faults.state().submit_eagain = 1;  // the reaper's first send fails
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  testing::Reaped got =
      testing::ReapAll(*e, 3, std::chrono::milliseconds(5000));
  testing::ExpectExactlyOnce(got, {&blocked, &r1, &r2});
  EXPECT_EQ(r1.rval, 4096) << Describe(r1);
  EXPECT_EQ(r2.rval, 4096) << Describe(r2);
  ::close(fds[0]);
  ::close(fds[1]);
}

// The kernel takes the request but not its linked eventfd write, then refuses
// everything: the request is accepted (it went) and its eventfd still comes.
std::atomic<int> g_enter_calls{0};
int TakeOneThenRefuse(unsigned* to_submit, unsigned /*min*/,
                      unsigned /*flags*/) {
  if (*to_submit == 0) return 0;
  if (g_enter_calls.fetch_add(1) == 0) {
    *to_submit = 1;
    return 0;
  }
  return -EAGAIN;
}

TEST_F(IoUringTest, ARequestSplitFromItsEventfdWriteStillSignalsIt) {
  EngineOptions o;
  o.eagain.max_retries = 2;
  o.eagain.initial_delay = std::chrono::microseconds(10);
  std::unique_ptr<Engine> e = MakeUring(o);
  ASSERT_NE(e, nullptr);
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(efd, 0);
  File f = testing::ScratchFile(8192, 52);
  std::vector<char> buf(4096);
  Request r;
  r.PrepRead(f.fd(), buf.data(), 4096, 0);
  r.SetEventFd(efd);
  g_enter_calls = 0;
  sys::FaultHooks hooks;
  hooks.io_uring_enter = &TakeOneThenRefuse;
  sys::SetFaultHooks(&hooks);
  Request* p = &r;
  SubmitResult sr = e->Submit({&p, 1});
  sys::SetFaultHooks(nullptr);
  EXPECT_EQ(sr.accepted, 1U);
  EXPECT_TRUE(sr.status.ok()) << sr.status.ToString();
  testing::ExpectExactlyOnce(testing::ReapAll(*e, 1), {&r});
  EXPECT_EQ(r.rval, 4096) << Describe(r);
  pollfd pfd{efd, POLLIN, 0};
  EXPECT_EQ(::poll(&pfd, 1, 5000), 1)
      << "the request's eventfd was never signalled";
  ::close(efd);
}

TEST_F(IoUringTest, TheLargestQueueDepthWorks) {
  EngineOptions o;
  o.queue_depth = 65536;
  std::unique_ptr<Engine> e = MakeUring(o);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->GetCapabilities().ring_entries, 65536U);
  ReadBack(*e);
}

// A single_thread engine destroyed on another thread after its own thread
// exited: the kernel finished that thread's requests, and the destructor
// returns instead of waiting for completions only the owner could run.
TEST_F(IoUringTest, DestroyedOnAnotherThreadAfterItsThreadExited) {
  std::unique_ptr<Engine> e;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  char byte = 0;
  Request r;
  std::thread owner([&] {
    EngineOptions o;
    o.single_thread = true;
    e = MakeUring(o);
    ASSERT_NE(e, nullptr);
    r.PrepRead(fds[0], &byte, 1, 0);
    Request* p = &r;
    ASSERT_EQ(e->Submit({&p, 1}).accepted, 1U);
  });
  owner.join();  // its pending read is the kernel's to finish now
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(::write(fds[1], "x", 1), 1);
  std::atomic<bool> done{false};
  std::thread destroyer([&] {
    e.reset();
    done = true;
  });
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!done) {
    ADD_FAILURE() << "the destructor did not return";
    std::_Exit(1);  // a hung destructor would hang the whole test binary
  }
  destroyer.join();
  EXPECT_NE(r.rval, kNotCompleted);  // completed (read or cancelled at exit)
  ::close(fds[0]);
  ::close(fds[1]);
}

}  // namespace
}  // namespace aiokit
