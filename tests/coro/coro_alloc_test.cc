// Coroutine operations allocate nothing per operation in steady state: an
// EngineIo's requests live in its pool of slots, a DeviceIo's groups in its
// pool of contexts, and the loop's queues keep their capacity. Eight
// long-lived coroutines each do 600 reads and writes, one at a time; the
// heap is counted (operator new replaced in this binary) from the moment the
// last of them finished its first 300 until the first of them finished all
// (a run where those moments come in the other order is run again).

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "aiokit/coro.h"
#include "alloc_counter.h"
#include "device/device_util.h"
#include "test_util.h"

namespace aiokit::testing {
namespace {

using coro::Loop;
using coro::Task;

constexpr size_t kBlock = 4096;
constexpr int kDepth = 8;
constexpr int kWarm = 300;
constexpr int kCounted = 300;
constexpr uint64_t kBlocks = 128;

// Shared by the coroutines of one run (all on the loop's thread).
struct Window {
  int warmed = 0;
  int finished = 0;
  uint64_t ops_counted = 0;
};

// Before each operation: opens the window when the last coroutine has
// warmed up, unless one has finished already (no window then), and counts
// the operations inside it.
void Tick(Window* w, int r) {
  if (r == kWarm && ++w->warmed == kDepth && w->finished == 0) {
    g_counting.store(true);
  }
  if (g_counting.load()) ++w->ops_counted;
}

// After the loop: the first coroutine to finish closes the window.
void Close(Window* w) {
  if (w->finished++ == 0) g_counting.store(false);
}

template <typename Io, typename Start>
Task<std::string> Worker(Io& io, Buffer b, int index, Window* w, Start start) {
  for (int r = 0; r < kWarm + kCounted; ++r) {
    Tick(w, r);
    const uint64_t off = ((r * kDepth + index) % kBlocks) * kBlock;
    Result<size_t> n = co_await start(io, off, b, r % 2 == 0);
    if (!n.ok() || *n != kBlock) {
      g_counting.store(false);
      co_return n.ok() ? "short transfer" : n.status().ToString();
    }
  }
  Close(w);
  co_return "";
}

// Runs the kDepth coroutines that `make(i, &w)` returns on `loop` until a
// run's window holds at least one coroutine's share of operations, at most
// five times, and checks that run. (The engines complete requests in any
// order: on a busy machine one coroutine may finish before another has
// warmed up, and that run tells nothing.)
template <typename Make>
void RunAndCheck(Loop& loop, Make make) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    Window w;
    std::vector<Task<std::string>> tasks;
    tasks.reserve(kDepth);
    for (int i = 0; i < kDepth; ++i) tasks.push_back(make(i, &w));
    g_allocations.store(0);
    std::vector<std::string> errors = loop.Run(coro::WhenAll(std::move(tasks)));
    g_counting.store(false);
    for (const std::string& e : errors) ASSERT_EQ(e, "");
    if (w.ops_counted < uint64_t{kCounted}) continue;
    EXPECT_EQ(g_allocations.load(), 0U)
        << "heap allocations in " << w.ops_counted << " operations";
    return;
  }
  ADD_FAILURE() << "in five runs no window held " << kCounted
                << " operations (one coroutine finished before the others "
                   "warmed up)";
}

class CoroAllocTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CoroAllocTest, EngineIoAllocatesNothingPerOperation) {
  EngineOptions options;
  // A fixed worker pool: a worker made again after idling allocates.
  options.threads_min = 4;
  options.threads_max = 4;
  AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam(), options);
  File f = ScratchFile(kBlocks * kBlock, 1);
  Result<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok());
  Result<std::unique_ptr<coro::EngineIo>> io =
      coro::EngineIo::Create(**loop, *engine);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  const int fd = f.fd();
  auto start = [fd](coro::EngineIo& e, uint64_t off, const Buffer& b,
                    bool read) {
    return read ? e.Read(fd, off, b) : e.Write(fd, off, b);
  };
  RunAndCheck(**loop, [&](int i, Window* w) {
    return Worker(**io, *Buffer::Allocate(kBlock), i, w, start);
  });
}

INSTANTIATE_TEST_SUITE_P(Engines, CoroAllocTest,
                         ::testing::ValuesIn(PlainEngines()), EngineParamName);

class CoroDeviceAllocTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CoroDeviceAllocTest, DeviceIoAllocatesNothingPerOperation) {
  PatternFile file(kBlocks * kBlock, 1);
  DeviceOptions o = DeviceOptionsFor(GetParam());
  o.engine.threads_min = 4;
  o.engine.threads_max = 4;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  Result<std::unique_ptr<Loop>> loop = Loop::Create();
  ASSERT_TRUE(loop.ok());
  Result<std::unique_ptr<coro::DeviceIo>> io =
      coro::DeviceIo::Create(**loop, *dev);
  ASSERT_TRUE(io.ok()) << io.status().ToString();
  auto start = [](coro::DeviceIo& d, uint64_t off, const Buffer& b, bool read) {
    return read ? d.Read(off, b) : d.Write(off, b);
  };
  RunAndCheck(**loop, [&](int i, Window* w) {
    return Worker(**io, *dev->AllocateBuffer(kBlock), i, w, start);
  });
}

INSTANTIATE_TEST_SUITE_P(Engines, CoroDeviceAllocTest,
                         ::testing::ValuesIn(DeviceParams()), EngineParamName);

}  // namespace
}  // namespace aiokit::testing
