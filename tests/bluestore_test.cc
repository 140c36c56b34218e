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
#include <string>
#include <vector>

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

}  // namespace
}  // namespace aiokit
