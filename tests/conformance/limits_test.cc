// Conformance, limits and bad input: queue depths, the kernel's errno (or the
// library's documented error) for invalid requests, the kernel's transfer and
// iovec limits, a full file system and the memlock limit.

#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "conformance/conformance.h"
#include "delivery.h"
#include "sys/syscalls.h"
#include "test_util.h"

namespace aiokit::conformance {
namespace {

using testing::ExpectExactlyOnce;
using testing::FirstMismatch;
using testing::Pointers;
using testing::ReapAll;
using testing::ScratchFile;

// ---- Queue depth. ----

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

// ---- Invalid input: the kernel's errno, or the library's documented
// error. ----

TEST_P(ConformanceTest,
       ARefusedRequestCompletesWithItsErrorAndTheRestStillRun) {
  File f = ScratchFile(16384, 24);
  std::vector<char> a(4096), c(4096);
  char b[16];
  char d[16] = {};  // io_submit's data, although the kernel refuses the fd
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

TEST_P(ConformanceTest, SubmittingARequestStillInFlightIsRefused) {
  // In flight until it is reaped (or, with callbacks, until it completes): a
  // read from an empty pipe where that does not block Submit, else a noop
  // (kept for the reaper; the threads engine would deliver it at once).
  const bool in_submit = !engine_->GetCapabilities().async_buffered_io;
  if (in_submit && testing::DeliveryMode(GetParam()) == "thread") {
    // A noop is all that stays in flight without blocking Submit here, and a
    // completion thread hands it back at once: nothing is reliably in flight.
    GTEST_SKIP() << GetParam()
                 << ": no request stays in flight (the completion thread "
                    "delivers a noop at once)";
  }
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  char byte = 0;
  Request r, other;
  if (in_submit) {
    r.PrepNoop();
  } else {
    r.PrepRead(p[0], &byte, 1, 0);
  }
  other.PrepNoop();
  SubmitAll({&r});
  SubmitResult sr = engine_->Submit(std::vector<Request*>{&other, &r});
  EXPECT_EQ(sr.accepted, 1U);
  EXPECT_TRUE(sr.status.Is(Errc::kInvalidArgument)) << sr.status.ToString();
  EXPECT_NE(sr.status.ToString().find("before it was reaped"),
            std::string::npos);
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&r, &other});
  // Reaped, it may go again.
  r.PrepNoop();
  SubmitAll({&r});
  ExpectExactlyOnce(ReapAll(*engine_, 1), {&r});
  ::close(p[0]);
  ::close(p[1]);
}

// ---- The kernel's limits: transfer size, iovecs, space, memlock. ----

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

}  // namespace
}  // namespace aiokit::conformance
