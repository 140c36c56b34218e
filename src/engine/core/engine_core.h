// EngineCore<Backend>: the engine contract of include/aiokit/engine.h, kept
// once for every engine. A backend (backend.h) supplies what differs: how a
// batch reaches the kernel or the workers, where completions land and how to
// sleep until one does, what Cancel can stop. The core does the rest:
//
//   Submit    batch triage (null, already in flight, noop, Validate), then
//             runs of valid requests offered to the backend; a partial offer
//             goes on with the rest; EAGAIN is retried with the RetryPolicy,
//             making room first (MakeRoom); a request the kernel refuses
//             completes with its -errno; what is not taken goes back to the
//             caller untouched.
//   Reap      the done list (completions without I/O, and those collected
//             while making room), then the backend's ring; below `min` it
//             lets the backend help, spins (EngineOptions::spin_before_wait),
//             announces a waiter and sleeps. One reaper at a time (the gate).
//             With callbacks, what it collects goes to on_complete, outside
//             the gate.
//   Cancel    what the backend can stop; taken back before it started means
//             -ECANCELED, Origin::kCancelled, through the done list.
//   Shutdown  no new Submit or Cancel, wait for those inside, then collect
//             everything in flight onto the done list (or let the completion
//             thread deliver it) until the deadline, never cancelling unless
//             ShutdownMode says so; then the backend releases its resources.
//
// The hot path has no virtual call: the backend is a concrete member.

#ifndef AIOKIT_SRC_ENGINE_CORE_ENGINE_CORE_H_
#define AIOKIT_SRC_ENGINE_CORE_ENGINE_CORE_H_

#include <pthread.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <system_error>
#include <thread>

#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "aiokit/status.h"
#include "engine/common.h"
#include "engine/core/backend.h"
#include "engine/core/core_state.h"
#include "sys/syscalls.h"

namespace aiokit::internal {

template <typename Backend>
class EngineCore final : public Engine {
 public:
  explicit EngineCore(const EngineOptions& options)
      : state_(options),
        backend_(&state_),
        spin_(options.spin_before_wait, options.adaptive_spin) {}
  ~EngineCore() override;
  EngineCore(const EngineCore&) = delete;
  EngineCore& operator=(const EngineCore&) = delete;

  // Makes NotifyFd, initialises the backend and starts the completion thread.
  // On failure the engine must only be destroyed.
  Status Init();

  [[nodiscard]] EngineKind kind() const noexcept override {
    return Backend::kKind;
  }
  [[nodiscard]] const Capabilities& GetCapabilities() const noexcept override {
    return caps_;
  }
  [[nodiscard]] unsigned queue_depth() const noexcept override {
    return state_.options().queue_depth;
  }
  [[nodiscard]] EngineStats Stats() const noexcept override;

  SubmitResult Submit(std::span<Request* const> batch) override;
  Result<size_t> Reap(std::span<Request*> out, size_t min,
                      std::chrono::nanoseconds timeout) override;
  Status Cancel(Request* req) override;
  Result<int> NotifyFd() override;
  Status RegisterBuffers(std::span<const iovec> buffers) override {
    if constexpr (requires { backend_.RegisterBuffers(buffers); }) {
      return backend_.RegisterBuffers(buffers);
    } else {
      return Engine::RegisterBuffers(buffers);
    }
  }
  Status RegisterFiles(std::span<const int> fds) override {
    if constexpr (requires { backend_.RegisterFiles(fds); }) {
      return backend_.RegisterFiles(fds);
    } else {
      return Engine::RegisterFiles(fds);
    }
  }
  bool RunQueuedOnce() override { return backend_.RunQueuedOnce(); }
  using Engine::Shutdown;
  Status Shutdown(std::chrono::nanoseconds timeout, ShutdownMode mode) override;

 private:
  // Requests moved at once between the backend and the done list.
  static constexpr size_t kCollect = 256;
  // Requests a callback-mode Reap collects before it delivers them.
  static constexpr size_t kDeliverBatch = 64;

  // Offers batch[first, end) to the backend, with the retry policy. True when
  // all went; else sets result (accepted, status) and gives the rest back.
  bool Offer(std::span<Request* const> batch, size_t first, size_t end,
             SubmitResult* result);
  // EAGAIN: collect completions so the backend has room, waiting up to
  // `delay` for one. False when it could not (another thread reaps, or
  // nothing is in flight): the caller then sleeps `delay` itself.
  bool MakeRoom(std::chrono::microseconds delay);
  // A completion without the backend: queued for Reap (or, on a backend that
  // delivers on its own threads, handed to the callback now), eventfds
  // signalled, a sleeping reaper woken.
  void CompleteLocal(Request* req, int64_t res, Origin origin);
  // Requests the backend completed inside Offer (rval, origin set).
  void CompleteInline(Request* const* reqs, size_t n);

  // ---- REQUIRES the reaper gate. ----
  // Collects into out[*n, max) until `reached` says so, the deadline passes
  // or nothing more can come; sleeps in between. Errors: the wait's.
  template <typename Reached>
  Status Collect(Request** out, size_t max, size_t* n, Reached&& reached,
                 bool forever, Clock::time_point deadline);
  // Moves what the backend has completed onto the done list. Returns how
  // many.
  size_t CollectToDone();
  // Links got[0, n) and appends them to the done list.
  void PushToDone(Request** got, size_t n);
  // Waits up to `timeout` for a completion and moves what came onto the done
  // list (Shutdown).
  void WaitToDone(std::chrono::nanoseconds timeout);
  // Shut down, no Submit or Cancel inside, nothing in the backend or on the
  // done list: nothing can be reaped ever again.
  bool NothingCanArrive() noexcept;

  Result<size_t> ReapToCallback(size_t min, std::chrono::nanoseconds timeout);
  size_t CancelNotStarted();
  Status TimedOut(size_t cancelled);
  void CompletionThreadMain();

  CoreState state_;
  Backend backend_;
  Capabilities caps_;
  ReaperGate gate_;    // one reaper: the backend's ring and Sleep
  AdaptiveSpin spin_;  // guarded by the gate
  // Not while a sync request is in flight, nor for kQuietWaits waits after
  // one was handed over: between a log's write and its fsync a spin slowed
  // the fsync (CoreState::sync_in_flight says why). Under the gate.
  bool SpinAllowed() noexcept {
    static constexpr unsigned kQuietWaits = 16;
    const uint64_t handed = state_.syncs_handed();
    if (state_.sync_in_flight() || handed != syncs_seen_) {
      syncs_seen_ = handed;
      quiet_waits_ = kQuietWaits;
      return false;
    }
    if (quiet_waits_ == 0) return true;
    --quiet_waits_;
    return false;
  }
  uint64_t syncs_seen_ = 0;   // guarded by the gate
  unsigned quiet_waits_ = 0;  // guarded by the gate
  bool inited_ = false;       // Init succeeded (set before any concurrency)
  bool dead_ = true;          // guarded by the gate: false from Init to Destroy
  // Shutdown finished (Destroy ran); Shutdown's own: calls to Shutdown do not
  // overlap.
  bool finished_ = false;

  std::thread completion_thread_;
  std::mutex completion_mu_;
  std::condition_variable completion_cv_;
  bool completion_done_ = false;  // guarded by completion_mu_
};

// ------------------------------------------------------------------ Init

template <typename Backend>
Status EngineCore<Backend>::Init() {
  const EngineOptions& o = state_.options();
  const std::string name = EngineKindName(Backend::kKind);
  if (o.completion_thread && o.on_complete == nullptr) {
    return Status::Error(Errc::kInvalidArgument,
                         name +
                             ": EngineOptions::completion_thread needs "
                             "on_complete (the callback it calls)");
  }
  if (o.completion_thread && o.single_thread &&
      Backend::kKind == EngineKind::kIoUring) {
    return Status::Error(
        Errc::kInvalidArgument,
        name +
            ": completion_thread with single_thread: single_thread promises "
            "that no other thread enters the ring");
  }
  if (o.notify_fd) {
    const int efd = sys::Eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) {
      return Status::FromErrno(-efd, name + ": eventfd() for NotifyFd");
    }
    state_.notify_fd_ = efd;
  }
  if (Status s = backend_.Init(&caps_); !s.ok()) return s;
  caps_.notify_fd = state_.notify_fd() >= 0;
  caps_.request_eventfd = true;
  inited_ = true;
  dead_ = false;
  if (o.completion_thread) {
    // std::thread reports a thread it cannot create by throwing; no exception
    // crosses the API, so it is caught here.
    try {
      completion_thread_ = std::thread(&EngineCore::CompletionThreadMain, this);
    } catch (const std::system_error& e) {
      return Status::FromErrno(e.code().value(),
                               name + ": starting the completion thread");
    }
  }
  return {};
}

template <typename Backend>
EngineCore<Backend>::~EngineCore() {
  // Waits as long as the kernel takes: the buffers of requests in flight must
  // not be freed under it.
  (void)Shutdown(kForever);
  if (completion_thread_.joinable()) completion_thread_.join();
  // Completed requests nobody reaped are the caller's again.
  Request* left[64];
  while (size_t n = state_.done_.Take(left, 64)) {
    for (size_t i = 0; i < n; ++i) {
      state_.SyncHanded(*left[i]);
      left[i]->engine_state.store(request_state::kCompleted,
                                  std::memory_order_relaxed);
    }
  }
  // Every sync request accepted was handed back exactly once.
  assert(!state_.sync_in_flight());
  if (state_.notify_fd_ >= 0) (void)sys::Close(state_.notify_fd_);
}

template <typename Backend>
void EngineCore<Backend>::CompletionThreadMain() {
  std::string name = std::string("aiokit-") + EngineKindName(Backend::kKind);
  name.resize(std::min<size_t>(name.size(), 15));  // the kernel's limit
  (void)pthread_setname_np(pthread_self(), name.c_str());
  for (;;) {
    Result<size_t> r = Reap(std::span<Request*>(), 1, kForever);
    if (r.ok()) continue;
    if (r.status().Is(Errc::kShutdown)) break;
    // An error of the wait itself: not a request's; try again in a moment
    // rather than spin on it.
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  {
    std::lock_guard<std::mutex> lock(completion_mu_);
    completion_done_ = true;
  }
  completion_cv_.notify_all();
}

template <typename Backend>
EngineStats EngineCore<Backend>::Stats() const noexcept {
  const EngineCounters& c = state_.counters();
  EngineStats s;
  s.submitted = c.submitted.load(std::memory_order_relaxed);
  s.completed = c.completed.load(std::memory_order_relaxed);
  s.in_flight = s.submitted >= s.completed ? s.submitted - s.completed : 0;
  s.refused = c.refused.load(std::memory_order_relaxed);
  s.eagain_retries = c.eagain_retries.load(std::memory_order_relaxed);
  s.partial_submits = c.partial_submits.load(std::memory_order_relaxed);
  s.submit_calls = c.submit_calls.load(std::memory_order_relaxed);
  s.wait_calls = c.wait_calls.load(std::memory_order_relaxed);
  s.sleeps = c.sleeps.load(std::memory_order_relaxed);
  s.ring_reaped = c.ring_reaped.load(std::memory_order_relaxed);
  s.cancelled = c.cancelled.load(std::memory_order_relaxed);
  backend_.FillStats(&s);
  return s;
}

template <typename Backend>
Result<int> EngineCore<Backend>::NotifyFd() {
  if (state_.notify_fd() < 0) {
    return Status::Error(Errc::kUnsupported,
                         std::string(Name()) +
                             ": NotifyFd: the engine was created with "
                             "notify_fd = false");
  }
  return state_.notify_fd();
}

// ------------------------------------------------------------------ Submit

template <typename Backend>
SubmitResult EngineCore<Backend>::Submit(std::span<Request* const> batch) {
  SubmitResult result;
  UserGuard guard(&state_.users_);
  if (state_.shutdown_.load(std::memory_order_seq_cst)) {
    result.status = Status::Error(
        Errc::kShutdown, std::string(Name()) + ": Submit after Shutdown");
    return result;
  }
  const EngineOptions& o = state_.options();
  EngineCounters& c = state_.counters_;
  // batch[run, i): accepted by the triage and not yet offered.
  size_t run = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    Request* req = batch[i];
    if (req == nullptr || req->engine_state.load(std::memory_order_relaxed) ==
                              request_state::kInFlight) {
      if (!Offer(batch, run, i, &result)) return result;
      result.accepted = i;
      result.status = Status::Error(
          Errc::kInvalidArgument,
          std::string(Name()) + ": batch[" + std::to_string(i) + "]: " +
              (req == nullptr ? std::string("null request")
                              : DescribeAsked(*req) +
                                    ": submitted again before it was reaped"));
      return result;
    }
    state_.CountSync(*req, 1);  // taken back below if not accepted
    // The iocb is as Prep*/Set* built it; a backend that submits it builds it
    // again from the fields, which the engines read.
    if constexpr (Backend::kSubmitsIocb) req->FillIocb();
    req->rval = kNotCompleted;
    req->origin = Origin::kNone;
    int refuse = 0;
    if (req->op != Op::kNoop) {
      const Status valid = req->Validate();
      if (!valid.ok() && (o.check_alignment || !valid.Is(Errc::kMisaligned))) {
        refuse = EINVAL;
      }
    }
    if (req->op == Op::kNoop || refuse != 0) {
      if (!Offer(batch, run, i, &result)) return result;
      run = i + 1;
      req->engine_state.store(request_state::kInFlight,
                              std::memory_order_relaxed);
      c.submitted.fetch_add(1, std::memory_order_relaxed);
      if (refuse != 0) {
        c.refused.fetch_add(1, std::memory_order_relaxed);
        CompleteLocal(req, -refuse, Origin::kRefused);
      } else {
        CompleteLocal(req, 0, Origin::kLocal);
      }
      continue;
    }
    // Marked now, so that the same request twice in one batch is caught.
    req->engine_state.store(request_state::kInFlight,
                            std::memory_order_relaxed);
  }
  if (!Offer(batch, run, batch.size(), &result)) return result;
  result.accepted = batch.size();
  return result;
}

template <typename Backend>
bool EngineCore<Backend>::Offer(std::span<Request* const> batch, size_t first,
                                size_t end, SubmitResult* result) {
  if (first == end) return true;
  const RetryPolicy& policy = state_.options().eagain;
  EngineCounters& c = state_.counters_;
  // Counted before the backend sees them, so that one completed and reaped at
  // once is never counted completed before it was submitted.
  c.submitted.fetch_add(end - first, std::memory_order_relaxed);
  size_t done = first;
  unsigned attempts = 0;
  std::chrono::microseconds delay = policy.initial_delay;
  int failure = 0;
  while (done < end && failure == 0) {
    const size_t offered = end - done;
    const OfferResult r = backend_.Offer(batch.data() + done, offered);
    if (r.taken != 0) {
      if (r.completed_inline) CompleteInline(batch.data() + done, r.taken);
      done += r.taken;
      if (r.taken < offered) {
        c.partial_submits.fetch_add(1, std::memory_order_relaxed);
      }
      // As BlueStore does: progress restarts the retry budget.
      attempts = 0;
      delay = policy.initial_delay;
    }
    switch (r.kind) {
      case OfferResult::kTaken:
        break;
      case OfferResult::kRefused:
        // The kernel refused batch[done]: it completes with that error, and
        // the requests after it are still offered.
        c.refused.fetch_add(1, std::memory_order_relaxed);
        CompleteLocal(batch[done], -r.error, Origin::kRefused);
        ++done;
        break;
      case OfferResult::kAgain:
        if (r.taken != 0) break;
        if (attempts >= policy.max_retries || state_.shutting_down()) {
          failure = -1;
          break;
        }
        ++attempts;
        ++result->retries;
        c.eagain_retries.fetch_add(1, std::memory_order_relaxed);
        if (!MakeRoom(delay)) std::this_thread::sleep_for(delay);
        delay = NextDelay(delay);
        break;
      case OfferResult::kFailed:
        failure = r.error > 0 ? r.error : EIO;
        break;
    }
  }
  if (done == end) return true;
  // Not taken: back to the caller, idle and not completed, as it was.
  for (size_t i = done; i < end; ++i) {
    Request* req = batch[i];
    req->engine_state.store(request_state::kIdle, std::memory_order_relaxed);
    req->engine_next = nullptr;
    state_.CountSync(*req, -1);
  }
  c.submitted.fetch_sub(end - done, std::memory_order_relaxed);
  result->accepted = done;
  const std::string what = std::to_string(batch.size() - done) +
                           " requests (from batch[" + std::to_string(done) +
                           "]) were not submitted";
  const std::string name = Name();
  if (failure > 0) {
    result->status = Status::FromErrno(
        failure, name + ": " + backend_.FailureText() + "; " + what);
  } else if (state_.shutting_down()) {
    result->status = Status::Error(
        Errc::kShutdown,
        name + ": Shutdown began while Submit was retrying EAGAIN; " + what);
  } else {
    result->status = Status::Error(
        Errc::kQueueFull, name + ": " + backend_.AgainText() + " after " +
                              std::to_string(policy.max_retries) +
                              " retries; " + what);
  }
  return false;
}

template <typename Backend>
bool EngineCore<Backend>::MakeRoom(std::chrono::microseconds delay) {
  if (!gate_.TryAcquire()) return false;  // a reaper frees room as it reaps
  bool retry_now = false;
  if (!dead_) {
    retry_now = CollectToDone() != 0 || backend_.HasRoom();
    if (!retry_now && backend_.Busy()) {
      // Wait up to the delay for room, as a counted waiter (completers wake
      // only those): the first completion ends the wait, not the delay, which
      // grows to seconds after a few retries. A wake-up that brings no room
      // (a no-op completing) waits on.
      const Clock::time_point deadline = Clock::now() + delay;
      DoneList& done = state_.done_;
      for (;;) {
        const uint32_t token = backend_.PrepareSleep();
        done.AddWaiter();
        const auto left = deadline - Clock::now();
        if (backend_.HasRoom() || backend_.Ready() || state_.shutting_down() ||
            left.count() <= 0) {
          done.RetireWaiter();
          break;
        }
        Request* got[kCollect];
        Result<size_t> n = backend_.Sleep(token, got, kCollect, left);
        done.RetireWaiter();
        if (!n.ok()) break;
        PushToDone(got, *n);
        if (*n != 0) break;
      }
      (void)CollectToDone();
      // Room was made, or the delay was spent waiting for it.
      retry_now = true;
    }
  }
  gate_.Release();
  return retry_now;
}

template <typename Backend>
void EngineCore<Backend>::CompleteLocal(Request* req, int64_t res,
                                        Origin origin) {
  if constexpr (Backend::kDeliversOnOwnThreads) {
    if (state_.callbacks()) {
      state_.Deliver(req, res, origin);
      // A Reap waiting for deliveries announced itself (seq_cst) before it
      // looked at the count; the full fence orders our count before our look
      // at the waiters: one of us sees the other.
      FullFence();
      if (state_.done_.HasWaiters()) backend_.Wake();
      return;
    }
  }
  req->rval = res;
  req->origin = origin;
  const int held = HoldEventfd(req->resfd);
  const bool wake = state_.done_.Push(req);
  // As the kernel would: the request is reapable before its eventfd says so.
  if (state_.notify_fd() >= 0) (void)sys::EventfdWrite(state_.notify_fd(), 1);
  SignalHeldEventfd(held);
  if (wake) backend_.Wake();
}

template <typename Backend>
void EngineCore<Backend>::CompleteInline(Request* const* reqs, size_t n) {
  if constexpr (Backend::kDeliversOnOwnThreads) {
    if (state_.callbacks()) {
      for (size_t i = 0; i < n; ++i) {
        CompleteLocal(reqs[i], reqs[i]->rval, reqs[i]->origin);
      }
      return;
    }
  }
  int held_stack[64];
  for (size_t first = 0; first < n; first += 64) {
    const size_t m = std::min<size_t>(64, n - first);
    for (size_t i = 0; i < m; ++i) {
      Request* r = reqs[first + i];
      held_stack[i] = HoldEventfd(r->resfd);
      if (i != 0) reqs[first + i - 1]->engine_next = r;
    }
    const bool wake = state_.done_.Push(reqs[first], reqs[first + m - 1], m);
    if (state_.notify_fd() >= 0) {
      (void)sys::EventfdWrite(state_.notify_fd(), m);
    }
    for (size_t i = 0; i < m; ++i) SignalHeldEventfd(held_stack[i]);
    if (wake) backend_.Wake();
  }
}

// ------------------------------------------------------------------ Reap

template <typename Backend>
bool EngineCore<Backend>::NothingCanArrive() noexcept {
  // seq_cst pairs with UserGuard's increment and Submit's look at the flag: a
  // Submit that began before Shutdown is seen here (it may still queue
  // requests); a later one sees the flag and refuses.
  if (!state_.shutdown_.load(std::memory_order_seq_cst) ||
      state_.users_.load(std::memory_order_seq_cst) != 0) {
    return false;
  }
  if (!dead_ && (backend_.Busy() || backend_.Ready())) return false;
  return state_.done_.count() == 0;
}

template <typename Backend>
void EngineCore<Backend>::PushToDone(Request** got, size_t n) {
  if (n == 0) return;
  for (size_t i = 1; i < n; ++i) got[i - 1]->engine_next = got[i];
  // Their eventfds were signalled when they completed; nothing more to do.
  (void)state_.done_.Push(got[0], got[n - 1], n);
}

template <typename Backend>
size_t EngineCore<Backend>::CollectToDone() {
  if (dead_) return 0;
  size_t total = 0;
  for (;;) {
    Request* got[kCollect];
    const size_t n = backend_.Drain(got, kCollect);
    PushToDone(got, n);
    total += n;
    if (n < kCollect) return total;
  }
}

template <typename Backend>
void EngineCore<Backend>::WaitToDone(std::chrono::nanoseconds timeout) {
  if (CollectToDone() != 0 || backend_.Help()) return;
  // A counted waiter whatever the done list holds (completed requests wait
  // there for Reap during Shutdown).
  const uint32_t token = backend_.PrepareSleep();
  DoneList& done = state_.done_;
  done.AddWaiter();
  if (backend_.Ready() || backend_.ReadyAfterAnnounce()) {
    done.RetireWaiter();
    return;
  }
  Request* got[kCollect];
  Result<size_t> n = backend_.Sleep(token, got, kCollect, timeout);
  done.RetireWaiter();
  if (n.ok()) PushToDone(got, *n);
}

template <typename Backend>
template <typename Reached>
Status EngineCore<Backend>::Collect(Request** out, size_t max, size_t* n,
                                    Reached&& reached, bool forever,
                                    Clock::time_point deadline) {
  DoneList& done = state_.done_;
  if (!dead_) backend_.BeforeReap();
  for (;;) {
    *n += done.Take(out + *n, max - *n);
    if (!dead_) *n += backend_.Drain(out + *n, max - *n);
    if (reached(*n) || *n == max || NothingCanArrive()) return {};
    std::chrono::nanoseconds left = kForever;
    if (!forever) {
      left = deadline - Clock::now();
      if (left.count() <= 0) return {};
    }
    if (dead_) {
      // Shut down: only the done list can still fill (from nothing: no Submit
      // can add to it), so NothingCanArrive above ends this.
      return {};
    }
    // Work, then spin, before announcing a wait: an announced reaper makes
    // every completion pay for a wake-up.
    if (backend_.Help()) continue;
    if (backend_.CanSpin() && backend_.Busy() && SpinAllowed() &&
        spin_.Spin(deadline, [&] {
          return backend_.Ready() || done.count_relaxed() != 0 || reached(*n);
        })) {
      continue;
    }
    const uint32_t token = backend_.PrepareSleep();
    if (done.AnnounceWaiter()) continue;  // (it retired itself)
    // Look once more now that a wake-up would find us: Shutdown wakes once
    // the last Submit has left, and that may have been just now.
    if (backend_.ReadyAfterAnnounce() || backend_.Ready() || reached(*n) ||
        NothingCanArrive()) {
      done.RetireWaiter();
      continue;
    }
    if (!forever) {
      left = deadline - Clock::now();
      if (left.count() <= 0) {
        done.RetireWaiter();
        return {};
      }
    }
    state_.counters().sleeps.fetch_add(1, std::memory_order_relaxed);
    Result<size_t> got = backend_.Sleep(token, out + *n, max - *n, left);
    done.RetireWaiter();
    if (!got.ok()) return got.status();
    *n += *got;
  }
}

template <typename Backend>
Result<size_t> EngineCore<Backend>::Reap(std::span<Request*> out, size_t min,
                                         std::chrono::nanoseconds timeout) {
  if (state_.callbacks()) return ReapToCallback(min, timeout);
  if (out.empty()) return size_t{0};
  min = std::min(min, out.size());
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;
  size_t n = 0;
  bool nothing_left = false;
  Status error;
  {
    ReaperLock lock(&gate_, timeout, deadline);
    if (lock.owns_lock()) {
      error = Collect(
          out.data(), out.size(), &n, [&](size_t got) { return got >= min; },
          forever, deadline);
      // Told only with the gate held: whoever holds it may have completions
      // in hand that are nowhere else yet.
      nothing_left = n == 0 && NothingCanArrive();
    } else {
      n = state_.done_.Take(out.data(), out.size());
    }
  }
  for (size_t i = 0; i < n; ++i) {
    state_.SyncHanded(*out[i]);
    out[i]->engine_state.store(request_state::kCompleted,
                               std::memory_order_relaxed);
  }
  state_.counters_.completed.fetch_add(n, std::memory_order_relaxed);
  if (n == 0 && !error.ok()) return error;
  if (nothing_left) {
    return Status::Error(
        Errc::kShutdown,
        std::string(Name()) + ": engine shut down and nothing left to reap");
  }
  return n;
}

template <typename Backend>
Result<size_t> EngineCore<Backend>::ReapToCallback(
    size_t min, std::chrono::nanoseconds timeout) {
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;
  const uint64_t start = state_.delivered();
  // Delivered during this call, by it or by the backend's own threads.
  auto delivered_since = [&] { return state_.delivered() - start; };
  size_t mine = 0;
  for (;;) {
    Request* buf[kDeliverBatch];
    size_t n = 0;
    bool nothing_left = false;
    Status error;
    {
      std::chrono::nanoseconds left = timeout;
      if (!forever && timeout.count() > 0) {
        left = std::max(std::chrono::nanoseconds(0),
                        std::chrono::duration_cast<std::chrono::nanoseconds>(
                            deadline - Clock::now()));
      }
      ReaperLock lock(&gate_, left, deadline);
      if (lock.owns_lock()) {
        error = Collect(
            buf, kDeliverBatch, &n,
            [&](size_t got) { return delivered_since() + got >= min; }, forever,
            deadline);
        nothing_left = n == 0 && NothingCanArrive();
      } else {
        n = state_.done_.Take(buf, kDeliverBatch);
      }
    }
    // Outside the gate: a callback that submits again may need the gate to
    // make room.
    for (size_t i = 0; i < n; ++i) state_.Hand(buf[i]);
    mine += n;
    if (!error.ok() && mine == 0) return error;
    if (nothing_left && mine == 0) {
      return Status::Error(
          Errc::kShutdown,
          std::string(Name()) + ": engine shut down and nothing left to reap");
    }
    if (!error.ok() || nothing_left || n < kDeliverBatch ||
        delivered_since() >= min || (!forever && Clock::now() >= deadline)) {
      return mine;
    }
  }
}

// ------------------------------------------------------------------ Cancel

template <typename Backend>
Status EngineCore<Backend>::Cancel(Request* req) {
  if (req == nullptr || req->engine_state.load(std::memory_order_relaxed) !=
                            request_state::kInFlight) {
    return Status::Error(
        Errc::kInvalidArgument,
        std::string(Name()) + ": Cancel: " +
            (req == nullptr ? std::string("null request")
                            : DescribeAsked(*req) + " is not in flight"));
  }
  UserGuard guard(&state_.users_);
  if (state_.shutdown_.load(std::memory_order_seq_cst)) {
    return Status::Error(
        Errc::kShutdown,
        std::string(Name()) +
            ": Cancel after Shutdown began (Shutdown with "
            "ShutdownMode::kCancelNotStarted cancels what has not started)");
  }
  CancelOutcome o = backend_.Cancel(req);
  if (o.taken_back) {
    state_.counters_.cancelled.fetch_add(1, std::memory_order_relaxed);
    CompleteLocal(req, -ECANCELED, Origin::kCancelled);
    return {};
  }
  return o.status;
}

// ------------------------------------------------------------------ Shutdown

template <typename Backend>
size_t EngineCore<Backend>::CancelNotStarted() {
  size_t total = 0;
  for (;;) {
    Request* got[64];
    const size_t n = backend_.TakeNotStarted(got, 64);
    for (size_t i = 0; i < n; ++i) {
      state_.counters_.cancelled.fetch_add(1, std::memory_order_relaxed);
      CompleteLocal(got[i], -ECANCELED, Origin::kCancelled);
    }
    total += n;
    if (n < 64) return total;
  }
}

template <typename Backend>
Status EngineCore<Backend>::TimedOut(size_t cancelled) {
  return Status::Error(
      Errc::kTimedOut,
      std::string(Name()) +
          ": Shutdown: " + std::to_string(backend_.InFlightCount()) +
          " requests still in flight at the deadline (" +
          (cancelled != 0
               ? std::to_string(cancelled) + " not started were cancelled"
               : std::string("none cancelled")) +
          "); the kernel or a worker still owns them and their buffers: "
          "reap them, or call Shutdown again (the destructor waits)");
}

template <typename Backend>
Status EngineCore<Backend>::Shutdown(std::chrono::nanoseconds timeout,
                                     ShutdownMode mode) {
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;
  const std::string name = Name();
  state_.shutdown_.store(true, std::memory_order_seq_cst);
  if (!inited_ || finished_) return {};
  // Let submitters and cancellers that got in before the flag finish (one
  // retrying EAGAIN sees the flag and stops).
  while (state_.users_.load(std::memory_order_acquire) != 0) {
    if (!forever && Clock::now() >= deadline) {
      return Status::Error(Errc::kTimedOut,
                           name +
                               ": Shutdown: a Submit or Cancel call was still "
                               "running at the deadline; call Shutdown again");
    }
    std::this_thread::yield();
  }
  backend_.BeginShutdown();
  size_t cancelled = 0;
  if (mode == ShutdownMode::kCancelNotStarted) cancelled = CancelNotStarted();
  // A reaper asleep with nothing in flight looks again and leaves.
  backend_.Wake();

  if (completion_thread_.joinable()) {
    // The completion thread delivers everything and ends once nothing can
    // arrive.
    std::unique_lock<std::mutex> lock(completion_mu_);
    auto ended = [&] { return completion_done_; };
    if (forever) {
      completion_cv_.wait(lock, ended);
    } else if (!completion_cv_.wait_until(lock, deadline, ended)) {
      return TimedOut(cancelled);
    }
    lock.unlock();
    completion_thread_.join();
  }

  ReaperLock lock(&gate_, timeout, deadline);
  if (!lock.owns_lock()) {
    return Status::Error(Errc::kTimedOut,
                         name +
                             ": Shutdown: a reaper held the ring past the "
                             "deadline; call Shutdown again");
  }
  if (dead_) return {};
  // Everything in flight completes; its completion waits on the done list.
  while (backend_.Busy() || backend_.Ready()) {
    std::chrono::nanoseconds left = kForever;
    if (!forever) {
      left = deadline - Clock::now();
      if (left.count() <= 0) break;
    }
    // In slices, so that a lost wake-up cannot stall Shutdown.
    if (left.count() < 0 || left > std::chrono::milliseconds(100)) {
      left = std::chrono::milliseconds(100);
    }
    WaitToDone(left);
  }
  if (backend_.Busy()) return TimedOut(cancelled);
  (void)CollectToDone();
  backend_.Destroy();
  dead_ = true;
  finished_ = true;
  return {};
}

// Builds and initialises an engine on `Backend`.
template <typename Backend>
Result<std::unique_ptr<Engine>> MakeEngineOn(const EngineOptions& options) {
  auto engine = std::make_unique<EngineCore<Backend>>(options);
  if (Status s = engine->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_CORE_ENGINE_CORE_H_
