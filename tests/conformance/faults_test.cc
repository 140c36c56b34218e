// Conformance, faulted: every request completes exactly once under partial
// submission and EAGAIN, injected under the syscall layer.

#include <cerrno>
#include <chrono>
#include <memory>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "conformance/conformance.h"
#include "test_util.h"

namespace aiokit::conformance {
namespace {

using testing::ExpectExactlyOnce;
using testing::FirstMismatch;
using testing::Pointers;
using testing::ReapAll;
using testing::ScopedFaults;
using testing::ScratchFile;

class FaultedConformanceTest : public ConformanceTest {
 protected:
  void SetUp() override {
    faults_ = std::make_unique<ScopedFaults>();
    ConformanceTest::SetUp();
  }
  void TearDown() override {
    engine_.reset();  // before the hooks go
    faults_.reset();
  }
  std::unique_ptr<ScopedFaults> faults_;
};

TEST_P(FaultedConformanceTest, PartialSubmitResubmitsTheRest) {
  if (testing::EngineVariant(GetParam()) == "sqpoll") {
    GTEST_SKIP() << "with SQPOLL the kernel's poller submits: no system call "
                    "to fail or shorten";
  }
  faults_->state().submit_max = 3;
  File f = ScratchFile(128 * 1024, 20);
  std::vector<std::vector<char>> bufs(32, std::vector<char>(4096));
  std::vector<Request> reqs(32);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  SubmitAll(Pointers(reqs));
  ExpectExactlyOnce(ReapAll(*engine_, reqs.size()), Pointers(reqs));
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_EQ(reqs[i].rval, 4096) << Describe(reqs[i]);
    ASSERT_EQ(FirstMismatch(bufs[i].data(), 4096, 20, i * 4096), -1);
  }
  EngineStats st = engine_->Stats();
  EXPECT_GE(st.partial_submits, 10U);
  EXPECT_EQ(st.submitted, 32U);
  EXPECT_EQ(st.completed, 32U);
}

TEST_P(FaultedConformanceTest, EagainStormIsRetriedAndNothingIsLost) {
  if (testing::EngineVariant(GetParam()) == "sqpoll") {
    GTEST_SKIP() << "with SQPOLL the kernel's poller submits: no system call "
                    "to fail or shorten";
  }
  File f = ScratchFile(256 * 1024, 21);
  std::vector<std::vector<char>> bufs(64, std::vector<char>(4096));
  std::vector<Request> reqs(64);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  std::vector<Request*> ptrs = Pointers(reqs);
  // Storms of EAGAIN between partial submissions, fewer than the policy's 16 in
  // a row.
  faults_->state().submit_max = 5;
  unsigned retries = 0;
  for (size_t i = 0; i < ptrs.size(); i += 16) {
    faults_->state().submit_eagain = 7;
    SubmitResult sr =
        engine_->Submit(std::span<Request* const>(ptrs.data() + i, 16));
    ASSERT_EQ(sr.accepted, 16U) << sr.status.ToString();
    retries += sr.retries;
  }
  EXPECT_EQ(retries, 4U * 7U);
  ExpectExactlyOnce(ReapAll(*engine_, reqs.size()), ptrs);
  for (Request& r : reqs) EXPECT_EQ(r.rval, 4096) << Describe(r);
  EXPECT_EQ(engine_->Stats().eagain_retries, 28U);
}

TEST_P(FaultedConformanceTest, EagainBeyondThePolicyReturnsTheRestUntouched) {
  if (testing::EngineVariant(GetParam()) == "sqpoll") {
    GTEST_SKIP() << "with SQPOLL the kernel's poller submits: no system call "
                    "to fail or shorten";
  }
  EngineOptions o;
  o.eagain.max_retries = 3;
  o.eagain.initial_delay = std::chrono::microseconds(10);
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  File f = ScratchFile(64 * 1024, 22);
  std::vector<std::vector<char>> bufs(8, std::vector<char>(4096));
  std::vector<Request> reqs(8);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  std::vector<Request*> ptrs = Pointers(reqs);
  // The first three go through, then the kernel says EAGAIN forever.
  faults_->state().submit_max = 3;
  SubmitResult first = e->Submit(std::span<Request* const>(ptrs.data(), 3));
  ASSERT_EQ(first.accepted, 3U);
  faults_->state().submit_always_eagain = true;
  SubmitResult sr = e->Submit(std::span<Request* const>(ptrs.data() + 3, 5));
  EXPECT_EQ(sr.accepted, 0U);
  EXPECT_TRUE(sr.status.Is(Errc::kQueueFull)) << sr.status.ToString();
  EXPECT_EQ(sr.retries, 3U);
  for (size_t i = 3; i < 8; ++i) {
    EXPECT_FALSE(reqs[i].in_flight());
    EXPECT_EQ(reqs[i].rval, kNotCompleted);
  }
  // The room-making reaps kept the first three for us.
  testing::Reaped got = ReapAll(*e, 3);
  ExpectExactlyOnce(got, {ptrs[0], ptrs[1], ptrs[2]});
  // Once the storm passes, the same requests go through.
  faults_->state().submit_always_eagain = false;
  faults_->state().submit_max = 0;
  SubmitResult again = e->Submit(std::span<Request* const>(ptrs.data() + 3, 5));
  ASSERT_EQ(again.accepted, 5U) << again.status.ToString();
  ExpectExactlyOnce(ReapAll(*e, 5),
                    {ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7]});
  e.reset();
}

INSTANTIATE_TEST_SUITE_P(Engines, FaultedConformanceTest,
                         ::testing::ValuesIn(testing::AllEngines()),
                         testing::EngineParamName);

}  // namespace
}  // namespace aiokit::conformance
