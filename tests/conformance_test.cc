// The conformance suite: what every engine must do, run on each engine and
// variant by name (testing::AllEngines() in engines.h).

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "test_util.h"

namespace aiokit {
namespace {

using std::chrono::milliseconds;
using testing::ExpectExactlyOnce;
using testing::FirstMismatch;
using testing::Pointers;
using testing::ReapAll;
using testing::ScopedFaults;
using testing::ScratchFile;

constexpr size_t kBlock = 4096;

class ConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    AIOKIT_MAKE_ENGINE_OR_SKIP(e, GetParam(), EngineOptions{});
    engine_ = std::move(e);
  }

  // Another engine of the kind under test, with `options`; nullptr, with the
  // reason as a failure, when it cannot be made (SetUp made one, so this
  // machine does not refuse the engine).
  std::unique_ptr<Engine> Make(EngineOptions options = {}) {
    Result<std::unique_ptr<Engine>> e =
        testing::MakeNamedEngine(GetParam(), options);
    if (!e.ok()) {
      ADD_FAILURE() << GetParam() << ": " << e.status().ToString();
      return nullptr;
    }
    return std::move(*e);
  }

  // An O_DIRECT scratch file, or a skip when the test directory's file system
  // refuses O_DIRECT.
  File DirectFile(size_t size, uint64_t seed) {
    Result<File> probe = File::CreateTemporary(testing::TestDir(), O_DIRECT);
    if (!probe.ok()) {
      direct_skip_ = probe.status().ToString();
      return File();
    }
    return ScratchFile(size, seed, O_DIRECT);
  }

  void SubmitAll(const std::vector<Request*>& reqs) {
    SubmitResult r = engine_->Submit(reqs);
    ASSERT_EQ(r.accepted, reqs.size()) << r.status.ToString();
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  }

  // Submits one request and reaps it.
  void RunOne(Request& req) {
    SubmitAll({&req});
    testing::Reaped got = ReapAll(*engine_, 1);
    ASSERT_EQ(got.order.size(), 1U) << got.error.ToString();
    ASSERT_EQ(got.order[0], &req);
  }

  std::unique_ptr<Engine> engine_;
  std::string direct_skip_;
};

// ---- Every op, data checked byte for byte. ----

TEST_P(ConformanceTest, ReadReturnsTheFileBytes) {
  File f = ScratchFile(64 * 1024, 7);
  std::vector<char> buf(10000);
  Request req;
  req.PrepRead(f.fd(), buf.data(), buf.size(), 12345);
  EXPECT_EQ(req.rval, kNotCompleted);
  RunOne(req);
  ASSERT_EQ(req.rval, static_cast<int64_t>(buf.size())) << Describe(req);
  EXPECT_EQ(req.origin, Origin::kEngine);
  EXPECT_TRUE(req.completed());
  EXPECT_EQ(FirstMismatch(buf.data(), buf.size(), 7, 12345), -1);
}

TEST_P(ConformanceTest, WriteThenReadBackByteForByte) {
  File f = ScratchFile(0, 0);
  std::vector<char> out(20000);
  testing::FillPattern(out.data(), out.size(), 99);
  Request w;
  w.PrepWrite(f.fd(), out.data(), out.size(), 777);
  RunOne(w);
  ASSERT_EQ(w.rval, static_cast<int64_t>(out.size())) << Describe(w);
  std::vector<char> in(out.size());
  Request r;
  r.PrepRead(f.fd(), in.data(), in.size(), 777);
  RunOne(r);
  ASSERT_EQ(r.rval, static_cast<int64_t>(in.size())) << Describe(r);
  EXPECT_EQ(in, out);
}

TEST_P(ConformanceTest, DirectWriteThenReadBackByteForByte) {
  File f = DirectFile(0, 0);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  ASSERT_TRUE(f.direct());
  ASSERT_TRUE(f.alignment().known());
  const size_t len = 16 * kBlock;
  Result<AlignedBuffer> out =
      AlignedBuffer::Allocate(len, f.alignment().memory);
  Result<AlignedBuffer> in = AlignedBuffer::Allocate(len, f.alignment().memory);
  ASSERT_TRUE(out.ok() && in.ok());
  testing::FillPattern(out->data(), len, 5);
  Request w;
  w.PrepWrite(f, out->data(), len, 8 * kBlock);
  RunOne(w);
  ASSERT_EQ(w.rval, static_cast<int64_t>(len)) << Describe(w);
  Request r;
  r.PrepRead(f, in->data(), len, 8 * kBlock);
  RunOne(r);
  ASSERT_EQ(r.rval, static_cast<int64_t>(len)) << Describe(r);
  EXPECT_EQ(std::memcmp(in->data(), out->data(), len), 0);
}

TEST_P(ConformanceTest, ReadvAndWritevWithInlineAndHeapIovecs) {
  for (size_t nvec : {size_t{3}, size_t{9}}) {
    SCOPED_TRACE("iovecs: " + std::to_string(nvec));
    File f = ScratchFile(0, 0);
    std::vector<std::vector<char>> out(nvec), in(nvec);
    std::vector<iovec> wv, rv;
    uint64_t pos = 0;
    for (size_t i = 0; i < nvec; ++i) {
      out[i].resize(100 + 37 * i);
      in[i].resize(out[i].size());
      testing::FillPattern(out[i].data(), out[i].size(), 3, pos);
      pos += out[i].size();
      wv.push_back({out[i].data(), out[i].size()});
      rv.push_back({in[i].data(), in[i].size()});
    }
    Request w;
    w.PrepWritev(f.fd(), wv.data(), wv.size(), 4096);
    EXPECT_EQ(w.iov.is_inline(), nvec <= IovecVector::kInline);
    RunOne(w);
    ASSERT_EQ(w.rval, static_cast<int64_t>(pos)) << Describe(w);
    Request r;
    r.PrepReadv(f.fd(), rv.data(), rv.size(), 4096);
    RunOne(r);
    ASSERT_EQ(r.rval, static_cast<int64_t>(pos)) << Describe(r);
    for (size_t i = 0; i < nvec; ++i) EXPECT_EQ(in[i], out[i]) << "iovec " << i;
  }
}

TEST_P(ConformanceTest, FsyncAndFdatasyncComplete) {
  if (!engine_->GetCapabilities().fsync) {
    GTEST_SKIP() << "this kernel's engine has no fsync";
  }
  File f = ScratchFile(8192, 1);
  Request s1, s2;
  s1.PrepFsync(f.fd());
  s2.PrepFdatasync(f.fd());
  SubmitAll({&s1, &s2});
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&s1, &s2});
  EXPECT_EQ(s1.rval, 0) << Describe(s1);
  EXPECT_EQ(s2.rval, 0) << Describe(s2);
}

TEST_P(ConformanceTest, NoopCompletesWithZero) {
  Request n;
  n.PrepNoop();
  RunOne(n);
  EXPECT_EQ(n.rval, 0);
  EXPECT_EQ(n.origin, Origin::kLocal);
}

TEST_P(ConformanceTest, ReadPastTheEndIsShort) {
  File f = ScratchFile(1000, 2);
  std::vector<char> buf(4096);
  Request r;
  r.PrepRead(f.fd(), buf.data(), buf.size(), 600);
  RunOne(r);
  EXPECT_EQ(r.rval, 400) << Describe(r);
  EXPECT_NE(Describe(r).find("short"), std::string::npos) << Describe(r);
}

// ---- Per-request flags, priority and eventfd. ----

TEST_P(ConformanceTest, AppendFlagWritesAtTheEnd) {
  if (!engine_->GetCapabilities().rw_flags) {
    GTEST_SKIP() << "no per-request RWF_* flags here";
  }
  File f = ScratchFile(4096, 4);
  const std::string tail = "appended";
  Request w;
  w.PrepWrite(f.fd(), tail.data(), tail.size(), 0);
  w.SetRwFlags(rwf::kAppend);
  RunOne(w);
  ASSERT_EQ(w.rval, static_cast<int64_t>(tail.size())) << Describe(w);
  struct stat st;
  ASSERT_EQ(::fstat(f.fd(), &st), 0);
  EXPECT_EQ(st.st_size, 4096 + static_cast<off_t>(tail.size()));
  std::string back(tail.size(), '\0');
  ASSERT_EQ(::pread(f.fd(), back.data(), back.size(), 4096),
            static_cast<ssize_t>(back.size()));
  EXPECT_EQ(back, tail);
  // And the first block was not overwritten.
  std::vector<char> head(16);
  ASSERT_EQ(::pread(f.fd(), head.data(), head.size(), 0), 16);
  EXPECT_EQ(FirstMismatch(head.data(), head.size(), 4), -1);
}

TEST_P(ConformanceTest, DsyncAndSyncWritesComplete) {
  if (!engine_->GetCapabilities().rw_flags) {
    GTEST_SKIP() << "no per-request RWF_* flags here";
  }
  File f = ScratchFile(0, 0);
  std::vector<char> data(8192, 'd');
  Request a, b;
  a.PrepWrite(f.fd(), data.data(), 4096, 0);
  a.SetRwFlags(rwf::kDsync);
  b.PrepWrite(f.fd(), data.data() + 4096, 4096, 4096);
  b.SetRwFlags(rwf::kSync);
  SubmitAll({&a, &b});
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&a, &b});
  EXPECT_EQ(a.rval, 4096) << Describe(a);
  EXPECT_EQ(b.rval, 4096) << Describe(b);
}

TEST_P(ConformanceTest, NowaitReadOfCachedDataReturnsDataOrEagain) {
  if (!engine_->GetCapabilities().rw_flags) {
    GTEST_SKIP() << "no per-request RWF_* flags here";
  }
  File f = ScratchFile(8192, 6);
  std::vector<char> warm(8192);
  ASSERT_EQ(::pread(f.fd(), warm.data(), warm.size(), 0), 8192);
  std::vector<char> buf(4096);
  Request r;
  r.PrepRead(f.fd(), buf.data(), buf.size(), 4096);
  r.SetRwFlags(rwf::kNowait);
  RunOne(r);
  // RWF_NOWAIT may refuse to block with -EAGAIN; anything else (EINVAL,
  // EOPNOTSUPP) is a failure.
  ASSERT_TRUE(r.rval == 4096 || r.rval == -EAGAIN) << Describe(r);
  if (r.rval == 4096) {
    EXPECT_EQ(FirstMismatch(buf.data(), buf.size(), 6, 4096), -1);
  }
}

TEST_P(ConformanceTest, HipriDirectReadCompletes) {
  File f = DirectFile(64 * 1024, 8);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  Result<AlignedBuffer> buf =
      AlignedBuffer::Allocate(kBlock, f.alignment().memory);
  ASSERT_TRUE(buf.ok());
  Request r;
  r.PrepRead(f, buf->data(), kBlock, kBlock);
  r.SetRwFlags(rwf::kHipri);
  RunOne(r);
  // No variant here polls (IOPOLL): kernel AIO clears RWF_HIPRI, and the
  // other engines drop it likewise, so the read simply completes.
  ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  EXPECT_EQ(FirstMismatch(buf->data(), kBlock, 8, kBlock), -1);
}

TEST_P(ConformanceTest, IoPriorityIsAppliedAndABadClassIsRefused) {
  if (!engine_->GetCapabilities().ioprio) {
    GTEST_SKIP() << "no per-request I/O priority here";
  }
  File f = ScratchFile(8192, 9);
  std::vector<char> buf(4096), buf2(4096);
  Request good, bad;
  good.PrepRead(f.fd(), buf.data(), buf.size(), 0);
  good.SetIoPriority(IoPriority(IoPrioClass::kBestEffort, 4));
  bad.PrepRead(f.fd(), buf2.data(), buf2.size(), 0);
  bad.SetIoPriority(
      static_cast<uint16_t>((5U << 13U) | 1U));  // class 5 does not exist
  SubmitAll({&good, &bad});
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&good, &bad});
  EXPECT_EQ(good.rval, 4096) << Describe(good);
  EXPECT_EQ(bad.rval, -EINVAL) << Describe(bad);
}

// Drops capabilities from the calling thread's effective set for the life of
// the object (the permitted set keeps them, so they come back after). Threads
// created meanwhile (an engine's workers) inherit the reduced set.
class ScopedDroppedCapabilities {
 public:
  explicit ScopedDroppedCapabilities(std::initializer_list<int> caps) {
    header_.version = _LINUX_CAPABILITY_VERSION_3;
    header_.pid = 0;
    if (::syscall(SYS_capget, &header_, saved_) != 0) return;
    __user_cap_data_struct less[2];
    std::memcpy(less, saved_, sizeof(less));
    for (int c : caps) {
      less[c / 32].effective &= ~(1U << (c % 32));
    }
    ok_ = ::syscall(SYS_capset, &header_, less) == 0;
  }
  ~ScopedDroppedCapabilities() {
    if (ok_) (void)::syscall(SYS_capset, &header_, saved_);
  }
  ScopedDroppedCapabilities(const ScopedDroppedCapabilities&) = delete;
  ScopedDroppedCapabilities& operator=(const ScopedDroppedCapabilities&) =
      delete;
  [[nodiscard]] bool ok() const { return ok_; }

 private:
  __user_cap_header_struct header_{};
  __user_cap_data_struct saved_[2] = {};
  bool ok_ = false;
};

TEST_P(ConformanceTest, RealtimeIoPriorityWithoutPrivilegeFailsWithEperm) {
  if (!engine_->GetCapabilities().ioprio) {
    GTEST_SKIP() << "no per-request I/O priority here";
  }
  File f = ScratchFile(8192, 40);
  // The kernel's ioprio_check_cap: the realtime class needs CAP_SYS_ADMIN or
  // CAP_SYS_NICE. The engine is made without them, so that its threads
  // (workers, SQPOLL) lack them too.
  ScopedDroppedCapabilities dropped({CAP_SYS_ADMIN, CAP_SYS_NICE});
  ASSERT_TRUE(dropped.ok()) << std::strerror(errno);
  std::unique_ptr<Engine> e = Make();
  ASSERT_NE(e, nullptr);
  std::vector<char> buf(4096), buf2(4096);
  Request rt, be;
  rt.PrepRead(f.fd(), buf.data(), buf.size(), 0);
  rt.SetIoPriority(IoPriority(IoPrioClass::kRealtime, 0));
  be.PrepRead(f.fd(), buf2.data(), buf2.size(), 0);
  be.SetIoPriority(IoPriority(IoPrioClass::kBestEffort, 0));
  Request* batch[] = {&rt, &be};
  SubmitResult sr = e->Submit(batch);
  ASSERT_EQ(sr.accepted, 2U) << sr.status.ToString();
  ExpectExactlyOnce(ReapAll(*e, 2), {&rt, &be});
  EXPECT_EQ(rt.rval, -EPERM) << Describe(rt);
  EXPECT_EQ(be.rval, 4096) << Describe(be);
}

TEST_P(ConformanceTest, RequestEventfdIsSignalledOnCompletion) {
  File f = ScratchFile(8192, 10);
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(efd, 0);
  std::vector<char> buf(4096);
  Request r, n;
  r.PrepRead(f.fd(), buf.data(), buf.size(), 0);
  r.SetEventFd(efd);
  n.PrepNoop();
  n.SetEventFd(efd);
  SubmitAll({&r, &n});
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&r, &n});
  // One count per request; an engine may post the count just after the
  // completion (io_uring's linked write), so read until both arrive.
  uint64_t total = 0;
  pollfd p{efd, POLLIN, 0};
  while (total < 2 && ::poll(&p, 1, 5000) == 1) {
    uint64_t count = 0;
    ASSERT_EQ(::read(efd, &count, sizeof(count)),
              static_cast<ssize_t>(sizeof(count)));
    total += count;
  }
  EXPECT_EQ(total, 2U);
  EXPECT_EQ(::poll(&p, 1, 20), 0) << "signalled more than once per request";
  ::close(efd);
}

TEST_P(ConformanceTest, NotifyFdBecomesReadableWhenCompletionsAreReady) {
  Result<int> nfd = engine_->NotifyFd();
  ASSERT_TRUE(nfd.ok()) << nfd.status().ToString();
  pollfd p{*nfd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 0), 0) << "readable before anything was submitted";
  File f = ScratchFile(64 * 1024, 11);
  std::vector<std::vector<char>> bufs(8, std::vector<char>(4096));
  std::vector<Request> reqs(8);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  reqs[3].PrepNoop();  // completed by the engine itself: must signal too
  SubmitAll(Pointers(reqs));
  // Each time the eventfd says so, collect what is ready without waiting; every
  // completion must be signalled (the counter may count one per completion or
  // one per batch of them).
  testing::Reaped got;
  std::vector<Request*> out(reqs.size());
  while (got.order.size() < reqs.size()) {
    ASSERT_EQ(::poll(&p, 1, 10000), 1) << "no signal with " << got.order.size()
                                       << " of " << reqs.size() << " reaped";
    uint64_t v = 0;
    ASSERT_EQ(::read(*nfd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
    EXPECT_GE(v, 1U);
    Result<size_t> n = engine_->Poll(out);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    for (size_t i = 0; i < *n; ++i) {
      got.order.push_back(out[i]);
      ++got.times[out[i]];
    }
  }
  ExpectExactlyOnce(got, Pointers(reqs));
  // A signal may trail its completion (the completion was reaped in the same
  // Poll as an earlier one): then it is a spurious wake-up and Poll finds
  // nothing, never a completion left behind.
  if (::poll(&p, 1, 0) == 1) {
    uint64_t v = 0;
    ASSERT_EQ(::read(*nfd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
    Result<size_t> n = engine_->Poll(out);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 0U);
  }
}

TEST_P(ConformanceTest, NotifyFdCanBeTurnedOff) {
  EngineOptions o;
  o.notify_fd = false;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  Result<int> nfd = e->NotifyFd();
  ASSERT_FALSE(nfd.ok());
  EXPECT_TRUE(nfd.status().Is(Errc::kUnsupported)) << nfd.status().ToString();
  EXPECT_FALSE(e->GetCapabilities().notify_fd);
}

// ---- Waiting: timeouts, minimum counts. ----

TEST_P(ConformanceTest, ReapWithNothingInFlightWaitsForTheTimeout) {
  std::vector<Request*> out(4);
  const auto start = std::chrono::steady_clock::now();
  Result<size_t> r = engine_->Reap(out, 1, milliseconds(50));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 0U);
  EXPECT_GE(took,
            milliseconds(50));  // the deadline was honoured, not cut short
}

TEST_P(ConformanceTest, PollAndZeroTimeoutDoNotWait) {
  std::vector<Request*> out(4);
  Result<size_t> r = engine_->Poll(out);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 0U);
  Result<size_t> r2 = engine_->Reap(out, 4, std::chrono::nanoseconds(0));
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(*r2, 0U);
}

TEST_P(ConformanceTest, ReapWaitsForTheMinimumCount) {
  File f = ScratchFile(256 * 1024, 12);
  std::vector<std::vector<char>> bufs(32, std::vector<char>(4096));
  std::vector<Request> reqs(32);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  SubmitAll(Pointers(reqs));
  std::vector<Request*> out(32);
  Result<size_t> r = engine_->Reap(out, 32, std::chrono::seconds(30));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 32U);
  for (size_t i = 0; i < 32; ++i) {
    EXPECT_EQ(out[i]->rval, 4096) << Describe(*out[i]);
  }
}

TEST_P(ConformanceTest, GetNextCompletedReturnsAtMostMax) {
  std::vector<Request> reqs(10);
  for (Request& r : reqs) r.PrepNoop();
  SubmitAll(Pointers(reqs));
  Request* out[4];
  Result<size_t> r = engine_->GetNextCompleted(1000, out, 4);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 4U);
  testing::Reaped rest = ReapAll(*engine_, 6);
  EXPECT_EQ(rest.order.size(), 6U);
  EXPECT_EQ(engine_->Stats().in_flight, 0U);
}

// ---- Cancel. ----

TEST_P(ConformanceTest, CancelIsHonestAndTheRequestStillCompletesOnce) {
  File f = ScratchFile(64 * 1024, 13);
  std::vector<char> buf(64 * 1024);
  Request r;
  r.PrepRead(f.fd(), buf.data(), buf.size(), 0);
  SubmitAll({&r});
  Status s = engine_->Cancel(&r);
  if (engine_->GetCapabilities().cancel_regular_files) {
    // Either it was stopped, or it finished first.
    EXPECT_TRUE(s.ok() || s.Is(Errc::kNotCancellable)) << s.ToString();
  } else {
    EXPECT_TRUE(s.Is(Errc::kNotCancellable)) << s.ToString();
  }
  testing::Reaped got = ReapAll(*engine_, 1);
  ExpectExactlyOnce(got, {&r});
  EXPECT_TRUE(r.rval == static_cast<int64_t>(buf.size()) ||
              r.rval == -ECANCELED)
      << Describe(r);
}

TEST_P(ConformanceTest, CancelOfARequestNotInFlightIsInvalid) {
  Request r;
  r.PrepNoop();
  EXPECT_TRUE(engine_->Cancel(&r).Is(Errc::kInvalidArgument));
  EXPECT_TRUE(engine_->Cancel(nullptr).Is(Errc::kInvalidArgument));
}

// ---- Shutdown with requests in flight. ----

TEST_P(ConformanceTest, ShutdownWithAThousandInFlightCompletesEveryOne) {
  EngineOptions o;
  o.queue_depth = 1024;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  File f = DirectFile(1024 * kBlock, 14);
  const bool direct = direct_skip_.empty();
  if (!direct) f = ScratchFile(1024 * kBlock, 14);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(1000 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  std::vector<Request> reqs(1000);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].PrepRead(f, buf->data() + i * kBlock, kBlock,
                     ((i * 7) % 1024) * kBlock);
  }
  std::vector<Request*> ptrs = Pointers(reqs);
  SubmitResult sr = e->Submit(ptrs);
  ASSERT_EQ(sr.accepted, reqs.size()) << sr.status.ToString();
  Status s = e->Shutdown(std::chrono::seconds(60));
  ASSERT_TRUE(s.ok()) << s.ToString();
  // Every request has its result, and Reap hands each back exactly once.
  for (Request& r : reqs)
    ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  testing::Reaped got = ReapAll(*e, reqs.size(), milliseconds(5000));
  ExpectExactlyOnce(got, ptrs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(FirstMismatch(buf->data() + i * kBlock, kBlock, 14,
                            ((i * 7) % 1024) * kBlock),
              -1)
        << "request " << i;
  }
  // Then the engine says it is shut down.
  std::vector<Request*> out(1);
  Result<size_t> after = e->Reap(out, 1, milliseconds(10));
  ASSERT_FALSE(after.ok());
  EXPECT_TRUE(after.status().Is(Errc::kShutdown)) << after.status().ToString();
}

TEST_P(ConformanceTest, DestroyingTheEngineWaitsForRequestsInFlight) {
  File f = DirectFile(256 * kBlock, 15);
  if (!direct_skip_.empty()) f = ScratchFile(256 * kBlock, 15);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(256 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  std::vector<Request> reqs(256);
  {
    EngineOptions o;
    o.queue_depth = 256;
    std::unique_ptr<Engine> e = Make(o);
    ASSERT_NE(e, nullptr);
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f, buf->data() + i * kBlock, kBlock, i * kBlock);
    }
    SubmitResult sr = e->Submit(Pointers(reqs));
    ASSERT_EQ(sr.accepted, reqs.size());
  }  // destroyed with everything in flight
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].rval, static_cast<int64_t>(kBlock)) << Describe(reqs[i]);
    ASSERT_EQ(FirstMismatch(buf->data() + i * kBlock, kBlock, 15, i * kBlock),
              -1);
  }
}

TEST_P(ConformanceTest, SubmitAfterShutdownIsRefusedAndLeavesTheRequestIdle) {
  ASSERT_TRUE(engine_->Shutdown(std::chrono::seconds(5)).ok());
  Request r;
  r.PrepNoop();
  Request* p = &r;
  SubmitResult sr = engine_->Submit({&p, 1});
  EXPECT_EQ(sr.accepted, 0U);
  EXPECT_TRUE(sr.status.Is(Errc::kShutdown)) << sr.status.ToString();
  EXPECT_FALSE(r.in_flight());
  EXPECT_EQ(r.rval, kNotCompleted);
}

TEST_P(ConformanceTest, ShutdownWakesABlockedReaper) {
  if (testing::OneThreadPromised(GetParam())) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  Status reaper_status;
  size_t reaped = 99;
  std::thread reaper([&] {
    std::vector<Request*> out(4);
    Result<size_t> r = engine_->Reap(out, 1, kForever);
    reaper_status = r.status();
    reaped = r.ok() ? *r : 0;
  });
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE(engine_->Shutdown(std::chrono::seconds(10)).ok());
  reaper.join();
  EXPECT_EQ(reaped, 0U);
  EXPECT_TRUE(reaper_status.Is(Errc::kShutdown)) << reaper_status.ToString();
}

// ---- Exactly once under partial submission and EAGAIN (injected under the
// syscall layer). ----

class FaultedConformanceTest : public ConformanceTest {
 protected:
  void SetUp() override {
    faults_ = std::make_unique<ScopedFaults>();
    ConformanceTest::SetUp();
  }
  void TearDown() override {
    engine_.reset();  // before the hooks go
    faults_.reset();
  }
  std::unique_ptr<ScopedFaults> faults_;
};

TEST_P(FaultedConformanceTest, PartialSubmitResubmitsTheRest) {
  if (testing::EngineVariant(GetParam()) == "sqpoll") {
    GTEST_SKIP() << "with SQPOLL the kernel's poller submits: no system call "
                    "to fail or shorten";
  }
  faults_->state().submit_max = 3;
  File f = ScratchFile(128 * 1024, 20);
  std::vector<std::vector<char>> bufs(32, std::vector<char>(4096));
  std::vector<Request> reqs(32);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  SubmitAll(Pointers(reqs));
  ExpectExactlyOnce(ReapAll(*engine_, reqs.size()), Pointers(reqs));
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].rval, 4096) << Describe(reqs[i]);
    ASSERT_EQ(FirstMismatch(bufs[i].data(), 4096, 20, i * 4096), -1);
  }
  EngineStats st = engine_->Stats();
  EXPECT_GE(st.partial_submits, 10U);
  EXPECT_EQ(st.submitted, 32U);
  EXPECT_EQ(st.completed, 32U);
}

TEST_P(FaultedConformanceTest, EagainStormIsRetriedAndNothingIsLost) {
  if (testing::EngineVariant(GetParam()) == "sqpoll") {
    GTEST_SKIP() << "with SQPOLL the kernel's poller submits: no system call "
                    "to fail or shorten";
  }
  File f = ScratchFile(256 * 1024, 21);
  std::vector<std::vector<char>> bufs(64, std::vector<char>(4096));
  std::vector<Request> reqs(64);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  std::vector<Request*> ptrs = Pointers(reqs);
  // Storms of EAGAIN between partial submissions, fewer than the policy's 16 in
  // a row.
  faults_->state().submit_max = 5;
  unsigned retries = 0;
  for (size_t i = 0; i < ptrs.size(); i += 16) {
    faults_->state().submit_eagain = 7;
    SubmitResult sr =
        engine_->Submit(std::span<Request* const>(ptrs.data() + i, 16));
    ASSERT_EQ(sr.accepted, 16U) << sr.status.ToString();
    retries += sr.retries;
  }
  EXPECT_EQ(retries, 4U * 7U);
  ExpectExactlyOnce(ReapAll(*engine_, reqs.size()), ptrs);
  for (Request& r : reqs) EXPECT_EQ(r.rval, 4096) << Describe(r);
  EXPECT_EQ(engine_->Stats().eagain_retries, 28U);
}

TEST_P(FaultedConformanceTest, EagainBeyondThePolicyReturnsTheRestUntouched) {
  if (testing::EngineVariant(GetParam()) == "sqpoll") {
    GTEST_SKIP() << "with SQPOLL the kernel's poller submits: no system call "
                    "to fail or shorten";
  }
  EngineOptions o;
  o.eagain.max_retries = 3;
  o.eagain.initial_delay = std::chrono::microseconds(10);
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  File f = ScratchFile(64 * 1024, 22);
  std::vector<std::vector<char>> bufs(8, std::vector<char>(4096));
  std::vector<Request> reqs(8);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  std::vector<Request*> ptrs = Pointers(reqs);
  // The first three go through, then the kernel says EAGAIN forever.
  faults_->state().submit_max = 3;
  SubmitResult first = e->Submit(std::span<Request* const>(ptrs.data(), 3));
  ASSERT_EQ(first.accepted, 3U);
  faults_->state().submit_always_eagain = true;
  SubmitResult sr = e->Submit(std::span<Request* const>(ptrs.data() + 3, 5));
  EXPECT_EQ(sr.accepted, 0U);
  EXPECT_TRUE(sr.status.Is(Errc::kQueueFull)) << sr.status.ToString();
  EXPECT_EQ(sr.retries, 3U);
  for (size_t i = 3; i < 8; ++i) {
    EXPECT_FALSE(reqs[i].in_flight());
    EXPECT_EQ(reqs[i].rval, kNotCompleted);
  }
  // The room-making reaps kept the first three for us.
  testing::Reaped got = ReapAll(*e, 3);
  ExpectExactlyOnce(got, {ptrs[0], ptrs[1], ptrs[2]});
  // Once the storm passes, the same requests go through.
  faults_->state().submit_always_eagain = false;
  faults_->state().submit_max = 0;
  SubmitResult again = e->Submit(std::span<Request* const>(ptrs.data() + 3, 5));
  ASSERT_EQ(again.accepted, 5U) << again.status.ToString();
  ExpectExactlyOnce(ReapAll(*e, 5),
                    {ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7]});
  e.reset();
}

TEST_P(ConformanceTest, SubmittingFarMoreThanTheQueueDepthLosesNothing) {
  // The kernel says EAGAIN once its ring is full; the engine reaps to make room
  // and keeps what it reaped for us.
  EngineOptions o;
  o.queue_depth = 1;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  File f = ScratchFile(64 * 1024, 23);
  std::vector<std::vector<char>> bufs(600, std::vector<char>(512));
  std::vector<Request> reqs(600);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 512, (i % 128) * 512);
  }
  std::vector<Request*> ptrs = Pointers(reqs);
  SubmitResult sr = e->Submit(ptrs);
  ASSERT_EQ(sr.accepted, reqs.size()) << sr.status.ToString();
  ExpectExactlyOnce(ReapAll(*e, reqs.size()), ptrs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].rval, 512) << Describe(reqs[i]);
    ASSERT_EQ(FirstMismatch(bufs[i].data(), 512, 23, (i % 128) * 512), -1);
  }
}

// ---- Invalid input: the kernel's errno, or the library's documented error.
// ----

TEST_P(ConformanceTest,
       ARefusedRequestCompletesWithItsErrorAndTheRestStillRun) {
  File f = ScratchFile(16384, 24);
  std::vector<char> a(4096), c(4096);
  char b[16], d[16];
  // A descriptor that was open and is closed now (nothing else in this test
  // opens one in between).
  const int closed = ::dup(f.fd());
  ASSERT_GE(closed, 0);
  ASSERT_EQ(::close(closed), 0);
  Request ra, rb, rc, rd;
  ra.PrepRead(f.fd(), a.data(), a.size(), 0);
  rb.PrepRead(-1, b, sizeof(b), 0);  // bad fd
  rc.PrepRead(f.fd(), c.data(), c.size(), 4096);
  rd.PrepWrite(closed, d, sizeof(d), 0);  // closed fd
  SubmitAll({&ra, &rb, &rc, &rd});
  ExpectExactlyOnce(ReapAll(*engine_, 4), {&ra, &rb, &rc, &rd});
  EXPECT_EQ(ra.rval, 4096) << Describe(ra);
  EXPECT_EQ(rb.rval, -EBADF) << Describe(rb);
  EXPECT_EQ(rc.rval, 4096) << Describe(rc);
  EXPECT_EQ(rd.rval, -EBADF) << Describe(rd);
  EXPECT_NE(Describe(rb).find("EBADF"), std::string::npos) << Describe(rb);
  EXPECT_NE(Describe(rb).find("fd=-1"), std::string::npos) << Describe(rb);
}

TEST_P(ConformanceTest, WriteToAReadOnlyFdFailsWithEbadf) {
  File rw = ScratchFile(4096, 25);
  const std::string path = "/proc/self/fd/" + std::to_string(rw.fd());
  Result<File> ro = File::Open(path, O_RDONLY);
  ASSERT_TRUE(ro.ok()) << ro.status().ToString();
  Result<File> wo = File::Open(path, O_WRONLY);
  ASSERT_TRUE(wo.ok()) << wo.status().ToString();
  const char data[8] = "nope";
  char back[8];
  Request w, r;
  w.PrepWrite(ro->fd(), data, sizeof(data), 0);
  r.PrepRead(wo->fd(), back, sizeof(back), 0);
  SubmitAll({&w, &r});
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&w, &r});
  EXPECT_EQ(w.rval, -EBADF) << Describe(w);
  EXPECT_EQ(r.rval, -EBADF) << Describe(r);
}

TEST_P(ConformanceTest, ZeroLengthReadCompletesWithZero) {
  File f = ScratchFile(4096, 26);
  char b[1];
  Request r;
  r.PrepRead(f.fd(), b, 0, 0);
  RunOne(r);
  EXPECT_EQ(r.rval, 0) << Describe(r);
}

TEST_P(ConformanceTest, NegativeOffsetFailsWithEinval) {
  File f = ScratchFile(4096, 27);
  std::vector<char> b(512);
  Request r;
  r.PrepRead(f.fd(), b.data(), b.size(), static_cast<uint64_t>(-4096));
  RunOne(r);
  EXPECT_EQ(r.rval, -EINVAL) << Describe(r);
  EXPECT_NE(Describe(r).find("offset=-4096"), std::string::npos) << Describe(r);
}

TEST_P(ConformanceTest, InconsistentRequestsAreRefusedWithEinval) {
  File f = ScratchFile(4096, 32);
  char buf[16];
  Request flags, mismatch, fsync_flags;
  flags.PrepRead(f.fd(), buf, sizeof(buf), 0);
  flags.SetRwFlags(0x8000);  // no such RWF_* bit
  mismatch.PrepRead(f.fd(), buf, sizeof(buf), 0);
  mismatch.length = 8;  // no longer the buffer's length
  fsync_flags.PrepFsync(f.fd());
  fsync_flags.SetRwFlags(rwf::kDsync);  // RWF_* flags on an fsync
  SubmitAll({&flags, &mismatch, &fsync_flags});
  ExpectExactlyOnce(ReapAll(*engine_, 3), {&flags, &mismatch, &fsync_flags});
  for (Request* r : {&flags, &mismatch, &fsync_flags}) {
    EXPECT_EQ(r->rval, -EINVAL) << Describe(*r);
    EXPECT_EQ(r->origin, Origin::kRefused) << Describe(*r);
  }
}

// The kernel moves at most MAX_RW_COUNT bytes (INT_MAX rounded down to a page)
// per read or write and returns that count for a longer request; every engine
// gives the same count. A write to /dev/null shows the cap without moving
// data (it takes the capped count without reading the buffer), so the buffer
// is address space reserved with PROT_NONE and no memory is allocated.
TEST_P(ConformanceTest, ATransferOverTheKernelsLimitIsCappedAtMaxRwCount) {
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const auto max_rw = static_cast<int64_t>(INT_MAX & ~(page - 1));
  const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null_fd < 0) GTEST_SKIP() << "no /dev/null here";
  constexpr size_t kGiB = size_t{1} << 30;
  const size_t span = 5 * kGiB;
  void* area = ::mmap(nullptr, span, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(area, MAP_FAILED) << std::strerror(errno);
  char* base = static_cast<char*>(area);
  // The first 64 KiB are memory, for the read below.
  ASSERT_EQ(::mprotect(base, 64 * 1024, PROT_READ | PROT_WRITE), 0);
  File f = ScratchFile(8192, 33);
  Request w3, w4, wv, r3;
  w3.PrepWrite(null_fd, base, 3 * kGiB, 0);
  // Above 4 GiB: a 32-bit length (io_uring's sqe->len) must not wrap it.
  w4.PrepWrite(null_fd, base, 4 * kGiB + 2 * page, 0);
  const iovec two[2] = {{base, 2 * kGiB}, {base + 2 * kGiB, 2 * kGiB}};
  wv.PrepWritev(null_fd, two, 2, 0);
  // A read that long of a small file gives the file, no error.
  r3.PrepRead(f.fd(), base, 3 * kGiB, 0);
  SubmitAll({&w3, &w4, &wv, &r3});
  ExpectExactlyOnce(ReapAll(*engine_, 4), {&w3, &w4, &wv, &r3});
  for (Request* r : {&w3, &w4, &wv}) {
    EXPECT_EQ(r->rval, max_rw) << Describe(*r);
  }
  EXPECT_EQ(r3.rval, 8192) << Describe(r3);
  EXPECT_EQ(FirstMismatch(base, 8192, 33), -1);
  ::munmap(area, span);
  ::close(null_fd);
}

TEST_P(ConformanceTest, ALengthAboveSsizeMaxFailsWithEinval) {
  // Kernel AIO refuses such an iocb at io_submit ("overflow check").
  File f = ScratchFile(4096, 34);
  char buf[16];
  Request r, w, rv;
  r.PrepRead(f.fd(), buf, size_t{1} << 63, 0);
  w.PrepWrite(f.fd(), buf, SIZE_MAX, 0);
  // An iovec that long: the kernel's answer on every path (io_submit,
  // io_uring's readv, preadv2).
  const iovec v[2] = {{buf, 8}, {buf + 8, size_t{1} << 63}};
  rv.PrepReadv(f.fd(), v, 2, 0);
  SubmitAll({&r, &w, &rv});
  ExpectExactlyOnce(ReapAll(*engine_, 3), {&r, &w, &rv});
  EXPECT_EQ(r.rval, -EINVAL) << Describe(r);
  EXPECT_EQ(w.rval, -EINVAL) << Describe(w);
  EXPECT_EQ(rv.rval, -EINVAL) << Describe(rv);
  std::vector<char> back(4096);
  ASSERT_EQ(::pread(f.fd(), back.data(), back.size(), 0), 4096);
  EXPECT_EQ(FirstMismatch(back.data(), back.size(), 34), -1)
      << "the refused write wrote";
}

TEST_P(ConformanceTest, MoreIovecsThanIovMaxFailWithEinval) {
  constexpr size_t kMax = IOV_MAX;  // the kernel's UIO_MAXIOV, 1024
  File rf = ScratchFile(2 * kMax, 35);
  File wf = ScratchFile(0, 0);
  std::vector<char> in(kMax + 1), out(kMax + 1);
  testing::FillPattern(out.data(), out.size(), 36);
  std::vector<iovec> rv(kMax + 1), wv(kMax + 1);
  for (size_t i = 0; i <= kMax; ++i) {
    rv[i] = {&in[i], 1};
    wv[i] = {&out[i], 1};
  }
  Request read_max, read_over, write_max, write_over;
  read_max.PrepReadv(rf.fd(), rv.data(), kMax, 0);
  read_over.PrepReadv(rf.fd(), rv.data(), kMax + 1, 0);
  write_max.PrepWritev(wf.fd(), wv.data(), kMax, 0);
  write_over.PrepWritev(wf.fd(), wv.data(), kMax + 1, 8192);
  SubmitAll({&read_max, &read_over, &write_max, &write_over});
  ExpectExactlyOnce(ReapAll(*engine_, 4),
                    {&read_max, &read_over, &write_max, &write_over});
  EXPECT_EQ(read_max.rval, static_cast<int64_t>(kMax)) << Describe(read_max);
  EXPECT_EQ(write_max.rval, static_cast<int64_t>(kMax)) << Describe(write_max);
  EXPECT_EQ(read_over.rval, -EINVAL) << Describe(read_over);
  EXPECT_EQ(write_over.rval, -EINVAL) << Describe(write_over);
  EXPECT_EQ(FirstMismatch(in.data(), kMax, 35), -1);
  std::vector<char> back(kMax + 1);
  EXPECT_EQ(::pread(wf.fd(), back.data(), back.size(), 0),
            static_cast<ssize_t>(kMax));  // nothing of the refused one
  EXPECT_EQ(FirstMismatch(back.data(), kMax, 36), -1);
}

TEST_P(ConformanceTest, AnUnlinkedFileKeepsWorkingThroughItsOpenFd) {
  std::string name = GetParam();
  std::replace(name.begin(), name.end(), '/', '_');
  const std::string path = testing::TestDir() + "/aiokit-unlinked-" +
                           std::to_string(::getpid()) + "-" + name;
  Result<File> f = File::Open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  // Removed here in any case; the requests run while it goes.
  struct Unlinker {
    std::string p;
    ~Unlinker() { ::unlink(p.c_str()); }
  } unlinker{path};
  constexpr size_t kBlocks = 16;
  std::vector<char> data(kBlocks * kBlock);
  testing::FillPattern(data.data(), data.size(), 37);
  ASSERT_EQ(::pwrite(f->fd(), data.data(), data.size() / 2, 0),
            static_cast<ssize_t>(data.size() / 2));
  std::vector<char> in(kBlocks * kBlock);
  std::vector<Request> reqs(kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) {
    // The first half is read back, the second half written.
    if (i < kBlocks / 2) {
      reqs[i].PrepRead(f->fd(), in.data() + i * kBlock, kBlock, i * kBlock);
    } else {
      reqs[i].PrepWrite(f->fd(), data.data() + i * kBlock, kBlock, i * kBlock);
    }
  }
  SubmitAll(Pointers(reqs));
  ASSERT_EQ(::unlink(path.c_str()), 0);  // while they are in flight
  ExpectExactlyOnce(ReapAll(*engine_, kBlocks), Pointers(reqs));
  for (Request& r : reqs) {
    EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  }
  EXPECT_EQ(FirstMismatch(in.data(), data.size() / 2, 37), -1);
  struct stat st;
  ASSERT_EQ(::fstat(f->fd(), &st), 0);
  EXPECT_EQ(st.st_nlink, 0U);
  // Gone from the directory, the file still reads and writes.
  Request r, w;
  std::vector<char> all(data.size());
  r.PrepRead(f->fd(), all.data(), all.size(), 0);
  RunOne(r);
  EXPECT_EQ(r.rval, static_cast<int64_t>(all.size())) << Describe(r);
  EXPECT_EQ(FirstMismatch(all.data(), all.size(), 37), -1);
  w.PrepWrite(f->fd(), data.data(), kBlock, data.size());
  RunOne(w);
  EXPECT_EQ(w.rval, static_cast<int64_t>(kBlock)) << Describe(w);
}

// A small tmpfs mounted on a fresh directory for the life of the object;
// unmounted (lazily, so an fd still open cannot keep it) and removed in every
// path. error() says why not when it could not be mounted.
class ScopedTmpfs {
 public:
  explicit ScopedTmpfs(size_t bytes) {
    std::string dir = testing::TestDir() + "/aiokit-tmpfs-XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) {
      error_ = "mkdtemp in " + testing::TestDir() + ": " + std::strerror(errno);
      return;
    }
    dir_ = dir;
    const std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
    if (::mount("aiokit-test", dir_.c_str(), "tmpfs",
                MS_NOSUID | MS_NODEV | MS_NOEXEC, opts.c_str()) != 0) {
      error_ = "mount -t tmpfs -o " + opts + " " + dir_ + ": " +
               std::strerror(errno) + " (needs CAP_SYS_ADMIN)";
      return;
    }
    mounted_ = true;
  }
  ~ScopedTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  ScopedTmpfs(const ScopedTmpfs&) = delete;
  ScopedTmpfs& operator=(const ScopedTmpfs&) = delete;

  [[nodiscard]] const std::string& dir() const { return dir_; }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  std::string dir_;
  std::string error_;
  bool mounted_ = false;
};

TEST_P(ConformanceTest, WritesToAFullFileSystemFailWithEnospc) {
  constexpr size_t kSize = 256 * 1024;
  ScopedTmpfs fs(kSize);
  if (!fs.error().empty()) GTEST_SKIP() << fs.error();
  // Declared after the mount: closed before it goes.
  Result<File> f = File::Open(fs.dir() + "/fill", O_RDWR | O_CREAT, 0600);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  // 48 KiB does not divide 256 KiB: the last write that fits only partly
  // comes back short (or fails), as the kernel's write does.
  constexpr size_t kChunk = 48 * 1024;
  std::vector<char> data(2 * kSize);
  testing::FillPattern(data.data(), data.size(), 38);
  uint64_t pos = 0;
  int64_t last = 0;
  for (int i = 0; i < 32; ++i) {
    Request w;
    w.PrepWrite(f->fd(), data.data() + pos, kChunk, pos);
    RunOne(w);
    last = w.rval;
    if (last <= 0) break;
    EXPECT_TRUE(last == static_cast<int64_t>(kChunk) ||
                pos + last > kSize - kChunk)
        << "short before the file system was nearly full: " << Describe(w);
    pos += static_cast<uint64_t>(last);
  }
  EXPECT_EQ(last, -ENOSPC) << "after " << pos << " bytes";
  EXPECT_LE(pos, kSize);
  EXPECT_GT(pos, kSize - kChunk);
  // Several at once on the full file system: each fails once, nothing aborts.
  std::vector<Request> more(4);
  for (size_t i = 0; i < more.size(); ++i) {
    more[i].PrepWrite(f->fd(), data.data(), kChunk, pos + i * kChunk);
  }
  SubmitAll(Pointers(more));
  ExpectExactlyOnce(ReapAll(*engine_, more.size()), Pointers(more));
  for (Request& r : more) EXPECT_EQ(r.rval, -ENOSPC) << Describe(r);
  // Space already allocated can still be overwritten, and what was written
  // reads back.
  Request over;
  over.PrepWrite(f->fd(), data.data(), kChunk, 0);
  RunOne(over);
  EXPECT_EQ(over.rval, static_cast<int64_t>(kChunk)) << Describe(over);
  std::vector<char> back(pos);
  Request r;
  r.PrepRead(f->fd(), back.data(), back.size(), 0);
  RunOne(r);
  ASSERT_EQ(r.rval, static_cast<int64_t>(pos)) << Describe(r);
  EXPECT_EQ(FirstMismatch(back.data(), back.size(), 38), -1);
}

TEST_P(ConformanceTest, QueueDepthZeroIsRefused) {
  EngineOptions o;
  o.queue_depth = 0;
  Result<std::unique_ptr<Engine>> e = testing::MakeNamedEngine(GetParam(), o);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().Is(Errc::kInvalidArgument)) << e.status().ToString();
  EXPECT_NE(e.status().ToString().find("queue_depth 0"), std::string::npos);
}

TEST_P(ConformanceTest, QueueDepthAboveTheSystemLimitIsRefusedWithTheReason) {
  const std::string max_nr = sys::ReadSmallFile("/proc/sys/fs/aio-max-nr");
  if (testing::EngineName(GetParam()) != "linux-aio" || max_nr.empty()) {
    GTEST_SKIP() << "fs.aio-max-nr applies to linux-aio";
  }
  EngineOptions o;
  o.queue_depth = static_cast<unsigned>(std::stoul(max_nr)) + 1;
  Result<std::unique_ptr<Engine>> e = testing::MakeNamedEngine(GetParam(), o);
  ASSERT_FALSE(e.ok());
  const std::string msg = e.status().ToString();
  EXPECT_EQ(e.status().Errno(), EAGAIN) << msg;
  EXPECT_NE(msg.find("fs.aio-max-nr is " + max_nr), std::string::npos) << msg;
  EXPECT_NE(msg.find("fs.aio-nr"), std::string::npos) << msg;
}

TEST_P(ConformanceTest, QueueDepthAboveTheEnginesLargestIsRefused) {
  const std::string name = testing::EngineName(GetParam());
  unsigned largest = 0;
  if (name == "io_uring") {
    largest = 65536;  // the kernel's largest CQ ring
  } else if (name == "threads") {
    largest = 1U << 22;  // as io_setup's largest
  } else {
    GTEST_SKIP() << name << "'s limit is fs.aio-max-nr";
  }
  EngineOptions o;
  o.queue_depth = largest + 1;
  Result<std::unique_ptr<Engine>> e = testing::MakeNamedEngine(GetParam(), o);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().Is(Errc::kInvalidArgument)) << e.status().ToString();
  EXPECT_NE(e.status().ToString().find("above " + std::to_string(largest)),
            std::string::npos)
      << e.status().ToString();
}

TEST_P(ConformanceTest, PolledIoOnADeviceWithoutPollQueuesFailsWithEopnotsupp) {
  if (GetParam() != "io_uring") {
    GTEST_SKIP() << "IOPOLL is io_uring's, tried once";
  }
  EngineOptions o;
  o.iopoll = true;
  AIOKIT_MAKE_ENGINE_OR_SKIP(e, GetParam(), o);
  if (!e->GetCapabilities().iopoll) {
    GTEST_SKIP() << "this kernel refuses IORING_SETUP_IOPOLL";
  }
  File f = DirectFile(16 * kBlock, 39);
  if (!direct_skip_.empty()) GTEST_SKIP() << direct_skip_;
  // Whether the device polls: its queue's io_poll in sysfs (a partition's is
  // its disk's).
  struct stat st;
  ASSERT_EQ(::fstat(f.fd(), &st), 0);
  const std::string dev = "/sys/dev/block/" + std::to_string(major(st.st_dev)) +
                          ":" + std::to_string(minor(st.st_dev));
  std::string polls = sys::ReadSmallFile((dev + "/queue/io_poll").c_str());
  if (polls.empty()) {
    polls = sys::ReadSmallFile((dev + "/../queue/io_poll").c_str());
  }
  if (polls.empty()) {
    GTEST_SKIP() << testing::TestDir() << " is not on a block device";
  }
  Result<AlignedBuffer> buf =
      AlignedBuffer::Allocate(kBlock, f.alignment().memory);
  ASSERT_TRUE(buf.ok());
  Request r;
  r.PrepRead(f, buf->data(), kBlock, kBlock);
  Request* p = &r;
  SubmitResult sr = e->Submit({&p, 1});
  ASSERT_EQ(sr.accepted, 1U) << sr.status.ToString();
  ExpectExactlyOnce(ReapAll(*e, 1), {&r});
  if (polls == "1") {
    EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  } else {
    EXPECT_EQ(r.rval, -EOPNOTSUPP) << Describe(r);
  }
}

TEST_P(ConformanceTest, MisalignedDirectRequestIsRefusedBeforeSubmission) {
  File f = DirectFile(16 * kBlock, 28);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  const Alignment a = f.alignment();
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(4 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  ScopedFaults faults;  // counts io_submit calls
  Request addr, off, len;
  addr.PrepRead(f, buf->data() + 1, a.offset, 0);
  off.PrepRead(f, buf->data(), a.offset, 1);
  len.PrepRead(f, buf->data(), a.offset + 1, 0);
  SubmitAll({&addr, &off, &len});
  ExpectExactlyOnce(ReapAll(*engine_, 3), {&addr, &off, &len});
  EXPECT_EQ(faults.state().submit_calls.load(), 0)
      << "a misaligned request reached the kernel";
  for (Request* r : {&addr, &off, &len}) {
    EXPECT_EQ(r->rval, -EINVAL) << Describe(*r);
    EXPECT_EQ(r->origin, Origin::kRefused);
    const std::string d = Describe(*r);
    EXPECT_NE(d.find("O_DIRECT"), std::string::npos) << d;
    EXPECT_NE(d.find("address"), std::string::npos) << d;
    EXPECT_NE(d.find(std::to_string(a.offset) + " bytes"), std::string::npos)
        << d;
  }
  EXPECT_NE(Describe(addr).find("buffer address is not"), std::string::npos)
      << Describe(addr);
  EXPECT_NE(Describe(off).find("offset is not"), std::string::npos)
      << Describe(off);
  EXPECT_NE(Describe(len).find("length is not"), std::string::npos)
      << Describe(len);
  // And Validate says the same before any submission.
  Request again;
  again.PrepRead(f, buf->data() + 1, a.offset, 0);
  Status v = again.Validate();
  EXPECT_TRUE(v.Is(Errc::kMisaligned)) << v.ToString();
}

TEST_P(ConformanceTest,
       MisalignedDirectRequestOnARawFdIsExplainedAfterTheKernelRefusesIt) {
  File f = DirectFile(16 * kBlock, 29);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(4 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  // A misaligned offset (kernels since 6.x accept some misaligned memory, but
  // never a misaligned offset) on a raw fd, so that the library does not know
  // the alignment and the kernel answers.
  Request r;
  r.PrepRead(f.fd(), buf->data(), f.alignment().offset, 1);
  RunOne(r);
  EXPECT_EQ(r.rval, -EINVAL) << Describe(r);
  EXPECT_EQ(r.origin, Origin::kEngine) << Describe(r);
  EXPECT_NE(Describe(r).find("offset is not"), std::string::npos)
      << Describe(r);
}

TEST_P(ConformanceTest, SubmittingARequestStillInFlightIsRefused) {
  Request r, other;
  r.PrepNoop();
  other.PrepNoop();
  SubmitAll({&r});
  SubmitResult sr = engine_->Submit(std::vector<Request*>{&other, &r});
  EXPECT_EQ(sr.accepted, 1U);
  EXPECT_TRUE(sr.status.Is(Errc::kInvalidArgument)) << sr.status.ToString();
  EXPECT_NE(sr.status.ToString().find("before it was reaped"),
            std::string::npos);
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&r, &other});
  // Reaped, it may go again.
  SubmitAll({&r});
  ExpectExactlyOnce(ReapAll(*engine_, 1), {&r});
}

// ---- Threads. ----

TEST_P(ConformanceTest, ManySubmittersOneReaperEachRequestOnce) {
  if (testing::OneThreadPromised(GetParam())) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  File f = ScratchFile(256 * 1024, 30);
  constexpr size_t kThreads = 4;
  constexpr size_t kPerThread = 500;
  std::vector<std::vector<Request>> reqs(kThreads,
                                         std::vector<Request>(kPerThread));
  std::vector<std::vector<char>> bufs(kThreads,
                                      std::vector<char>(kPerThread * 512));
  std::vector<Request*> all;
  for (size_t t = 0; t < kThreads; ++t) {
    for (size_t i = 0; i < kPerThread; ++i) {
      Request& r = reqs[t][i];
      if (i % 5 == 0) {
        r.PrepNoop();
      } else {
        r.PrepRead(f.fd(), bufs[t].data() + i * 512, 512,
                   ((t * kPerThread + i) % 512) * 512);
      }
      all.push_back(&r);
    }
  }
  testing::Reaped got;
  std::thread reaper(
      [&] { got = ReapAll(*engine_, all.size(), milliseconds(60000)); });
  std::vector<std::thread> submitters;
  for (size_t t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (size_t i = 0; i < kPerThread; i += 10) {
        std::vector<Request*> batch;
        for (size_t j = i; j < i + 10; ++j) batch.push_back(&reqs[t][j]);
        SubmitResult sr = engine_->Submit(batch);
        EXPECT_EQ(sr.accepted, batch.size()) << sr.status.ToString();
      }
    });
  }
  for (std::thread& s : submitters) s.join();
  reaper.join();
  ExpectExactlyOnce(got, all);
  for (size_t t = 0; t < kThreads; ++t) {
    for (size_t i = 0; i < kPerThread; ++i) {
      const Request& r = reqs[t][i];
      ASSERT_EQ(r.rval, r.op == Op::kNoop ? 0 : 512) << Describe(r);
    }
  }
}

TEST_P(ConformanceTest, ABlockedReaperWakesForACompletionWithoutIo) {
  if (testing::OneThreadPromised(GetParam())) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  Result<size_t> got = size_t{0};
  Request* out[1] = {nullptr};
  std::thread reaper([&] {
    got = engine_->Reap({out, 1}, 1, std::chrono::seconds(20));
  });
  std::this_thread::sleep_for(
      milliseconds(50));  // let it fall asleep in the engine
  Request n;
  n.PrepNoop();
  const auto start = std::chrono::steady_clock::now();
  SubmitAll({&n});
  reaper.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(*got, 1U);
  EXPECT_EQ(out[0], &n);
  // Woken by the completion, not by the 20 s timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

// ---- Buffered I/O that must wait, fixed buffers and files. ----

TEST_P(ConformanceTest, ABufferedReadThatMustWaitDoesNotBlockSubmit) {
  if (!engine_->GetCapabilities().async_buffered_io) {
    GTEST_SKIP() << engine_->Name()
                 << " runs buffered I/O inside the submission call (kernel AIO "
                    "would block in io_submit here until data arrives)";
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  char buf[16] = {};
  Request r;
  r.PrepRead(fds[0], buf, sizeof(buf), 0);
  SubmitAll({&r});  // returns although nothing can be read yet
  std::vector<Request*> out(1);
  Result<size_t> early = engine_->Reap(out, 1, milliseconds(50));
  ASSERT_TRUE(early.ok()) << early.status().ToString();
  EXPECT_EQ(*early, 0U) << "completed before there was data";
  ASSERT_EQ(::write(fds[1], "hello", 5), 5);
  testing::Reaped got = ReapAll(*engine_, 1);
  ExpectExactlyOnce(got, {&r});
  EXPECT_EQ(r.rval, 5) << Describe(r);
  EXPECT_EQ(std::string(buf, 5), "hello");
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_P(ConformanceTest, ABufferedWriteThatMustWaitDoesNotBlockSubmit) {
  if (!engine_->GetCapabilities().async_buffered_io) {
    GTEST_SKIP() << engine_->Name()
                 << " runs buffered I/O inside the submission call";
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  // Fill the pipe so that the next write has to wait for a reader.
  ASSERT_EQ(::fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
  std::vector<char> fill(1 << 16, 'f');
  size_t filled = 0;
  for (;;) {
    const ssize_t w = ::write(fds[1], fill.data(), fill.size());
    if (w <= 0) break;
    filled += static_cast<size_t>(w);
  }
  ASSERT_EQ(::fcntl(fds[1], F_SETFL, 0), 0);
  const std::string msg = "after the drain";
  Request w;
  w.PrepWrite(fds[1], msg.data(), msg.size(), 0);
  SubmitAll({&w});
  std::vector<Request*> out(1);
  Result<size_t> early = engine_->Reap(out, 1, milliseconds(50));
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(*early, 0U) << "a write into a full pipe completed";
  // Drain the pipe; the write then goes through.
  std::vector<char> sink(filled + msg.size());
  size_t drained = 0;
  ASSERT_EQ(::fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
  size_t reaped = 0;
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((drained < sink.size() || reaped == 0) &&
         std::chrono::steady_clock::now() < until) {
    const ssize_t n =
        ::read(fds[0], sink.data() + drained, sink.size() - drained);
    if (n > 0) drained += static_cast<size_t>(n);
    Result<size_t> p = engine_->Poll(out);
    if (p.ok()) reaped += *p;
  }
  EXPECT_EQ(reaped, 1U);
  ASSERT_EQ(drained, sink.size());
  EXPECT_EQ(std::string(sink.data() + filled, msg.size()), msg);
  EXPECT_EQ(w.rval, static_cast<int64_t>(msg.size())) << Describe(w);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST_P(ConformanceTest, FixedBuffersAndFilesCarryTheData) {
  Result<BufferPool> pool = BufferPool::Create(4, 8192, 4096);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  File f = ScratchFile(64 * 1024, 31);
  Status rb = engine_->RegisterBuffers(pool->iovecs());
  Status rf = engine_->RegisterFiles(std::vector<int>{f.fd()});
  if (!engine_->GetCapabilities().fixed_buffers) {
    // Requests still work; buf_index is ignored.
    EXPECT_TRUE(rb.Is(Errc::kUnsupported)) << rb.ToString();
    EXPECT_TRUE(rf.Is(Errc::kUnsupported)) << rf.ToString();
  } else {
    ASSERT_TRUE(rb.ok()) << rb.ToString();
    ASSERT_TRUE(rf.ok()) << rf.ToString();
  }
  std::vector<Request> reqs(4);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].PrepRead(f.fd(), pool->buffer(i), 8192, i * 8192);
    reqs[i].SetFixedBuffer(static_cast<int16_t>(i));
  }
  SubmitAll(Pointers(reqs));
  ExpectExactlyOnce(ReapAll(*engine_, reqs.size()), Pointers(reqs));
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].rval, 8192) << Describe(reqs[i]);
    EXPECT_EQ(FirstMismatch(pool->buffer(i), 8192, 31, i * 8192), -1);
  }
  // And a write from a fixed buffer.
  testing::FillPattern(pool->buffer(0), 8192, 77);
  Request w;
  w.PrepWrite(f.fd(), pool->buffer(0), 8192, 0);
  w.SetFixedBuffer(0);
  RunOne(w);
  ASSERT_EQ(w.rval, 8192) << Describe(w);
  std::vector<char> back(8192);
  ASSERT_EQ(::pread(f.fd(), back.data(), back.size(), 0), 8192);
  EXPECT_EQ(FirstMismatch(back.data(), back.size(), 77), -1);
}

TEST_P(ConformanceTest, RegisteringBuffersOverTheMemlockLimitSaysSo) {
  if (!engine_->GetCapabilities().fixed_buffers) {
    GTEST_SKIP() << engine_->Name() << " has no fixed buffers";
  }
  testing::ScopedFaults faults;  // as an unprivileged process would see it
  faults.state().uring_register_opcode = IORING_REGISTER_BUFFERS;
  faults.state().uring_register_errno = ENOMEM;
  Result<BufferPool> pool = BufferPool::Create(2, 4096, 4096);
  ASSERT_TRUE(pool.ok());
  Status s = engine_->RegisterBuffers(pool->iovecs());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.Errno(), ENOMEM);
  EXPECT_NE(s.ToString().find("RLIMIT_MEMLOCK"), std::string::npos)
      << s.ToString();
}

INSTANTIATE_TEST_SUITE_P(Engines, ConformanceTest,
                         ::testing::ValuesIn(testing::AllEngines()),
                         testing::EngineParamName);
INSTANTIATE_TEST_SUITE_P(Engines, FaultedConformanceTest,
                         ::testing::ValuesIn(testing::AllEngines()),
                         testing::EngineParamName);

}  // namespace
}  // namespace aiokit
