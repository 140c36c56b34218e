// Faults from the kernel, not from aiokit: every engine and the device layer
// on aiokit_faultfs (faultfs.cc), a FUSE file system whose reads, writes and
// fsyncs fail, come back short, run out of space or stall where a test says,
// reached through the page cache, FUSE's direct I/O or a loop device over the
// file. Each request completes exactly once, with the kernel's error where a
// fault was injected and the right bytes elsewhere; the device layer's Flush
// stays failed after an fsync EIO although the kernel's next fsync succeeds.
//
// Mounting needs root and /dev/fuse (and a loop device, for the loop tests):
// elsewhere every test is skipped with the reason.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/loop.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/status.h"
#include "engines.h"
#include "test_util.h"

extern char** environ;

namespace aiokit {
namespace {

using testing::FillPattern;
using testing::FirstMismatch;
using testing::ReapAll;

constexpr size_t kBlock = 4096;
constexpr size_t kBlocks = 64;
constexpr long kFuseMagic = 0x65735546;

// The mounted file system, shared by the tests of this binary.
class FaultFs {
 public:
  // Mounts it, or says why it cannot be mounted here (then ok() is false).
  FaultFs() {
    if (::geteuid() != 0) {
      why_ = "mounting FUSE needs root";
      return;
    }
    if (::access("/dev/fuse", R_OK | W_OK) != 0) {
      why_ = "/dev/fuse is not usable here";
      return;
    }
    const std::string base =
        testing::TestDir() + "/faultfs." + std::to_string(::getpid());
    backing_ = base + ".backing";
    mount_ = base + ".mnt";
    ::mkdir(backing_.c_str(), 0755);
    ::mkdir(mount_.c_str(), 0755);
    log_ = base + ".log";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    // Its output goes to the log too: it must not hold the test's pipes.
    posix_spawn_file_actions_adddup2(&fa, 2, 1);
    std::vector<std::string> args = {AIOKIT_FAULTFS, backing_, mount_, "-f"};
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int e =
        posix_spawn(&pid_, AIOKIT_FAULTFS, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (e != 0) {
      why_ = std::string("starting aiokit_faultfs: ") + std::strerror(e);
      pid_ = -1;
      return;
    }
    // Mounted when the directory's file system is FUSE; the daemon's exit
    // ends the wait (a container that refuses the mount), so this ends.
    for (;;) {
      struct statfs st;
      if (::statfs(mount_.c_str(), &st) == 0 &&
          static_cast<long>(st.f_type) == kFuseMagic) {
        break;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        std::ifstream in(log_);
        std::stringstream text;
        text << in.rdbuf();
        why_ = "aiokit_faultfs could not mount: " + text.str();
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ok_ = true;
  }

  ~FaultFs() {
    if (pid_ > 0) {
      (void)Control("clear");  // stalled requests go
      ::umount2(mount_.c_str(), MNT_DETACH);
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    ::rmdir(mount_.c_str());
    std::remove(log_.c_str());
    // The backing files are the tests' own; the directory goes with them.
    std::error_code ec;
    std::filesystem::remove_all(backing_, ec);
  }

  bool ok() const { return ok_; }
  const std::string& why() const { return why_; }
  std::string Path(const std::string& name) const {
    return mount_ + "/" + name;
  }

  // Sends fault commands (faultfs.cc's first comment lists them).
  bool Control(const std::string& commands) const {
    const int fd = ::open((mount_ + "/.faults").c_str(), O_WRONLY);
    if (fd < 0) return false;
    const ssize_t n = ::write(fd, commands.data(), commands.size());
    ::close(fd);
    return n == static_cast<ssize_t>(commands.size());
  }
  // The file system's counts ("stalled", "eio", ...).
  uint64_t Count(const std::string& what) const {
    std::ifstream in(mount_ + "/.faults");
    std::string word;
    uint64_t n = 0;
    while (in >> word >> n) {
      if (word == what) return n;
    }
    return 0;
  }

 private:
  bool ok_ = false;
  std::string why_, backing_, mount_, log_;
  pid_t pid_ = -1;
};

FaultFs& Fs() {
  static FaultFs fs;
  return fs;
}

#define SKIP_WITHOUT_FAULTFS() \
  if (!Fs().ok()) GTEST_SKIP() << "no fault file system: " << Fs().why()

// A loop device over a file of the fault file system: a block device whose
// requests reach the file system through the loop driver, faults included.
class LoopDevice {
 public:
  // Attaches `file`; when the kernel refuses, ok() is false and why() says
  // what was refused.
  explicit LoopDevice(const std::string& file) {
    const int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) {
      why_ = std::string("/dev/loop-control: ") + std::strerror(errno);
      return;
    }
    const int backing = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (backing < 0) {
      why_ = file + ": " + std::strerror(errno);
      ::close(ctl);
      return;
    }
    // Another process may take the free device first: then ask again.
    for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
      const int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
      if (n < 0) {
        why_ = std::string("LOOP_CTL_GET_FREE: ") + std::strerror(errno);
        break;
      }
      path_ = "/dev/loop" + std::to_string(n);
      const int fd = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) {
        why_ = path_ + ": " + std::strerror(errno);
        break;
      }
      loop_config cfg{};
      cfg.fd = static_cast<uint32_t>(backing);
      if (::ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
        fd_ = fd;
      } else {
        why_ = "LOOP_CONFIGURE " + path_ + " on " + file + ": " +
               std::strerror(errno);
        ::close(fd);
        if (errno != EBUSY) break;
      }
    }
    ::close(backing);  // the loop device holds its own reference
    ::close(ctl);
  }
  ~LoopDevice() {
    if (fd_ >= 0) {
      ::ioctl(fd_, LOOP_CLR_FD);
      ::close(fd_);
    }
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;

  bool ok() const { return fd_ >= 0; }
  const std::string& why() const { return why_; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_, why_;
};

// A file of kBlocks blocks of the pattern `seed` on the file system, written
// without faults.
std::string MakeFile(const std::string& name, uint64_t seed) {
  EXPECT_TRUE(Fs().Control("clear"));
  std::string path = Fs().Path(name);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  EXPECT_GE(fd, 0) << path << ": " << std::strerror(errno);
  std::string data(kBlock * kBlocks, '\0');
  FillPattern(data.data(), data.size(), seed);
  EXPECT_EQ(::pwrite(fd, data.data(), data.size(), 0),
            static_cast<ssize_t>(data.size()));
  ::close(fd);
  return path;
}

// How a test reaches the file: through the page cache, with O_DIRECT (FUSE's
// direct I/O), or with O_DIRECT on a loop device over it.
enum class Via { kBuffered, kDirect, kLoop };

struct Param {
  std::string engine;
  Via via;
  bool direct() const { return via != Via::kBuffered; }
  const char* suffix() const {
    return via == Via::kBuffered ? "buffered"
           : via == Via::kDirect ? "direct"
                                 : "loop";
  }
};

void PrintTo(const Param& p, std::ostream* os) {
  *os << p.engine << " " << p.suffix();
}

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return testing::ParamName(info.param.engine) + "_" + info.param.suffix();
}

std::vector<Param> Params() {
  std::vector<Param> out;
  for (const std::string& e : testing::PlainEngines()) {
    for (const Via v : {Via::kBuffered, Via::kDirect, Via::kLoop}) {
      out.push_back({e, v});
    }
  }
  return out;
}

// Declares `var`, the path MakeTarget(prefix, seed) returns, or skips the
// test when the kernel refuses a loop device.
#define MAKE_TARGET_OR_SKIP(var, prefix, seed)      \
  const std::string var = MakeTarget(prefix, seed); \
  if ((var).empty()) GTEST_SKIP() << why()

class FaultFsEngineTest : public ::testing::TestWithParam<Param> {
 protected:
  // The test's file, named after the test and its parameter, of kBlocks
  // blocks of the pattern `seed`; faults apply to it alone. Returns the path
  // the test opens: the file, or a loop device over it (then attached until
  // the test ends). When the kernel refuses a loop device, returns "" and
  // why() says why (the test skips).
  std::string MakeTarget(const std::string& prefix, uint64_t seed) {
    name_ = prefix + "-" + testing::ParamName(GetParam().engine) + "-" +
            GetParam().suffix();
    std::string path = MakeFile(name_, seed);
    EXPECT_TRUE(Fs().Control("file " + name_));
    if (GetParam().via != Via::kLoop) return path;
    loop_ = std::make_unique<LoopDevice>(path);
    if (!loop_->ok()) {
      why_ = "no loop device over the fault file system: " + loop_->why();
      return "";
    }
    return loop_->path();
  }
  const std::string& why() const { return why_; }
  // The file's name in fault commands (`file NAME`).
  const std::string& name() const { return name_; }
  // The file the last MakeTarget made, on the fault file system.
  std::string file() const { return Fs().Path(name_); }

  // The distance in blocks between a test's requests: 2 on a loop device,
  // where the block layer merges adjacent requests into one that succeeds or
  // fails as a whole, so that each fault reaches one request; 1 elsewhere.
  size_t Stride() const { return GetParam().via == Via::kLoop ? 2 : 1; }

  // Opens `path` for the parameter's I/O.
  File OpenFile(const std::string& path) {
    Result<File> f =
        File::Open(path, O_RDWR | (GetParam().direct() ? O_DIRECT : 0), 0644);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? std::move(*f) : File();
  }

  // Submits every request (the engine's queue holds them all).
  void SubmitAll(Engine& e, std::vector<Request>& reqs) {
    std::vector<Request*> p = testing::Pointers(reqs);
    size_t off = 0;
    while (off < p.size()) {
      SubmitResult sr =
          e.Submit(std::span<Request* const>(p.data() + off, p.size() - off));
      off += sr.accepted;
      ASSERT_TRUE(sr.status.ok() || sr.accepted != 0) << sr.status.ToString();
    }
  }

 private:
  std::string name_, why_;
  std::unique_ptr<LoopDevice> loop_;
};

// Reads of every block (every other on a loop device): the one in an EIO
// range fails with EIO, the rest read the pattern; with FUSE's direct I/O a
// short read comes back short.
TEST_P(FaultFsEngineTest, ReadFaultsReachTheirRequestsAlone) {
  SKIP_WITHOUT_FAULTFS();
  EngineOptions o;
  o.queue_depth = kBlocks;
  AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam().engine, o);
  MAKE_TARGET_OR_SKIP(path, "read", 7);
  File f = OpenFile(path);
  ASSERT_GE(f.fd(), 0);
  constexpr size_t kEio = 6, kShort = 10;
  // A short read reaches the request with FUSE's direct I/O only: the page
  // cache (buffered, and the loop driver's reads of the file) starts its
  // requests where readahead chooses and takes a short one as end of file.
  const bool short_read = GetParam().via == Via::kDirect;
  ASSERT_TRUE(Fs().Control(
      "eio read " + std::to_string(kEio * kBlock) + " 4096\n" +
      (short_read ? "short " + std::to_string(kShort * kBlock) + " 4096\n"
                  : "")));
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(kBlock * kBlocks, 4096);
  ASSERT_TRUE(buf.ok());
  std::vector<Request> reqs(kBlocks / Stride());
  for (size_t i = 0; i < reqs.size(); ++i) {
    const size_t b = i * Stride();
    reqs[i].PrepRead(f, buf->data() + b * kBlock, kBlock, b * kBlock);
  }
  const uint64_t eio_before = Fs().Count("eio");
  SubmitAll(*engine, reqs);
  const testing::Reaped got = ReapAll(*engine, reqs.size());
  testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
  for (size_t i = 0; i < reqs.size(); ++i) {
    const size_t b = i * Stride();
    const Request& r = reqs[i];
    const char* data = buf->data() + b * kBlock;
    if (b == kEio) {
      EXPECT_EQ(r.rval, -EIO) << Describe(r);
    } else if (b == kShort && short_read) {
      EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock / 2)) << Describe(r);
      EXPECT_EQ(FirstMismatch(data, kBlock / 2, 7, b * kBlock), -1);
    } else {
      ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
      EXPECT_EQ(FirstMismatch(data, kBlock, 7, b * kBlock), -1)
          << "block " << b;
    }
  }
  EXPECT_GE(Fs().Count("eio"), eio_before + 1);
  EXPECT_TRUE(Fs().Control("clear"));
}

// Writes of every block (every other on a loop device): the one in an EIO
// range fails with EIO; once the space runs out every later write fails with
// ENOSPC; what succeeded is on the file, and nothing else changed there.
TEST_P(FaultFsEngineTest, WriteFaultsReachTheirRequestsAlone) {
  SKIP_WITHOUT_FAULTFS();
  EngineOptions o;
  o.queue_depth = kBlocks;
  AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam().engine, o);
  MAKE_TARGET_OR_SKIP(path, "write", 1);
  File f = OpenFile(path);
  ASSERT_GE(f.fd(), 0);
  // 20 blocks of space (block 2 fails first and uses none).
  constexpr size_t kEio = 2, kSpace = 20;
  ASSERT_TRUE(Fs().Control("eio write " + std::to_string(kEio * kBlock) +
                           " 4096\nenospc_after " +
                           std::to_string(kSpace * kBlock)));
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(kBlock * kBlocks, 4096);
  ASSERT_TRUE(buf.ok());
  FillPattern(buf->data(), kBlock * kBlocks, 2);
  std::vector<Request> reqs(kBlocks / Stride());
  for (size_t i = 0; i < reqs.size(); ++i) {
    const size_t b = i * Stride();
    reqs[i].PrepWrite(f, buf->data() + b * kBlock, kBlock, b * kBlock);
  }
  SubmitAll(*engine, reqs);
  const testing::Reaped got = ReapAll(*engine, reqs.size());
  testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
  ASSERT_TRUE(Fs().Control("clear"));
  size_t written = 0, enospc = 0;
  std::string now(kBlock, '\0');
  const int rfd = ::open(file().c_str(), O_RDONLY);
  ASSERT_GE(rfd, 0);
  for (size_t b = 0; b < kBlocks; ++b) {
    ASSERT_EQ(::pread(rfd, now.data(), kBlock, static_cast<off_t>(b * kBlock)),
              static_cast<ssize_t>(kBlock));
    bool new_bytes = false;
    std::string what = "not written";
    if (b % Stride() == 0) {
      const Request& r = reqs[b / Stride()];
      what = Describe(r);
      if (b == kEio) {
        EXPECT_EQ(r.rval, -EIO) << what;
      } else if (r.rval == -ENOSPC) {
        ++enospc;
      } else {
        ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << what;
        ++written;
        new_bytes = true;
      }
    }
    // A block that was written holds the new bytes; any other, the old.
    EXPECT_EQ(FirstMismatch(now.data(), kBlock, new_bytes ? 2 : 1, b * kBlock),
              -1)
        << "block " << b << ": " << what;
  }
  ::close(rfd);
  EXPECT_EQ(written, kSpace);
  EXPECT_EQ(enospc, reqs.size() - kSpace - 1);
}

// An fsync that fails comes back with EIO; the kernel's next one succeeds
// (the writeback error was reported once).
TEST_P(FaultFsEngineTest, FsyncErrorsReachTheRequest) {
  SKIP_WITHOUT_FAULTFS();
  AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam().engine, EngineOptions{});
  MAKE_TARGET_OR_SKIP(path, "fsync", 3);
  File f = OpenFile(path);
  ASSERT_GE(f.fd(), 0);
  ASSERT_TRUE(Fs().Control("fsync_eio 1"));
  for (const int64_t want : {int64_t{-EIO}, int64_t{0}}) {
    std::vector<Request> reqs(1);
    reqs[0].PrepFsync(f.fd());
    SubmitAll(*engine, reqs);
    const testing::Reaped got = ReapAll(*engine, 1);
    testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
    EXPECT_EQ(reqs[0].rval, want) << Describe(reqs[0]);
  }
  EXPECT_TRUE(Fs().Control("clear"));
}

INSTANTIATE_TEST_SUITE_P(Engines, FaultFsEngineTest,
                         ::testing::ValuesIn(Params()), ParamName);

// A stalled read holds only itself: with O_DIRECT on the engines whose
// submission does not wait for the request (io_uring, threads) the others
// complete first; on every engine all come back once, with the right bytes,
// after the release.
TEST_P(FaultFsEngineTest, AStalledRequestHoldsOnlyItself) {
  SKIP_WITHOUT_FAULTFS();
  EngineOptions o;
  o.queue_depth = 8;
  AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam().engine, o);
  MAKE_TARGET_OR_SKIP(path, "stall", 4);
  File f = OpenFile(path);
  ASSERT_GE(f.fd(), 0);
  // Requests apart from the stalled one complete first where neither the
  // submission waits for it (io_uring, threads) nor the page cache ties
  // them to it (a buffered read's readahead takes the stalled page's
  // neighbours with it, and their readers wait on its lock): O_DIRECT.
  const bool async = (engine->kind() == EngineKind::kIoUring ||
                      engine->kind() == EngineKind::kThreads) &&
                     GetParam().via == Via::kDirect;
  const uint64_t stalled_before = Fs().Count("stalled");
  ASSERT_TRUE(Fs().Control("stall 20480 4096"));
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(8 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  std::vector<Request> reqs(8);
  for (size_t i = 0; i < 8; ++i) {
    reqs[i].PrepRead(f, buf->data() + i * kBlock, kBlock, i * kBlock);
  }
  // The release comes once the stall is seen and, where submission does not
  // wait for it, once the other seven are back (a bound of a minute only
  // guards the test's end if the stall is never seen: the checks below fail
  // then).
  std::atomic<size_t> back{0};
  std::thread releaser([&] {
    const auto give_up =
        std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (std::chrono::steady_clock::now() < give_up &&
           (Fs().Count("stalled") == stalled_before ||
            (async && back.load() < 7))) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    Fs().Control("release");
  });
  SubmitAll(*engine, reqs);
  testing::Reaped got;
  std::vector<Request*> out(8);
  while (got.order.size() < 8) {
    Result<size_t> r = engine->Reap(out, 1, std::chrono::minutes(2));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_NE(*r, 0U) << "nothing came back in two minutes";
    for (size_t i = 0; i < *r; ++i) {
      got.order.push_back(out[i]);
      ++got.times[out[i]];
    }
    back.store(got.order.size());
  }
  releaser.join();
  testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
  EXPECT_EQ(Fs().Count("stalled"), stalled_before + 1);
  if (async) {
    EXPECT_EQ(got.order.back(), &reqs[5]);
  }
  for (size_t i = 0; i < 8; ++i) {
    ASSERT_EQ(reqs[i].rval, static_cast<int64_t>(kBlock)) << Describe(reqs[i]);
    EXPECT_EQ(FirstMismatch(buf->data() + i * kBlock, kBlock, 4, i * kBlock),
              -1);
  }
  EXPECT_TRUE(Fs().Control("clear"));
}

// The device layer's request deadline against a read the kernel holds: the
// context reports it timed out while it is held, and once the file system
// lets it go the late completion is accounted for (nothing stays pinned) and
// the device reads the block again. Where the submission itself waits for
// the held request (linux-aio and sync on FUSE) no deadline can pass first.
TEST_P(FaultFsEngineTest, DeviceDeadlineOnAStalledRead) {
  SKIP_WITHOUT_FAULTFS();
  const std::string engine_name = testing::EngineName(GetParam().engine);
  if (engine_name == "sync" ||
      (engine_name == "linux-aio" && GetParam().via != Via::kLoop)) {
    GTEST_SKIP() << engine_name
                 << " waits for a held FUSE request inside its submission";
  }
  MAKE_TARGET_OR_SKIP(path, "deadline", 6);
  DeviceOptions o;
  Result<EngineKind> kind = ParseEngineKind(engine_name);
  ASSERT_TRUE(kind.ok());
  o.engine.kind = *kind;
  o.direct = GetParam().direct();
  o.poll_interval = std::chrono::milliseconds(10);
  Result<std::unique_ptr<Device>> opened = Device::Open(path, o);
  if (!opened.ok() && testing::EngineRefusedHere(opened.status())) {
    GTEST_SKIP() << GetParam().engine
                 << " refused here: " << opened.status().ToString();
  }
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Device& dev = **opened;
  const uint64_t stalled_before = Fs().Count("stalled");
  ASSERT_TRUE(Fs().Control("stall 65536 4096"));
  Result<Buffer> b = dev.AllocateBuffer(kBlock);
  ASSERT_TRUE(b.ok());
  IoContext ioc;
  ioc.set_request_timeout(std::chrono::milliseconds(100));
  ASSERT_TRUE(dev.AioRead(65536, *b, &ioc).ok());
  ASSERT_TRUE(dev.Submit(&ioc).ok());
  const Status s = ioc.Wait();
  EXPECT_TRUE(s.Is(Errc::kTimedOut)) << s.ToString();
  EXPECT_EQ(dev.Stats().timed_out, 1U);
  EXPECT_EQ(Fs().Count("stalled"), stalled_before + 1);
  ASSERT_TRUE(Fs().Control("release"));
  // The late completion comes back to the device (a minute bounds the wait
  // only if it never does: the check fails then).
  const auto give_up =
      std::chrono::steady_clock::now() + std::chrono::minutes(1);
  while (dev.Stats().pinned != 0 &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(dev.Stats().pinned, 0U);
  Result<Buffer> again = dev.AllocateBuffer(kBlock);
  ASSERT_TRUE(again.ok());
  ASSERT_TRUE(dev.ReadExactly(65536, *again).ok());
  EXPECT_EQ(FirstMismatch(again->data(), kBlock, 6, 65536), -1);
  EXPECT_TRUE(dev.Close().ok());
  EXPECT_TRUE(Fs().Control("clear"));
}

// The device layer on the file system: an fdatasync that fails makes Flush
// fail, and every Flush after it, although the kernel's next fsync of the
// file succeeds (it reported the lost writeback once).
TEST_P(FaultFsEngineTest, DeviceFlushStaysFailedAfterAnFsyncError) {
  SKIP_WITHOUT_FAULTFS();
  MAKE_TARGET_OR_SKIP(path, "flush", 5);
  DeviceOptions o;
  Result<EngineKind> kind =
      ParseEngineKind(testing::EngineName(GetParam().engine));
  ASSERT_TRUE(kind.ok());
  o.engine.kind = *kind;
  o.direct = GetParam().direct();
  Result<std::unique_ptr<Device>> dev = Device::Open(path, o);
  if (!dev.ok() && testing::EngineRefusedHere(dev.status())) {
    GTEST_SKIP() << GetParam().engine
                 << " refused here: " << dev.status().ToString();
  }
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  Result<Buffer> b = (*dev)->AllocateBuffer(kBlock);
  ASSERT_TRUE(b.ok());
  FillPattern(b->data(), kBlock, 9);
  ASSERT_TRUE((*dev)->Write(0, *b).ok());
  ASSERT_TRUE(Fs().Control("fsync_eio 1"));
  const Status first = (*dev)->Flush();
  EXPECT_FALSE(first.ok());
  EXPECT_EQ(first.Errno(), EIO) << first.ToString();
  // The kernel's next fsync of the file succeeds ...
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::fsync(fd), 0);
  ::close(fd);
  // ... the device's Flush does not, with or without new writes.
  const Status again = (*dev)->Flush();
  EXPECT_EQ(again.Errno(), EIO) << again.ToString();
  ASSERT_TRUE((*dev)->Write(kBlock, *b).ok());
  EXPECT_EQ((*dev)->Flush().Errno(), EIO);
  EXPECT_TRUE(Fs().Control("clear"));
}

}  // namespace
}  // namespace aiokit
