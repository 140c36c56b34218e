// The linux-aio engine: the kernel's native AIO through raw system calls
// (<linux/aio_abi.h>; libaio is not needed). A backend of EngineCore
// (src/engine/core/), which keeps the engine contract; this file is what is
// particular to kernel AIO:
//
//   Init      io_setup(queue_depth + 1): one slot more than asked, for the
//             wake-up request below.
//   Offer     io_submit of the iocbs (filled from the requests' fields by the
//             core, with NotifyFd's eventfd added here while in flight). The
//             kernel may take a prefix; its error belongs to the first iocb
//             it did not take.
//   Drain     the kernel's mmapped completion ring, read in user space.
//   Sleep     io_getevents, for one event at a time (min_nr 1), so that the
//             wake-up event ends the sleep whatever the caller's minimum.
//   Cancel    io_cancel; the kernel can cancel only requests whose driver has
//             a cancel method (not regular files or block devices), so those
//             are reported as kNotCancellable.
//   Destroy   io_destroy, once nothing is in flight.
//
// Wake-ups. A reaper sleeping in io_getevents wakes only for a kernel event.
// When another thread completes a request without the kernel (a noop, a
// refusal) or shuts the engine down, Wake submits the engine's own wake-up
// request, a zero-length read from a pipe that the kernel completes at once,
// and Drain discards that event. If the wake-up cannot be submitted (the
// kernel's slots are all taken), requests are in flight and their completions
// end the sleep instead.

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/fs.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "aiokit/engine.h"
#include "engine/aio_ring.h"
#include "engine/common.h"
#include "engine/core/backend.h"
#include "engine/core/engine_core.h"
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

class LinuxAioBackend final : public BackendBase {
 public:
  static constexpr EngineKind kKind = EngineKind::kLinuxAio;
  static constexpr bool kSubmitsIocb = true;
  explicit LinuxAioBackend(CoreState* core) : core_(core) {}
  ~LinuxAioBackend();
  LinuxAioBackend(const LinuxAioBackend&) = delete;
  LinuxAioBackend& operator=(const LinuxAioBackend&) = delete;

  Status Init(Capabilities* caps);
  OfferResult Offer(Request* const* reqs, size_t n);
  size_t Drain(Request** out, size_t max);
  [[nodiscard]] bool Ready() const noexcept {
    return ring_ != nullptr && AioRingPending(ring_) != 0;
  }
  [[nodiscard]] bool Busy() const noexcept {
    return kernel_in_flight_.load(std::memory_order_relaxed) > 0;
  }
  [[nodiscard]] bool CanSpin() const noexcept { return ring_ != nullptr; }
  [[nodiscard]] int64_t InFlightCount() const noexcept {
    return kernel_in_flight_.load(std::memory_order_relaxed);
  }
  Result<size_t> Sleep(uint32_t token, Request** out, size_t max,
                       std::chrono::nanoseconds timeout);
  void Wake() noexcept;
  CancelOutcome Cancel(Request* req) const;
  void Destroy();
  [[nodiscard]] const char* AgainText() const noexcept {
    return "io_submit still returned EAGAIN";
  }

 private:
  // While in flight the iocb also signals NotifyFd (the kernel takes one
  // eventfd per iocb: a request with its own signals only that one).
  void AddNotify(Request* req) const noexcept {
    if (req->resfd < 0 && core_->notify_fd() >= 0) {
      req->iocb.aio_flags |= IOCB_FLAG_RESFD;
      req->iocb.aio_resfd = static_cast<uint32_t>(core_->notify_fd());
    }
  }
  void RemoveNotify(Request* req) const noexcept {
    if (req->resfd < 0 && core_->notify_fd() >= 0) {
      req->iocb.aio_flags &= ~static_cast<uint32_t>(IOCB_FLAG_RESFD);
      req->iocb.aio_resfd = 0;
    }
  }
  // Turns a kernel event into its Request (nullptr for the wake-up event).
  Request* OnEvent(const io_event& ev) noexcept;

  CoreState* core_;
  aio_context_t ctx_ = 0;
  // Null when the ring's layout is not one we know: always io_getevents.
  AioRing* ring_ = nullptr;
  std::vector<io_event> events_;  // io_getevents buffer, for the reaper

  int wake_pipe_[2] = {-1, -1};
  bool wake_ok_ = false;
  struct iocb wake_iocb_ = {};
  char wake_byte_ = 0;
  std::atomic<bool> wake_in_flight_{false};
  const bool on_valgrind_ = RunningOnValgrind();  // asked once, not per event

  // Requests the kernel owns (io_submit took them, their event not yet
  // consumed), excluding the wake-up request. Raised before each io_submit by
  // what it offers, lowered after by what it did not take, so a completion
  // reaped on another thread in between never drives it negative.
  std::atomic<int64_t> kernel_in_flight_{0};
};

Status LinuxAioBackend::Init(Capabilities* caps) {
  const unsigned depth = core_->options().queue_depth;
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

  // The context id is the address of the kernel's completion ring, mapped into
  // our address space.
  auto* ring = reinterpret_cast<AioRing*>(ctx_);
  // The kernel may map it where a ring another engine destroyed (on another
  // thread) was; it unmapped that one first, which orders that engine's last
  // use of it before ours. ThreadSanitizer cannot see the kernel map and
  // unmap, so say it (pairs with Destroy).
  TsanAcquire(&kernel_ring_mapping_sync);
  VgAioRingMapped(ring);  // valgrind assumes fewer events than are mapped
  if (AioRingUsable(ring)) ring_ = ring;
  events_.resize(ring_ != nullptr ? ring_->nr : 2 * static_cast<size_t>(nr));

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
    caps->fallbacks.emplace_back(
        "wake-up request: a zero-length pipe read does not complete at once "
        "here; a sleeping reaper rechecks every 10 ms");
  }

  const sys::KernelVersion kv = sys::RunningKernel();
  caps->user_space_reap = ring_ != nullptr;
  caps->cancel_regular_files = false;
  caps->async_buffered_io = false;  // buffered I/O runs inside io_submit
  caps->fsync = kv.AtLeast(4, 18);
  caps->rw_flags = kv.AtLeast(4, 13);
  caps->ioprio = kv.AtLeast(5, 0);
  caps->ring_entries = ring_ != nullptr ? ring_->nr : nr;
  return {};
}

LinuxAioBackend::~LinuxAioBackend() {
  for (int& fd : wake_pipe_) {
    if (fd >= 0) (void)sys::Close(fd);
  }
}

OfferResult LinuxAioBackend::Offer(Request* const* reqs, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    AddNotify(reqs[i]);
    TsanRelease(reqs[i]);
  }
  // The iocb is each Request's first member (the static_asserts above): the
  // kernel reads the array as struct iocb pointers.
  auto** iocbs = reinterpret_cast<struct iocb**>(const_cast<Request**>(reqs));
  const auto offered = static_cast<int64_t>(n);
  kernel_in_flight_.fetch_add(offered, std::memory_order_relaxed);
  const long r = sys::IoSubmit(ctx_, static_cast<long>(offered), iocbs);
  core_->counters().submit_calls.fetch_add(1, std::memory_order_relaxed);
  const int64_t took = r > 0 ? r : 0;
  kernel_in_flight_.fetch_sub(offered - took, std::memory_order_relaxed);
  for (auto i = static_cast<size_t>(took); i < n; ++i) RemoveNotify(reqs[i]);
  OfferResult result;
  result.taken = static_cast<size_t>(took);
  if (r > 0) return result;
  if (r == -EAGAIN || r == -EINTR || r == 0) {
    result.kind = OfferResult::kAgain;
  } else {
    // EBADF, EINVAL, EFAULT, ...: the kernel refused reqs[0].
    result.kind = OfferResult::kRefused;
    result.error = static_cast<int>(-r);
  }
  return result;
}

void LinuxAioBackend::Wake() noexcept {
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

Request* LinuxAioBackend::OnEvent(const io_event& ev) noexcept {
  if (ev.obj == reinterpret_cast<uint64_t>(&wake_iocb_)) {
    wake_in_flight_.store(false, std::memory_order_release);
    return nullptr;
  }
  auto* req = reinterpret_cast<Request*>(ev.obj);
  TsanAcquire(req);
  // Under valgrind: what a read wrote (it sees that only in io_getevents).
  if (on_valgrind_) VgAioCompleted(req->iocb, ev.res);
  req->rval = ev.res;
  req->origin = Origin::kEngine;
  RemoveNotify(req);
  return req;
}

size_t LinuxAioBackend::Drain(Request** out, size_t max) {
  if (ring_ == nullptr || max == 0) return 0;
  size_t n = 0;
  const size_t consumed = ConsumeAioRing(ring_, max, [&](const io_event& ev) {
    if (Request* r = OnEvent(ev); r != nullptr) out[n++] = r;
  });
  core_->counters().ring_reaped.fetch_add(consumed, std::memory_order_relaxed);
  kernel_in_flight_.fetch_sub(static_cast<int64_t>(n),
                              std::memory_order_relaxed);
  return n;
}

Result<size_t> LinuxAioBackend::Sleep(uint32_t /*token*/, Request** out,
                                      size_t max,
                                      std::chrono::nanoseconds timeout) {
  if (!wake_ok_ &&
      (timeout.count() < 0 || timeout > std::chrono::milliseconds(10))) {
    // No wake-up request here: wait in slices.
    timeout = std::chrono::milliseconds(10);
  }
  timespec ts = ToTimespec(timeout);
  const size_t want = std::min(max, events_.size());
  // min_nr 1: the wake-up event must end the sleep whatever the caller's
  // minimum.
  const long r =
      sys::IoGetevents(ctx_, 1, static_cast<long>(want), events_.data(),
                       timeout.count() < 0 ? nullptr : &ts);
  core_->counters().wait_calls.fetch_add(1, std::memory_order_relaxed);
  if (r == -EINTR) return size_t{0};
  if (r < 0) {
    return Status::FromErrno(
        static_cast<int>(-r),
        "linux-aio: io_getevents(min_nr=1, nr=" + std::to_string(want) + ")");
  }
  size_t n = 0;
  for (long i = 0; i < r; ++i) {
    if (Request* req = OnEvent(events_[static_cast<size_t>(i)]);
        req != nullptr) {
      out[n++] = req;
    }
  }
  kernel_in_flight_.fetch_sub(static_cast<int64_t>(n),
                              std::memory_order_relaxed);
  return n;
}

CancelOutcome LinuxAioBackend::Cancel(Request* req) const {
  io_event ev = {};
  const long r = sys::IoCancel(ctx_, &req->iocb, &ev);
  CancelOutcome o;
  // Since 3.11 io_cancel answers -EINPROGRESS when it cancelled and delivers
  // the event through the ring, never in `ev`; 0 is treated alike.
  if (r == -EINPROGRESS || r == 0) return o;
  if (r == -EINVAL || r == -EAGAIN) {
    o.status = Status::Error(
        Errc::kNotCancellable,
        "linux-aio: io_cancel(" + DescribeAsked(*req) + ") returned " +
            util::ErrnoText(static_cast<int>(-r)) +
            ": kernel AIO cancels only requests whose driver has a cancel "
            "method (such as USB gadget endpoints), never regular files or "
            "block devices, and not a request that already completed; it will "
            "complete normally");
    return o;
  }
  o.status =
      Status::FromErrno(static_cast<int>(-r),
                        "linux-aio: io_cancel(" + DescribeAsked(*req) + ")");
  return o;
}

void LinuxAioBackend::Destroy() {
  // Nothing is in flight but perhaps the wake-up read of a pipe, which
  // completes at once: io_destroy waits for it (and for an RCU grace period,
  // about 33 ms on this VM). Our uses of the ring happen before its addresses
  // are mapped again (pairs with Init's TsanAcquire): the release comes after
  // the last of them, memcheck's look at the header.
  VgAioRingUnmapping(ring_);  // while no one else can map those addresses
  TsanRelease(&kernel_ring_mapping_sync);
  (void)sys::IoDestroy(ctx_);
  ctx_ = 0;
  ring_ = nullptr;
  wake_ok_ = false;
}

}  // namespace

Result<std::unique_ptr<Engine>> MakeLinuxAioEngine(
    const EngineOptions& options) {
  return MakeEngineOn<LinuxAioBackend>(options);
}

}  // namespace aiokit::internal
