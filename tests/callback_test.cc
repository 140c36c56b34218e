// Completion callbacks on every engine (EngineOptions::on_complete): each
// request is handed over once, reading as completed; a callback may submit
// its request again; Reap says how many it delivered; the completion thread
// delivers without a reaper and ends at Shutdown. (Every conformance test
// also runs with callbacks: Delivery/ConformanceTest in conformance.cc.)

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "engines.h"
#include "test_util.h"

namespace aiokit {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr size_t kBlock = 4096;

// What the callback saw, per request index (requests are an array).
struct Seen {
  std::vector<std::atomic<int>> times;
  std::atomic<size_t> total{0};
  std::atomic<size_t> bad{0};  // not completed, or the wrong result
  Request* base = nullptr;
  explicit Seen(size_t n) : times(n) {}

  static void OnComplete(void* arg, Request* req) {
    auto* s = static_cast<Seen*>(arg);
    if (!req->completed() || req->in_flight() ||
        req->rval != static_cast<int64_t>(req->length)) {
      s->bad.fetch_add(1);
    }
    s->times[static_cast<size_t>(req - s->base)].fetch_add(1);
    s->total.fetch_add(1);
  }
};

// (engine, completion thread or not)
class CallbackTest
    : public ::testing::TestWithParam<std::tuple<std::string, bool>> {
 protected:
  std::string engine() const { return std::get<0>(GetParam()); }
  bool own_thread() const { return std::get<1>(GetParam()); }
  EngineOptions Options(void (*fn)(void*, Request*), void* arg) const {
    EngineOptions o;
    o.on_complete = fn;
    o.on_complete_arg = arg;
    o.completion_thread = own_thread();
    return o;
  }
  // Reaps (delivering) until `done` or 30 s; with a completion thread only
  // waits.
  template <typename Done>
  void DriveUntil(Engine& e, Done done) {
    const auto until = std::chrono::steady_clock::now() + seconds(30);
    while (!done() && std::chrono::steady_clock::now() < until) {
      if (own_thread()) {
        std::this_thread::sleep_for(milliseconds(1));
        continue;
      }
      Result<size_t> n = e.Reap(std::span<Request*>(), 1, milliseconds(100));
      ASSERT_TRUE(n.ok()) << n.status().ToString();
    }
    ASSERT_TRUE(done()) << "not all delivered in 30 s";
  }
};

TEST_P(CallbackTest, EachRequestIsDeliveredOnceReadingAsCompleted) {
  constexpr size_t kReqs = 256;
  Seen seen(kReqs);
  std::vector<Request> reqs(kReqs);
  seen.base = reqs.data();
  AIOKIT_MAKE_ENGINE_OR_SKIP(e, engine(), Options(&Seen::OnComplete, &seen));
  File f = testing::ScratchFile(64 * kBlock, 71);
  std::vector<char> buf(kReqs * kBlock);
  for (size_t i = 0; i < kReqs; ++i) {
    reqs[i].PrepRead(f.fd(), buf.data() + i * kBlock, kBlock,
                     (i % 64) * kBlock);
  }
  std::vector<Request*> ptrs = testing::Pointers(reqs);
  for (size_t i = 0; i < kReqs; i += 32) {
    SubmitResult sr = e->Submit(std::span<Request* const>(&ptrs[i], 32));
    ASSERT_EQ(sr.accepted, 32U) << sr.status.ToString();
  }
  DriveUntil(*e, [&] { return seen.total.load() >= kReqs; });
  ASSERT_TRUE(e->Shutdown(seconds(30)).ok());
  EXPECT_EQ(seen.total.load(), kReqs);
  EXPECT_EQ(seen.bad.load(), 0U);
  for (size_t i = 0; i < kReqs; ++i) {
    EXPECT_EQ(seen.times[i].load(), 1) << "request " << i;
    EXPECT_EQ(testing::FirstMismatch(buf.data() + i * kBlock, kBlock, 71,
                                     (i % 64) * kBlock),
              -1);
  }
  EXPECT_EQ(e->Stats().completed, kReqs);
}

// A callback that prepares its request again and submits it from inside the
// callback (BlueStore's aio thread resubmitting a retried read): a chain of
// 500 reads per request, none lost, none doubled.
struct Chain {
  Engine* engine = nullptr;
  int fd = -1;
  std::vector<char>* buf = nullptr;
  std::atomic<size_t> done{0};
  std::atomic<size_t> failed{0};
  size_t rounds = 0;
  std::vector<size_t> left;  // per request, written only by its callback
  Request* base = nullptr;

  static void OnComplete(void* arg, Request* req) {
    auto* c = static_cast<Chain*>(arg);
    const auto i = static_cast<size_t>(req - c->base);
    if (req->rval != static_cast<int64_t>(kBlock)) c->failed.fetch_add(1);
    c->done.fetch_add(1);
    if (--c->left[i] == 0) return;
    req->PrepRead(c->fd, c->buf->data() + i * kBlock, kBlock,
                  (c->left[i] % 16) * kBlock);
    Request* p = req;
    SubmitResult sr = c->engine->Submit({&p, 1});
    if (sr.accepted != 1) c->failed.fetch_add(1);
  }
};

TEST_P(CallbackTest, ACallbackMaySubmitItsRequestAgain) {
  constexpr size_t kReqs = 8;
  constexpr size_t kRounds = 500;
  Chain chain;
  std::vector<Request> reqs(kReqs);
  chain.base = reqs.data();
  chain.left.assign(kReqs, kRounds);
  AIOKIT_MAKE_ENGINE_OR_SKIP(e, engine(), Options(&Chain::OnComplete, &chain));
  File f = testing::ScratchFile(16 * kBlock, 72);
  std::vector<char> buf(kReqs * kBlock);
  chain.engine = e.get();
  chain.fd = f.fd();
  chain.buf = &buf;
  for (size_t i = 0; i < kReqs; ++i) {
    reqs[i].PrepRead(f.fd(), buf.data() + i * kBlock, kBlock, 0);
  }
  SubmitResult sr = e->Submit(testing::Pointers(reqs));
  ASSERT_EQ(sr.accepted, kReqs) << sr.status.ToString();
  DriveUntil(*e, [&] { return chain.done.load() >= kReqs * kRounds; });
  ASSERT_TRUE(e->Shutdown(seconds(30)).ok());
  EXPECT_EQ(chain.done.load(), kReqs * kRounds);
  EXPECT_EQ(chain.failed.load(), 0U);
  EXPECT_EQ(e->Stats().completed, kReqs * kRounds);
  EXPECT_EQ(e->Stats().in_flight, 0U);
}

// Without a completion thread, Reap delivers and says how many it did; on the
// threads engine the workers deliver, and Reap waits for their deliveries.
TEST_P(CallbackTest, ReapDeliversAndSaysHowMany) {
  if (own_thread()) GTEST_SKIP() << "the completion thread delivers";
  constexpr size_t kReqs = 100;
  Seen seen(kReqs);
  std::vector<Request> reqs(kReqs);
  seen.base = reqs.data();
  AIOKIT_MAKE_ENGINE_OR_SKIP(e, engine(), Options(&Seen::OnComplete, &seen));
  for (Request& r : reqs) r.PrepNoop();
  SubmitResult sr = e->Submit(testing::Pointers(reqs));
  ASSERT_EQ(sr.accepted, kReqs);
  size_t by_reap = 0;
  const auto until = std::chrono::steady_clock::now() + seconds(30);
  while (seen.total.load() < kReqs &&
         std::chrono::steady_clock::now() < until) {
    Result<size_t> n = e->Reap(std::span<Request*>(), kReqs, seconds(1));
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    by_reap += *n;
  }
  EXPECT_EQ(seen.total.load(), kReqs);
  if (e->kind() == EngineKind::kThreads) {
    EXPECT_LE(by_reap, kReqs);  // the thread that completed a noop delivered
  } else {
    EXPECT_EQ(by_reap, kReqs);
  }
  // Nothing more to deliver: a poll says 0, and after Shutdown, kShutdown.
  Result<size_t> n = e->Reap(std::span<Request*>(), 0, milliseconds(0));
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0U);
  ASSERT_TRUE(e->Shutdown(seconds(10)).ok());
  n = e->Reap(std::span<Request*>(), 1, milliseconds(10));
  EXPECT_TRUE(!n.ok() && n.status().Is(Errc::kShutdown))
      << (n.ok() ? std::to_string(*n) : n.status().ToString());
}

// The completion thread delivers what completes until Shutdown has waited for
// the last request: when Shutdown returns, every one was delivered.
TEST_P(CallbackTest,
       ShutdownReturnsOnceTheCompletionThreadDeliveredEverything) {
  if (!own_thread()) GTEST_SKIP() << "no completion thread here";
  constexpr size_t kReqs = 512;
  Seen seen(kReqs);
  std::vector<Request> reqs(kReqs);
  seen.base = reqs.data();
  EngineOptions o = Options(&Seen::OnComplete, &seen);
  o.queue_depth = 64;
  AIOKIT_MAKE_ENGINE_OR_SKIP(e, engine(), o);
  File f = testing::ScratchFile(64 * kBlock, 73);
  std::vector<char> buf(kReqs * kBlock);
  for (size_t i = 0; i < kReqs; ++i) {
    reqs[i].PrepRead(f.fd(), buf.data() + i * kBlock, kBlock,
                     (i % 64) * kBlock);
  }
  SubmitResult sr = e->Submit(testing::Pointers(reqs));
  ASSERT_EQ(sr.accepted, kReqs) << sr.status.ToString();
  ASSERT_TRUE(e->Shutdown(kForever).ok());
  EXPECT_EQ(seen.total.load(), kReqs);
  EXPECT_EQ(seen.bad.load(), 0U);
  e.reset();  // joins the completion thread (it has ended)
}

TEST(CallbackOptionsTest, ACompletionThreadNeedsACallback) {
  for (const std::string& name : testing::PlainEngines()) {
    EngineOptions o;
    o.completion_thread = true;
    Result<std::unique_ptr<Engine>> e = testing::MakeNamedEngine(name, o);
    if (!e.ok() && testing::EngineRefusedHere(e.status())) continue;
    ASSERT_FALSE(e.ok()) << name;
    EXPECT_TRUE(e.status().Is(Errc::kInvalidArgument)) << e.status().ToString();
    EXPECT_NE(e.status().ToString().find("on_complete"), std::string::npos);
  }
}

std::string CallbackParamName(
    const ::testing::TestParamInfo<std::tuple<std::string, bool>>& info) {
  return testing::ParamName(std::get<0>(info.param)) +
         (std::get<1>(info.param) ? "_thread" : "_reap");
}

INSTANTIATE_TEST_SUITE_P(
    Engines, CallbackTest,
    ::testing::Combine(::testing::ValuesIn(testing::PlainEngines()),
                       ::testing::Bool()),
    CallbackParamName);

}  // namespace
}  // namespace aiokit
