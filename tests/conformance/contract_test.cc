// Conformance, what the headers promise and engines once did differently: the
// iocb as libaio builds it, Shutdown that never cancels what it accepted
// unless asked, Cancel after Shutdown, how a request taken back reads, Reap at
// its timeout, the NotifyFd descriptor.

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "conformance/conformance.h"
#include "test_util.h"

namespace aiokit::conformance {
namespace {

using std::chrono::milliseconds;
using testing::ExpectExactlyOnce;
using testing::FirstMismatch;
using testing::Pointers;
using testing::ReapAll;
using testing::ScratchFile;

// What libaio's io_prep_pread/pwritev and io_set_eventfd leave in an iocb.
void ExpectIocbOf(const Request& r, uint16_t opcode, uint64_t buf,
                  uint64_t nbytes, int64_t offset) {
  EXPECT_EQ(r.iocb.aio_lio_opcode, opcode) << Describe(r);
  EXPECT_EQ(r.iocb.aio_fildes, static_cast<uint32_t>(r.fd)) << Describe(r);
  EXPECT_EQ(r.iocb.aio_buf, buf) << Describe(r);
  EXPECT_EQ(r.iocb.aio_nbytes, nbytes) << Describe(r);
  EXPECT_EQ(r.iocb.aio_offset, offset) << Describe(r);
  const uint32_t resfd_flag =
      r.resfd >= 0 ? static_cast<uint32_t>(IOCB_FLAG_RESFD) : 0U;
  const uint32_t prio_flag =
      r.has_ioprio ? static_cast<uint32_t>(IOCB_FLAG_IOPRIO) : 0U;
  EXPECT_EQ(r.iocb.aio_flags, resfd_flag | prio_flag) << Describe(r);
  EXPECT_EQ(r.iocb.aio_resfd,
            r.resfd >= 0 ? static_cast<uint32_t>(r.resfd) : 0U)
      << Describe(r);
}

// BlueStore's aio_t reads the iocb (pread and pwritev build it with libaio's
// io_prep_*). It describes the request after Prep*, and still after it
// completed, on every engine (engines keep their scratch elsewhere, and
// linux-aio's NotifyFd eventfd is there only while in flight); the caller's
// aio_data is kept.
TEST_P(ConformanceTest, TheIocbDescribesTheRequestBeforeAndAfterItCompletes) {
  File f = ScratchFile(4 * kBlock, 51);
  std::vector<char> a(kBlock), b(kBlock), c(kBlock);
  const int efd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  Request read, writev, fsync;
  read.PrepRead(f.fd(), a.data(), kBlock, kBlock);
  read.iocb.aio_data = 0xfeed;
  const iovec v[2] = {{b.data(), kBlock}, {c.data(), kBlock}};
  writev.PrepWritev(f.fd(), v, 2, 2 * kBlock);
  writev.SetEventFd(efd);
  fsync.PrepFsync(f.fd());
  auto check = [&] {
    ExpectIocbOf(read, IOCB_CMD_PREAD, reinterpret_cast<uint64_t>(a.data()),
                 kBlock, kBlock);
    EXPECT_EQ(read.iocb.aio_data, 0xfeedU);
    ExpectIocbOf(writev, IOCB_CMD_PWRITEV,
                 reinterpret_cast<uint64_t>(writev.iov.data()), 2, 2 * kBlock);
    ExpectIocbOf(fsync, IOCB_CMD_FSYNC, 0, 0, 0);
  };
  check();
  SubmitAll({&read, &writev, &fsync});
  ExpectExactlyOnce(ReapAll(*engine_, 3), {&read, &writev, &fsync});
  EXPECT_EQ(read.rval, static_cast<int64_t>(kBlock)) << Describe(read);
  EXPECT_EQ(writev.rval, static_cast<int64_t>(2 * kBlock)) << Describe(writev);
  check();
  ::close(efd);
}

// A request used again and refused before the kernel sees it (a negative
// offset) has the iocb of what it asked this time, not the last request's.
TEST_P(ConformanceTest, ARequestRefusedBeforeTheKernelHasItsOwnIocb) {
  File f = ScratchFile(kBlock, 52);
  std::vector<char> buf(kBlock);
  Request r;
  r.PrepRead(f.fd(), buf.data(), kBlock, 0);
  RunOne(r);
  ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  r.PrepWrite(f.fd(), buf.data(), 512, static_cast<uint64_t>(-4096));
  RunOne(r);
  EXPECT_EQ(r.rval, -EINVAL) << Describe(r);
  EXPECT_EQ(r.origin, Origin::kRefused) << Describe(r);
  ExpectIocbOf(r, IOCB_CMD_PWRITE, reinterpret_cast<uint64_t>(buf.data()), 512,
               -4096);
}

// The case that lost data: a store that closes with a grace period. Sixteen
// writes accepted at queue depth 4 (io_uring keeps 12 of them back until room
// frees; the threads engine queues them to workers); Shutdown(0) must not
// cancel them: every one is written, on every engine, and the file says so.
TEST_P(ConformanceTest, ShutdownWithAGracePeriodWritesEveryAcceptedRequest) {
  EngineOptions o;
  o.queue_depth = 4;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  File f = ScratchFile(0, 0);
  constexpr size_t kWrites = 16;
  std::vector<char> data(kWrites * kBlock);
  testing::FillPattern(data.data(), data.size(), 53);
  std::vector<Request> reqs(kWrites);
  for (size_t i = 0; i < kWrites; ++i) {
    reqs[i].PrepWrite(f.fd(), data.data() + i * kBlock, kBlock, i * kBlock);
  }
  SubmitResult sr = e->Submit(Pointers(reqs));
  ASSERT_EQ(sr.accepted, kWrites) << sr.status.ToString();
  Status first = e->Shutdown(std::chrono::nanoseconds(0));
  EXPECT_TRUE(first.ok() || first.Is(Errc::kTimedOut)) << first.ToString();
  if (first.Is(Errc::kTimedOut)) {
    EXPECT_NE(first.context().find("none cancelled"), std::string::npos)
        << first.ToString();
  }
  ASSERT_TRUE(e->Shutdown(kForever).ok());
  ExpectExactlyOnce(ReapAll(*e, kWrites), Pointers(reqs));
  for (const Request& r : reqs) {
    EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  }
  EXPECT_EQ(e->Stats().cancelled, 0U);
  std::vector<char> back(data.size());
  ASSERT_EQ(::pread(f.fd(), back.data(), back.size(), 0),
            static_cast<ssize_t>(back.size()));
  EXPECT_EQ(FirstMismatch(back.data(), back.size(), 53), -1);
}

// Asked to, Shutdown cancels what has not started, and nothing else: each
// request comes back once, written whole or -ECANCELED as taken back before
// it started (Origin::kCancelled), the count in Stats, and the file has
// exactly the writes that completed. io_uring's overflow queue is certain to
// hold some here when nothing reaps before Shutdown (a completion thread may
// have moved it all into the ring already); kernel AIO cancels none.
TEST_P(ConformanceTest, ShutdownCanCancelWhatHasNotStartedAndOnlyThat) {
  EngineOptions o;
  o.queue_depth = 4;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  File f = ScratchFile(0, 0);
  constexpr size_t kWrites = 16;
  std::vector<char> data(kWrites * kBlock);
  testing::FillPattern(data.data(), data.size(), 54);
  std::vector<Request> reqs(kWrites);
  for (size_t i = 0; i < kWrites; ++i) {
    reqs[i].PrepWrite(f.fd(), data.data() + i * kBlock, kBlock, i * kBlock);
  }
  SubmitResult sr = e->Submit(Pointers(reqs));
  ASSERT_EQ(sr.accepted, kWrites) << sr.status.ToString();
  Status s = e->Shutdown(kForever, ShutdownMode::kCancelNotStarted);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ExpectExactlyOnce(ReapAll(*e, kWrites), Pointers(reqs));
  uint64_t cancelled = 0;
  std::vector<char> back(data.size());
  ASSERT_GE(::pread(f.fd(), back.data(), back.size(), 0), 0);
  for (size_t i = 0; i < kWrites; ++i) {
    const Request& r = reqs[i];
    if (r.rval == -ECANCELED) {
      ++cancelled;
      EXPECT_EQ(r.origin, Origin::kCancelled) << Describe(r);
      continue;
    }
    EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
    EXPECT_EQ(FirstMismatch(back.data() + i * kBlock, kBlock, 54, i * kBlock),
              -1)
        << "block " << i;
  }
  EXPECT_EQ(e->Stats().cancelled, cancelled);
  const bool reaped_by_caller = GetParam().find('+') == std::string::npos;
  if (e->kind() == EngineKind::kIoUring && reaped_by_caller) {
    EXPECT_GE(cancelled, 1U) << "the overflow queue held none";
  }
  if (e->kind() == EngineKind::kLinuxAio ||
      e->GetCapabilities().runs_in_submit) {
    EXPECT_EQ(cancelled, 0U);
  }
}

// Cancel after Shutdown began is kShutdown on every engine (Shutdown's own
// mode cancels what has not started); the request still completes once.
TEST_P(ConformanceTest, CancelAfterShutdownBeganIsRefusedWithShutdown) {
  // In flight past Shutdown: a read of an empty pipe where that does not
  // block Submit, else a noop kept for the reaper.
  const bool pipe_read = engine_->GetCapabilities().async_buffered_io;
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  char byte = 0;
  Request r;
  if (pipe_read) {
    r.PrepRead(p[0], &byte, 1, 0);
  } else {
    r.PrepNoop();
  }
  SubmitAll({&r});
  Status first = engine_->Shutdown(std::chrono::nanoseconds(0));
  if (pipe_read) {
    EXPECT_TRUE(first.Is(Errc::kTimedOut)) << first.ToString();
  }
  if (r.in_flight()) {
    Status c = engine_->Cancel(&r);
    EXPECT_TRUE(c.Is(Errc::kShutdown)) << c.ToString();
  } else {
    // Delivered to a callback already (the threads engine's workers).
    EXPECT_FALSE(testing::DeliveryMode(GetParam()).empty());
  }
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  ASSERT_TRUE(engine_->Shutdown(kForever).ok());
  ExpectExactlyOnce(ReapAll(*engine_, 1), {&r});
  EXPECT_EQ(r.rval, pipe_read ? 1 : 0) << Describe(r);
  ::close(p[0]);
  ::close(p[1]);
}

// A request aiokit still held when Cancel came (io_uring's overflow queue at
// queue depth 1, behind a pipe read; the threads engine's queue behind its one
// worker, blocked in that read) completes -ECANCELED as Origin::kCancelled on
// every engine that can; one that ran first completes normally.
TEST_P(ConformanceTest, ARequestTakenBackBeforeItStartedReadsAsCancelled) {
  if (!engine_->GetCapabilities().cancel_regular_files ||
      engine_->GetCapabilities().runs_in_submit) {
    GTEST_SKIP() << engine_->Name() << " cannot cancel a request on a file";
  }
  EngineOptions o;
  o.queue_depth = 1;
  o.threads_max = 1;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  char byte = 0;
  Request blocker;
  blocker.PrepRead(p[0], &byte, 1, 0);
  Request* bp = &blocker;
  ASSERT_EQ(e->Submit({&bp, 1}).accepted, 1U);
  std::this_thread::sleep_for(milliseconds(50));  // let it block
  File f = ScratchFile(kBlock, 55);
  std::vector<char> buf(kBlock);
  Request r;
  r.PrepRead(f.fd(), buf.data(), kBlock, 0);
  Request* rp = &r;
  ASSERT_EQ(e->Submit({&rp, 1}).accepted, 1U);
  Status s = e->Cancel(&r);
  if (e->kind() == EngineKind::kIoUring) {
    EXPECT_TRUE(s.ok()) << "in the overflow queue: " << s.ToString();
  }
  ASSERT_TRUE(s.ok() || s.Is(Errc::kNotCancellable) ||
              (s.Is(Errc::kInvalidArgument) && r.completed()))
      << s.ToString();
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  ExpectExactlyOnce(ReapAll(*e, 2), {&blocker, &r});
  if (s.ok() && r.rval == -ECANCELED) {
    EXPECT_EQ(r.origin, Origin::kCancelled) << Describe(r);
    EXPECT_EQ(e->Stats().cancelled, 1U);
  } else {
    EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  }
  ::close(p[0]);
  ::close(p[1]);
}

// Reap at its timeout returns what it has, fewer than `min` or none, and that
// is not an error (status.h's kTimedOut is for Shutdown).
TEST_P(ConformanceTest, ReapReturnsFewerThanMinAtItsTimeoutWithoutAnError) {
  Request r;
  r.PrepNoop();
  SubmitAll({&r});
  std::vector<Request*> out(4);
  Result<size_t> n = engine_->Reap(out, 2, milliseconds(50));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 1U);
  n = engine_->Reap(out, 1, milliseconds(20));
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, 0U);
}

// NotifyFd is an eventfd that neither blocks nor leaks into exec'd programs.
TEST_P(ConformanceTest, NotifyFdIsNonBlockingAndCloseOnExec) {
  Result<int> nfd = engine_->NotifyFd();
  ASSERT_TRUE(nfd.ok()) << nfd.status().ToString();
  EXPECT_NE(::fcntl(*nfd, F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(*nfd, F_GETFD) & FD_CLOEXEC, 0);
  uint64_t v = 0;
  EXPECT_EQ(::read(*nfd, &v, sizeof(v)), -1);  // nothing yet: EAGAIN, no wait
  EXPECT_EQ(errno, EAGAIN);
}

}  // namespace
}  // namespace aiokit::conformance
