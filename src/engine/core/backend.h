// The contract between EngineCore<Backend> (engine_core.h) and an engine's
// backend: the few things that differ between engines. Everything else an
// engine promises (engine.h) -- batch triage, the EAGAIN retry loop that makes
// room, the done list and the waiter handshake, the one-reaper gate, the
// Submit/Cancel/Shutdown protocol, counters, completions without I/O and
// their eventfds, callbacks and the completion thread, the destructor's
// hand-back -- the core keeps, once, for every engine.
//
// A backend is a class, usually final, that derives from BackendBase (the
// defaults below) and provides:
//
//   static constexpr EngineKind kKind;
//   explicit Backend(CoreState* core);          // keeps the pointer
//   Status Init(Capabilities* caps);            // after the core made
//       NotifyFd; fills caps (the core sets notify_fd and request_eventfd).
//       On failure the backend is destroyed without any other call.
//
//   Submission (any thread, concurrently; the core holds a Submit user):
//   OfferResult Offer(Request* const* reqs, size_t n);
//       reqs[0, n) are valid (Validate passed), marked in flight, with rval
//       kNotCompleted, origin kNone (and the iocb filled from the fields
//       when kSubmitsIocb). The backend takes a
//       prefix and says how many and why not the rest (OfferResult).
//       The requests it did not take it must leave as it found them.
//
//   Reaping (REQUIRES the reaper gate; one thread at a time):
//   size_t Drain(Request** out, size_t max);   // completions ready now, with
//       rval and origin set, no waiting; also the backend's upkeep (io_uring
//       sends what waits in its overflow queue).
//   bool Ready() const;   // completions Drain would return now (cheap)
//   bool Busy() const;    // requests the backend holds that have not
//       completed; while true, a completion will come without help
//   Result<size_t> Sleep(uint32_t token, Request** out, size_t max,
//                        std::chrono::nanoseconds timeout);
//       Sleeps until a completion or a Wake (or the timeout; negative: none),
//       then drains like Drain. The core has announced a waiter first (so
//       that completers call Wake) and passes what PrepareSleep returned.
//       An error (with nothing drained) is the wait's errno.
//   void Destroy();       // REQUIRES !Busy() and !Ready(): release kernel
//       resources. No hook is called after it except the destructor.
//
//   Any thread:
//   void Wake();          // ends a Sleep early (it may wake a later one)
//   CancelOutcome Cancel(Request* req);  // req is in flight here
//   int64_t InFlightCount() const;       // for messages
//
// The core calls the reaping hooks only while it holds the reaper gate and
// Destroy has not run, so they need no locking of their own against each
// other. It calls Wake after it queued a completion without I/O while a reaper
// may sleep, and at Shutdown.

#ifndef AIOKIT_SRC_ENGINE_CORE_BACKEND_H_
#define AIOKIT_SRC_ENGINE_CORE_BACKEND_H_

#include <cstddef>
#include <cstdint>

#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "aiokit/status.h"

namespace aiokit::internal {

// What Backend::Offer did with reqs[0, n).
struct OfferResult {
  enum Kind : uint8_t {
    // reqs[0, taken) are the backend's; if taken < n, the core offers the rest
    // at once.
    kTaken,
    // No room (EAGAIN, EBUSY, EINTR): reqs[0, taken) are the backend's; the
    // core retries the rest with the RetryPolicy, making room between tries.
    kAgain,
    // reqs[0, taken) are the backend's and the kernel refused reqs[taken]
    // with `error` (an errno): the core completes it with -error
    // (Origin::kRefused) and offers the rest.
    kRefused,
    // The ring failed with `error`, which no retry fixes: the core gives the
    // requests from reqs[taken] back to the caller with that errno.
    kFailed,
  };
  size_t taken = 0;
  Kind kind = kTaken;
  int error = 0;
  // The taken requests are already completed (rval and origin set): the core
  // queues them for Reap, signals their eventfds and wakes a reaper (the sync
  // engine).
  bool completed_inline = false;
};

// What Backend::Cancel did with an in-flight request.
struct CancelOutcome {
  // It had not started and the backend let it go (its slot is free): the core
  // completes it with -ECANCELED, Origin::kCancelled.
  bool taken_back = false;
  // When not taken back: OK (the kernel will complete it, perhaps with
  // -ECANCELED), kNotCancellable with the reason, or an errno.
  Status status;
};

// The hooks every backend may keep as they are. A backend that needs one
// declares its own under the same name (the core calls it through the
// backend's type, so the backend's hides this one; no virtual calls).
class BackendBase {
 public:
  // Completions are delivered to the callback by the backend's own threads
  // (CoreState::Deliver), and completions without I/O by the thread that
  // makes them. False: the thread in Reap, or the completion thread, does.
  static constexpr bool kDeliversOnOwnThreads = false;
  // The kernel reads the request's iocb (linux-aio): the core builds it from
  // the request's fields at submission (Request::FillIocb).
  static constexpr bool kSubmitsIocb = false;

  // At the start of a Reap that holds the gate.
  void BeforeReap() noexcept {}
  // Before sleeping: do work that makes progress instead (the threads engine
  // runs a queued request). True when it completed something.
  bool Help() { return false; }
  // Whether watching Ready() in a spin can see a completion.
  [[nodiscard]] bool CanSpin() const noexcept { return true; }
  // A token for Sleep, taken before the core announces a waiter (a futex
  // sequence number).
  uint32_t PrepareSleep() noexcept { return 0; }
  // After the waiter is announced: true when there is a reason not to sleep
  // that completers report through Wake but Ready() does not show.
  bool ReadyAfterAnnounce() noexcept { return false; }
  // A retry of Offer may succeed now without collecting anything (the threads
  // engine's free ring slots).
  [[nodiscard]] bool HasRoom() const noexcept { return false; }
  // Once Shutdown has begun and no Submit is left inside.
  void BeginShutdown() {}
  // Shutdown's ShutdownMode::kCancelNotStarted: up to max requests the
  // backend still queues and has not started, given up (slots freed); the
  // core completes them -ECANCELED.
  size_t TakeNotStarted(Request** /*out*/, size_t /*max*/) { return 0; }
  // Engine::RunQueuedOnce.
  bool RunQueuedOnce() { return false; }
  // EngineStats fields of the backend's own (workers).
  void FillStats(EngineStats* /*stats*/) const noexcept {}
  // What "no room" means, for SubmitResult's message after the retry policy.
  [[nodiscard]] const char* AgainText() const noexcept {
    return "the engine stayed full (EAGAIN)";
  }
  // What failed, for kFailed's message.
  [[nodiscard]] const char* FailureText() const noexcept {
    return "submission failed";
  }
};

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_CORE_BACKEND_H_
