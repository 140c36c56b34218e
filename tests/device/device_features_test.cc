// The device layer's features beside reads and writes: discard (files and a
// loop block device), write hints (and their refusal), atomic writes (XFS on
// a loop device), Preallocate, the buffer pool, and reaping by the caller
// through NotifyFd and epoll.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/device.h"
#include "device_util.h"
#include "sys/syscalls.h"

namespace aiokit::testing {
namespace {

constexpr size_t kBlock = 4096;

Buffer PatternBuffer(Device& d, size_t len, uint64_t seed, uint64_t start) {
  Result<Buffer> b = d.AllocateBuffer(len);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  if (!b.ok()) return Buffer();
  FillPattern(b->data(), len, seed, start);
  return std::move(*b);
}

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

class DeviceFeatureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceFeatureTest, DiscardedRangesOfAFileReadBackAsZeros) {
  PatternFile file(1 << 20, 1);
  DeviceOptions o = DeviceOptionsFor(GetParam());
  std::mutex mu;
  std::vector<Extent> told;
  o.on_discard = [&](const DiscardResult& r) {
    std::lock_guard lock(mu);
    EXPECT_TRUE(r.failed.empty());
    told.insert(told.end(), r.discarded.begin(), r.discarded.end());
  };
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  if (!dev->Info().discard) {
    GTEST_SKIP() << "no discard here: " << dev->Info().discard_note;
  }
  const std::vector<Extent> ranges = {{64 * 1024, 64 * 1024},
                                      {512 * 1024, 128 * 1024}};
  ASSERT_TRUE(dev->QueueDiscard(ranges).ok());
  ASSERT_TRUE(dev->DiscardDrain().ok());
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(told, ranges);
  }
  EXPECT_EQ(dev->Stats().discarded_bytes, 192U * 1024);
  Result<Buffer> back = dev->AllocateBuffer(1 << 20);
  ASSERT_TRUE(dev->ReadExactly(0, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), 64 * 1024, 1), -1);
  EXPECT_TRUE(AllZero(back->data() + 64 * 1024, 64 * 1024));
  EXPECT_EQ(FirstMismatch(back->data() + 128 * 1024, 384 * 1024, 1, 128 * 1024),
            -1);
  EXPECT_TRUE(AllZero(back->data() + 512 * 1024, 128 * 1024));
  EXPECT_EQ(FirstMismatch(back->data() + 640 * 1024, 384 * 1024, 1, 640 * 1024),
            -1);
  EXPECT_EQ(*dev->Size(), 1U << 20) << "a discard keeps the size";
}

TEST_P(DeviceFeatureTest, WriteHintsAreSetOnTheInodeWhenTheyChange) {
  PatternFile file(256 * 1024, 1);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  if (!dev->Info().write_hints) {
    GTEST_SKIP() << "no write hints here: " << dev->Info().write_hints_note;
  }
  uint64_t hint = 99;
  ASSERT_TRUE(dev->Write(0, PatternBuffer(*dev, kBlock, 1, 0),
                         {.life = WriteLife::kShort})
                  .ok());
  ASSERT_EQ(sys::GetRwHint(dev->fd(), &hint), 0);
  EXPECT_EQ(hint, uint64_t{2});  // RWH_WRITE_LIFE_SHORT
  ASSERT_TRUE(dev->Write(kBlock, PatternBuffer(*dev, kBlock, 1, 0),
                         {.life = WriteLife::kExtreme})
                  .ok());
  ASSERT_EQ(sys::GetRwHint(dev->fd(), &hint), 0);
  EXPECT_EQ(hint, uint64_t{5});  // RWH_WRITE_LIFE_EXTREME
}

int RefuseRwHint(int /*fd*/, uint64_t /*hint*/) { return -EINVAL; }

TEST_P(DeviceFeatureTest, RefusedWriteHintsLeaveWritesUnhinted) {
  PatternFile file(256 * 1024, 1);
  sys::FaultHooks hooks;
  hooks.set_rw_hint = &RefuseRwHint;
  sys::SetFaultHooks(&hooks);
  Result<std::unique_ptr<Device>> opened =
      Device::Open(file.path(), DeviceOptionsFor(GetParam()));
  sys::SetFaultHooks(nullptr);
  if (!opened.ok() && DeviceRefusedHere(opened.status())) {
    GTEST_SKIP() << opened.status().ToString();
  }
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Device& dev = **opened;
  EXPECT_FALSE(dev.Info().write_hints);
  EXPECT_NE(dev.Info().write_hints_note.find("F_SET_RW_HINT): EINVAL"),
            std::string::npos)
      << dev.Info().write_hints_note;
  EXPECT_NE(dev.Info().ToString().find("write hints: no"), std::string::npos);
  ASSERT_TRUE(
      dev.Write(0, PatternBuffer(dev, kBlock, 2, 0), {.life = WriteLife::kLong})
          .ok());
  Result<Buffer> back = dev.AllocateBuffer(kBlock);
  ASSERT_TRUE(dev.ReadExactly(0, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), kBlock, 2), -1);
}

TEST_P(DeviceFeatureTest, PreallocateReservesSpaceInAFile) {
  PatternFile file(0, 1);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Status s = dev->Preallocate(0, 1 << 20);
  if (s.Is(Errc::kUnsupported)) GTEST_SKIP() << s.ToString();
  ASSERT_TRUE(s.ok()) << s.ToString();
  struct stat st;
  ASSERT_EQ(::fstat(dev->fd(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_GE(static_cast<uint64_t>(st.st_blocks) * 512, 1U << 20);
  EXPECT_TRUE(dev->Preallocate(0, 0).Is(Errc::kInvalidArgument));
}

TEST_P(DeviceFeatureTest, AtomicWritesAreRefusedWithTheReasonWhereUnsupported) {
  PatternFile file(256 * 1024, 1);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  if (dev->Info().atomic_write_max != 0) {
    GTEST_SKIP() << "this file system writes atomically: "
                 << dev->Info().atomic_write_note;
  }
  IoContext ioc;
  Status s = dev->AioWrite(0, PatternBuffer(*dev, kBlock, 1, 0), &ioc,
                           {.atomic = true});
  EXPECT_TRUE(s.Is(Errc::kUnsupported)) << s.ToString();
  EXPECT_NE(s.context().find("atomic"), std::string::npos) << s.ToString();
  EXPECT_EQ(ioc.pending(), 0U);
}

TEST_P(DeviceFeatureTest, TheBufferPoolIsCarvedOnceAndReused) {
  PatternFile file(256 * 1024, 1);
  DeviceOptions o = DeviceOptionsFor(GetParam());
  o.buffer_count = 4;
  o.buffer_size = 16 * 1024;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  std::vector<Buffer> taken;
  for (int i = 0; i < 4; ++i) {
    Result<Buffer> b = dev->AllocateBuffer(kBlock);
    ASSERT_TRUE(b.ok());
    EXPECT_GE(b->registered_index(), 0);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) %
                  std::max<uint32_t>(dev->Info().memory_alignment, 1),
              0U);
    taken.push_back(*b);
  }
  // Empty pool, or too large: from the heap.
  EXPECT_EQ(dev->AllocateBuffer(kBlock)->registered_index(), -1);
  EXPECT_EQ(dev->AllocateBuffer(64 * 1024)->registered_index(), -1);
  taken.pop_back();
  Result<Buffer> again = dev->AllocateBuffer(8 * 1024);
  ASSERT_TRUE(again.ok());
  EXPECT_GE(again->registered_index(), 0);
  // Pool buffers work for I/O (fixed buffers on io_uring).
  FillPattern(again->data(), 8 * 1024, 3);
  ASSERT_TRUE(dev->Write(0, *again).ok());
  Result<Buffer> back = dev->AllocateBuffer(8 * 1024);
  ASSERT_TRUE(dev->ReadExactly(0, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), 8 * 1024, 3), -1);
  if (o.engine.kind == EngineKind::kIoUring) {
    EXPECT_TRUE(dev->Info().registered_buffers) << dev->Info().buffers_note;
  }
  // A pool buffer may outlive its device.
  Buffer kept = taken[0];
  taken.clear();
  ASSERT_TRUE(dev->Close().ok());
  dev.reset();
  kept.data()[0] = 1;
  EXPECT_EQ(kept.use_count(), 1U);
}

INSTANTIATE_TEST_SUITE_P(Engines, DeviceFeatureTest,
                         ::testing::ValuesIn(DeviceParams()), EngineParamName);

// NotifyFd is for a caller that reaps: the engines without completion
// threads.
class DeviceCallerTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceCallerTest, TheCallerReapsThroughNotifyFdAndEpoll) {
  PatternFile file(256 * 1024, 1);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<int> nfd = dev->NotifyFd();
  ASSERT_TRUE(nfd.ok()) << nfd.status().ToString();
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ASSERT_EQ(::epoll_ctl(ep, EPOLL_CTL_ADD, *nfd, &ev), 0);
  int done = 0;
  constexpr int kGroups = 32;
  std::vector<std::unique_ptr<IoContext>> iocs;
  for (int i = 0; i < kGroups; ++i) {
    iocs.push_back(
        std::make_unique<IoContext>([&done](IoContext&) { ++done; }));
    ASSERT_TRUE(dev->AioRead(i * kBlock, *dev->AllocateBuffer(kBlock),
                             iocs.back().get())
                    .ok());
    ASSERT_TRUE(dev->Submit(iocs.back().get()).ok());
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (done < kGroups && std::chrono::steady_clock::now() < deadline) {
    epoll_event got{};
    if (::epoll_wait(ep, &got, 1, 100) == 1) {
      uint64_t n = 0;
      (void)!::read(*nfd, &n, sizeof(n));
    }
    ASSERT_TRUE(dev->Poll().ok());
  }
  ::close(ep);
  EXPECT_EQ(done, kGroups);
}

INSTANTIATE_TEST_SUITE_P(Engines, DeviceCallerTest,
                         ::testing::Values("linux-aio/caller",
                                           "io_uring/caller", "threads/caller",
                                           "sync/caller"),
                         EngineParamName);

// ---- Block devices (root: a loop device over a file). ----

class DeviceBlockTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceBlockTest, ALoopDeviceReadsWritesAndDiscards) {
  PatternFile backing(4 << 20, 1);
  LoopDevice loop(backing.path());
  if (loop.path().empty()) GTEST_SKIP() << loop.why();
  DeviceOptions o = DeviceOptionsFor(GetParam());
  std::atomic<uint64_t> told{0};
  o.on_discard = [&](const DiscardResult& r) {
    for (const Extent& e : r.discarded) told.fetch_add(e.length);
  };
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, loop.path(), o);
  EXPECT_TRUE(dev->Info().block_device);
  EXPECT_EQ(dev->Info().size, 4U << 20);
  ASSERT_TRUE(dev->Write(kBlock, PatternBuffer(*dev, 8 * kBlock, 2, 0)).ok());
  ASSERT_TRUE(dev->Flush().ok());
  Result<Buffer> back = dev->AllocateBuffer(8 * kBlock);
  ASSERT_TRUE(dev->ReadExactly(kBlock, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), 8 * kBlock, 2), -1);
  // Past the end is refused before the kernel sees it.
  IoContext ioc;
  Status s =
      dev->AioRead((4 << 20) - kBlock, *dev->AllocateBuffer(2 * kBlock), &ioc);
  EXPECT_TRUE(s.Is(Errc::kInvalidArgument)) << s.ToString();
  EXPECT_NE(s.context().find("beyond the end of the device"),
            std::string::npos);
  EXPECT_TRUE(dev->Preallocate(0, kBlock).Is(Errc::kUnsupported));
  if (!dev->Info().discard) {
    GTEST_SKIP() << "the loop device does not discard: "
                 << dev->Info().discard_note;
  }
  const Extent range{2 * kBlock, 4 * kBlock};
  ASSERT_TRUE(dev->QueueDiscard({&range, 1}).ok());
  ASSERT_TRUE(dev->DiscardDrain().ok());
  EXPECT_EQ(told.load(), 4 * kBlock);
  ASSERT_TRUE(dev->ReadExactly(kBlock, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), kBlock, 2), -1);
  EXPECT_TRUE(AllZero(back->data() + kBlock, 4 * kBlock));
  EXPECT_EQ(FirstMismatch(back->data() + 5 * kBlock, 3 * kBlock, 2, 5 * kBlock),
            -1);
  // Misaligned discards are refused.
  const Extent odd{100, kBlock};
  EXPECT_TRUE(dev->QueueDiscard({&odd, 1}).Is(Errc::kInvalidArgument));
}

// XFS with reflink offers RWF_ATOMIC in software (Linux 6.16+) where the
// device has no atomic writes: the test makes one on a loop device.
TEST_P(DeviceBlockTest, AtomicWritesOnXfs) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting needs root";
  if (std::system("command -v mkfs.xfs >/dev/null 2>&1") != 0) {  // NOLINT
    GTEST_SKIP() << "mkfs.xfs is not installed (Debian: xfsprogs)";
  }
  PatternFile image(0, 0);
  ASSERT_EQ(::truncate(image.path().c_str(), 512 << 20), 0);
  const std::string mkfs =
      "mkfs.xfs -q -f -m reflink=1 '" + image.path() + "' >/dev/null 2>&1";
  if (std::system(mkfs.c_str()) != 0) {  // NOLINT(concurrency-mt-unsafe)
    GTEST_SKIP() << "mkfs.xfs failed";
  }
  LoopDevice loop(image.path());
  if (loop.path().empty()) GTEST_SKIP() << loop.why();
  std::string dir = TestDir() + "/aiokit-xfs-XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  if (::mount(loop.path().c_str(), dir.c_str(), "xfs", 0, nullptr) != 0) {
    ::rmdir(dir.c_str());
    GTEST_SKIP() << "mount -t xfs failed: " << std::strerror(errno);
  }
  {
    DeviceOptions o = DeviceOptionsFor(GetParam());
    o.create = true;
    const std::string path = dir + "/atomic";
    Result<std::unique_ptr<Device>> opened = Device::Open(path, o);
    if (!opened.ok()) {
      ::umount(dir.c_str());
      ::rmdir(dir.c_str());
      if (DeviceRefusedHere(opened.status())) {
        GTEST_SKIP() << opened.status().ToString();
      }
      FAIL() << opened.status().ToString();
    }
    Device& dev = **opened;
    const DeviceInfo& info = dev.Info();
    if (info.atomic_write_max == 0) {
      (void)dev.Close();
      ::umount(dir.c_str());
      ::rmdir(dir.c_str());
      GTEST_SKIP() << "no atomic writes on XFS here: "
                   << info.atomic_write_note;
    }
    EXPECT_GE(info.atomic_write_max, info.atomic_write_min);
    const size_t len = std::max<size_t>(info.atomic_write_min, 16 * 1024);
    ASSERT_LE(len, info.atomic_write_max);
    Status s = dev.Write(len, PatternBuffer(dev, len, 4, 0), {.atomic = true});
    EXPECT_TRUE(s.ok()) << s.ToString();
    Result<Buffer> back = dev.AllocateBuffer(len);
    ASSERT_TRUE(dev.ReadExactly(len, *back).ok());
    EXPECT_EQ(FirstMismatch(back->data(), len, 4), -1);
    // Misaligned for its length, or not a power of two: refused with limits.
    IoContext ioc;
    s = dev.AioWrite(len / 2, PatternBuffer(dev, len, 4, 0), &ioc,
                     {.atomic = true});
    EXPECT_TRUE(s.Is(Errc::kInvalidArgument)) << s.ToString();
    EXPECT_NE(s.context().find(std::to_string(info.atomic_write_max)),
              std::string::npos)
        << s.ToString();
    s = dev.AioWrite(0, PatternBuffer(dev, 3 * kBlock, 4, 0), &ioc,
                     {.atomic = true});
    EXPECT_TRUE(s.Is(Errc::kInvalidArgument)) << s.ToString();
    EXPECT_TRUE(dev.Close().ok());
  }
  EXPECT_EQ(::umount(dir.c_str()), 0);
  ::rmdir(dir.c_str());
}

INSTANTIATE_TEST_SUITE_P(Engines, DeviceBlockTest,
                         ::testing::Values("linux-aio/thread",
                                           "io_uring/caller", "threads/two",
                                           "sync/thread"),
                         EngineParamName);

}  // namespace
}  // namespace aiokit::testing
