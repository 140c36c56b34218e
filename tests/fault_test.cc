// The fault-injecting engine (aiokit/fault.h) on every engine: under each mix
// of faults, every accepted request completes exactly once, with its real
// result or the one injected, and the counts of what the test saw match the
// counts of what was injected.
//
// The default run pushes 50,000 requests per engine through the mix of all
// faults (and 5,000 through each fault alone); AIOKIT_FAULT_REQUESTS raises
// that (ctest -L soak runs 1,000,000).

#include "aiokit/fault.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "aiokit/engine.h"
#include "test_util.h"

namespace aiokit {
namespace {

using testing::FillPattern;
using testing::FirstMismatch;
using testing::ScratchFile;

struct Mix {
  const char* name;
  const char* spec;
};

constexpr Mix kMixes[] = {
    {"eagain", "eagain=0.2"},
    {"partial", "partial=0.3"},
    {"short", "short=0.05"},
    {"eio", "eio=0.05"},
    {"enospc", "enospc=0.1"},
    {"delay", "delay=0.05:100us"},
    {"reorder", "reorder=0.1:300us"},
    {"stall", "stall=0.1:1ms"},
    {"all",
     "eagain=0.05,partial=0.1,short=0.02,eio=0.02,enospc=0.02,delay=0.02:"
     "100us,reorder=0.05:300us,stall=0.01:1ms"},
};

size_t RequestsFor(const std::string& mix) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
  if (const char* v = std::getenv("AIOKIT_FAULT_REQUESTS");
      v != nullptr && *v != '\0') {
    return std::strtoull(v, nullptr, 10);
  }
  return mix == "all" ? 50000 : 5000;
}

constexpr size_t kBlock = 4096;
constexpr size_t kFileBlocks = 256;
constexpr uint64_t kSeed = 11;

enum class Kind { kRead, kReadv, kWrite, kFsync, kNoop };

struct Slot {
  Kind kind = Kind::kNoop;
  bool in_flight = false;
  bool cancelled = false;
  uint64_t offset = 0;
  size_t length = 0;
};

struct Seen {
  uint64_t submitted = 0;  // accepted by Submit
  uint64_t reaped = 0;
  uint64_t eio = 0, enospc = 0, short_io = 0, canceled = 0;
  uint64_t eagain_calls = 0, partial_calls = 0;
};

class FaultTest
    : public ::testing::TestWithParam<std::tuple<std::string, Mix>> {};

TEST_P(FaultTest, EveryRequestCompletesOnceWithItsRealOrInjectedResult) {
  const std::string engine_name = std::get<0>(GetParam());
  const Mix mix = std::get<1>(GetParam());
  Result<FaultSpec> spec = ParseFaultSpec(mix.spec);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();

  File file = ScratchFile(kFileBlocks * kBlock, kSeed);
  ASSERT_GE(file.fd(), 0);
  EngineOptions opts;
  opts.queue_depth = 64;
  opts.notify_fd = false;
  // "+callback" / "+thread": the wrapper delivers to a callback (from its Reap,
  // or from a completion thread of its own), after the faults; a collector
  // turns that back into what Reap returns (delivery.h).
  const std::string mode = testing::DeliveryMode(engine_name);
  AIOKIT_MAKE_ENGINE_OR_SKIP(inner, testing::WithoutDelivery(engine_name),
                             opts);
  auto queue = std::make_unique<testing::DeliveredQueue>();
  CompletionDelivery delivery;
  if (!mode.empty()) {
    delivery.on_complete = &testing::DeliveredQueue::OnComplete;
    delivery.on_complete_arg = queue.get();
    delivery.completion_thread = mode == "thread";
  }
  Result<std::unique_ptr<FaultInjectingEngine>> made =
      MakeFaultInjectingEngine(std::move(inner), *spec, delivery);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  FaultInjectingEngine& faults = **made;
  std::unique_ptr<Engine> owner;
  if (mode.empty()) {
    owner = std::move(*made);
  } else {
    owner = std::make_unique<testing::CallbackCollector>(
        std::move(*made), std::move(queue), mode == "thread");
  }
  Engine& e = *owner;
  SCOPED_TRACE("engine " + engine_name + ", faults " +
               FaultSpecString(faults.spec()));

  const size_t total = RequestsFor(mix.name);
  constexpr size_t kDepth = 64;
  std::vector<Request> reqs(kDepth);
  std::vector<Slot> slots(kDepth);
  std::vector<char> bufs(kDepth * kBlock);
  std::vector<size_t> idle;
  for (size_t i = 0; i < kDepth; ++i) idle.push_back(i);
  std::vector<Request*> batch;
  std::mt19937_64 rng(faults.spec().seed);
  Seen seen;
  size_t prepared = 0;
  uint64_t in_flight = 0;

  auto prep = [&](size_t i) {
    Slot& s = slots[i];
    Request& r = reqs[i];
    char* buf = bufs.data() + i * kBlock;
    const uint64_t block = rng() % kFileBlocks;
    s.offset = block * kBlock;
    s.length = kBlock;
    s.cancelled = false;
    const unsigned pick = rng() % 100;
    if (pick < 45) {
      s.kind = Kind::kRead;
      std::memset(buf, 0, kBlock);
      r.PrepRead(file, buf, kBlock, s.offset);
    } else if (pick < 55) {
      s.kind = Kind::kReadv;
      std::memset(buf, 0, kBlock);
      const iovec iov[3] = {
          {buf, 1024}, {buf + 1024, 1024}, {buf + 2048, 2048}};
      r.PrepReadv(file, iov, 3, s.offset);
    } else if (pick < 88) {
      // The file keeps its pattern: a write puts back what is there, so a
      // read is checkable whatever ran before it.
      s.kind = Kind::kWrite;
      FillPattern(buf, kBlock, kSeed, s.offset);
      r.PrepWrite(file, buf, kBlock, s.offset);
    } else if (pick < 93) {
      s.kind = Kind::kFsync;
      s.length = 0;
      r.PrepFsync(file.fd());
    } else {
      s.kind = Kind::kNoop;
      s.length = 0;
      r.PrepNoop();
    }
    batch.push_back(&r);
    ++prepared;
  };

  auto submit = [&] {
    size_t off = 0;
    while (off < batch.size()) {
      const size_t n = std::min<size_t>(batch.size() - off, 1 + rng() % 16);
      SubmitResult sr =
          e.Submit(std::span<Request* const>(batch.data() + off, n));
      for (size_t k = off; k < off + sr.accepted; ++k) {
        Slot& s = slots[static_cast<size_t>(batch[k] - reqs.data())];
        ASSERT_FALSE(s.in_flight);
        s.in_flight = true;
      }
      seen.submitted += sr.accepted;
      in_flight += sr.accepted;
      off += sr.accepted;
      if (!sr.status.ok()) {
        ASSERT_TRUE(sr.status.Is(Errc::kQueueFull)) << sr.status.ToString();
        if (sr.accepted == 0) ++seen.eagain_calls;
        if (sr.accepted != 0) ++seen.partial_calls;
        // The rest is untouched and still ours: never in flight.
        for (size_t k = off; k < batch.size(); ++k) {
          ASSERT_FALSE(batch[k]->in_flight());
        }
        if (in_flight != 0) break;  // again after the next reap
      }
    }
    batch.erase(batch.begin(),
                batch.begin() + static_cast<std::ptrdiff_t>(off));
  };

  auto check = [&](Request* r) {
    const auto i = static_cast<size_t>(r - reqs.data());
    ASSERT_LT(i, kDepth) << "Reap returned a request that is not ours";
    Slot& s = slots[i];
    ASSERT_TRUE(s.in_flight) << "request " << i << " (" << Describe(*r)
                             << ") returned twice or never submitted";
    s.in_flight = false;
    ++seen.reaped;
    --in_flight;
    const int64_t v = r->rval;
    const bool writes = s.kind == Kind::kWrite || s.kind == Kind::kFsync;
    const bool rw = s.kind == Kind::kRead || s.kind == Kind::kReadv ||
                    s.kind == Kind::kWrite;
    if (v == -ECANCELED) {
      ASSERT_TRUE(s.cancelled) << Describe(*r);
      ++seen.canceled;
    } else if (v == -EIO) {
      ASSERT_TRUE(rw || writes) << Describe(*r);
      ++seen.eio;
    } else if (v == -ENOSPC) {
      ASSERT_TRUE(writes) << Describe(*r);
      ++seen.enospc;
    } else {
      ASSERT_GE(v, 0) << Describe(*r);
      ASSERT_LE(static_cast<uint64_t>(v), s.length) << Describe(*r);
      if (static_cast<uint64_t>(v) < s.length) {
        ASSERT_TRUE(rw) << Describe(*r);
        ++seen.short_io;
      }
      if (s.kind == Kind::kRead || s.kind == Kind::kReadv) {
        const char* buf = bufs.data() + i * kBlock;
        ASSERT_EQ(FirstMismatch(buf, static_cast<size_t>(v), kSeed, s.offset),
                  -1)
            << Describe(*r);
      }
    }
    idle.push_back(i);
  };

  std::vector<Request*> out(kDepth);
  while (seen.reaped < total) {
    while (!idle.empty() && prepared < total) {
      prep(idle.back());
      idle.pop_back();
    }
    submit();
    if (HasFatalFailure()) return;
    // Now and then, cancel something in flight (it races its completion).
    if (rng() % 50 == 0) {
      const size_t i = rng() % kDepth;
      if (slots[i].in_flight) {
        Status c = e.Cancel(&reqs[i]);
        if (c.ok()) slots[i].cancelled = true;
        ASSERT_TRUE(c.ok() || c.Is(Errc::kNotCancellable) ||
                    c.Is(Errc::kInvalidArgument))
            << c.ToString();
      }
    }
    if (in_flight == 0) continue;
    Result<size_t> got = e.Reap(out, 1, std::chrono::seconds(10));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    ASSERT_GT(*got, 0U) << "nothing completed in 10 s with " << in_flight
                        << " requests in flight";
    for (size_t k = 0; k < *got; ++k) {
      check(out[k]);
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_EQ(in_flight, 0U);
  EXPECT_EQ(seen.submitted, total);
  EXPECT_EQ(seen.reaped, total);

  const FaultStats f = faults.fault_stats();
  EXPECT_EQ(f.accepted, seen.submitted);
  EXPECT_EQ(f.completed, seen.reaped);
  EXPECT_EQ(f.eio, seen.eio);
  EXPECT_EQ(f.enospc, seen.enospc);
  EXPECT_EQ(f.short_io, seen.short_io);
  EXPECT_EQ(f.eagain, seen.eagain_calls);
  EXPECT_EQ(f.partial, seen.partial_calls);
  const FaultSpec& sp = faults.spec();
  std::printf(
      "[ faults   ] %s: %llu requests, %llu submit calls (%llu EAGAIN, %llu "
      "partial), %llu short, %llu EIO, %llu ENOSPC, %llu delayed, %llu "
      "reordered, %llu stalls, %llu cancelled\n",
      engine_name.c_str(), static_cast<unsigned long long>(seen.reaped),
      static_cast<unsigned long long>(f.submit_calls),
      static_cast<unsigned long long>(f.eagain),
      static_cast<unsigned long long>(f.partial),
      static_cast<unsigned long long>(f.short_io),
      static_cast<unsigned long long>(f.eio),
      static_cast<unsigned long long>(f.enospc),
      static_cast<unsigned long long>(f.delayed),
      static_cast<unsigned long long>(f.reordered),
      static_cast<unsigned long long>(f.stalls),
      static_cast<unsigned long long>(seen.canceled));
  // Every fault in the mix happened (the counts are far above zero for these
  // probabilities and request counts).
  if (sp.eagain > 0) {
    EXPECT_GT(f.eagain, 0U);
  }
  if (sp.partial > 0) {
    EXPECT_GT(f.partial, 0U);
  }
  if (sp.short_io > 0) {
    EXPECT_GT(f.short_io, 0U);
  }
  if (sp.eio > 0) {
    EXPECT_GT(f.eio, 0U);
  }
  if (sp.enospc > 0) {
    EXPECT_GT(f.enospc, 0U);
  }
  if (sp.delay > 0) {
    EXPECT_GT(f.delayed, 0U);
  }
  if (sp.reorder > 0) {
    EXPECT_GT(f.reordered, 0U);
  }
  if (sp.stall > 0) {
    EXPECT_GT(f.stalls, 0U);
  }
  const EngineStats es = e.Stats();
  EXPECT_EQ(es.in_flight, 0U);
  // Nothing left: a poll finds nothing, and after Shutdown, Reap says so.
  Result<size_t> more = e.Reap(out, 0, std::chrono::nanoseconds(0));
  ASSERT_TRUE(more.ok());
  EXPECT_EQ(*more, 0U);
  EXPECT_TRUE(e.Shutdown(std::chrono::seconds(10)).ok());
  Result<size_t> after = e.Reap(out, 1, std::chrono::milliseconds(100));
  EXPECT_FALSE(after.ok());
  if (!after.ok()) {
    EXPECT_TRUE(after.status().Is(Errc::kShutdown));
  }
}

std::string ParamName(
    const ::testing::TestParamInfo<std::tuple<std::string, Mix>>& info) {
  return testing::ParamName(std::get<0>(info.param) + "_" +
                            std::get<1>(info.param).name);
}

// Each engine with its default options, as since this suite was written (no
// reason was recorded; all of AllEngines() would triple its running time).
INSTANTIATE_TEST_SUITE_P(
    Engines, FaultTest,
    ::testing::Combine(::testing::ValuesIn(testing::PlainEngines()),
                       ::testing::ValuesIn(kMixes)),
    ParamName);
// The wrapper delivering to callbacks itself, under every fault at once.
INSTANTIATE_TEST_SUITE_P(
    Delivery, FaultTest,
    ::testing::Combine(::testing::ValuesIn(testing::DeliveryEngines()),
                       ::testing::Values(kMixes[std::size(kMixes) - 1])),
    ParamName);

Result<std::unique_ptr<FaultInjectingEngine>> ThreadsWith(const char* text) {
  Result<FaultSpec> spec = ParseFaultSpec(text);
  if (!spec.ok()) return spec.status();
  EngineOptions opts;
  opts.kind = EngineKind::kThreads;
  opts.queue_depth = 32;
  Result<std::unique_ptr<Engine>> inner = MakeEngine(opts);
  if (!inner.ok()) return inner.status();
  return MakeFaultInjectingEngine(std::move(*inner), *spec);
}

TEST(FaultSpecTest, ParsesEveryFaultAndPrintsItBack) {
  Result<FaultSpec> s = ParseFaultSpec(
      "eagain=0.01,partial=0.05,short=0.02,eio=0.001,enospc=0.003,delay=0.01:"
      "2ms,reorder=0.04:300us,stall=0.001:1s,seed=42");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_DOUBLE_EQ(s->eagain, 0.01);
  EXPECT_DOUBLE_EQ(s->partial, 0.05);
  EXPECT_DOUBLE_EQ(s->short_io, 0.02);
  EXPECT_DOUBLE_EQ(s->eio, 0.001);
  EXPECT_DOUBLE_EQ(s->enospc, 0.003);
  EXPECT_DOUBLE_EQ(s->delay, 0.01);
  EXPECT_EQ(s->delay_for, std::chrono::milliseconds(2));
  EXPECT_DOUBLE_EQ(s->reorder, 0.04);
  EXPECT_EQ(s->reorder_for, std::chrono::microseconds(300));
  EXPECT_DOUBLE_EQ(s->stall, 0.001);
  EXPECT_EQ(s->stall_for, std::chrono::seconds(1));
  EXPECT_EQ(s->seed, 42U);
  EXPECT_EQ(FaultSpecString(*s),
            "eagain=0.01,partial=0.05,short=0.02,eio=0.001,enospc=0.003,"
            "delay=0.01:2ms,reorder=0.04:300us,stall=0.001:1s,seed=42");
  Result<FaultSpec> again = ParseFaultSpec(FaultSpecString(*s));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(FaultSpecString(*again), FaultSpecString(*s));
  EXPECT_TRUE(ParseFaultSpec("").ok());
}

TEST(FaultSpecTest, RefusesBadItemsByName) {
  const struct {
    const char* text;
    const char* says;
  } kBad[] = {
      {"eio", "'eio': expected NAME=VALUE"},
      {"eio=1", "in [0, 1)"},
      {"eio=-0.1", "in [0, 1)"},
      {"eio=x", "in [0, 1)"},
      {"eio=nan", "in [0, 1)"},
      {"bogus=0.1", "unknown fault"},
      {"eio=0.1,,short=0.1", "empty item"},
      {"eio=0.1:5ms", "only delay, reorder and stall take a duration"},
      {"delay=0.1:5parsecs", "the duration"},
      {"delay=0.1:0ms", "the duration"},
      {"stall=0.1:99999999999s", "the duration"},
      {"seed=-3", "the seed"},
  };
  for (const auto& b : kBad) {
    Result<FaultSpec> s = ParseFaultSpec(b.text);
    ASSERT_FALSE(s.ok()) << b.text;
    EXPECT_TRUE(s.status().Is(Errc::kInvalidArgument)) << b.text;
    EXPECT_NE(s.status().context().find(b.says), std::string::npos)
        << b.text << " -> " << s.status().ToString();
  }
}

TEST(FaultEngineTest, TheSameSeedReplaysTheSameSubmissionFaults) {
  auto run = [](std::vector<size_t>* accepted) {
    Result<std::unique_ptr<FaultInjectingEngine>> e =
        ThreadsWith("eagain=0.3,partial=0.3,seed=1234");
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    std::vector<Request> reqs(8);
    std::vector<Request*> out(8);
    for (int round = 0; round < 200; ++round) {
      std::vector<Request*> batch;
      for (Request& r : reqs) {
        r.PrepNoop();
        batch.push_back(&r);
      }
      SubmitResult sr = (*e)->Submit(batch);
      accepted->push_back(sr.accepted);
      size_t got = 0;
      while (got < sr.accepted) {
        Result<size_t> n = (*e)->Reap(out, 1, std::chrono::seconds(5));
        ASSERT_TRUE(n.ok());
        ASSERT_GT(*n, 0U);
        got += *n;
      }
    }
  };
  std::vector<size_t> a, b;
  run(&a);
  run(&b);
  EXPECT_EQ(a, b);
  EXPECT_NE(std::count(a.begin(), a.end(), 0U), 0);  // some EAGAIN
  EXPECT_NE(std::count_if(a.begin(), a.end(),
                          [](size_t n) { return n != 0 && n != 8; }),
            0);  // some partial
}

TEST(FaultEngineTest, AStalledEngineHoldsEveryCompletionUntilTheStallEnds) {
  // p = 0.9 with this seed: the first Reap call starts a 50 ms stall.
  Result<std::unique_ptr<FaultInjectingEngine>> made =
      ThreadsWith("stall=0.9:50ms,seed=7");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  FaultInjectingEngine& e = **made;
  Request r;
  r.PrepNoop();
  Request* one = &r;
  ASSERT_TRUE(e.Submit(std::span<Request* const>(&one, 1)).status.ok());
  Request* out[1];
  const auto t0 = std::chrono::steady_clock::now();
  Result<size_t> first = e.Reap(out, 1, std::chrono::milliseconds(10));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(e.fault_stats().stalls, 1U) << "the seed no longer stalls first";
  EXPECT_EQ(*first, 0U) << "a completion came out during the stall";
  EXPECT_FALSE(r.completed());
  Result<size_t> second = e.Reap(out, 1, std::chrono::seconds(5));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(*second, 1U);
  EXPECT_EQ(out[0], &r);
  EXPECT_GE(std::chrono::steady_clock::now() - t0,
            std::chrono::milliseconds(50));
}

TEST(FaultEngineTest, ADelayedCompletionIsNotCancellableAndComesOutOnce) {
  Result<std::unique_ptr<FaultInjectingEngine>> made =
      ThreadsWith("delay=0.99:200ms,seed=3");
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  FaultInjectingEngine& e = **made;
  Request r;
  r.PrepNoop();
  Request* one = &r;
  ASSERT_TRUE(e.Submit(std::span<Request* const>(&one, 1)).status.ok());
  Request* out[2];
  // Taken from the inner engine and held.
  Result<size_t> first = e.Reap(out, 1, std::chrono::milliseconds(20));
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(e.fault_stats().delayed, 1U) << "the seed no longer delays";
  EXPECT_EQ(*first, 0U);
  EXPECT_TRUE(r.in_flight());
  EXPECT_EQ(e.Stats().in_flight, 1U);
  Status c = e.Cancel(&r);
  EXPECT_TRUE(c.Is(Errc::kNotCancellable)) << c.ToString();
  EXPECT_NE(c.context().find("held back"), std::string::npos);
  Result<int> fd = e.NotifyFd();
  EXPECT_TRUE(!fd.ok() && fd.status().Is(Errc::kUnsupported));
  Result<size_t> second = e.Reap(out, 1, std::chrono::seconds(2));
  ASSERT_TRUE(second.ok());
  ASSERT_EQ(*second, 1U);
  EXPECT_EQ(out[0], &r);
  EXPECT_TRUE(r.completed());
  EXPECT_EQ(r.rval, 0);
}

TEST(FaultEngineTest, WrappingNothingIsRefused) {
  Result<std::unique_ptr<FaultInjectingEngine>> made =
      MakeFaultInjectingEngine(nullptr, FaultSpec{});
  ASSERT_FALSE(made.ok());
  EXPECT_TRUE(made.status().Is(Errc::kInvalidArgument));
}

}  // namespace
}  // namespace aiokit
