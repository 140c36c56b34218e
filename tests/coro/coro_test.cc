// Coroutines on every engine (aiokit/coro.h): many concurrent coroutines
// moving checked data in batched submissions, stop requests racing
// completions, deadlines while a request blocks, and coroutines (and
// EngineIos) destroyed with requests in flight.

#include "aiokit/coro.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "device/device_util.h"
#include "device/scripted_engine.h"
#include "test_util.h"

namespace aiokit::testing {
namespace {

using coro::EngineIo;
using coro::Loop;
using coro::Task;

constexpr size_t kBlock = 4096;

struct Rig {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Loop> loop;
  std::unique_ptr<EngineIo> io;
};

class CoroTest : public ::testing::TestWithParam<std::string> {
 protected:
  // The engine the parameter names, a loop, and an EngineIo on them.
  void Make(Rig* rig, EngineOptions options = {}) {
    AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam(), options);
    Result<std::unique_ptr<Loop>> loop = Loop::Create();
    ASSERT_TRUE(loop.ok()) << loop.status().ToString();
    Result<std::unique_ptr<EngineIo>> io = EngineIo::Create(**loop, *engine);
    ASSERT_TRUE(io.ok()) << io.status().ToString();
    rig->engine = std::move(engine);
    rig->loop = std::move(*loop);
    rig->io = std::move(*io);
  }
};

Task<std::string> WriteThenRead(EngineIo& io, int fd, uint64_t block) {
  Buffer out = *Buffer::Allocate(kBlock);
  FillPattern(out.data(), kBlock, block, block * kBlock);
  Result<size_t> w = co_await io.Write(fd, block * kBlock, out);
  if (!w.ok()) co_return w.status().ToString();
  if (*w != kBlock) co_return "short write " + std::to_string(*w);
  Buffer in = *Buffer::Allocate(kBlock);
  Result<size_t> r = co_await io.Read(fd, block * kBlock, in);
  if (!r.ok()) co_return r.status().ToString();
  if (*r != kBlock) co_return "short read " + std::to_string(*r);
  if (FirstMismatch(in.data(), kBlock, block, block * kBlock) != -1) {
    co_return "block " + std::to_string(block) + " read back wrong";
  }
  co_return "";
}

TEST_P(CoroTest, TenThousandCoroutinesMoveCheckedDataInBatches) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  constexpr size_t kCoroutines = 10000;
  File f = ScratchFile(0, 0);
  std::vector<Task<std::string>> tasks;
  tasks.reserve(kCoroutines);
  for (size_t i = 0; i < kCoroutines; ++i) {
    tasks.push_back(WriteThenRead(*rig.io, f.fd(), i));
  }
  std::vector<std::string> errors =
      rig.loop->Run(coro::WhenAll(std::move(tasks)));
  ASSERT_EQ(errors.size(), kCoroutines);
  size_t bad = 0;
  for (size_t i = 0; i < kCoroutines; ++i) {
    if (!errors[i].empty()) {
      if (++bad < 5) ADD_FAILURE() << "coroutine " << i << ": " << errors[i];
    }
  }
  EXPECT_EQ(bad, 0U);
  EXPECT_EQ(rig.io->in_flight(), 0U);
  // Every coroutine started its write in the same turn: far fewer
  // submissions than requests.
  EXPECT_LT(rig.io->submit_calls(), 2 * kCoroutines / 4)
      << "submissions for " << 2 * kCoroutines << " requests";
}

Task<void> Fsyncs(EngineIo& io, int fd, std::string* error) {
  Buffer b = *Buffer::Allocate(kBlock);
  std::vector<Buffer> two = {b, b};
  Result<size_t> r = co_await io.Writev(fd, 0, two);
  if (!r.ok() || *r != 2 * kBlock) {
    *error = "writev: " + (r.ok() ? std::to_string(*r) : r.status().ToString());
    co_return;
  }
  r = co_await io.Readv(fd, 0, two);
  if (!r.ok() || *r != 2 * kBlock) {
    *error = "readv: " + (r.ok() ? std::to_string(*r) : r.status().ToString());
    co_return;
  }
  r = co_await io.Fsync(fd);
  if (!r.ok()) *error = r.status().ToString();
  r = co_await io.Fdatasync(fd);
  if (!r.ok()) *error = r.status().ToString();
}

TEST_P(CoroTest, VectoredIoAndSyncs) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  File f = ScratchFile(2 * kBlock, 1);
  std::string error;
  rig.loop->Run(Fsyncs(*rig.io, f.fd(), &error));
  EXPECT_EQ(error, "");
}

Task<Result<size_t>> ReadOnce(EngineIo& io, int fd, uint64_t off, Buffer b,
                              coro::OpOptions opts, int* resumed) {
  Result<size_t> r = co_await io.Read(fd, off, std::move(b), std::move(opts));
  ++*resumed;
  co_return r;
}

TEST_P(CoroTest, AnErrorComesBackAsAValueWithContext) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  int resumed = 0;
  Result<size_t> r = rig.loop->Run(ReadOnce(
      *rig.io, 1 << 30, 4096, *Buffer::Allocate(kBlock), {}, &resumed));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().Errno(), EBADF) << r.status().ToString();
  EXPECT_NE(r.status().context().find("read fd=1073741824 offset=4096"),
            std::string::npos)
      << r.status().ToString();
  EXPECT_EQ(resumed, 1);
}

// Stop requests from another thread racing completions: each coroutine
// resumes exactly once, with its bytes or ECANCELED, and its buffer is not
// written after it resumed.
Task<void> StoppableRead(EngineIo& io, int fd, uint64_t off, Buffer b,
                         std::stop_token stop, std::atomic<int>* resumed,
                         std::atomic<int>* cancelled, std::string* error) {
  coro::OpOptions o;
  o.stop = std::move(stop);
  Buffer keep = b;
  Result<size_t> r = co_await io.Read(fd, off, std::move(b), o);
  resumed->fetch_add(1);
  if (!r.ok()) {
    if (r.status().Errno() == ECANCELED) {
      cancelled->fetch_add(1);
    } else {
      *error = r.status().ToString();
    }
  } else if (*r != kBlock) {
    *error = "short read";
  }
  // From here on nobody may write it: checked at the end.
  std::memset(keep.data(), 0x5a, keep.size());
}

TEST_P(CoroTest, StopRacingCompletionResumesOnceAndLeavesTheBufferAlone) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  constexpr int kReads = 2000;
  File f = ScratchFile(64 * kBlock, 3);
  std::vector<std::stop_source> stops(kReads);
  std::vector<Buffer> bufs;
  std::atomic<int> resumed{0}, cancelled{0};
  std::string error;
  std::vector<Task<void>> tasks;
  for (int i = 0; i < kReads; ++i) {
    bufs.push_back(*Buffer::Allocate(kBlock));
    tasks.push_back(StoppableRead(*rig.io, f.fd(), (i % 64) * kBlock, bufs[i],
                                  stops[i].get_token(), &resumed, &cancelled,
                                  &error));
  }
  std::atomic<bool> go{false};
  std::thread stopper([&] {
    while (!go.load()) std::this_thread::yield();
    std::mt19937 rng(7);
    for (int i = 0; i < kReads; ++i) {
      if (rng() % 2 == 0) stops[i].request_stop();
      if (rng() % 64 == 0) std::this_thread::yield();
    }
  });
  go.store(true);
  rig.loop->Run(coro::WhenAll(std::move(tasks)));
  stopper.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(resumed.load(), kReads);
  // Nothing is left with the engine, so nothing can write the buffers now.
  rig.io.reset();
  for (int i = 0; i < kReads; ++i) {
    for (size_t k = 0; k < kBlock; ++k) {
      if (bufs[i].data()[k] != 0x5a) {
        ADD_FAILURE() << "buffer " << i << " written after its coroutine "
                      << "resumed (byte " << k << ")";
        break;
      }
    }
  }
}

TEST_P(CoroTest, ADeadlineWhileARequestBlocks) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  if (!rig.engine->GetCapabilities().async_buffered_io) {
    GTEST_SKIP() << GetParam() << ": a pipe read blocks inside Submit here";
  }
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  int resumed = 0;
  coro::OpOptions o;
  o.timeout = std::chrono::milliseconds(50);
  // The writer comes later: an engine that cannot stop a started read gets
  // the byte then, and the coroutine resumes with it.
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    (void)!::write(p[1], "x", 1);
  });
  Buffer b = *Buffer::Allocate(kBlock);
  Result<size_t> r = rig.loop->Run(ReadOnce(*rig.io, p[0], 0, b, o, &resumed));
  writer.join();
  EXPECT_EQ(resumed, 1);
  if (r.ok()) {
    EXPECT_EQ(*r, 1U);  // not cancellable in time: its real result
  } else {
    EXPECT_TRUE(r.status().Is(Errc::kTimedOut)) << r.status().ToString();
    EXPECT_NE(r.status().context().find("deadline"), std::string::npos);
  }
  rig.io.reset();
  ::close(p[0]);
  ::close(p[1]);
}

Task<void> ReadPipe(EngineIo& io, int fd, Buffer b, bool* resumed) {
  (void)co_await io.Read(fd, 0, std::move(b));
  *resumed = true;
}

TEST_P(CoroTest, DestroyingASuspendedCoroutineDetachesItsRequest) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  if (!rig.engine->GetCapabilities().async_buffered_io) {
    GTEST_SKIP() << GetParam() << ": a pipe read blocks inside Submit here";
  }
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  bool resumed = false;
  std::vector<char>* freed_check = nullptr;
  (void)freed_check;
  {
    Buffer b = *Buffer::Allocate(kBlock);
    Task<void> t = ReadPipe(*rig.io, p[0], b, &resumed);
    t.handle().resume();  // runs to the co_await and suspends
    ASSERT_TRUE(rig.loop->RunOnce(std::chrono::milliseconds(0)).ok());
    EXPECT_EQ(rig.io->in_flight(), 1U);
    EXPECT_GE(b.use_count(), 2U) << "the request holds the buffer";
    // The frame goes (and with this scope, the test's own handle).
  }
  // The kernel (or a worker) may still write into the buffer: it is alive,
  // held by the detached request, until the request completes.
  ASSERT_EQ(::write(p[1], "y", 1), 1);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (rig.io->in_flight() != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(rig.loop->RunOnce(std::chrono::milliseconds(10)).ok());
  }
  EXPECT_EQ(rig.io->in_flight(), 0U);
  EXPECT_EQ(rig.io->quarantined(), 1U);
  EXPECT_FALSE(resumed);
  ::close(p[0]);
  ::close(p[1]);
}

TEST_P(CoroTest, DestroyingEverythingWithRequestsInFlight) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  if (!rig.engine->GetCapabilities().async_buffered_io) {
    GTEST_SKIP() << GetParam() << ": a pipe read blocks inside Submit here";
  }
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  bool resumed = false;
  rig.loop->Spawn(ReadPipe(*rig.io, p[0], *Buffer::Allocate(kBlock), &resumed));
  ASSERT_TRUE(rig.loop->RunOnce(std::chrono::milliseconds(0)).ok());
  EXPECT_EQ(rig.io->in_flight(), 1U);
  // An engine that cannot cancel a started pipe read needs the byte.
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    (void)!::write(p[1], "z", 1);
  });
  rig.io.reset();    // cancels or waits; the coroutine is let go
  rig.loop.reset();  // destroys the suspended coroutine
  writer.join();
  EXPECT_FALSE(resumed);
  ::close(p[0]);
  ::close(p[1]);
}

Task<int> Value(Loop& loop, int v, std::chrono::milliseconds wait) {
  (void)co_await loop.Sleep(wait);
  co_return v;
}

TEST_P(CoroTest, WhenAllGivesTheValuesInOrder) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  std::vector<Task<int>> tasks;
  tasks.reserve(5);
  for (int i = 0; i < 5; ++i) {
    tasks.push_back(
        Value(*rig.loop, i, std::chrono::milliseconds((5 - i) * 3)));
  }
  std::vector<int> got = rig.loop->Run(coro::WhenAll(std::move(tasks)));
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
}

Task<bool> SleepStopped(Loop& loop, std::stop_token stop) {
  co_return co_await loop.Sleep(std::chrono::seconds(60), std::move(stop));
}

TEST_P(CoroTest, ASleepEndsEarlyOnAStopRequest) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  std::stop_source stop;
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    stop.request_stop();
  });
  const bool whole = rig.loop->Run(SleepStopped(*rig.loop, stop.get_token()));
  stopper.join();
  EXPECT_FALSE(whole);
}

// An executor on a thread of its own.
class ThreadExecutor final : public coro::Executor {
 public:
  ThreadExecutor() : t_([this] { Main(); }) {}
  ~ThreadExecutor() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    t_.join();
  }
  void Post(std::coroutine_handle<> h) override {
    {
      std::lock_guard lock(mu_);
      q_.push_back(h);
    }
    cv_.notify_all();
  }
  std::thread::id id() const { return t_.get_id(); }

 private:
  void Main() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;
      std::coroutine_handle<> h = q_.front();
      q_.erase(q_.begin());
      lock.unlock();
      h.resume();
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::coroutine_handle<>> q_;
  bool stop_ = false;
  std::thread t_;
};

// Resumes the awaiting coroutine on the loop's thread (from an executor's).
struct BackTo {
  explicit BackTo(Loop& loop) : l(&loop) {}
  Loop* l;
  bool await_ready() { return false; }
  void await_suspend(std::coroutine_handle<> h) const { l->Post(h); }
  void await_resume() {}
};

Task<void> ReadOnExecutor(EngineIo& io, Loop& loop, int fd, coro::Executor* ex,
                          std::thread::id* where) {
  coro::OpOptions o;
  o.executor = ex;
  (void)co_await io.Read(fd, 0, *Buffer::Allocate(kBlock), o);
  *where = std::this_thread::get_id();
  // Back to the loop's thread to finish there.
  co_await BackTo(loop);
}

TEST_P(CoroTest, ACoroutineResumesOnTheExecutorItAsksFor) {
  Rig rig;
  Make(&rig);
  if (rig.io == nullptr) return;
  File f = ScratchFile(kBlock, 4);
  ThreadExecutor ex;
  std::thread::id where;
  rig.loop->Run(ReadOnExecutor(*rig.io, *rig.loop, f.fd(), &ex, &where));
  EXPECT_EQ(where, ex.id());
}

INSTANTIATE_TEST_SUITE_P(Engines, CoroTest, ::testing::ValuesIn(PlainEngines()),
                         EngineParamName);

// ---- The device layer, in every reaping mode ----

class CoroDeviceTest : public ::testing::TestWithParam<std::string> {};

Task<std::string> DeviceWriteReadFlush(coro::DeviceIo& io, uint64_t block) {
  Buffer out = *io.device().AllocateBuffer(kBlock);
  FillPattern(out.data(), kBlock, block, block * kBlock);
  // Two buffers in one write, to go through the vectored path.
  std::vector<Buffer> halves = {out.Slice(0, kBlock / 2),
                                out.Slice(kBlock / 2, kBlock / 2)};
  Result<size_t> w = co_await io.Write(block * kBlock, halves);
  if (!w.ok()) co_return w.status().ToString();
  Result<size_t> f = co_await io.Flush();
  if (!f.ok()) co_return f.status().ToString();
  Buffer in = *io.device().AllocateBuffer(kBlock);
  // Odd blocks come back through the vectored read, into three pieces.
  std::vector<Buffer> pieces = {in.Slice(0, kBlock / 4),
                                in.Slice(kBlock / 4, kBlock / 2),
                                in.Slice(3 * kBlock / 4, kBlock / 4)};
  Result<size_t> r = block % 2 == 1 ? co_await io.Read(block * kBlock, pieces)
                                    : co_await io.Read(block * kBlock, in);
  if (!r.ok()) co_return r.status().ToString();
  if (*r != kBlock) co_return "short read " + std::to_string(*r);
  if (FirstMismatch(in.data(), kBlock, block, block * kBlock) != -1) {
    co_return "block " + std::to_string(block) + " read back wrong";
  }
  co_return "";
}

TEST_P(CoroDeviceTest, CoroutinesWriteFlushAndReadThroughTheDevice) {
  PatternFile file(1 << 20, 0);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok());
  Result<std::unique_ptr<coro::DeviceIo>> io =
      coro::DeviceIo::Create(**loop, *dev);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  constexpr size_t kCoroutines = 256;
  std::vector<Task<std::string>> tasks;
  for (size_t i = 0; i < kCoroutines; ++i) {
    tasks.push_back(DeviceWriteReadFlush(**io, i));
  }
  std::vector<std::string> errors =
      (*loop)->Run(coro::WhenAll(std::move(tasks)));
  ASSERT_EQ(errors.size(), kCoroutines);
  for (size_t i = 0; i < kCoroutines; ++i) EXPECT_EQ(errors[i], "") << i;
  EXPECT_EQ((*io)->in_flight(), 0U);
  // Flushes were shared: fewer fdatasyncs than flushes asked.
  EXPECT_LE(dev->Stats().fdatasyncs, kCoroutines);
  // Errors come back as values: past the end of the file, and misaligned.
  Task<std::string> bad = [](coro::DeviceIo& d) -> Task<std::string> {
    Buffer b = *d.device().AllocateBuffer(kBlock);
    Result<size_t> r = co_await d.Read(4 << 20, b);
    if (!r.ok() || *r != 0) co_return "read past the end: not 0 bytes";
    Result<size_t> m = co_await d.Read(100, b);
    if (m.ok() || !m.status().Is(Errc::kMisaligned)) {
      co_return "misaligned read: " + m.status().ToString();
    }
    co_return "";
  }(**io);
  EXPECT_EQ((*loop)->Run(std::move(bad)), "");
}

Task<void> DeviceReadDetached(coro::DeviceIo& io, Buffer b, bool* resumed) {
  (void)co_await io.Read(0, std::move(b));
  *resumed = true;
}

TEST_P(CoroDeviceTest, ADestroyedCoroutineLetsItsGroupCompleteIntoThePool) {
  PatternFile file(1 << 20, 0);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok());
  Result<std::unique_ptr<coro::DeviceIo>> io =
      coro::DeviceIo::Create(**loop, *dev);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  bool resumed = false;
  {
    Task<void> t =
        DeviceReadDetached(**io, *dev->AllocateBuffer(kBlock), &resumed);
    t.handle().resume();  // submitted; the frame goes now
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((*io)->in_flight() != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE((*loop)->RunOnce(std::chrono::milliseconds(5)).ok());
  }
  EXPECT_EQ((*io)->in_flight(), 0U);
  // 1 when the frame went first; 0 when the group completed first (on a
  // completion thread, or inside Submit on sync). CoroDeviceHeldTest holds
  // the request to see the first case every time.
  EXPECT_LE((*io)->quarantined(), 1U);
  // Run the loop once more: a resumption posted for the destroyed frame (if
  // the group completed first) was taken back.
  ASSERT_TRUE((*loop)->RunOnce(std::chrono::milliseconds(0)).ok());
  EXPECT_FALSE(resumed);
}

// The device layer's stop path: each coroutine resumes once, with its
// bytes or ECANCELED, and nothing writes its buffer after it resumed.
Task<void> DeviceStoppableRead(coro::DeviceIo& io, uint64_t off, Buffer b,
                               std::stop_token stop, std::atomic<int>* resumed,
                               std::atomic<int>* cancelled,
                               std::string* error) {
  coro::OpOptions o;
  o.stop = std::move(stop);
  Buffer keep = b;
  Result<size_t> r = co_await io.Read(off, std::move(b), o);
  resumed->fetch_add(1);
  if (!r.ok()) {
    if (r.status().Errno() == ECANCELED) {
      cancelled->fetch_add(1);
    } else {
      *error = r.status().ToString();
    }
  } else if (*r != kBlock) {
    *error = "short read";
  } else if (FirstMismatch(keep.data(), kBlock, 3, off) != -1) {
    *error = "read at " + std::to_string(off) + " gave other bytes";
  }
  // Only this handle and the test's are left: no request holds it any more.
  if (keep.use_count() != 2) *error = "a request still holds the buffer";
  std::memset(keep.data(), 0x5a, keep.size());
}

TEST_P(CoroDeviceTest, StopRacingCompletionResumesOnceAndLeavesTheBufferAlone) {
  PatternFile file(64 * kBlock, 3);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok());
  Result<std::unique_ptr<coro::DeviceIo>> io =
      coro::DeviceIo::Create(**loop, *dev);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  constexpr int kReads = 2000;
  std::vector<std::stop_source> stops(kReads);
  std::vector<Buffer> bufs;
  std::atomic<int> resumed{0}, cancelled{0};
  std::string error;
  std::vector<Task<void>> tasks;
  for (int i = 0; i < kReads; ++i) {
    bufs.push_back(*dev->AllocateBuffer(kBlock));
    tasks.push_back(DeviceStoppableRead(**io, (i % 64) * kBlock, bufs[i],
                                        stops[i].get_token(), &resumed,
                                        &cancelled, &error));
  }
  std::atomic<bool> go{false};
  std::thread stopper([&] {
    while (!go.load()) std::this_thread::yield();
    std::mt19937 rng(7);
    for (int i = 0; i < kReads; ++i) {
      if (rng() % 2 == 0) stops[i].request_stop();
      if (rng() % 64 == 0) std::this_thread::yield();
    }
  });
  go.store(true);
  (*loop)->Run(coro::WhenAll(std::move(tasks)));
  stopper.join();
  EXPECT_EQ(error, "");
  EXPECT_EQ(resumed.load(), kReads);
  EXPECT_EQ((*io)->in_flight(), 0U);
  EXPECT_EQ(dev->Stats().cancelled, static_cast<uint64_t>(cancelled.load()));
  RecordProperty("cancelled", cancelled.load());
  io->reset();
  for (int i = 0; i < kReads; ++i) {
    for (size_t k = 0; k < kBlock; ++k) {
      if (bufs[i].data()[k] != 0x5a) {
        ADD_FAILURE() << "buffer " << i << " written after its coroutine "
                      << "resumed (byte " << k << ")";
        break;
      }
    }
  }
}

// A device whose engine holds the request at offset 0 (ScriptedEngine), a
// loop and a DeviceIo on it.
struct HeldRig {
  ScriptedEngine* se = nullptr;
  std::unique_ptr<Device> dev;
  std::unique_ptr<Loop> loop;
  std::unique_ptr<coro::DeviceIo> io;
};

Task<Result<size_t>> DeviceReadWith(coro::DeviceIo& io, Buffer b,
                                    coro::OpOptions o,
                                    const std::atomic<bool>* released,
                                    bool* released_when_resumed) {
  Result<size_t> r = co_await io.Read(0, std::move(b), std::move(o));
  *released_when_resumed = released->load();
  co_return r;
}

class CoroDeviceHeldTest : public ::testing::TestWithParam<std::string> {
 protected:
  void Make(HeldRig* rig, const std::string& path, bool cancel_held) {
    DeviceOptions o = DeviceOptionsFor(GetParam());
    ScriptedEngine** out = &rig->se;
    o.wrap_engine =
        [out](std::unique_ptr<Engine> e) -> Result<std::unique_ptr<Engine>> {
      auto s = std::make_unique<ScriptedEngine>(std::move(e));
      *out = s.get();
      return std::unique_ptr<Engine>(std::move(s));
    };
    AIOKIT_OPEN_DEVICE_OR_SKIP(dev, path, o);
    ScriptedEngine::Rules rules;
    rules.hold_offset = 0;
    rules.hold_length = kBlock;
    rules.cancel_held = cancel_held;
    rig->se->SetRules(rules);
    Result<std::unique_ptr<Loop>> loop = Loop::Create();
    ASSERT_TRUE(loop.ok());
    Result<std::unique_ptr<coro::DeviceIo>> io =
        coro::DeviceIo::Create(**loop, *dev);
    ASSERT_TRUE(io.ok()) << io.status().ToString();
    rig->dev = std::move(dev);
    rig->loop = std::move(*loop);
    rig->io = std::move(*io);
  }
};

TEST_P(CoroDeviceHeldTest, ADeadlineCancelsAHeldRequestAndResumesAfterIt) {
  PatternFile file(64 * kBlock, 3);
  HeldRig rig;
  Make(&rig, file.path(), /*cancel_held=*/true);
  if (rig.io == nullptr) return;
  coro::OpOptions o;
  o.timeout = std::chrono::milliseconds(30);
  std::atomic<bool> released{false};
  bool released_when_resumed = true;
  Buffer b = *rig.dev->AllocateBuffer(kBlock);
  Result<size_t> r = rig.loop->Run(
      DeviceReadWith(*rig.io, b, o, &released, &released_when_resumed));
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().Is(Errc::kTimedOut)) << r.status().ToString();
  EXPECT_NE(r.status().context().find("cancelled after 0 bytes"),
            std::string::npos)
      << r.status().ToString();
  EXPECT_NE(r.status().context().find("deadline"), std::string::npos);
  EXPECT_EQ(rig.se->cancelled_held(), 1U);
  EXPECT_EQ(b.use_count(), 1U) << "the request had let the buffer go";
}

TEST_P(CoroDeviceHeldTest, ADeadlineTheEngineCannotHonourWaitsForTheResult) {
  PatternFile file(64 * kBlock, 3);
  HeldRig rig;
  Make(&rig, file.path(), /*cancel_held=*/false);
  if (rig.io == nullptr) return;
  coro::OpOptions o;
  o.timeout = std::chrono::milliseconds(20);
  std::atomic<bool> released{false};
  bool released_when_resumed = false;
  // The request is released only once the deadline has passed and the
  // engine refused to cancel it: the coroutine must still be suspended.
  std::thread releaser([&] {
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (rig.se->held() == 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    released.store(true);
    rig.se->Release();
  });
  Buffer b = *rig.dev->AllocateBuffer(kBlock);
  Result<size_t> r = rig.loop->Run(
      DeviceReadWith(*rig.io, b, o, &released, &released_when_resumed));
  releaser.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, kBlock);
  EXPECT_TRUE(released_when_resumed) << "resumed before the request completed";
  EXPECT_EQ(FirstMismatch(b.data(), kBlock, 3, 0), -1);
  EXPECT_EQ(b.use_count(), 1U);
}

TEST_P(CoroDeviceHeldTest, ADestroyedCoroutineLetsItsGroupCompleteIntoThePool) {
  PatternFile file(64 * kBlock, 3);
  HeldRig rig;
  Make(&rig, file.path(), /*cancel_held=*/false);
  if (rig.io == nullptr) return;
  bool resumed = false;
  Buffer b = *rig.dev->AllocateBuffer(kBlock);
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  {
    Task<void> t = DeviceReadDetached(*rig.io, b, &resumed);
    t.handle().resume();  // submitted
    while (rig.se->held() == 0 && std::chrono::steady_clock::now() < until) {
      ASSERT_TRUE(rig.loop->RunOnce(std::chrono::milliseconds(1)).ok());
    }
    ASSERT_EQ(rig.se->held(), 1U);
  }  // the frame goes while the engine holds the request
  EXPECT_GE(b.use_count(), 2U) << "the request holds the buffer";
  rig.se->Release();
  while (rig.io->in_flight() != 0 && std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(rig.loop->RunOnce(std::chrono::milliseconds(5)).ok());
  }
  EXPECT_EQ(rig.io->in_flight(), 0U);
  EXPECT_EQ(rig.io->quarantined(), 1U);
  ASSERT_TRUE(rig.loop->RunOnce(std::chrono::milliseconds(0)).ok());
  EXPECT_FALSE(resumed);
  EXPECT_EQ(b.use_count(), 1U);
}

Task<void> DeviceReadOnExecutor(coro::DeviceIo& io, Loop& loop,
                                coro::Executor* ex, std::thread::id* where) {
  coro::OpOptions o;
  o.executor = ex;
  (void)co_await io.Read(0, *io.device().AllocateBuffer(kBlock), o);
  *where = std::this_thread::get_id();
  co_await BackTo(loop);
}

TEST_P(CoroDeviceTest, ACoroutineResumesOnTheExecutorItAsksFor) {
  PatternFile file(64 * kBlock, 3);
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), DeviceOptionsFor(GetParam()));
  Result<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok());
  Result<std::unique_ptr<coro::DeviceIo>> io =
      coro::DeviceIo::Create(**loop, *dev);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  ThreadExecutor ex;
  std::thread::id where;
  (*loop)->Run(DeviceReadOnExecutor(**io, **loop, &ex, &where));
  EXPECT_EQ(where, ex.id());
}

INSTANTIATE_TEST_SUITE_P(Engines, CoroDeviceHeldTest,
                         ::testing::ValuesIn(DeviceParams()), EngineParamName);

INSTANTIATE_TEST_SUITE_P(Engines, CoroDeviceTest,
                         ::testing::ValuesIn(DeviceParams()), EngineParamName);

}  // namespace
}  // namespace aiokit::testing
