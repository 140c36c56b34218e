// The threads engine: a user-space AIO built like the kernel's own (fs/aio.c),
// for buffered I/O, any file descriptor, and machines where both kernel
// interfaces are refused. A backend of EngineCore (src/engine/core/), which
// keeps the engine contract; this file is the context and its worker pool:
//
//   Context   like the kernel's kioctx: the queue of requests not started
//             (threads_queue.h: priority buckets, per-fd chains), a maximum
//             number of requests (the ring's slots), and a completion ring in
//             the kernel's aio_ring layout (src/engine/aio_ring.h), so that
//             the same user-space code reaps it as reaps linux-aio's.
//   Offer     like io_submit: takes a ring slot per request (reqs_available;
//             none left is EAGAIN, which the core retries after making room)
//             and queues the request, like a kiocb. Nothing is allocated per
//             request.
//   Workers   a pool between threads_min and threads_max, grown when queued
//             requests outnumber idle workers, shrunk after threads_idle
//             without work (as glibc's AIO does). A worker takes the
//             highest-priority request, does preadv2 / pwritev2 / fsync /
//             fdatasync, and completes it like aio_complete: the io_event at
//             the ring's tail, the tail published with release ordering, then
//             the engine's eventfd, the request's own eventfd, and any waiter.
//             With completion callbacks it calls the callback instead.
//   Drain     like read_events: the ring's head, in user space.
//   Help      a reaper that would sleep runs queued reads or writes itself,
//             with RWF_NOWAIT (threads_io.h), a few at once when the workers
//             are busy.
//   Cancel    a request not yet started is taken off the queue; a started
//             one is reported as such.
//
// Liveness: a request that can run without blocking never waits only for
// workers that are all blocked. Whenever requests are queued (or given back)
// and fewer workers are idle than requests wait, and whenever a worker is
// about to block with requests waiting, a reaper asleep in Reap is woken, and
// it runs them; a reaper about to sleep looks for such requests after it has
// announced itself (the other half of that handshake).
//
// Unlike glibc's AIO, requests on the same fd run in parallel unless
// threads_ordered_per_fd asks for submission order on each fd.
//
// The kernel's AIO for O_DIRECT (threads_kernel_aio). As in the kernel's own
// AIO, O_DIRECT reads and writes need no thread: where the kernel allows, they
// go to a kernel AIO context beside the ring, set up at the first of them
// (io_submit with RWF_NOWAIT, so that Submit never blocks), and one the kernel
// would block on or refuses goes to a worker instead. Drain reads both rings;
// once the context exists a reaper sleeps in io_getevents on it, and Wake
// submits a wake-up request there (a zero-length pipe read, completed at
// once), as linux-aio's engine does.

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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
#include <vector>

#include "aiokit/engine.h"
#include "engine/aio_ring.h"
#include "engine/common.h"
#include "engine/core/backend.h"
#include "engine/core/blocking_io.h"
#include "engine/core/engine_core.h"
#include "engine/engines.h"
#include "engine/threads/threads_io.h"
#include "engine/threads/threads_queue.h"
#include "engine/valgrind.h"
#include "sys/syscalls.h"
#include "util/strings.h"

namespace aiokit::internal {
namespace {

// Requests a worker takes off the queue at once, at most (RunBatch).
constexpr size_t kWorkerBatch = 8;
// A try without blocking that took longer than this may have waited for a
// device (an O_DIRECT fd ignores RWF_NOWAIT's "no waiting for the device").
constexpr std::chrono::microseconds kSlowTry{50};
// Requests block often (a device behind them) when more than kOftenBlocks of
// a window of 1 << kBlockWindowShift completions did; fewer are exceptions
// (page-cache reads that met an evicted or locked page, a few at a time), and
// the workers go on as they do when nothing blocks.
constexpr int kBlockWindowShift = 10;  // windows of 1024 completions
constexpr int64_t kOftenBlocks = 16;
// Writes to an fd whose writes the kernel's AIO said would block go to
// workers, but for one in this many (ThreadsBackend::ForKernel).
constexpr uint32_t kProbeEvery = 64;

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

class ThreadsBackend final : public BackendBase {
 public:
  static constexpr EngineKind kKind = EngineKind::kThreads;
  static constexpr bool kDeliversOnOwnThreads = true;

  explicit ThreadsBackend(CoreState* core)
      : core_(core), queue_(core->options().threads_ordered_per_fd) {}
  ~ThreadsBackend() {
    std::free(ring_);
    for (int& fd : kwake_pipe_) {
      if (fd >= 0) (void)sys::Close(fd);
    }
  }
  ThreadsBackend(const ThreadsBackend&) = delete;
  ThreadsBackend& operator=(const ThreadsBackend&) = delete;

  Status Init(Capabilities* caps);
  OfferResult Offer(Request* const* reqs, size_t n);
  size_t Drain(Request** out, size_t max);
  [[nodiscard]] bool Ready() const noexcept {
    if (ring_ != nullptr && AioRingPending(ring_) != 0) return true;
    const AioRing* k = kring_.load(std::memory_order_acquire);
    return k != nullptr && AioRingPending(k) != 0;
  }
  [[nodiscard]] bool Busy() const noexcept { return InFlight() > 0; }
  [[nodiscard]] int64_t InFlightCount() const noexcept { return InFlight(); }
  void BeforeReap() noexcept { NoteReaperCpu(); }
  bool Help() { return HelpOnce(kWorkerBatch); }
  uint32_t PrepareSleep() noexcept {
    return event_seq_.load(std::memory_order_seq_cst);
  }
  bool ReadyAfterAnnounce();
  [[nodiscard]] bool HasRoom() const noexcept {
    return reqs_available_.load(std::memory_order_seq_cst) > 0;
  }
  Result<size_t> Sleep(uint32_t token, Request** out, size_t max,
                       std::chrono::nanoseconds timeout);
  void Wake() noexcept;
  CancelOutcome Cancel(Request* req);
  void BeginShutdown();
  size_t TakeNotStarted(Request** out, size_t max);
  void Destroy();
  bool RunQueuedOnce() {
    NoteReaperCpu();
    return HelpOnce(1);
  }
  void FillStats(EngineStats* s) const noexcept {
    s->workers = live_workers_stat_.load(std::memory_order_relaxed);
    s->kernel_aio = kernel_aio_.load(std::memory_order_relaxed);
    s->kernel_aio_fallbacks = kernel_fallbacks_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] const char* AgainText() const noexcept {
    return "no completion slot";
  }

 private:
  // Takes up to `want` ring slots; returns how many it got.
  unsigned TakeSlots(unsigned want) noexcept;
  void ReturnSlots(unsigned n) noexcept;
  // Queues reqs[0, n) (slots taken); `counted`: already in added_.
  void QueueRequests(Request* const* reqs, size_t n, bool counted = false);
  // Whether O_DIRECT may go to the kernel's AIO (threads_kernel_aio): not
  // in order per fd, nor with callbacks but no completion thread; where the
  // kernel is too old, caps->fallbacks says so.
  void AllowKernelAio(Capabilities* caps);
  // The kernel's AIO context, set up at the first request for it (an engine
  // that never sees O_DIRECT costs no kernel AIO events, and its Destroy no
  // io_destroy, which waits for an RCU grace period). False when it is not
  // allowed or could not be set up (then never again).
  bool KernelLane();
  // io_setup, the ring's layout checked, the wake-up tried. REQUIRES
  // ksetup_mu_.
  bool SetUpKernelAio();
  // Whether `req` goes to the kernel's AIO rather than to a worker.
  [[nodiscard]] bool ForKernel(const Request& req) noexcept;
  // Offers reqs[0, n) (slots taken): those ForKernel to the kernel's AIO,
  // the rest, and those the kernel did not take, to the queue.
  void OfferWithKernel(Request* const* reqs, size_t n);
  // io_submit of reqs[0, n) (ForKernel, not yet counted); appends those the
  // kernel did not take (counted) to back[*n_back].
  void SubmitToKernel(Request** reqs, size_t n, Request** back, size_t* n_back);
  // A kernel event: its request, completed (rval set), or nullptr for the
  // wake-up event and for a request given to a worker (it would block).
  Request* OnKernelEvent(const io_event& ev);
  // Submits the wake-up request unless it is in the kernel already.
  void KernelWake() noexcept;
  // Starts workers while queued requests outnumber idle ones. REQUIRES mu_.
  void GrowPoolLocked();
  // Requests wait that no idle worker will take: wake a reaper asleep in
  // Reap, which runs what can run without blocking. REQUIRES mu_ not held.
  void WakeHelperIfNeeded(size_t queued, size_t idle) noexcept {
    if (queued > idle) Signal();
  }
  void WorkerMain(size_t slot);
  // An idle worker watches the queue for up to 20 us before it sleeps.
  // Returns true when work arrived. REQUIRES mu_ not held.
  bool SpinForWork();
  // Runs `first` (taken off the queue) and, when more wait and none of them
  // blocks, up to kWorkerBatch - 1 more; completes them together. Called and
  // returns with `lock` (on mu_) held.
  void RunBatch(Request* first, std::unique_lock<AdaptiveMutex>* lock,
                int* thread_prio, unsigned* executed);
  // How a try without blocking went: done (its result), would block
  // (nothing done), or short (part done: the bytes moved; FinishShort, which
  // may block, does the rest).
  enum class Tried { kDone, kWouldBlock, kShort };
  // A plain read or write tried with RWF_NOWAIT. `executed` as for Execute;
  // *stream for FinishShort.
  long RunWithoutBlocking(Request* req, unsigned* executed, Tried* tried,
                          bool* stream);
  // A try that took long: when `fd` is O_DIRECT, its requests wait for the
  // device (RWF_NOWAIT does not stop that on a raw fd): NoteBlocking.
  void NoteBlockingIfDirect(int fd);
  // Does the I/O of `req`; its result. `thread_prio` is the worker's I/O
  // priority, `executed` its count of requests (both kept by the worker).
  int64_t Execute(Request* req, int* thread_prio, unsigned* executed);
  // A worker's I/O may block: remember it, let the pool grow, and wake a
  // reaper for what waits.
  void NoteBlocking();
  // Records that a request blocked or would have (see kOftenBlocks).
  void MarkBlocked() noexcept;
  // A request blocked in the last 100 ms.
  [[nodiscard]] bool BlockedRecently() const noexcept {
    return Within100ms(last_block_ns_.load(std::memory_order_relaxed));
  }
  // Requests blocked often in the last 100 ms: an idle worker does not spin
  // for the next one, nor take several at once.
  [[nodiscard]] bool BlocksOften() const noexcept {
    return Within100ms(often_block_ns_.load(std::memory_order_relaxed));
  }
  static bool Within100ms(int64_t ns) noexcept;
  // aio_complete: the event at the ring's tail, then the signals; or, with
  // completion callbacks, the callback. n of them at once: one lock of the
  // ring, one tail, one round of signals.
  void Complete(Request* const* reqs, const int64_t* res, size_t n);
  void Complete(Request* req, int64_t res) { Complete(&req, &res, 1); }
  // Wakes a reaper sleeping on event_seq_ when one has announced itself
  // (after every completion).
  void Signal() noexcept;
  // A reaper that would wait runs a queued read or write itself, without
  // blocking (RWF_NOWAIT): the waiting thread's CPU does the work a worker
  // would; up to `most` requests at once (fewer when workers are free to
  // take them). True when it completed one.
  bool HelpOnce(size_t most);
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

  // Members are grouped by the thread that writes them for each request, each
  // group on cache lines of its own: a line written by both the submitting
  // thread and a worker moves between their CPUs at every write, a few
  // hundred nanoseconds each when the host puts the two CPUs apart
  // (bench/cpu_pingpong), and a locked add waits for it.

  // ---- Set up by Init, read by all (written rarely).
  CoreState* core_;
  unsigned max_workers_ = 0;
  // Workers while nothing blocks: the CPUs less one (the reaper helps), at
  // most threads_max.
  unsigned cpu_workers_ = 0;
  // The completion ring, in the kernel's layout: header, then nr io_events.
  AioRing* ring_ = nullptr;
  unsigned nr_ = 0;
  // The CPU the reaping thread last ran on (NoteReaperCpu writes it when it
  // changes; spinning workers read it).
  std::atomic<int> reaper_cpu_{-1};
  std::atomic<uint64_t> live_workers_stat_{0};
  // The kernel's AIO context for O_DIRECT (threads_kernel_aio), set up by
  // KernelLane under ksetup_mu_, then published by kring_ (null until then,
  // and when it is not used); klane_off_: not allowed, or failed. Its
  // wake-up request is a zero-length read of the pipe, in the kernel at most
  // once (kwake_in_flight_).
  std::mutex ksetup_mu_;
  std::atomic<AioRing*> kring_{nullptr};
  std::atomic<bool> klane_off_{true};
  AioRing* kring_setup_ = nullptr;  // under ksetup_mu_
  aio_context_t kctx_ = 0;
  std::vector<io_event> kevents_;  // Sleep's io_getevents buffer (the reaper's)
  int kwake_pipe_[2] = {-1, -1};
  struct iocb kwake_iocb_ = {};
  char kwake_byte_ = 0;
  bool on_valgrind_ = false;
  std::atomic<bool> kwake_in_flight_{false};
  // A wake-up request failed to go in: the reaper sleeps in slices of 10 ms.
  std::atomic<bool> kwake_failed_{false};
  // The last fd whose RWF_NOWAIT request the kernel refused (EOPNOTSUPP: its
  // file system cannot say "would block"): its requests go to workers (a
  // hint, relaxed).
  std::atomic<int> knowait_refused_fd_{-1};
  // The last fd whose write the kernel's AIO gave back as one that would
  // block (an O_DIRECT write into preallocated, unwritten blocks needs the
  // journal): its writes go to workers, but for one in kProbeEvery, which
  // finds out whether they still would (relaxed hints).
  std::atomic<int> kblocking_write_fd_{-1};
  std::atomic<uint32_t> kprobe_count_{0};
  // Requests the kernel's AIO completed, and those it gave to workers.
  std::atomic<uint64_t> kernel_aio_{0};
  std::atomic<uint64_t> kernel_fallbacks_{0};

  // ---- Written by workers as they complete requests.
  alignas(kCacheLine) AdaptiveMutex ring_mu_;  // producers write at the tail
  // Requests no longer in flight (in flight is added_ - finished_).
  std::atomic<int64_t> finished_{0};
  // When a request last blocked or would have (steady clock ns), and when
  // one did that made more than kOftenBlocks in its window; the window (of
  // finished_) of the last block, and the blocks counted in it. Relaxed:
  // hints for the pool's size and the workers' spinning, never for liveness.
  std::atomic<int64_t> last_block_ns_{0};
  std::atomic<int64_t> often_block_ns_{0};
  std::atomic<int64_t> block_window_{-1};
  std::atomic<int64_t> window_blocks_{0};
  // Bumped after a completion when a reaper waits; it sleeps on it (futex).
  std::atomic<uint32_t> event_seq_{0};

  // ---- The queue and the worker pool: shared, under mu_.
  alignas(kCacheLine) AdaptiveMutex mu_;
  AdaptiveCondVar work_cv_;   // workers wait for work here
  AdaptiveCondVar drain_cv_;  // Destroy waits for the pool here
  RequestQueue queue_;
  std::vector<std::thread> workers_;  // slots, max_workers_ of them
  std::vector<bool> worker_alive_;    // per slot
  size_t live_workers_ = 0;
  size_t idle_workers_ = 0;
  bool stopping_ = false;  // workers exit once the queue is empty

  // ---- Written by the submitting and reaping threads.
  // Requests queued to workers (in flight is added_ - finished_).
  alignas(kCacheLine) std::atomic<int64_t> added_{0};
  // Slots neither holding an unreaped event nor promised to a request in
  // flight (the kernel's reqs_available): nr - 1 at first.
  std::atomic<int64_t> reqs_available_{0};
};

// ---------------------------------------------------------------- Init

Status ThreadsBackend::Init(Capabilities* caps) {
  const EngineOptions& options = core_->options();
  const unsigned depth = options.queue_depth;
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
  max_workers_ =
      options.threads_max != 0 ? options.threads_max : std::max(16U, 4 * cpus);
  if (options.threads_min > max_workers_) {
    return Status::Error(
        Errc::kInvalidArgument,
        "threads: threads_min " + std::to_string(options.threads_min) +
            " is above threads_max " + std::to_string(max_workers_));
  }
  cpu_workers_ = std::clamp(cpus - 1, 1U, max_workers_);
  cpu_workers_ = std::max(cpu_workers_, options.threads_min);
  workers_.resize(max_workers_);
  worker_alive_.assign(max_workers_, false);
  {
    std::lock_guard<AdaptiveMutex> lock(mu_);
    for (unsigned i = 0; i < options.threads_min; ++i) {
      worker_alive_[i] = true;
      ++live_workers_;
      ++idle_workers_;  // as GrowPoolLocked counts them: idle until started
      workers_[i] = std::thread(&ThreadsBackend::WorkerMain, this, i);
    }
    live_workers_stat_.store(live_workers_, std::memory_order_relaxed);
  }

  caps->user_space_reap = true;
  caps->cancel_regular_files = true;  // until a worker starts the request
  caps->async_buffered_io = true;
  caps->fsync = true;
  caps->rw_flags = true;
  caps->ioprio = true;
  caps->ring_entries = nr_;
  if (options.threads_kernel_aio) AllowKernelAio(caps);
  return {};
}

void ThreadsBackend::AllowKernelAio(Capabilities* caps) {
  const EngineOptions& o = core_->options();
  // In order per fd: workers keep the order; callbacks without a completion
  // thread: nobody would reap the kernel's ring.
  if (o.threads_ordered_per_fd ||
      (o.on_complete != nullptr && !o.completion_thread)) {
    return;
  }
  // RWF_NOWAIT in an iocb: 4.14.
  if (!sys::RunningKernel().AtLeast(4, 14)) {
    caps->fallbacks.emplace_back(
        "threads: O_DIRECT requests on workers: kernel AIO takes RWF_NOWAIT "
        "from 4.14 on");
    return;
  }
  klane_off_.store(false, std::memory_order_relaxed);
}

bool ThreadsBackend::KernelLane() {
  if (kring_.load(std::memory_order_acquire) != nullptr) return true;
  if (klane_off_.load(std::memory_order_relaxed)) return false;
  std::lock_guard<std::mutex> lock(ksetup_mu_);
  if (kring_.load(std::memory_order_relaxed) != nullptr) return true;
  if (klane_off_.load(std::memory_order_relaxed)) return false;
  if (!SetUpKernelAio()) {
    klane_off_.store(true, std::memory_order_relaxed);
    return false;
  }
  // Release: the context, the wake-up and the buffer are set up before
  // anyone who sees the ring uses them (pairs with every acquire load).
  kring_.store(kring_setup_, std::memory_order_release);
  // A reaper asleep on the futex looked before the ring existed: wake it,
  // so that it sleeps in io_getevents from now on, where the kernel's
  // completions end the sleep. (One that looks after this sees the ring:
  // the sequence it reads was moved after the ring was published.)
  event_seq_.fetch_add(1, std::memory_order_seq_cst);
  (void)sys::FutexWake(reinterpret_cast<const uint32_t*>(&event_seq_), INT_MAX);
  return true;
}

bool ThreadsBackend::SetUpKernelAio() {
  // Room for every request in flight (at most nr_ - 1) and the wake-up.
  aio_context_t ctx = 0;  // io_setup requires *ctx == 0
  if (sys::IoSetup(nr_, &ctx) < 0) return false;
  auto* ring = reinterpret_cast<AioRing*>(ctx);
  // As linux-aio's Init: the kernel may map the ring where another engine's
  // was (pairs with the TsanRelease before every io_destroy).
  TsanAcquire(&kernel_ring_mapping_sync);
  VgAioRingMapped(ring);
  bool ok = AioRingUsable(ring) &&
            sys::Pipe2(kwake_pipe_, O_CLOEXEC | O_NONBLOCK) == 0;
  if (ok) {
    // The wake-up request: a zero-length read from a pipe completes at once.
    kwake_iocb_.aio_lio_opcode = IOCB_CMD_PREAD;
    kwake_iocb_.aio_fildes = static_cast<uint32_t>(kwake_pipe_[0]);
    kwake_iocb_.aio_buf = reinterpret_cast<uint64_t>(&kwake_byte_);
    kwake_iocb_.aio_nbytes = 0;
    struct iocb* p = &kwake_iocb_;
    ok = false;
    if (sys::real::IoSubmit(ctx, 1, &p) == 1) {
      io_event ev;
      timespec ts{1, 0};
      ok = sys::real::IoGetevents(ctx, 1, 1, &ev, &ts) == 1 &&
           ev.obj == reinterpret_cast<uint64_t>(&kwake_iocb_);
    }
  }
  if (!ok) {
    // (Layout not known, no pipe, or no wake-up: workers for everything.)
    VgAioRingUnmapping(ring);
    TsanRelease(&kernel_ring_mapping_sync);
    (void)sys::IoDestroy(ctx);
    return false;
  }
  kctx_ = ctx;
  kevents_.resize(ring->nr);
  on_valgrind_ = RunningOnValgrind();
  kring_setup_ = ring;
  return true;
}

// ---------------------------------------------------------------- Submit

unsigned ThreadsBackend::TakeSlots(unsigned want) noexcept {
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

void ThreadsBackend::ReturnSlots(unsigned n) noexcept {
  // Release: see TakeSlots.
  reqs_available_.fetch_add(n, std::memory_order_release);
}

void ThreadsBackend::GrowPoolLocked() {
  // While requests complete without blocking (the page cache), more workers
  // than CPUs (less the reaping thread, which helps) only take turns on them;
  // once one blocks, up to threads_max.
  const size_t cap = BlockedRecently() ? max_workers_ : cpu_workers_;
  while (idle_workers_ < queue_.size() && live_workers_ < cap) {
    size_t slot = 0;
    while (slot < max_workers_ && worker_alive_[slot]) ++slot;
    if (slot == max_workers_) break;
    // A worker that ended after its idle time left its thread to join.
    if (workers_[slot].joinable()) workers_[slot].join();
    worker_alive_[slot] = true;
    ++live_workers_;
    ++idle_workers_;  // it looks for work as soon as it starts
    workers_[slot] = std::thread(&ThreadsBackend::WorkerMain, this, slot);
  }
  // Called for every Submit: written only when it changes (spinning workers
  // read its line).
  if (live_workers_stat_.load(std::memory_order_relaxed) != live_workers_) {
    live_workers_stat_.store(live_workers_, std::memory_order_relaxed);
  }
}

void ThreadsBackend::QueueRequests(Request* const* reqs, size_t n,
                                   bool counted) {
  for (size_t i = 0; i < n; ++i) TsanRelease(reqs[i]);
  if (!counted) {
    added_.fetch_add(static_cast<int64_t>(n), std::memory_order_release);
  }
  size_t queued = 0;
  size_t idle = 0;
  size_t wake = 0;
  {
    std::lock_guard<AdaptiveMutex> lock(mu_);
    for (size_t i = 0; i < n; ++i) queue_.Enqueue(reqs[i]);
    // As many idle workers as there is new work (no more); those just
    // started look for work by themselves.
    wake = std::min(n, idle_workers_);
    GrowPoolLocked();
    queued = queue_.size();
    idle = idle_workers_;
  }
  // After the unlock, so that a woken worker finds the lock free.
  for (size_t i = 0; i < wake; ++i) work_cv_.notify_one();
  WakeHelperIfNeeded(queued, idle);
}

OfferResult ThreadsBackend::Offer(Request* const* reqs, size_t n) {
  auto want = static_cast<unsigned>(std::min<size_t>(n, 1U << 20));
  // Fault injection stands where io_submit would fail or fall short.
  int hooked = 0;
  if (const sys::FaultHooks* h = sys::Hooks();
      h != nullptr && h->user_submit != nullptr) [[unlikely]] {
    hooked = h->user_submit(&want);
  }
  core_->counters().submit_calls.fetch_add(1, std::memory_order_relaxed);
  OfferResult result;
  const unsigned got = hooked < 0 ? 0 : TakeSlots(want);
  if (got == 0) {
    // No slot (every one holds an unreaped event or is promised): EAGAIN.
    result.kind = OfferResult::kAgain;
    return result;
  }
  if (!klane_off_.load(std::memory_order_relaxed)) {
    OfferWithKernel(reqs, got);
  } else {
    QueueRequests(reqs, got);
  }
  result.taken = got;
  return result;
}

bool ThreadsBackend::ForKernel(const Request& req) noexcept {
  // O_DIRECT (known by the alignment a File gave it), a plain transfer, no
  // I/O priority (a worker applies that as the kernel checks it), and one
  // eventfd at most: the kernel signals one per iocb, and NotifyFd's and the
  // request's own must both be.
  const bool write = req.op == Op::kWrite || req.op == Op::kWritev;
  if (!(write || req.op == Op::kRead || req.op == Op::kReadv) ||
      !req.align.known() || req.has_ioprio ||
      (req.resfd >= 0 && core_->notify_fd() >= 0) ||
      req.fd == knowait_refused_fd_.load(std::memory_order_relaxed)) {
    return false;
  }
  return !write ||
         req.fd != kblocking_write_fd_.load(std::memory_order_relaxed) ||
         kprobe_count_.fetch_add(1, std::memory_order_relaxed) % kProbeEvery ==
             0;
}

void ThreadsBackend::OfferWithKernel(Request* const* reqs, size_t n) {
  constexpr size_t kChunk = 64;
  for (size_t first = 0; first < n; first += kChunk) {
    const size_t m = std::min(kChunk, n - first);
    Request* kernel[kChunk];
    Request* workers[kChunk];
    Request* back[kChunk];
    size_t n_kernel = 0;
    size_t n_workers = 0;
    size_t n_back = 0;
    for (size_t i = 0; i < m; ++i) {
      Request* r = reqs[first + i];
      if (ForKernel(*r) && KernelLane()) {
        kernel[n_kernel++] = r;
      } else {
        workers[n_workers++] = r;
      }
    }
    if (n_kernel != 0) SubmitToKernel(kernel, n_kernel, back, &n_back);
    if (n_workers != 0) QueueRequests(workers, n_workers);
    if (n_back != 0) {
      kernel_fallbacks_.fetch_add(n_back, std::memory_order_relaxed);
      QueueRequests(back, n_back, /*counted=*/true);
    }
  }
}

void ThreadsBackend::SubmitToKernel(Request** reqs, size_t n, Request** back,
                                    size_t* n_back) {
  const int notify = core_->notify_fd();
  for (size_t i = 0; i < n; ++i) {
    Request* r = reqs[i];
    r->FillIocb();
    // Never waits in io_submit: what would is a worker's.
    r->iocb.aio_rw_flags |= RWF_NOWAIT;
    if (r->resfd < 0 && notify >= 0) {
      r->iocb.aio_flags |= IOCB_FLAG_RESFD;
      r->iocb.aio_resfd = static_cast<uint32_t>(notify);
    }
    r->engine_mark = kInKernel;
    TsanRelease(r);
  }
  // Counted before the kernel has them: a completion reaped at once must not
  // take the count in flight below zero (InFlight).
  added_.fetch_add(static_cast<int64_t>(n), std::memory_order_release);
  // The iocb is each Request's first member (linux-aio's static_asserts).
  size_t done = 0;
  while (done < n) {
    auto** iocbs = reinterpret_cast<struct iocb**>(reqs + done);
    const long r = sys::IoSubmit(kctx_, static_cast<long>(n - done), iocbs);
    core_->counters().submit_calls.fetch_add(1, std::memory_order_relaxed);
    if (r > 0) {
      done += static_cast<size_t>(r);
      continue;
    }
    if (r == 0 || r == -EAGAIN || r == -EINTR) {
      // No room in the kernel (or no answer): the rest go to workers.
      while (done < n) back[(*n_back)++] = reqs[done++];
      break;
    }
    // The kernel refused reqs[done]: a worker runs it, and says what is wrong
    // with it if anything is (EBADF, EINVAL, ...).
    if (r == -EOPNOTSUPP) {
      knowait_refused_fd_.store(reqs[done]->fd, std::memory_order_relaxed);
    }
    back[(*n_back)++] = reqs[done++];
  }
}

// ---------------------------------------------------------------- Workers

long ThreadsBackend::RunWithoutBlocking(Request* req, unsigned* executed,
                                        Tried* tried, bool* stream) {
  // Timed one time in 16 (two clock reads per request were 4% of a worker's
  // time on cached reads): a device behind an O_DIRECT fd shows on every
  // request, so a sample finds it soon enough.
  const bool timed = (++*executed & 15U) == 0;
  const Clock::time_point t0 = timed ? Clock::now() : Clock::time_point{};
  *stream = false;
  const long r = ReadWrite(*req, RWF_NOWAIT, stream);
  if (IsShort(*req, r)) {
    *tried = Tried::kShort;
    return r;
  }
  if (WouldBlock(r)) {
    *tried = Tried::kWouldBlock;
    return 0;
  }
  *tried = Tried::kDone;
  // Slow: a raw O_DIRECT fd (RWF_NOWAIT only avoids lock waits there), or
  // just a preempted thread; fcntl tells which.
  if (timed && Clock::now() - t0 > kSlowTry) NoteBlockingIfDirect(req->fd);
  return r;
}

void ThreadsBackend::NoteBlockingIfDirect(int fd) {
  const int fl = sys::Fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_DIRECT) != 0) NoteBlocking();
}

int64_t ThreadsBackend::Execute(Request* req, int* thread_prio,
                                unsigned* executed) {
  // The worker takes the request's I/O priority (the kernel checks it, as it
  // does for an AIO iocb: an unprivileged realtime class fails with EPERM).
  const int want_prio = req->has_ioprio ? req->ioprio : 0;
  if (want_prio != *thread_prio) {
    if (int r = sys::IoprioSetThread(want_prio); r < 0) return r;
    *thread_prio = want_prio;
  }
  if (req->op == Op::kRead || req->op == Op::kReadv || req->op == Op::kWrite ||
      req->op == Op::kWritev) {
    // First without blocking: when that works (the page cache), the pool
    // needs no more threads than CPUs; when it would block, more threads
    // keep the device busy while this one waits. O_DIRECT transfers (known
    // by their alignment) always wait for the device, and so does one that
    // took long although it did not say EAGAIN (O_DIRECT on a raw fd, where
    // RWF_NOWAIT only avoids lock waits).
    if (req->align.known()) {
      NoteBlocking();
    } else if (TriesWithoutBlocking(*req)) {
      Tried tried = Tried::kDone;
      bool stream = false;
      const long r = RunWithoutBlocking(req, executed, &tried, &stream);
      if (tried == Tried::kDone) return r;
      NoteBlocking();
      if (tried == Tried::kShort) return FinishShort(*req, r, stream);
    }
  } else if (req->op != Op::kNoop) {
    NoteBlocking();  // fsync, fdatasync
  }
  return RunBlocking(*req);
}

void ThreadsBackend::RunBatch(Request* first,
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
  if (*thread_prio == 0 && RequestQueue::RunsWithoutBlocking(*first) &&
      !BlocksOften()) {
    const size_t share = std::min<size_t>(
        kWorkerBatch, 1 + queue_.size() / (live_workers_ - idle_workers_ + 1));
    while (n < share && queue_.HeadRunsWithoutBlocking()) {
      batch[n++] = queue_.Dequeue();
    }
  }
  for (size_t i = 0; i < n; ++i) batch[i]->engine_mark = kStarted;
  lock->unlock();
  for (size_t i = 0; i < n; ++i) TsanAcquire(batch[i]);
  if (n == 1) {
    const int64_t r = Execute(first, thread_prio, executed);
    Complete(first, r);
    lock->lock();
    return;
  }
  // batch[0, done) ran, results in res; back[0, n_back) go to the queue again.
  size_t done = 0;
  Request* back[kWorkerBatch];
  bool back_would_block[kWorkerBatch];
  size_t n_back = 0;
  // Hands back what goes back and completes what ran, before this worker may
  // block (a short transfer) and at the end: nothing waits behind a
  // blocking one. Once completed, a request is the caller's.
  auto flush = [&] {
    if (n_back != 0) {
      size_t queued = 0;
      size_t idle = 0;
      lock->lock();
      for (size_t i = n_back; i-- > 0;) {
        queue_.RequeueFront(back[i], back_would_block[i]);
      }
      GrowPoolLocked();
      const size_t wake = std::min(n_back, idle_workers_);
      queued = queue_.size();
      idle = idle_workers_;
      lock->unlock();
      for (size_t i = 0; i < wake; ++i) work_cv_.notify_one();
      WakeHelperIfNeeded(queued, idle);
      n_back = 0;
    }
    if (done != 0) {
      Complete(batch, res, done);
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
      MarkBlocked();
      back_would_block[n_back] = true;
      back[n_back++] = r;
    } else if (tried == Tried::kShort) {
      // The rest may block: the others first.
      flush();
      NoteBlocking();
      Complete(r, FinishShort(*r, v, stream));
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
}

bool ThreadsBackend::SpinForWork() {
  const Clock::time_point spin_until =
      Clock::now() + std::chrono::microseconds(20);
  bool work = false;
  do {
    for (int i = 0; i < 64 && !work; ++i) {
      // Shutting down: no spin (nothing new comes); the wait that follows
      // ends when Destroy sets stopping_.
      if (core_->shutting_down()) return false;
      work = !queue_.empty_hint();
      if (!work) CpuRelax();
    }
    // Spinning on the CPU the reaper was put on keeps it off that CPU, and
    // the work the worker waits for comes from it. The scheduler tends to
    // keep them together (it wakes a worker next to the thread that woke it):
    // whole runs went at half speed, or worse. Step to another CPU, or at
    // least let the reaper run.
    if (!work) {
      const int cpu = sched_getcpu();
      if (cpu >= 0 && cpu == reaper_cpu_.load(std::memory_order_relaxed) &&
          !StepAside(cpu)) {
        sched_yield();
      }
    }
  } while (!work && Clock::now() < spin_until);
  return work;
}

void ThreadsBackend::WorkerMain(size_t slot) {
  const EngineOptions& options = core_->options();
  int thread_prio = 0;  // IOPRIO_CLASS_NONE: the thread's default
  unsigned executed = 0;
  std::unique_lock<AdaptiveMutex> lock(mu_);
  --idle_workers_;  // counted idle by GrowPoolLocked until it got here
  for (;;) {
    Request* req = queue_.Dequeue();
    if (req == nullptr) {
      if (stopping_) break;
      // Look for work a little before sleeping: under load the next request
      // is a few microseconds away, and a sleep plus a futex wake-up costs
      // more than that on both sides. Not while requests block often: the
      // next one is a device's latency away, and a spin only takes the CPU
      // from the workers whose requests are completing.
      lock.unlock();
      const bool work = !BlocksOften() && SpinForWork();
      lock.lock();
      if (work) continue;
      ++idle_workers_;
      const bool woken = work_cv_.wait_for(lock, options.threads_idle, [&] {
        return !queue_.empty() || stopping_;
      });
      --idle_workers_;
      if (!woken && live_workers_ > options.threads_min) break;
      continue;
    }
    if (!options.threads_ordered_per_fd) {
      RunBatch(req, &lock, &thread_prio, &executed);
      req = nullptr;
    }
    // Run it, then (per-fd order) the requests of its fd that waited for it.
    while (req != nullptr) {
      req->engine_mark = kStarted;
      lock.unlock();
      TsanAcquire(req);
      const int64_t res = Execute(req, &thread_prio, &executed);
      // Read before completing: once completed, the request is the caller's
      // (it may be reaped, prepared again or freed at once).
      const int fd = req->fd;
      Complete(req, res);
      lock.lock();
      req = fd >= 0 ? queue_.NextOfFd(fd) : nullptr;
    }
    // More workers than CPUs while nothing blocks only take turns: one goes.
    if (live_workers_ > cpu_workers_ && live_workers_ > options.threads_min &&
        !BlockedRecently()) {
      break;
    }
  }
  worker_alive_[slot] = false;
  --live_workers_;
  live_workers_stat_.store(live_workers_, std::memory_order_relaxed);
  drain_cv_.notify_all();  // Destroy waits for the pool to empty
  if (thread_prio != 0) (void)sys::IoprioSetThread(0);
}

void ThreadsBackend::MarkBlocked() noexcept {
  const int64_t now = Clock::now().time_since_epoch().count();
  const int64_t window =
      finished_.load(std::memory_order_relaxed) >> kBlockWindowShift;
  // Not one atomic step: two threads that block at once in a new window may
  // both restart its count, and lose one block, which a hint can afford.
  int64_t blocks = 1;
  if (block_window_.load(std::memory_order_relaxed) == window) {
    // Past the mark (every O_DIRECT request passes here): no more counting.
    blocks = window_blocks_.load(std::memory_order_relaxed);
    if (blocks <= kOftenBlocks) {
      blocks = window_blocks_.fetch_add(1, std::memory_order_relaxed) + 1;
    }
  } else {
    block_window_.store(window, std::memory_order_relaxed);
    window_blocks_.store(1, std::memory_order_relaxed);
  }
  last_block_ns_.store(now, std::memory_order_relaxed);
  if (blocks > kOftenBlocks) {
    often_block_ns_.store(now, std::memory_order_relaxed);
  }
}

bool ThreadsBackend::Within100ms(int64_t ns) noexcept {
  return ns != 0 &&
         Clock::now().time_since_epoch().count() - ns <
             std::chrono::nanoseconds(std::chrono::milliseconds(100)).count();
}

void ThreadsBackend::NoteBlocking() {
  MarkBlocked();
  // Nothing waits: no worker to start and no reaper to wake. (A request
  // queued after this look is the submitter's to look after: it grows the
  // pool and wakes the reaper after it has queued.) Most O_DIRECT requests
  // pass here, so they skip the queue's lock.
  if (queue_.empty_hint()) return;
  size_t queued = 0;
  size_t idle = 0;
  {
    std::lock_guard<AdaptiveMutex> lock(mu_);
    GrowPoolLocked();  // others may go on while this one waits
    queued = queue_.size();
    idle = idle_workers_;
  }
  // This worker is about to block: what waits behind it and no idle worker
  // takes may need the reaper.
  WakeHelperIfNeeded(queued, idle);
}

// ---------------------------------------------------------------- Completion

void ThreadsBackend::Complete(Request* const* reqs, const int64_t* res,
                              size_t n) {
  if (core_->callbacks()) {
    for (size_t i = 0; i < n; ++i) {
      // No ring: the slot taken at submission is free at once, and the
      // request no longer in flight here.
      ReturnSlots(1);
      finished_.fetch_add(1, std::memory_order_release);
      core_->Deliver(reqs[i], res[i], Origin::kEngine);
    }
    Signal();
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
      // (Not iocb.aio_data: that line is the caller's; Drain reads obj.)
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
  if (core_->notify_fd() >= 0) (void)sys::EventfdWrite(core_->notify_fd(), n);
  for (size_t i = 0; i < n; ++i) SignalHeldEventfd(held[i]);
  Signal();
}

void ThreadsBackend::Signal() noexcept {
  // The other half of the done list's waiter pair. The completion (ring tail,
  // delivery count) or the queue change is published before this full fence,
  // and a reaper announces itself (seq_cst) before it looks for them: either
  // it sees ours, or we see it waiting, move the sequence it sleeps on and
  // wake it. (The fence, not a write to event_seq_, keeps that cache line
  // still when nobody waits.)
  FullFence();
  if (core_->done().HasWaiters()) Wake();
}

void ThreadsBackend::Wake() noexcept {
  event_seq_.fetch_add(1, std::memory_order_seq_cst);
  if (kring_.load(std::memory_order_acquire) != nullptr) {
    KernelWake();  // the reaper sleeps in io_getevents
    return;
  }
  (void)sys::FutexWake(reinterpret_cast<const uint32_t*>(&event_seq_), INT_MAX);
}

void ThreadsBackend::KernelWake() noexcept {
  // acq_rel pairs with OnKernelEvent's release: one wake-up in the kernel at
  // a time, and a new one once that one is consumed.
  if (kwake_in_flight_.exchange(true, std::memory_order_acq_rel)) return;
  struct iocb* p = &kwake_iocb_;
  // Straight to the kernel: a fault-injection hook must not swallow the
  // engine's own wake-up.
  if (sys::real::IoSubmit(kctx_, 1, &p) != 1) {
    kwake_in_flight_.store(false, std::memory_order_release);
    kwake_failed_.store(true, std::memory_order_relaxed);
  }
}

bool ThreadsBackend::HelpOnce(size_t most) {
  if (core_->options().threads_ordered_per_fd) return false;
  Request* batch[kWorkerBatch];
  int64_t res[kWorkerBatch];
  most = std::clamp<size_t>(most, 1, kWorkerBatch);
  // Requests that would block go to a worker, and the next ones are tried,
  // up to kWorkerBatch tries in all.
  for (size_t tried = 0; tried < kWorkerBatch;) {
    if (queue_.empty_hint()) return false;
    size_t n = 0;
    {
      std::lock_guard<AdaptiveMutex> lock(mu_);
      // Only the most urgent requests, and only plain reads and writes: one
      // with an I/O priority needs a worker's ioprio_set, an fsync may block.
      // Those a try found would block are passed by: they wait for a worker,
      // and the ones behind them need not. Several at once (one lock, one
      // completion) when more wait than the busy workers and this thread
      // would take each, unless requests block often.
      size_t share = 1;
      if (most > 1 && !BlocksOften()) {
        share = std::min(
            most, 1 + queue_.size() / (live_workers_ - idle_workers_ + 1));
      }
      share = std::min(share, kWorkerBatch - tried);
      while (n < share) {
        Request* req = queue_.TakeHelpable();
        if (req == nullptr) break;
        req->engine_mark = kStarted;
        batch[n++] = req;
      }
    }
    if (n == 0) return false;
    tried += n;
    size_t done = 0;  // batch[0, done) ran, results in res
    size_t completed = 0;
    Request* back[kWorkerBatch];
    size_t n_back = 0;
    for (size_t i = 0; i < n; ++i) {
      Request* req = batch[i];
      TsanAcquire(req);
      bool stream = false;
      long r = ReadWrite(*req, RWF_NOWAIT, &stream);
      if (IsShort(*req, r)) {
        // Part of it done: this thread finishes it (the part done cannot be
        // handed back to a worker), which may block: those done go first.
        if (done != 0) Complete(batch, res, done);
        completed += done;
        done = 0;
        r = FinishShort(*req, r, stream);
      } else if (WouldBlock(r)) {
        back[n_back++] = req;  // a worker does it the ordinary way
        continue;
      }
      batch[done] = req;
      res[done++] = r;
    }
    if (n_back != 0) {
      MarkBlocked();
      bool wake = false;
      {
        std::lock_guard<AdaptiveMutex> lock(mu_);
        // Last first: each goes back before those queued after it.
        for (size_t i = n_back; i-- > 0;) {
          queue_.RequeueFront(back[i], /*would_block=*/true);
        }
        GrowPoolLocked();
        wake = idle_workers_ != 0;
      }
      if (wake) work_cv_.notify_one();
    }
    if (done != 0) Complete(batch, res, done);
    if (completed + done != 0) return true;
  }
  return false;
}

// ---------------------------------------------------------------- Reap

size_t ThreadsBackend::Drain(Request** out, size_t max) {
  if (max == 0 || ring_ == nullptr) return 0;
  size_t n = 0;
  const size_t consumed = ConsumeAioRing(ring_, max, [&](const io_event& ev) {
    auto* req = reinterpret_cast<Request*>(ev.obj);
    req->rval = ev.res;
    out[n++] = req;
  });
  if (consumed != 0) {
    // The slots are free again once head has moved past them.
    ReturnSlots(static_cast<unsigned>(consumed));
    core_->counters().ring_reaped.fetch_add(consumed,
                                            std::memory_order_relaxed);
  }
  AioRing* kring = kring_.load(std::memory_order_acquire);
  if (kring != nullptr && n < max) {
    const size_t kconsumed =
        ConsumeAioRing(kring, max - n, [&](const io_event& ev) {
          if (Request* r = OnKernelEvent(ev); r != nullptr) out[n++] = r;
        });
    core_->counters().ring_reaped.fetch_add(kconsumed,
                                            std::memory_order_relaxed);
  }
  return n;
}

Request* ThreadsBackend::OnKernelEvent(const io_event& ev) {
  if (ev.obj == reinterpret_cast<uint64_t>(&kwake_iocb_)) {
    // Release pairs with KernelWake's exchange.
    kwake_in_flight_.store(false, std::memory_order_release);
    return nullptr;
  }
  auto* req = reinterpret_cast<Request*>(ev.obj);
  TsanAcquire(req);
  if (ev.res == -EAGAIN && (req->rw_flags & RWF_NOWAIT) == 0) {
    // It would have waited (RWF_NOWAIT was ours, not the caller's): a worker
    // does it, still holding its slot and counted in flight.
    kernel_fallbacks_.fetch_add(1, std::memory_order_relaxed);
    if (req->op == Op::kWrite || req->op == Op::kWritev) {
      kblocking_write_fd_.store(req->fd, std::memory_order_relaxed);
    }
    bool wake = false;
    {
      std::lock_guard<AdaptiveMutex> lock(mu_);
      queue_.Enqueue(req);
      req->engine_mark = kForWorker;
      GrowPoolLocked();
      wake = idle_workers_ != 0;
    }
    if (wake) work_cv_.notify_one();
    return nullptr;
  }
  // Under valgrind: what a read wrote (it sees that only in io_getevents).
  if (on_valgrind_) VgAioCompleted(req->iocb, ev.res);
  if ((req->op == Op::kWrite || req->op == Op::kWritev) &&
      req->fd == kblocking_write_fd_.load(std::memory_order_relaxed)) {
    kblocking_write_fd_.store(-1, std::memory_order_relaxed);  // no longer
  }
  req->rval = ev.res;
  req->origin = Origin::kEngine;
  ReturnSlots(1);
  finished_.fetch_add(1, std::memory_order_release);
  kernel_aio_.fetch_add(1, std::memory_order_relaxed);
  return req;
}

bool ThreadsBackend::ReadyAfterAnnounce() {
  if (AioRingPending(ring_) != 0) return true;
  if (const AioRing* k = kring_.load(std::memory_order_acquire);
      k != nullptr && AioRingPending(k) != 0) {
    return true;
  }
  // Queued work this thread could run: a worker gave it back, or is about to
  // block, after this thread's last look (WakeHelperIfNeeded is the other
  // half).
  if (core_->options().threads_ordered_per_fd || queue_.empty_hint_seq_cst()) {
    return false;
  }
  std::lock_guard<AdaptiveMutex> lock(mu_);
  return queue_.HasHelpable();
}

Result<size_t> ThreadsBackend::Sleep(uint32_t token, Request** out, size_t max,
                                     std::chrono::nanoseconds timeout) {
  if (kring_.load(std::memory_order_acquire) != nullptr) {
    // Moved since PrepareSleep: a worker's completion, no need to wait.
    if (event_seq_.load(std::memory_order_seq_cst) != token || max == 0) {
      return Drain(out, max);
    }
    if (kwake_failed_.load(std::memory_order_relaxed) &&
        (timeout.count() < 0 || timeout > std::chrono::milliseconds(10))) {
      timeout = std::chrono::milliseconds(10);  // no wake-up: slices
    }
    timespec ts{};
    if (timeout.count() >= 0) {
      ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
      ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
    }
    const size_t want = std::min(max, kevents_.size());
    // min_nr 1: a worker's wake-up event ends the sleep.
    const long r =
        sys::IoGetevents(kctx_, 1, static_cast<long>(want), kevents_.data(),
                         timeout.count() < 0 ? nullptr : &ts);
    core_->counters().wait_calls.fetch_add(1, std::memory_order_relaxed);
    if (r < 0 && r != -EINTR) {
      return Status::FromErrno(
          static_cast<int>(-r),
          "threads: io_getevents(min_nr=1, nr=" + std::to_string(want) + ")");
    }
    size_t n = 0;
    for (long i = 0; i < r; ++i) {
      if (Request* req = OnKernelEvent(kevents_[static_cast<size_t>(i)]);
          req != nullptr) {
        out[n++] = req;
      }
    }
    return n + Drain(out + n, max - n);
  }
  // Until a completion or a queue change moves the sequence (FutexWait
  // returns at once if it already did).
  (void)sys::FutexWait(reinterpret_cast<const uint32_t*>(&event_seq_), token,
                       timeout);
  core_->counters().wait_calls.fetch_add(1, std::memory_order_relaxed);
  return Drain(out, max);
}

// ---------------------------------------------------------------- Cancel etc.

CancelOutcome ThreadsBackend::Cancel(Request* req) {
  bool removed = false;
  bool started = false;
  bool in_kernel = false;
  {
    std::lock_guard<AdaptiveMutex> lock(mu_);
    in_kernel = req->engine_mark == kInKernel;
    removed = !in_kernel && queue_.Remove(req);
    if (!removed) started = req->engine_mark == kStarted;
  }
  CancelOutcome o;
  if (removed) {
    // It never started: its ring slot goes back.
    ReturnSlots(1);
    finished_.fetch_add(1, std::memory_order_release);
    o.taken_back = true;
    return o;
  }
  o.status = Status::Error(
      Errc::kNotCancellable,
      "threads: Cancel(" + DescribeAsked(*req) + "): " +
          (started     ? "a worker has started it; it will complete normally"
           : in_kernel ? "the kernel's AIO has it (O_DIRECT), and cancels no "
                         "regular file's or block device's request; it will "
                         "complete normally"
                       : "it already completed"));
  return o;
}

void ThreadsBackend::BeginShutdown() {
  // Let the workers finish the queue, growing the pool if the queue is longer
  // than the workers.
  std::lock_guard<AdaptiveMutex> lock(mu_);
  GrowPoolLocked();
  work_cv_.notify_all();
}

size_t ThreadsBackend::TakeNotStarted(Request** out, size_t max) {
  size_t n = 0;
  {
    std::lock_guard<AdaptiveMutex> lock(mu_);
    while (n < max) {
      Request* r = queue_.TakeAny();
      if (r == nullptr) break;
      out[n++] = r;
    }
  }
  if (n != 0) {
    ReturnSlots(static_cast<unsigned>(n));
    finished_.fetch_add(static_cast<int64_t>(n), std::memory_order_release);
  }
  return n;
}

void ThreadsBackend::Destroy() {
  std::unique_lock<AdaptiveMutex> lock(mu_);
  stopping_ = true;
  work_cv_.notify_all();
  drain_cv_.wait(lock, [&] { return live_workers_ == 0; });
  lock.unlock();
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
  if (AioRing* k = kring_.load(std::memory_order_acquire); k != nullptr) {
    // Nothing is in flight but perhaps the wake-up, which completes at once;
    // io_destroy waits for it. As linux-aio's Destroy: memcheck's look and
    // our uses of the ring before its addresses can be mapped again.
    VgAioRingUnmapping(k);
    TsanRelease(&kernel_ring_mapping_sync);
    (void)sys::IoDestroy(kctx_);
    kring_.store(nullptr, std::memory_order_relaxed);
    kctx_ = 0;
  }
}

}  // namespace

Result<std::unique_ptr<Engine>> MakeThreadsEngine(
    const EngineOptions& options) {
  return MakeEngineOn<ThreadsBackend>(options);
}

}  // namespace aiokit::internal
