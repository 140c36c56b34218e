// BlueStore's aio_t / aio_queue_t, used the way BlueStore's KernelDevice uses
// them.

#include "aiokit/bluestore.h"

#include <gtest/gtest.h>
#include <linux/aio_abi.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "device/device_util.h"
#include "test_util.h"

namespace aiokit {
namespace {

using bluestore::aio_queue_t;
using bluestore::aio_t;
using bluestore::bufferlist;

class BlueStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(queue_.init(), 0) << queue_.last_error().ToString();
  }
  // Reaps n completions, checking each aio comes back once.
  std::vector<aio_t*> ReapN(int n) {
    std::vector<aio_t*> got;
    std::map<aio_t*, int> times;
    aio_t* batch[16];
    int spins = 0;
    while (static_cast<int>(got.size()) < n && spins++ < 1000) {
      const int r = queue_.get_next_completed(1000, batch, 16);
      EXPECT_GE(r, 0) << queue_.last_error().ToString();
      if (r < 0) break;
      for (int i = 0; i < r; ++i) {
        got.push_back(batch[i]);
        EXPECT_EQ(++times[batch[i]], 1);
      }
    }
    return got;
  }
  aio_queue_t queue_{32};
};

TEST_F(BlueStoreTest, MixedBatchOfWritesAndReadsRoundTrips) {
  File f = testing::ScratchFile(64 * 1024, 40);
  std::list<aio_t> aios;
  int ioc = 0;  // stands in for BlueStore's IOContext
  // Two writes, each of a two-buffer bufferlist, as KernelDevice::aio_write
  // prepares them.
  for (int i = 0; i < 2; ++i) {
    bufferlist bl;
    std::string a(4096, static_cast<char>('a' + i));
    std::string b(4096, static_cast<char>('A' + i));
    bl.append(a.data(), a.size());
    bl.append(b.data(), b.size());
    aios.emplace_back(&ioc, f.fd());
    aio_t& aio = aios.back();
    bl.prepare_iov(&aio.iov);
    aio.bl.claim_append(bl);
    aio.pwritev(static_cast<uint64_t>(i) * 8192, 8192);
    EXPECT_EQ(aio.get_return_value(), -1000);
  }
  // And a read of untouched data further on.
  aios.emplace_back(&ioc, f.fd());
  aios.back().pread(32768, 4096);
  int retries = 0;
  const int submitted =
      queue_.submit_batch(aios.begin(), aios.end(), 3, &ioc, &retries);
  ASSERT_EQ(submitted, 3) << queue_.last_error().ToString();
  EXPECT_EQ(retries, 0);
  std::vector<aio_t*> done = ReapN(3);
  ASSERT_EQ(done.size(), 3U);
  for (aio_t* a : done) {
    EXPECT_EQ(a->priv, &ioc);
    EXPECT_GT(a->get_return_value(), 0) << Describe(*a);
  }
  // The read got the original bytes.
  aio_t& rd = aios.back();
  ASSERT_EQ(rd.get_return_value(), 4096);
  std::vector<char> got(4096);
  rd.bl.copy_out(0, 4096, got.data());
  EXPECT_EQ(testing::FirstMismatch(got.data(), got.size(), 40, 32768), -1);
  // Read the writes back through the same interface.
  std::list<aio_t> reads;
  for (int i = 0; i < 2; ++i) {
    reads.emplace_back(&ioc, f.fd());
    reads.back().pread(static_cast<uint64_t>(i) * 8192, 8192);
  }
  ASSERT_EQ(queue_.submit_batch(reads.begin(), reads.end(), 2, &ioc, nullptr),
            2);
  ASSERT_EQ(ReapN(2).size(), 2U);
  int i = 0;
  for (aio_t& r : reads) {
    ASSERT_EQ(r.get_return_value(), 8192);
    std::vector<char> bytes(8192);
    r.bl.copy_out(0, 8192, bytes.data());
    EXPECT_EQ(std::string(bytes.data(), 4096),
              std::string(4096, static_cast<char>('a' + i)));
    EXPECT_EQ(std::string(bytes.data() + 4096, 4096),
              std::string(4096, static_cast<char>('A' + i)));
    ++i;
  }
  queue_.shutdown();
}

TEST_F(BlueStoreTest,
       PwritevWithTheWrongLengthCompletesWithEinvalInsteadOfAsserting) {
  File f = testing::ScratchFile(4096, 41);
  std::list<aio_t> aios;
  aios.emplace_back(nullptr, f.fd());
  aio_t& aio = aios.back();
  aio.bl.append("abcd", 4);
  aio.bl.prepare_iov(&aio.iov);
  aio.pwritev(0, 8);  // the iovecs hold 4 bytes
  ASSERT_EQ(queue_.submit_batch(aios.begin(), aios.end(), 1, nullptr, nullptr),
            1);
  ASSERT_EQ(ReapN(1).size(), 1U);
  EXPECT_EQ(aio.get_return_value(), -EINVAL);
}

TEST_F(BlueStoreTest, ARequestTheKernelRefusesComesBackWithItsErrno) {
  std::list<aio_t> aios;
  aios.emplace_back(nullptr, -1);
  aios.back().pread(0, 4096);
  ASSERT_EQ(queue_.submit_batch(aios.begin(), aios.end(), 1, nullptr, nullptr),
            1);
  ASSERT_EQ(ReapN(1).size(), 1U);
  EXPECT_EQ(aios.back().get_return_value(), -EBADF);
}

TEST_F(BlueStoreTest, RetriesAreCountedLikeBlueStore) {
  File f = testing::ScratchFile(16384, 42);
  testing::ScopedFaults faults;
  faults.state().submit_eagain = 3;
  std::list<aio_t> aios;
  for (int i = 0; i < 4; ++i) {
    aios.emplace_back(nullptr, f.fd());
    aios.back().pread(static_cast<uint64_t>(i) * 4096, 4096);
  }
  int retries = 0;
  ASSERT_EQ(queue_.submit_batch(aios.begin(), aios.end(), 4, nullptr, &retries),
            4);
  EXPECT_EQ(retries, 3);
  ASSERT_EQ(ReapN(4).size(), 4U);
  queue_.shutdown();
}

TEST_F(BlueStoreTest, GetNextCompletedTimesOutWithZero) {
  aio_t* out[4];
  EXPECT_EQ(queue_.get_next_completed(20, out, 4), 0);
}

// BlueStore's aio_t: pread and pwritev build the iocb (libaio's io_prep_*), and
// code that reads it (aio_buf, aio_fildes) sees it so before and after the
// request completed, on every engine (the queue takes the engine AIOKIT_ENGINE
// names). io_uring and threads used to leave garbage there.
class BlueStoreEngineTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): no other thread runs yet
    const char* was = std::getenv("AIOKIT_ENGINE");
    saved_ = was != nullptr ? was : "";
    had_ = was != nullptr;
    // NOLINTNEXTLINE(concurrency-mt-unsafe)
    ::setenv("AIOKIT_ENGINE", GetParam().c_str(), 1);
    if (queue_.init() != 0) {
      if (testing::EngineRefusedHere(queue_.last_error())) {
        GTEST_SKIP() << GetParam()
                     << " refused here: " << queue_.last_error().ToString();
      }
      FAIL() << queue_.last_error().ToString();
    }
  }
  void TearDown() override {
    queue_.shutdown();
    if (had_) {
      // NOLINTNEXTLINE(concurrency-mt-unsafe)
      ::setenv("AIOKIT_ENGINE", saved_.c_str(), 1);
    } else {
      // NOLINTNEXTLINE(concurrency-mt-unsafe)
      ::unsetenv("AIOKIT_ENGINE");
    }
  }
  aio_queue_t queue_{16};
  std::string saved_;
  bool had_ = false;
};

TEST_P(BlueStoreEngineTest, AioTReadsItsIocbAsPreadAndPwritevBuiltIt) {
  File f = testing::ScratchFile(64 * 1024, 41);
  std::list<aio_t> aios;
  int ioc = 0;
  aios.emplace_back(&ioc, f.fd());
  aio_t& rd = aios.back();
  rd.pread(8192, 4096);
  aios.emplace_back(&ioc, f.fd());
  aio_t& wr = aios.back();
  bufferlist bl;
  std::string a(4096, 'x');
  bl.append(a.data(), a.size());
  bl.prepare_iov(&wr.iov);
  wr.bl.claim_append(bl);
  wr.pwritev(16384, 4096);
  const auto check = [&] {
    EXPECT_EQ(rd.iocb.aio_lio_opcode, IOCB_CMD_PREAD);
    EXPECT_EQ(rd.iocb.aio_fildes, static_cast<uint32_t>(f.fd()));
    EXPECT_EQ(rd.iocb.aio_buf,
              reinterpret_cast<uint64_t>(rd.bl.buffers()[0].c_str()));
    EXPECT_EQ(rd.iocb.aio_nbytes, 4096U);
    EXPECT_EQ(rd.iocb.aio_offset, 8192);
    EXPECT_EQ(wr.iocb.aio_lio_opcode, IOCB_CMD_PWRITEV);
    EXPECT_EQ(wr.iocb.aio_fildes, static_cast<uint32_t>(f.fd()));
    EXPECT_EQ(wr.iocb.aio_buf, reinterpret_cast<uint64_t>(wr.iov.data()));
    EXPECT_EQ(wr.iocb.aio_nbytes, 1U);
    EXPECT_EQ(wr.iocb.aio_offset, 16384);
  };
  check();
  ASSERT_EQ(queue_.submit_batch(aios.begin(), aios.end(), 2, &ioc, nullptr), 2)
      << queue_.last_error().ToString();
  aio_t* done[4];
  int got = 0;
  for (int tries = 0; got < 2 && tries < 100; ++tries) {
    const int r = queue_.get_next_completed(1000, done + got, 4 - got);
    ASSERT_GE(r, 0) << queue_.last_error().ToString();
    got += r;
  }
  ASSERT_EQ(got, 2);
  EXPECT_EQ(rd.get_return_value(), 4096);
  EXPECT_EQ(wr.get_return_value(), 4096);
  check();
}

INSTANTIATE_TEST_SUITE_P(Engines, BlueStoreEngineTest,
                         ::testing::ValuesIn(testing::PlainEngines()),
                         testing::EngineParamName);

TEST(BlueStoreInitTest, DepthZeroIsRefusedWithEinval) {
  aio_queue_t q(0);
  EXPECT_EQ(q.init(), -EINVAL);
  EXPECT_TRUE(q.last_error().Is(Errc::kInvalidArgument))
      << q.last_error().ToString();
}

TEST(BlueStoreInitTest, CallsBeforeInitAreErrorsNotCrashes) {
  aio_queue_t q(8);
  std::list<aio_t> aios;
  aios.emplace_back(nullptr, 0);
  EXPECT_EQ(q.submit_batch(aios.begin(), aios.end(), 1, nullptr, nullptr),
            -EINVAL);
  aio_t* out[1];
  EXPECT_EQ(q.get_next_completed(0, out, 1), -EINVAL);
  q.shutdown();
}

TEST(BufferlistTest, AppendClaimAndPrepareIov) {
  bufferlist a, b;
  a.append("hello", 5);
  b.append(bluestore::buffer::create_aligned(4096, 4096));
  a.claim_append(b);
  EXPECT_EQ(a.length(), 4101U);
  EXPECT_EQ(b.length(), 0U);
  EXPECT_EQ(a.get_num_buffers(), 2U);
  std::vector<iovec> iov;
  a.prepare_iov(&iov);
  ASSERT_EQ(iov.size(), 2U);
  EXPECT_EQ(iov[0].iov_len, 5U);
  EXPECT_FALSE(a.is_aligned(4096));
  char out[5];
  a.copy_out(0, 5, out);
  EXPECT_EQ(std::string(out, 5), "hello");
}

TEST(IntervalSetTest, MergesAdjacentAndOverlappingRanges) {
  bluestore::interval_set s;
  s.insert(100, 10);
  s.insert(120, 10);
  s.insert(110, 10);  // joins both
  s.insert(200, 5);
  s.insert(195, 20);  // covers 200..205
  ASSERT_EQ(s.num_intervals(), 2U);
  EXPECT_EQ(s.begin()->first, 100U);
  EXPECT_EQ(s.begin()->second, 30U);
  EXPECT_EQ(std::next(s.begin())->first, 195U);
  EXPECT_EQ(std::next(s.begin())->second, 20U);
  EXPECT_EQ(s.size(), 50U);
}

// KernelDevice used as BlueStore's BlueStore and BlueFS use it: a transaction
// of aio_writes with a priv (the callback finishes it), a read group waited
// for with aio_wait, flush, and discard with the released set handed back.
struct KernelDeviceCallbacks {
  std::mutex mu;
  std::vector<void*> finished;
  uint64_t released = 0;
  static void Aio(void* handle, void* priv) {
    auto* self = static_cast<KernelDeviceCallbacks*>(handle);
    std::lock_guard lock(self->mu);
    self->finished.push_back(priv);
  }
  static void Discard(void* handle, void* set) {
    auto* self = static_cast<KernelDeviceCallbacks*>(handle);
    std::lock_guard lock(self->mu);
    self->released += static_cast<bluestore::interval_set*>(set)->size();
  }
};

TEST(KernelDeviceTest, ATransactionReadsFlushesAndDiscards) {
  testing::PatternFile file(1 << 20, 1);
  KernelDeviceCallbacks cbs;
  bluestore::KernelDevice dev(&KernelDeviceCallbacks::Aio, &cbs,
                              &KernelDeviceCallbacks::Discard, &cbs);
  const int r = dev.open(file.path());
  if (r < 0 && testing::DeviceRefusedHere(dev.last_error())) {
    GTEST_SKIP() << dev.last_error().ToString();
  }
  ASSERT_EQ(r, 0) << dev.last_error().ToString();
  EXPECT_EQ(dev.get_size(), 1U << 20);
  EXPECT_EQ(dev.get_block_size() % 4096, 0U);

  int txc = 0;  // stands in for BlueStore's TransContext
  bluestore::IOContext ioc(&txc);
  for (int i = 0; i < 4; ++i) {
    bufferlist bl;
    bl.append(std::string(4096, static_cast<char>('a' + i)).data(), 4096);
    ASSERT_EQ(
        dev.aio_write(i * 4096, bl, &ioc, false, bluestore::WRITE_LIFE_SHORT),
        0)
        << dev.last_error().ToString();
  }
  EXPECT_TRUE(ioc.has_pending_aios());
  EXPECT_EQ(ioc.num_pending(), 4U);
  dev.aio_submit(&ioc);
  ioc.aio_wait();
  EXPECT_EQ(ioc.get_return_value(), 0);
  {
    std::lock_guard lock(cbs.mu);
    ASSERT_EQ(cbs.finished.size(), 1U);
    EXPECT_EQ(cbs.finished[0], &txc);
  }
  ASSERT_EQ(dev.flush(), 0);

  // A read group without priv, waited for.
  bluestore::IOContext reads(nullptr);
  bufferlist got;
  ASSERT_EQ(dev.aio_read(4096, 8192, &got, &reads), 0);
  dev.aio_submit(&reads);
  reads.aio_wait();
  ASSERT_EQ(reads.get_return_value(), 0);
  ASSERT_EQ(got.length(), 8192U);
  std::string text(8192, '\0');
  got.copy_out(0, 8192, text.data());
  EXPECT_EQ(text, std::string(4096, 'b') + std::string(4096, 'c'));

  // Synchronous and unaligned reads, buffered and not.
  char small[10];
  ASSERT_EQ(dev.read_random(4090, 10, small, false), 0);
  EXPECT_EQ(std::string(small, 10), "aaaaaabbbb");
  ASSERT_EQ(dev.read_random(4090, 10, small, true), 0);
  EXPECT_EQ(std::string(small, 10), "aaaaaabbbb");
  bufferlist whole;
  ASSERT_EQ(dev.read(0, 4096, &whole, nullptr, false), 0);
  EXPECT_EQ(whole.length(), 4096U);

  // An unaligned bufferlist is rebuilt aligned.
  bufferlist odd;
  odd.append("xy", 2);
  odd.append(std::string(4094, 'z').data(), 4094);
  ASSERT_EQ(dev.write(8192, odd, false), 0) << dev.last_error().ToString();
  ASSERT_EQ(dev.read_random(8190, 4, small, false), 0);
  EXPECT_EQ(std::string(small, 4), "bbxy");

  bluestore::interval_set release;
  release.insert(64 * 1024, 64 * 1024);
  const int q = dev.queue_discard(release);
  if (q == -EOPNOTSUPP) {
    GTEST_SKIP() << "no discard here: " << dev.last_error().ToString();
  }
  ASSERT_EQ(q, 0) << dev.last_error().ToString();
  dev.discard_drain();
  std::lock_guard lock(cbs.mu);
  EXPECT_EQ(cbs.released, 64U * 1024);
}

TEST(KernelDeviceTest, ErrorsAreReturnedNotAborted) {
  bluestore::KernelDevice dev(nullptr, nullptr);
  EXPECT_EQ(dev.open("/nonexistent/aiokit-device"), -ENOENT);
  EXPECT_NE(dev.last_error().ToString().find("/nonexistent/aiokit-device"),
            std::string::npos);
  bufferlist bl;
  bluestore::IOContext ioc;
  EXPECT_LT(dev.aio_read(0, 4096, &bl, &ioc), 0);
  EXPECT_LT(dev.read(0, 4096, &bl, &ioc, false), 0);
  EXPECT_EQ(dev.flush(), 0);
}

}  // namespace
}  // namespace aiokit
