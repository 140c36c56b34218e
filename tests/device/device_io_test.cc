// The device layer's request path on every engine and reaping mode: groups,
// callbacks, the synchronous calls, end of file, unaligned reads, splits.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/device.h"
#include "device_util.h"

namespace aiokit::testing {
namespace {

constexpr size_t kBlock = 4096;

// A device buffer of `len` bytes holding pattern `seed` from stream offset
// `start`.
Buffer PatternBuffer(Device& d, size_t len, uint64_t seed, uint64_t start) {
  Result<Buffer> b = d.AllocateBuffer(len);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  if (!b.ok()) return Buffer();
  FillPattern(b->data(), len, seed, start);
  return std::move(*b);
}

class DeviceIoTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceIoTest, AGroupOfWritesThenReadsRoundTrips) {
  PatternFile file(1 << 20, 1);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  IoContext writes;
  for (size_t off = 0; off < (1 << 20); off += 64 * 1024) {
    ASSERT_TRUE(
        dev->AioWrite(off, PatternBuffer(*dev, 64 * 1024, 7, off), &writes)
            .ok());
  }
  EXPECT_EQ(writes.pending(), 16U);
  ASSERT_TRUE(dev->Submit(&writes).ok());
  EXPECT_EQ(writes.pending(), 0U);
  ASSERT_TRUE(writes.Wait().ok()) << writes.status().ToString();
  EXPECT_EQ(writes.running(), 0U);

  Result<Buffer> back = dev->AllocateBuffer(1 << 20);
  ASSERT_TRUE(back.ok());
  ASSERT_TRUE(dev->ReadExactly(0, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), 1 << 20, 7), -1);
  const DeviceStats s = dev->Stats();
  EXPECT_EQ(s.writes, 16U);
  EXPECT_EQ(s.reads, 1U);
}

TEST_P(DeviceIoTest, GroupsOfThousandsFromSeveralThreadsCallBackOnceEach) {
  constexpr size_t kThreads = 4;
  constexpr size_t kGroups = 3;  // write, read back, write with a flush
  constexpr size_t kPerGroup = 1024;
  constexpr size_t kRegion = kPerGroup * kBlock;
  PatternFile file(kThreads * kRegion, 0);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  std::vector<std::atomic<int>> callbacks(kThreads * kGroups);
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const uint64_t base = t * kRegion;
      std::string& why = failures[t];
      for (size_t g = 0; g < kGroups; ++g) {
        std::atomic<int>& count = callbacks[t * kGroups + g];
        IoContext ioc([&count](IoContext&) { count.fetch_add(1); });
        std::vector<Buffer> reads;
        for (size_t i = 0; i < kPerGroup; ++i) {
          const uint64_t off = base + i * kBlock;
          Status s;
          if (g == 1) {
            Result<Buffer> b = dev->AllocateBuffer(kBlock);
            if (!b.ok()) {
              why = b.status().ToString();
              return;
            }
            reads.push_back(*b);
            s = dev->AioRead(off, *b, &ioc);
          } else {
            s = dev->AioWrite(
                off, PatternBuffer(*dev, kBlock, 100 + t + g, off), &ioc);
          }
          if (!s.ok()) {
            why = s.ToString();
            return;
          }
        }
        if (Status s =
                dev->Submit(&ioc, g == 2 ? ThenFlush::kYes : ThenFlush::kNo);
            !s.ok()) {
          why = s.ToString();
          return;
        }
        if (Status s = ioc.Wait(); !s.ok()) {
          why = "group " + std::to_string(g) + ": " + s.ToString();
          return;
        }
        for (size_t i = 0; i < reads.size(); ++i) {
          const uint64_t off = base + i * kBlock;
          if (FirstMismatch(reads[i].data(), kBlock, 100 + t, off) != -1) {
            why = "read back at " + std::to_string(off) + " differs";
            return;
          }
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (size_t t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << t;
  for (size_t i = 0; i < callbacks.size(); ++i) {
    EXPECT_EQ(callbacks[i].load(), 1) << "group " << i;
  }
  // The last groups' data, read back whole.
  Result<Buffer> all = dev->AllocateBuffer(kThreads * kRegion);
  ASSERT_TRUE(all.ok());
  ASSERT_TRUE(dev->ReadExactly(0, *all).ok());
  for (size_t t = 0; t < kThreads; ++t) {
    EXPECT_EQ(
        FirstMismatch(all->data() + t * kRegion, kRegion, 102 + t, t * kRegion),
        -1)
        << t;
  }
  EXPECT_GE(dev->Stats().fdatasyncs, 1U);
}

TEST_P(DeviceIoTest, CancelRacingCompletionCompletesEveryGroupOnce) {
  constexpr size_t kGroups = 256;
  constexpr size_t kRounds = 4;
  PatternFile file(kGroups * kBlock, 3);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  std::mt19937 rng(7);
  uint64_t cancelled = 0;
  for (size_t round = 0; round < kRounds; ++round) {
    std::vector<std::atomic<int>> calls(kGroups);
    std::vector<std::unique_ptr<IoContext>> iocs;
    std::vector<Buffer> buffers;
    iocs.reserve(kGroups);
    buffers.reserve(kGroups);
    for (size_t i = 0; i < kGroups; ++i) {
      iocs.push_back(std::make_unique<IoContext>(
          [&calls, i](IoContext&) { calls[i].fetch_add(1); }));
      iocs.back()->set_cancellable(true);
      const uint64_t off = i * kBlock;
      // Odd groups rewrite the same bytes; even ones read them.
      Buffer b = (i % 2 == 1) ? PatternBuffer(*dev, kBlock, 3, off)
                              : *dev->AllocateBuffer(kBlock);
      buffers.push_back(b);
      Status s = (i % 2 == 1) ? dev->AioWrite(off, b, iocs.back().get())
                              : dev->AioRead(off, b, iocs.back().get());
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
    std::vector<IoContext*> all;
    all.reserve(kGroups);
    for (auto& c : iocs) all.push_back(c.get());
    std::vector<size_t> order(kGroups);
    for (size_t i = 0; i < kGroups; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    ASSERT_TRUE(dev->Submit(all).ok());
    std::thread canceller([&] {
      for (size_t i : order) {
        Status s = dev->Cancel(iocs[i].get());
        EXPECT_TRUE(s.ok()) << s.ToString();
      }
    });
    for (size_t i = 0; i < kGroups; ++i) {
      Status s = iocs[i]->Wait();
      if (s.ok()) {
        if (i % 2 == 0) {
          EXPECT_EQ(FirstMismatch(buffers[i].data(), kBlock, 3, i * kBlock), -1)
              << i;
        }
      } else {
        EXPECT_EQ(s.Errno(), ECANCELED) << i << ": " << s.ToString();
        ++cancelled;
      }
    }
    canceller.join();
    for (size_t i = 0; i < kGroups; ++i) {
      EXPECT_EQ(calls[i].load(), 1) << "group " << i;
      EXPECT_EQ(buffers[i].use_count(), 1U) << "group " << i;
    }
  }
  // The file is whole: writes that ran wrote the same bytes.
  Result<Buffer> back = dev->AllocateBuffer(kGroups * kBlock);
  ASSERT_TRUE(back.ok());
  ASSERT_TRUE(dev->ReadExactly(0, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), kGroups * kBlock, 3), -1);
  EXPECT_EQ(dev->Stats().cancelled, cancelled);
  RecordProperty("cancelled", static_cast<int>(cancelled));
}

// The coroutine layer's pattern: a group's callback hands its context to
// another thread, which submits it again at once, while the callback is
// still returning (and, with two completion threads, while the new request
// may complete on the other one). Every round must call back: a lost one
// leaves its submitter waiting (the watchdog fails the test).
TEST_P(DeviceIoTest, AContextResubmittedAsItsCallbackReturnsAlwaysCallsBack) {
  constexpr int kContexts = 4;
  constexpr int kRounds = 3000;
  PatternFile file(64 * kBlock, 4);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  struct Ring {
    std::atomic<int> done{0};  // callbacks seen
    std::unique_ptr<IoContext> ioc;
    Buffer b;
  };
  std::vector<Ring> rings(kContexts);
  for (int i = 0; i < kContexts; ++i) {
    Ring& r = rings[i];
    r.ioc = std::make_unique<IoContext>(
        [&r](IoContext&) { r.done.fetch_add(1, std::memory_order_release); });
    r.b = *dev->AllocateBuffer(kBlock);
  }
  std::string failure;
  // One submitter for all: it spins for each callback and submits again.
  std::thread submitter([&] {
    std::vector<int> submitted(kContexts, 0);
    int finished = 0;
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (finished < kContexts) {
      bool progress = false;
      for (int i = 0; i < kContexts; ++i) {
        Ring& r = rings[i];
        if (submitted[i] == kRounds ||
            r.done.load(std::memory_order_acquire) != submitted[i]) {
          continue;
        }
        Status s =
            dev->AioRead((i * 8 + submitted[i] % 8) * kBlock, r.b, r.ioc.get());
        if (s.ok()) s = dev->Submit(r.ioc.get());
        if (!s.ok()) {
          failure = s.ToString();
          return;
        }
        if (++submitted[i] == kRounds) ++finished;
        progress = true;
      }
      if (!progress && DeviceOptionsFor(GetParam()).completion_threads == 0) {
        (void)dev->Poll();
      }
      if (std::chrono::steady_clock::now() > until) {
        failure = "a callback never came (rounds:";
        for (int i = 0; i < kContexts; ++i) {
          failure += " " + std::to_string(rings[i].done.load()) + "/" +
                     std::to_string(submitted[i]);
        }
        failure += ")";
        return;
      }
    }
  });
  submitter.join();
  EXPECT_EQ(failure, "");
  for (int i = 0; i < kContexts; ++i) {
    ASSERT_TRUE(rings[i].ioc->Wait().ok());
    EXPECT_EQ(rings[i].done.load(), kRounds) << i;
  }
}

TEST_P(DeviceIoTest, AVectoredReadFillsItsBuffersInOrder) {
  PatternFile file(64 * kBlock, 5);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<Buffer> whole = dev->AllocateBuffer(16 * kBlock);
  ASSERT_TRUE(whole.ok());
  // Three pieces of one allocation and one of another, out of order in
  // memory: each is filled from where the previous ended in the file.
  Result<Buffer> other = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(other.ok());
  std::vector<Buffer> parts = {whole->Slice(8 * kBlock, kBlock), *other,
                               whole->Slice(0, 2 * kBlock),
                               whole->Slice(4 * kBlock, kBlock)};
  IoContext ioc;
  uint64_t got = 0;
  ASSERT_TRUE(dev->AioRead(4 * kBlock, parts, &ioc, &got).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(ioc.Wait().ok()) << ioc.status().ToString();
  EXPECT_EQ(got, 5 * kBlock);
  uint64_t at = 4 * kBlock;
  for (const Buffer& p : parts) {
    EXPECT_EQ(FirstMismatch(p.data(), p.size(), 5, at), -1) << "at " << at;
    at += p.size();
  }
  // At the end of the file: the byte count.
  IoContext tail;
  ASSERT_TRUE(dev->AioRead(62 * kBlock, parts, &tail, &got).ok());
  ASSERT_TRUE(dev->Submit(&tail).ok());
  ASSERT_TRUE(tail.Wait().ok()) << tail.status().ToString();
  EXPECT_EQ(got, 2 * kBlock);
  // Refused with what was asked: an empty list, an empty buffer.
  IoContext bad;
  Status s = dev->AioRead(0, std::span<const Buffer>(), &bad);
  EXPECT_TRUE(s.Is(Errc::kInvalidArgument)) << s.ToString();
  std::vector<Buffer> with_empty = {*other, Buffer()};
  s = dev->AioRead(0, with_empty, &bad);
  EXPECT_TRUE(s.Is(Errc::kInvalidArgument)) << s.ToString();
  EXPECT_NE(s.context().find("an empty buffer"), std::string::npos)
      << s.ToString();
}

TEST_P(DeviceIoTest, SeveralContextsGoInOneSubmitAndCompleteAsGroups) {
  PatternFile file(256 * 1024, 2);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  constexpr int kContexts = 100;  // more than one engine batch
  std::vector<std::atomic<int>> calls(kContexts);
  std::vector<std::unique_ptr<IoContext>> iocs;
  std::vector<IoContext*> all;
  std::vector<Buffer> bufs;
  for (int i = 0; i < kContexts; ++i) {
    iocs.push_back(std::make_unique<IoContext>(
        [&calls, i](IoContext&) { calls[i].fetch_add(1); }));
    all.push_back(iocs.back().get());
    for (int j = 0; j < 2; ++j) {
      const uint64_t off = ((i * 2 + j) % 64) * kBlock;
      bufs.push_back(*dev->AllocateBuffer(kBlock));
      ASSERT_TRUE(dev->AioRead(off, bufs.back(), all.back()).ok());
    }
  }
  IoContext empty;  // skipped: nothing queued
  all.push_back(&empty);
  ASSERT_TRUE(dev->Submit(all).ok());
  for (int i = 0; i < kContexts; ++i) {
    ASSERT_TRUE(iocs[i]->Wait().ok()) << i;
    EXPECT_EQ(calls[i].load(), 1) << i;
  }
  for (size_t b = 0; b < bufs.size(); ++b) {
    const uint64_t off = (b % 64) * kBlock;
    EXPECT_EQ(FirstMismatch(bufs[b].data(), kBlock, 2, off), -1) << b;
  }
  // Nothing queued anywhere: refused.
  IoContext* none[1] = {&empty};
  EXPECT_TRUE(dev->Submit(none).Is(Errc::kInvalidArgument));
}

TEST_P(DeviceIoTest, AReadMeetingTheEndOfTheFileGivesTheByteCount) {
  PatternFile file(10000, 3);  // not a multiple of any alignment
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<Buffer> b = dev->AllocateBuffer(8192);
  ASSERT_TRUE(b.ok());
  Result<uint64_t> got = dev->Read(8192, *b);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, 10000U - 8192U);
  EXPECT_EQ(FirstMismatch(b->data(), 10000 - 8192, 3, 8192), -1);

  Status exact = dev->ReadExactly(8192, *b);
  ASSERT_TRUE(exact.Is(Errc::kEndOfFile)) << exact.ToString();
  EXPECT_NE(exact.context().find("after 1808 bytes"), std::string::npos)
      << exact.ToString();
  EXPECT_NE(exact.context().find(file.path()), std::string::npos);

  Result<uint64_t> past = dev->Read(16384, *b);
  ASSERT_TRUE(past.ok());
  EXPECT_EQ(*past, 0U);

  // Asynchronously, without a count: the group fails with the end of file.
  IoContext ioc;
  ASSERT_TRUE(dev->AioRead(8192, *b, &ioc).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  EXPECT_TRUE(ioc.Wait().Is(Errc::kEndOfFile));
}

TEST_P(DeviceIoTest, ReadUnalignedReadsAnyRange) {
  PatternFile file(64 * 1024, 5);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  std::vector<char> dst(5000);
  Result<uint64_t> got = dev->ReadUnaligned(1001, dst.size(), dst.data());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, dst.size());
  EXPECT_EQ(FirstMismatch(dst.data(), dst.size(), 5, 1001), -1);
  // Across the end of the file.
  got = dev->ReadUnaligned(64 * 1024 - 100, dst.size(), dst.data());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, 100U);
  EXPECT_EQ(FirstMismatch(dst.data(), 100, 5, 64 * 1024 - 100), -1);
}

TEST_P(DeviceIoTest, MoreBuffersThanIovMaxAreSplitAndCompleteAsOne) {
  constexpr size_t kBuffers = IOV_MAX + 76;
  PatternFile file(0, 0);
  DeviceOptions o = DeviceOptionsFor(GetParam());
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  std::vector<Buffer> bufs;
  for (size_t i = 0; i < kBuffers; ++i) {
    bufs.push_back(PatternBuffer(*dev, kBlock, 9, i * kBlock));
  }
  int calls = 0;
  IoContext ioc([&calls](IoContext&) { ++calls; });
  ASSERT_TRUE(dev->AioWrite(0, bufs, &ioc).ok());
  EXPECT_EQ(ioc.pending(), 1U);
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(ioc.Wait().ok()) << ioc.status().ToString();
  EXPECT_EQ(calls, 1);
  EXPECT_GE(dev->Stats().split, 1U);
  EXPECT_EQ(dev->Stats().writes, 1U);
  // Read back into as many buffers.
  std::vector<Buffer> back;
  for (size_t i = 0; i < kBuffers; ++i) {
    Result<Buffer> b = dev->AllocateBuffer(kBlock);
    ASSERT_TRUE(b.ok());
    back.push_back(*b);
  }
  Result<Buffer> whole = dev->AllocateBuffer(kBuffers * kBlock);
  ASSERT_TRUE(whole.ok());
  ASSERT_TRUE(dev->ReadExactly(0, *whole).ok());
  EXPECT_EQ(FirstMismatch(whole->data(), kBuffers * kBlock, 9), -1);
}

TEST_P(DeviceIoTest, ACallbackThatWaitsOnTheDeviceIsRefusedNotDeadlocked) {
  PatternFile file(64 * 1024, 4);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<Buffer> b = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(b.ok());
  Status wait_inside, read_inside, flush_inside;
  std::atomic<bool> called{false};
  IoContext ioc([&](IoContext& self) {
    wait_inside = self.Wait();
    read_inside = dev->Read(0, *b).status();
    flush_inside = dev->Flush();
    called.store(true);
  });
  ASSERT_TRUE(dev->AioRead(0, *b, &ioc).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(ioc.Wait().ok());
  EXPECT_TRUE(called.load());
  EXPECT_TRUE(wait_inside.Is(Errc::kInvalidArgument)) << wait_inside.ToString();
  EXPECT_NE(wait_inside.context().find("completion callback"),
            std::string::npos);
  EXPECT_TRUE(read_inside.Is(Errc::kInvalidArgument)) << read_inside.ToString();
  EXPECT_TRUE(flush_inside.Is(Errc::kInvalidArgument))
      << flush_inside.ToString();
}

TEST_P(DeviceIoTest, ACallbackMayDestroyItsContext) {
  PatternFile file(64 * 1024, 4);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  std::atomic<int> done{0};
  // A context that deletes itself from its callback.
  struct SelfDeleting {
    static IoContext* Make(std::atomic<int>* done) {
      auto* holder = new IoContext*;
      auto* ioc = new IoContext([done, holder](IoContext& self) {
        EXPECT_EQ(&self, *holder);
        // The captures go with the context: copy what is needed first.
        std::atomic<int>* const count = done;
        IoContext** const box = holder;
        delete &self;
        delete box;
        count->fetch_add(1);
      });
      *holder = ioc;
      return ioc;
    }
  };
  std::vector<Buffer> bufs;
  for (int i = 0; i < 50; ++i) {
    IoContext* ioc = SelfDeleting::Make(&done);
    Result<Buffer> b = dev->AllocateBuffer(kBlock);
    ASSERT_TRUE(b.ok());
    bufs.push_back(*b);
    ASSERT_TRUE(dev->AioRead((i % 16) * kBlock, *b, ioc).ok());
    ASSERT_TRUE(dev->Submit(ioc).ok());
  }
  // Nothing is left to wait on: drive completions until all ran.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (done.load() < 50 && std::chrono::steady_clock::now() < deadline) {
    if (DeviceOptionsFor(GetParam()).completion_threads == 0) {
      ASSERT_TRUE(dev->Run(std::chrono::milliseconds(10)).ok());
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  EXPECT_EQ(done.load(), 50);
}

TEST_P(DeviceIoTest, CloseWaitsForEveryRequestInFlight) {
  PatternFile file(256 * 1024, 6);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  std::atomic<int> calls{0};
  std::vector<std::unique_ptr<IoContext>> iocs;
  for (int i = 0; i < 64; ++i) {
    iocs.push_back(std::make_unique<IoContext>(
        [&calls](IoContext&) { calls.fetch_add(1); }));
    ASSERT_TRUE(dev->AioRead((i % 64) * kBlock, *dev->AllocateBuffer(kBlock),
                             iocs.back().get())
                    .ok());
    ASSERT_TRUE(dev->Submit(iocs.back().get()).ok());
  }
  ASSERT_TRUE(dev->Close().ok());
  EXPECT_EQ(calls.load(), 64);
  for (auto& ioc : iocs) EXPECT_EQ(ioc->running(), 0U);
  // Closed: refused, not crashed.
  IoContext late;
  EXPECT_TRUE(
      dev->AioRead(0, *Buffer::Allocate(kBlock), &late).Is(Errc::kShutdown));
  EXPECT_TRUE(dev->Close().ok());
}

TEST_P(DeviceIoTest, BadRequestsAreRefusedWithTheirContext) {
  PatternFile file(64 * 1024, 8);
  DeviceOptions o = DeviceOptionsFor(GetParam());
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  IoContext ioc;
  EXPECT_TRUE(dev->AioRead(0, Buffer(), &ioc).Is(Errc::kInvalidArgument));
  EXPECT_TRUE(dev->AioRead(0, *Buffer::Allocate(kBlock), nullptr)
                  .Is(Errc::kInvalidArgument));
  EXPECT_TRUE(dev->Submit(&ioc).Is(Errc::kInvalidArgument));  // nothing
  if (dev->Info().direct) {
    Buffer odd = Buffer::Allocate(2 * kBlock)->Slice(1, kBlock);
    Status s = dev->AioWrite(0, odd, &ioc);
    EXPECT_TRUE(s.Is(Errc::kMisaligned)) << s.ToString();
    EXPECT_NE(s.context().find(file.path()), std::string::npos);
    s = dev->AioRead(100, *Buffer::Allocate(kBlock), &ioc);
    EXPECT_TRUE(s.Is(Errc::kMisaligned)) << s.ToString();
  }
  EXPECT_EQ(ioc.pending(), 0U);
  // A context belongs to one device.
  PatternFile other_file(64 * 1024, 8);
  AIOKIT_OPEN_DEVICE_OR_SKIP(other, other_file.path(), o);
  ASSERT_TRUE(dev->AioRead(0, *dev->AllocateBuffer(kBlock), &ioc).ok());
  EXPECT_TRUE(other->AioRead(0, *other->AllocateBuffer(kBlock), &ioc)
                  .Is(Errc::kInvalidArgument));
  // Waiting with requests queued and not submitted is refused.
  EXPECT_TRUE(ioc.Wait().Is(Errc::kInvalidArgument));
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  EXPECT_TRUE(ioc.Wait().ok());
}

TEST_P(DeviceIoTest, InfoNamesTheEngineAndTheAlignment) {
  PatternFile file(64 * 1024, 8);
  DeviceOptions o = DeviceOptionsFor(GetParam());
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  const DeviceInfo& info = dev->Info();
  EXPECT_EQ(info.engine, o.engine.kind);
  EXPECT_EQ(info.size, 64U * 1024);
  EXPECT_FALSE(info.block_device);
  EXPECT_TRUE(info.direct);
  EXPECT_GE(info.read_alignment, 1U);
  EXPECT_GE(info.write_alignment, info.read_alignment);
  EXPECT_EQ(info.max_transfer % info.write_alignment, 0U);
  const std::string text = info.ToString();
  EXPECT_NE(text.find(std::string("engine: ") + EngineKindName(o.engine.kind)),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("discard: "), std::string::npos) << text;
}

INSTANTIATE_TEST_SUITE_P(Engines, DeviceIoTest,
                         ::testing::ValuesIn(DeviceParams()), EngineParamName);

// Transfers over the kernel's maximum (0x7ffff000 bytes), on a buffered
// tmpfs file: one 2049 MiB write made of the same 1 MiB buffer 2049 times
// (over IOV_MAX too). One reaping mode per engine.
class DeviceLargeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceLargeTest, ATransferOverTheKernelsMaximumIsSplit) {
  constexpr size_t kMiB = 1 << 20;
  constexpr size_t kCount = 2049;
  struct statfs fs;
  if (::statfs("/dev/shm", &fs) != 0 ||
      static_cast<uint64_t>(fs.f_bavail) * fs.f_bsize < (kCount + 256) * kMiB) {
    GTEST_SKIP() << "/dev/shm is missing or has less than 2.3 GiB free";
  }
  const std::string path =
      "/dev/shm/aiokit-device-large-" + std::to_string(::getpid());
  DeviceOptions o = DeviceOptionsFor(GetParam());
  o.direct = false;
  o.create = true;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, path, o);
  ::unlink(path.c_str());  // the descriptor keeps it until Close
  Result<Buffer> one = dev->AllocateBuffer(kMiB);
  ASSERT_TRUE(one.ok());
  FillPattern(one->data(), kMiB, 11);
  std::vector<Buffer> bufs(kCount, *one);
  ASSERT_TRUE(dev->Write(0, bufs).ok());
  EXPECT_EQ(*dev->Size(), kCount * kMiB);
  const DeviceStats s = dev->Stats();
  EXPECT_EQ(s.writes, 1U);
  EXPECT_GE(s.split, 1U);
  EXPECT_GE(s.requests, 2U);
  // The last MiB through the device, three more places with pread.
  FillPattern(one->data(), kMiB, 12);
  IoContext ioc;
  uint64_t got = 0;
  ASSERT_TRUE(dev->AioRead((kCount - 1) * kMiB, *one, &ioc, &got).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(ioc.Wait().ok());
  EXPECT_EQ(got, kMiB);
  EXPECT_EQ(FirstMismatch(one->data(), kMiB, 11), -1);
  for (uint64_t at :
       {uint64_t{0}, uint64_t{1024} * kMiB, (kCount - 2) * kMiB}) {
    std::vector<char> head(4096);
    ASSERT_EQ(
        ::pread(dev->fd(), head.data(), head.size(), static_cast<off_t>(at)),
        4096);
    EXPECT_EQ(FirstMismatch(head.data(), head.size(), 11), -1) << at;
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, DeviceLargeTest,
                         ::testing::Values("linux-aio/thread",
                                           "io_uring/thread", "threads/thread",
                                           "sync/caller"),
                         EngineParamName);

}  // namespace
}  // namespace aiokit::testing
