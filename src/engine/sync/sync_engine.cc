// The sync engine: each request runs inside Submit, one after another, with
// the ordinary system calls (fio's psync). For debugging, deterministic tests
// and as the baseline of `aiokit bench --compare`. It is a backend of
// EngineCore (src/engine/core/) and nothing more: triage, the done list,
// Reap, callbacks, Cancel and Shutdown are the core's.

#include <algorithm>
#include <climits>

#include "engine/core/backend.h"
#include "engine/core/blocking_io.h"
#include "engine/core/engine_core.h"
#include "engine/engines.h"
#include "sys/syscalls.h"

namespace aiokit::internal {
namespace {

class SyncBackend final : public BackendBase {
 public:
  static constexpr EngineKind kKind = EngineKind::kSync;
  explicit SyncBackend(CoreState* core) : core_(core) {}

  Status Init(Capabilities* caps) {
    const unsigned depth = core_->options().queue_depth;
    if (depth == 0 || depth > (1U << 22)) {
      return Status::Error(Errc::kInvalidArgument,
                           "sync: queue_depth " + std::to_string(depth) +
                               ": must be 1 to 4194304");
    }
    caps->runs_in_submit = true;
    caps->fsync = true;
    caps->rw_flags = true;
    caps->ioprio = true;
    caps->ring_entries = depth;
    return {};
  }

  // Runs every request now; the core queues them for Reap.
  OfferResult Offer(Request* const* reqs, size_t n) {
    core_->counters().submit_calls.fetch_add(1, std::memory_order_relaxed);
    // Fault injection stands where a submission call would fail or fall short.
    if (const sys::FaultHooks* h = sys::Hooks();
        h != nullptr && h->user_submit != nullptr) [[unlikely]] {
      auto want = static_cast<unsigned>(std::min<size_t>(n, 1U << 20));
      if (h->user_submit(&want) < 0 || want == 0) {
        return {.kind = OfferResult::kAgain};
      }
      n = want;
    }
    for (size_t i = 0; i < n; ++i) Run(reqs[i]);
    return {.taken = n, .completed_inline = true};
  }

  // Nothing is ever in flight: completions wait on the core's done list, and
  // a reaper sleeps only until another thread's Submit wakes it.
  size_t Drain(Request** /*out*/, size_t /*max*/) { return 0; }
  [[nodiscard]] bool Ready() const noexcept { return false; }
  [[nodiscard]] bool Busy() const noexcept { return false; }
  [[nodiscard]] int64_t InFlightCount() const noexcept { return 0; }
  uint32_t PrepareSleep() noexcept {
    return wake_seq_.load(std::memory_order_seq_cst);
  }
  Result<size_t> Sleep(uint32_t token, Request** /*out*/, size_t /*max*/,
                       std::chrono::nanoseconds timeout) {
    (void)sys::FutexWait(reinterpret_cast<const uint32_t*>(&wake_seq_), token,
                         timeout);
    core_->counters().wait_calls.fetch_add(1, std::memory_order_relaxed);
    return size_t{0};
  }
  void Wake() noexcept {
    wake_seq_.fetch_add(1, std::memory_order_seq_cst);
    (void)sys::FutexWake(reinterpret_cast<const uint32_t*>(&wake_seq_),
                         INT_MAX);
  }
  CancelOutcome Cancel(Request* req) {
    return {.status =
                Status::Error(Errc::kNotCancellable,
                              "sync: Cancel(" + DescribeAsked(*req) +
                                  "): it ran inside Submit and has completed")};
  }
  void Destroy() {}

 private:
  // The request's I/O priority is the calling thread's for the call.
  void Run(Request* req) {
    int before = -1;
    if (req->has_ioprio) {
      before = sys::IoprioGetThread();
      if (const int r = sys::IoprioSetThread(req->ioprio); r < 0) {
        req->rval = r;
        req->origin = Origin::kEngine;
        return;
      }
    }
    req->rval = RunBlocking(*req);
    req->origin = Origin::kEngine;
    if (before >= 0) (void)sys::IoprioSetThread(before);
  }

  CoreState* core_;
  std::atomic<uint32_t> wake_seq_{0};
};

}  // namespace

Result<std::unique_ptr<Engine>> MakeSyncEngine(const EngineOptions& options) {
  return MakeEngineOn<SyncBackend>(options);
}

}  // namespace aiokit::internal
