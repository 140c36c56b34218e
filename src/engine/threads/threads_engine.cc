// The threads engine: a user-space AIO built like the kernel's own (fs/aio.c),
// for buffered I/O, any file descriptor, and machines where both kernel
// interfaces are refused.
//
//   Context   like the kernel's kioctx: a reference count of threads inside
//             the engine (users_), a dead flag (shutdown_), the list of active
//             requests (the priority queue and, per fd, the ordered lists), a
//             maximum number of requests (the ring's slots), and a completion
//             ring in the kernel's aio_ring layout (src/engine/aio_ring.h), so
//             that the same user-space code reaps it as reaps linux-aio's.
//   Submit    like io_submit: takes a ring slot per request (reqs_available;
//             none left is EAGAIN, retried with the RetryPolicy after reaping
//             to make room) and queues the request, like a kiocb, and returns
//             at once. Nothing is allocated per request.
//   Workers   a pool between threads_min and threads_max, grown when queued
//             requests outnumber idle workers, shrunk after threads_idle
//             without work (as glibc's AIO does). A worker takes the
//             highest-priority request, does preadv2 / pwritev2 / fsync /
//             fdatasync, and completes it like aio_complete: the io_event at
//             the ring's tail, the tail published with release ordering, then
//             the engine's eventfd, the request's own eventfd, and any waiter.
//   Reap      like read_events: the ring's head, in user space, without a
//             system call when events are there; else a short spin, then a
//             futex wait with a deadline.
//   Cancel    a request not yet started is taken off its queue and completes
//             with -ECANCELED; a started one is reported as such.
//
// Unlike glibc's AIO, requests on the same fd run in parallel unless
// threads_ordered_per_fd asks for submission order on each fd.

#include <fcntl.h>
#include <linux/fs.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "aiokit/engine.h"
#include "engine/aio_ring.h"
#include "engine/common.h"
#include "engine/engines.h"
#include "sys/syscalls.h"
#include "util/strings.h"

namespace aiokit::internal {
namespace {

// Priority buckets: realtime levels 0..7, then best-effort 0..7, then idle
// 0..7. A request without a priority is best-effort level 4, the kernel's
// default (IOPRIO_NORM).
constexpr unsigned kBuckets = 24;
constexpr unsigned kDefaultBucket = 8 + 4;

// Requests a worker takes off the queue at once, at most (RunBatch).
constexpr size_t kWorkerBatch = 8;
// A try without blocking that took longer than this may have waited for a
// device (an O_DIRECT fd ignores RWF_NOWAIT's "no waiting for the device").
constexpr std::chrono::microseconds kSlowTry{50};

// Request::iocb is this engine's scratch (the kernel never sees it):
// aio_key says whether a worker has started the request, aio_reqprio holds
// its bucket, aio_data its ticket (submission order, for RequeueFront).
constexpr uint32_t kQueued = 0;
constexpr uint32_t kStarted = 1;
// Queued again after a try without blocking said it would block: for a
// worker, which may wait (HelpOnce and a worker's batch pass it by).
constexpr uint32_t kForWorker = 2;

// The bucket of a valid ioprio, or -1 for a class the kernel refuses.
int BucketOf(const Request& r) {
  if (!r.has_ioprio) return kDefaultBucket;
  const unsigned cls = r.ioprio >> 13U;
  const unsigned level = r.ioprio & 7U;
  switch (cls) {
    case 0:  // IOPRIO_CLASS_NONE: best effort at the level given
      return static_cast<int>(8 + level);
    case 1:  // realtime
      return static_cast<int>(level);
    case 2:  // best effort
      return static_cast<int>(8 + level);
    case 3:  // idle
      return static_cast<int>(16 + level);
    default:
      return -1;
  }
}

class ThreadsEngine final : public Engine {
 public:
  explicit ThreadsEngine(const EngineOptions& options)
      : options_(options),
        spin_(options.spin_before_wait, options.adaptive_spin) {}
  ~ThreadsEngine() override;
  ThreadsEngine(const ThreadsEngine&) = delete;
  ThreadsEngine& operator=(const ThreadsEngine&) = delete;

  Status Init();

  [[nodiscard]] EngineKind kind() const noexcept override {
    return EngineKind::kThreads;
  }
  [[nodiscard]] const Capabilities& GetCapabilities() const noexcept override {
    return caps_;
  }
  [[nodiscard]] unsigned queue_depth() const noexcept override {
    return options_.queue_depth;
  }
  [[nodiscard]] EngineStats Stats() const noexcept override;

  SubmitResult Submit(std::span<Request* const> batch) override;
  Result<size_t> Reap(std::span<Request*> out, size_t min,
                      std::chrono::nanoseconds timeout) override;
  Status Cancel(Request* req) override;
  Result<int> NotifyFd() override;
  Status Shutdown(std::chrono::nanoseconds timeout) override;

 private:
  // Per-fd order (threads_ordered_per_fd): while one request of an fd is
  // queued or running, the next ones wait here, in order.
  struct FdChain {
    bool active = false;  // a request of this fd is queued or running
    Request* head = nullptr;
    Request* tail = nullptr;
  };

  // ---- Queue (REQUIRES mu_). ----
  void Enqueue(Request* req, int bucket);
  Request* Dequeue();
  // A request taken to run that goes back (it would block, or was not
  // tried): queued again in its place, ahead of those queued after it, so it
  // keeps its turn; marked for a worker when it would block.
  void RequeueFront(Request* req, bool would_block);
  // Whether the most urgent queued request may be run with RWF_NOWAIT by a
  // thread other than a worker set up for it: a plain read or write without
  // an I/O priority (that needs the worker's ioprio_set) and not O_DIRECT.
  [[nodiscard]] bool HeadRunsWithoutBlocking() const noexcept;
  static bool RunsWithoutBlocking(const Request& req) noexcept;
  // The most urgent queued request that RunsWithoutBlocking, past those
  // left for workers; nullptr if none is near the front.
  Request* TakeHelpable();
  bool RemoveQueued(Request* req);

  // Takes up to `want` ring slots; returns how many it got.
  unsigned TakeSlots(unsigned want) noexcept;
  void ReturnSlots(unsigned n) noexcept;
  // Queues batch[first, first + n) (valid requests, slots taken).
  void QueueRequests(Request* const* reqs, size_t n);
  // Starts workers while queued requests outnumber idle ones. REQUIRES mu_.
  void GrowPoolLocked();
  void WorkerMain(size_t slot);
  // Runs `first` (taken off the queue) and, when more wait and none of them
  // blocks, up to kWorkerBatch - 1 more; completes them together. Called and
  // returns with `lock` (on mu_) held.
  void RunBatch(Request* first, std::unique_lock<AdaptiveMutex>* lock,
                int* thread_prio, unsigned* executed);
  // How a try without blocking went: done (its result), would block
  // (nothing done), or short (part done: the bytes moved; FinishShort, which
  // may block, does the rest).
  enum class Tried { kDone, kWouldBlock, kShort };
  // A plain read or write (TryWithoutBlocking) tried with RWF_NOWAIT.
  // `executed` as for Execute; *stream for FinishShort.
  long RunWithoutBlocking(Request* req, unsigned* executed, Tried* tried,
                          bool* stream);
  // A try that took long: when `fd` is O_DIRECT, its requests wait for the
  // device (RWF_NOWAIT does not stop that on a raw fd): NoteBlocking.
  void NoteBlockingIfDirect(int fd);
  // Does the I/O of `req`; its result. `thread_prio` is the worker's I/O
  // priority, `executed` its count of requests (both kept by the worker).
  int64_t Execute(Request* req, int* thread_prio, unsigned* executed);
  // preadv2/pwritev2 of `req` with `flags` (the offset dropped for a pipe).
  long ReadWrite(Request* req, int flags, bool* stream = nullptr) noexcept;
  // A transfer tried without blocking moved `done` bytes of the request (0 <
  // done < length): completes it, keeping what was moved.
  long FinishShort(Request* req, long done, bool stream) noexcept;
  static bool WouldBlock(const Request& req, long r) noexcept;
  static bool TryWithoutBlocking(const Request& req) noexcept;
  // A worker's I/O would block: remember it, and let the pool grow.
  void NoteBlocking();
  [[nodiscard]] bool BlockedRecently() const noexcept;
  // aio_complete: the event at the ring's tail, then the signals.
  void CompleteToRing(Request* req, int64_t res) {
    CompleteToRing(&req, &res, 1);
  }
  // n of them at once: one lock of the ring, one tail, one round of signals.
  void CompleteToRing(Request* const* reqs, const int64_t* res, size_t n);
  // A completion without a ring slot (noop, refusal, cancel): the done list.
  void CompleteLocally(Request* req, int64_t res, Origin origin);
  // With EngineOptions::on_complete: hands the completed request over.
  void Deliver(Request* req, int64_t res, Origin origin);
  // Wakes a reaper sleeping on event_seq_ (after every completion).
  void Signal() noexcept;

  // A reaper that would wait runs a queued read or write itself, without
  // blocking (RWF_NOWAIT): the waiting thread's CPU does the work a worker
  // would. True when it completed one.
  bool HelpOnce();
  bool RunQueuedOnce() override {
    NoteReaperCpu();
    return HelpOnce();
  }
  // The CPU the reaping thread last ran on, for a worker's spin (WorkerMain).
  void NoteReaperCpu() noexcept {
    const int cpu = sched_getcpu();
    // Written only when it changes: spinning workers read the line.
    if (reaper_cpu_.load(std::memory_order_relaxed) != cpu) {
      reaper_cpu_.store(cpu, std::memory_order_relaxed);
    }
  }
  // Requests queued to workers or running there, not yet completed. The
  // finished count is read first (acquire: every request it counts was
  // counted added before), so the result is never below what was in flight
  // when finished_ was read; it may still count one that finished since.
  [[nodiscard]] int64_t InFlight() const noexcept {
    const int64_t finished = finished_.load(std::memory_order_acquire);
    return added_.load(std::memory_order_acquire) - finished;
  }

  // EAGAIN: reap the ring into the done list so that slots come back, or
  // wait up to `delay` for room. False: a reaper holds the gate.
  bool MakeRoom(std::chrono::microseconds delay);
  size_t DrainRing(Request** out, size_t max);

  // Members are grouped by the thread that writes them for each request, each
  // group on cache lines of its own: a line written by both the submitting
  // thread and a worker moves between their CPUs at every write, a few
  // hundred nanoseconds each when the host puts the two CPUs apart
  // (bench/cpu_pingpong), and a locked add waits for it.

  // ---- Set up by Init, read by all (written rarely).
  EngineOptions options_;
  Capabilities caps_;
  unsigned max_workers_ = 0;
  // Workers while nothing blocks: the CPUs less one (the reaper helps), at
  // most threads_max.
  unsigned cpu_workers_ = 0;
  // The completion ring, in the kernel's layout: header, then nr io_events.
  AioRing* ring_ = nullptr;
  unsigned nr_ = 0;
  int notify_fd_ = -1;
  std::atomic<bool> shutdown_{false};
  // The CPU the reaping thread last ran on (NoteReaperCpu writes it when it
  // changes; spinning workers read it).
  std::atomic<int> reaper_cpu_{-1};
  std::atomic<uint64_t> live_workers_stat_{0};

  // ---- Written by workers as they complete requests.
  alignas(kCacheLine) AdaptiveMutex ring_mu_;  // producers write at the tail
  // Requests no longer in flight (in_flight is added_ - finished_).
  std::atomic<int64_t> finished_{0};
  // When a worker last found that its I/O would block (steady clock ns).
  std::atomic<int64_t> last_block_ns_{0};
  // Bumped after a completion when a reaper waits; it sleeps on it (futex).
  std::atomic<uint32_t> event_seq_{0};

  // ---- The queue and the worker pool: shared, under mu_.
  alignas(kCacheLine) AdaptiveMutex mu_;
  std::condition_variable_any work_cv_;   // workers wait for work here
  std::condition_variable_any drain_cv_;  // Shutdown waits for the queue here
  Request* bucket_head_[kBuckets] = {};
  Request* bucket_tail_[kBuckets] = {};
  uint32_t nonempty_ = 0;     // bit b: bucket b has requests
  uint64_t next_ticket_ = 0;  // Request::iocb.aio_data: submission order
  // A copy of nonempty_ readable without mu_ (a hint: HelpOnce rechecks).
  std::atomic<uint32_t> nonempty_relaxed_{0};
  size_t queued_ = 0;
  size_t running_ = 0;
  std::unordered_map<int, FdChain> chains_;
  std::vector<std::thread> workers_;  // slots, max_workers_ of them
  std::vector<bool> worker_alive_;    // per slot
  size_t live_workers_ = 0;
  size_t idle_workers_ = 0;
  bool stopping_ = false;  // workers exit once the queue is empty

  // ---- Completions done here (refused, cancelled, no-ops): written by the
  // thread that submits or cancels, read by workers only to see waiters.
  alignas(kCacheLine) DoneList done_;

  // ---- Written by the submitting and reaping threads.
  alignas(kCacheLine) AdaptiveSpin spin_;  // guarded by the reaper gate
  ReaperGate gate_;
  bool dead_ = false;  // workers joined; guarded by the reaper gate
  // Requests queued to workers (in_flight is added_ - finished_).
  std::atomic<int64_t> added_{0};
  // Slots neither holding an unreaped event nor promised to a request in
  // flight (the kernel's reqs_available): nr - 1 at first.
  std::atomic<int64_t> reqs_available_{0};
  std::atomic<int> users_{0};
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> completed_{0};
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> eagain_retries_{0};
  std::atomic<uint64_t> partial_submits_{0};
  std::atomic<uint64_t> submit_calls_{0};
  std::atomic<uint64_t> wait_calls_{0};
  std::atomic<uint64_t> ring_reaped_{0};
};

// ---------------------------------------------------------------- Init

Status ThreadsEngine::Init() {
  const unsigned depth = options_.queue_depth;
  if (depth == 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "threads: queue_depth 0: the completion ring needs at "
                         "least one slot");
  }
  if (depth > (1U << 22)) {
    return Status::Error(
        Errc::kInvalidArgument,
        "threads: queue_depth " + std::to_string(depth) + " is above 4194304");
  }
  if (const sys::FaultHooks* h = sys::Hooks();
      h != nullptr && h->threads_init != nullptr) [[unlikely]] {
    if (int r = h->threads_init(); r < 0) {
      return Status::FromErrno(-r, "threads: starting the engine");
    }
  }
  // Room for twice the depth, as the kernel gives its AIO contexts.
  nr_ = std::max(2 * depth, 64U) + 1;
  const size_t bytes = sizeof(AioRing) + size_t{nr_} * sizeof(io_event);
  const size_t rounded = (bytes + 4095) & ~size_t{4095};
  void* mem = std::aligned_alloc(4096, rounded);
  if (mem == nullptr) {
    return Status::FromErrno(ENOMEM, "threads: completion ring of " +
                                         std::to_string(nr_) + " events");
  }
  std::memset(mem, 0, rounded);
  ring_ = static_cast<AioRing*>(mem);
  ring_->nr = nr_;
  ring_->magic = kAioRingMagic;
  ring_->header_length = sizeof(AioRing);
  reqs_available_.store(nr_ - 1, std::memory_order_relaxed);

  const unsigned cpus =
      std::max(1U, static_cast<unsigned>(sysconf(_SC_NPROCESSORS_ONLN)));
  // Enough to keep a device busy when I/O blocks; while it does not, the
  // pool stays at the CPUs (cpu_workers_).
  max_workers_ = options_.threads_max != 0 ? options_.threads_max
                                           : std::max(16U, 4 * cpus);
  if (options_.threads_min > max_workers_) {
    return Status::Error(
        Errc::kInvalidArgument,
        "threads: threads_min " + std::to_string(options_.threads_min) +
            " is above threads_max " + std::to_string(max_workers_));
  }
  cpu_workers_ = std::clamp(cpus - 1, 1U, max_workers_);
  cpu_workers_ = std::max(cpu_workers_, options_.threads_min);
  workers_.resize(max_workers_);
  worker_alive_.assign(max_workers_, false);

  if (options_.notify_fd) {
    const int efd = sys::Eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
      return Status::FromErrno(-efd, "threads: eventfd() for NotifyFd");
    notify_fd_ = efd;
  }
  {
    std::lock_guard<AdaptiveMutex> lock(mu_);
    for (unsigned i = 0; i < options_.threads_min; ++i) {
      worker_alive_[i] = true;
      ++live_workers_;
      ++idle_workers_;  // as GrowPoolLocked counts them: idle until started
      workers_[i] = std::thread(&ThreadsEngine::WorkerMain, this, i);
    }
    live_workers_stat_.store(live_workers_, std::memory_order_relaxed);
  }

  caps_.user_space_reap = true;
  caps_.cancel_regular_files = true;  // until a worker starts the request
  caps_.async_buffered_io = true;
  caps_.fsync = true;
  caps_.rw_flags = true;
  caps_.ioprio = true;
  caps_.request_eventfd = true;
  caps_.notify_fd = notify_fd_ >= 0;
  caps_.ring_entries = nr_;
  return {};
}

ThreadsEngine::~ThreadsEngine() {
  (void)Shutdown(kForever);
  Request* left[64];
  while (size_t n = done_.Take(left, 64)) {
    for (size_t i = 0; i < n; ++i) {
      left[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
    }
  }
  // Events still in the ring: their requests are the caller's again too.
  if (ring_ != nullptr) {
    (void)ConsumeAioRing(ring_, nr_, [](const io_event& ev) {
      reinterpret_cast<Request*>(ev.obj)->engine_state.store(
          kCompleted, std::memory_order_relaxed);
    });
  }
  if (notify_fd_ >= 0) sys::Close(notify_fd_);
  std::free(ring_);
}

EngineStats ThreadsEngine::Stats() const noexcept {
  EngineStats s;
  s.submitted = submitted_.load(std::memory_order_relaxed);
  s.completed = completed_.load(std::memory_order_relaxed);
  s.in_flight = s.submitted >= s.completed ? s.submitted - s.completed : 0;
  s.refused = refused_.load(std::memory_order_relaxed);
  s.eagain_retries = eagain_retries_.load(std::memory_order_relaxed);
  s.partial_submits = partial_submits_.load(std::memory_order_relaxed);
  s.submit_calls = submit_calls_.load(std::memory_order_relaxed);
  s.wait_calls = wait_calls_.load(std::memory_order_relaxed);
  s.ring_reaped = ring_reaped_.load(std::memory_order_relaxed);
  s.workers = live_workers_stat_.load(std::memory_order_relaxed);
  return s;
}

// ---------------------------------------------------------------- Queue

void ThreadsEngine::Enqueue(Request* req, int bucket) {
  req->engine_next = nullptr;
  req->iocb.aio_key = kQueued;
  req->iocb.aio_data = ++next_ticket_;  // its place (RequeueFront)
  req->iocb.aio_reqprio = static_cast<int16_t>(bucket);
  if (options_.threads_ordered_per_fd && req->fd >= 0) {
    FdChain& c = chains_[req->fd];
    if (c.active) {
      // Waits behind the request of this fd that is queued or running.
      if (c.tail != nullptr) {
        c.tail->engine_next = req;
      } else {
        c.head = req;
      }
      c.tail = req;
      ++queued_;
      return;
    }
    c.active = true;
  }
  const auto b = static_cast<unsigned>(bucket);
  if (bucket_tail_[b] != nullptr) {
    bucket_tail_[b]->engine_next = req;
  } else {
    bucket_head_[b] = req;
  }
  bucket_tail_[b] = req;
  nonempty_ |= 1U << b;
  nonempty_relaxed_.store(nonempty_, std::memory_order_relaxed);
  ++queued_;
}

Request* ThreadsEngine::Dequeue() {
  if (nonempty_ == 0) return nullptr;
  const auto b = static_cast<unsigned>(std::countr_zero(nonempty_));
  Request* r = bucket_head_[b];
  // The submitter wrote it last: its lines on their way together, and the
  // next one's while this one runs (a batch takes it next).
  PrefetchLines(r, true);
  bucket_head_[b] = r->engine_next;
  if (bucket_head_[b] != nullptr) PrefetchLines(bucket_head_[b], false);
  if (bucket_head_[b] == nullptr) {
    bucket_tail_[b] = nullptr;
    nonempty_ &= ~(1U << b);
    nonempty_relaxed_.store(nonempty_, std::memory_order_relaxed);
  }
  r->engine_next = nullptr;
  --queued_;
  return r;
}

void ThreadsEngine::RequeueFront(Request* req, bool would_block) {
  --running_;
  req->iocb.aio_key = would_block ? kForWorker : kQueued;
  // Back in its place: before the first request queued after it (tickets
  // grow in submission order), so that requests taken and given back keep
  // their order, whoever gives them back and in what order.
  const auto b = static_cast<unsigned>(req->iocb.aio_reqprio);
  const uint64_t ticket = req->iocb.aio_data;
  Request* prev = nullptr;
  Request* next = bucket_head_[b];
  while (next != nullptr && next->iocb.aio_data < ticket) {
    prev = next;
    next = next->engine_next;
  }
  req->engine_next = next;
  if (prev != nullptr) {
    prev->engine_next = req;
  } else {
    bucket_head_[b] = req;
  }
  if (next == nullptr) bucket_tail_[b] = req;
  nonempty_ |= 1U << b;
  nonempty_relaxed_.store(nonempty_, std::memory_order_relaxed);
  ++queued_;
}

bool ThreadsEngine::RunsWithoutBlocking(const Request& req) noexcept {
  return req.iocb.aio_key != kForWorker && !req.has_ioprio &&
         !req.align.known() && TryWithoutBlocking(req);
}

bool ThreadsEngine::HeadRunsWithoutBlocking() const noexcept {
  if (nonempty_ == 0) return false;
  return RunsWithoutBlocking(
      *bucket_head_[static_cast<unsigned>(std::countr_zero(nonempty_))]);
}

Request* ThreadsEngine::TakeHelpable() {
  if (nonempty_ == 0) return nullptr;
  const auto b = static_cast<unsigned>(std::countr_zero(nonempty_));
  // Past those left for workers (they would block), a few of them at most.
  Request* prev = nullptr;
  Request* r = bucket_head_[b];
  for (int skipped = 0; r != nullptr && r->iocb.aio_key == kForWorker;
       prev = r, r = r->engine_next) {
    if (++skipped > static_cast<int>(kWorkerBatch)) return nullptr;
  }
  if (r == nullptr || !RunsWithoutBlocking(*r)) return nullptr;
  if (prev == nullptr) return Dequeue();
  prev->engine_next = r->engine_next;
  if (bucket_tail_[b] == r) bucket_tail_[b] = prev;
  r->engine_next = nullptr;
  --queued_;
  return r;
}

bool ThreadsEngine::RemoveQueued(Request* req) {
  auto unlink = [&](Request*& head, Request*& tail) -> bool {
    Request* prev = nullptr;
    for (Request* r = head; r != nullptr; prev = r, r = r->engine_next) {
      if (r != req) continue;
      if (prev != nullptr) {
        prev->engine_next = r->engine_next;
      } else {
        head = r->engine_next;
      }
      if (tail == r) tail = prev;
      r->engine_next = nullptr;
      return true;
    }
    return false;
  };
  const int bucket = req->iocb.aio_reqprio;
  if (bucket >= 0 && bucket < static_cast<int>(kBuckets)) {
    const auto b = static_cast<unsigned>(bucket);
    if (unlink(bucket_head_[b], bucket_tail_[b])) {
      if (bucket_head_[b] == nullptr) nonempty_ &= ~(1U << b);
      nonempty_relaxed_.store(nonempty_, std::memory_order_relaxed);
      --queued_;
      if (options_.threads_ordered_per_fd && req->fd >= 0) {
        // It held its fd's turn: pass it to the next of that fd.
        FdChain& c = chains_[req->fd];
        if (Request* next = c.head) {
          c.head = next->engine_next;
          if (c.head == nullptr) c.tail = nullptr;
          next->engine_next = nullptr;
          --queued_;  // Enqueue counts it again
          c.active = false;
          Enqueue(next, next->iocb.aio_reqprio);
        } else {
          c.active = false;
        }
      }
      return true;
    }
  }
  if (options_.threads_ordered_per_fd && req->fd >= 0) {
    auto it = chains_.find(req->fd);
    if (it != chains_.end() && unlink(it->second.head, it->second.tail)) {
      --queued_;
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------- Submit

unsigned ThreadsEngine::TakeSlots(unsigned want) noexcept {
  int64_t avail = reqs_available_.load(std::memory_order_relaxed);
  for (;;) {
    if (avail <= 0) return 0;
    const int64_t take = std::min<int64_t>(avail, want);
    // Acquire pairs with ReturnSlots' release: the reaper's reads of the ring
    // slots it freed happen before a worker completing this request writes
    // one of them (through mu_, which orders submission before the worker).
    if (reqs_available_.compare_exchange_weak(avail, avail - take,
                                              std::memory_order_acquire,
                                              std::memory_order_relaxed)) {
      return static_cast<unsigned>(take);
    }
  }
}

void ThreadsEngine::ReturnSlots(unsigned n) noexcept {
  // Release: see TakeSlots.
  reqs_available_.fetch_add(n, std::memory_order_release);
}

void ThreadsEngine::GrowPoolLocked() {
  // While requests complete without blocking (the page cache), more workers
  // than CPUs (less the reaping thread, which helps) only take turns on them;
  // once one blocks, up to threads_max.
  const size_t cap = BlockedRecently() ? max_workers_ : cpu_workers_;
  while (idle_workers_ < queued_ && live_workers_ < cap) {
    size_t slot = 0;
    while (slot < max_workers_ && worker_alive_[slot]) ++slot;
    if (slot == max_workers_) break;
    // A worker that ended after its idle time left its thread to join.
    if (workers_[slot].joinable()) workers_[slot].join();
    worker_alive_[slot] = true;
    ++live_workers_;
    ++idle_workers_;  // it looks for work as soon as it starts
    workers_[slot] = std::thread(&ThreadsEngine::WorkerMain, this, slot);
  }
  // Called for every Submit: written only when it changes (spinning workers
  // read its line).
  if (live_workers_stat_.load(std::memory_order_relaxed) != live_workers_) {
    live_workers_stat_.store(live_workers_, std::memory_order_relaxed);
  }
}

void ThreadsEngine::QueueRequests(Request* const* reqs, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    Request* r = reqs[i];
    r->rval = kNotCompleted;
    r->origin = Origin::kNone;
    TsanRelease(r);
  }
  added_.fetch_add(static_cast<int64_t>(n), std::memory_order_release);
  submitted_.fetch_add(n, std::memory_order_relaxed);
  std::lock_guard<AdaptiveMutex> lock(mu_);
  for (size_t i = 0; i < n; ++i) Enqueue(reqs[i], BucketOf(*reqs[i]));
  const size_t idle_before = idle_workers_;
  GrowPoolLocked();
  // Wake as many idle workers as there is new work (no more).
  for (size_t i = 0; i < std::min(n, idle_before); ++i) work_cv_.notify_one();
}

SubmitResult ThreadsEngine::Submit(std::span<Request* const> batch) {
  SubmitResult result;
  UserGuard guard(&users_);
  if (shutdown_.load(std::memory_order_seq_cst)) {
    result.status =
        Status::Error(Errc::kShutdown, "threads: Submit after Shutdown");
    return result;
  }
  // A run of valid requests, batch[run_start, i), queued together.
  size_t run_start = 0;
  auto flush = [&](size_t end) -> bool {
    size_t done = run_start;
    unsigned attempts = 0;
    std::chrono::microseconds delay = options_.eagain.initial_delay;
    while (done < end) {
      auto want = static_cast<unsigned>(std::min<size_t>(end - done, 1U << 20));
      // Fault injection stands where io_submit would fail or fall short.
      int hooked = 0;
      if (const sys::FaultHooks* h = sys::Hooks();
          h != nullptr && h->threads_submit != nullptr) [[unlikely]] {
        hooked = h->threads_submit(&want);
      }
      submit_calls_.fetch_add(1, std::memory_order_relaxed);
      const unsigned got = hooked < 0 ? 0 : TakeSlots(want);
      if (got > 0) {
        if (got < end - done)
          partial_submits_.fetch_add(1, std::memory_order_relaxed);
        QueueRequests(batch.data() + done, got);
        done += got;
        attempts = 0;
        delay = options_.eagain.initial_delay;
        continue;
      }
      // No slot (every one holds an unreaped event or is promised): EAGAIN.
      if (attempts >= options_.eagain.max_retries ||
          shutdown_.load(std::memory_order_acquire)) {
        break;
      }
      ++attempts;
      ++result.retries;
      eagain_retries_.fetch_add(1, std::memory_order_relaxed);
      if (!MakeRoom(delay)) std::this_thread::sleep_for(delay);
      delay = NextDelay(delay);
    }
    for (size_t i = done; i < end; ++i) {
      batch[i]->engine_state.store(kIdle, std::memory_order_relaxed);
    }
    run_start = end;
    if (done == end) return true;
    result.accepted = done;
    result.status = Status::Error(
        shutdown_.load(std::memory_order_acquire) ? Errc::kShutdown
                                                  : Errc::kQueueFull,
        "threads: no completion slot after " +
            std::to_string(options_.eagain.max_retries) + " retries; " +
            std::to_string(batch.size() - done) + " requests (from batch[" +
            std::to_string(done) + "]) were not submitted");
    return false;
  };

  for (size_t i = 0; i < batch.size(); ++i) {
    Request* req = batch[i];
    if (req == nullptr ||
        req->engine_state.load(std::memory_order_relaxed) == kInFlight) {
      if (!flush(i)) return result;
      result.accepted = i;
      result.status = Status::Error(
          Errc::kInvalidArgument,
          "threads: batch[" + std::to_string(i) + "]: " +
              (req == nullptr ? std::string("null request")
                              : DescribeAsked(*req) +
                                    ": submitted again before it was reaped"));
      return result;
    }
    if (req->op == Op::kNoop) {
      if (!flush(i)) return result;
      run_start = i + 1;
      req->engine_state.store(kInFlight, std::memory_order_relaxed);
      submitted_.fetch_add(1, std::memory_order_relaxed);
      CompleteLocally(req, 0, Origin::kLocal);
      continue;
    }
    Status valid = req->Validate();
    // Invalid, or an I/O priority class the kernel refuses: EINVAL, as the
    // kernel answers.
    const bool refused = (!valid.ok() && (options_.check_alignment ||
                                          !valid.Is(Errc::kMisaligned))) ||
                         BucketOf(*req) < 0;
    const int err = refused ? EINVAL : 0;
    if (err != 0) {
      if (!flush(i)) return result;
      run_start = i + 1;
      req->engine_state.store(kInFlight, std::memory_order_relaxed);
      submitted_.fetch_add(1, std::memory_order_relaxed);
      refused_.fetch_add(1, std::memory_order_relaxed);
      CompleteLocally(req, -err, Origin::kRefused);
      continue;
    }
    // Marked now, so that the same request twice in one batch is caught.
    req->engine_state.store(kInFlight, std::memory_order_relaxed);
  }
  if (!flush(batch.size())) return result;
  result.accepted = batch.size();
  return result;
}

// ---------------------------------------------------------------- Workers

long ThreadsEngine::ReadWrite(Request* req, int flags, bool* stream) noexcept {
  const auto off = static_cast<off_t>(req->offset);
  const int n = static_cast<int>(req->iov.size());
  const bool read = req->op == Op::kRead || req->op == Op::kReadv;
  long r = read ? sys::Preadv2(req->fd, req->iov.data(), n, off, flags)
                : sys::Pwritev2(req->fd, req->iov.data(), n, off, flags);
  if (stream != nullptr) *stream = false;
  if (r == -ESPIPE) {
    // A pipe, FIFO or socket has no offset: use its position, as the kernel's
    // AIO and io_uring do for such files (-1: the file position).
    if (stream != nullptr) *stream = true;
    r = read ? sys::Preadv2(req->fd, req->iov.data(), n, -1, flags)
             : sys::Pwritev2(req->fd, req->iov.data(), n, -1, flags);
  }
  return r;
}

namespace {
// The most the kernel moves in one read or write (MAX_RW_COUNT: INT_MAX
// rounded down to a page); it returns that count for a longer request.
uint64_t MaxRwCount() noexcept {
  static const uint64_t max =
      static_cast<uint64_t>(INT_MAX) &
      ~(static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) - 1);
  return max;
}
}  // namespace

long ThreadsEngine::FinishShort(Request* req, long done, bool stream) noexcept {
  // What was transferred is kept: a stream cannot give it back, and a file
  // opened O_APPEND would get it twice. A read from a stream ends here (a pipe
  // returns what it has, as the kernel's would); anything else goes on,
  // waiting this time, from where it stopped, up to MAX_RW_COUNT in all (the
  // kernel's one call would have stopped there too).
  const bool read = req->op == Op::kRead || req->op == Op::kReadv;
  if (read && stream) return done;
  IovecVector rest;
  auto skip = static_cast<uint64_t>(done);
  uint64_t room = MaxRwCount() - static_cast<uint64_t>(done);
  for (const iovec& v : req->iov) {
    if (skip >= v.iov_len) {
      skip -= v.iov_len;
      continue;
    }
    if (room == 0) break;
    const uint64_t take = std::min<uint64_t>(v.iov_len - skip, room);
    rest.push_back({static_cast<char*>(v.iov_base) + skip, take});
    room -= take;
    skip = 0;
  }
  const int n = static_cast<int>(rest.size());
  const auto off =
      stream ? off_t{-1}
             : static_cast<off_t>(req->offset + static_cast<uint64_t>(done));
  const int flags = static_cast<int>(req->rw_flags & ~rwf::kHipri);
  const long r = read ? sys::Preadv2(req->fd, rest.data(), n, off, flags)
                      : sys::Pwritev2(req->fd, rest.data(), n, off, flags);
  // The part done stands even if the rest fails: a short transfer.
  return r > 0 ? done + r : done;
}

bool ThreadsEngine::WouldBlock(const Request& req, long r) noexcept {
  // EAGAIN: not in the page cache, an empty pipe, space to allocate.
  // EOPNOTSUPP: the file cannot say. (A partial transfer is not redone: see
  // FinishShort.)
  (void)req;
  return r == -EAGAIN || r == -EOPNOTSUPP;
}

namespace {
bool Short(const Request& req, long r) noexcept {
  return r > 0 && static_cast<uint64_t>(r) < std::min(req.length, MaxRwCount());
}
}  // namespace

bool ThreadsEngine::TryWithoutBlocking(const Request& req) noexcept {
  // Only plain buffered reads and writes: the caller's own RWF flags (NOWAIT
  // among them) must mean what the caller meant, and an O_DIRECT transfer
  // waits for the device whatever the flags.
  return req.rw_flags == 0 && !req.align.known() &&
         (req.op == Op::kRead || req.op == Op::kReadv || req.op == Op::kWrite ||
          req.op == Op::kWritev);
}

void ThreadsEngine::NoteBlocking() {
  last_block_ns_.store(Clock::now().time_since_epoch().count(),
                       std::memory_order_relaxed);
  std::lock_guard<AdaptiveMutex> lock(mu_);
  GrowPoolLocked();  // others may go on while this one waits
}

bool ThreadsEngine::BlockedRecently() const noexcept {
  const int64_t last = last_block_ns_.load(std::memory_order_relaxed);
  return last != 0 &&
         Clock::now().time_since_epoch().count() - last <
             std::chrono::nanoseconds(std::chrono::milliseconds(100)).count();
}

long ThreadsEngine::RunWithoutBlocking(Request* req, unsigned* executed,
                                       Tried* tried, bool* stream) {
  // Timed one time in 16 (two clock reads per request were 4% of a worker's
  // time on cached reads): a device behind an O_DIRECT fd shows on every
  // request, so a sample finds it soon enough.
  const bool timed = (++*executed & 15U) == 0;
  const Clock::time_point t0 = timed ? Clock::now() : Clock::time_point{};
  *stream = false;
  const long r = ReadWrite(req, RWF_NOWAIT, stream);
  if (Short(*req, r)) {
    *tried = Tried::kShort;
    return r;
  }
  if (WouldBlock(*req, r)) {
    *tried = Tried::kWouldBlock;
    return 0;
  }
  *tried = Tried::kDone;
  // Slow: a raw O_DIRECT fd (RWF_NOWAIT only avoids lock waits there), or
  // just a preempted thread; fcntl tells which.
  if (timed && Clock::now() - t0 > kSlowTry) NoteBlockingIfDirect(req->fd);
  return r;
}

void ThreadsEngine::NoteBlockingIfDirect(int fd) {
  const int fl = sys::Fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_DIRECT) != 0) NoteBlocking();
}

int64_t ThreadsEngine::Execute(Request* req, int* thread_prio,
                               unsigned* executed) {
  // The worker takes the request's I/O priority (the kernel checks it, as it
  // does for an AIO iocb: an unprivileged realtime class fails with EPERM).
  const int want_prio = req->has_ioprio ? req->ioprio : 0;
  if (want_prio != *thread_prio) {
    if (int r = sys::IoprioSetThread(want_prio); r < 0) return r;
    *thread_prio = want_prio;
  }
  switch (req->op) {
    case Op::kRead:
    case Op::kReadv:
    case Op::kWrite:
    case Op::kWritev: {
      // First without blocking: when that works (the page cache), the pool
      // needs no more threads than CPUs; when it would block, more threads
      // keep the device busy while this one waits. O_DIRECT transfers (known
      // by their alignment) always wait for the device, and so does one that
      // took long although it did not say EAGAIN (O_DIRECT on a raw fd, where
      // RWF_NOWAIT only avoids lock waits).
      if (req->align.known()) {
        NoteBlocking();
      } else if (TryWithoutBlocking(*req)) {
        Tried tried = Tried::kDone;
        bool stream = false;
        const long r = RunWithoutBlocking(req, executed, &tried, &stream);
        if (tried == Tried::kDone) return r;
        NoteBlocking();
        if (tried == Tried::kShort) return FinishShort(req, r, stream);
      }
      // RWF_HIPRI asks for polled completion, which a thread does not do; it
      // is ignored, as kernel AIO ignores it.
      return ReadWrite(req, static_cast<int>(req->rw_flags & ~rwf::kHipri));
    }
    case Op::kFsync:
      NoteBlocking();
      return sys::Fsync(req->fd);
    case Op::kFdatasync:
      NoteBlocking();
      return sys::Fdatasync(req->fd);
    case Op::kNoop:
      return 0;
  }
  return -EINVAL;
}

// Moves the calling thread off `cpu` (to any other CPU its affinity allows),
// then gives it its affinity back, so that it stays free to go anywhere. False
// when it cannot (pinned to that CPU, or the calls fail).
bool StepAside(int cpu) noexcept {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return false;
  if (cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &mask) || CPU_COUNT(&mask) < 2) {
    return false;
  }
  cpu_set_t others = mask;
  CPU_CLR(cpu, &others);
  if (sched_setaffinity(0, sizeof(others), &others) != 0) return false;
  // (Not atomic: an affinity change made by someone else between these calls
  // is undone. Kernels from 6.2 also remember the mask set here as the
  // thread's own, so a later cpuset widening does not reach it.)
  if (sched_setaffinity(0, sizeof(mask), &mask) != 0) {
    (void)sched_setaffinity(0, sizeof(mask), &mask);  // once more
  }
  return true;
}

void ThreadsEngine::RunBatch(Request* first,
                             std::unique_lock<AdaptiveMutex>* lock,
                             int* thread_prio, unsigned* executed) {
  Request* batch[kWorkerBatch];
  int64_t res[kWorkerBatch];
  batch[0] = first;
  size_t n = 1;
  // More when more wait than the other workers and the reaper would take
  // each, while nothing blocks, and only requests that can be tried without
  // blocking: one that would block goes back to the queue, for a worker that
  // may wait, and the others run (none waits behind it).
  if (*thread_prio == 0 && RunsWithoutBlocking(*first) && !BlockedRecently()) {
    const size_t share = std::min<size_t>(
        kWorkerBatch, 1 + queued_ / (live_workers_ - idle_workers_ + 1));
    while (n < share && HeadRunsWithoutBlocking()) batch[n++] = Dequeue();
  }
  for (size_t i = 0; i < n; ++i) batch[i]->iocb.aio_key = kStarted;
  running_ += n;
  lock->unlock();
  for (size_t i = 0; i < n; ++i) TsanAcquire(batch[i]);
  if (n == 1) {
    const int64_t r = Execute(first, thread_prio, executed);
    CompleteToRing(first, r);
    lock->lock();
    --running_;
    return;
  }
  size_t done = 0;  // batch[0, done) ran, results in res
  size_t completed = 0;
  Request* back[kWorkerBatch];  // to the queue again
  bool back_would_block[kWorkerBatch];
  size_t n_back = 0;
  // Hands back what goes back and completes what ran, before this worker may
  // block (a short transfer) and at the end: nothing waits behind a
  // blocking one. Once completed, a request is the caller's.
  auto flush = [&] {
    if (n_back != 0) {
      lock->lock();
      for (size_t i = n_back; i-- > 0;) {
        RequeueFront(back[i], back_would_block[i]);
      }
      GrowPoolLocked();
      for (size_t i = 0; i < std::min(n_back, idle_workers_); ++i) {
        work_cv_.notify_one();
      }
      lock->unlock();
      n_back = 0;
    }
    if (done != 0) {
      CompleteToRing(batch, res, done);
      completed += done;
      done = 0;
    }
  };
  const Clock::time_point t0 = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    Request* r = batch[i];
    Tried tried = Tried::kDone;
    bool stream = false;
    const long v = RunWithoutBlocking(r, executed, &tried, &stream);
    if (tried == Tried::kWouldBlock) {
      last_block_ns_.store(Clock::now().time_since_epoch().count(),
                           std::memory_order_relaxed);
      back_would_block[n_back] = true;
      back[n_back++] = r;
    } else if (tried == Tried::kShort) {
      // The rest may block: the others first.
      flush();
      NoteBlocking();
      CompleteToRing(r, FinishShort(r, v, stream));
      ++completed;
    } else {
      batch[done] = r;
      res[done++] = v;
    }
    if (i == 0 && Clock::now() - t0 > kSlowTry) {
      // The first took long (a device behind an O_DIRECT fd, or this thread
      // was preempted): the others go back, untried, for whoever is free.
      NoteBlockingIfDirect(r->fd);
      for (size_t j = 1; j < n; ++j) {
        back_would_block[n_back] = false;
        back[n_back++] = batch[j];
      }
      break;
    }
  }
  flush();
  lock->lock();
  running_ -= completed;
}

void ThreadsEngine::WorkerMain(size_t slot) {
  int thread_prio = 0;  // IOPRIO_CLASS_NONE: the thread's default
  unsigned executed = 0;
  std::unique_lock<AdaptiveMutex> lock(mu_);
  --idle_workers_;  // counted idle by GrowPoolLocked until it got here
  for (;;) {
    Request* req = Dequeue();
    if (req == nullptr) {
      if (stopping_) break;
      // Look for work a little before sleeping: under load the next request
      // is a few microseconds away, and a sleep plus a futex wake-up costs
      // more than that on both sides.
      lock.unlock();
      const Clock::time_point spin_until =
          Clock::now() + std::chrono::microseconds(20);
      bool work = false;
      // Shutting down: no spin (nothing new comes); the wait below ends when
      // Shutdown sets stopping_.
      bool quit = false;
      do {
        for (int i = 0; i < 64 && !work; ++i) {
          work = nonempty_relaxed_.load(std::memory_order_relaxed) != 0;
          quit = shutdown_.load(std::memory_order_relaxed);
          if (quit) break;
          if (!work) CpuRelax();
        }
        // Spinning on the CPU the reaper was put on keeps it off that CPU,
        // and the work the worker waits for comes from it. The scheduler
        // tends to keep them together (it wakes a worker next to the thread
        // that woke it): whole runs went at half speed, or worse. Step to
        // another CPU, or at least let the reaper run.
        if (!work && !quit) {
          const int cpu = sched_getcpu();
          if (cpu >= 0 && cpu == reaper_cpu_.load(std::memory_order_relaxed) &&
              !StepAside(cpu)) {
            sched_yield();
          }
        }
      } while (!work && !quit && Clock::now() < spin_until);
      lock.lock();
      if (work) continue;
      ++idle_workers_;
      const bool woken = work_cv_.wait_for(lock, options_.threads_idle, [&] {
        return nonempty_ != 0 || stopping_;
      });
      --idle_workers_;
      if (!woken && live_workers_ > options_.threads_min) break;
      continue;
    }
    if (!options_.threads_ordered_per_fd) {
      RunBatch(req, &lock, &thread_prio, &executed);
      req = nullptr;
    }
    // Run it, then (per-fd order) the requests of its fd that waited for it.
    while (req != nullptr) {
      req->iocb.aio_key = kStarted;
      ++running_;
      lock.unlock();
      TsanAcquire(req);
      const int64_t res = Execute(req, &thread_prio, &executed);
      // Read before completing: once completed, the request is the caller's
      // (it may be reaped, prepared again or freed at once).
      const int fd = req->fd;
      CompleteToRing(req, res);
      lock.lock();
      --running_;
      req = nullptr;
      if (options_.threads_ordered_per_fd && fd >= 0) {
        FdChain& c = chains_[fd];
        if (c.head != nullptr) {
          req = c.head;
          c.head = req->engine_next;
          if (c.head == nullptr) c.tail = nullptr;
          req->engine_next = nullptr;
          --queued_;
        } else {
          chains_.erase(fd);  // nothing of this fd is queued or running
        }
      }
    }
    if (shutdown_.load(std::memory_order_relaxed) && queued_ == 0 &&
        running_ == 0) {
      drain_cv_.notify_all();
    }
    // More workers than CPUs while nothing blocks only take turns: one goes.
    if (live_workers_ > cpu_workers_ && live_workers_ > options_.threads_min &&
        !BlockedRecently()) {
      break;
    }
  }
  worker_alive_[slot] = false;
  --live_workers_;
  live_workers_stat_.store(live_workers_, std::memory_order_relaxed);
  drain_cv_.notify_all();  // Shutdown waits for the pool to empty
  if (thread_prio != 0) (void)sys::IoprioSetThread(0);
}

// A request's eventfd is signalled after its completion is visible, when the
// caller may already have reaped it, closed the eventfd and opened another
// file under that number. The kernel holds a reference to the eventfd; so do
// we: a second descriptor for it, taken while the request is still ours.
int HoldEventfd(int fd) noexcept {
  if (fd < 0) return -1;
  const int held = sys::DupCloexec(fd);
  return held >= 0 ? held : -1;  // closed already: nothing to signal
}

void SignalHeldEventfd(int held) noexcept {
  if (held < 0) return;
  (void)sys::EventfdWrite(held, 1);
  (void)sys::Close(held);
}

void ThreadsEngine::Deliver(Request* req, int64_t res, Origin origin) {
  req->rval = res;
  req->origin = origin;
  const int resfd = HoldEventfd(req->resfd);
  req->engine_state.store(kCompleted, std::memory_order_relaxed);
  completed_.fetch_add(1, std::memory_order_relaxed);
  finished_.fetch_add(1, std::memory_order_release);
  TsanRelease(req);
  // From here on the request is the caller's.
  options_.on_complete(options_.on_complete_arg, req);
  if (notify_fd_ >= 0) (void)sys::EventfdWrite(notify_fd_, 1);
  SignalHeldEventfd(resfd);
  Signal();
}

void ThreadsEngine::CompleteToRing(Request* const* reqs, const int64_t* res,
                                   size_t n) {
  if (options_.on_complete != nullptr) {
    for (size_t i = 0; i < n; ++i) {
      // No ring: the slot taken at submission is free at once.
      ReturnSlots(1);
      Deliver(reqs[i], res[i], Origin::kEngine);
    }
    return;
  }
  assert(n <= kWorkerBatch);
  int held[kWorkerBatch];
  for (size_t i = 0; i < n; ++i) {
    reqs[i]->rval = res[i];
    reqs[i]->origin = Origin::kEngine;
    held[i] = HoldEventfd(reqs[i]->resfd);
  }
  {
    std::lock_guard<AdaptiveMutex> lock(ring_mu_);
    // Only producers, under this lock, write the tail.
    unsigned tail =
        std::atomic_ref<unsigned>(ring_->tail).load(std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) {
      io_event& ev = ring_->events()[tail];
      ev.data = reinterpret_cast<uint64_t>(reqs[i]);
      ev.obj = reinterpret_cast<uint64_t>(&reqs[i]->iocb);
      ev.res = res[i];
      ev.res2 = 0;
      tail = tail + 1 == nr_ ? 0 : tail + 1;
    }
    // Release: the events (and the requests' rval) are written before the
    // reaper can see the new tail (pairs with ConsumeAioRing's acquire). A
    // slot was reserved at submission, so the ring cannot be full here.
    std::atomic_ref<unsigned>(ring_->tail)
        .store(tail, std::memory_order_release);
  }
  finished_.fetch_add(static_cast<int64_t>(n), std::memory_order_release);
  if (notify_fd_ >= 0) (void)sys::EventfdWrite(notify_fd_, n);
  for (size_t i = 0; i < n; ++i) SignalHeldEventfd(held[i]);
  Signal();
}

void ThreadsEngine::CompleteLocally(Request* req, int64_t res, Origin origin) {
  if (options_.on_complete != nullptr) {
    added_.fetch_add(1, std::memory_order_release);  // Deliver takes it
    Deliver(req, res, origin);
    return;
  }
  req->rval = res;
  req->origin = origin;
  const int resfd = HoldEventfd(req->resfd);
  (void)done_.Push(req);
  if (notify_fd_ >= 0) (void)sys::EventfdWrite(notify_fd_, 1);
  SignalHeldEventfd(resfd);
  Signal();
}

void ThreadsEngine::Signal() noexcept {
  // The other half of DoneList's pair. The completion is published (ring tail
  // or done list) before this full fence, and a reaper announces itself
  // (seq_cst) before it looks for completions: either it sees this one, or
  // we see it waiting, move the sequence it sleeps on and wake it. (The fence,
  // not a write to event_seq_, keeps that cache line still when nobody waits.)
  FullFence();
  if (done_.HasWaiters()) {
    event_seq_.fetch_add(1, std::memory_order_seq_cst);
    (void)sys::FutexWake(reinterpret_cast<const uint32_t*>(&event_seq_),
                         1 << 30);
  }
}

bool ThreadsEngine::HelpOnce() {
  if (options_.threads_ordered_per_fd) return false;
  // A request that would block goes to a worker, and the next is tried.
  for (size_t tries = 0; tries < kWorkerBatch; ++tries) {
    if (nonempty_relaxed_.load(std::memory_order_relaxed) == 0) return false;
    Request* req = nullptr;
    {
      std::lock_guard<AdaptiveMutex> lock(mu_);
      // Only the most urgent requests, and only a plain read or write: one
      // with an I/O priority needs a worker's ioprio_set, an fsync may block.
      // Those a try found would block are passed by: they wait for a worker,
      // and the ones behind them need not.
      req = TakeHelpable();
      if (req == nullptr) return false;
      req->iocb.aio_key = kStarted;
      ++running_;
    }
    TsanAcquire(req);
    bool stream = false;
    long r = ReadWrite(req, RWF_NOWAIT, &stream);
    // Part of it done: this thread finishes it (the part done cannot be
    // handed back to a worker).
    if (Short(*req, r)) r = FinishShort(req, r, stream);
    if (WouldBlock(*req, r)) {
      // A worker does it the ordinary way.
      last_block_ns_.store(Clock::now().time_since_epoch().count(),
                           std::memory_order_relaxed);
      std::lock_guard<AdaptiveMutex> lock(mu_);
      RequeueFront(req, /*would_block=*/true);
      GrowPoolLocked();
      if (idle_workers_ != 0) work_cv_.notify_one();
      continue;
    }
    CompleteToRing(req, r);
    std::lock_guard<AdaptiveMutex> lock(mu_);
    --running_;
    if (shutdown_.load(std::memory_order_relaxed) && queued_ == 0 &&
        running_ == 0) {
      drain_cv_.notify_all();
    }
    return true;
  }
  return false;
}

// ---------------------------------------------------------------- Reap

size_t ThreadsEngine::DrainRing(Request** out, size_t max) {
  if (max == 0) return 0;
  size_t n = 0;
  const size_t consumed = ConsumeAioRing(ring_, max, [&](const io_event& ev) {
    auto* req = reinterpret_cast<Request*>(ev.obj);
    req->rval = ev.res;
    out[n++] = req;
  });
  if (consumed != 0) {
    // The slots are free again once head has moved past them.
    ReturnSlots(static_cast<unsigned>(consumed));
    ring_reaped_.fetch_add(consumed, std::memory_order_relaxed);
  }
  return n;
}

Result<size_t> ThreadsEngine::Reap(std::span<Request*> out, size_t min,
                                   std::chrono::nanoseconds timeout) {
  if (out.empty()) return size_t{0};
  min = std::min(min, out.size());
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;

  ReaperLock lock(&gate_, timeout, deadline);
  NoteReaperCpu();
  size_t n = done_.Take(out.data(), out.size());
  // Whoever holds the gate may have completions in hand: taken from the ring
  // (where InFlight() no longer counts them) and not yet on the done list
  // (MakeRoom's collect). So "nothing left" is told only with the gate held.
  // Nor while a Submit that began before Shutdown may still queue requests
  // (Shutdown waits for it; seq_cst pairs with UserGuard's increment and
  // Submit's look at shutdown_, so a later Submit sees the flag and refuses).
  auto nothing_can_arrive = [&] {
    return shutdown_.load(std::memory_order_seq_cst) &&
           users_.load(std::memory_order_seq_cst) == 0 && InFlight() == 0 &&
           AioRingPending(ring_) == 0 && done_.count() == 0;
  };
  bool nothing_left = false;
  if (lock.owns_lock()) {
    n += DrainRing(out.data() + n, out.size() - n);
    while (n < min) {
      if (nothing_can_arrive()) break;
      std::chrono::nanoseconds left = kForever;
      if (!forever) {
        left = deadline - Clock::now();
        if (left.count() <= 0) break;
      }
      // Work and spin before announcing a wait: an announced reaper makes
      // every completion pay for a futex wake-up, even while the reaper is
      // busy running a read itself.
      if (HelpOnce()) {
        // The reaper did a queued request itself instead of idling.
        n += DrainRing(out.data() + n, out.size() - n);
        continue;
      }
      if (InFlight() > 0 && spin_.Spin(deadline, [&] {
            return AioRingPending(ring_) != 0 || done_.count_relaxed() != 0;
          })) {
        n += done_.Take(out.data() + n, out.size() - n);
        n += DrainRing(out.data() + n, out.size() - n);
        continue;
      }
      const uint32_t seq = event_seq_.load(std::memory_order_seq_cst);
      if (done_.AnnounceWaiter()) {  // (it retired itself)
        n += done_.Take(out.data() + n, out.size() - n);
        continue;
      }
      // Look again now that a wake-up would find us: Shutdown signals once
      // the last Submit has left (after its flag), and that may have been
      // between the look above and the announcement.
      if (AioRingPending(ring_) != 0 || nothing_can_arrive()) {
        done_.RetireWaiter();
        n += DrainRing(out.data() + n, out.size() - n);
        continue;
      }
      // Sleep until a completion bumps the sequence (FutexWait returns at
      // once if it already did), for what is left after helping and spinning.
      if (!forever) {
        left = deadline - Clock::now();
        if (left.count() <= 0) {
          done_.RetireWaiter();
          break;
        }
      }
      (void)sys::FutexWait(reinterpret_cast<const uint32_t*>(&event_seq_), seq,
                           left);
      wait_calls_.fetch_add(1, std::memory_order_relaxed);
      done_.RetireWaiter();
      n += done_.Take(out.data() + n, out.size() - n);
      n += DrainRing(out.data() + n, out.size() - n);
    }
    nothing_left = n == 0 && nothing_can_arrive();
    lock.Unlock();
  }
  for (size_t i = 0; i < n; ++i) {
    out[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
  }
  completed_.fetch_add(n, std::memory_order_relaxed);
  if (nothing_left) {
    return Status::Error(Errc::kShutdown,
                         "threads: engine shut down and nothing left to reap");
  }
  return n;
}

bool ThreadsEngine::MakeRoom(std::chrono::microseconds delay) {
  if (!gate_.TryAcquire()) return false;  // a reaper frees slots as it reaps
  constexpr size_t kBatch = 256;
  Request* got[kBatch];
  auto collect = [&] {
    size_t total = 0;
    for (;;) {
      const size_t n = DrainRing(got, kBatch);
      if (n == 0) return total;
      for (size_t i = 1; i < n; ++i) got[i - 1]->engine_next = got[i];
      (void)done_.Push(got[0], got[n - 1], n);
      total += n;
    }
  };
  const size_t total = collect();
  if (total == 0 && InFlight() > 0) {
    // Wait up to the delay for a completion to collect, announced as a
    // waiter (Signal wakes only those): the first completion ends the wait,
    // not the delay, which grows to seconds after a few retries.
    // (Not AnnounceWaiter: requests on the done list hold no slot.) Until
    // there is room: an event to collect (this thread holds the gate), or a
    // slot given back without one (a cancel, a completion callback; both
    // signal after giving it back). A wake-up for anything else (a no-op
    // completing) waits on.
    const Clock::time_point deadline = Clock::now() + delay;
    for (;;) {
      const uint32_t seq = event_seq_.load(std::memory_order_seq_cst);
      done_.AddWaiter();
      const bool room = AioRingPending(ring_) != 0 ||
                        reqs_available_.load(std::memory_order_seq_cst) > 0 ||
                        shutdown_.load(std::memory_order_seq_cst);
      const auto left = deadline - Clock::now();
      if (!room && left.count() > 0) {
        (void)sys::FutexWait(reinterpret_cast<const uint32_t*>(&event_seq_),
                             seq, left);
      }
      done_.RetireWaiter();
      if (room || left.count() <= 0) break;
    }
    (void)collect();
    gate_.Release();
    return true;  // room, or the delay spent waiting for it
  }
  gate_.Release();
  return total != 0;
}

// ---------------------------------------------------------------- Cancel etc.

Status ThreadsEngine::Cancel(Request* req) {
  if (req == nullptr ||
      req->engine_state.load(std::memory_order_relaxed) != kInFlight) {
    return Status::Error(
        Errc::kInvalidArgument,
        "threads: Cancel: " +
            (req == nullptr ? std::string("null request")
                            : DescribeAsked(*req) + " is not in flight"));
  }
  UserGuard guard(&users_);
  bool removed = false;
  bool started = false;
  {
    std::lock_guard<AdaptiveMutex> lock(mu_);
    removed = RemoveQueued(req);
    if (!removed) started = req->iocb.aio_key == kStarted;
    // Shutdown may be waiting for the queue to drain, and this was its last
    // request: no worker will finish one to tell it.
    if (removed && shutdown_.load(std::memory_order_relaxed) && queued_ == 0 &&
        running_ == 0) {
      drain_cv_.notify_all();
    }
  }
  if (removed) {
    // It never started: its ring slot goes back, and it completes cancelled.
    ReturnSlots(1);
    finished_.fetch_add(1, std::memory_order_release);
    CompleteLocally(req, -ECANCELED, Origin::kEngine);
    return {};
  }
  return Status::Error(
      Errc::kNotCancellable,
      "threads: Cancel(" + DescribeAsked(*req) + "): " +
          (started ? "a worker has started it; it will complete normally"
                   : "it already completed"));
}

Result<int> ThreadsEngine::NotifyFd() {
  if (notify_fd_ < 0) {
    return Status::Error(Errc::kUnsupported,
                         "threads: NotifyFd: the engine was created with "
                         "notify_fd = false");
  }
  return notify_fd_;
}

Status ThreadsEngine::Shutdown(std::chrono::nanoseconds timeout) {
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;
  shutdown_.store(true, std::memory_order_seq_cst);
  while (users_.load(std::memory_order_acquire) != 0) {
    if (!forever && Clock::now() >= deadline) {
      return Status::Error(
          Errc::kTimedOut,
          "threads: Shutdown: a Submit or Cancel call was "
          "still running at the deadline; call Shutdown again");
    }
    std::this_thread::yield();
  }
  Signal();  // a reaper asleep with nothing in flight re-checks and leaves
  ReaperLock gate(&gate_, timeout, deadline);
  if (!gate.owns_lock()) {
    return Status::Error(Errc::kTimedOut,
                         "threads: Shutdown: a reaper held the ring past the "
                         "deadline; call Shutdown again");
  }
  if (dead_) return {};
  std::unique_lock<AdaptiveMutex> lock(mu_);
  // Let the workers finish the queue (growing the pool if the queue is
  // longer than the workers), until the deadline.
  GrowPoolLocked();
  work_cv_.notify_all();
  auto drained = [&] { return queued_ == 0 && running_ == 0; };
  if (forever) {
    drain_cv_.wait(lock, drained);
  } else if (!drain_cv_.wait_until(lock, deadline, drained)) {
    // Past the deadline: what has not started never will; what runs, the
    // caller must wait for (its buffers are in use).
    std::vector<Request*> cancelled;
    while (Request* r = Dequeue()) cancelled.push_back(r);
    for (auto& [fd, c] : chains_) {
      for (Request* r = c.head; r != nullptr;) {
        Request* next = r->engine_next;
        r->engine_next = nullptr;
        cancelled.push_back(r);
        r = next;
      }
      c.head = c.tail = nullptr;
      c.active = false;
    }
    queued_ = 0;
    const size_t still_running = running_;
    lock.unlock();
    for (Request* r : cancelled) {
      ReturnSlots(1);
      finished_.fetch_add(1, std::memory_order_release);
      CompleteLocally(r, -ECANCELED, Origin::kEngine);
    }
    if (still_running != 0) {
      return Status::Error(
          Errc::kTimedOut,
          "threads: Shutdown: " + std::to_string(still_running) +
              " requests still running at the deadline (" +
              std::to_string(cancelled.size()) +
              " not started were cancelled); call Shutdown "
              "again (the destructor waits)");
    }
    lock.lock();
  }
  stopping_ = true;
  work_cv_.notify_all();
  drain_cv_.wait(lock, [&] { return live_workers_ == 0; });
  lock.unlock();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  dead_ = true;
  return {};
}

}  // namespace

Result<std::unique_ptr<Engine>> MakeThreadsEngine(
    const EngineOptions& options) {
  auto engine = std::make_unique<ThreadsEngine>(options);
  if (Status s = engine->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace aiokit::internal
