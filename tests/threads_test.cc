// What only the threads engine does: cancel of requests not yet started,
// priority order, per-fd order, requests on one fd in parallel, the worker pool
// growing and shrinking, and no heap allocation per request.

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "test_util.h"

// Counts heap allocations in this test binary (for NoHeapAllocationPerRequest).
// GCC sees the malloc/free pairs below through inlining and takes them for
// mismatched new/free; they are a matched replacement of the global pair.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<uint64_t> g_allocations{0};
}  // namespace
void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t /*n*/) noexcept { std::free(p); }

namespace aiokit {
namespace {

using std::chrono::milliseconds;

std::unique_ptr<Engine> MakeThreads(EngineOptions o = {}) {
  o.kind = EngineKind::kThreads;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(*e) : nullptr;
}

size_t TaskCount() {
  size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++n;
    }
    ::closedir(d);
  }
  return n;
}

// A pipe whose read end blocks a worker until Release().
struct Blocker {
  int fds[2] = {-1, -1};
  char byte = 0;
  Request req;
  Blocker() {
    EXPECT_EQ(::pipe(fds), 0);
    req.PrepRead(fds[0], &byte, 1, 0);
  }
  ~Blocker() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  Blocker(const Blocker&) = delete;
  Blocker& operator=(const Blocker&) = delete;
  void Release() { EXPECT_EQ(::write(fds[1], "x", 1), 1); }
};

void SubmitAll(Engine& e, std::vector<Request*> reqs) {
  SubmitResult sr = e.Submit(reqs);
  ASSERT_EQ(sr.accepted, reqs.size()) << sr.status.ToString();
}

// Waits until the engine has started `n` requests (none is then queued).
void WaitForRunning(Engine& e, uint64_t workers) {
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (e.Stats().workers < workers &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  std::this_thread::sleep_for(milliseconds(20));  // and let them block
}

TEST(ThreadsEngineTest, ARequestNotStartedIsCancelledAStartedOneIsNot) {
  EngineOptions o;
  o.threads_max = 1;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  Blocker b;
  SubmitAll(*e, {&b.req});
  WaitForRunning(*e, 1);
  File f = testing::ScratchFile(16384, 60);
  std::vector<std::vector<char>> bufs(4, std::vector<char>(4096));
  std::vector<Request> reqs(4);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  }
  SubmitAll(*e, testing::Pointers(reqs));
  // The worker is stuck in the pipe read: the file reads wait in the queue.
  EXPECT_TRUE(e->Cancel(&reqs[1]).ok());
  EXPECT_TRUE(e->Cancel(&reqs[3]).ok());
  Status started = e->Cancel(&b.req);
  EXPECT_TRUE(started.Is(Errc::kNotCancellable)) << started.ToString();
  EXPECT_NE(started.ToString().find("started"), std::string::npos);
  b.Release();
  std::vector<Request*> all = testing::Pointers(reqs);
  all.push_back(&b.req);
  testing::ExpectExactlyOnce(testing::ReapAll(*e, all.size()), all);
  EXPECT_EQ(reqs[1].rval, -ECANCELED);
  EXPECT_EQ(reqs[3].rval, -ECANCELED);
  EXPECT_EQ(reqs[0].rval, 4096) << Describe(reqs[0]);
  EXPECT_EQ(reqs[2].rval, 4096) << Describe(reqs[2]);
  EXPECT_EQ(b.req.rval, 1);
  // Cancelled after completing: nothing to cancel.
  EXPECT_TRUE(e->Cancel(&reqs[0]).Is(Errc::kInvalidArgument));
}

// Submit with every completion slot taken waits for a completion, and the
// first one ends the wait: before, the wait lasted the whole retry delay
// (here 10 s), as completions woke only reapers.
TEST(ThreadsEngineTest, ASubmitWaitingForRoomWakesAtTheFirstCompletion) {
  EngineOptions o;
  o.queue_depth = 1;  // a ring of 65 events: 64 requests in flight
  o.threads_max = 1;
  o.eagain.max_retries = 2;
  o.eagain.initial_delay = std::chrono::seconds(10);
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  Blocker b;
  SubmitAll(*e, {&b.req});
  WaitForRunning(*e, 1);
  // The other slots: reads queued behind the blocked worker.
  File f = testing::ScratchFile(4096, 61);
  std::vector<char> buf(4096);
  std::vector<Request> queued(63);
  for (Request& r : queued) r.PrepRead(f.fd(), buf.data(), 4096, 0);
  SubmitAll(*e, testing::Pointers(queued));
  Request read;
  read.PrepRead(f.fd(), buf.data(), 4096, 0);
  std::thread release([&] {
    std::this_thread::sleep_for(milliseconds(100));
    b.Release();
  });
  const auto t0 = std::chrono::steady_clock::now();
  Request* one[] = {&read};
  SubmitResult sr = e->Submit(one);
  const auto waited = std::chrono::steady_clock::now() - t0;
  release.join();
  ASSERT_EQ(sr.accepted, 1U) << sr.status.ToString();
  EXPECT_GE(sr.retries, 1U);
  // It waited for the blocker (every slot was taken until then)...
  EXPECT_GE(waited, milliseconds(50));
  // ...and no longer.
  EXPECT_LT(waited, std::chrono::seconds(5))
      << "Submit slept out its retry delay instead of waking at the completion";
  std::vector<Request*> all = testing::Pointers(queued);
  all.push_back(&b.req);
  all.push_back(&read);
  testing::ExpectExactlyOnce(testing::ReapAll(*e, all.size()), all);
  EXPECT_EQ(b.req.rval, 1);
  for (const Request& r : queued) EXPECT_EQ(r.rval, 4096) << Describe(r);
  EXPECT_EQ(read.rval, 4096) << Describe(read);
}

// A worker takes several queued requests at once when nothing blocks (one
// lock of the queue and of the ring for all), and a reaping thread runs queued
// requests itself; a request that would block (an empty pipe) goes back to
// the queue for a worker, and neither of them waits behind it: with the one
// worker blocked in it, the reaping thread runs every file read. Nothing is
// lost, nothing completes twice.
TEST(ThreadsEngineTest, ARequestThatWouldBlockHoldsUpNoOther) {
  EngineOptions o;
  o.threads_min = 1;
  o.threads_max = 1;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  File f = testing::ScratchFile(16 * 4096, 61);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  char byte = 0;
  for (int round = 0; round < 20; ++round) {
    std::vector<std::vector<char>> bufs(12, std::vector<char>(4096));
    std::vector<Request> reqs(12);
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
    }
    // Second in the queue: the batch that takes the first takes it too.
    Request pipe_read;
    pipe_read.PrepRead(p[0], &byte, 1, 0);
    std::vector<Request*> batch = {&reqs[0], &pipe_read};
    for (size_t i = 1; i < reqs.size(); ++i) batch.push_back(&reqs[i]);
    SubmitAll(*e, batch);
    // Every file read completes while the pipe read waits (the one worker
    // blocks in it; the reaping thread runs the rest).
    testing::Reaped got = testing::ReapAll(*e, reqs.size());
    testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
    for (const Request& r : reqs) EXPECT_EQ(r.rval, 4096) << Describe(r);
    ASSERT_EQ(::write(p[1], "x", 1), 1);
    testing::ExpectExactlyOnce(testing::ReapAll(*e, 1), {&pipe_read});
    EXPECT_EQ(pipe_read.rval, 1);
    // Past the 100 ms after which a worker batches again.
    std::this_thread::sleep_for(milliseconds(120));
  }
  ::close(p[0]);
  ::close(p[1]);
}

// Requests that a try found would block go back to the queue in their place:
// two reads of the same empty pipe, passed over by the reaping thread (which
// runs the file reads between them), still run in the order they were
// submitted, and the first gets the first byte.
TEST(ThreadsEngineTest, RequestsGivenBackKeepTheirOrder) {
  EngineOptions o;
  o.threads_max = 1;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  Blocker b;
  SubmitAll(*e, {&b.req});
  WaitForRunning(*e, 1);
  File f = testing::ScratchFile(8192, 62);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  char first = 0;
  char second = 0;
  std::vector<char> buf1(4096);
  std::vector<char> buf2(4096);
  Request p1;
  Request f1;
  Request p2;
  Request f2;
  p1.PrepRead(p[0], &first, 1, 0);
  f1.PrepRead(f.fd(), buf1.data(), 4096, 0);
  p2.PrepRead(p[0], &second, 1, 0);
  f2.PrepRead(f.fd(), buf2.data(), 4096, 4096);
  SubmitAll(*e, {&p1, &f1, &p2, &f2});
  // The one worker is in the blocker: this thread runs the file reads and
  // gives the pipe reads back, one after the other.
  testing::Reaped files = testing::ReapAll(*e, 2);
  testing::ExpectExactlyOnce(files, {&f1, &f2});
  b.Release();
  testing::ExpectExactlyOnce(testing::ReapAll(*e, 1), {&b.req});
  ASSERT_EQ(::write(p[1], "ab", 2), 2);
  testing::ExpectExactlyOnce(testing::ReapAll(*e, 2), {&p1, &p2});
  EXPECT_EQ(p1.rval, 1);
  EXPECT_EQ(p2.rval, 1);
  EXPECT_EQ(first, 'a');
  EXPECT_EQ(second, 'b');
  ::close(p[0]);
  ::close(p[1]);
}

TEST(ThreadsEngineTest, HigherPriorityRequestsStartFirst) {
  EngineOptions o;
  o.threads_max = 1;  // one worker: start order is completion order
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  Blocker b;
  SubmitAll(*e, {&b.req});
  WaitForRunning(*e, 1);
  // Submitted from the lowest priority to the highest.
  Request idle, be7, none, be0;
  for (Request* r : {&idle, &be7, &none, &be0}) {
    r->PrepFsync(b.fds[1]);  // fsync of a pipe: quick, EINVAL, but ordered
  }
  idle.SetIoPriority(IoPriority(IoPrioClass::kIdle, 0));
  be7.SetIoPriority(IoPriority(IoPrioClass::kBestEffort, 7));
  be0.SetIoPriority(IoPriority(IoPrioClass::kBestEffort, 0));
  SubmitAll(*e, {&idle, &be7, &none, &be0});
  b.Release();
  testing::Reaped got = testing::ReapAll(*e, 5);
  ASSERT_EQ(got.order.size(), 5U) << got.error.ToString();
  EXPECT_EQ(got.order[0], &b.req);
  EXPECT_EQ(got.order[1], &be0);
  EXPECT_EQ(got.order[2], &none);  // best effort 4, the default
  EXPECT_EQ(got.order[3], &be7);
  EXPECT_EQ(got.order[4], &idle);
}

TEST(ThreadsEngineTest, PerFdOrderKeepsSubmissionOrderOnEachFd) {
  EngineOptions o;
  o.threads_ordered_per_fd = true;
  o.threads_max = 4;
  o.queue_depth = 256;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  constexpr uint64_t kWrites = 200;
  std::vector<uint64_t> values(kWrites);
  std::vector<Request> reqs(kWrites);
  for (uint64_t i = 0; i < kWrites; ++i) {
    values[i] = i;
    reqs[i].PrepWrite(fds[1], &values[i], sizeof(uint64_t), 0);
  }
  SubmitAll(*e, testing::Pointers(reqs));
  testing::ExpectExactlyOnce(testing::ReapAll(*e, kWrites),
                             testing::Pointers(reqs));
  // The reader sees them in submission order although four workers ran.
  for (uint64_t i = 0; i < kWrites; ++i) {
    uint64_t v = ~0ULL;
    ASSERT_EQ(::read(fds[0], &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
    ASSERT_EQ(v, i);
  }
  // Another fd is not held up by one whose request blocks.
  Blocker b;
  SubmitAll(*e, {&b.req});
  WaitForRunning(*e, 1);
  uint64_t one = 1;
  Request other;
  other.PrepWrite(fds[1], &one, sizeof(one), 0);
  SubmitAll(*e, {&other});
  testing::Reaped got = testing::ReapAll(*e, 1, milliseconds(10000));
  ASSERT_EQ(got.order.size(), 1U);
  EXPECT_EQ(got.order[0], &other);
  b.Release();
  EXPECT_EQ(testing::ReapAll(*e, 1).order.size(), 1U);
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(ThreadsEngineTest, RequestsOnOneFdRunInParallelByDefault) {
  std::unique_ptr<Engine> e = MakeThreads();
  ASSERT_NE(e, nullptr);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  char in[8] = {};
  Request read, write;
  read.PrepRead(sv[0], in, 5, 0);  // blocks until the peer writes
  write.PrepWrite(sv[0], "ping", 4, 0);
  SubmitAll(*e, {&read, &write});
  // The write on the same fd goes through while the read still waits (glibc's
  // AIO would queue it behind the read).
  char got[4] = {};
  ASSERT_EQ(::recv(sv[1], got, 4, MSG_WAITALL), 4);
  EXPECT_EQ(std::string(got, 4), "ping");
  ASSERT_EQ(::send(sv[1], "hello", 5, 0), 5);
  testing::ExpectExactlyOnce(testing::ReapAll(*e, 2), {&read, &write});
  EXPECT_EQ(read.rval, 5);
  EXPECT_EQ(std::string(in, 5), "hello");
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(ThreadsEngineTest, WorkersGrowWithTheQueueAndExitWhenIdle) {
  // A first thread lets sanitizers start their own helper threads now.
  std::thread([] {}).join();
  const size_t tasks_before = TaskCount();
  EngineOptions o;
  o.threads_min = 1;
  o.threads_max = 4;
  o.threads_idle = milliseconds(50);
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->Stats().workers, 1U);
  std::vector<std::unique_ptr<Blocker>> blockers;
  std::vector<Request*> reqs;
  for (int i = 0; i < 6; ++i) {
    blockers.push_back(std::make_unique<Blocker>());
    reqs.push_back(&blockers.back()->req);
  }
  SubmitAll(*e, reqs);
  WaitForRunning(*e, 4);
  EXPECT_EQ(e->Stats().workers, 4U);  // the maximum, not one per request
  EXPECT_EQ(TaskCount(), tasks_before + 4);
  for (auto& b : blockers) b->Release();
  testing::ExpectExactlyOnce(testing::ReapAll(*e, reqs.size()), reqs);
  // After the idle time, back to the minimum.
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (e->Stats().workers > 1 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(e->Stats().workers, 1U);
  e.reset();
  EXPECT_EQ(TaskCount(), tasks_before);
}

// Regression: workers started at Init (threads_min) were not counted idle, so
// submissions did not wake them and requests waited for their idle timeout.
TEST(ThreadsEngineTest,
     MinimumWorkersPickUpWorkWithoutWaitingForTheirIdleTime) {
  EngineOptions o;
  o.threads_min = 2;
  o.threads_max = 2;
  o.threads_idle = std::chrono::seconds(30);
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  File f = testing::ScratchFile(16384, 63);
  for (int round = 0; round < 3; ++round) {
    std::vector<std::vector<char>> bufs(4, std::vector<char>(4096));
    std::vector<Request> reqs(4);
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
    }
    SubmitAll(*e, testing::Pointers(reqs));
    testing::Reaped got = testing::ReapAll(*e, reqs.size(), milliseconds(5000));
    testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
  }
}

TEST(ThreadsEngineTest, AReaperThatWouldWaitRunsAQueuedReadItself) {
  EngineOptions o;
  o.threads_max = 1;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  Blocker b;  // the only worker waits in a pipe read
  SubmitAll(*e, {&b.req});
  WaitForRunning(*e, 1);
  File f = testing::ScratchFile(8192, 64);
  std::vector<char> warm(8192);
  ASSERT_EQ(::pread(f.fd(), warm.data(), warm.size(), 0), 8192);  // cached
  std::vector<char> buf(4096);
  Request r;
  r.PrepRead(f.fd(), buf.data(), 4096, 4096);
  SubmitAll(*e, {&r});
  // No worker is free, yet the read completes: the reaping thread did it.
  std::vector<Request*> out(2);
  Result<size_t> got = e->Reap(out, 1, std::chrono::seconds(10));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(*got, 1U);
  EXPECT_EQ(out[0], &r);
  EXPECT_EQ(r.rval, 4096) << Describe(r);
  EXPECT_EQ(testing::FirstMismatch(buf.data(), 4096, 64, 4096), -1);
  EXPECT_FALSE(b.req.completed());
  b.Release();
  testing::ExpectExactlyOnce(testing::ReapAll(*e, 1), {&b.req});
}

TEST(ThreadsEngineTest, ThePoolStaysWithinTheCpusWhileNothingBlocks) {
  const auto cpus = static_cast<uint64_t>(sysconf(_SC_NPROCESSORS_ONLN));
  EngineOptions o;
  o.queue_depth = 64;
  o.threads_max = 16;
  o.threads_idle = std::chrono::seconds(30);
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  File f = testing::ScratchFile(256 * 1024, 65);
  std::vector<char> warm(256 * 1024);
  ASSERT_EQ(::pread(f.fd(), warm.data(), warm.size(), 0), 256 * 1024);
  std::vector<char> bufs(64 * 4096);
  std::vector<Request> reqs(64);
  uint64_t most = 0;
  for (int round = 0; round < 50; ++round) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f.fd(), bufs.data() + i * 4096, 4096, i * 4096);
    }
    SubmitAll(*e, testing::Pointers(reqs));
    most = std::max(most, e->Stats().workers);
    testing::ExpectExactlyOnce(testing::ReapAll(*e, reqs.size()),
                               testing::Pointers(reqs));
  }
  // Page-cache reads never block: more workers than CPUs would only take
  // turns on them (the reaper helps too).
  EXPECT_LE(most, std::max<uint64_t>(1, cpus - 1));
  EXPECT_GE(most, 1U);
}

TEST(ThreadsEngineTest, ManySubmittersAndTwoReapersEachRequestOnce) {
  EngineOptions o;
  o.queue_depth = 64;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  File f = testing::ScratchFile(64 * 1024, 61);
  constexpr size_t kThreads = 4, kEach = 2000;
  std::vector<std::vector<Request>> reqs(kThreads, std::vector<Request>(kEach));
  std::vector<std::vector<char>> bufs(kThreads, std::vector<char>(kEach * 64));
  std::atomic<size_t> reaped{0};
  std::vector<std::atomic<int>> seen(kThreads * kEach);
  auto reaper = [&] {
    std::vector<Request*> out(32);
    while (reaped.load() < kThreads * kEach) {
      Result<size_t> n = e->Reap(out, 1, milliseconds(20));
      if (!n.ok()) break;
      for (size_t i = 0; i < *n; ++i) {
        const size_t id = reinterpret_cast<uintptr_t>(out[i]->priv);
        seen[id].fetch_add(1);
      }
      reaped.fetch_add(*n);
    }
  };
  std::thread r1(reaper), r2(reaper);
  std::vector<std::thread> submitters;
  for (size_t t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (size_t i = 0; i < kEach; ++i) {
        Request& r = reqs[t][i];
        if (i % 3 == 0) {
          r.PrepNoop();
        } else {
          r.PrepRead(f.fd(), bufs[t].data() + i * 64, 64, (i * 64) % 65536);
        }
        r.priv = reinterpret_cast<void*>(t * kEach + i);
        Request* p = &r;
        SubmitResult sr;
        do {  // the ring may be full of completions not yet reaped
          sr = e->Submit({&p, 1});
        } while (sr.accepted == 0 && sr.status.Is(Errc::kQueueFull));
        ASSERT_EQ(sr.accepted, 1U) << sr.status.ToString();
      }
    });
  }
  for (std::thread& s : submitters) s.join();
  r1.join();
  r2.join();
  EXPECT_EQ(reaped.load(), kThreads * kEach);
  for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i].load(), 1) << i;
}

// Completion callbacks (what the libaio drop-in's ring is written by): each
// request is handed over exactly once, on the completing thread, with its
// result, and not through Reap.
struct Collected {
  std::atomic<uint64_t> calls{0};
  std::vector<std::atomic<int>> seen;
  std::atomic<int64_t> last_cancelled_rval{0};
  explicit Collected(size_t n) : seen(n) {}
};

void Collect(void* arg, Request* r) {
  auto* c = static_cast<Collected*>(arg);
  const size_t id = reinterpret_cast<uintptr_t>(r->priv);
  c->seen[id].fetch_add(1);
  if (r->rval == -ECANCELED) c->last_cancelled_rval.store(r->rval);
  c->calls.fetch_add(1);
}

TEST(ThreadsEngineTest, CompletionCallbacksHandEachRequestOverOnce) {
  constexpr size_t kThreads = 3, kEach = 1000;
  Collected got(kThreads * kEach);
  EngineOptions o;
  o.queue_depth = 64;
  o.on_complete = &Collect;
  o.on_complete_arg = &got;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  File f = testing::ScratchFile(64 * 1024, 63);
  std::vector<std::vector<Request>> reqs(kThreads, std::vector<Request>(kEach));
  std::vector<std::vector<char>> bufs(kThreads, std::vector<char>(64));
  std::vector<std::thread> submitters;
  for (size_t t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (size_t i = 0; i < kEach; ++i) {
        Request& r = reqs[t][i];
        if (i % 4 == 0) {
          r.PrepNoop();
        } else {
          r.PrepRead(f.fd(), bufs[t].data(), 64, (i * 64) % 65536);
        }
        r.priv = reinterpret_cast<void*>(t * kEach + i);
        Request* p = &r;
        SubmitResult sr;
        do {  // the queue may be full until callbacks free slots
          sr = e->Submit({&p, 1});
        } while (sr.accepted == 0 && sr.status.Is(Errc::kQueueFull));
        ASSERT_EQ(sr.accepted, 1U) << sr.status.ToString();
      }
    });
  }
  for (std::thread& s : submitters) s.join();
  ASSERT_TRUE(e->Shutdown(std::chrono::seconds(30)).ok());
  EXPECT_EQ(got.calls.load(), kThreads * kEach);
  for (size_t i = 0; i < got.seen.size(); ++i) ASSERT_EQ(got.seen[i].load(), 1);
  // Nothing is left for Reap.
  std::vector<Request*> out(8);
  Result<size_t> n = e->Reap(out, 0, std::chrono::milliseconds(0));
  EXPECT_TRUE(!n.ok() || *n == 0);
}

TEST(ThreadsEngineTest, ACancelledRequestReachesTheCallback) {
  Collected got(2);
  EngineOptions o;
  o.queue_depth = 8;
  o.threads_min = 1;
  o.threads_max = 1;
  o.on_complete = &Collect;
  o.on_complete_arg = &got;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  // A pipe read blocks the only worker; the second request waits in the
  // queue and can be cancelled.
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  char a = 0, b = 0;
  Request blocked, queued;
  blocked.PrepRead(p[0], &a, 1, 0);
  blocked.priv = reinterpret_cast<void*>(0);
  queued.PrepRead(p[0], &b, 1, 0);
  queued.priv = reinterpret_cast<void*>(1);
  Request* both[2] = {&blocked, &queued};
  ASSERT_EQ(e->Submit(both).accepted, 2U);
  // One worker, first in first out: `queued` waits behind `blocked` (or for
  // the worker to start), so it can be cancelled either way.
  ASSERT_TRUE(e->Cancel(&queued).ok());
  EXPECT_EQ(got.seen[1].load(), 1);
  EXPECT_EQ(got.last_cancelled_rval.load(), -ECANCELED);
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  ASSERT_TRUE(e->Shutdown(std::chrono::seconds(10)).ok());
  EXPECT_EQ(got.seen[0].load(), 1);
  ::close(p[0]);
  ::close(p[1]);
}

// A read from a pipe that holds less than asked returns what it has, and a
// read tried without blocking that moved part of the data is never redone
// from the start (which would lose what the first part took from the pipe).
TEST(ThreadsEngineTest, AShortReadFromAPipeKeepsWhatItRead) {
  EngineOptions o;
  o.queue_depth = 4;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  std::string sent(100, '\0');
  for (size_t i = 0; i < sent.size(); ++i)
    sent[i] = static_cast<char>('a' + i % 26);
  ASSERT_EQ(::write(p[1], sent.data(), sent.size()), 100);
  std::vector<char> buf(4096, 0);
  Request r;
  r.PrepRead(p[0], buf.data(), buf.size(), 0);
  Request* rp = &r;
  ASSERT_EQ(e->Submit({&rp, 1}).accepted, 1U);
  std::vector<Request*> out(1);
  Result<size_t> n = e->Reap(out, 1, std::chrono::seconds(10));
  ASSERT_TRUE(n.ok() && *n == 1);
  ASSERT_EQ(r.rval, 100);
  EXPECT_EQ(std::string(buf.data(), 100), sent);
  // Nothing was lost or read twice: the next bytes written are the next read.
  ASSERT_EQ(::write(p[1], "XYZ", 3), 3);
  r.PrepRead(p[0], buf.data(), buf.size(), 0);
  ASSERT_EQ(e->Submit({&rp, 1}).accepted, 1U);
  n = e->Reap(out, 1, std::chrono::seconds(10));
  ASSERT_TRUE(n.ok() && *n == 1);
  ASSERT_EQ(r.rval, 3);
  EXPECT_EQ(std::string(buf.data(), 3), "XYZ");
  ::close(p[0]);
  ::close(p[1]);
}

// The caller may close a request's eventfd as soon as the completion is
// handed over, and the number may be taken by another file at once: the
// engine's signal must still reach the eventfd, never that file.
struct Swap {
  int efd;
  int file;
  bool done = false;
};

void CloseAndReuse(void* arg, Request* r) {
  auto* s = static_cast<Swap*>(arg);
  (void)r;
  // The completion is the caller's now: its eventfd's number becomes a file.
  ASSERT_EQ(::dup2(s->file, s->efd), s->efd);
  s->done = true;
}

TEST(ThreadsEngineTest,
     ARequestsEventfdClosedAtCompletionIsNotConfusedWithAFile) {
  File f = testing::ScratchFile(4096, 64);
  const int efd = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  char path[] = "/tmp/aiokit-efd-XXXXXX";
  const int other = ::mkstemp(path);
  ASSERT_GE(other, 0);
  ::unlink(path);
  Swap swap{efd, other};
  EngineOptions o;
  o.queue_depth = 4;
  o.on_complete = &CloseAndReuse;
  o.on_complete_arg = &swap;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  char buf[64];
  Request r;
  r.PrepRead(f.fd(), buf, sizeof(buf), 0);
  r.resfd = efd;
  Request* rp = &r;
  ASSERT_EQ(e->Submit({&rp, 1}).accepted, 1U);
  ASSERT_TRUE(e->Shutdown(std::chrono::seconds(10)).ok());
  ASSERT_TRUE(swap.done);
  struct stat st;
  ASSERT_EQ(::fstat(other, &st), 0);
  EXPECT_EQ(st.st_size, 0)
      << "the engine wrote its eventfd signal into the file";
  ::close(efd);
  ::close(other);
}

TEST(ThreadsEngineTest, NoHeapAllocationPerRequest) {
  EngineOptions o;
  o.queue_depth = 32;
  o.threads_min = 2;
  o.threads_max = 2;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  File f = testing::ScratchFile(1 << 20, 62);
  std::vector<char> buf(32 * 4096);
  std::vector<Request> reqs(32);
  std::vector<Request*> ptrs = testing::Pointers(reqs);
  std::vector<Request*> out(32);
  auto round = [&](uint64_t k) {
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f.fd(), buf.data() + i * 4096, 4096,
                       ((k * 32 + i) % 256) * 4096);
    }
    SubmitResult sr = e->Submit(ptrs);
    ASSERT_EQ(sr.accepted, 32U);
    size_t got = 0;
    while (got < 32) {
      Result<size_t> n = e->Reap(out, 1, kForever);
      ASSERT_TRUE(n.ok());
      got += *n;
    }
  };
  for (uint64_t k = 0; k < 10; ++k) round(k);  // warm up
  const uint64_t before = g_allocations.load();
  for (uint64_t k = 0; k < 300; ++k) round(k);
  EXPECT_EQ(g_allocations.load() - before, 0U)
      << "allocations during 9600 requests";
}

// Keeps every CPU busy for its lifetime (threads that spin at the same
// priority as the test): timing the engine relies on, such as "a try that
// took long", then goes wrong as it does on a loaded machine.
class CpuHogs {
 public:
  CpuHogs() {
    const unsigned n = std::max(1U, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) {
      hogs_.emplace_back([this] {
        uint64_t x = 0;
        while (!stop_.load(std::memory_order_relaxed)) {
          x = x * 6364136223846793005ULL + 1;
        }
        sink_.store(x, std::memory_order_relaxed);
      });
    }
  }
  ~CpuHogs() {
    stop_.store(true);
    for (std::thread& t : hogs_) t.join();
  }
  CpuHogs(const CpuHogs&) = delete;
  CpuHogs& operator=(const CpuHogs&) = delete;

 private:
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sink_{0};
  std::vector<std::thread> hogs_;
};

// Regression: with every worker blocked (here in pipe reads) a reaper asleep
// in Reap was never told of page-cache reads another thread queued, and they
// waited for a worker until the reaper's timeout. Now queueing work that no
// idle worker takes wakes the reaper, which runs it.
TEST(ThreadsEngineTest, EveryWorkerBlockedASleepingReaperRunsWhatIsQueued) {
  EngineOptions o;
  o.threads_min = 2;
  o.threads_max = 2;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  Blocker b1;
  Blocker b2;
  SubmitAll(*e, {&b1.req, &b2.req});
  WaitForRunning(*e, 2);
  File f = testing::ScratchFile(16 * 4096, 63);
  CpuHogs hogs;
  for (int round = 0; round < 10; ++round) {
    std::vector<std::vector<char>> bufs(12, std::vector<char>(4096));
    std::vector<Request> reqs(12);
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
    }
    testing::Reaped got;
    // The reaper waits first, with nothing it could run.
    std::thread reaper([&] {
      got = testing::ReapAll(*e, reqs.size(), std::chrono::seconds(30));
    });
    std::this_thread::sleep_for(milliseconds(20));
    SubmitAll(*e, testing::Pointers(reqs));
    reaper.join();
    testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
    for (const Request& r : reqs) EXPECT_EQ(r.rval, 4096) << Describe(r);
  }
  b1.Release();
  b2.Release();
  testing::ExpectExactlyOnce(testing::ReapAll(*e, 2), {&b1.req, &b2.req});
}

// Regression: the test above with the requests taken by a worker that gives
// them back and then blocks (a batch whose first read took long, on a busy
// CPU, goes back untried; then the worker takes the pipe read): 5 of 12
// page-cache reads never completed within 30 s when the other CPU was busy.
TEST(ThreadsEngineTest, RequestsGivenBackByAWorkerThatBlocksStillComplete) {
  EngineOptions o;
  o.threads_min = 1;
  o.threads_max = 1;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  File f = testing::ScratchFile(16 * 4096, 64);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  char byte = 0;
  CpuHogs hogs;
  for (int round = 0; round < 30; ++round) {
    std::vector<std::vector<char>> bufs(12, std::vector<char>(4096));
    std::vector<Request> reqs(12);
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
    }
    Request pipe_read;
    pipe_read.PrepRead(p[0], &byte, 1, 0);
    std::vector<Request*> batch = {&reqs[0], &pipe_read};
    for (size_t i = 1; i < reqs.size(); ++i) batch.push_back(&reqs[i]);
    SubmitAll(*e, batch);
    testing::Reaped got =
        testing::ReapAll(*e, reqs.size(), std::chrono::seconds(30));
    testing::ExpectExactlyOnce(got, testing::Pointers(reqs));
    ASSERT_EQ(::write(p[1], "x", 1), 1);
    testing::ExpectExactlyOnce(testing::ReapAll(*e, 1), {&pipe_read});
    // Past the 100 ms after which a worker batches again, every few rounds.
    if (round % 3 == 0) std::this_thread::sleep_for(milliseconds(120));
  }
  ::close(p[0]);
  ::close(p[1]);
}

// ---- O_DIRECT through the kernel's AIO (EngineOptions::threads_kernel_aio)

// Waits up to 30 s for `fd` to be readable.
bool WaitReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 30000) == 1;
}

// Why this engine does O_DIRECT on workers here ("" when it may use the
// kernel's AIO): what its capabilities say, or this process refused a kernel
// AIO context (a seccomp filter, fs.aio-max-nr), asked without the engine.
std::string KernelAioRefusal(Engine& e) {
  for (const std::string& f : e.GetCapabilities().fallbacks) {
    if (f.find("O_DIRECT requests on workers") != std::string::npos) return f;
  }
  aio_context_t ctx = 0;
  if (const long r = sys::real::IoSetup(64, &ctx); r < 0) {
    return "io_setup refused here: " +
           std::string(std::strerror(static_cast<int>(-r)));
  }
  (void)sys::real::IoDestroy(ctx);
  return "";
}

// O_DIRECT writes, then reads, of `blocks` 4 KiB blocks of `f` through `e`:
// every request comes back exactly once with its full length, and the reads
// find what the writes wrote.
void WriteThenReadBack(Engine& e, const File& f, size_t blocks, uint64_t seed) {
  Result<AlignedBuffer> wbuf =
      AlignedBuffer::Allocate(blocks * 4096, f.alignment().memory);
  Result<AlignedBuffer> rbuf =
      AlignedBuffer::Allocate(blocks * 4096, f.alignment().memory);
  ASSERT_TRUE(wbuf.ok() && rbuf.ok());
  testing::FillPattern(wbuf->data(), blocks * 4096, seed);
  std::vector<Request> writes(blocks);
  std::vector<Request> reads(blocks);
  for (size_t i = 0; i < blocks; ++i) {
    writes[i].PrepWrite(f, wbuf->data() + i * 4096, 4096, i * 4096);
    reads[i].PrepRead(f, rbuf->data() + i * 4096, 4096, i * 4096);
  }
  SubmitAll(e, testing::Pointers(writes));
  testing::ExpectExactlyOnce(testing::ReapAll(e, blocks),
                             testing::Pointers(writes));
  for (const Request& r : writes) EXPECT_EQ(r.rval, 4096) << Describe(r);
  SubmitAll(e, testing::Pointers(reads));
  testing::ExpectExactlyOnce(testing::ReapAll(e, blocks),
                             testing::Pointers(reads));
  for (const Request& r : reads) EXPECT_EQ(r.rval, 4096) << Describe(r);
  EXPECT_EQ(testing::FirstMismatch(rbuf->data(), blocks * 4096, seed), -1);
}

// As the kernel's own AIO does them: O_DIRECT reads and writes need no
// worker thread. With threads_min 0 none is started; the engine counts them
// as done by the kernel's AIO.
TEST(ThreadsEngineTest, ODirectRequestsGoToTheKernelsAioWithoutAWorker) {
  std::unique_ptr<Engine> e = MakeThreads();
  ASSERT_NE(e, nullptr);
  if (std::string why = KernelAioRefusal(*e); !why.empty()) {
    GTEST_SKIP() << why;
  }
  File f = testing::ScratchFile(64 * 4096, 70, O_DIRECT);
  WriteThenReadBack(*e, f, 64, 71);
  const EngineStats s = e->Stats();
  EXPECT_GT(s.kernel_aio, 0U);
  // Unless the device's queue was full at a moment (RWF_NOWAIT then says
  // "would block" and a worker does it), no worker was needed.
  if (s.kernel_aio == 128) {
    EXPECT_EQ(s.workers, 0U);
  }
}

// The kernel's context is set up at the first O_DIRECT request; a reaper
// already asleep (on the engine's futex, as before any) is woken for that
// request's completion, which comes through the kernel's ring. Without that
// wake-up this test waits forever.
TEST(ThreadsEngineTest, AReaperAsleepBeforeTheFirstODirectRequestWakesForIt) {
  std::unique_ptr<Engine> e = MakeThreads();
  ASSERT_NE(e, nullptr);
  if (std::string why = KernelAioRefusal(*e); !why.empty()) {
    GTEST_SKIP() << why;
  }
  File f = testing::ScratchFile(4096, 80, O_DIRECT);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(4096, 4096);
  ASSERT_TRUE(buf.ok());
  Request r;
  r.PrepRead(f, buf->data(), 4096, 0);
  Result<size_t> got = size_t{0};
  std::thread reaper([&] {
    std::vector<Request*> out(4);
    got = e->Reap(out, 1, std::chrono::nanoseconds(-1));  // no timeout
  });
  // Until it has gone to sleep (it counts the sleep just before).
  while (e->Stats().sleeps == 0) std::this_thread::sleep_for(milliseconds(1));
  SubmitAll(*e, {&r});
  reaper.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, 1U);
  EXPECT_EQ(r.rval, 4096);
  EXPECT_EQ(e->Stats().kernel_aio, 1U);
  EXPECT_EQ(testing::FirstMismatch(buf->data(), 4096, 80), -1);
}

// The option off, per-fd order, or callbacks without a completion thread
// (nobody would reap the kernel's ring): every O_DIRECT request on workers,
// as before.
TEST(ThreadsEngineTest, WithoutKernelAioODirectRunsOnWorkers) {
  File f = testing::ScratchFile(16 * 4096, 72, O_DIRECT);
  for (int variant = 0; variant < 2; ++variant) {
    EngineOptions o;
    if (variant == 0) o.threads_kernel_aio = false;
    if (variant == 1) o.threads_ordered_per_fd = true;
    std::unique_ptr<Engine> e = MakeThreads(o);
    ASSERT_NE(e, nullptr);
    WriteThenReadBack(*e, f, 16, 73 + variant);
    EXPECT_EQ(e->Stats().kernel_aio, 0U) << "variant " << variant;
  }
  std::atomic<int> delivered{0};
  EngineOptions o;
  o.on_complete_arg = &delivered;
  o.on_complete = [](void* arg, Request* /*req*/) {
    static_cast<std::atomic<int>*>(arg)->fetch_add(1);
  };
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(4096, 4096);
  ASSERT_TRUE(buf.ok());
  Request r;
  r.PrepRead(f, buf->data(), 4096, 0);
  SubmitAll(*e, {&r});
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  // Delivered by the worker that did it, with no Reap.
  while (delivered.load() == 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  EXPECT_EQ(delivered.load(), 1);
  EXPECT_EQ(e->Stats().kernel_aio, 0U);
}

int g_refuse_mode = 0;  // 0: EAGAIN, 1: EOPNOTSUPP, 2: take one at a time
long RefusingIoSubmit(aio_context_t ctx, long nr, struct iocb** iocbs) {
  switch (g_refuse_mode) {
    case 0:
      return -EAGAIN;
    case 1:
      return -EOPNOTSUPP;
    default:
      return sys::real::IoSubmit(ctx, nr > 0 ? 1 : nr, iocbs);
  }
}

// Whatever io_submit answers (no room, "this file cannot say would block",
// one request at a time), every request is done once, by the kernel or by a
// worker; none is lost or done twice, and the data is right.
TEST(ThreadsEngineTest, KernelAioRefusalsGoToWorkersNothingLost) {
  for (g_refuse_mode = 0; g_refuse_mode < 3; ++g_refuse_mode) {
    SCOPED_TRACE("mode " + std::to_string(g_refuse_mode));
    std::unique_ptr<Engine> e = MakeThreads();
    ASSERT_NE(e, nullptr);
    if (std::string why = KernelAioRefusal(*e); !why.empty()) {
      GTEST_SKIP() << why;
    }
    File f = testing::ScratchFile(32 * 4096, 75, O_DIRECT);
    sys::FaultHooks hooks;
    hooks.io_submit = &RefusingIoSubmit;
    sys::SetFaultHooks(&hooks);
    WriteThenReadBack(*e, f, 32, 76 + g_refuse_mode);
    sys::SetFaultHooks(nullptr);
    const EngineStats s = e->Stats();
    if (g_refuse_mode == 0) {
      EXPECT_EQ(s.kernel_aio, 0U);
      EXPECT_EQ(s.kernel_aio_fallbacks, 64U);
    } else if (g_refuse_mode == 1) {
      // After the first refusal the fd's requests go to workers at once.
      EXPECT_EQ(s.kernel_aio, 0U);
      EXPECT_GE(s.kernel_aio_fallbacks, 1U);
    } else {
      EXPECT_GT(s.kernel_aio, 0U);
    }
  }
}

// NotifyFd says "completions to reap" for a request the kernel's AIO did, as
// for one a worker did; a request with its own eventfd gets it signalled.
TEST(ThreadsEngineTest, KernelAioCompletionsSignalNotifyFdAndOwnEventfd) {
  EngineOptions o;
  o.notify_fd = true;
  std::unique_ptr<Engine> e = MakeThreads(o);
  ASSERT_NE(e, nullptr);
  if (std::string why = KernelAioRefusal(*e); !why.empty()) {
    GTEST_SKIP() << why;
  }
  Result<int> nfd = e->NotifyFd();
  ASSERT_TRUE(nfd.ok()) << nfd.status().ToString();
  File f = testing::ScratchFile(2 * 4096, 77, O_DIRECT);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(2 * 4096, 4096);
  ASSERT_TRUE(buf.ok());
  const int own = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(own, 0);
  Request plain;
  Request with_own;
  plain.PrepRead(f, buf->data(), 4096, 0);
  with_own.PrepRead(f, buf->data() + 4096, 4096, 4096);
  with_own.SetEventFd(own);
  SubmitAll(*e, {&plain, &with_own});
  // Both signalled before either is reaped.
  uint64_t count = 0;
  ASSERT_TRUE(WaitReadable(*nfd));
  ASSERT_TRUE(WaitReadable(own));
  ASSERT_EQ(::read(*nfd, &count, sizeof(count)), 8);
  EXPECT_GE(count, 1U);
  ASSERT_EQ(::read(own, &count, sizeof(count)), 8);
  EXPECT_EQ(count, 1U);
  testing::ExpectExactlyOnce(testing::ReapAll(*e, 2), {&plain, &with_own});
  EXPECT_EQ(plain.rval, 4096);
  EXPECT_EQ(with_own.rval, 4096);
  EXPECT_EQ(testing::FirstMismatch(buf->data(), 2 * 4096, 77), -1);
  // The plain one by the kernel; the other (two eventfds to signal) by a
  // worker.
  EXPECT_EQ(e->Stats().kernel_aio, 1U);
  ::close(own);
}

// A request the kernel's AIO has is not cancellable (the kernel cancels no
// file's or block device's request) and completes normally; Shutdown with
// such requests in flight waits for them, and each comes back once.
TEST(ThreadsEngineTest, KernelAioRequestsCompleteThroughCancelAndShutdown) {
  std::unique_ptr<Engine> e = MakeThreads();
  ASSERT_NE(e, nullptr);
  if (std::string why = KernelAioRefusal(*e); !why.empty()) {
    GTEST_SKIP() << why;
  }
  constexpr size_t kBlocks = 128;
  File f = testing::ScratchFile(kBlocks * 4096, 78, O_DIRECT);
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(kBlocks * 4096, 4096);
  ASSERT_TRUE(buf.ok());
  std::vector<Request> reads(kBlocks);
  for (size_t i = 0; i < kBlocks; ++i) {
    reads[i].PrepRead(f, buf->data() + i * 4096, 4096, i * 4096);
  }
  SubmitAll(*e, testing::Pointers(reads));
  std::vector<bool> cancelled(kBlocks, false);
  for (size_t i = 0; i < kBlocks; i += 16) {
    const Status c = e->Cancel(&reads[i]);
    // One the kernel gave back to a worker (the device's queue was full) and
    // that is still queued is taken back; any other is not cancellable.
    if (c.ok()) {
      cancelled[i] = true;
    } else {
      EXPECT_TRUE(c.Is(Errc::kNotCancellable)) << c.ToString();
    }
  }
  ASSERT_TRUE(e->Shutdown(std::chrono::seconds(30)).ok());
  testing::Reaped got = testing::ReapAll(*e, kBlocks);
  testing::ExpectExactlyOnce(got, testing::Pointers(reads));
  for (size_t i = 0; i < kBlocks; ++i) {
    if (cancelled[i]) {
      EXPECT_EQ(reads[i].rval, -ECANCELED) << Describe(reads[i]);
      continue;
    }
    EXPECT_EQ(reads[i].rval, 4096) << Describe(reads[i]);
    EXPECT_EQ(
        testing::FirstMismatch(buf->data() + i * 4096, 4096, 78, i * 4096), -1);
  }
}

// A log that writes into preallocated (unwritten) blocks: the kernel's AIO
// may say such a write would block (ext4 needs its journal for them); those
// go to workers, later ones there at once (but for a probe now and then), and
// every write lands.
TEST(ThreadsEngineTest, ODirectWritesIntoPreallocatedBlocksAllLand) {
  std::unique_ptr<Engine> e = MakeThreads();
  ASSERT_NE(e, nullptr);
  if (std::string why = KernelAioRefusal(*e); !why.empty()) {
    GTEST_SKIP() << why;
  }
  File f = testing::ScratchFile(0, 0, O_DIRECT);
  constexpr size_t kBlocks = 256;
  ASSERT_EQ(::fallocate(f.fd(), 0, 0, kBlocks * 4096), 0) << errno;
  // Eight at a time, in order, as a log appends.
  Result<AlignedBuffer> wbuf = AlignedBuffer::Allocate(kBlocks * 4096, 4096);
  ASSERT_TRUE(wbuf.ok());
  testing::FillPattern(wbuf->data(), kBlocks * 4096, 79);
  for (size_t first = 0; first < kBlocks; first += 8) {
    std::vector<Request> writes(8);
    for (size_t i = 0; i < 8; ++i) {
      writes[i].PrepWrite(f, wbuf->data() + (first + i) * 4096, 4096,
                          (first + i) * 4096);
    }
    SubmitAll(*e, testing::Pointers(writes));
    testing::ExpectExactlyOnce(testing::ReapAll(*e, 8),
                               testing::Pointers(writes));
    for (const Request& r : writes) ASSERT_EQ(r.rval, 4096) << Describe(r);
  }
  const EngineStats s = e->Stats();
  EXPECT_GE(s.kernel_aio + s.kernel_aio_fallbacks, 1U);  // tried, at least
  std::string back(kBlocks * 4096, '\0');
  const std::string path = "/proc/self/fd/" + std::to_string(f.fd());
  const int rfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(rfd, 0);
  EXPECT_EQ(::pread(rfd, back.data(), back.size(), 0),
            static_cast<ssize_t>(back.size()));
  ::close(rfd);
  EXPECT_EQ(testing::FirstMismatch(back.data(), back.size(), 79), -1);
}

}  // namespace
}  // namespace aiokit
