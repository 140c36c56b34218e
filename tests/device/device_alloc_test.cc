// The device layer allocates nothing per request in steady state: requests
// come from the pool made at Open, buffers from the registered pool, and the
// contexts are reused. Counted by replacing operator new in this binary.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "aiokit/device.h"
#include "alloc_counter.h"
#include "device_util.h"

namespace aiokit::testing {
namespace {

class DeviceAllocTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceAllocTest, NoHeapAllocationPerRequestInSteadyState) {
  constexpr size_t kDepth = 8;
  constexpr size_t kBlock = 4096;
  PatternFile file(kDepth * 16 * kBlock, 1);
  DeviceOptions o = DeviceOptionsFor(GetParam());
  o.buffer_count = kDepth;
  o.buffer_size = kBlock;
  // A fixed worker pool: a worker that ends after idling and is made again
  // is a thread, not a request, but it allocates.
  o.engine.threads_min = 4;
  o.engine.threads_max = 4;
  AIOKIT_OPEN_DEVICE_OR_SKIP(dev, file.path(), o);
  std::vector<Buffer> bufs;
  std::vector<std::unique_ptr<IoContext>> iocs;
  std::atomic<uint64_t> done{0};
  for (size_t i = 0; i < kDepth; ++i) {
    Result<Buffer> b = dev->AllocateBuffer(kBlock);
    ASSERT_TRUE(b.ok());
    bufs.push_back(*b);
    iocs.push_back(std::make_unique<IoContext>(
        [&done](IoContext&) { done.fetch_add(1); }));
  }
  auto round = [&](uint64_t r) {
    for (size_t i = 0; i < kDepth; ++i) {
      const uint64_t off = ((r * kDepth + i) % (kDepth * 16)) * kBlock;
      Status s = (r % 2 == 0) ? dev->AioRead(off, bufs[i], iocs[i].get())
                              : dev->AioWrite(off, bufs[i], iocs[i].get());
      if (s.ok()) s = dev->Submit(iocs[i].get());
      if (!s.ok()) return s;
    }
    for (size_t i = 0; i < kDepth; ++i) {
      if (Status s = iocs[i]->Wait(); !s.ok()) return s;
    }
    return Status();
  };
  for (uint64_t r = 0; r < 300; ++r) ASSERT_TRUE(round(r).ok());
  g_allocations.store(0);
  g_counting.store(true);
  for (uint64_t r = 300; r < 600; ++r) {
    if (Status s = round(r); !s.ok()) {
      g_counting.store(false);
      FAIL() << s.ToString();
    }
  }
  g_counting.store(false);
  EXPECT_EQ(g_allocations.load(), 0U)
      << "heap allocations in " << 300 * kDepth << " requests";
  EXPECT_EQ(done.load(), 600 * kDepth);
}

INSTANTIATE_TEST_SUITE_P(Engines, DeviceAllocTest,
                         ::testing::ValuesIn(DeviceParams()), EngineParamName);

}  // namespace
}  // namespace aiokit::testing
