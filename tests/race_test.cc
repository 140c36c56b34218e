// Races on every engine, for the ThreadSanitizer build (label unit): Cancel
// racing the engine's own completion of the same request, with submitters and
// a reaper running. Every request completes exactly once; -ECANCELED only
// for a request whose Cancel said OK.

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "test_util.h"

namespace aiokit {
namespace {

using testing::ScratchFile;

class RaceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RaceTest, CancelRacingCompletionLeavesEachRequestCompletedOnce) {
  File file = ScratchFile(1 << 20, 5);
  ASSERT_GE(file.fd(), 0);
  EngineOptions opts;
  opts.queue_depth = 64;
  AIOKIT_MAKE_ENGINE_OR_SKIP(made, GetParam(), opts);
  Engine& e = *made;

  constexpr size_t kReqs = 32;
  constexpr uint64_t kTotal = 20000;
  struct State {
    bool in_flight = false;
    bool cancel_ok = false;  // Cancel said OK during this flight
  };
  std::mutex mu;  // the states; held across Cancel so that the request is
                  // not prepared again while Cancel looks at it
  std::vector<State> states(kReqs);
  std::vector<Request> reqs(kReqs);
  std::vector<char> bufs(kReqs * 4096);
  std::atomic<bool> done{false};
  std::atomic<uint64_t> cancels_ok{0}, canceled{0}, reaped{0};
  std::vector<std::string> failures;

  std::thread canceller([&] {
    std::mt19937 rng(1);
    while (!done.load(std::memory_order_relaxed)) {
      const size_t i = rng() % kReqs;
      std::lock_guard<std::mutex> lock(mu);
      if (!states[i].in_flight) continue;
      Status s = e.Cancel(&reqs[i]);
      if (s.ok()) {
        states[i].cancel_ok = true;
        cancels_ok.fetch_add(1, std::memory_order_relaxed);
      } else if (!s.Is(Errc::kNotCancellable) &&
                 !s.Is(Errc::kInvalidArgument)) {
        failures.push_back("Cancel: " + s.ToString());
      }
    }
  });

  // Stops and joins the canceller on every way out (a failed ASSERT too).
  struct Join {
    std::atomic<bool>* done;
    std::thread* t;
    ~Join() {
      done->store(true);
      if (t->joinable()) t->join();
    }
  } join{&done, &canceller};

  uint64_t submitted = 0;
  std::mt19937 rng(2);
  std::vector<Request*> batch;
  std::vector<Request*> out(kReqs);
  auto prep_idle = [&] {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < kReqs && submitted + batch.size() < kTotal; ++i) {
      if (states[i].in_flight) continue;
      const uint64_t off = (rng() % 256) * 4096;
      if (rng() % 4 == 0) {
        reqs[i].PrepWrite(file, bufs.data() + i * 4096, 4096, off);
      } else {
        reqs[i].PrepRead(file, bufs.data() + i * 4096, 4096, off);
      }
      states[i] = State{true, false};
      batch.push_back(&reqs[i]);
    }
  };
  auto failed = [&] {
    std::lock_guard<std::mutex> lock(mu);
    return !failures.empty();
  };
  while (reaped.load() < kTotal && !failed()) {
    batch.clear();
    prep_idle();
    size_t off = 0;
    while (off < batch.size()) {
      SubmitResult sr = e.Submit(
          std::span<Request* const>(batch.data() + off, batch.size() - off));
      off += sr.accepted;
      if (!sr.status.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        for (size_t k = off; k < batch.size(); ++k) {
          states[static_cast<size_t>(batch[k] - reqs.data())].in_flight = false;
        }
        ASSERT_TRUE(sr.status.Is(Errc::kQueueFull)) << sr.status.ToString();
        break;
      }
    }
    submitted += off;
    Result<size_t> got = e.Reap(out, 1, std::chrono::seconds(10));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_GT(*got, 0U) << "nothing completed in 10 s";
    std::lock_guard<std::mutex> lock(mu);
    for (size_t k = 0; k < *got; ++k) {
      Request* r = out[k];
      State& s = states[static_cast<size_t>(r - reqs.data())];
      ASSERT_TRUE(s.in_flight) << Describe(*r) << ": reaped twice";
      s.in_flight = false;
      reaped.fetch_add(1);
      if (r->rval == -ECANCELED) {
        ASSERT_TRUE(s.cancel_ok) << Describe(*r) << ": cancelled, never asked";
        canceled.fetch_add(1);
      } else {
        ASSERT_EQ(r->rval, 4096) << Describe(*r);
      }
    }
  }
  done = true;
  canceller.join();
  std::lock_guard<std::mutex> lock(mu);
  for (const std::string& f : failures) ADD_FAILURE() << f;
  EXPECT_EQ(submitted, kTotal);
  EXPECT_EQ(reaped.load(), kTotal);
  EXPECT_LE(canceled.load(), cancels_ok.load());
  std::printf(
      "[ race     ] %s: %llu requests, %llu cancels accepted, %llu "
      "completed -ECANCELED\n",
      GetParam().c_str(), static_cast<unsigned long long>(kTotal),
      static_cast<unsigned long long>(cancels_ok.load()),
      static_cast<unsigned long long>(canceled.load()));
}

// Cancel comes from a thread of its own, so not the variants promised one
// thread. linux-aio/nospin and io_uring/sqpoll were left out when this test
// was written (cc82d91), with no reason recorded: kept as they were.
INSTANTIATE_TEST_SUITE_P(
    Engines, RaceTest,
    ::testing::ValuesIn(testing::EnginesWhere([](const std::string& p) {
      const std::string v = testing::EngineVariant(p);
      return !testing::OneThreadPromised(p) && v != "nospin" && v != "sqpoll";
    })),
    testing::EngineParamName);

}  // namespace
}  // namespace aiokit
