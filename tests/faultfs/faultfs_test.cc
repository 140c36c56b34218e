// Faults from the kernel, not from aiokit: every engine and the device layer
// on aiokit_faultfs (faultfs.cc), a FUSE file system whose reads, writes and
// fsyncs fail, come back short, run out of space or stall where a test says,
// reached through the page cache, FUSE's direct I/O or a loop device over the
// file. Each request completes exactly once, with the kernel's error where a
// fault was injected and the right bytes elsewhere; the device layer's Flush
// stays failed after an fsync EIO although the kernel's next fsync succeeds.
// The append-log example's group commits survive every crash image its write
// log gives (writelog.h).
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
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/status.h"
#include "device_append_log.h"
#include "engines.h"
#include "test_util.h"
#include "writelog.h"

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

#ifdef AIOKIT_APPEND_LOG

// Runs a program of the project; its exit status (as waitpid reports it) and
// standard output. Its standard error goes to the test's.
struct Ran {
  int status = -1;
  std::string out;
};
Ran RunProgram(const std::vector<std::string>& args) {
  std::string command;
  for (const std::string& a : args) command += "'" + a + "' ";
  Ran r;
  std::FILE* p = ::popen(command.c_str(), "re");
  if (p == nullptr) return r;
  char chunk[4096];
  for (size_t n; (n = std::fread(chunk, 1, sizeof(chunk), p)) != 0;) {
    r.out.append(chunk, n);
  }
  r.status = ::pclose(p);
  return r;
}

// The records a log image holds, as the example prints them ("0-41 43").
std::string Ranges(const std::vector<char>& valid) {
  std::string out;
  for (size_t i = 0; i < valid.size();) {
    if (valid[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j + 1 < valid.size() && valid[j + 1] != 0) ++j;
    out += " " + std::to_string(i);
    if (j > i) out += "-" + std::to_string(j);
    i = j + 1;
  }
  return out;
}

// What checking every crash image of a run found.
struct CrashReport {
  uint64_t points = 0, images = 0, acked = 0, most_in_flight = 0;
  uint64_t failures = 0;
  std::string first_failure;
  uint64_t sampled = 0;  // images also recovered by the example itself
};

// Checks every crash image of the log file `file` (slots of
// append_log::kRecord bytes) that writelog::Subsets picks: recovery finds
// every record acknowledged before the crash point (the sequence numbers
// the ack file `acks` held by then) and no record that was not written
// before it. Every `sample_every`-th image is also written to `scratch` and
// recovered by the example through the device layer, which must find the
// same records.
CrashReport CheckCrashImages(const std::vector<writelog::Entry>& log,
                             const std::string& file, const std::string& acks,
                             uint64_t slots, const std::string& engine,
                             const std::string& scratch,
                             uint64_t sample_every) {
  using append_log::kRecord;
  CrashReport rep;
  const auto fail = [&rep](const std::string& what) {
    if (rep.failures++ == 0) rep.first_failure = what;
  };
  writelog::CrashWalk walk(&log, file, "");
  // Recovery of the durable image, slot by slot, kept as it changes.
  std::vector<char> durable_valid(slots, 0), acked(slots, 0), written(slots, 0);
  std::vector<uint64_t> acked_list;
  size_t seen = 0;  // log entries folded into acked and written
  const auto parse = [&](const std::string& image, uint64_t slot) {
    if ((slot + 1) * kRecord > image.size()) return false;
    return append_log::ParseSlot(image.data() + slot * kRecord, slot)
        .has_value();
  };
  std::mt19937_64 rng(7);
  while (walk.Next()) {
    ++rep.points;
    for (const auto& [off, len] : *walk.changed()) {
      for (uint64_t s = off / kRecord; s < slots && s * kRecord < off + len;
           ++s) {
        durable_valid[s] = parse(walk.durable(), s) ? 1 : 0;
      }
    }
    walk.changed()->clear();
    for (; seen < walk.point(); ++seen) {
      const writelog::Entry& e = log[seen];
      if (e.type != writelog::Type::kWrite) continue;
      if (e.path == acks) {
        for (size_t i = 0; i + 8 <= e.data.size(); i += 8) {
          uint64_t seq = 0;
          std::memcpy(&seq, e.data.data() + i, 8);
          if (seq >= slots) {
            fail("ack of record " + std::to_string(seq) + " beyond the log");
            continue;
          }
          acked[seq] = 1;
          acked_list.push_back(seq);
        }
      } else if (e.path == file) {
        for (uint64_t s = (e.offset + kRecord - 1) / kRecord;
             (s + 1) * kRecord <= e.offset + e.length && s < slots; ++s) {
          if (append_log::ParseSlot(e.data.data() + (s * kRecord - e.offset),
                                    s)) {
            written[s] = 1;
          }
        }
      }
    }
    const auto& flying = walk.in_flight();
    rep.most_in_flight = std::max<uint64_t>(rep.most_in_flight, flying.size());
    for (const std::vector<bool>& take :
         writelog::Subsets(flying.size(), 2, rng)) {
      ++rep.images;
      // The slots the chosen in-flight entries touch, evaluated on the
      // image; every other slot is as in the durable image.
      std::map<uint64_t, std::string> touched;
      for (size_t i = 0; i < flying.size(); ++i) {
        if (!take[i]) continue;
        const writelog::Entry& e = *flying[i];
        // Writes, zeroed ranges and truncation change bytes, [from, end).
        uint64_t from = e.offset, end = e.offset + e.length;
        if (e.type == writelog::Type::kTruncate) {
          from = e.length;
          end = slots * kRecord;
        } else if (e.type != writelog::Type::kWrite &&
                   e.type != writelog::Type::kZero) {
          continue;
        }
        for (uint64_t s = from / kRecord; s < slots && s * kRecord < end; ++s) {
          auto [it, fresh] = touched.try_emplace(s);
          std::string& slot = it->second;
          if (fresh) {
            slot.assign(kRecord, '\0');
            if (walk.durable().size() > s * kRecord) {
              walk.durable().copy(slot.data(), kRecord, s * kRecord);
            }
          }
          const uint64_t a = std::max(from, s * kRecord);
          const uint64_t b = std::min(end, (s + 1) * kRecord);
          if (e.type == writelog::Type::kWrite) {
            slot.replace(a - s * kRecord, b - a, e.data, a - e.offset, b - a);
          } else {
            std::fill_n(slot.begin() + static_cast<long>(a - s * kRecord),
                        b - a, '\0');
          }
        }
      }
      std::vector<char> valid = durable_valid;
      for (const auto& [s, bytes] : touched) {
        valid[s] = append_log::ParseSlot(bytes.data(), s) ? 1 : 0;
      }
      const std::string where = "crash point " + std::to_string(walk.point()) +
                                " (" + std::to_string(flying.size()) +
                                " writes in flight), image " +
                                std::to_string(rep.images);
      for (const uint64_t seq : acked_list) {
        if (valid[seq] == 0) {
          fail(where + ": acknowledged record " + std::to_string(seq) +
               " is not recovered");
          break;
        }
      }
      for (uint64_t s = 0; s < slots; ++s) {
        if (valid[s] != 0 && written[s] == 0) {
          fail(where + ": recovered record " + std::to_string(s) +
               " that was never written");
          break;
        }
      }
      if (sample_every != 0 && rep.images % sample_every == 0) {
        // The same image recovered by the example, through the device layer.
        const std::string image = walk.Image(take);
        std::ofstream out(scratch, std::ios::binary | std::ios::trunc);
        out.write(image.data(), static_cast<std::streamsize>(image.size()));
        out.close();
        const Ran r = RunProgram(
            {AIOKIT_APPEND_LOG, "--recover=" + scratch, "--engine=" + engine});
        std::vector<char> in_image(
            valid.begin(), valid.begin() + static_cast<long>(std::min<uint64_t>(
                                               slots, image.size() / kRecord)));
        const std::string want =
            "recovered " +
            std::to_string(std::count(in_image.begin(), in_image.end(), 1)) +
            " records:" + Ranges(in_image) + "\n";
        if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 ||
            r.out != want) {
          fail(where + ": the example recovered \"" + r.out.substr(0, 200) +
               "\", the check \"" + want.substr(0, 200) + "\"");
        }
        ++rep.sampled;
      }
    }
  }
  rep.acked = acked_list.size();
  return rep;
}

class FaultFsCrashTest : public ::testing::TestWithParam<std::string> {
 protected:
  static constexpr uint64_t kLogBytes = 16 << 20;

  // aiokit_crashimg on the same log writes the images it says it wrote, none
  // longer than the log file (the first are shorter: its size is not
  // durable before the first flush), and the example's recovery reads each.
  void CheckCrashImageTool(const std::string& wlog, const std::string& file) {
    const std::string dir = wlog + ".images";
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0)
        << dir << ": " << std::strerror(errno);
    const Ran ran = RunProgram({AIOKIT_CRASHIMG, wlog, file, dir, "--limit=6"});
    EXPECT_TRUE(WIFEXITED(ran.status) && WEXITSTATUS(ran.status) == 0);
    EXPECT_NE(ran.out.find(", 6 images, "), std::string::npos) << ran.out;
    size_t images = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      ++images;
      EXPECT_LE(e.file_size(), kLogBytes) << e.path();
      const Ran rec =
          RunProgram({AIOKIT_APPEND_LOG, "--recover=" + e.path().string()});
      EXPECT_TRUE(WIFEXITED(rec.status) && WEXITSTATUS(rec.status) == 0);
      EXPECT_EQ(rec.out.rfind("recovered ", 0), 0U) << rec.out;
    }
    EXPECT_EQ(images, 6U);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  // Runs the append-log example on the fault file system with the write
  // log on, then checks every crash image. `unsafe` acknowledges records
  // without a flush.
  void RunAndCheck(bool unsafe, CrashReport* rep, uint64_t* records) {
    const std::string engine = testing::EngineName(GetParam());
    const std::string tag = std::string(unsafe ? "unsafe-" : "crash-") +
                            testing::ParamName(GetParam());
    const std::string wlog = testing::TestDir() + "/" + tag + "." +
                             std::to_string(::getpid()) + ".wlog";
    const std::string scratch = wlog + ".img";
    ASSERT_TRUE(Fs().Control("clear\nlog " + wlog));
    *records = unsafe ? 200 : 4000;
    const Ran ran =
        RunProgram({AIOKIT_APPEND_LOG, Fs().Path(""), "--engine=" + engine,
                    "--writers=4", "--depth=2", "--seconds=600", "--log-mib=16",
                    "--data-mib=1", "--records=" + std::to_string(*records),
                    "--log-file=" + Fs().Path(tag + ".log"),
                    "--ack-file=" + Fs().Path(tag + ".acks"),
                    unsafe ? "--unsafe-ack" : "--depth=2"});
    ASSERT_TRUE(Fs().Control("log_stop"));
    if (WIFEXITED(ran.status) && WEXITSTATUS(ran.status) == 77) {
      std::remove(wlog.c_str());
      GTEST_SKIP() << GetParam() << " refused here (the example says why)";
    }
    ASSERT_TRUE(WIFEXITED(ran.status) && WEXITSTATUS(ran.status) == 0)
        << "the example failed: " << ran.out;
    std::vector<writelog::Entry> log;
    std::string error;
    ASSERT_TRUE(writelog::Load(wlog, &log, &error)) << error;
    *rep = CheckCrashImages(log, "/" + tag + ".log", "/" + tag + ".acks",
                            kLogBytes / append_log::kRecord, engine, scratch,
                            unsafe ? 1 : 500);
    if (!unsafe) CheckCrashImageTool(wlog, "/" + tag + ".log");
    std::remove(wlog.c_str());
    std::remove(scratch.c_str());
    std::remove(Fs().Path(tag + ".log").c_str());
    std::remove(Fs().Path(tag + ".acks").c_str());
    std::printf(
        "%s: %llu acknowledged records, %llu crash points, %llu images "
        "checked (%llu also by the example's recovery), at most %llu writes "
        "in flight; %llu failed\n",
        tag.c_str(), static_cast<unsigned long long>(rep->acked),
        static_cast<unsigned long long>(rep->points),
        static_cast<unsigned long long>(rep->images),
        static_cast<unsigned long long>(rep->sampled),
        static_cast<unsigned long long>(rep->most_in_flight),
        static_cast<unsigned long long>(rep->failures));
  }
};

// Thousands of group commits of the append-log example on the device layer,
// and every crash image of them (writelog.h): recovery finds every
// acknowledged record intact and no record that was never written.
TEST_P(FaultFsCrashTest, EveryCrashImageHoldsEveryAcknowledgedRecord) {
  SKIP_WITHOUT_FAULTFS();
  CrashReport rep;
  uint64_t records = 0;
  RunAndCheck(false, &rep, &records);
  if (IsSkipped() || HasFatalFailure()) return;
  EXPECT_EQ(rep.failures, 0U) << rep.first_failure;
  EXPECT_EQ(rep.acked, records);
  EXPECT_GE(rep.points, 100U);  // group commits: one flush per point
  EXPECT_GT(rep.most_in_flight, 0U);
  EXPECT_GT(rep.sampled, 0U);
  RecordProperty("crash_images", std::to_string(rep.images));
}

// The check can fail: acknowledging a record when its write completes,
// without a flush, loses acknowledged records in some crash image.
TEST_P(FaultFsCrashTest, AcknowledgingBeforeAFlushIsCaught) {
  SKIP_WITHOUT_FAULTFS();
  CrashReport rep;
  uint64_t records = 0;
  RunAndCheck(true, &rep, &records);
  if (IsSkipped() || HasFatalFailure()) return;
  EXPECT_GT(rep.failures, 0U);
  EXPECT_NE(rep.first_failure.find("is not recovered"), std::string::npos)
      << rep.first_failure;
}

INSTANTIATE_TEST_SUITE_P(Engines, FaultFsCrashTest,
                         ::testing::ValuesIn(testing::PlainEngines()),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           return testing::ParamName(i.param);
                         });

#endif  // AIOKIT_APPEND_LOG

}  // namespace
}  // namespace aiokit
