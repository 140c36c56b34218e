// Conformance, reaping: timeouts and minimum counts, and reaping while other
// threads submit.

#include <chrono>
#include <string>
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
using testing::Pointers;
using testing::ReapAll;
using testing::ScratchFile;

// ---- Waiting: timeouts, minimum counts. ----

TEST_P(ConformanceTest, ReapWithNothingInFlightWaitsForTheTimeout) {
  std::vector<Request*> out(4);
  const auto start = std::chrono::steady_clock::now();
  Result<size_t> r = engine_->Reap(out, 1, milliseconds(50));
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 0U);
  EXPECT_GE(took,
            milliseconds(50));  // the deadline was honoured, not cut short
}

// EngineStats::sleeps counts the reaps that went to sleep, and only those.
TEST_P(ConformanceTest, SleepsCountsReapsThatSleptAndNoOthers) {
  std::vector<Request*> out(4);
  if (GetParam().find("+thread") != std::string::npos) {
    // The completion thread is the one that reaps (and sleeps) here, from
    // the start, with nothing in flight.
    const auto deadline =
        std::chrono::steady_clock::now() + milliseconds(10000);
    while (engine_->Stats().sleeps == 0 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    EXPECT_GE(engine_->Stats().sleeps, 1U)
        << "the idle completion thread never counted a sleep";
    return;
  }
  const uint64_t before = engine_->Stats().sleeps;
  ASSERT_TRUE(engine_->Poll(out).ok());
  ASSERT_TRUE(engine_->Reap(out, 1, std::chrono::nanoseconds(0)).ok());
  EXPECT_EQ(engine_->Stats().sleeps, before) << "a poll is not a sleep";
  Result<size_t> r = engine_->Reap(out, 1, milliseconds(20));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 0U);
  EXPECT_GT(engine_->Stats().sleeps, before)
      << "a Reap that waited out its timeout did not count a sleep";
}

TEST_P(ConformanceTest, PollAndZeroTimeoutDoNotWait) {
  std::vector<Request*> out(4);
  Result<size_t> r = engine_->Poll(out);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 0U);
  Result<size_t> r2 = engine_->Reap(out, 4, std::chrono::nanoseconds(0));
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(*r2, 0U);
}

TEST_P(ConformanceTest, ReapWaitsForTheMinimumCount) {
  File f = ScratchFile(256 * 1024, 12);
  std::vector<std::vector<char>> bufs(32, std::vector<char>(4096));
  std::vector<Request> reqs(32);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  SubmitAll(Pointers(reqs));
  std::vector<Request*> out(32);
  Result<size_t> r = engine_->Reap(out, 32, std::chrono::seconds(30));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 32U);
  for (size_t i = 0; i < 32; ++i) {
    EXPECT_EQ(out[i]->rval, 4096) << Describe(*out[i]);
  }
}

TEST_P(ConformanceTest, GetNextCompletedReturnsAtMostMax) {
  std::vector<Request> reqs(10);
  for (Request& r : reqs) r.PrepNoop();
  SubmitAll(Pointers(reqs));
  // At least one and at most four per call: how many are ready at a call
  // depends on when the engine's threads (or its completion thread) ran.
  size_t got = 0;
  for (int call = 0; call < 10 && got < reqs.size(); ++call) {
    Request* out[5] = {};
    Result<size_t> r = engine_->GetNextCompleted(30000, out, 4);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_GE(*r, 1U);
    EXPECT_LE(*r, 4U);
    EXPECT_EQ(out[4], nullptr) << "GetNextCompleted wrote past max";
    got += *r;
  }
  EXPECT_EQ(got, reqs.size());
  EXPECT_EQ(engine_->Stats().in_flight, 0U);
}

// ---- Threads. ----

TEST_P(ConformanceTest, ManySubmittersOneReaperEachRequestOnce) {
  if (testing::OneThreadPromised(GetParam())) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  File f = ScratchFile(256 * 1024, 30);
  constexpr size_t kThreads = 4;
  constexpr size_t kPerThread = 500;
  std::vector<std::vector<Request>> reqs(kThreads,
                                         std::vector<Request>(kPerThread));
  std::vector<std::vector<char>> bufs(kThreads,
                                      std::vector<char>(kPerThread * 512));
  std::vector<Request*> all;
  for (size_t t = 0; t < kThreads; ++t) {
    for (size_t i = 0; i < kPerThread; ++i) {
      Request& r = reqs[t][i];
      if (i % 5 == 0) {
        r.PrepNoop();
      } else {
        r.PrepRead(f.fd(), bufs[t].data() + i * 512, 512,
                   ((t * kPerThread + i) % 512) * 512);
      }
      all.push_back(&r);
    }
  }
  testing::Reaped got;
  std::thread reaper(
      [&] { got = ReapAll(*engine_, all.size(), milliseconds(60000)); });
  std::vector<std::thread> submitters;
  for (size_t t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (size_t i = 0; i < kPerThread; i += 10) {
        std::vector<Request*> batch;
        for (size_t j = i; j < i + 10; ++j) batch.push_back(&reqs[t][j]);
        SubmitResult sr = engine_->Submit(batch);
        EXPECT_EQ(sr.accepted, batch.size()) << sr.status.ToString();
      }
    });
  }
  for (std::thread& s : submitters) s.join();
  reaper.join();
  ExpectExactlyOnce(got, all);
  for (size_t t = 0; t < kThreads; ++t) {
    for (size_t i = 0; i < kPerThread; ++i) {
      const Request& r = reqs[t][i];
      ASSERT_EQ(r.rval, r.op == Op::kNoop ? 0 : 512) << Describe(r);
    }
  }
}

TEST_P(ConformanceTest, ABlockedReaperWakesForACompletionWithoutIo) {
  if (testing::OneThreadPromised(GetParam())) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  Result<size_t> got = size_t{0};
  Request* out[1] = {nullptr};
  std::thread reaper([&] {
    got = engine_->Reap({out, 1}, 1, std::chrono::seconds(20));
  });
  std::this_thread::sleep_for(
      milliseconds(50));  // let it fall asleep in the engine
  Request n;
  n.PrepNoop();
  const auto start = std::chrono::steady_clock::now();
  SubmitAll({&n});
  reaper.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(*got, 1U);
  EXPECT_EQ(out[0], &n);
  // Woken by the completion, not by the 20 s timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace aiokit::conformance
