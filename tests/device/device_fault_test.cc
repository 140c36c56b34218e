// The device layer under faults, on every engine and reaping mode: short
// transfers and EAGAIN results resubmitted, submission refusals, EIO and
// ENOSPC on the right group, the sticky flush error, shared flushes that
// cover what each caller saw, and deadlines that pass while a request is
// held.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/fault.h"
#include "device_util.h"
#include "scripted_engine.h"

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

// Options whose engine is wrapped in a ScriptedEngine; *out receives it.
DeviceOptions Scripted(const std::string& param, ScriptedEngine** out) {
  DeviceOptions o = DeviceOptionsFor(param);
  o.wrap_engine =
      [out](std::unique_ptr<Engine> e) -> Result<std::unique_ptr<Engine>> {
    auto s = std::make_unique<ScriptedEngine>(std::move(e));
    *out = s.get();
    return std::unique_ptr<Engine>(std::move(s));
  };
  return o;
}

// Waits up to 30 s for `cond`, driving completions when the caller reaps.
template <typename Cond>
bool Eventually(Device& dev, const DeviceOptions& o, Cond cond) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    if (o.completion_threads == 0) {
      (void)dev.Run(std::chrono::milliseconds(5));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return true;
}

class DeviceFaultTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceFaultTest, ShortTransfersAreResubmittedForTheRest) {
  PatternFile file(1 << 20, 1);
  ScriptedEngine* se = nullptr;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), Scripted(GetParam(), &se));
  ScriptedEngine::Rules rules;
  rules.short_unit = kBlock;
  se->SetRules(rules);
  // Three buffers in one write, then reads into two.
  std::vector<Buffer> parts = {PatternBuffer(*dev, 64 * 1024, 2, 0),
                               PatternBuffer(*dev, 128 * 1024, 2, 64 * 1024),
                               PatternBuffer(*dev, 64 * 1024, 2, 192 * 1024)};
  ASSERT_TRUE(dev->Write(kBlock, parts).ok());
  Result<Buffer> back = dev->AllocateBuffer(256 * 1024);
  ASSERT_TRUE(back.ok());
  ASSERT_TRUE(dev->ReadExactly(kBlock, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), 256 * 1024, 2), -1);
  EXPECT_GT(dev->Stats().resubmitted, 10U);
  // The bytes before the write are untouched.
  Result<Buffer> head = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(dev->ReadExactly(0, *head).ok());
  EXPECT_EQ(FirstMismatch(head->data(), kBlock, 1), -1);
}

TEST_P(DeviceFaultTest, EagainResultsAreRetried) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), Scripted(GetParam(), &se));
  ScriptedEngine::Rules rules;
  rules.eagain_results = 40;
  se->SetRules(rules);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        dev->WriteFull(i * kBlock, PatternBuffer(*dev, kBlock, 4, i * kBlock))
            .ok());
  }
  Result<Buffer> back = dev->AllocateBuffer(20 * kBlock);
  ASSERT_TRUE(dev->ReadExactly(0, *back).ok());
  EXPECT_EQ(FirstMismatch(back->data(), 20 * kBlock, 4), -1);
  EXPECT_GE(dev->Stats().resubmitted, 40U);
}

TEST_P(DeviceFaultTest, RandomRefusalsAndShortTransfersStillMoveEveryByte) {
  constexpr size_t kSize = 4 << 20;
  PatternFile file(kSize, 0);
  FaultSpec spec;
  spec.eagain = 0.2;
  spec.partial = 0.3;
  spec.short_io = 0.3;
  spec.seed = 1234;
  DeviceOptions o = DeviceOptionsFor(GetParam());
  FaultInjectingEngine* fe = nullptr;
  o.wrap_engine =
      [&spec,
       &fe](std::unique_ptr<Engine> e) -> Result<std::unique_ptr<Engine>> {
    auto w = MakeFaultInjectingEngine(std::move(e), spec);
    if (!w.ok()) return w.status();
    fe = w->get();
    return std::unique_ptr<Engine>(std::move(*w));
  };
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  std::mt19937_64 rng(42);
  std::vector<char> model(kSize);
  FillPattern(model.data(), kSize, 0);
  for (int i = 0; i < 60; ++i) {
    const size_t blocks = 1 + rng() % 16;
    const uint64_t off = (rng() % (kSize / kBlock - blocks)) * kBlock;
    IoContext ioc;
    // A group of four writes, one per quarter of the run.
    for (size_t q = 0; q < 4; ++q) {
      const uint64_t at = off + q * blocks * kBlock / 4 / kBlock * kBlock;
      const uint64_t end =
          q == 3 ? off + blocks * kBlock
                 : off + (q + 1) * blocks * kBlock / 4 / kBlock * kBlock;
      if (end <= at) continue;
      Buffer b = PatternBuffer(*dev, end - at, 500 + i, at);
      std::memcpy(model.data() + at, b.data(), end - at);
      ASSERT_TRUE(dev->AioWrite(at, b, &ioc).ok());
    }
    ASSERT_TRUE(dev->Submit(&ioc).ok());
    ASSERT_TRUE(ioc.Wait().ok()) << ioc.status().ToString();
    Result<Buffer> back = dev->AllocateBuffer(blocks * kBlock);
    ASSERT_TRUE(dev->ReadExactly(off, *back).ok());
    ASSERT_EQ(std::memcmp(back->data(), model.data() + off, blocks * kBlock), 0)
        << i;
  }
  const FaultStats fs = fe->fault_stats();
  EXPECT_GT(fs.short_io + fs.partial + fs.eagain, 0U);
  Result<Buffer> all = dev->AllocateBuffer(kSize);
  ASSERT_TRUE(dev->ReadExactly(0, *all).ok());
  EXPECT_EQ(std::memcmp(all->data(), model.data(), kSize), 0);
}

TEST_P(DeviceFaultTest, EioAndEnospcFailTheirOwnGroupWithContext) {
  PatternFile file(2 << 20, 1);
  ScriptedEngine* se = nullptr;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), Scripted(GetParam(), &se));
  ScriptedEngine::Rules rules;
  rules.fail_offset = 1 << 20;
  rules.fail_length = kBlock;
  rules.fail_errno = EIO;
  se->SetRules(rules);
  IoContext good, bad, reader;
  ASSERT_TRUE(
      dev->AioWrite(0, PatternBuffer(*dev, 64 * 1024, 3, 0), &good).ok());
  const uint64_t bad_at = (1 << 20) - kBlock;
  ASSERT_TRUE(
      dev->AioWrite(bad_at, PatternBuffer(*dev, 3 * kBlock, 3, 0), &bad).ok());
  ASSERT_TRUE(dev->AioWrite(0, PatternBuffer(*dev, kBlock, 3, 0), &bad).ok());
  ASSERT_TRUE(
      dev->AioRead(2 * kBlock, *dev->AllocateBuffer(kBlock), &reader).ok());
  ASSERT_TRUE(dev->Submit(&good).ok());
  ASSERT_TRUE(dev->Submit(&bad).ok());
  ASSERT_TRUE(dev->Submit(&reader).ok());
  EXPECT_TRUE(good.Wait().ok()) << good.status().ToString();
  EXPECT_TRUE(reader.Wait().ok()) << reader.status().ToString();
  Status s = bad.Wait();
  ASSERT_EQ(s.Errno(), EIO) << s.ToString();
  EXPECT_NE(s.context().find("write of \"" + file.path() + "\" at offset " +
                             std::to_string(bad_at) + ", length 12288"),
            std::string::npos)
      << s.ToString();
  EXPECT_EQ(bad.status().Errno(), EIO);

  // ENOSPC on a write.
  rules.fail_errno = ENOSPC;
  se->SetRules(rules);
  s = dev->Write(1 << 20, PatternBuffer(*dev, kBlock, 3, 0));
  EXPECT_EQ(s.Errno(), ENOSPC) << s.ToString();
  EXPECT_NE(s.context().find("at offset 1048576"), std::string::npos);

  // allow_eio: the EIO is listed, the group succeeds.
  rules.fail_errno = EIO;
  se->SetRules(rules);
  IoContext tolerant(nullptr, /*allow_eio=*/true);
  ASSERT_TRUE(
      dev->AioRead(1 << 20, *dev->AllocateBuffer(2 * kBlock), &tolerant).ok());
  ASSERT_TRUE(dev->AioRead(0, *dev->AllocateBuffer(kBlock), &tolerant).ok());
  ASSERT_TRUE(dev->Submit(&tolerant).ok());
  EXPECT_TRUE(tolerant.Wait().ok());
  ASSERT_EQ(tolerant.eio_extents().size(), 1U);
  EXPECT_EQ(tolerant.eio_extents()[0], (Extent{1 << 20, 2 * kBlock}));
}

TEST_P(DeviceFaultTest, AFailedFlushIsStickyUntilTheDeviceIsReopened) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  const DeviceOptions o = Scripted(GetParam(), &se);
  {
    AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
    ScriptedEngine::Rules rules;
    rules.fail_syncs = 1;
    se->SetRules(rules);
    ASSERT_TRUE(dev->Write(0, PatternBuffer(*dev, kBlock, 1, 0)).ok());
    Status first = dev->Flush();
    ASSERT_EQ(first.Errno(), EIO) << first.ToString();
    EXPECT_NE(first.context().find("until the device is reopened"),
              std::string::npos);
    const uint64_t syncs = se->syncs_seen();
    // The next fdatasync would succeed; the flush still fails.
    ASSERT_TRUE(dev->Write(kBlock, PatternBuffer(*dev, kBlock, 1, 0)).ok());
    EXPECT_EQ(dev->Flush().Errno(), EIO);
    EXPECT_EQ(dev->Flush().Errno(), EIO);
    IoContext commit;
    ASSERT_TRUE(
        dev->AioWrite(0, PatternBuffer(*dev, kBlock, 1, 0), &commit).ok());
    ASSERT_TRUE(dev->Submit(&commit, ThenFlush::kYes).ok());
    EXPECT_EQ(commit.Wait().Errno(), EIO);
    EXPECT_EQ(se->syncs_seen(), syncs) << "a sticky error must not sync again";
    EXPECT_TRUE(dev->Close().ok());
  }
  AIOKIT_OPEN_DEVICE_OR_SKIP(reopened, file.path(), o);
  ASSERT_TRUE(reopened->Write(0, PatternBuffer(*reopened, kBlock, 1, 0)).ok());
  EXPECT_TRUE(reopened->Flush().ok());
}

TEST_P(DeviceFaultTest, AFlushWithoutWritesSinceTheLastIsSkipped) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), Scripted(GetParam(), &se));
  ASSERT_TRUE(dev->Flush().ok());
  EXPECT_EQ(se->syncs_seen(), 0U);
  EXPECT_EQ(dev->Stats().flushes_skipped, 1U);
  ASSERT_TRUE(dev->Write(0, PatternBuffer(*dev, kBlock, 1, 0)).ok());
  ASSERT_TRUE(dev->Flush().ok());
  EXPECT_EQ(se->syncs_seen(), 1U);
  ASSERT_TRUE(dev->Flush().ok());
  EXPECT_EQ(se->syncs_seen(), 1U);
  // Reads do not make a flush necessary.
  ASSERT_TRUE(dev->ReadExactly(0, *dev->AllocateBuffer(kBlock)).ok());
  ASSERT_TRUE(dev->Flush().ok());
  EXPECT_EQ(se->syncs_seen(), 1U);
}

TEST_P(DeviceFaultTest, ConcurrentFlushesShareOneFdatasync) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  const DeviceOptions o = Scripted(GetParam(), &se);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  // The first flush's fdatasync is held; eight groups that commit after it
  // started wait for one more, shared.
  ScriptedEngine::Rules rules;
  rules.hold_syncs = true;
  se->SetRules(rules);
  IoContext first;
  ASSERT_TRUE(dev->AioWrite(0, PatternBuffer(*dev, kBlock, 1, 0), &first).ok());
  ASSERT_TRUE(dev->Submit(&first, ThenFlush::kYes).ok());
  ASSERT_TRUE(Eventually(*dev, o, [&] { return se->held() == 1; }));
  std::vector<std::unique_ptr<IoContext>> commits;
  for (int i = 1; i <= 8; ++i) {
    commits.push_back(std::make_unique<IoContext>());
    ASSERT_TRUE(dev->AioWrite(i * kBlock, PatternBuffer(*dev, kBlock, 1, 0),
                              commits.back().get())
                    .ok());
    ASSERT_TRUE(dev->Submit(commits.back().get(), ThenFlush::kYes).ok());
  }
  ASSERT_TRUE(
      Eventually(*dev, o, [&] { return dev->Stats().flush_waiters == 9; }));
  EXPECT_EQ(dev->Stats().fdatasyncs, 1U);
  se->Release();
  ASSERT_TRUE(first.Wait().ok());
  for (auto& c : commits) ASSERT_TRUE(c->Wait().ok()) << c->status().ToString();
  EXPECT_EQ(dev->Stats().fdatasyncs, 2U);
  for (int i = 0; i <= 8; ++i) EXPECT_TRUE(se->Durable(i * kBlock)) << i;
}

TEST_P(DeviceFaultTest, EveryFlushCoversTheWritesItsCallerSawComplete) {
  constexpr int kThreads = 6;
  constexpr int kRounds = 20;
  PatternFile file(kThreads * kRounds * kBlock, 1);
  ScriptedEngine* se = nullptr;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), Scripted(GetParam(), &se));
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int r = 0; r < kRounds; ++r) {
        const uint64_t at = (t * kRounds + r) * kBlock;
        Status s = dev->Write(at, PatternBuffer(*dev, kBlock, t, at));
        if (s.ok()) s = dev->Flush();
        if (!s.ok()) {
          failures[t] = s.ToString();
          return;
        }
        if (!se->Durable(at)) {
          failures[t] = "Flush returned before a sync covered offset " +
                        std::to_string(at);
          return;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << t;
  EXPECT_LE(dev->Stats().fdatasyncs, uint64_t{kThreads * kRounds});
}

TEST_P(DeviceFaultTest, ADeadlinePassingWhileARequestIsHeldReportsATimeout) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  DeviceOptions o = Scripted(GetParam(), &se);
  o.buffer_count = 1;
  o.buffer_size = 64 * 1024;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  ScriptedEngine::Rules rules;
  rules.hold_offset = 64 * 1024;
  rules.hold_length = kBlock;
  se->SetRules(rules);
  Result<Buffer> pooled = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(pooled.ok());
  ASSERT_EQ(pooled->registered_index(), 0) << "the pool's only buffer";
  IoContext ioc;
  ioc.set_request_timeout(std::chrono::milliseconds(50));
  ASSERT_TRUE(dev->AioRead(64 * 1024, *pooled, &ioc).ok());
  // A request beside the held one, in a context without a deadline (on a
  // loaded machine even an unheld read may outlast 50 ms): it completes.
  IoContext beside;
  ASSERT_TRUE(dev->AioRead(0, *dev->AllocateBuffer(kBlock), &beside).ok());
  IoContext* both[] = {&ioc, &beside};
  ASSERT_TRUE(dev->Submit(both).ok());
  EXPECT_TRUE(beside.Wait().ok()) << beside.status().ToString();
  Status s = ioc.Wait();
  ASSERT_TRUE(s.Is(Errc::kTimedOut)) << s.ToString();
  EXPECT_NE(s.context().find("read of \"" + file.path() + "\" at offset 65536"),
            std::string::npos)
      << s.ToString();
  EXPECT_NE(s.context().find("pinned"), std::string::npos) << s.ToString();
  EXPECT_EQ(dev->Stats().timed_out, 1U);
  EXPECT_EQ(dev->Stats().pinned, 1U);
  // The request still holds the buffer: it is not reused.
  EXPECT_GE(pooled->use_count(), 2U);
  const uintptr_t held_at = reinterpret_cast<uintptr_t>(pooled->data());
  pooled = Buffer();
  Result<Buffer> other = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->registered_index(), -1);
  EXPECT_NE(reinterpret_cast<uintptr_t>(other->data()), held_at);
  // The late completion is accounted for, and the buffer comes back.
  se->Release();
  ASSERT_TRUE(Eventually(*dev, o, [&] { return dev->Stats().pinned == 0; }));
  Result<Buffer> again = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->registered_index(), 0);
  // The context is usable again (without the deadline, which a loaded
  // machine may pass even with nothing held).
  ioc.Reset();
  ioc.set_request_timeout(std::chrono::nanoseconds(0));
  ASSERT_TRUE(dev->AioRead(0, *again, &ioc).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  EXPECT_TRUE(ioc.Wait().ok()) << ioc.status().ToString();
}

// A cancel the engine takes but cannot carry out (io_uring on a worker in an
// uninterruptible wait): the context still hears of the deadline, a poll
// interval later, and the late completion is accounted for.
TEST_P(DeviceFaultTest, ACancelThatDoesNotStopTheRequestStillReportsATimeout) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  DeviceOptions o = Scripted(GetParam(), &se);
  o.poll_interval = std::chrono::milliseconds(20);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  ScriptedEngine::Rules rules;
  rules.hold_offset = 64 * 1024;
  rules.hold_length = kBlock;
  rules.cancel_ignored = true;
  se->SetRules(rules);
  IoContext ioc;
  ioc.set_request_timeout(std::chrono::milliseconds(50));
  ASSERT_TRUE(dev->AioRead(64 * 1024, *dev->AllocateBuffer(kBlock), &ioc).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  // Bounded only so that a context that never hears fails here, not by
  // hanging: the device reports a poll interval after the deadline.
  Status s = ioc.Wait(std::chrono::seconds(30));
  ASSERT_TRUE(s.Is(Errc::kTimedOut)) << s.ToString();
  EXPECT_NE(s.context().find("took the cancel but has not stopped it"),
            std::string::npos)
      << s.ToString();
  EXPECT_EQ(dev->Stats().timed_out, 1U);
  EXPECT_EQ(dev->Stats().pinned, 1U);
  se->Release();
  ASSERT_TRUE(Eventually(*dev, o, [&] { return dev->Stats().pinned == 0; }));
  EXPECT_EQ(dev->Stats().timed_out, 1U);
}

TEST_P(DeviceFaultTest, CloseWaitsForATimedOutRequestToReallyComplete) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  DeviceOptions o = Scripted(GetParam(), &se);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  ScriptedEngine::Rules rules;
  rules.hold_offset = 0;
  rules.hold_length = kBlock;
  se->SetRules(rules);
  Result<Buffer> b = dev->AllocateBuffer(kBlock);
  IoContext ioc;
  ioc.set_request_timeout(std::chrono::milliseconds(20));
  ASSERT_TRUE(dev->AioRead(0, *b, &ioc).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(ioc.Wait().Is(Errc::kTimedOut));
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    EXPECT_TRUE(dev->Close().ok());
    closed.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(closed.load()) << "Close returned with a request pinned";
  se->Release();
  closer.join();
  EXPECT_TRUE(closed.load());
  EXPECT_EQ(b->use_count(), 1U);
}

TEST_P(DeviceFaultTest, CancelStopsAHeldRequestTheEngineCanStop) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  DeviceOptions o = Scripted(GetParam(), &se);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  ScriptedEngine::Rules rules;
  rules.hold_offset = 64 * 1024;
  rules.hold_length = kBlock;
  rules.cancel_held = true;
  se->SetRules(rules);
  std::atomic<int> callbacks{0};
  IoContext ioc([&](IoContext&) { callbacks.fetch_add(1); });
  ioc.set_cancellable(true);
  Result<Buffer> b = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(b.ok());
  uint64_t got = 99;
  ASSERT_TRUE(dev->AioRead(64 * 1024, *b, &ioc, &got).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(Eventually(*dev, o, [&] { return se->held() == 1; }));
  ASSERT_TRUE(dev->Cancel(&ioc).ok());
  Status s = ioc.Wait();
  EXPECT_EQ(s.Errno(), ECANCELED) << s.ToString();
  EXPECT_NE(s.context().find("at offset 65536"), std::string::npos)
      << s.ToString();
  EXPECT_NE(s.context().find("cancelled after 0 bytes"), std::string::npos)
      << s.ToString();
  EXPECT_EQ(got, 0U);
  EXPECT_EQ(callbacks.load(), 1);
  EXPECT_EQ(se->cancelled_held(), 1U);
  EXPECT_EQ(dev->Stats().cancelled, 1U);
  EXPECT_EQ(b->use_count(), 1U) << "the request let the buffer go";
  // A later Submit on the context runs as usual.
  se->Release();
  ioc.Reset();
  ASSERT_TRUE(dev->AioRead(64 * 1024, *b, &ioc).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  EXPECT_TRUE(ioc.Wait().ok()) << ioc.status().ToString();
  EXPECT_EQ(FirstMismatch(b->data(), kBlock, 1, 64 * 1024), -1);
  EXPECT_EQ(callbacks.load(), 2);
}

TEST_P(DeviceFaultTest, CancelOfARequestTheEngineCannotStopKeepsItsResult) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  DeviceOptions o = Scripted(GetParam(), &se);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  ScriptedEngine::Rules rules;
  rules.hold_offset = 0;
  rules.hold_length = kBlock;
  se->SetRules(rules);  // cancel_held off: kNotCancellable
  IoContext ioc;
  ioc.set_cancellable(true);
  Result<Buffer> b = dev->AllocateBuffer(kBlock);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(dev->AioRead(0, *b, &ioc).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(Eventually(*dev, o, [&] { return se->held() == 1; }));
  ASSERT_TRUE(dev->Cancel(&ioc).ok());
  // Still running: the context does not pretend otherwise.
  EXPECT_TRUE(ioc.Wait(std::chrono::milliseconds(20)).Is(Errc::kTimedOut));
  EXPECT_GE(b->use_count(), 2U);
  se->Release();
  EXPECT_TRUE(ioc.Wait().ok()) << ioc.status().ToString();
  EXPECT_EQ(FirstMismatch(b->data(), kBlock, 1, 0), -1);
  EXPECT_EQ(dev->Stats().cancelled, 0U);
}

TEST_P(DeviceFaultTest, CancelStartsNoFurtherPieceOfARequest) {
  PatternFile file(256 * 1024, 1);
  ScriptedEngine* se = nullptr;
  DeviceOptions o = Scripted(GetParam(), &se);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  // Every transfer comes back half done; the first piece is held (and
  // cannot be cancelled) until the cancel was asked.
  ScriptedEngine::Rules rules;
  rules.short_unit = kBlock;
  rules.hold_offset = 0;
  rules.hold_length = kBlock;
  se->SetRules(rules);
  IoContext ioc;
  ioc.set_cancellable(true);
  Result<Buffer> b = dev->AllocateBuffer(256 * 1024);
  ASSERT_TRUE(b.ok());
  uint64_t got = 0;
  ASSERT_TRUE(dev->AioRead(0, *b, &ioc, &got).ok());
  ASSERT_TRUE(dev->Submit(&ioc).ok());
  ASSERT_TRUE(Eventually(*dev, o, [&] { return se->held() == 1; }));
  ASSERT_TRUE(dev->Cancel(&ioc).ok());
  rules.hold_length = 0;
  se->SetRules(rules);
  se->Release();
  Status s = ioc.Wait();
  EXPECT_EQ(s.Errno(), ECANCELED) << s.ToString();
  EXPECT_NE(s.context().find("cancelled after 131072 bytes"), std::string::npos)
      << s.ToString();
  EXPECT_EQ(got, 128U * 1024);
  EXPECT_EQ(FirstMismatch(b->data(), got, 1, 0), -1);
  EXPECT_EQ(dev->Stats().cancelled, 1U);
}

TEST_P(DeviceFaultTest, CancelIsRefusedWhereItCannotFindTheRequests) {
  PatternFile file(64 * 1024, 1);
  ScriptedEngine* se = nullptr;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), Scripted(GetParam(), &se));
  EXPECT_TRUE(dev->Cancel(nullptr).Is(Errc::kInvalidArgument));
  IoContext plain;
  Status s = dev->Cancel(&plain);
  EXPECT_TRUE(s.Is(Errc::kInvalidArgument)) << s.ToString();
  EXPECT_NE(s.context().find("set_cancellable"), std::string::npos)
      << s.ToString();
  IoContext idle;
  idle.set_cancellable(true);
  EXPECT_TRUE(dev->Cancel(&idle).ok()) << "nothing running: nothing to do";
}

INSTANTIATE_TEST_SUITE_P(Engines, DeviceFaultTest,
                         ::testing::ValuesIn(DeviceParams()), EngineParamName);

}  // namespace
}  // namespace aiokit::testing
