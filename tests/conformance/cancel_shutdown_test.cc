// Conformance, cancel and shutdown: Cancel's honest answers, and Shutdown and
// destruction with requests in flight.

#include <cerrno>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "conformance/conformance.h"
#include "test_util.h"

namespace aiokit::conformance {
namespace {

using std::chrono::milliseconds;
using testing::ExpectExactlyOnce;
using testing::FirstMismatch;
using testing::Pointers;
using testing::ReapAll;
using testing::ScratchFile;

// ---- Cancel. ----

TEST_P(ConformanceTest, CancelIsHonestAndTheRequestStillCompletesOnce) {
  File f = ScratchFile(64 * 1024, 13);
  std::vector<char> buf(64 * 1024);
  Request r;
  r.PrepRead(f.fd(), buf.data(), buf.size(), 0);
  SubmitAll({&r});
  Status s = engine_->Cancel(&r);
  if (s.Is(Errc::kInvalidArgument) &&
      !testing::DeliveryMode(GetParam()).empty()) {
    // With callbacks it may have completed, and been delivered, already.
    EXPECT_TRUE(r.completed()) << s.ToString();
  } else if (engine_->GetCapabilities().cancel_regular_files) {
    // Either it was stopped, or it finished first.
    EXPECT_TRUE(s.ok() || s.Is(Errc::kNotCancellable)) << s.ToString();
  } else {
    EXPECT_TRUE(s.Is(Errc::kNotCancellable)) << s.ToString();
  }
  testing::Reaped got = ReapAll(*engine_, 1);
  ExpectExactlyOnce(got, {&r});
  EXPECT_TRUE(r.rval == static_cast<int64_t>(buf.size()) ||
              r.rval == -ECANCELED)
      << Describe(r);
}

TEST_P(ConformanceTest, CancelOfARequestNotInFlightIsInvalid) {
  Request r;
  r.PrepNoop();
  EXPECT_TRUE(engine_->Cancel(&r).Is(Errc::kInvalidArgument));
  EXPECT_TRUE(engine_->Cancel(nullptr).Is(Errc::kInvalidArgument));
}

// ---- Shutdown with requests in flight. ----

TEST_P(ConformanceTest, ShutdownWithAThousandInFlightCompletesEveryOne) {
  EngineOptions o;
  o.queue_depth = 1024;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  File f = DirectFile(1024 * kBlock, 14);
  const bool direct = direct_skip_.empty();
  if (!direct) f = ScratchFile(1024 * kBlock, 14);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(1000 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  std::vector<Request> reqs(1000);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].PrepRead(f, buf->data() + i * kBlock, kBlock,
                     ((i * 7) % 1024) * kBlock);
  }
  std::vector<Request*> ptrs = Pointers(reqs);
  SubmitResult sr = e->Submit(ptrs);
  ASSERT_EQ(sr.accepted, reqs.size()) << sr.status.ToString();
  Status s = e->Shutdown(std::chrono::seconds(60));
  ASSERT_TRUE(s.ok()) << s.ToString();
  // Every request has its result, and Reap hands each back exactly once.
  for (Request& r : reqs)
    ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  testing::Reaped got = ReapAll(*e, reqs.size(), milliseconds(5000));
  ExpectExactlyOnce(got, ptrs);
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(FirstMismatch(buf->data() + i * kBlock, kBlock, 14,
                            ((i * 7) % 1024) * kBlock),
              -1)
        << "request " << i;
  }
  // Then the engine says it is shut down.
  std::vector<Request*> out(1);
  Result<size_t> after = e->Reap(out, 1, milliseconds(10));
  ASSERT_FALSE(after.ok());
  EXPECT_TRUE(after.status().Is(Errc::kShutdown)) << after.status().ToString();
}

TEST_P(ConformanceTest, DestroyingTheEngineWaitsForRequestsInFlight) {
  File f = DirectFile(256 * kBlock, 15);
  if (!direct_skip_.empty()) f = ScratchFile(256 * kBlock, 15);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(256 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  std::vector<Request> reqs(256);
  {
    EngineOptions o;
    o.queue_depth = 256;
    std::unique_ptr<Engine> e = Make(o);
    ASSERT_NE(e, nullptr);
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f, buf->data() + i * kBlock, kBlock, i * kBlock);
    }
    SubmitResult sr = e->Submit(Pointers(reqs));
    ASSERT_EQ(sr.accepted, reqs.size());
  }  // destroyed with everything in flight
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].rval, static_cast<int64_t>(kBlock)) << Describe(reqs[i]);
    ASSERT_EQ(FirstMismatch(buf->data() + i * kBlock, kBlock, 15, i * kBlock),
              -1);
  }
}

TEST_P(ConformanceTest, SubmitAfterShutdownIsRefusedAndLeavesTheRequestIdle) {
  ASSERT_TRUE(engine_->Shutdown(std::chrono::seconds(5)).ok());
  Request r;
  r.PrepNoop();
  Request* p = &r;
  SubmitResult sr = engine_->Submit({&p, 1});
  EXPECT_EQ(sr.accepted, 0U);
  EXPECT_TRUE(sr.status.Is(Errc::kShutdown)) << sr.status.ToString();
  EXPECT_FALSE(r.in_flight());
  EXPECT_EQ(r.rval, kNotCompleted);
}

TEST_P(ConformanceTest, ShutdownWakesABlockedReaper) {
  if (testing::OneThreadPromised(GetParam())) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  Status reaper_status;
  size_t reaped = 99;
  std::thread reaper([&] {
    std::vector<Request*> out(4);
    Result<size_t> r = engine_->Reap(out, 1, kForever);
    reaper_status = r.status();
    reaped = r.ok() ? *r : 0;
  });
  std::this_thread::sleep_for(milliseconds(50));
  ASSERT_TRUE(engine_->Shutdown(std::chrono::seconds(10)).ok());
  reaper.join();
  EXPECT_EQ(reaped, 0U);
  EXPECT_TRUE(reaper_status.Is(Errc::kShutdown)) << reaper_status.ToString();
}

}  // namespace
}  // namespace aiokit::conformance
