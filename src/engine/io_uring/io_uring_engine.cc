// The io_uring engine, through liburing (Debian's liburing-dev, 2.3). A backend
// of EngineCore (src/engine/core/), which keeps the engine contract; this
// file is what is particular to io_uring:
//
//   Init      io_uring_queue_init_params with the flags this kernel accepts:
//             SINGLE_ISSUER + DEFER_TASKRUN (or COOP_TASKRUN) + TASKRUN_FLAG
//             when the caller promises one thread, SUBMIT_ALL, and SQPOLL or
//             IOPOLL when asked. Each optional flag the kernel refuses is
//             dropped and noted in Capabilities::fallbacks. FEAT_NODROP and
//             FEAT_EXT_ARG are required.
//   Offer     one SQE per request (two when the request has its own eventfd:
//             the request, hard-linked to an 8-byte write to that eventfd).
//             Requests beyond the in-flight cap (the CQ's size, so the CQ never
//             overflows) wait in a FIFO, in order, and go as completions free
//             room. io_uring_enter may consume fewer SQEs than offered: the
//             rest go with the next enter. When an enter takes nothing
//             (EAGAIN, EBUSY) or fails, the SQEs of this offer that the kernel
//             did not take are taken back out of the ring and the requests
//             returned to the core, which retries them with its RetryPolicy.
//   Drain     the CQ ring in user space; io_uring_enter (GETEVENTS) only to
//             run deferred task work or flush an overflowed CQ.
//   Sleep     io_uring_enter(GETEVENTS, one completion, EXT_ARG timeout); a
//             NOP that the reaper discards is the wake-up.
//   Cancel    a request still in the FIFO is taken back; one in the kernel
//             through IORING_REGISTER_SYNC_CANCEL (else an ASYNC_CANCEL SQE),
//             which can stop it only before it starts.
//
// Concurrency: submit_mu_ guards the SQ ring and the FIFO; the core's reaper
// gate guards the CQ ring. Lock order: the reaper gate, then submit_mu_; a
// submitter only try-locks the reaper gate. Without
// EngineOptions::single_thread, completions are delivered by task work that
// interrupts the submitting thread (no COOP_TASKRUN, which could leave them
// waiting while that thread computes in user space). io_uring ties a request to
// the thread that submitted it: when that thread exits, the kernel cancels what
// it has not started, and such requests complete with -ECANCELED.

#include <fcntl.h>
#include <liburing.h>
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
#include "engine/core/backend.h"
#include "engine/core/engine_core.h"
#include "engine/engines.h"
#include "engine/valgrind.h"
#include "sys/uring.h"
#include "util/strings.h"

namespace aiokit::internal {
namespace {

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

class IoUringBackend final : public BackendBase {
 public:
  static constexpr EngineKind kKind = EngineKind::kIoUring;
  explicit IoUringBackend(CoreState* core) : core_(core) {}
  ~IoUringBackend();
  IoUringBackend(const IoUringBackend&) = delete;
  IoUringBackend& operator=(const IoUringBackend&) = delete;

  Status Init(Capabilities* caps);
  OfferResult Offer(Request* const* reqs, size_t n);
  size_t Drain(Request** out, size_t max);
  // (A thread other than the owner of a single_thread ring cannot run the
  // deferred work that NeedsGetEvents reports.)
  [[nodiscard]] bool Ready() const noexcept {
    return io_uring_cq_ready(&ring_) != 0 || (NeedsGetEvents() && !Foreign());
  }
  [[nodiscard]] bool Busy() const noexcept {
    return in_kernel_.load(std::memory_order_relaxed) > 0 ||
           fifo_count_.load(std::memory_order_relaxed) != 0;
  }
  [[nodiscard]] int64_t InFlightCount() const noexcept {
    return in_kernel_.load(std::memory_order_relaxed) +
           static_cast<int64_t>(fifo_count_.load(std::memory_order_relaxed));
  }
  // Sends what waits in the FIFO when nothing in the kernel would wake a
  // sleeper, or SQEs wait in the ring after a failed enter. Never completes
  // anything itself.
  bool Help();
  Result<size_t> Sleep(uint32_t token, Request** out, size_t max,
                       std::chrono::nanoseconds timeout);
  void Wake() noexcept;
  CancelOutcome Cancel(Request* req);
  size_t TakeNotStarted(Request** out, size_t max);
  void Destroy();
  Status RegisterBuffers(std::span<const iovec> buffers);
  Status RegisterFiles(std::span<const int> fds);
  [[nodiscard]] const char* AgainText() const noexcept {
    return "io_uring_enter still returned EAGAIN/EBUSY";
  }
  [[nodiscard]] const char* FailureText() const noexcept {
    return "io_uring_enter failed";
  }

 private:
  // ---- Submission side; every one REQUIRES submit_mu_. ----
  // Writes req's SQE(s); false when the SQ ring has no room.
  bool QueueSqe(Request* req) noexcept;
  void FifoPushBack(Request* req) noexcept;
  void FifoPushFront(Request* req) noexcept;
  Request* FifoPopFront() noexcept;
  // Moves FIFO requests into the SQ ring (up to the in-flight cap) and hands
  // the ring to the kernel, again while it takes some. 0 when everything went
  // (or waits in the FIFO for room); else the errno of the enter that took
  // nothing (-EAGAIN for 0), with the SQEs left in the ring (sq_pending_).
  int Pump();
  // Publishes the SQ tail; returns the SQEs in the ring the kernel has not
  // consumed yet.
  unsigned FlushSq() noexcept;
  // Takes the SQEs the kernel has not consumed back out of the ring, to the
  // FIFO's front, in order. Not with SQPOLL (the kernel may be reading them).
  void RetractUnconsumed() noexcept;
  // The requests of the offer stamped `stamp` still in the FIFO (a suffix of
  // it), out of the FIFO. Returns how many.
  size_t GiveBack(uint64_t stamp) noexcept;
  void WakeLocked() noexcept;
  void WakeReaperLocked() noexcept;
  // SQPOLL: wakes the kernel's poller if it sleeps.
  void KickSqPoller() const noexcept;

  // ---- Completion side; every one REQUIRES the reaper gate. ----
  // Reads CQEs from the ring into out[0, max) (own SQEs' CQEs are consumed and
  // not returned).
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
    return core_->options().single_thread && sys::ThreadId() != owner_tid_;
  }

  CoreState* core_;
  struct io_uring ring_ = {};
  bool ring_ready_ = false;  // queue_init succeeded and exit not yet called
  bool registered_ring_ = false;
  bool defer_taskrun_ = false;
  bool link_eventfd_ = false;    // per-request eventfds by a linked write
  bool skip_link_cqe_ = false;   // IOSQE_CQE_SKIP_SUCCESS on that write
  bool sync_cancel_ = true;      // IORING_REGISTER_SYNC_CANCEL works
  unsigned max_in_kernel_ = 0;   // in-flight cap: the CQ ring's size less slack
  std::vector<int> file_slots_;  // fd -> registered file index, or -1
  unsigned fixed_buffers_ = 0;   // buffers registered

  // single_thread: the thread that created the ring (SINGLE_ISSUER's issuer).
  int owner_tid_ = 0;

  std::mutex submit_mu_;
  Request* fifo_head_ = nullptr;
  Request* fifo_tail_ = nullptr;
  std::atomic<size_t> fifo_count_{0};
  // SQEs wait in the SQ ring that no enter took yet (a failed enter outside
  // Offer); the reaper sends them before it sleeps.
  std::atomic<bool> sq_pending_{false};
  uint64_t submit_seq_ = 0;  // stamps an offer's requests (engine_seq)

  std::atomic<bool> wake_in_flight_{false};
  const bool on_valgrind_ = RunningOnValgrind();  // asked once, not per event
  // Requests handed to the SQ ring and not yet completed (own SQEs excluded).
  // Raised before the SQE is visible to the kernel.
  std::atomic<int64_t> in_kernel_{0};
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

Status IoUringBackend::Init(Capabilities* caps) {
  const EngineOptions& options = core_->options();
  owner_tid_ = sys::ThreadId();
  const unsigned depth = options.queue_depth;
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
  const bool single = options.single_thread;
  if (single && !options.sqpoll && options.defer_taskrun) {
    optional.push_back({IORING_SETUP_DEFER_TASKRUN, "DEFER_TASKRUN"});
  }
  if (single) optional.push_back({IORING_SETUP_SINGLE_ISSUER, "SINGLE_ISSUER"});
  if ((single || options.coop_taskrun) && !options.sqpoll) {
    optional.push_back({IORING_SETUP_COOP_TASKRUN, "COOP_TASKRUN"});
    optional.push_back({IORING_SETUP_TASKRUN_FLAG, "TASKRUN_FLAG"});
  }
  optional.push_back({IORING_SETUP_SUBMIT_ALL, "SUBMIT_ALL"});

  unsigned required = IORING_SETUP_CQSIZE;
  if (options.sqpoll) {
    required |= IORING_SETUP_SQPOLL;
    if (options.sqpoll_cpu >= 0) required |= IORING_SETUP_SQ_AFF;
  }
  if (options.iopoll) required |= IORING_SETUP_IOPOLL;

  unsigned opt_flags = 0;
  for (const Optional& o : optional) opt_flags |= o.flag;
  struct io_uring_params params;
  int r = 0;
  for (;;) {
    std::memset(&params, 0, sizeof(params));
    params.flags = required | opt_flags;
    params.cq_entries = cq_entries;
    if (options.sqpoll) {
      params.sq_thread_idle =
          static_cast<unsigned>(options.sqpoll_idle.count());
      if (options.sqpoll_cpu >= 0) {
        params.sq_thread_cpu = static_cast<unsigned>(options.sqpoll_cpu);
      }
    }
    TsanAcquire(
        &kernel_ring_mapping_sync);  // liburing writes the new rings too
    r = sys::UringQueueInit(sq_entries, &ring_, &params);
    if (r != -EINVAL || opt_flags == 0) break;
    // Give up the first optional flag still set (DEFER_TASKRUN first: it needs
    // 6.1; COOP_TASKRUN 5.19; SINGLE_ISSUER 6.0; SUBMIT_ALL 5.18), and say so.
    for (const Optional& o : optional) {
      if ((opt_flags & o.flag) != 0) {
        opt_flags &= ~o.flag;
        caps->fallbacks.push_back(std::string(o.name) +
                                  ": refused by this kernel (EINVAL)");
        // COOP_TASKRUN stands in for a refused DEFER_TASKRUN.
        break;
      }
    }
  }
  if (r < 0) {
    if (r == -EINVAL && options.sqpoll) {
      return Status::FromErrno(EINVAL, "io_uring: SQPOLL refused");
    }
    if (r == -EPERM && options.sqpoll) {
      Status s = SetupError(EPERM, sq_entries);
      return {s.code(),
              s.context() + " (SQPOLL needs CAP_SYS_NICE before 5.11)"};
    }
    return SetupError(-r, sq_entries);
  }
  ring_ready_ = true;
  // The rings may lie where another engine's were (pairs with the
  // TsanRelease before each io_uring_queue_exit).
  TsanAcquire(&kernel_ring_mapping_sync);

  // What this engine cannot do without.
  if ((params.features & IORING_FEAT_NODROP) == 0 ||
      (params.features & IORING_FEAT_EXT_ARG) == 0) {
    const char* missing = (params.features & IORING_FEAT_NODROP) == 0
                              ? "IORING_FEAT_NODROP (5.5)"
                              : "IORING_FEAT_EXT_ARG (5.11)";
    TsanRelease(&kernel_ring_mapping_sync);
    io_uring_queue_exit(&ring_);
    ring_ready_ = false;
    return Status::Error(Errc::kUnsupported,
                         std::string("io_uring: kernel too old for a needed "
                                     "feature: ") +
                             missing + " (kernel " + sys::KernelRelease() +
                             ")");
  }
  caps->single_issuer = (params.flags & IORING_SETUP_SINGLE_ISSUER) != 0;
  caps->defer_taskrun = (params.flags & IORING_SETUP_DEFER_TASKRUN) != 0;
  defer_taskrun_ = caps->defer_taskrun;
  caps->coop_taskrun = (params.flags & IORING_SETUP_COOP_TASKRUN) != 0;
  if (caps->defer_taskrun) {
    // COOP_TASKRUN was only the fallback; DEFER_TASKRUN covers it.
    caps->coop_taskrun = false;
  }
  if (!single) {
    caps->fallbacks.emplace_back(
        std::string("SINGLE_ISSUER, DEFER_TASKRUN, ") +
        (options.coop_taskrun ? "" : "COOP_TASKRUN, ") +
        "registered ring fd: not used, any thread may call "
        "(EngineOptions::single_thread is false)");
  }
  caps->sqpoll = options.sqpoll;
  caps->iopoll = options.iopoll;

  if (single) {
    if (int rr = sys::UringRegisterRingFd(&ring_); rr == 0) {
      registered_ring_ = true;
    } else {
      caps->fallbacks.push_back("registered ring fd: " + util::ErrnoText(-rr));
    }
  }
  caps->registered_ring_fd = registered_ring_;

  if (const int efd = core_->notify_fd(); efd >= 0) {
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
  link_eventfd_ = !options.iopoll && !caps->defer_taskrun;
  skip_link_cqe_ = (params.features & IORING_FEAT_CQE_SKIP) != 0;

  max_in_kernel_ =
      params.cq_entries > 16 ? params.cq_entries - 8 : params.cq_entries / 2;
  caps->user_space_reap = true;
  caps->cancel_regular_files = true;  // before they start (io-wq, FIFO)
  caps->async_buffered_io = true;
  caps->fsync = true;
  caps->rw_flags = true;
  caps->ioprio = true;
  caps->ring_entries = params.cq_entries;
  caps->fixed_buffers = true;
  caps->fixed_files = true;
  return {};
}

IoUringBackend::~IoUringBackend() {
  if (ring_ready_) {
    // Init failed after the ring was made (nothing was ever submitted).
    TsanRelease(&kernel_ring_mapping_sync);
    io_uring_queue_exit(&ring_);
  }
}

// ---------------------------------------------------------------- Submit

bool IoUringBackend::QueueSqe(Request* req) noexcept {
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
    if (!core_->options().iopoll) rwf &= ~rwf::kHipri;
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

void IoUringBackend::FifoPushBack(Request* req) noexcept {
  req->engine_next = nullptr;
  if (fifo_tail_ != nullptr) {
    fifo_tail_->engine_next = req;
  } else {
    fifo_head_ = req;
  }
  fifo_tail_ = req;
  fifo_count_.fetch_add(1, std::memory_order_relaxed);
}

void IoUringBackend::FifoPushFront(Request* req) noexcept {
  req->engine_next = fifo_head_;
  fifo_head_ = req;
  if (fifo_tail_ == nullptr) fifo_tail_ = req;
  fifo_count_.fetch_add(1, std::memory_order_relaxed);
}

Request* IoUringBackend::FifoPopFront() noexcept {
  Request* r = fifo_head_;
  if (r == nullptr) return nullptr;
  fifo_head_ = r->engine_next;
  if (fifo_head_ == nullptr) fifo_tail_ = nullptr;
  r->engine_next = nullptr;
  fifo_count_.fetch_sub(1, std::memory_order_relaxed);
  return r;
}

unsigned IoUringBackend::FlushSq() noexcept {
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

void IoUringBackend::RetractUnconsumed() noexcept {
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
    FifoPushFront(reinterpret_cast<Request*>(ud));
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

int IoUringBackend::Pump() {
  for (;;) {
    while (fifo_head_ != nullptr && in_kernel_.load(std::memory_order_relaxed) <
                                        static_cast<int64_t>(max_in_kernel_)) {
      // Counted before the kernel can see it: a completion reaped on another
      // thread never drives the count negative.
      in_kernel_.fetch_add(1, std::memory_order_relaxed);
      // Off the FIFO before QueueSqe: once its SQE is written, the request is
      // the kernel's and then its completer's (QueueSqe's TsanRelease says
      // so), and nothing here may write it again.
      Request* req = FifoPopFront();
      if (QueueSqe(req)) continue;
      FifoPushFront(req);
      in_kernel_.fetch_sub(1, std::memory_order_relaxed);
      if (!core_->options().sqpoll) break;  // SQ full: enter, then refill
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
    if (core_->options().sqpoll) {
      KickSqPoller();
      return 0;
    }
    // With DEFER_TASKRUN the same call runs the completions waiting for this
    // thread (GETEVENTS with no minimum does not wait), so that the next Reap
    // finds them in the CQ ring without a system call of its own, as fio does.
    const int r = sys::UringEnter(&ring_, registered_ring_, waiting, 0,
                                  defer_taskrun_ ? IORING_ENTER_GETEVENTS : 0,
                                  nullptr, 0);
    core_->counters().submit_calls.fetch_add(1, std::memory_order_relaxed);
    if (r > 0) {
      if (static_cast<unsigned>(r) < waiting) {
        core_->counters().partial_submits.fetch_add(1,
                                                    std::memory_order_relaxed);
      }
      continue;
    }
    // Nothing taken. EAGAIN (no memory for requests), EBUSY (overflowed
    // completions must be reaped first) and EINTR pass; anything else is an
    // error of the ring (EEXIST: a second thread on a SINGLE_ISSUER ring;
    // EOWNERDEAD: the SQPOLL thread died), which no retry fixes. The SQEs stay
    // in the ring for the next enter.
    sq_pending_.store(true, std::memory_order_relaxed);
    return r == 0 ? -EAGAIN : r;
  }
}

void IoUringBackend::Wake() noexcept {
  std::lock_guard<std::mutex> lock(submit_mu_);
  WakeLocked();
}

void IoUringBackend::WakeLocked() noexcept {
  // In single-thread mode the only reaper is the caller, who is not asleep.
  if (core_->options().single_thread || !ring_ready_) return;
  if (wake_in_flight_.exchange(true, std::memory_order_acq_rel)) return;
  WakeReaperLocked();
}

void IoUringBackend::KickSqPoller() const noexcept {
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

void IoUringBackend::WakeReaperLocked() noexcept {
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    wake_in_flight_.store(false, std::memory_order_release);
    return;
  }
  io_uring_prep_nop(sqe);
  io_uring_sqe_set_data64(sqe, kWakeTag);
  const unsigned waiting = FlushSq();
  if (core_->options().sqpoll) {
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

size_t IoUringBackend::GiveBack(uint64_t stamp) noexcept {
  size_t n = 0;
  Request* prev = nullptr;
  for (Request* r = fifo_head_; r != nullptr;) {
    Request* next = r->engine_next;
    if (r->engine_seq == stamp) {
      if (prev != nullptr) {
        prev->engine_next = next;
      } else {
        fifo_head_ = next;
      }
      if (fifo_tail_ == r) fifo_tail_ = prev;
      fifo_count_.fetch_sub(1, std::memory_order_relaxed);
      r->engine_next = nullptr;
      ++n;
    } else {
      prev = r;
    }
    r = next;
  }
  return n;
}

OfferResult IoUringBackend::Offer(Request* const* reqs, size_t n) {
  std::lock_guard<std::mutex> lock(submit_mu_);
  // Requests of earlier offers that wait in the FIFO (held by the in-flight
  // cap) were taken; only this offer's can be given back.
  const uint64_t stamp = ++submit_seq_;
  for (size_t i = 0; i < n; ++i) {
    reqs[i]->engine_seq = stamp;
    FifoPushBack(reqs[i]);
  }
  OfferResult result;
  const int r = Pump();
  if (r == 0) {
    result.taken = n;
    return result;
  }
  // The kernel took no more: what it did not consume of this offer goes back
  // to the core, in order (a suffix of the offer).
  if (!core_->options().sqpoll) RetractUnconsumed();
  const size_t back = GiveBack(stamp);
  // Requests of other offers may be back in the FIFO, or left in the ring: a
  // sleeping reaper must send them.
  if (fifo_count_.load(std::memory_order_relaxed) != 0 ||
      sq_pending_.load(std::memory_order_relaxed)) {
    WakeLocked();
  }
  result.taken = n - back;
  const bool transient = r == -EAGAIN || r == -EBUSY || r == -EINTR;
  result.kind = transient ? OfferResult::kAgain : OfferResult::kFailed;
  result.error = -r;
  return result;
}

bool IoUringBackend::NeedsGetEvents() const noexcept {
  const unsigned flags = IO_URING_READ_ONCE(*ring_.sq.kflags);
  return (flags & (IORING_SQ_CQ_OVERFLOW | IORING_SQ_TASKRUN)) != 0 ||
         (core_->options().iopoll &&
          in_kernel_.load(std::memory_order_relaxed) > 0);
}

int IoUringBackend::GetEvents() noexcept {
  core_->counters().wait_calls.fetch_add(1, std::memory_order_relaxed);
  return sys::UringEnter(&ring_, registered_ring_, 0, 0, IORING_ENTER_GETEVENTS,
                         nullptr, 0);
}

size_t IoUringBackend::DrainCq(Request** out, size_t max) noexcept {
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
    // Under valgrind: what a read wrote (valgrind cannot see it).
    if (on_valgrind_) VgAioCompleted(req->iocb, cqe->res);
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

void IoUringBackend::PumpFromReaper() noexcept {
  if (fifo_count_.load(std::memory_order_relaxed) == 0 &&
      !sq_pending_.load(std::memory_order_relaxed)) {
    return;
  }
  std::unique_lock<std::mutex> lock(submit_mu_, std::try_to_lock);
  // A submitter holding the lock pumps the FIFO itself.
  if (lock.owns_lock()) (void)Pump();
}

size_t IoUringBackend::Drain(Request** out, size_t max) {
  if (max == 0) return 0;
  size_t got = DrainCq(out, max);
  // Counted as read without a system call only when no enter preceded.
  core_->counters().ring_reaped.fetch_add(got, std::memory_order_relaxed);
  if (got == 0 && NeedsGetEvents() && !Foreign()) {
    (void)GetEvents();
    got = DrainCq(out, max);
  }
  in_kernel_.fetch_sub(static_cast<int64_t>(got), std::memory_order_relaxed);
  PumpFromReaper();
  return got;
}

bool IoUringBackend::Help() {
  if ((in_kernel_.load(std::memory_order_relaxed) == 0 &&
       fifo_count_.load(std::memory_order_relaxed) != 0) ||
      sq_pending_.load(std::memory_order_relaxed)) {
    // Nothing in the kernel would wake a sleeper, or SQEs wait in the ring
    // after a failed enter: send what waits first.
    std::lock_guard<std::mutex> lock(submit_mu_);
    (void)Pump();
  }
  return false;
}

Result<size_t> IoUringBackend::Sleep(uint32_t /*token*/, Request** out,
                                     size_t max,
                                     std::chrono::nanoseconds timeout) {
  if (Foreign()) {
    // Only the owner thread can run the deferred completions (or the kernel
    // does, when that thread exits): look again in a moment.
    std::this_thread::sleep_for(
        timeout.count() < 0
            ? std::chrono::nanoseconds(std::chrono::milliseconds(1))
            : std::min<std::chrono::nanoseconds>(timeout,
                                                 std::chrono::milliseconds(1)));
    const size_t got = DrainCq(out, max);
    in_kernel_.fetch_sub(static_cast<int64_t>(got), std::memory_order_relaxed);
    return got;
  }
  if (sq_pending_.load(std::memory_order_relaxed) &&
      (timeout.count() < 0 || timeout > std::chrono::milliseconds(1))) {
    // The kernel would not take them (EAGAIN): try again in a moment.
    timeout = std::chrono::milliseconds(1);
  }
  // Sleep in the kernel until a completion is posted (or run the deferred
  // task work that posts them).
  const bool ready = io_uring_cq_ready(&ring_) != 0;
  struct __kernel_timespec ts = ToKernelTimespec(timeout);
  struct io_uring_getevents_arg arg = {};
  if (timeout.count() >= 0 && !ready) arg.ts = reinterpret_cast<uint64_t>(&ts);
  // One completion at a time: the wake-up NOP's CQE must end the sleep
  // whatever the caller's minimum.
  const unsigned want = ready ? 0 : 1;
  const int r = sys::UringEnter(&ring_, registered_ring_, 0, want,
                                IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                                &arg, sizeof(arg));
  core_->counters().wait_calls.fetch_add(1, std::memory_order_relaxed);
  if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
    return Status::FromErrno(-r, "io_uring: io_uring_enter(GETEVENTS)");
  }
  const size_t got = DrainCq(out, max);
  in_kernel_.fetch_sub(static_cast<int64_t>(got), std::memory_order_relaxed);
  PumpFromReaper();
  return got;
}

size_t IoUringBackend::TakeNotStarted(Request** out, size_t max) {
  std::lock_guard<std::mutex> lock(submit_mu_);
  if (!core_->options().sqpoll) RetractUnconsumed();
  size_t n = 0;
  while (n < max) {
    Request* r = FifoPopFront();
    if (r == nullptr) break;
    out[n++] = r;
  }
  return n;
}

void IoUringBackend::Destroy() {
  std::lock_guard<std::mutex> lock(submit_mu_);
  // Only requests matter here: a wake-up NOP still queued holds no memory of
  // ours, and io_uring_queue_exit disposes of it.
  TsanRelease(&kernel_ring_mapping_sync);  // our last use of the rings is above
  io_uring_queue_exit(&ring_);
  ring_ready_ = false;
}

CancelOutcome IoUringBackend::Cancel(Request* req) {
  CancelOutcome o;
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
      o.taken_back = true;
      return o;
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
    if (r == 0) return o;  // it completes with -ECANCELED
    // Found in an io-wq worker: the kernel flagged it, and a worker that has
    // picked it but not started it fails it with -ECANCELED (EALREADY), or
    // the wait for the cancellation ran out (ETIME). Either way it may still
    // complete with -ECANCELED, or with its result: what OK promises.
    if (r == -EALREADY || r == -ETIME) return o;
    if (r == -ENOENT) {
      o.status = Status::Error(
          Errc::kNotCancellable,
          "io_uring: Cancel(" + DescribeAsked(*req) +
              "): the kernel no longer holds it (it completed); it will "
              "complete normally");
      return o;
    }
    if (r != -EINVAL && r != -EOPNOTSUPP) {
      o.status = Status::FromErrno(
          -r, "io_uring: sync cancel of " + DescribeAsked(*req));
      return o;
    }
    sync_cancel_ = false;  // kernel before 6.0: use an ASYNC_CANCEL SQE
  }
  std::lock_guard<std::mutex> lock(submit_mu_);
  struct io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    o.status = Status::Error(Errc::kQueueFull, "io_uring: Cancel: no SQE free");
    return o;
  }
  io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(req), 0);
  io_uring_sqe_set_data64(sqe, kCancelTag);
  (void)Pump();
  return o;  // requested: the request completes with -ECANCELED or its result
}

Status IoUringBackend::RegisterBuffers(std::span<const iovec> buffers) {
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

Status IoUringBackend::RegisterFiles(std::span<const int> fds) {
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

}  // namespace

Result<std::unique_ptr<Engine>> MakeIoUringEngine(
    const EngineOptions& options) {
  return MakeEngineOn<IoUringBackend>(options);
}

}  // namespace aiokit::internal
