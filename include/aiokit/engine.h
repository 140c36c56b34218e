// aiokit: the engine interface (BlueStore's aio_queue_t).
//
// An Engine runs Requests asynchronously. It submits them in batches and hands
// back their completions, through any of: polling (Poll, or Reap with min 0),
// a blocking wait with a minimum count and a deadline (Reap), an eventfd that
// becomes readable when completions are ready (NotifyFd, for epoll), and
// completion callbacks (EngineOptions::on_complete), called by the thread that
// reaps or by a completion thread the engine owns.
//
// Engines:
// - linux-aio: the kernel's native AIO (io_setup/io_submit/io_getevents);
//   completions read from the kernel's mmapped ring in user space,
//   io_getevents only when the caller must wait.
// - io_uring: liburing, one SQE per request, completions read from the CQ
//   ring in user space; fixed buffers and files, SQPOLL, IOPOLL.
// - threads: a user-space AIO built like the kernel's: worker threads and a
//   completion ring in the kernel's aio_ring layout; buffered I/O that does
//   not block the submitter, any fd, priorities, cancel of queued requests.
// - sync: the I/O runs inside Submit, one request after another (fio's psync):
//   for debugging, deterministic tests and as a baseline.
// aiokit/fault.h wraps any of them to inject faults; aiokit/engine_wrapper.h
// is the base for such wrappers. MakeEngine() builds one from EngineOptions;
// where the caller leaves the kind as kDefault, the environment variable
// AIOKIT_ENGINE (auto, linux-aio, io_uring, threads, sync) chooses, else auto.
//
// The contract every engine keeps (src/engine/core/ keeps it once for all):
//  - Every request that Submit accepts completes exactly once: one Reap
//    returns it (or the completion callback is called once), with rval set.
//    That holds through partial submissions, EAGAIN retries, refusals,
//    cancellation and Shutdown.
//  - A request the kernel (or the library) refuses at submission completes
//    with that -errno like any other, and the requests after it in the batch
//    are still submitted.
//  - Buffers stay the caller's to keep alive until the request is reaped.
//    Shutdown never cancels a request it accepted unless asked to
//    (ShutdownMode); destroying an engine with requests in flight waits for
//    them; it never frees or returns memory the kernel may still write.
//
// Thread safety: Submit may be called from several threads at once, and
// concurrently with Reap. Reap calls are serialised internally (one reaper at a
// time reads the completion ring). Cancel and Stats may be called from any
// thread. Shutdown and the destructor must not race with each other.

#ifndef AIOKIT_ENGINE_H_
#define AIOKIT_ENGINE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aiokit/request.h"
#include "aiokit/status.h"

namespace aiokit {

enum class EngineKind : uint8_t {
  kDefault = 0,  // AIOKIT_ENGINE if set, else kAuto
  kAuto,  // io_uring, then linux-aio, then threads: the first this kernel and
          // process allow
  kLinuxAio,
  kIoUring,
  kThreads,
  kSync,  // never chosen by kAuto
};
// "default", "auto", "linux-aio", "io_uring", "threads", "sync".
const char* EngineKindName(EngineKind kind) noexcept;
// Accepts the names above (and "libaio", "aio", "uring", "io-uring" as
// aliases).
Result<EngineKind> ParseEngineKind(std::string_view name);

// BlueStore's EAGAIN policy: retry io_submit at most `max_retries` times,
// sleeping `initial_delay`, then twice that, and so on. Before each sleep the
// engine reaps what has completed, to make room; what it reaps is kept for the
// caller's next Reap.
struct RetryPolicy {
  unsigned max_retries = 16;
  std::chrono::microseconds initial_delay{125};
};

struct EngineOptions {
  EngineKind kind = EngineKind::kDefault;
  // Requests the engine is sized for: io_setup's nr_events (at most what
  // fs.aio-max-nr leaves, up to 4194304) or io_uring's ring size (up to
  // 65536). More may be submitted: linux-aio reaps to make room, as
  // RetryPolicy says; io_uring keeps them in order until completions free room.
  unsigned queue_depth = 128;
  RetryPolicy eagain;
  // Create the completion eventfd returned by NotifyFd(). It costs the kernel
  // one eventfd signal per completion; turn it off when nothing polls it.
  bool notify_fd = true;
  // Before sleeping for completions, watch the completion ring for up to this
  // long (engines that reap in user space). A sleep and a wake-up cost several
  // microseconds, far more in a virtual machine whose idle CPU halts, so on a
  // fast device spinning buys latency and IOPS for some CPU. Across all the
  // process's engines, at most one fewer reapers than the CPUs the process may
  // run on spin at once (none on one CPU), so that spinners leave a CPU to the
  // threads their completions wait for; the others sleep. Nor while an fsync
  // or fdatasync is in flight: a kernel worker runs it, on the CPU a spin
  // would take, and it waits for the device. 0: never spin.
  std::chrono::microseconds spin_before_wait{50};
  // Spin only while spinning pays: while at least half of the recent spins
  // caught a completion before the budget ran out (a fast device), and
  // otherwise only on every 16th wait, to notice a change. false: always spin.
  bool adaptive_spin = true;
  // Refuse misaligned O_DIRECT requests (those whose Request::align is known)
  // before submission.
  bool check_alignment = true;
  // kAuto: when false, fail with the first choice's reason instead of falling
  // back to the next engine (for deployments that must know which engine runs).
  // Also set by AIOKIT_ENGINE_FALLBACK=0.
  bool allow_fallback = true;

  // Completion callbacks, on every engine. When set, each completed request is
  // handed to on_complete(arg, req) instead of being returned by Reap:
  // req->rval and req->origin are set, the request reads as completed, and the
  // engine no longer touches it (the callback may prepare and submit it again
  // at once). Who calls it:
  //  - the threads engine: the thread that completed the request (a worker, or
  //    the thread in Submit, Cancel, Shutdown or Reap that completed it
  //    without I/O or ran it while waiting);
  //  - linux-aio, io_uring and sync: the thread in Reap/Poll, which delivers
  //    what has completed and returns how many it delivered; or, with
  //    completion_thread, a thread of the engine's own.
  // The request's eventfd and NotifyFd are still signalled. The callback must
  // not block for long, nor call this engine's Reap, Shutdown or destructor.
  void (*on_complete)(void* arg, Request* req) = nullptr;
  void* on_complete_arg = nullptr;
  // With on_complete: the engine starts one thread that reaps in a loop and
  // calls on_complete for every completion (BlueStore's aio thread), until
  // Shutdown has waited for the last request. REQUIRES on_complete; not with
  // io_uring's single_thread (that promises no other thread enters the ring).
  bool completion_thread = false;

  // ---- io_uring ----
  // The caller promises that one thread, the one that creates the engine, makes
  // every call (Submit, Reap, Cancel, Register*, Shutdown). The engine can then
  // use IORING_SETUP_SINGLE_ISSUER, COOP_TASKRUN with TASKRUN_FLAG (no
  // interrupt to deliver a completion; it runs when that thread next enters
  // the kernel, or is woken) and a registered ring fd. Destroying the engine
  // on another thread still works: it waits until that thread runs the
  // completions or exits (the kernel then finishes its requests). Without it,
  // any thread may call, and completions are delivered with task-work
  // interrupts.
  bool single_thread = false;
  // With single_thread: IORING_SETUP_DEFER_TASKRUN instead of COOP_TASKRUN.
  // Completions then run only when that thread reaps (fio's setup), so the
  // destructor must run on that thread too: from another one, requests whose
  // completions are still deferred can never be waited for.
  bool defer_taskrun = false;
  // Without single_thread: IORING_SETUP_COOP_TASKRUN with TASKRUN_FLAG anyway.
  // No interrupt delivers a completion; it runs when the thread that submitted
  // the request next enters the kernel (any system call, or this engine's own
  // wait), which costs far less per I/O. Right when the submitting threads also
  // reap or make system calls often (fio, most libaio programs; the libaio
  // drop-in sets it); wrong when a thread submits and then computes for long
  // while another waits for its completions.
  bool coop_taskrun = false;
  // A kernel thread polls the submission queue (IORING_SETUP_SQPOLL): no system
  // call to submit. It sleeps after sqpoll_idle without work.
  bool sqpoll = false;
  std::chrono::milliseconds sqpoll_idle{1000};
  int sqpoll_cpu = -1;  // pin the poller to this CPU (-1: anywhere)
  // Completions are polled from the device (IORING_SETUP_IOPOLL, fio's
  // --hipri): O_DIRECT reads and writes only, on devices with poll queues.
  bool iopoll = false;

  // ---- threads ----
  // Worker threads: at least threads_min kept when idle, at most threads_max
  // (0: four per online CPU, at least 16), created as the queue grows and
  // ended after threads_idle without work. While requests complete without
  // blocking (page-cache hits) the pool stays at the CPUs less one (the
  // reaping thread does queued work while it waits); it grows to threads_max
  // once requests block (disk reads, O_DIRECT, fsync).
  unsigned threads_min = 0;
  unsigned threads_max = 0;
  std::chrono::milliseconds threads_idle{1000};
  // Requests on the same fd run one at a time, in submission order (as glibc's
  // POSIX AIO does). Otherwise they run in parallel.
  bool threads_ordered_per_fd = false;
  // O_DIRECT reads and writes (requests prepared from a File opened with
  // O_DIRECT) go to the kernel's AIO, as the kernel's own AIO does them,
  // without a worker; tried with RWF_NOWAIT, so one that would block in the
  // kernel's submission goes to a worker instead. Used where the kernel allows
  // it (a kernel AIO context set up at the first such request), and not with
  // threads_ordered_per_fd, nor with on_complete unless completion_thread
  // (someone must reap the kernel's ring). Requests with an I/O priority, or
  // with their own eventfd while NotifyFd is on, stay on workers.
  bool threads_kernel_aio = true;
};

// What an engine offers here (probed at Init).
struct Capabilities {
  // Completions are read from a shared ring without a system call.
  bool user_space_reap = false;
  // Cancel can stop I/O on regular files and block devices (before it starts).
  bool cancel_regular_files = false;
  // Buffered I/O does not block the submitter.
  bool async_buffered_io = false;
  // The I/O runs inside Submit (the sync engine): a request that blocks (a
  // read from an empty pipe) blocks Submit, and nothing stays in flight.
  bool runs_in_submit = false;
  bool fsync = false;            // fsync / fdatasync requests
  bool rw_flags = false;         // per-request RWF_* flags
  bool ioprio = false;           // per-request I/O priority
  bool request_eventfd = false;  // per-request eventfd (Request::resfd)
  bool notify_fd = false;        // NotifyFd() available
  unsigned ring_entries = 0;     // completion slots the engine really got

  // io_uring: what the kernel offered and the engine uses.
  bool fixed_buffers = false;       // RegisterBuffers works
  bool fixed_files = false;         // RegisterFiles works
  bool sqpoll = false;              // IORING_SETUP_SQPOLL in use
  bool iopoll = false;              // IORING_SETUP_IOPOLL in use
  bool single_issuer = false;       // IORING_SETUP_SINGLE_ISSUER in use
  bool defer_taskrun = false;       // IORING_SETUP_DEFER_TASKRUN in use
  bool coop_taskrun = false;        // IORING_SETUP_COOP_TASKRUN in use
  bool registered_ring_fd = false;  // io_uring_register_ring_fd in use
  // Why a feature above is off although it was asked for or is usually used
  // ("DEFER_TASKRUN: EINVAL, kernel before 6.1"), one line each.
  std::vector<std::string> fallbacks;
};

// Counters since Init. Each is exact at the time it is read, but read
// separately.
struct EngineStats {
  // Requests accepted by Submit (including those refused and noops).
  uint64_t submitted = 0;
  uint64_t completed = 0;  // requests returned by Reap
  uint64_t in_flight = 0;  // accepted and not yet reaped
  uint64_t refused = 0;    // completed with an error at submission
  // Submission calls that met EAGAIN (or EBUSY) and were retried.
  uint64_t eagain_retries = 0;
  // Submission calls that took fewer requests than offered.
  uint64_t partial_submits = 0;
  uint64_t submit_calls = 0;  // io_submit or io_uring_enter calls to submit
  uint64_t wait_calls = 0;    // system calls made to wait for completions
  // Times a thread reaping the engine (a caller of Reap, or the completion
  // thread) went to sleep because nothing had completed, after any spin.
  // Unlike wait_calls it counts no system call that only collects.
  uint64_t sleeps = 0;
  // Completions read from a ring in user space with no system call.
  uint64_t ring_reaped = 0;
  // Requests taken back before they started (-ECANCELED, Origin::kCancelled):
  // by Cancel, or by Shutdown with ShutdownMode::kCancelNotStarted.
  uint64_t cancelled = 0;
  uint64_t workers = 0;  // threads engine: worker threads alive now
  // threads engine: requests the kernel's AIO did (threads_kernel_aio), and
  // those it gave back to workers (it would have blocked, or refused them).
  uint64_t kernel_aio = 0;
  uint64_t kernel_aio_fallbacks = 0;
};

// What Shutdown does with requests it accepted that have not started yet.
enum class ShutdownMode : uint8_t {
  // Wait for every accepted request to complete, whatever it takes; none is
  // cancelled.
  kFinish = 0,
  // Cancel what has not started: requests still queued inside aiokit (the
  // threads engine's queue, io_uring's overflow queue) complete with
  // -ECANCELED (Origin::kCancelled); what the kernel or a worker holds is
  // waited for. linux-aio hands every request to the kernel at once, so there
  // it is kFinish.
  kCancelNotStarted,
};

// The outcome of a Submit call.
struct [[nodiscard]] SubmitResult {
  // batch[0, accepted) now belong to the engine and will each complete exactly
  // once.
  size_t accepted = 0;
  // OK when accepted == batch size; otherwise why batch[accepted] was not taken
  // (kQueueFull after the retry policy ran out, kShutdown, kInvalidArgument for
  // a request already in flight). Requests not taken are untouched and still
  // the caller's.
  Status status;
  // EAGAIN retries this call made (BlueStore's *retries).
  unsigned retries = 0;
};

// A negative timeout waits without limit.
inline constexpr std::chrono::nanoseconds kForever{-1};

class Engine {
 public:
  // Waits for requests in flight (Shutdown(kForever)): never frees memory the
  // kernel may still write. Completed requests nobody reaped read as completed.
  virtual ~Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  [[nodiscard]] virtual EngineKind kind() const noexcept = 0;
  [[nodiscard]] const char* Name() const noexcept {
    return EngineKindName(kind());
  }
  [[nodiscard]] virtual const Capabilities& GetCapabilities()
      const noexcept = 0;
  [[nodiscard]] virtual unsigned queue_depth() const noexcept = 0;
  // Thread safety: any thread, any time.
  [[nodiscard]] virtual EngineStats Stats() const noexcept = 0;

  // Submits the batch in order.
  // On success (status OK): every request was accepted and will complete
  //   exactly once; those the kernel or the library refused complete with
  //   their -errno (Origin::kRefused) like any other.
  // On failure: batch[0, accepted) were accepted; batch[accepted] and the
  //   rest were not and are untouched, idle and still the caller's. status
  //   says why: kQueueFull (no room after the retry policy), kShutdown,
  //   kInvalidArgument (a null request, or one still in flight), or an errno
  //   of the ring itself.
  // Blocking: returns once the requests are handed over, except when the
  //   engine is full: then it reaps to make room and retries with
  //   EngineOptions::eagain (by default up to 16 retries, sleeping 125 us
  //   doubling: about 8 s in the worst case).
  // REQUIRES: every request was prepared (Prep*).
  // Thread safety: any number of threads at once, and concurrently with Reap.
  virtual SubmitResult Submit(std::span<Request* const> batch) = 0;

  // Waits until at least `min` completed requests are available or `timeout`
  // has passed (kForever: no limit; 0: do not wait), then stores up to
  // out.size() of them in `out`. `min` is clipped to out.size().
  // On success: how many were stored, each with rval set and read as
  //   completed. Fewer than `min` (perhaps 0) when the timeout passed first:
  //   that is not an error.
  // With EngineOptions::on_complete: the completions go to the callback
  //   instead (`out` is not used and may be empty; `min` is not clipped); the
  //   count is how many this call delivered, and it waits until `min` were
  //   delivered during the call (by it, or by the engine's own threads).
  // On failure: kShutdown when the engine is shut down and nothing is left to
  //   reap; an errno from the wait (with nothing stored).
  // Thread safety: one reaper at a time; a second one waits for the first, at
  //   most its own timeout.
  virtual Result<size_t> Reap(std::span<Request*> out, size_t min,
                              std::chrono::nanoseconds timeout) = 0;

  // BlueStore's get_next_completed: waits up to timeout_ms (negative: forever)
  // for at least one completion, returns up to max. The count, or an error.
  Result<size_t> GetNextCompleted(int timeout_ms, Request** out, size_t max);
  // Returns what has completed, without waiting.
  Result<size_t> Poll(std::span<Request*> out) {
    return Reap(out, 0, std::chrono::nanoseconds(0));
  }

  // Asks the engine to cancel `req`.
  // On success: the request will complete with -ECANCELED (or with its real
  //   result, if it finished first) and is reaped as usual: at once with
  //   Origin::kCancelled when aiokit still held it, later when the kernel
  //   carries the cancel out.
  // On failure: kNotCancellable when the engine cannot stop it (it started,
  //   or kernel AIO on a regular file): it completes normally.
  //   kInvalidArgument when req is not in flight on this engine. kShutdown
  //   after Shutdown began (use ShutdownMode::kCancelNotStarted).
  // Thread safety: any thread.
  virtual Status Cancel(Request* req) = 0;

  // An eventfd that becomes readable when completions are ready (counter += 1
  // per completion; on linux-aio a request with its own eventfd signals only
  // that one, as the kernel takes one per request). Non-blocking
  // (EFD_NONBLOCK) and close-on-exec. Reading it is the caller's business;
  // Reap does not read it. kUnsupported when EngineOptions::notify_fd was
  // false. Valid until the engine is destroyed.
  virtual Result<int> NotifyFd() = 0;

  // Registers buffers with the kernel so that requests whose buf_index names
  // one of them skip per-I/O page pinning (io_uring's fixed buffers). Replaces
  // an earlier registration. REQUIRES: nothing in flight. kUnsupported on
  // engines without the feature (their requests ignore buf_index). Refusal for
  // locked-memory limits names RLIMIT_MEMLOCK and its value.
  virtual Status RegisterBuffers(std::span<const iovec> buffers);
  // Registers file descriptors so that requests on them skip the per-I/O file
  // lookup (io_uring's fixed files); requests name them by fd as usual.
  // REQUIRES: nothing in flight. kUnsupported on engines without the feature.
  virtual Status RegisterFiles(std::span<const int> fds);

  // Lets the calling thread do one queued request itself instead of idling
  // while it waits: the threads engine runs the most urgent plain read or
  // write that can complete without blocking (RWF_NOWAIT). True if it did.
  // Reap already does this; it is for callers that wait for completions
  // elsewhere (EngineOptions::on_complete). Other engines: false.
  virtual bool RunQueuedOnce() { return false; }

  // Stops accepting submissions and waits up to `timeout` for the requests in
  // flight, keeping their completions for Reap (or delivering them to the
  // callback). With kCancelNotStarted, first cancels what has not started
  // (see ShutdownMode).
  // On success: nothing is left in flight; kernel resources are released.
  //   Reap still returns what completed and was not reaped, then kShutdown.
  // On failure: kTimedOut when requests are still in flight at the deadline
  //   (the message says how many, and how many were cancelled): they still
  //   belong to the kernel; Reap them, or call Shutdown again.
  // Thread safety: not concurrently with another Shutdown or the destructor.
  virtual Status Shutdown(std::chrono::nanoseconds timeout,
                          ShutdownMode mode) = 0;
  Status Shutdown(std::chrono::nanoseconds timeout) {
    return Shutdown(timeout, ShutdownMode::kFinish);
  }

 protected:
  Engine() = default;
};

// Why an engine was passed over by kAuto (or refused when asked for by name).
struct EngineRefusal {
  EngineKind kind = EngineKind::kDefault;
  Status reason;
};

// Builds and initialises an engine (Init: for linux-aio, io_setup with the
// queue depth). With kAuto the engines are tried in order and each one passed
// over is appended to `passed_over` (when not null) with its reason. Errors say
// which engine was asked for and why it cannot run here.
Result<std::unique_ptr<Engine>> MakeEngine(
    const EngineOptions& options,
    std::vector<EngineRefusal>* passed_over = nullptr);

// The engine kind MakeEngine would try for `options` (resolving kDefault
// through AIOKIT_ENGINE).
Result<EngineKind> ResolveEngineKind(const EngineOptions& options);

}  // namespace aiokit

#endif  // AIOKIT_ENGINE_H_
