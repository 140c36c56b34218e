// An engine's life under load: Shutdown while one thread submits and another
// reaps, with ten thousand requests in flight, then destruction; and
// create/destroy cycles (200; AIOKIT_LIFECYCLE_CYCLES, or ctest -L soak for
// 5,000) that must leave no descriptor and no thread behind. Run on every
// engine and variant, as the conformance suite is.

#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "test_util.h"

namespace aiokit {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr size_t kBlock = 4096;

// Fails the test instead of letting it hang: when the limit passes before the
// object is destroyed, it reports the phase the test was in and aborts (a hung
// engine cannot be unhung from here).
class Watchdog {
 public:
  Watchdog(std::string test, Clock::duration limit)
      : test_(std::move(test)), thread_([this, limit] { Watch(limit); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // A string literal naming what the test does now.
  void Phase(const char* phase) {
    phase_.store(phase, std::memory_order_relaxed);
  }

 private:
  void Watch(Clock::duration limit) {
    std::unique_lock<std::mutex> lock(mu_);
    if (cv_.wait_for(lock, limit, [this] { return done_; })) return;
    std::fprintf(stderr,
                 "[  FAILED  ] %s: watchdog: still running after %lld s, in "
                 "phase \"%s\"\n",
                 test_.c_str(),
                 static_cast<long long>(
                     std::chrono::duration_cast<seconds>(limit).count()),
                 phase_.load(std::memory_order_relaxed));
    std::fflush(stderr);
    std::abort();
  }

  std::string test_;
  std::atomic<const char*> phase_{"start"};
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;  // last: starts once the rest is built
};

// Entries of a /proc directory (".", ".." not counted), or -1.
long CountEntries(const char* dir) {
  DIR* d = ::opendir(dir);
  if (d == nullptr) return -1;
  long n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

// The threads of this process once they stop changing: exiting threads (an
// engine's workers, io_uring's io-wq and SQPOLL threads) leave /proc/self/task
// asynchronously. Returns the count once it has held still for 100 ms, or the
// last count after 10 s.
long SettledThreadCount() {
  const auto until = Clock::now() + seconds(10);
  long last = CountEntries("/proc/self/task");
  auto still_since = Clock::now();
  while (Clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(5));
    const long now = CountEntries("/proc/self/task");
    if (now != last) {
      last = now;
      still_since = Clock::now();
    } else if (Clock::now() - still_since >= milliseconds(100)) {
      break;
    }
  }
  return last;
}

// Waits (up to 10 s) until this process has at most `want` threads; returns
// the last count.
long ThreadCountDownTo(long want) {
  const auto until = Clock::now() + seconds(10);
  long now = CountEntries("/proc/self/task");
  while (now > want && Clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(5));
    now = CountEntries("/proc/self/task");
  }
  return now;
}

class LifecycleTest : public ::testing::TestWithParam<std::string> {
 protected:
  [[nodiscard]] bool OneThreadPromised() const {
    return testing::OneThreadPromised(GetParam());
  }

  // See ShutdownUnderLoad.
  void ShutdownUnderLoad(std::chrono::nanoseconds first_timeout);
};

// ---- Shutdown with ten thousand requests in flight, while a thread submits
// and another reaps. ----
//
// Engine::Shutdown's contract: it stops accepting submissions, waits up to the
// timeout for the requests in flight and keeps their completions for Reap; OK
// when nothing is left in flight, kTimedOut (call it again) when some are.
// Every request Submit accepted completes exactly once and one Reap returns
// it; Reap says kShutdown once the engine is shut down and nothing is left.
// So: each request was either not accepted by Submit, or reaped exactly once;
// after Shutdown no Submit takes anything; the destructor then has nothing to
// wait for.
void LifecycleTest::ShutdownUnderLoad(std::chrono::nanoseconds first_timeout) {
  if (OneThreadPromised()) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  constexpr size_t kInFlight = 10000;  // accepted before Shutdown is called
  constexpr size_t kPool = 12288;      // requests, each with its own buffer
  constexpr size_t kBatch = 64;
  constexpr size_t kFileBlocks = 256;
  Watchdog dog(::testing::UnitTest::GetInstance()->current_test_info()->name(),
               seconds(90));
  File f = testing::ScratchFile(kFileBlocks * kBlock, 41);
  std::vector<char> bufs(kPool * kBlock);
  std::vector<Request> reqs(kPool);
  // Per request: how many times it was handed to Submit (counted before the
  // call and taken back when not accepted, so a reap never runs ahead of its
  // submission) and how many times Reap returned it.
  std::unique_ptr<std::atomic<int>[]> submits(new std::atomic<int>[kPool]);
  std::unique_ptr<std::atomic<int>[]> reaps(new std::atomic<int>[kPool]);
  for (size_t i = 0; i < kPool; ++i) {
    submits[i] = 0;
    reaps[i] = 0;
  }
  std::mutex free_mu;
  std::vector<size_t> free_list;  // reaped, ready to go again
  size_t next_fresh = 0;          // the submitter's only

  EngineOptions o;
  // Far fewer than are in flight: the engines' overflow paths (linux-aio
  // reaping to make room, io_uring's FIFO, the threads ring) carry the rest.
  o.queue_depth = 1024;
  AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam(), o);
  const std::string name = testing::EngineName(GetParam());

  std::atomic<size_t> accepted{0};
  std::atomic<size_t> refused_after_shutdown{0};
  std::atomic<bool> saw_refusal{false};
  std::atomic<bool> reaper_done{false};
  std::atomic<int> unexpected_submit{0};
  std::string unexpected_submit_text;  // the submitter's until joined
  std::mutex ready_mu;
  std::condition_variable ready_cv;
  bool ready = false;  // kInFlight accepted
  bool reap_go = false;

  std::thread submitter([&] {
    std::vector<size_t> batch_idx;
    std::vector<Request*> batch;
    for (;;) {
      batch_idx.clear();
      batch.clear();
      while (batch_idx.size() < kBatch && next_fresh < kPool) {
        batch_idx.push_back(next_fresh++);
      }
      if (batch_idx.size() < kBatch) {
        std::lock_guard<std::mutex> lock(free_mu);
        while (batch_idx.size() < kBatch && !free_list.empty()) {
          batch_idx.push_back(free_list.back());
          free_list.pop_back();
        }
      }
      if (batch_idx.empty()) {
        // Everything is in flight: wait for the reaper to hand some back (it
        // reaps every one before it stops), then submit them again.
        if (reaper_done.load()) {
          std::lock_guard<std::mutex> lock(free_mu);
          if (free_list.empty()) break;  // lost requests: counted below
        }
        std::this_thread::sleep_for(std::chrono::microseconds(50));
        continue;
      }
      for (size_t i : batch_idx) {
        reqs[i].PrepRead(f.fd(), bufs.data() + i * kBlock, kBlock,
                         (i % kFileBlocks) * kBlock);
        submits[i].fetch_add(1);
        batch.push_back(&reqs[i]);
      }
      SubmitResult sr = engine->Submit(batch);
      for (size_t k = sr.accepted; k < batch_idx.size(); ++k) {
        submits[batch_idx[k]].fetch_sub(1);
      }
      const size_t total = accepted.fetch_add(sr.accepted) + sr.accepted;
      if (sr.accepted < batch_idx.size()) {
        // Not taken: the caller's again.
        std::lock_guard<std::mutex> lock(free_mu);
        free_list.insert(free_list.end(),
                         batch_idx.begin() + static_cast<long>(sr.accepted),
                         batch_idx.end());
      }
      {
        std::lock_guard<std::mutex> lock(ready_mu);
        if (!ready && total >= kInFlight) {
          ready = true;
          ready_cv.notify_all();
        }
      }
      if (sr.status.ok()) continue;
      if (sr.status.Is(Errc::kShutdown)) {
        refused_after_shutdown += batch_idx.size() - sr.accepted;
        saw_refusal = true;
        break;
      }
      if (sr.status.Is(Errc::kQueueFull)) {
        // The retry policy ran out (nobody reaps yet): try again.
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        continue;
      }
      if (unexpected_submit.fetch_add(1) == 0) {
        unexpected_submit_text = sr.status.ToString();
      }
      break;
    }
  });

  std::atomic<size_t> reaped{0}, cancelled{0}, bad_rval{0}, early_reap{0};
  std::string bad_rval_text;  // the reaper's until joined
  Status reaper_end;
  std::thread reaper([&] {
    {
      std::unique_lock<std::mutex> lock(ready_mu);
      ready_cv.wait(lock, [&] { return reap_go; });
    }
    std::vector<Request*> out(256);
    for (;;) {
      Result<size_t> n = engine->Reap(out, 1, milliseconds(100));
      if (!n.ok()) {
        reaper_end = n.status();
        reaper_done = true;
        break;
      }
      std::vector<size_t> done;
      done.reserve(*n);
      for (size_t k = 0; k < *n; ++k) {
        const auto i = static_cast<size_t>(out[k] - reqs.data());
        if (i >= kPool) {
          ++bad_rval;
          continue;
        }
        if (reaps[i].fetch_add(1) + 1 > submits[i].load()) ++early_reap;
        const int64_t rval = out[k]->rval;
        // Shutdown cancels nothing it accepted (ShutdownMode::kFinish), on
        // any engine; only io_uring's kernel cancels what a thread submitted
        // when that thread exits (the submitter does, at the end).
        const bool may_cancel = name == "io_uring";
        if (rval == -ECANCELED && may_cancel) {
          ++cancelled;
        } else if (rval != static_cast<int64_t>(kBlock)) {
          if (bad_rval.fetch_add(1) == 0) bad_rval_text = Describe(*out[k]);
        }
        done.push_back(i);
      }
      reaped += *n;
      std::lock_guard<std::mutex> lock(free_mu);
      free_list.insert(free_list.end(), done.begin(), done.end());
    }
  });

  // The third thread: Shutdown once kInFlight are in flight, while the
  // submitter goes on.
  size_t in_flight_at_shutdown = 0;
  Status first, second;
  std::thread shutter([&] {
    {
      std::unique_lock<std::mutex> lock(ready_mu);
      ready_cv.wait(lock, [&] { return ready; });
      // Nothing reaped yet: at least kInFlight are in flight.
      in_flight_at_shutdown = engine->Stats().in_flight;
      reap_go = true;
    }
    ready_cv.notify_all();  // the reaper starts as Shutdown begins
    first = engine->Shutdown(first_timeout);
    // kTimedOut leaves the requests with the kernel: Shutdown may be called
    // again, and must then finish.
    second = first.ok() ? first : engine->Shutdown(seconds(60));
  });

  dog.Phase("shutdown under load");
  shutter.join();
  submitter.join();
  reaper.join();
  dog.Phase("after the threads");
  const auto& test = *::testing::UnitTest::GetInstance()->current_test_info();
  std::printf(
      "%s: %zu in flight at Shutdown, %zu accepted in all, %zu "
      "reaped (%zu cancelled), %zu refused after Shutdown; first "
      "Shutdown: %s\n",
      test.name(), in_flight_at_shutdown, accepted.load(), reaped.load(),
      cancelled.load(), refused_after_shutdown.load(),
      first.ToString().c_str());

  EXPECT_TRUE(first.ok() || first.Is(Errc::kTimedOut)) << first.ToString();
  EXPECT_TRUE(second.ok()) << second.ToString();
  EXPECT_GE(in_flight_at_shutdown, kInFlight);
  EXPECT_TRUE(saw_refusal.load())
      << "the submitter never met a refusal after Shutdown";
  EXPECT_EQ(unexpected_submit.load(), 0) << unexpected_submit_text;
  EXPECT_TRUE(reaper_end.Is(Errc::kShutdown)) << reaper_end.ToString();
  EXPECT_EQ(early_reap.load(), 0U) << "a request was reaped more often than "
                                      "it was submitted";
  EXPECT_EQ(bad_rval.load(), 0U) << bad_rval_text;
  EXPECT_EQ(reaped.load(), accepted.load());
  size_t mismatched = 0;
  for (size_t i = 0; i < kPool; ++i) {
    if (submits[i].load() != reaps[i].load() && mismatched++ < 5) {
      ADD_FAILURE() << "request " << i << ": accepted " << submits[i].load()
                    << " times, reaped " << reaps[i].load()
                    << " times: " << Describe(reqs[i]);
    }
  }
  EXPECT_EQ(mismatched, 0U);
  EngineStats st = engine->Stats();
  EXPECT_EQ(st.in_flight, 0U);
  EXPECT_EQ(st.submitted, accepted.load());
  std::vector<Request*> out(1);
  Result<size_t> after = engine->Reap(out, 1, milliseconds(10));
  EXPECT_TRUE(after.status().Is(Errc::kShutdown)) << after.status().ToString();
  dog.Phase("destroying the engine");
  engine.reset();
}

TEST_P(LifecycleTest, ShutdownWithTenThousandInFlightAccountsForEveryRequest) {
  ShutdownUnderLoad(seconds(60));
}

// Shutdown(0) gives up at once (kTimedOut, requests still with the kernel);
// called again, it finishes.
TEST_P(LifecycleTest, AShutdownThatTimesOutCanBeCalledAgainAndLosesNothing) {
  ShutdownUnderLoad(std::chrono::nanoseconds(0));
}

// ---- Reap during a Submit that Shutdown waits for. ----

// Holds one thread's submission system call (io_submit, io_uring_enter, the
// threads engine's queueing) until released; the others pass.
struct SubmitLatch {
  std::mutex mu;
  std::condition_variable cv;
  std::thread::id holder;
  bool entered = false;
  bool released = false;

  void MaybeHold() {
    std::unique_lock<std::mutex> lock(mu);
    if (std::this_thread::get_id() != holder || entered) return;
    entered = true;
    cv.notify_all();
    cv.wait(lock, [this] { return released; });
  }
};
SubmitLatch* g_latch = nullptr;

long LatchedIoSubmit(aio_context_t ctx, long nr, struct iocb** iocbs) {
  g_latch->MaybeHold();
  return sys::real::IoSubmit(ctx, nr, iocbs);
}
int LatchedUringEnter(unsigned* to_submit, unsigned /*min_complete*/,
                      unsigned /*flags*/) {
  if (*to_submit != 0) g_latch->MaybeHold();
  return 0;
}
int LatchedThreadsSubmit(unsigned* /*n*/) {
  g_latch->MaybeHold();
  return 0;
}

// Reap says kShutdown when the engine is shut down and nothing is left to
// reap. While a Submit that began before Shutdown is still underway, that is
// not known yet: what it accepts completes later, and must still be reaped.
TEST_P(LifecycleTest, ReapSaysShutdownOnlyOnceNoSubmitCanStillAccept) {
  if (OneThreadPromised()) {
    GTEST_SKIP() << "the engine was promised one thread";
  }
  if (testing::EngineVariant(GetParam()) == "sqpoll") {
    GTEST_SKIP() << "with SQPOLL the kernel's poller submits: no system call "
                    "to hold";
  }
  Watchdog dog(::testing::UnitTest::GetInstance()->current_test_info()->name(),
               seconds(60));
  SubmitLatch latch;
  g_latch = &latch;
  sys::FaultHooks hooks;
  hooks.io_submit = &LatchedIoSubmit;
  hooks.io_uring_enter = &LatchedUringEnter;
  hooks.user_submit = &LatchedThreadsSubmit;
  sys::SetFaultHooks(&hooks);
  struct Unhook {
    ~Unhook() {
      sys::SetFaultHooks(nullptr);
      g_latch = nullptr;
    }
  } unhook;
  File f = testing::ScratchFile(8192, 43);
  AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam(), EngineOptions{});
  std::vector<char> buf(kBlock);
  Request req;
  req.PrepRead(f.fd(), buf.data(), kBlock, 0);

  SubmitResult sr;
  std::thread submitter([&] {
    {
      std::lock_guard<std::mutex> lock(latch.mu);
      latch.holder = std::this_thread::get_id();
    }
    Request* p = &req;
    sr = engine->Submit({&p, 1});
  });
  {
    std::unique_lock<std::mutex> lock(latch.mu);
    latch.cv.wait(lock, [&] { return latch.entered; });
  }
  Status shut;
  std::thread shutter([&] { shut = engine->Shutdown(seconds(30)); });
  // Shutdown has set its flag and waits for the Submit.
  std::this_thread::sleep_for(milliseconds(50));
  std::vector<Request*> out(1);
  Result<size_t> early = engine->Reap(out, 1, milliseconds(20));
  {
    std::lock_guard<std::mutex> lock(latch.mu);
    latch.released = true;
  }
  latch.cv.notify_all();
  submitter.join();
  shutter.join();
  EXPECT_FALSE(early.status().Is(Errc::kShutdown))
      << "Reap said nothing is left while a Submit could still accept";
  EXPECT_EQ(sr.accepted, 1U) << sr.status.ToString();
  EXPECT_TRUE(shut.ok()) << shut.ToString();
  size_t got = early.ok() ? *early : 0;
  if (got == 0) {
    testing::Reaped rest = testing::ReapAll(*engine, 1, seconds(10));
    got = rest.order.size();
  }
  EXPECT_EQ(got, 1U);
  EXPECT_EQ(req.rval, static_cast<int64_t>(kBlock)) << Describe(req);
  Result<size_t> after = engine->Reap(out, 1, milliseconds(10));
  EXPECT_TRUE(after.status().Is(Errc::kShutdown)) << after.status().ToString();
  engine.reset();
}

// ---- Create and destroy, a thousand times. ----

// Kernel AIO's io_destroy waits for an RCU grace period (about 30 ms on a
// virtual machine), so a thousand cycles one after another take half a
// minute; four threads cycling at once overlap those waits (and make engines
// side by side, as a program with one engine per thread does).
// Cycles per run: 200, or AIOKIT_LIFECYCLE_CYCLES. A leak of one descriptor
// or thread per engine shows after one cycle; more cycles give the races of
// creation and destruction more chances (the soak run).
int CyclesToRun() {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before any thread starts
  if (const char* v = std::getenv("AIOKIT_LIFECYCLE_CYCLES");
      v != nullptr && *v != '\0') {
    return static_cast<int>(std::strtol(v, nullptr, 10));
  }
  return 200;
}

TEST_P(LifecycleTest, CreateDestroyCyclesLeaveNoDescriptorOrThread) {
  const int kCycles = CyclesToRun();
  ASSERT_GT(kCycles, 0) << "AIOKIT_LIFECYCLE_CYCLES must be a positive count";
  constexpr int kCyclers = 4;
  constexpr size_t kReads = 4;
  // A linux-aio cycle takes about 35 ms of io_destroy's grace period.
  Watchdog dog(::testing::UnitTest::GetInstance()->current_test_info()->name(),
               seconds(100) + milliseconds(100) * kCycles);
  File f = testing::ScratchFile(64 * 1024, 42);
  EngineOptions o;
  o.queue_depth = 16;
  {
    // Once before counting: whatever the first engine sets up for good
    // (probes, caches) is not a leak.
    AIOKIT_MAKE_ENGINE_OR_SKIP(warm, GetParam(), o);
  }
  const long fds_before = CountEntries("/proc/self/fd");
  const long threads_before = SettledThreadCount();
  ASSERT_GT(fds_before, 0);
  ASSERT_GT(threads_before, 0);

  std::atomic<int> failures{0};
  // One cycler: its share of the cycles, each with its own engine. Most reap
  // everything; every fourth is destroyed with its requests in flight, every
  // tenth is shut down first.
  auto cycler = [&](int first) {
    std::vector<char> bufs(kReads * kBlock);
    for (int cycle = first; cycle < kCycles && failures.load() == 0;
         cycle += kCyclers) {
      std::vector<Request> reqs(kReads + 1);
      for (size_t i = 0; i < kReads; ++i) {
        reqs[i].PrepRead(f.fd(), bufs.data() + i * kBlock, kBlock,
                         ((static_cast<size_t>(cycle) + i) % 16) * kBlock);
      }
      reqs[kReads].PrepNoop();
      Result<std::unique_ptr<Engine>> made =
          testing::MakeNamedEngine(GetParam(), o);
      if (!made.ok()) {
        ADD_FAILURE() << "cycle " << cycle << ": " << made.status().ToString();
        ++failures;
        break;
      }
      std::unique_ptr<Engine> e = std::move(*made);
      SubmitResult sr = e->Submit(testing::Pointers(reqs));
      if (sr.accepted != reqs.size()) {
        ADD_FAILURE() << "cycle " << cycle << ": " << sr.status.ToString();
        ++failures;
      }
      if (cycle % 10 == 5) {
        Status s = e->Shutdown(seconds(30));
        if (!s.ok()) {
          ADD_FAILURE() << "cycle " << cycle << ": " << s.ToString();
          ++failures;
        }
      }
      if (cycle % 4 != 3) {
        testing::Reaped got = testing::ReapAll(*e, reqs.size(), seconds(30));
        if (got.order.size() != reqs.size() ||
            got.times.size() != reqs.size()) {
          ADD_FAILURE() << "cycle " << cycle << ": reaped " << got.order.size()
                        << " of " << reqs.size() << " " << got.error.ToString();
          ++failures;
        }
      }
      e.reset();
      // Reaped or not, each has its result once the engine is gone.
      for (size_t i = 0; i <= kReads; ++i) {
        const int64_t want = i < kReads ? static_cast<int64_t>(kBlock) : 0;
        if (reqs[i].rval != want) {
          ADD_FAILURE() << "cycle " << cycle << ": " << Describe(reqs[i]);
          ++failures;
        }
      }
    }
  };
  dog.Phase("cycles");
  const auto start = Clock::now();
  if (OneThreadPromised()) {
    // Promised one thread per engine: each engine stays on the thread that
    // made it, so cycling on several threads would be allowed too; one
    // thread keeps this variant closest to how it is used.
    for (int t = 0; t < kCyclers; ++t) cycler(t);
  } else {
    std::vector<std::thread> cyclers;
    cyclers.reserve(kCyclers);
    for (int t = 0; t < kCyclers; ++t) cyclers.emplace_back(cycler, t);
    for (std::thread& t : cyclers) t.join();
  }
  const auto took = Clock::now() - start;
  dog.Phase("counting");
  const long fds_after = CountEntries("/proc/self/fd");
  const long threads_after = ThreadCountDownTo(threads_before);
  std::printf("%s: %d cycles in %lld ms; fds %ld -> %ld, threads %ld -> %ld\n",
              GetParam().c_str(), kCycles,
              static_cast<long long>(
                  std::chrono::duration_cast<milliseconds>(took).count()),
              fds_before, fds_after, threads_before, threads_after);
  EXPECT_EQ(fds_after, fds_before);
  // At most as many: a kernel io_uring thread (iou-sqp, iou-wrk) of an earlier
  // test may still have been exiting when the first count was taken.
  EXPECT_LE(threads_after, threads_before);
}

// Every engine and variant, as the conformance suite.
INSTANTIATE_TEST_SUITE_P(Engines, LifecycleTest,
                         ::testing::ValuesIn(testing::AllEngines()),
                         testing::EngineParamName);

}  // namespace
}  // namespace aiokit
