// The linux-aio engine: the kernel's native AIO through raw system calls
// (<linux/aio_abi.h>; libaio is not needed).
//
//   Init      io_setup(queue_depth + 1): one slot more than asked, for the
//             wake-up request below.
//   Submit    io_submit of the iocbs, in order. A partial submission is counted
//             and the rest sent again; EAGAIN is retried with the RetryPolicy,
//             reaping completions first to make room (they wait on the done
//             list for the caller's next Reap); a request the kernel refuses
//             completes with that -errno through the done list, and the
//             requests after it are still submitted.
//   Reap      the done list first, then the kernel's mmapped completion ring,
//             read in user space; only when fewer than `min` are there does it
//             spin briefly (EngineOptions::spin_before_wait) and then sleep in
//             io_getevents.
//   Cancel    io_cancel; the kernel can cancel only requests whose driver has a
//             cancel method (not regular files or block devices), so those are
//             reported as kNotCancellable.
//   Shutdown  waits for what is in flight (collecting the completions for
//             Reap), then io_destroy.
//
// Wake-ups. A reaper sleeping in io_getevents wakes only for a kernel event.
// When another thread completes a request without the kernel (a noop, a
// refusal) or shuts the engine down, it submits the engine's own wake-up
// request, a zero-length read from a pipe that the kernel completes at once,
// and the reaper discards that event. The reaper always sleeps for one event at
// a time (min_nr 1), so the wake-up event ends the sleep whatever `min` is. If
// the wake-up cannot be submitted (the kernel's slots are all taken), requests
// are in flight and their completions end the sleep instead.

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
#include <string>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "engine/aio_ring.h"
#include "engine/common.h"
#include "engine/engines.h"
#include "engine/valgrind.h"
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

// Requests handed to one io_submit call at most (the pointer array is on the
// stack).
constexpr size_t kSubmitChunk = 128;

// ThreadSanitizer's stand-in for the kernel's ordering of a completion ring's
// unmap (io_destroy) before a later io_setup maps one at those addresses: it
// sees neither. Only its address is used.
char ring_mapping_sync;

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
  explicit LinuxAioEngine(const EngineOptions& options)
      : options_(options),
        spin_(options.spin_before_wait, options.adaptive_spin) {}
  ~LinuxAioEngine() override;
  LinuxAioEngine(const LinuxAioEngine&) = delete;
  LinuxAioEngine& operator=(const LinuxAioEngine&) = delete;

  Status Init();

  [[nodiscard]] EngineKind kind() const noexcept override {
    return EngineKind::kLinuxAio;
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
  // Fills req->iocb from the request's fields.
  void FillIocb(Request* req) const noexcept;
  // Sends iocbs[0, n) to the kernel. Returns how many were taken care of
  // (submitted, or refused and completed); the rest could not be submitted
  // within the retry policy (or the engine is shutting down).
  size_t SubmitToKernel(struct iocb** iocbs, size_t n, SubmitResult* result);
  // Completes `req` without the kernel: sets rval, queues it for Reap and
  // signals the eventfd the kernel would have.
  void CompleteLocally(Request* req, int64_t res, Origin origin);
  // EAGAIN: collect completions so the kernel has room, waiting up to `delay`
  // for one. False when it could not (another thread is reaping, or nothing is
  // in flight): the caller then sleeps `delay` itself.
  bool MakeRoom(std::chrono::microseconds delay);
  // Wakes a reaper sleeping in io_getevents (see the file comment).
  void WakeReaper() noexcept;

  // Turns a kernel event into its Request (nullptr for the wake-up event);
  // the caller then lowers kernel_in_flight_ by the requests it got.
  Request* OnEvent(const io_event& ev) noexcept;
  // REQUIRES the reaper gate. Reads the ring (no syscall) into out[0, max).
  size_t DrainRing(Request** out, size_t max);
  // REQUIRES the reaper gate. Moves what the kernel has completed onto the done
  // list, waiting up to `timeout` for one event when the ring is empty and
  // something is in flight. Returns how many it moved (-1: it slept in vain).
  long CollectToDone(std::chrono::nanoseconds timeout);
  // REQUIRES the reaper gate, nothing in flight. Releases the kernel context.
  void DestroyContext();

  EngineOptions options_;
  Capabilities caps_;
  AdaptiveSpin spin_;  // guarded by the reaper gate

  aio_context_t ctx_ = 0;
  // Null when the ring's layout is not one we know: always io_getevents.
  AioRing* ring_ = nullptr;
  bool destroyed_ =
      true;  // guarded by the reaper gate; false once Init is done

  int notify_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  bool wake_ok_ = false;
  struct iocb wake_iocb_ = {};
  char wake_byte_ = 0;
  std::atomic<bool> wake_in_flight_{false};

  ReaperGate gate_;               // one reaper: the ring and io_getevents
  std::vector<io_event> events_;  // io_getevents buffer, guarded by the gate
  DoneList done_;

  // Requests the kernel owns (io_submit took them, their event not yet
  // consumed), excluding the wake-up request. Raised before each io_submit by
  // what it offers, lowered after by what it did not take, so a completion
  // reaped on another thread in between never drives it negative.
  std::atomic<int64_t> kernel_in_flight_{0};
  std::atomic<int> users_{0};  // threads inside Submit or Cancel
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

Status LinuxAioEngine::Init() {
  const unsigned depth = options_.queue_depth;
  if (depth == 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "linux-aio: queue_depth 0: a context needs at least "
                         "one slot (io_setup refuses 0 with EINVAL)");
  }
  if (depth > (1U << 22)) {
    // The kernel's own ceiling for one context is 2^28 bytes of events
    // (about 8M of them, doubled internally): refuse before it does.
    return Status::Error(Errc::kInvalidArgument,
                         "linux-aio: queue_depth " + std::to_string(depth) +
                             " is above 4194304, the most one kernel AIO "
                             "context can hold");
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
  // The kernel may map it where a ring another engine destroyed (on another
  // thread) was; it unmapped that one first, which orders that engine's last
  // use of it before ours. ThreadSanitizer cannot see the kernel map and
  // unmap, so say it (pairs with DestroyContext).
  TsanAcquire(&ring_mapping_sync);
  VgAioRingMapped(ring);  // valgrind assumes fewer events than are mapped
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
  if (!wake_ok_) {
    caps_.fallbacks.emplace_back(
        "wake-up request: a zero-length pipe read does not complete at once "
        "here; a sleeping reaper rechecks every 10 ms");
  }

  const sys::KernelVersion kv = sys::RunningKernel();
  caps_.user_space_reap = ring_ != nullptr;
  caps_.cancel_regular_files = false;
  caps_.async_buffered_io = false;  // buffered I/O runs inside io_submit
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
  // Completed requests nobody reaped are the caller's again, and may be
  // submitted elsewhere.
  Request* left[64];
  while (size_t n = done_.Take(left, 64)) {
    for (size_t i = 0; i < n; ++i) {
      left[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
    }
  }
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
      cb.aio_rw_flags = 0;
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
  // Sends the chunk, which holds batch[i - nchunk, i). False when not all of it
  // went (the retry policy ran out, or Shutdown began).
  auto flush = [&](size_t i) -> bool {
    if (nchunk == 0) return true;
    const size_t want = nchunk;
    const size_t first = i - want;
    const size_t done = SubmitToKernel(chunk, want, &result);
    nchunk = 0;
    if (done == want) return true;
    result.accepted = first + done;
    if (shutdown_.load(std::memory_order_acquire)) {
      result.status =
          Status::Error(Errc::kShutdown,
                        "linux-aio: Shutdown began while io_submit was "
                        "retrying EAGAIN; " +
                            std::to_string(batch.size() - first - done) +
                            " requests were not submitted");
    } else {
      result.status = Status::Error(
          Errc::kQueueFull,
          "linux-aio: io_submit still returned EAGAIN after " +
              std::to_string(options_.eagain.max_retries) + " retries; " +
              std::to_string(batch.size() - first - done) +
              " requests (from batch[" + std::to_string(first + done) +
              "]) were not submitted");
    }
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
                              : DescribeAsked(*req) +
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
    // Marked now, so that the same request twice in one batch is caught above.
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
  for (size_t i = 0; i < n; ++i) {
    auto* req = reinterpret_cast<Request*>(iocbs[i]);
    FillIocb(req);
    req->rval = kNotCompleted;
    req->origin = Origin::kNone;
    // Before io_submit: its completion may be reaped on another thread before
    // io_submit returns.
    req->engine_state.store(kInFlight, std::memory_order_relaxed);
    TsanRelease(req);
  }
  size_t done = 0;
  unsigned attempts = 0;
  std::chrono::microseconds delay = options_.eagain.initial_delay;
  while (done < n) {
    const auto offered = static_cast<int64_t>(n - done);
    kernel_in_flight_.fetch_add(offered, std::memory_order_relaxed);
    const long r =
        sys::IoSubmit(ctx_, static_cast<long>(offered), iocbs + done);
    submit_calls_.fetch_add(1, std::memory_order_relaxed);
    const int64_t took = r > 0 ? r : 0;
    kernel_in_flight_.fetch_sub(offered - took, std::memory_order_relaxed);
    if (r > 0) {
      if (took < offered) {
        partial_submits_.fetch_add(1, std::memory_order_relaxed);
      }
      submitted_.fetch_add(static_cast<uint64_t>(took),
                           std::memory_order_relaxed);
      done += static_cast<size_t>(took);
      // As BlueStore does: progress restarts the retry budget.
      attempts = 0;
      delay = options_.eagain.initial_delay;
      continue;
    }
    if (r == -EAGAIN || r == -EINTR || r == 0) {
      // No room (or nothing taken): make room and retry, within the policy,
      // unless the engine is shutting down.
      if (attempts >= options_.eagain.max_retries ||
          shutdown_.load(std::memory_order_acquire)) {
        break;
      }
      ++attempts;
      ++result->retries;
      eagain_retries_.fetch_add(1, std::memory_order_relaxed);
      if (!MakeRoom(delay)) std::this_thread::sleep_for(delay);
      delay = NextDelay(delay);
      continue;
    }
    // The kernel refused iocbs[done] (EBADF, EINVAL, EFAULT, ...): it completes
    // with that error, and the requests after it are still submitted.
    auto* req = reinterpret_cast<Request*>(iocbs[done]);
    submitted_.fetch_add(1, std::memory_order_relaxed);
    refused_.fetch_add(1, std::memory_order_relaxed);
    CompleteLocally(req, r, Origin::kRefused);
    ++done;
  }
  // Not submitted: back to the caller, idle and not completed; what it asks
  // (fd, buffers, offset, length) is as the caller left it.
  for (size_t i = done; i < n; ++i) {
    auto* req = reinterpret_cast<Request*>(iocbs[i]);
    req->engine_state.store(kIdle, std::memory_order_relaxed);
    req->rval = kNotCompleted;
  }
  return done;
}

void LinuxAioEngine::CompleteLocally(Request* req, int64_t res, Origin origin) {
  req->rval = res;
  req->origin = origin;
  // As the kernel would: the request's own eventfd, else the engine's.
  const int efd = req->resfd >= 0 ? req->resfd : notify_fd_;
  const bool wake = done_.Push(req);
  if (efd >= 0) (void)sys::EventfdWrite(efd, 1);
  if (wake) WakeReaper();
}

void LinuxAioEngine::WakeReaper() noexcept {
  if (!wake_ok_ || wake_in_flight_.exchange(true, std::memory_order_acq_rel)) {
    return;
  }
  struct iocb* p = &wake_iocb_;
  // Straight to the kernel: a fault-injection hook must not swallow the
  // engine's own wake-up. EAGAIN (every slot taken) means requests are in
  // flight, and their completions end the sleep instead.
  if (sys::real::IoSubmit(ctx_, 1, &p) != 1) {
    wake_in_flight_.store(false, std::memory_order_release);
  }
}

Request* LinuxAioEngine::OnEvent(const io_event& ev) noexcept {
  if (ev.obj == reinterpret_cast<uint64_t>(&wake_iocb_)) {
    wake_in_flight_.store(false, std::memory_order_release);
    return nullptr;
  }
  auto* req = reinterpret_cast<Request*>(ev.obj);
  TsanAcquire(req);
  VgAioCompleted(req->iocb, ev.res);  // valgrind sees reads in io_getevents
  req->rval = ev.res;
  req->origin = Origin::kEngine;
  // kernel_in_flight_ is lowered by the caller once the request is where a
  // reaper finds it (the caller's `out`, or the done list).
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

  // Nothing more can arrive once the engine is shut down, no Submit that
  // began before that is still underway (it may yet submit; seq_cst pairs
  // with UserGuard's increment and Submit's look at shutdown_), and nothing is
  // in the kernel or the done list.
  auto nothing_can_arrive = [&] {
    return shutdown_.load(std::memory_order_seq_cst) &&
           users_.load(std::memory_order_seq_cst) == 0 &&
           kernel_in_flight_.load(std::memory_order_relaxed) == 0 &&
           done_.count() == 0;
  };
  ReaperLock lock(&gate_, timeout, deadline);
  size_t n = done_.Take(out.data(), out.size());
  if (lock.owns_lock()) {
    if (!destroyed_) {
      const size_t got = DrainRing(out.data() + n, out.size() - n);
      kernel_in_flight_.fetch_sub(static_cast<int64_t>(got),
                                  std::memory_order_relaxed);
      n += got;
    }
    while (n < min && !destroyed_) {
      if (nothing_can_arrive()) break;
      std::chrono::nanoseconds left = kForever;
      if (!forever) {
        left = deadline - Clock::now();
        if (left.count() <= 0) break;
      }
      // Announce the wait, then look once more (see DoneList).
      if (done_.AnnounceWaiter()) {
        n += done_.Take(out.data() + n, out.size() - n);
        continue;
      }
      if (ring_ != nullptr &&
          kernel_in_flight_.load(std::memory_order_relaxed) > 0 &&
          spin_.Spin(deadline, [&] {
            return AioRingPending(ring_) != 0 || done_.count_relaxed() != 0;
          })) {
        done_.RetireWaiter();
        n += done_.Take(out.data() + n, out.size() - n);
        const size_t got = DrainRing(out.data() + n, out.size() - n);
        kernel_in_flight_.fetch_sub(static_cast<int64_t>(got),
                                    std::memory_order_relaxed);
        n += got;
        continue;
      }
      if (!wake_ok_ && (forever || left > std::chrono::milliseconds(10))) {
        // No wake-up request here: wait in slices.
        left = std::chrono::milliseconds(10);
      }
      timespec ts = ToTimespec(left);
      const size_t want = std::min(out.size() - n, events_.size());
      // min_nr 1: the wake-up event must end the sleep whatever `min` is.
      const long r =
          sys::IoGetevents(ctx_, 1, static_cast<long>(want), events_.data(),
                           left.count() < 0 ? nullptr : &ts);
      done_.RetireWaiter();
      wait_calls_.fetch_add(1, std::memory_order_relaxed);
      if (r == -EINTR) continue;
      if (r < 0) {
        if (n != 0) break;  // hand over what we have; the error will show again
        return Status::FromErrno(static_cast<int>(-r),
                                 "linux-aio: io_getevents(min_nr=1, nr=" +
                                     std::to_string(want) + ")");
      }
      int64_t got = 0;
      for (long i = 0; i < r; ++i) {
        if (Request* req = OnEvent(events_[static_cast<size_t>(i)]);
            req != nullptr) {
          out[n++] = req;
          ++got;
        }
      }
      kernel_in_flight_.fetch_sub(got, std::memory_order_relaxed);
      n += done_.Take(out.data() + n, out.size() - n);
    }
    lock.Unlock();
  }

  for (size_t i = 0; i < n; ++i) {
    out[i]->engine_state.store(kCompleted, std::memory_order_relaxed);
  }
  completed_.fetch_add(n, std::memory_order_relaxed);
  if (n == 0 && nothing_can_arrive()) {
    return Status::Error(
        Errc::kShutdown,
        "linux-aio: engine shut down and nothing left to reap");
  }
  return n;
}

bool LinuxAioEngine::MakeRoom(std::chrono::microseconds delay) {
  if (!gate_.TryAcquire()) return false;  // a reaper frees slots as it reaps
  const long got = CollectToDone(delay);
  gate_.Release();
  // Room was made, or the delay was spent waiting for it.
  return got != 0;
}

long LinuxAioEngine::CollectToDone(std::chrono::nanoseconds timeout) {
  if (destroyed_) return 0;
  // Kept for the caller's next Reap. The kernel already signalled their
  // eventfds, so they are not signalled again.
  constexpr size_t kBatch = 256;
  Request* got[kBatch];
  long total = 0;
  auto push = [&](size_t n) {
    if (n == 0) return;
    for (size_t i = 1; i < n; ++i) got[i - 1]->engine_next = got[i];
    (void)done_.Push(got[0], got[n - 1], n);
    // Only now: until the push, a reaper would find them nowhere.
    kernel_in_flight_.fetch_sub(static_cast<int64_t>(n),
                                std::memory_order_relaxed);
    total += static_cast<long>(n);
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
    if (Request* req = OnEvent(events_[static_cast<size_t>(i)]);
        req != nullptr) {
      got[n++] = req;
    }
  }
  push(n);
  return total != 0 ? total : -1;
}

Status LinuxAioEngine::Cancel(Request* req) {
  if (req == nullptr ||
      req->engine_state.load(std::memory_order_relaxed) != kInFlight) {
    return Status::Error(
        Errc::kInvalidArgument,
        "linux-aio: Cancel: " +
            (req == nullptr ? std::string("null request")
                            : DescribeAsked(*req) + " is not in flight"));
  }
  UserGuard guard(&users_);
  if (shutdown_.load(std::memory_order_seq_cst)) {
    return Status::Error(Errc::kShutdown, "linux-aio: Cancel after Shutdown");
  }
  io_event ev = {};
  const long r = sys::IoCancel(ctx_, &req->iocb, &ev);
  // Since 3.11 io_cancel answers -EINPROGRESS when it cancelled and delivers
  // the event through the ring, never in `ev`; 0 is treated alike.
  if (r == -EINPROGRESS || r == 0) return {};
  if (r == -EINVAL || r == -EAGAIN) {
    return Status::Error(
        Errc::kNotCancellable,
        "linux-aio: io_cancel(" + DescribeAsked(*req) + ") returned " +
            util::ErrnoText(static_cast<int>(-r)) +
            ": kernel AIO cancels only requests whose driver has a cancel "
            "method (such as USB gadget endpoints), never regular files or "
            "block devices, and not a request that already completed; it will "
            "complete normally");
  }
  return Status::FromErrno(static_cast<int>(-r),
                           "linux-aio: io_cancel(" + DescribeAsked(*req) + ")");
}

Result<int> LinuxAioEngine::NotifyFd() {
  if (notify_fd_ < 0) {
    return Status::Error(Errc::kUnsupported,
                         "linux-aio: NotifyFd: the engine was created with "
                         "notify_fd = false");
  }
  return notify_fd_;
}

void LinuxAioEngine::DestroyContext() {
  if (destroyed_) return;
  // Nothing is in flight, so io_destroy does not wait for I/O (it still
  // waits for an RCU grace period: about 33 ms on this VM).
  // Our uses of the ring happen before its addresses are mapped again (pairs
  // with Init's TsanAcquire).
  TsanRelease(&ring_mapping_sync);
  VgAioRingUnmapping(ring_);  // while no one else can map those addresses
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
  // Let submitters and cancellers that got in before the flag finish (a
  // submitter retrying EAGAIN sees the flag and stops).
  while (users_.load(std::memory_order_acquire) != 0) {
    if (!forever && Clock::now() >= deadline) {
      return Status::Error(
          Errc::kTimedOut,
          "linux-aio: Shutdown: a Submit or Cancel call was "
          "still running at the deadline; call Shutdown again");
    }
    std::this_thread::yield();
  }
  // A reaper sleeping in io_getevents with nothing in flight would keep the
  // gate forever.
  WakeReaper();

  ReaperLock lock(&gate_, timeout, deadline);
  if (!lock.owns_lock()) {
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
            "them and their buffers; call Shutdown again (the destructor waits "
            "for them)");
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
