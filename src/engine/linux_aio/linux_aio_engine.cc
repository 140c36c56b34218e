// The linux-aio engine: the kernel's native AIO through raw system calls
// (<linux/aio_abi.h>; libaio is not needed).
//
//   Init      io_setup(queue_depth + 1): one extra slot for the wake-up request
//   below. Submit    io_submit of the iocbs, in order. A partial submission is
//   counted and the rest sent again;
//             EAGAIN is retried with the RetryPolicy, reaping completions first
//             to make room (they are kept on the done list for the caller's
//             next Reap); a request the kernel refuses completes with that
//             -errno on the done list, and the requests after it are still
//             submitted.
//   Reap      the done list first, then the kernel's mmapped completion ring
//   read in user space; only when
//             fewer than `min` are there does it call io_getevents to wait.
//   Cancel    io_cancel; the kernel can cancel only requests whose driver has a
//   cancel method (not regular
//             files or block devices), so it is reported as kNotCancellable for
//             those.
//   Shutdown  waits for what is in flight (collecting the completions), then
//   io_destroy.
//
// Wake-ups. A reaper sleeping in io_getevents wakes only for a kernel event.
// When another thread completes a request without the kernel (a noop, a
// refusal) or shuts the engine down, it submits the engine's own wake-up
// request, a zero-length read from a pipe that the kernel completes at once,
// and the reaper discards that event. This keeps waits exact without polling.

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "engine/aio_ring.h"
#include "engine/engines.h"
#include "sys/syscalls.h"
#include "util/strings.h"

namespace aiokit::internal {
namespace {

static_assert(rwf::kHipri == RWF_HIPRI && rwf::kDsync == RWF_DSYNC &&
                  rwf::kSync == RWF_SYNC && rwf::kNowait == RWF_NOWAIT &&
                  rwf::kAppend == RWF_APPEND,
              "aiokit's RWF_* values are the kernel's");
static_assert(offsetof(Request, iocb) == 0,
              "io_event.obj must point at the Request");
static_assert(std::is_standard_layout_v<Request>,
              "a Request must be standard-layout so that &req.iocb == &req");

using Clock = std::chrono::steady_clock;

// Request::engine_state values.
constexpr uint8_t kIdle = 0;
constexpr uint8_t kInFlight = 1;
constexpr uint8_t kCompleted = 2;

// Requests handed to one io_submit call at most (the iocb pointer array lives
// on the stack).
constexpr size_t kSubmitChunk = 128;

timespec ToTimespec(std::chrono::nanoseconds d) {
  if (d.count() < 0) d = std::chrono::nanoseconds(0);
  timespec ts;
  ts.tv_sec = static_cast<time_t>(d.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(d.count() % 1000000000);
  return ts;
}

std::string ReadSysctl(const char* path) {
  std::string v = sys::ReadSmallFile(path);
  return v.empty() ? "unreadable" : v;
}

class LinuxAioEngine final : public Engine {
 public:
  explicit LinuxAioEngine(const EngineOptions& options) : options_(options) {}
  ~LinuxAioEngine() override;

  Status Init();

  [[nodiscard]] EngineKind kind() const noexcept override {
    return EngineKind::kLinuxAio;
  }
  [[nodiscard]] Capabilities GetCapabilities() const noexcept override {
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
  // Fills req->iocb from the request's fields.
  void FillIocb(Request* req) const noexcept;
  // Sends iocbs[0, n) to the kernel. Returns how many were taken care of
  // (submitted, or refused and completed); the rest could not be submitted
  // within the retry policy.
  size_t SubmitToKernel(struct iocb** iocbs, size_t n, SubmitResult* result);
  // Completes `req` without the kernel: sets rval, queues it for Reap and
  // signals its eventfd.
  void CompleteLocally(Request* req, int64_t res, Origin origin);
  // EAGAIN: collect completions so the kernel has room, or sleep `delay` if
  // someone else is reaping. Returns true when room was made.
  bool MakeRoom(std::chrono::microseconds delay);
  // Wakes a reaper sleeping in io_getevents (see the file comment).
  void WakeReaper() noexcept;
  // REQUIRES reap_mu_. Watches the ring (and the done list) for up to the spin
  // budget; true when something arrived. See EngineOptions::spin_before_wait.
  bool SpinForCompletions(Clock::time_point deadline) noexcept;

  // The done list: requests completed and not yet returned by Reap, in
  // completion order.
  void PushDone(Request* first, Request* last, size_t n);
  size_t TakeDone(Request** out, size_t max);

  // Turns a kernel event into its Request (nullptr for the wake-up request's
  // event).
  Request* OnEvent(const io_event& ev) noexcept;
  // REQUIRES reap_mu_. Reads the ring (no syscall) into out[0, max).
  size_t DrainRing(Request** out, size_t max);
  // REQUIRES reap_mu_. Moves everything the kernel has completed onto the done
  // list, waiting up to `timeout` for at least one event if the ring is empty
  // and something is in flight.
  size_t CollectToDone(std::chrono::nanoseconds timeout);
  // REQUIRES reap_mu_, nothing in flight. Releases the kernel context.
  void DestroyContext();

  EngineOptions options_;
  Capabilities caps_;

  aio_context_t ctx_ = 0;
  AioRing* ring_ = nullptr;  // null when the ring's layout is not one we know:
                             // always io_getevents
  bool destroyed_ =
      true;  // guarded by reap_mu_ (set once Init succeeded to false)

  int notify_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  bool wake_ok_ = false;
  struct iocb wake_iocb_ = {};
  char wake_byte_ = 0;
  std::atomic<bool> wake_in_flight_{false};
  std::atomic<int> waiters_{0};

  // One reaper at a time reads the ring and calls io_getevents. Timed, so that
  // a poller does not wait behind a reaper sleeping with a long timeout.
  std::timed_mutex reap_mu_;
  std::vector<io_event> events_;  // io_getevents buffer, guarded by reap_mu_
  // Adaptive spinning (guarded by reap_mu_): how often recent spins caught a
  // completion, in 1/1024ths (a moving average with weight 1/8), and waits
  // since the last spin, for the occasional probe while spinning does not pay.
  int spin_hit_rate_ = 1024;
  unsigned waits_since_spin_ = 0;

  std::mutex done_mu_;
  Request* done_head_ = nullptr;
  Request* done_tail_ = nullptr;
  // Length of the done list; seq_cst with waiters_ (a Dekker pair) so a waiter
  // and a completer never both miss each other.
  std::atomic<size_t> done_count_{0};

  // Requests the kernel owns (submitted, event not yet consumed), excluding the
  // wake-up request. Incremented before io_submit, so a fast completion reaped
  // on another thread never drives it negative.
  std::atomic<int64_t> kernel_in_flight_{0};
  // Threads inside Submit or Cancel: the context must outlive them.
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

// RAII count of a thread inside Submit or Cancel.
class UserGuard {
 public:
  explicit UserGuard(std::atomic<int>* users) : users_(users) {
    // seq_cst with Shutdown's store of shutdown_ and its read of users_: either
    // Shutdown sees us and waits, or we see shutdown_ and leave.
    users_->fetch_add(1, std::memory_order_seq_cst);
  }
  ~UserGuard() { users_->fetch_sub(1, std::memory_order_release); }
  UserGuard(const UserGuard&) = delete;
  UserGuard& operator=(const UserGuard&) = delete;

 private:
  std::atomic<int>* users_;
};

Status LinuxAioEngine::Init() {
  const unsigned depth = options_.queue_depth;
  if (depth == 0) {
    return Status::Error(
        Errc::kInvalidArgument,
        "linux-aio: queue_depth 0: a context needs at least one slot "
        "(io_setup refuses 0 with EINVAL)");
  }
  if (depth > (1U << 24)) {
    return Status::Error(
        Errc::kInvalidArgument,
        "linux-aio: queue_depth " + std::to_string(depth) +
            " is above the kernel's limit for one context (about 8M events)");
  }
  // One more slot than asked, for the wake-up request.
  const unsigned nr = depth + 1;
  aio_context_t ctx = 0;  // io_setup requires *ctx == 0
  if (long r = sys::IoSetup(nr, &ctx); r < 0) {
    const int err = static_cast<int>(-r);
    std::string msg =
        "linux-aio: io_setup(nr_events=" + std::to_string(nr) + ")";
    switch (err) {
      case EAGAIN:
        msg +=
            ": the system-wide AIO event limit is reached: fs.aio-max-nr is " +
            ReadSysctl("/proc/sys/fs/aio-max-nr") +
            " and fs.aio-nr (events in use) is " +
            ReadSysctl("/proc/sys/fs/aio-nr") + "; this context needs " +
            std::to_string(nr) +
            ". Raise fs.aio-max-nr (sysctl -w fs.aio-max-nr=N) or lower "
            "queue_depth";
        break;
      case ENOSYS:
        msg += ": this kernel has no native AIO (CONFIG_AIO is off)";
        break;
      case EPERM:
        msg += ": refused by the process's seccomp filter or container policy";
        break;
      case EINVAL:
        msg += ": the kernel refuses this many events for one context";
        break;
      case ENOMEM:
        msg += ": the kernel could not allocate the completion ring";
        break;
      default:
        break;
    }
    return Status::FromErrno(err, std::move(msg));
  }
  ctx_ = ctx;
  destroyed_ = false;

  // The context id is the address of the kernel's completion ring, mapped into
  // our address space.
  auto* ring = reinterpret_cast<AioRing*>(ctx_);
  if (AioRingUsable(ring)) ring_ = ring;
  events_.resize(ring_ != nullptr ? ring_->nr : 2 * static_cast<size_t>(nr));

  if (options_.notify_fd) {
    const int efd = sys::Eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
      return Status::FromErrno(-efd, "linux-aio: eventfd() for NotifyFd");
    }
    notify_fd_ = efd;
  }

  // The wake-up request: a zero-length read from a pipe completes at once with
  // 0. Check that this kernel does so; if not, waits fall back to short slices.
  if (sys::Pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) == 0) {
    wake_iocb_.aio_lio_opcode = IOCB_CMD_PREAD;
    wake_iocb_.aio_fildes = static_cast<uint32_t>(wake_pipe_[0]);
    wake_iocb_.aio_buf = reinterpret_cast<uint64_t>(&wake_byte_);
    wake_iocb_.aio_nbytes = 0;
    struct iocb* p = &wake_iocb_;
    if (sys::real::IoSubmit(ctx_, 1, &p) == 1) {
      io_event ev;
      timespec ts{1, 0};
      const long got = sys::real::IoGetevents(ctx_, 1, 1, &ev, &ts);
      wake_ok_ = got == 1 && ev.obj == reinterpret_cast<uint64_t>(&wake_iocb_);
    }
  }

  const sys::KernelVersion kv = sys::RunningKernel();
  caps_.user_space_reap = ring_ != nullptr;
  caps_.cancel_regular_files = false;
  caps_.async_buffered_io =
      false;  // buffered I/O runs synchronously inside io_submit
  caps_.fsync = kv.AtLeast(4, 18);
  caps_.rw_flags = kv.AtLeast(4, 13);
  caps_.ioprio = kv.AtLeast(5, 0);
  caps_.request_eventfd = true;
  caps_.notify_fd = notify_fd_ >= 0;
  caps_.ring_entries = ring_ != nullptr ? ring_->nr : nr;
  return {};
}

LinuxAioEngine::~LinuxAioEngine() {
  // Waits as long as the kernel takes: the buffers of requests in flight must
  // not be freed under it.
  (void)Shutdown(kForever);
  if (notify_fd_ >= 0) sys::Close(notify_fd_);
  for (int& fd : wake_pipe_) {
    if (fd >= 0) sys::Close(fd);
  }
}

EngineStats LinuxAioEngine::Stats() const noexcept {
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

void LinuxAioEngine::FillIocb(Request* req) const noexcept {
  struct iocb& cb = req->iocb;
  cb.aio_data = reinterpret_cast<uint64_t>(req);
  cb.aio_key = 0;
  cb.aio_rw_flags = static_cast<__kernel_rwf_t>(req->rw_flags);
  cb.aio_reqprio = static_cast<int16_t>(req->has_ioprio ? req->ioprio : 0);
  cb.aio_fildes = static_cast<uint32_t>(req->fd);
  cb.aio_reserved2 = 0;
  cb.aio_flags = 0;
  cb.aio_resfd = 0;
  switch (req->op) {
    case Op::kRead:
    case Op::kWrite:
      cb.aio_lio_opcode =
          req->op == Op::kRead ? IOCB_CMD_PREAD : IOCB_CMD_PWRITE;
      cb.aio_buf = reinterpret_cast<uint64_t>(req->iov[0].iov_base);
      cb.aio_nbytes = req->length;
      cb.aio_offset = static_cast<int64_t>(req->offset);
      break;
    case Op::kReadv:
    case Op::kWritev:
      cb.aio_lio_opcode =
          req->op == Op::kReadv ? IOCB_CMD_PREADV : IOCB_CMD_PWRITEV;
      cb.aio_buf = reinterpret_cast<uint64_t>(req->iov.data());
      cb.aio_nbytes = req->iov.size();
      cb.aio_offset = static_cast<int64_t>(req->offset);
      break;
    case Op::kFsync:
    case Op::kFdatasync:
    case Op::kNoop:
      // The kernel requires buf, nbytes, offset and rw_flags to be 0 for fsync.
      cb.aio_lio_opcode =
          req->op == Op::kFdatasync ? IOCB_CMD_FDSYNC : IOCB_CMD_FSYNC;
      cb.aio_buf = 0;
      cb.aio_nbytes = 0;
      cb.aio_offset = 0;
      break;
  }
  if (req->has_ioprio) cb.aio_flags |= IOCB_FLAG_IOPRIO;
  if (req->resfd >= 0) {
    cb.aio_flags |= IOCB_FLAG_RESFD;
    cb.aio_resfd = static_cast<uint32_t>(req->resfd);
  } else if (notify_fd_ >= 0) {
    cb.aio_flags |= IOCB_FLAG_RESFD;
    cb.aio_resfd = static_cast<uint32_t>(notify_fd_);
  }
}

SubmitResult LinuxAioEngine::Submit(std::span<Request* const> batch) {
  SubmitResult result;
  UserGuard guard(&users_);
  if (shutdown_.load(std::memory_order_seq_cst)) {
    result.status =
        Status::Error(Errc::kShutdown, "linux-aio: Submit after Shutdown");
    return result;
  }

  struct iocb* chunk[kSubmitChunk];
  size_t nchunk = 0;
  // Sends the chunk, which holds batch[i - nchunk, i). False when the retry
  // policy ran out.
  auto flush = [&](size_t i) -> bool {
    if (nchunk == 0) return true;
    const size_t done = SubmitToKernel(chunk, nchunk, &result);
    const size_t first = i - nchunk;
    nchunk = 0;
    if (done == static_cast<size_t>(i - first)) return true;
    result.accepted = first + done;
    result.status = Status::Error(
        Errc::kQueueFull, "linux-aio: io_submit still returned EAGAIN after " +
                              std::to_string(options_.eagain.max_retries) +
                              " retries; " + std::to_string(i - first - done) +
                              " requests of this chunk (and those after them) "
                              "were not submitted");
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
          "linux-aio: batch[" + std::to_string(i) + "]: " +
              (req == nullptr ? std::string("null request")
                              : Describe(*req) +
                                    ": submitted again before it was reaped"));
      return result;
    }
    if (req->op == Op::kNoop) {
      if (!flush(i)) return result;
      req->engine_state.store(kInFlight, std::memory_order_relaxed);
      submitted_.fetch_add(1, std::memory_order_relaxed);
      CompleteLocally(req, 0, Origin::kLocal);
      continue;
    }
    Status valid = req->Validate();
    if (!valid.ok() &&
        (options_.check_alignment || !valid.Is(Errc::kMisaligned))) {
      if (!flush(i)) return result;
      req->engine_state.store(kInFlight, std::memory_order_relaxed);
      submitted_.fetch_add(1, std::memory_order_relaxed);
      refused_.fetch_add(1, std::memory_order_relaxed);
      CompleteLocally(req, -EINVAL, Origin::kRefused);
      continue;
    }
    FillIocb(req);
    req->rval = kNotCompleted;
    req->origin = Origin::kNone;
    // Before io_submit: the completion may be reaped on another thread before
    // io_submit returns.
    req->engine_state.store(kInFlight, std::memory_order_relaxed);
    chunk[nchunk++] = &req->iocb;
    if (nchunk == kSubmitChunk && !flush(i + 1)) return result;
  }
  if (!flush(batch.size())) return result;
  result.accepted = batch.size();
  return result;
}

size_t LinuxAioEngine::SubmitToKernel(struct iocb** iocbs, size_t n,
                                      SubmitResult* result) {
  kernel_in_flight_.fetch_add(static_cast<int64_t>(n),
                              std::memory_order_relaxed);
  size_t done = 0;
  unsigned attempts = 0;
  std::chrono::microseconds delay = options_.eagain.initial_delay;
  while (done < n) {
    const long r =
        sys::IoSubmit(ctx_, static_cast<long>(n - done), iocbs + done);
    submit_calls_.fetch_add(1, std::memory_order_relaxed);
    if (r > 0) {
      const auto took = static_cast<size_t>(r);
      if (took < n - done)
        partial_submits_.fetch_add(1, std::memory_order_relaxed);
      submitted_.fetch_add(took, std::memory_order_relaxed);
      done += took;
      // As BlueStore does: progress restarts the retry budget.
      attempts = 0;
      delay = options_.eagain.initial_delay;
      continue;
    }
    if (r == -EAGAIN || r == -EINTR || r == 0) {
      // No room (or nothing taken): make room and retry, within the policy.
      if (attempts >= options_.eagain.max_retries) break;
      ++attempts;
      ++result->retries;
      eagain_retries_.fetch_add(1, std::memory_order_relaxed);
      if (!MakeRoom(delay)) std::this_thread::sleep_for(delay);
      delay *= 2;
      continue;
    }
    // The kernel refused iocbs[done] (EBADF, EINVAL, EFAULT, ...): it completes
    // with that error, and the requests after it are still submitted.
    Request* req = reinterpret_cast<Request*>(iocbs[done]);
    kernel_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    submitted_.fetch_add(1, std::memory_order_relaxed);
    refused_.fetch_add(1, std::memory_order_relaxed);
    CompleteLocally(req, r, Origin::kRefused);
    ++done;
  }
  if (done < n) {
    // Not submitted: give them back to the caller untouched.
    kernel_in_flight_.fetch_sub(static_cast<int64_t>(n - done),
                                std::memory_order_relaxed);
    for (size_t i = done; i < n; ++i) {
      reinterpret_cast<Request*>(iocbs[i])->engine_state.store(
          kIdle, std::memory_order_relaxed);
    }
  }
  return done;
}

void LinuxAioEngine::CompleteLocally(Request* req, int64_t res, Origin origin) {
  req->rval = res;
  req->origin = origin;
  // As the kernel would: the request's own eventfd, else the engine's.
  const int efd = req->resfd >= 0 ? req->resfd : notify_fd_;
  PushDone(req, req, 1);
  if (efd >= 0) (void)sys::EventfdWrite(efd, 1);
}

void LinuxAioEngine::PushDone(Request* first, Request* last, size_t n) {
  {
    std::lock_guard<std::mutex> lock(done_mu_);
    last->engine_next = nullptr;
    if (done_tail_ != nullptr) {
      done_tail_->engine_next = first;
    } else {
      done_head_ = first;
    }
    done_tail_ = last;
  }
  // seq_cst: see done_count_ and waiters_.
  done_count_.fetch_add(n, std::memory_order_seq_cst);
  if (waiters_.load(std::memory_order_seq_cst) > 0) WakeReaper();
}

size_t LinuxAioEngine::TakeDone(Request** out, size_t max) {
  if (max == 0 || done_count_.load(std::memory_order_acquire) == 0) return 0;
  size_t n = 0;
  std::lock_guard<std::mutex> lock(done_mu_);
  while (done_head_ != nullptr && n < max) {
    Request* r = done_head_;
    done_head_ = r->engine_next;
    r->engine_next = nullptr;
    out[n++] = r;
  }
  if (done_head_ == nullptr) done_tail_ = nullptr;
  done_count_.fetch_sub(n, std::memory_order_relaxed);
  return n;
}

void LinuxAioEngine::WakeReaper() noexcept {
  if (!wake_ok_ || wake_in_flight_.exchange(true, std::memory_order_acq_rel))
    return;
  struct iocb* p = &wake_iocb_;
  // Straight to the kernel: a fault-injection hook must not swallow the
  // engine's own wake-up.
  if (sys::real::IoSubmit(ctx_, 1, &p) != 1)
    wake_in_flight_.store(false, std::memory_order_release);
}

bool LinuxAioEngine::SpinForCompletions(Clock::time_point deadline) noexcept {
  if (ring_ == nullptr || options_.spin_before_wait.count() <= 0 ||
      kernel_in_flight_.load(std::memory_order_relaxed) <= 0) {
    return false;
  }
  // Adaptive: spin while at least half of the recent spins caught a completion
  // (a fast device), else only every 16th wait, to notice when that changes. On
  // a disk, whose completions take longer than the budget, this bounds the CPU
  // spent spinning to budget / 16 per wait.
  constexpr unsigned kProbeEvery = 16;
  if (options_.adaptive_spin && spin_hit_rate_ < 512 &&
      ++waits_since_spin_ < kProbeEvery) {
    return false;
  }
  waits_since_spin_ = 0;
  const Clock::time_point until =
      std::min(deadline, Clock::now() + options_.spin_before_wait);
  bool hit = false;
  do {
    for (int i = 0; i < 32 && !hit; ++i) {
      hit = AioRingPending(ring_) != 0 ||
            done_count_.load(std::memory_order_relaxed) != 0;
      __builtin_ia32_pause();
    }
  } while (!hit && Clock::now() < until);
  spin_hit_rate_ += ((hit ? 1024 : 0) - spin_hit_rate_) / 8;
  return hit;
}

Request* LinuxAioEngine::OnEvent(const io_event& ev) noexcept {
  if (ev.obj == reinterpret_cast<uint64_t>(&wake_iocb_)) {
    wake_in_flight_.store(false, std::memory_order_release);
    return nullptr;
  }
  auto* req = reinterpret_cast<Request*>(ev.obj);
  req->rval = ev.res;
  req->origin = Origin::kEngine;
  kernel_in_flight_.fetch_sub(1, std::memory_order_relaxed);
  return req;
}

size_t LinuxAioEngine::DrainRing(Request** out, size_t max) {
  if (ring_ == nullptr || max == 0) return 0;
  size_t n = 0;
  const size_t consumed = ConsumeAioRing(ring_, max, [&](const io_event& ev) {
    if (Request* r = OnEvent(ev); r != nullptr) out[n++] = r;
  });
  ring_reaped_.fetch_add(consumed, std::memory_order_relaxed);
  return n;
}

Result<size_t> LinuxAioEngine::Reap(std::span<Request*> out, size_t min,
                                    std::chrono::nanoseconds timeout) {
  if (out.empty()) return size_t{0};
  min = std::min(min, out.size());
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;

  std::unique_lock<std::timed_mutex> lock(reap_mu_, std::defer_lock);
  if (timeout.count() == 0) {
    (void)lock.try_lock();
  } else if (forever) {
    lock.lock();
  } else {
    (void)lock.try_lock_until(deadline);
  }
  size_t n = TakeDone(out.data(), out.size());
  if (!lock.owns_lock()) {
    // Another thread is reaping; what it has not taken is on the done list.
    for (size_t i = 0; i < n; ++i)
      out[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
    completed_.fetch_add(n, std::memory_order_relaxed);
    return n;
  }
  if (!destroyed_) n += DrainRing(out.data() + n, out.size() - n);

  while (n < min && !destroyed_) {
    if (shutdown_.load(std::memory_order_acquire) &&
        kernel_in_flight_.load(std::memory_order_relaxed) == 0 &&
        done_count_.load(std::memory_order_acquire) == 0) {
      break;  // nothing more can arrive
    }
    std::chrono::nanoseconds left = kForever;
    if (!forever) {
      left = deadline - Clock::now();
      if (left.count() <= 0) break;
    }
    // Announce the wait, then look once more (a Dekker pair with PushDone): a
    // completer either sees us waiting and wakes us, or we see its request
    // here.
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    if (done_count_.load(std::memory_order_seq_cst) != 0) {
      waiters_.fetch_sub(1, std::memory_order_relaxed);
      n += TakeDone(out.data() + n, out.size() - n);
      continue;
    }
    if (SpinForCompletions(deadline)) {
      waiters_.fetch_sub(1, std::memory_order_relaxed);
      n += TakeDone(out.data() + n, out.size() - n);
      n += DrainRing(out.data() + n, out.size() - n);
      continue;
    }
    if (!wake_ok_ && (forever || left > std::chrono::milliseconds(10))) {
      // No wake-up request here: wait in slices.
      left = std::chrono::milliseconds(10);
    }
    timespec ts = ToTimespec(left);
    const size_t want = std::min(out.size() - n, events_.size());
    const long r =
        sys::IoGetevents(ctx_, static_cast<long>(std::min(min - n, want)),
                         static_cast<long>(want), events_.data(),
                         left.count() < 0 ? nullptr : &ts);
    waiters_.fetch_sub(1, std::memory_order_relaxed);
    wait_calls_.fetch_add(1, std::memory_order_relaxed);
    if (r == -EINTR) continue;
    if (r < 0) {
      if (n != 0) break;  // hand over what we have; the error will show again
      return Status::FromErrno(
          static_cast<int>(-r),
          "linux-aio: io_getevents(min_nr=" + std::to_string(min) +
              ", nr=" + std::to_string(want) + ")");
    }
    for (long i = 0; i < r; ++i) {
      if (Request* req = OnEvent(events_[static_cast<size_t>(i)]);
          req != nullptr)
        out[n++] = req;
    }
    n += TakeDone(out.data() + n, out.size() - n);
  }
  lock.unlock();

  for (size_t i = 0; i < n; ++i)
    out[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
  completed_.fetch_add(n, std::memory_order_relaxed);
  if (n == 0 && shutdown_.load(std::memory_order_acquire) &&
      kernel_in_flight_.load(std::memory_order_relaxed) == 0 &&
      done_count_.load(std::memory_order_acquire) == 0) {
    return Status::Error(
        Errc::kShutdown,
        "linux-aio: engine shut down and nothing left to reap");
  }
  return n;
}

bool LinuxAioEngine::MakeRoom(std::chrono::microseconds delay) {
  std::unique_lock<std::timed_mutex> lock(reap_mu_, std::try_to_lock);
  if (!lock.owns_lock())
    return false;  // a reaper is at work and frees slots as it reaps
  return CollectToDone(delay) != 0;
}

size_t LinuxAioEngine::CollectToDone(std::chrono::nanoseconds timeout) {
  if (destroyed_) return 0;
  // Completions collected here are kept for the caller's next Reap. Their
  // eventfds were already signalled by the kernel, so they are not signalled
  // again.
  constexpr size_t kBatch = 256;
  Request* got[kBatch];
  size_t total = 0;
  auto push = [&](size_t n) {
    if (n == 0) return;
    for (size_t i = 1; i < n; ++i) got[i - 1]->engine_next = got[i];
    PushDone(got[0], got[n - 1], n);
    total += n;
  };
  for (;;) {
    const size_t n = DrainRing(got, kBatch);
    push(n);
    if (n < kBatch) break;
  }
  if (total != 0) return total;
  if (kernel_in_flight_.load(std::memory_order_relaxed) <= 0 &&
      !wake_in_flight_.load(std::memory_order_acquire)) {
    return 0;  // nothing can complete: do not sleep
  }
  timespec ts = ToTimespec(timeout);
  const size_t want = std::min(kBatch, events_.size());
  const long r =
      sys::IoGetevents(ctx_, 1, static_cast<long>(want), events_.data(),
                       timeout.count() < 0 ? nullptr : &ts);
  wait_calls_.fetch_add(1, std::memory_order_relaxed);
  size_t n = 0;
  for (long i = 0; i < r; ++i) {
    if (Request* req = OnEvent(events_[static_cast<size_t>(i)]); req != nullptr)
      got[n++] = req;
  }
  push(n);
  return total;
}

Status LinuxAioEngine::Cancel(Request* req) {
  if (req == nullptr ||
      req->engine_state.load(std::memory_order_relaxed) != kInFlight) {
    return Status::Error(
        Errc::kInvalidArgument,
        "linux-aio: Cancel: " + (req == nullptr
                                     ? std::string("null request")
                                     : Describe(*req) + " is not in flight"));
  }
  if (req->origin != Origin::kNone) {
    return Status::Error(Errc::kNotCancellable,
                         "linux-aio: Cancel: " + Describe(*req) +
                             ": already completed, not yet reaped");
  }
  UserGuard guard(&users_);
  if (shutdown_.load(std::memory_order_seq_cst)) {
    return Status::Error(Errc::kShutdown, "linux-aio: Cancel after Shutdown");
  }
  io_event ev = {};
  const long r = sys::IoCancel(ctx_, &req->iocb, &ev);
  if (r == -EINPROGRESS)
    return {};  // cancelled; the event comes through the ring
  if (r == 0) {
    // Kernels before 4.19 returned the cancelled event here instead of in the
    // ring.
    kernel_in_flight_.fetch_sub(1, std::memory_order_relaxed);
    CompleteLocally(req, ev.res, Origin::kEngine);
    return {};
  }
  if (r == -EINVAL || r == -EAGAIN) {
    return Status::Error(Errc::kNotCancellable,
                         "linux-aio: io_cancel(" + Describe(*req) +
                             ") returned " +
                             util::ErrnoText(static_cast<int>(-r)) +
                             ": kernel AIO cancels only requests whose driver "
                             "has a cancel method (such as USB "
                             "gadget endpoints), never regular files or block "
                             "devices, and not a request that "
                             "already completed; it will complete normally");
  }
  return Status::FromErrno(static_cast<int>(-r),
                           "linux-aio: io_cancel(" + Describe(*req) + ")");
}

Result<int> LinuxAioEngine::NotifyFd() {
  if (notify_fd_ < 0) {
    return Status::Error(
        Errc::kUnsupported,
        "linux-aio: NotifyFd: the engine was created with notify_fd = false");
  }
  return notify_fd_;
}

void LinuxAioEngine::DestroyContext() {
  if (destroyed_) return;
  // Nothing is in flight, so io_destroy returns at once (it would otherwise
  // wait for the I/O).
  (void)sys::IoDestroy(ctx_);
  ctx_ = 0;
  ring_ = nullptr;
  destroyed_ = true;
  wake_ok_ = false;
}

Status LinuxAioEngine::Shutdown(std::chrono::nanoseconds timeout) {
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;
  shutdown_.store(true, std::memory_order_seq_cst);
  // Let submitters and cancellers that got in before the flag finish.
  while (users_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  // A reaper sleeping in io_getevents with nothing in flight would hold the
  // reap lock forever.
  WakeReaper();

  std::unique_lock<std::timed_mutex> lock(reap_mu_, std::defer_lock);
  if (forever) {
    lock.lock();
  } else if (!lock.try_lock_until(deadline)) {
    return Status::Error(Errc::kTimedOut,
                         "linux-aio: Shutdown: a reaper held the ring past the "
                         "deadline; call Shutdown again");
  }
  if (destroyed_) return {};
  while (kernel_in_flight_.load(std::memory_order_relaxed) > 0 ||
         wake_in_flight_.load(std::memory_order_acquire)) {
    std::chrono::nanoseconds left = kForever;
    if (!forever) {
      left = deadline - Clock::now();
      if (left.count() <= 0) break;
    }
    // Wait in slices so that a stalled wake-up request cannot stall Shutdown.
    if (left.count() < 0 || left > std::chrono::milliseconds(100)) {
      left = std::chrono::milliseconds(100);
    }
    (void)CollectToDone(left);
  }
  const int64_t left_in_flight =
      kernel_in_flight_.load(std::memory_order_relaxed);
  if (left_in_flight > 0) {
    return Status::Error(
        Errc::kTimedOut,
        "linux-aio: Shutdown: " + std::to_string(left_in_flight) +
            " requests still in flight at the deadline; the kernel still owns "
            "them "
            "and their buffers; call Shutdown again (the destructor waits for "
            "them)");
  }
  DestroyContext();
  return {};
}

}  // namespace

Result<std::unique_ptr<Engine>> MakeLinuxAioEngine(
    const EngineOptions& options) {
  auto engine = std::make_unique<LinuxAioEngine>(options);
  if (Status s = engine->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace aiokit::internal
