// Conformance, I/O: every op with its data checked byte for byte, per-request
// flags and I/O priority, buffered I/O that must wait, fixed buffers and files.

#include <fcntl.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
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

// ---- Per-request flags and priority. ----

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

}  // namespace
}  // namespace aiokit::conformance
