// The io_uring engine, through liburing (Debian's liburing-dev, 2.3).
//
//   Init      io_uring_queue_init_params with the flags this kernel accepts:
//             SINGLE_ISSUER + DEFER_TASKRUN (or COOP_TASKRUN) + TASKRUN_FLAG
//             when the caller promises one thread, SUBMIT_ALL, and SQPOLL or
//             IOPOLL when asked. Each optional flag the kernel refuses is
//             dropped and noted in Capabilities::fallbacks. FEAT_NODROP and
//             FEAT_EXT_ARG are required.
//   Submit    one SQE per request (two when the request has its own eventfd:
//             the request, hard-linked to an 8-byte write to that eventfd).
//             Requests beyond the in-flight cap (the CQ's size, so the CQ never
//             overflows) wait in a FIFO, in order, and go as completions free
//             room. io_uring_enter may consume fewer SQEs than offered: the
//             rest stay in the SQ ring and go with the next enter. EAGAIN and
//             EBUSY are retried with the RetryPolicy; when it runs out, the
//             SQEs of this call that the kernel did not take are taken back out
//             of the ring and the requests returned to the caller untouched.
//   Reap      the done list, then the CQ ring in user space; io_uring_enter
//             (GETEVENTS, with an EXT_ARG timeout) only to wait, to run
//             deferred task work, or to flush an overflowed CQ.
//   Cancel    a request still in the FIFO is cancelled in user space; one in
//             the kernel through IORING_REGISTER_SYNC_CANCEL (else an
//             ASYNC_CANCEL SQE), which can stop it only before it starts.
//   Shutdown  FIFO requests complete with -ECANCELED (they never reached the
//             kernel); the engine waits for the rest, then io_uring_queue_exit.
//
// Concurrency: submit_mu_ guards the SQ ring and the FIFO; the reaper gate
// guards the CQ ring. Lock order: the reaper gate, then submit_mu_; a submitter
// only try-locks the reaper gate. Without EngineOptions::single_thread,
// completions are delivered by task work that interrupts the submitting thread
// (no COOP_TASKRUN, which could leave them waiting while that thread computes
// in user space). io_uring ties a request to the thread that submitted it: when
// that thread exits, the kernel cancels what it has not started, and such
// requests complete with -ECANCELED.

#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "engine/common.h"
#include "engine/engines.h"
#include "sys/uring.h"
#include "util/strings.h"

namespace aiokit::internal {
namespace {

// ThreadSanitizer's stand-in for the kernel's ordering of a ring's unmap
// (io_uring_queue_exit) before a later io_uring_setup maps one at those
// addresses: liburing maps and unmaps with its own system calls, which it does
// not see. Only its address is used.
char ring_mapping_sync;

// user_data of the engine's own SQEs (a Request pointer is never this small).
constexpr uint64_t kWakeTag = 1;    // a NOP that wakes a sleeping reaper
constexpr uint64_t kLinkTag = 2;    // the eventfd write linked after a request
constexpr uint64_t kCancelTag = 3;  // an ASYNC_CANCEL (no sync cancel here)

// What a linked write adds to a request's eventfd.
alignas(8) const uint64_t kEventfdIncrement = 1;

constexpr unsigned kMaxSqEntries = 4096;

unsigned RoundUpPow2(unsigned v) {
  unsigned p = 1;
  while (p < v && p < (1U << 31)) p <<= 1;
  return p;
}

std::string MemlockText() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return "unknown";
  auto kib = [](rlim_t v) {
    return v == RLIM_INFINITY ? std::string("unlimited")
                              : std::to_string(v / 1024) + " KiB";
  };
  return kib(rl.rlim_cur) + " (hard limit " + kib(rl.rlim_max) + ")";
}

struct __kernel_timespec ToKernelTimespec(std::chrono::nanoseconds d) {
  if (d.count() < 0) d = std::chrono::nanoseconds(0);
  struct __kernel_timespec ts;
  ts.tv_sec = d.count() / 1000000000;
  ts.tv_nsec = d.count() % 1000000000;
  return ts;
}

class IoUringEngine final : public Engine {
 public:
  explicit IoUringEngine(const EngineOptions& options)
      : options_(options),
        spin_(options.spin_before_wait, options.adaptive_spin) {}
  ~IoUringEngine() override;
  IoUringEngine(const IoUringEngine&) = delete;
  IoUringEngine& operator=(const IoUringEngine&) = delete;

  Status Init();

  [[nodiscard]] EngineKind kind() const noexcept override {
    return EngineKind::kIoUring;
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
  Status RegisterBuffers(std::span<const iovec> buffers) override;
  Status RegisterFiles(std::span<const int> fds) override;

 private:
  // ---- Submission side; every one REQUIRES submit_mu_. ----
  // Writes req's SQE(s); false when the SQ ring has no room.
  bool QueueSqe(Request* req) noexcept;
  void FifoPushBack(Request* req) noexcept;
  Request* FifoPopFront() noexcept;
  // Moves FIFO requests into the SQ ring and hands the ring to the kernel.
  // With a policy, EAGAIN/EBUSY are retried as RetryPolicy says and `retries`
  // counts them. 0 when everything went (or waits in the FIFO); else -EAGAIN
  // when the policy ran out, or the errno of a ring error, and the unconsumed
  // SQEs are back at the FIFO's front. Without a policy it tries once and
  // leaves what the kernel did not take in the ring (sq_pending_) for later.
  int Pump(bool with_policy, unsigned* retries);
  // Publishes the SQ tail; returns the SQEs in the ring the kernel has not
  // consumed yet.
  unsigned FlushSq() noexcept;
  // Takes the SQEs the kernel has not consumed back out of the ring, to the
  // FIFO's front, in order. Not with SQPOLL (the kernel may be reading them).
  void RetractUnconsumed() noexcept;
  // Completes `req` without the kernel; `locked` says whether the caller holds
  // submit_mu_ (a wake-up NOP needs it).
  void CompleteLocally(Request* req, int64_t res, Origin origin, bool locked);
  // Wakes a reaper sleeping in io_uring_enter with a NOP (not in single-thread
  // mode, where the reaper is the caller).
  void WakeReaper(bool locked) noexcept;
  void WakeReaperLocked() noexcept;
  // SQPOLL: wakes the kernel's poller if it sleeps. REQUIRES submit_mu_.
  void KickSqPoller() const noexcept;

  // ---- Completion side; every one REQUIRES the reaper gate. ----
  // Reads CQEs from the ring into out[0, max) (own SQEs' CQEs are consumed and
  // not returned). Returns how many requests it stored; the caller lowers
  // in_kernel_ by that once they are where a reaper finds them.
  size_t DrainCq(Request** out, size_t max) noexcept;
  // True when the kernel holds completions that only an io_uring_enter with
  // GETEVENTS brings into the CQ ring (deferred task work, an overflow).
  bool NeedsGetEvents() const noexcept;
  int GetEvents() noexcept;
  // Sends what waits in the FIFO if the submit lock is free.
  void PumpFromReaper() noexcept;
  // single_thread and called from another thread than the ring's own: no
  // io_uring_enter may be made (with the registered ring fd it fails with
  // EBADF; with DEFER_TASKRUN, with EEXIST). The completions come when the
  // owner enters the kernel, is woken, or exits.
  [[nodiscard]] bool Foreign() const noexcept {
    return options_.single_thread && sys::ThreadId() != owner_tid_;
  }
  // Moves completions to the done list, waiting up to `timeout` for one.
  // Returns how many (-1: it slept in vain).
  long CollectToDone(std::chrono::nanoseconds timeout);
  // EAGAIN from a submitter: collect completions so the kernel has room.
  bool MakeRoom(std::chrono::microseconds delay);

  EngineOptions options_;
  Capabilities caps_;
  AdaptiveSpin spin_;

  struct io_uring ring_ = {};
  bool ring_ready_ = false;  // queue_init succeeded and exit not yet called
  bool registered_ring_ = false;
  bool link_eventfd_ = false;   // per-request eventfds by a linked write
  bool skip_link_cqe_ = false;  // IOSQE_CQE_SKIP_SUCCESS on that write
  bool sync_cancel_ = true;     // IORING_REGISTER_SYNC_CANCEL works
  unsigned max_in_kernel_ = 0;  // in-flight cap: the CQ ring's size less slack
  int notify_fd_ = -1;
  std::vector<int> file_slots_;  // fd -> registered file index, or -1
  unsigned fixed_buffers_ = 0;   // buffers registered

  // single_thread: the thread that created the ring (SINGLE_ISSUER's issuer).
  int owner_tid_ = 0;

  std::mutex submit_mu_;
  Request* fifo_head_ = nullptr;
  Request* fifo_tail_ = nullptr;
  std::atomic<size_t> fifo_count_{0};
  // SQEs wait in the SQ ring that no enter took yet (a failed enter outside
  // Submit's retry policy); the reaper sends them before it sleeps.
  std::atomic<bool> sq_pending_{false};
  uint64_t submit_seq_ = 0;  // stamps a Submit call's requests (iocb.aio_data)

  ReaperGate gate_;         // one reaper: the CQ ring
  bool destroyed_ = false;  // guarded by the gate

  DoneList done_;
  std::atomic<bool> wake_in_flight_{false};
  // Requests handed to the SQ ring and not yet completed (own SQEs excluded).
  // Raised before the SQE is visible to the kernel.
  std::atomic<int64_t> in_kernel_{0};
  std::atomic<int> users_{0};
  std::atomic<bool> shutdown_{false};

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

Status SetupError(int err, unsigned entries) {
  std::string msg = "io_uring: io_uring_setup(" + std::to_string(entries) + ")";
  switch (err) {
    case ENOSYS:
      msg +=
          ": this kernel has no io_uring (before 5.1, or CONFIG_IO_URING off)";
      break;
    case EPERM: {
      const std::string disabled =
          sys::ReadSmallFile("/proc/sys/kernel/io_uring_disabled");
      if (disabled == "2") {
        msg +=
            ": kernel.io_uring_disabled is 2: io_uring is disabled for "
            "every process";
      } else if (disabled == "1") {
        msg +=
            ": kernel.io_uring_disabled is 1: only processes in "
            "kernel.io_uring_group (or with CAP_SYS_ADMIN) may use io_uring";
      } else {
        msg +=
            ": refused by the process's seccomp filter or container policy "
            "(kernel.io_uring_disabled is " +
            (disabled.empty() ? std::string("not present") : disabled) + ")";
      }
      break;
    }
    case ENOMEM:
      msg +=
          ": not enough locked memory for the rings (kernels before 5.12 "
          "charge them to RLIMIT_MEMLOCK, here " +
          MemlockText() + ")";
      break;
    case EINVAL:
      msg += ": the kernel refuses these parameters";
      break;
    default:
      break;
  }
  return Status::FromErrno(err, std::move(msg));
}

Status IoUringEngine::Init() {
  owner_tid_ = sys::ThreadId();
  const unsigned depth = options_.queue_depth;
  if (depth == 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "io_uring: queue_depth 0: a ring needs at least one "
                         "entry (io_uring_setup refuses 0 with EINVAL)");
  }
  if (depth > 65536) {
    return Status::Error(Errc::kInvalidArgument,
                         "io_uring: queue_depth " + std::to_string(depth) +
                             " is above 65536, the largest CQ ring");
  }
  const unsigned sq_entries = std::min(RoundUpPow2(depth), kMaxSqEntries);
  // The kernel's largest CQ ring is 65536 entries.
  const unsigned cq_entries = std::min(RoundUpPow2(depth) * 2, 65536U);

  // Flags in the order they are given up when the kernel refuses them.
  struct Optional {
    unsigned flag;
    const char* name;
  };
  std::vector<Optional> optional;
  const bool single = options_.single_thread;
  if (single && !options_.sqpoll && options_.defer_taskrun) {
    optional.push_back({IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN"});
  }
  if (single) optional.push_back({IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER"});
  if ((single || options_.coop_taskrun) && !options_.sqpoll) {
    optional.push_back({IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"});
    optional.push_back({IORING_SETUP_TASKRUN_FLAG, "TASKRUN_FLAG"});
  }
  optional.push_back({IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL"});

  unsigned required = IORING_SETUP_CQSIZE;
  if (options_.sqpoll) {
    required |= IORING_SETUP_SQPOLL;
    if (options_.sqpoll_cpu >= 0) required |= IORING_SETUP_SQ_AFF;
  }
  if (options_.iopoll) required |= IORING_SETUP_IOPOLL;

  unsigned opt_flags = 0;
  for (const Optional& o : optional) opt_flags |= o.flag;
  struct io_uring_params params;
  int r = 0;
  for (;;) {
    std::memset(&params, 0, sizeof(params));
    params.flags = required | opt_flags;
    params.cq_entries = cq_entries;
    if (options_.sqpoll) {
      params.sq_thread_idle =
          static_cast<unsigned>(options_.sqpoll_idle.count());
      if (options_.sqpoll_cpu >= 0) {
        params.sq_thread_cpu = static_cast<unsigned>(options_.sqpoll_cpu);
      }
    }
    TsanAcquire(&ring_mapping_sync);  // liburing writes the new rings too
    r = sys::UringQueueInit(sq_entries, &ring_, &params);
    if (r != -EINVAL || opt_flags == 0) break;
    // Give up the first optional flag still set (DEFER_TASKRUN first: it needs
    // 6.1; COOP_TASKRUN 5.19; SINGLE_ISSUER 6.0; SUBMIT_ALL 5.18), and say so.
    for (const Optional& o : optional) {
      if ((opt_flags & o.flag) != 0) {
        opt_flags &= ~o.flag;
        caps_.fallbacks.push_back(std::string(o.name) +
                                  ": refused by this kernel (EINVAL)");
        // COOP_TASKRUN stands in for a refused DEFER_TASKRUN.
        break;
      }
    }
  }
  if (r < 0) {
    if (r == -EINVAL && options_.sqpoll) {
      return Status::FromErrno(EINVAL, "io_uring: SQPOLL refused");
    }
    if (r == -EPERM && options_.sqpoll) {
      Status s = SetupError(EPERM, sq_entries);
      return {s.code(),
              s.context() + " (SQPOLL needs CAP_SYS_NICE before 5.11)"};
    }
    return SetupError(-r, sq_entries);
  }
  ring_ready_ = true;
  // The rings may lie where another engine's were (pairs with the
  // TsanRelease before each io_uring_queue_exit).
  TsanAcquire(&ring_mapping_sync);

  // What this engine cannot do without.
  if ((params.features & IORING_FEAT_NODROP) == 0 ||
      (params.features & IORING_FEAT_EXT_ARG) == 0) {
    const char* missing = (params.features & IORING_FEAT_NODROP) == 0
                              ? "IORING_FEAT_NODROP (5.5)"
                              : "IORING_FEAT_EXT_ARG (5.11)";
    TsanRelease(&ring_mapping_sync);
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
    return Status::Error(Errc::kUnsupported,
                         std::string("io_uring: kernel too old for a needed "
                                     "feature: ") +
                             missing + " (kernel " + sys::KernelRelease() +
                             ")");
  }
  caps_.single_issuer = (params.flags & IORING_SETUP_SINGLE_ISSUER) != 0;
  caps_.defer_taskrun = (params.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
  caps_.coop_taskrun = (params.flags & IORING_SETUP_COOP_TASKRUN) != 0;
  if (caps_.defer_taskrun) {
    // COOP_TASKRUN was only the fallback; DEFER_TASKRUN covers it.
    caps_.coop_taskrun = false;
  }
  if (!single) {
    caps_.fallbacks.emplace_back(
        std::string("SINGLE_ISSUER, DEFER_TASKRUN, ") +
        (options_.coop_taskrun ? "" : "COOP_TASKRUN, ") +
        "registered ring fd: not used, any thread may call "
        "(EngineOptions::single_thread is false)");
  }
  caps_.sqpoll = options_.sqpoll;
  caps_.iopoll = options_.iopoll;

  if (single) {
    if (int rr = sys::UringRegisterRingFd(&ring_); rr == 0) {
      registered_ring_ = true;
    } else {
      caps_.fallbacks.push_back("registered ring fd: " + util::ErrnoText(-rr));
    }
  }
  caps_.registered_ring_fd = registered_ring_;

  if (options_.notify_fd) {
    const int efd = sys::Eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0)
      return Status::FromErrno(-efd, "io_uring: eventfd() for NotifyFd");
    notify_fd_ = efd;
    if (int rr = sys::UringRegisterEventfd(&ring_, efd); rr < 0) {
      return Status::FromErrno(-rr, "io_uring: io_uring_register_eventfd");
    }
  }

  // Per-request eventfds: a hard-linked write (5.5); its CQE is skipped on
  // success where the kernel can (IORING_FEAT_CQE_SKIP, 5.17). IOPOLL rings
  // take only polled reads and writes, so there the reaper signals the eventfd.
  // With DEFER_TASKRUN a completion exists only once the reaping thread runs
  // the deferred work, so there the reaper signals the eventfd too (before Reap
  // returns the request).
  link_eventfd_ = !options_.iopoll && !caps_.defer_taskrun;
  skip_link_cqe_ = (params.features & IORING_FEAT_CQE_SKIP) != 0;

  max_in_kernel_ =
      params.cq_entries > 16 ? params.cq_entries - 8 : params.cq_entries / 2;
  caps_.user_space_reap = true;
  caps_.cancel_regular_files = true;  // before they start (io-wq, FIFO)
  caps_.async_buffered_io = true;
  caps_.fsync = true;
  caps_.rw_flags = true;
  caps_.ioprio = true;
  caps_.request_eventfd = true;
  caps_.notify_fd = notify_fd_ >= 0;
  caps_.ring_entries = params.cq_entries;
  caps_.fixed_buffers = true;
  caps_.fixed_files = true;
  return {};
}

IoUringEngine::~IoUringEngine() {
  // Waits as long as the kernel takes: buffers of requests in flight must not
  // be freed under it.
  (void)Shutdown(kForever);
  // Completed requests nobody reaped are the caller's again.
  Request* left[64];
  while (size_t n = done_.Take(left, 64)) {
    for (size_t i = 0; i < n; ++i) {
      left[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
    }
  }
  if (notify_fd_ >= 0) sys::Close(notify_fd_);
}

EngineStats IoUringEngine::Stats() const noexcept {
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
  return s;
}

// ---------------------------------------------------------------- Submit

bool IoUringEngine::QueueSqe(Request* req) noexcept {
  const bool link = link_eventfd_ && req->resfd >= 0;
  if (io_uring_sq_space_left(&ring_) < (link ? 2U : 1U)) return false;
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  int fd = req->fd;
  bool fixed_file = false;
  if (fd >= 0 && static_cast<size_t>(fd) < file_slots_.size() &&
      file_slots_[static_cast<size_t>(fd)] >= 0) {
    fd = file_slots_[static_cast<size_t>(fd)];
    fixed_file = true;
  }
  const bool fixed_buf = req->buf_index >= 0 &&
                         static_cast<unsigned>(req->buf_index) < fixed_buffers_;
  // The SQE's length has 32 bits. The kernel moves at most MAX_RW_COUNT
  // (INT_MAX rounded down to a page) per request and returns that count for a
  // longer one, as kernel AIO does; a length of 4 GiB or more must be clipped,
  // not wrapped (Validate refused those above SSIZE_MAX).
  const auto len = static_cast<unsigned>(
      std::min<uint64_t>(req->length, std::numeric_limits<unsigned>::max()));
  switch (req->op) {
    case Op::kRead:
      if (fixed_buf) {
        io_uring_prep_read_fixed(sqe, fd, req->iov[0].iov_base, len,
                                 req->offset, req->buf_index);
      } else {
        io_uring_prep_read(sqe, fd, req->iov[0].iov_base, len, req->offset);
      }
      break;
    case Op::kWrite:
      if (fixed_buf) {
        io_uring_prep_write_fixed(sqe, fd, req->iov[0].iov_base, len,
                                  req->offset, req->buf_index);
      } else {
        io_uring_prep_write(sqe, fd, req->iov[0].iov_base, len, req->offset);
      }
      break;
    case Op::kReadv:
      io_uring_prep_readv(sqe, fd, req->iov.data(),
                          static_cast<unsigned>(req->iov.size()), req->offset);
      break;
    case Op::kWritev:
      io_uring_prep_writev(sqe, fd, req->iov.data(),
                           static_cast<unsigned>(req->iov.size()), req->offset);
      break;
    case Op::kFsync:
      io_uring_prep_fsync(sqe, fd, 0);
      break;
    case Op::kFdatasync:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case Op::kNoop:
      io_uring_prep_nop(sqe);
      break;
  }
  if (req->op != Op::kFsync && req->op != Op::kFdatasync &&
      req->op != Op::kNoop) {
    // RWF_HIPRI means "poll for this completion", which only an IOPOLL ring
    // does; elsewhere it is ignored, as kernel AIO ignores it.
    uint32_t rwf = req->rw_flags;
    if (!options_.iopoll) rwf &= ~rwf::kHipri;
    sqe->rw_flags = static_cast<__kernel_rwf_t>(rwf);
  }
  if (req->has_ioprio) sqe->ioprio = req->ioprio;
  if (fixed_file) sqe->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(req));
  TsanRelease(req);
  if (link) {
    // Hard link: the write runs whatever the request's result.
    sqe->flags |= IOSQE_IO_HARDLINK;
    struct io_uring_sqe* w = io_uring_get_sqe(&ring_);
    io_uring_prep_write(w, req->resfd, &kEventfdIncrement,
                        sizeof(kEventfdIncrement), 0);
    io_uring_sqe_set_data64(w, kLinkTag);
    if (skip_link_cqe_) w->flags |= IOSQE_CQE_SKIP_SUCCESS;
  }
  return true;
}

void IoUringEngine::FifoPushBack(Request* req) noexcept {
  req->engine_next = nullptr;
  if (fifo_tail_ != nullptr) {
    fifo_tail_->engine_next = req;
  } else {
    fifo_head_ = req;
  }
  fifo_tail_ = req;
  fifo_count_.fetch_add(1, std::memory_order_relaxed);
}

Request* IoUringEngine::FifoPopFront() noexcept {
  Request* r = fifo_head_;
  if (r == nullptr) return nullptr;
  fifo_head_ = r->engine_next;
  if (fifo_head_ == nullptr) fifo_tail_ = nullptr;
  r->engine_next = nullptr;
  fifo_count_.fetch_sub(1, std::memory_order_relaxed);
  return r;
}

unsigned IoUringEngine::FlushSq() noexcept {
  struct io_uring_sq& sq = ring_.sq;
  const unsigned tail = sq.sqe_tail;
  if (sq.sqe_head != tail) {
    sq.sqe_head = tail;
    // Release: the SQE contents are written before the kernel can see the new
    // tail (pairs with the kernel's acquire of sq.tail, or the SQPOLL
    // thread's).
    io_uring_smp_store_release(sq.ktail, tail);
  }
  // Acquire: pairs with the kernel's release of head once it has read an SQE;
  // the slots before head are ours again.
  return tail - io_uring_smp_load_acquire(sq.khead);
}

void IoUringEngine::RetractUnconsumed() noexcept {
  struct io_uring_sq& sq = ring_.sq;
  unsigned head = io_uring_smp_load_acquire(sq.khead);
  const unsigned tail = sq.sqe_tail;
  // An enter that stopped between a request and its linked eventfd write sent
  // the request: its write must still go, so it stays in the ring.
  if (head != tail && sq.sqes[head & sq.ring_mask].user_data == kLinkTag) {
    ++head;
  }
  // Walk back from the newest, pushing each request to the FIFO's front, so
  // that the FIFO keeps submission order.
  for (unsigned i = tail; i != head; --i) {
    const struct io_uring_sqe* sqe = &sq.sqes[(i - 1) & sq.ring_mask];
    const uint64_t ud = sqe->user_data;
    if (ud == kWakeTag) wake_in_flight_.store(false, std::memory_order_release);
    if (ud <= kCancelTag) continue;  // the engine's own SQEs
    auto* req = reinterpret_cast<Request*>(ud);
    req->engine_next = fifo_head_;
    fifo_head_ = req;
    if (fifo_tail_ == nullptr) fifo_tail_ = req;
    fifo_count_.fetch_add(1, std::memory_order_relaxed);
    in_kernel_.fetch_sub(1, std::memory_order_relaxed);
  }
  sq.sqe_head = head;
  sq.sqe_tail = head;
  // The kernel has not looked past its head (it reads the tail only inside an
  // enter that consumes SQEs, and all of those run under submit_mu_, which we
  // hold).
  io_uring_smp_store_release(sq.ktail, head);
  sq_pending_.store(head != io_uring_smp_load_acquire(sq.khead),
                    std::memory_order_relaxed);
}

int IoUringEngine::Pump(bool with_policy, unsigned* retries) {
  unsigned attempts = 0;
  std::chrono::microseconds delay = options_.eagain.initial_delay;
  for (;;) {
    while (fifo_head_ != nullptr && in_kernel_.load(std::memory_order_relaxed) <
                                        static_cast<int64_t>(max_in_kernel_)) {
      // Counted before the kernel can see it: a completion reaped on another
      // thread never drives the count negative.
      in_kernel_.fetch_add(1, std::memory_order_relaxed);
      if (QueueSqe(fifo_head_)) {
        (void)FifoPopFront();
        continue;
      }
      in_kernel_.fetch_sub(1, std::memory_order_relaxed);
      if (!options_.sqpoll) break;  // SQ full: enter, then refill
      // The poller has the ring full. It may even have posted their
      // completions already: the kernel moves the SQ head only after a batch,
      // so a reaper can see every CQE and no room. Wait for the room.
      (void)FlushSq();
      KickSqPoller();
      (void)io_uring_enter2(
          registered_ring_ ? static_cast<unsigned>(ring_.enter_ring_fd)
                           : static_cast<unsigned>(ring_.ring_fd),
          0, 0,
          IORING_ENTER_SQ_WAIT |
              (registered_ring_ ? IORING_ENTER_REGISTERED_RING : 0),
          nullptr, 0);
    }
    const unsigned waiting = FlushSq();
    if (waiting == 0) {
      sq_pending_.store(false, std::memory_order_relaxed);
      return 0;
    }
    if (options_.sqpoll) {
      KickSqPoller();
      return 0;
    }
    // With DEFER_TASKRUN the same call runs the completions waiting for this
    // thread (GETEVENTS with no minimum does not wait), so that the next Reap
    // finds them in the CQ ring without a system call of its own, as fio does.
    const int r = sys::UringEnter(
        &ring_, registered_ring_, waiting, 0,
        caps_.defer_taskrun ? IORING_ENTER_GETEVENTS : 0, nullptr, 0);
    submit_calls_.fetch_add(1, std::memory_order_relaxed);
    if (r > 0) {
      if (static_cast<unsigned>(r) < waiting) {
        partial_submits_.fetch_add(1, std::memory_order_relaxed);
      }
      attempts = 0;  // progress restarts the retry budget, as BlueStore does
      delay = options_.eagain.initial_delay;
      continue;
    }
    // Nothing taken. EAGAIN (no memory for requests), EBUSY (overflowed
    // completions must be reaped first) and EINTR pass; anything else is an
    // error of the ring (EEXIST: a second thread on a SINGLE_ISSUER ring;
    // EOWNERDEAD: the SQPOLL thread died), which no retry fixes.
    const int err = r == 0 ? -EAGAIN : r;
    const bool transient = err == -EAGAIN || err == -EBUSY || err == -EINTR;
    if (!with_policy) {
      sq_pending_.store(true, std::memory_order_relaxed);
      return err;  // the SQEs stay in the ring for the next enter
    }
    if (!transient || attempts >= options_.eagain.max_retries ||
        shutdown_.load(std::memory_order_acquire)) {
      RetractUnconsumed();
      return transient ? -EAGAIN : err;
    }
    ++attempts;
    ++*retries;
    eagain_retries_.fetch_add(1, std::memory_order_relaxed);
    if (!MakeRoom(delay)) std::this_thread::sleep_for(delay);
    delay = NextDelay(delay);
  }
}

void IoUringEngine::CompleteLocally(Request* req, int64_t res, Origin origin,
                                    bool locked) {
  req->rval = res;
  req->origin = origin;
  const int efd = req->resfd;
  const bool wake = done_.Push(req);
  // As the linked write would: the request's own eventfd; and the engine's, as
  // the kernel signals it for every completion.
  if (efd >= 0) (void)sys::EventfdWrite(efd, 1);
  if (notify_fd_ >= 0) (void)sys::EventfdWrite(notify_fd_, 1);
  if (wake) WakeReaper(locked);
}

void IoUringEngine::WakeReaper(bool locked) noexcept {
  // In single-thread mode the only reaper is the caller, who is not asleep.
  if (options_.single_thread || !ring_ready_) return;
  if (wake_in_flight_.exchange(true, std::memory_order_acq_rel)) return;
  if (locked) {
    WakeReaperLocked();
  } else {
    std::lock_guard<std::mutex> lock(submit_mu_);
    WakeReaperLocked();
  }
}

void IoUringEngine::KickSqPoller() const noexcept {
  // The kernel's poller takes the SQEs; wake it if it went to sleep after
  // sqpoll_idle without work. (A full barrier first, as liburing does: our tail
  // store must be visible before we read its NEED_WAKEUP flag.)
  FullFence();
  if ((IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_NEED_WAKEUP) != 0) {
    (void)io_uring_enter2(
        registered_ring_ ? static_cast<unsigned>(ring_.enter_ring_fd)
                         : static_cast<unsigned>(ring_.ring_fd),
        0, 0,
        IORING_ENTER_SQ_WAKEUP |
            (registered_ring_ ? IORING_ENTER_REGISTERED_RING : 0),
        nullptr, 0);
  }
}

void IoUringEngine::WakeReaperLocked() noexcept {
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    wake_in_flight_.store(false, std::memory_order_release);
    return;
  }
  io_uring_prep_nop(sqe);
  io_uring_sqe_set_data64(sqe, kWakeTag);
  const unsigned waiting = FlushSq();
  if (options_.sqpoll) {
    KickSqPoller();
  } else {
    // Straight to the kernel, past the fault hooks: the engine's own wake-up.
    const int r = io_uring_enter2(
        registered_ring_ ? static_cast<unsigned>(ring_.enter_ring_fd)
                         : static_cast<unsigned>(ring_.ring_fd),
        waiting, 0, registered_ring_ ? IORING_ENTER_REGISTERED_RING : 0,
        nullptr, 0);
    if (r < static_cast<int>(waiting)) {
      // Not (all) taken: the NOP waits in the ring for the next enter, and the
      // reaper is told to send it. A later wake-up may go meanwhile.
      sq_pending_.store(true, std::memory_order_relaxed);
      if (r <= 0) wake_in_flight_.store(false, std::memory_order_release);
    }
  }
}

SubmitResult IoUringEngine::Submit(std::span<Request* const> batch) {
  SubmitResult result;
  UserGuard guard(&users_);
  if (shutdown_.load(std::memory_order_seq_cst)) {
    result.status =
        Status::Error(Errc::kShutdown, "io_uring: Submit after Shutdown");
    return result;
  }
  std::lock_guard<std::mutex> lock(submit_mu_);
  // A run: the requests queued since the last pump, batch[run_first, end),
  // each stamped with the run's number (in iocb.aio_data, this engine's
  // scratch). Earlier runs were pumped, so what of them still waits in the
  // FIFO (held by the in-flight cap) is accepted; only the current run can be
  // given back.
  uint64_t stamp = ++submit_seq_;
  size_t run_first = batch.size();
  // When the retry policy runs out (or the ring fails): the run's requests
  // still in the FIFO go back to the caller, idle and not completed. They are
  // a suffix of the run, in order. False when there were none.
  auto give_back = [&](size_t end, int err) -> bool {
    size_t first = end;
    Request* prev = nullptr;
    for (Request* r = fifo_head_; r != nullptr;) {
      Request* next = r->engine_next;
      if (r->iocb.aio_data == stamp) {
        if (prev != nullptr) {
          prev->engine_next = next;
        } else {
          fifo_head_ = next;
        }
        if (fifo_tail_ == r) fifo_tail_ = prev;
        fifo_count_.fetch_sub(1, std::memory_order_relaxed);
        r->engine_next = nullptr;
        r->engine_state.store(kIdle, std::memory_order_relaxed);
        r->rval = kNotCompleted;
        for (size_t i = run_first; i < end; ++i) {
          if (batch[i] == r) {
            first = std::min(first, i);
            break;
          }
        }
      } else {
        prev = r;
      }
      r = next;
    }
    // Requests of other calls may be back in the FIFO, or left in the ring:
    // a sleeping reaper must send them.
    if (fifo_count_.load(std::memory_order_relaxed) != 0 ||
        sq_pending_.load(std::memory_order_relaxed)) {
      WakeReaper(/*locked=*/true);
    }
    if (first == end) return false;  // all of the run went after all
    submitted_.fetch_sub(end - first, std::memory_order_relaxed);
    result.accepted = first;
    const std::string what = std::to_string(end - first) +
                             " requests (from batch[" + std::to_string(first) +
                             "]) were not submitted";
    if (err == -EAGAIN) {
      result.status = Status::Error(
          shutdown_.load(std::memory_order_acquire) ? Errc::kShutdown
                                                    : Errc::kQueueFull,
          "io_uring: io_uring_enter still returned EAGAIN/EBUSY after " +
              std::to_string(options_.eagain.max_retries) + " retries; " +
              what);
    } else {
      result.status =
          Status::FromErrno(-err, "io_uring: io_uring_enter failed; " + what);
    }
    return true;
  };
  auto pump = [&](size_t end) -> bool {
    if (run_first == batch.size()) return true;
    const int r = Pump(true, &result.retries);
    const bool gave_back = r != 0 && give_back(end, r);
    run_first = batch.size();
    stamp = ++submit_seq_;
    return !gave_back;
  };

  for (size_t i = 0; i < batch.size(); ++i) {
    Request* req = batch[i];
    if (req == nullptr ||
        req->engine_state.load(std::memory_order_relaxed) == kInFlight) {
      if (!pump(i)) return result;
      result.accepted = i;
      result.status = Status::Error(
          Errc::kInvalidArgument,
          "io_uring: batch[" + std::to_string(i) + "]: " +
              (req == nullptr ? std::string("null request")
                              : DescribeAsked(*req) +
                                    ": submitted again before it was reaped"));
      return result;
    }
    if (req->op == Op::kNoop) {
      if (!pump(i)) return result;
      req->engine_state.store(kInFlight, std::memory_order_relaxed);
      submitted_.fetch_add(1, std::memory_order_relaxed);
      CompleteLocally(req, 0, Origin::kLocal, /*locked=*/true);
      continue;
    }
    Status valid = req->Validate();
    if (!valid.ok() &&
        (options_.check_alignment || !valid.Is(Errc::kMisaligned))) {
      if (!pump(i)) return result;
      req->engine_state.store(kInFlight, std::memory_order_relaxed);
      submitted_.fetch_add(1, std::memory_order_relaxed);
      refused_.fetch_add(1, std::memory_order_relaxed);
      CompleteLocally(req, -EINVAL, Origin::kRefused, /*locked=*/true);
      continue;
    }
    req->rval = kNotCompleted;
    req->origin = Origin::kNone;
    req->iocb.aio_data = stamp;  // this engine's scratch: which run queued it
    req->engine_state.store(kInFlight, std::memory_order_relaxed);
    submitted_.fetch_add(1, std::memory_order_relaxed);
    FifoPushBack(req);
    if (run_first == batch.size()) run_first = i;
  }
  if (!pump(batch.size())) return result;
  result.accepted = batch.size();
  return result;
}

// ---------------------------------------------------------------- Reap

bool IoUringEngine::NeedsGetEvents() const noexcept {
  const unsigned flags = IO_URING_READ_ONCE(*ring_.sq.kflags);
  return (flags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) != 0 ||
         (options_.iopoll && in_kernel_.load(std::memory_order_relaxed) > 0);
}

int IoUringEngine::GetEvents() noexcept {
  wait_calls_.fetch_add(1, std::memory_order_relaxed);
  return sys::UringEnter(&ring_, registered_ring_, 0, 0, IORING_ENTER_GETEVENTS,
                         nullptr, 0);
}

size_t IoUringEngine::DrainCq(Request** out, size_t max) noexcept {
  if (max == 0) return 0;
  struct io_uring_cq& cq = ring_.cq;
  unsigned head = *cq.khead;  // only we (under the reaper gate) move the head
  // Acquire: pairs with the kernel's release of the CQ tail; the CQEs before it
  // are fully written.
  const unsigned tail = io_uring_smp_load_acquire(cq.ktail);
  size_t n = 0;
  unsigned seen = 0;
  while (head != tail && n < max) {
    const struct io_uring_cqe* cqe = &cq.cqes[head & cq.ring_mask];
    const uint64_t ud = cqe->user_data;
    ++head;
    ++seen;
    if (ud == kWakeTag) {
      wake_in_flight_.store(false, std::memory_order_release);
      continue;
    }
    if (ud == kLinkTag || ud == kCancelTag) continue;
    auto* req = reinterpret_cast<Request*>(ud);
    TsanAcquire(req);
    req->rval = cqe->res;
    req->origin = Origin::kEngine;
    if (!link_eventfd_ && req->resfd >= 0) {
      (void)sys::EventfdWrite(req->resfd, 1);
    }
    out[n++] = req;
  }
  if (seen != 0) {
    // Release: our reads of the CQEs happen before the kernel may reuse the
    // slots (pairs with its acquire of the CQ head).
    io_uring_cq_advance(&ring_, seen);
  }
  return n;
}

void IoUringEngine::PumpFromReaper() noexcept {
  if (fifo_count_.load(std::memory_order_relaxed) == 0 &&
      !sq_pending_.load(std::memory_order_relaxed)) {
    return;
  }
  std::unique_lock<std::mutex> lock(submit_mu_, std::try_to_lock);
  // A submitter holding the lock pumps the FIFO itself.
  if (lock.owns_lock()) (void)Pump(false, nullptr);
}

Result<size_t> IoUringEngine::Reap(std::span<Request*> out, size_t min,
                                   std::chrono::nanoseconds timeout) {
  if (out.empty()) return size_t{0};
  min = std::min(min, out.size());
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;

  ReaperLock lock(&gate_, timeout, deadline);
  size_t n = done_.Take(out.data(), out.size());
  if (!lock.owns_lock()) {
    for (size_t i = 0; i < n; ++i) {
      out[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
    }
    completed_.fetch_add(n, std::memory_order_relaxed);
    return n;
  }
  if (!destroyed_) {
    size_t got = DrainCq(out.data() + n, out.size() - n);
    // Counted as read without a system call only when no enter preceded.
    ring_reaped_.fetch_add(got, std::memory_order_relaxed);
    if (got == 0 && n < out.size() && NeedsGetEvents()) {
      (void)GetEvents();
      got = DrainCq(out.data() + n, out.size() - n);
    }
    in_kernel_.fetch_sub(static_cast<int64_t>(got), std::memory_order_relaxed);
    n += got;
    PumpFromReaper();
  }

  // Nothing more can arrive once the engine is shut down, no Submit that
  // began before that is still underway (it may yet queue requests; seq_cst
  // pairs with UserGuard's increment and Submit's look at shutdown_), and
  // nothing is in the kernel, the FIFO or the done list.
  auto nothing_can_arrive = [&] {
    return shutdown_.load(std::memory_order_seq_cst) &&
           users_.load(std::memory_order_seq_cst) == 0 &&
           in_kernel_.load(std::memory_order_relaxed) == 0 &&
           fifo_count_.load(std::memory_order_relaxed) == 0 &&
           done_.count() == 0;
  };
  while (n < min && !destroyed_) {
    if (nothing_can_arrive()) break;
    std::chrono::nanoseconds left = kForever;
    if (!forever) {
      left = deadline - Clock::now();
      if (left.count() <= 0) break;
    }
    if (done_.AnnounceWaiter()) {
      n += done_.Take(out.data() + n, out.size() - n);
      continue;
    }
    if ((in_kernel_.load(std::memory_order_relaxed) == 0 &&
         fifo_count_.load(std::memory_order_relaxed) != 0) ||
        sq_pending_.load(std::memory_order_relaxed)) {
      // Nothing in the kernel would wake us, or SQEs wait in the ring after a
      // failed enter: send what waits first.
      std::lock_guard<std::mutex> slock(submit_mu_);
      (void)Pump(false, nullptr);
    }
    if (sq_pending_.load(std::memory_order_relaxed) &&
        (left.count() < 0 || left > std::chrono::milliseconds(1))) {
      // The kernel would not take them (EAGAIN): try again in a moment.
      left = std::chrono::milliseconds(1);
    }
    const bool ready = spin_.Spin(deadline, [&] {
      return io_uring_cq_ready(&ring_) != 0 || NeedsGetEvents() ||
             done_.count_relaxed() != 0;
    });
    const bool ring_only = ready && !NeedsGetEvents();
    int r = 0;
    if (!ready || NeedsGetEvents()) {
      // Sleep in the kernel until enough completions are posted (or run the
      // deferred task work that posts them).
      struct __kernel_timespec ts = ToKernelTimespec(left);
      struct io_uring_getevents_arg arg = {};
      if (left.count() >= 0 && !ready) arg.ts = reinterpret_cast<uint64_t>(&ts);
      // One completion at a time: the wake-up NOP's CQE must end the sleep
      // whatever `min` is.
      const unsigned want = ready ? 0 : 1;
      r = sys::UringEnter(&ring_, registered_ring_, 0, want,
                          IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg,
                          sizeof(arg));
      wait_calls_.fetch_add(1, std::memory_order_relaxed);
    }
    done_.RetireWaiter();
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      if (n != 0) break;
      return Status::FromErrno(-r, "io_uring: io_uring_enter(GETEVENTS)");
    }
    const size_t drained = DrainCq(out.data() + n, out.size() - n);
    in_kernel_.fetch_sub(static_cast<int64_t>(drained),
                         std::memory_order_relaxed);
    if (ring_only) ring_reaped_.fetch_add(drained, std::memory_order_relaxed);
    n += drained;
    n += done_.Take(out.data() + n, out.size() - n);
    PumpFromReaper();
    if (r == -ETIME && !forever && Clock::now() >= deadline) break;
  }
  lock.Unlock();

  for (size_t i = 0; i < n; ++i) {
    out[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
  }
  completed_.fetch_add(n, std::memory_order_relaxed);
  if (n == 0 && nothing_can_arrive()) {
    return Status::Error(Errc::kShutdown,
                         "io_uring: engine shut down and nothing left to reap");
  }
  return n;
}

long IoUringEngine::CollectToDone(std::chrono::nanoseconds timeout) {
  if (destroyed_) return 0;
  const bool foreign = Foreign();
  constexpr size_t kBatch = 256;
  Request* got[kBatch];
  long total = 0;
  auto push = [&](size_t n) {
    if (n == 0) return;
    for (size_t i = 1; i < n; ++i) got[i - 1]->engine_next = got[i];
    (void)done_.Push(got[0], got[n - 1], n);
    // Only now: until the push, a reaper would find them nowhere.
    in_kernel_.fetch_sub(static_cast<int64_t>(n), std::memory_order_relaxed);
    total += static_cast<long>(n);
  };
  for (;;) {
    size_t n = DrainCq(got, kBatch);
    if (n == 0 && !foreign && NeedsGetEvents()) {
      (void)GetEvents();
      n = DrainCq(got, kBatch);
    }
    push(n);
    if (n < kBatch) break;
  }
  if (total != 0) return total;
  if (in_kernel_.load(std::memory_order_relaxed) <= 0 &&
      !wake_in_flight_.load(std::memory_order_acquire)) {
    return 0;  // nothing can complete: do not sleep
  }
  if (foreign) {
    // Only the owner thread can run the deferred completions (or the kernel
    // does, when that thread exits): look again in a moment.
    std::this_thread::sleep_for(
        timeout.count() < 0
            ? std::chrono::nanoseconds(std::chrono::milliseconds(1))
            : std::min<std::chrono::nanoseconds>(timeout,
                                                 std::chrono::milliseconds(1)));
    push(DrainCq(got, kBatch));
    return total != 0 ? total : -1;
  }
  struct __kernel_timespec ts = ToKernelTimespec(timeout);
  struct io_uring_getevents_arg arg = {};
  if (timeout.count() >= 0) arg.ts = reinterpret_cast<uint64_t>(&ts);
  (void)sys::UringEnter(&ring_, registered_ring_, 0, 1,
                        IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg,
                        sizeof(arg));
  wait_calls_.fetch_add(1, std::memory_order_relaxed);
  push(DrainCq(got, kBatch));
  return total != 0 ? total : -1;
}

bool IoUringEngine::MakeRoom(std::chrono::microseconds delay) {
  if (!gate_.TryAcquire()) return false;  // a reaper is at work
  const long got = CollectToDone(delay);
  gate_.Release();
  // Room was made, or the delay was spent waiting for it.
  return got != 0;
}

// ---------------------------------------------------------------- Cancel etc.

Status IoUringEngine::Cancel(Request* req) {
  if (req == nullptr ||
      req->engine_state.load(std::memory_order_relaxed) != kInFlight) {
    return Status::Error(
        Errc::kInvalidArgument,
        "io_uring: Cancel: " +
            (req == nullptr ? std::string("null request")
                            : DescribeAsked(*req) + " is not in flight"));
  }
  UserGuard guard(&users_);
  if (shutdown_.load(std::memory_order_seq_cst)) {
    return Status::Error(Errc::kShutdown, "io_uring: Cancel after Shutdown");
  }
  {
    std::lock_guard<std::mutex> lock(submit_mu_);
    // Still waiting in the FIFO: it never reached the kernel.
    Request* prev = nullptr;
    for (Request* r = fifo_head_; r != nullptr; prev = r, r = r->engine_next) {
      if (r != req) continue;
      if (prev != nullptr) {
        prev->engine_next = r->engine_next;
      } else {
        fifo_head_ = r->engine_next;
      }
      if (fifo_tail_ == r) fifo_tail_ = prev;
      fifo_count_.fetch_sub(1, std::memory_order_relaxed);
      r->engine_next = nullptr;
      CompleteLocally(r, -ECANCELED, Origin::kLocal, /*locked=*/true);
      return {};
    }
  }
  if (sync_cancel_) {
    struct io_uring_sync_cancel_reg reg = {};
    reg.addr = reinterpret_cast<uint64_t>(req);
    reg.fd = -1;
    // No waiting: a request that already started is reported as such (with
    // -1 the kernel would wait until it finished, then answer "cancelled").
    reg.timeout.tv_sec = 0;
    reg.timeout.tv_nsec = 0;
    const int r = sys::UringRegisterSyncCancel(&ring_, &reg);
    if (r == 0) return {};  // it completes with -ECANCELED
    // Found in an io-wq worker: the kernel flagged it, and a worker that has
    // picked it but not started it fails it with -ECANCELED (EALREADY), or
    // the wait for the cancellation ran out (ETIME). Either way it may still
    // complete with -ECANCELED, or with its result: what OK promises.
    if (r == -EALREADY || r == -ETIME) return {};
    if (r == -ENOENT) {
      return Status::Error(
          Errc::kNotCancellable,
          "io_uring: Cancel(" + DescribeAsked(*req) +
              "): the kernel no longer holds it (it completed); it will "
              "complete normally");
    }
    if (r != -EINVAL && r != -EOPNOTSUPP) {
      return Status::FromErrno(
          -r, "io_uring: sync cancel of " + DescribeAsked(*req));
    }
    sync_cancel_ = false;  // kernel before 6.0: use an ASYNC_CANCEL SQE
  }
  std::lock_guard<std::mutex> lock(submit_mu_);
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    return Status::Error(Errc::kQueueFull, "io_uring: Cancel: no SQE free");
  }
  io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(req), 0);
  io_uring_sqe_set_data64(sqe, kCancelTag);
  (void)Pump(false, nullptr);
  return {};  // requested: the request completes with -ECANCELED or its result
}

Result<int> IoUringEngine::NotifyFd() {
  if (notify_fd_ < 0) {
    return Status::Error(Errc::kUnsupported,
                         "io_uring: NotifyFd: the engine was created with "
                         "notify_fd = false");
  }
  return notify_fd_;
}

Status IoUringEngine::RegisterBuffers(std::span<const iovec> buffers) {
  std::lock_guard<std::mutex> lock(submit_mu_);
  if (in_kernel_.load(std::memory_order_relaxed) != 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "io_uring: RegisterBuffers with requests in flight");
  }
  if (fixed_buffers_ != 0) {
    (void)io_uring_unregister_buffers(&ring_);
    fixed_buffers_ = 0;
  }
  if (buffers.empty()) return {};
  uint64_t bytes = 0;
  for (const iovec& v : buffers) bytes += v.iov_len;
  const int r = sys::UringRegisterBuffers(
      &ring_, buffers.data(), static_cast<unsigned>(buffers.size()));
  if (r < 0) {
    std::string msg = "io_uring: io_uring_register_buffers(" +
                      std::to_string(buffers.size()) + " buffers, " +
                      std::to_string(bytes / 1024) + " KiB)";
    if (r == -ENOMEM || r == -EPERM) {
      msg +=
          ": the kernel pins registered buffers against RLIMIT_MEMLOCK, "
          "which is " +
          MemlockText() +
          " here; raise it (ulimit -l, LimitMEMLOCK=) or register fewer or "
          "smaller buffers";
    }
    return Status::FromErrno(-r, std::move(msg));
  }
  fixed_buffers_ = static_cast<unsigned>(buffers.size());
  return {};
}

Status IoUringEngine::RegisterFiles(std::span<const int> fds) {
  std::lock_guard<std::mutex> lock(submit_mu_);
  if (in_kernel_.load(std::memory_order_relaxed) != 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "io_uring: RegisterFiles with requests in flight");
  }
  if (!file_slots_.empty()) {
    (void)io_uring_unregister_files(&ring_);
    file_slots_.clear();
  }
  if (fds.empty()) return {};
  const int r = sys::UringRegisterFiles(&ring_, fds.data(),
                                        static_cast<unsigned>(fds.size()));
  if (r < 0) {
    return Status::FromErrno(-r, "io_uring: io_uring_register_files(" +
                                     std::to_string(fds.size()) + " fds)");
  }
  int max_fd = -1;
  for (int fd : fds) max_fd = std::max(max_fd, fd);
  file_slots_.assign(static_cast<size_t>(max_fd) + 1, -1);
  for (size_t i = 0; i < fds.size(); ++i) {
    if (fds[i] >= 0)
      file_slots_[static_cast<size_t>(fds[i])] = static_cast<int>(i);
  }
  return {};
}

Status IoUringEngine::Shutdown(std::chrono::nanoseconds timeout) {
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;
  shutdown_.store(true, std::memory_order_seq_cst);
  // Let submitters and cancellers that got in before the flag finish (a
  // submitter retrying EAGAIN sees the flag and stops).
  while (users_.load(std::memory_order_acquire) != 0) {
    if (!forever && Clock::now() >= deadline) {
      return Status::Error(
          Errc::kTimedOut,
          "io_uring: Shutdown: a Submit or Cancel call was "
          "still running at the deadline; call Shutdown again");
    }
    std::this_thread::yield();
  }
  WakeReaper(/*locked=*/false);

  ReaperLock lock(&gate_, timeout, deadline);
  if (!lock.owns_lock()) {
    return Status::Error(Errc::kTimedOut,
                         "io_uring: Shutdown: a reaper held the ring past the "
                         "deadline; call Shutdown again");
  }
  if (destroyed_ || !ring_ready_) return {};
  {
    // Requests that never reached the kernel complete as cancelled.
    std::lock_guard<std::mutex> slock(submit_mu_);
    if (!options_.sqpoll) RetractUnconsumed();
    while (Request* r = FifoPopFront()) {
      CompleteLocally(r, -ECANCELED, Origin::kLocal, /*locked=*/true);
    }
  }
  // Only requests matter here: a wake-up NOP still queued holds no memory of
  // ours, and io_uring_queue_exit disposes of it.
  while (in_kernel_.load(std::memory_order_relaxed) > 0) {
    std::chrono::nanoseconds left = kForever;
    if (!forever) {
      left = deadline - Clock::now();
      if (left.count() <= 0) break;
    }
    if (left.count() < 0 || left > std::chrono::milliseconds(100)) {
      left = std::chrono::milliseconds(100);
    }
    (void)CollectToDone(left);
  }
  const int64_t still = in_kernel_.load(std::memory_order_relaxed);
  if (still > 0) {
    return Status::Error(
        Errc::kTimedOut,
        "io_uring: Shutdown: " + std::to_string(still) +
            " requests still in flight at the deadline; the kernel still owns "
            "them and their buffers; call Shutdown again (the destructor "
            "waits)");
  }
  TsanRelease(&ring_mapping_sync);  // our last use of the rings is above
  io_uring_queue_exit(&ring_);
  ring_ready_ = false;
  destroyed_ = true;
  return {};
}

}  // namespace

Result<std::unique_ptr<Engine>> MakeIoUringEngine(
    const EngineOptions& options) {
  auto engine = std::make_unique<IoUringEngine>(options);
  if (Status s = engine->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace aiokit::internal
