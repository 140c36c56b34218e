// What an engine's core shares with its backend: the options, the NotifyFd
// eventfd, the done list, the Submit/Cancel user count and the Shutdown flag,
// the counters of EngineStats, and the hand-over of a completed request to the
// completion callback. EngineCore<Backend> (engine_core.h) owns one; the
// backend gets a pointer to it.

#ifndef AIOKIT_SRC_ENGINE_CORE_CORE_STATE_H_
#define AIOKIT_SRC_ENGINE_CORE_CORE_STATE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "engine/common.h"

namespace aiokit::internal {

// The counters of EngineStats. Relaxed: each is exact when read, and they are
// read separately (EngineStats' contract).
struct EngineCounters {
  std::atomic<uint64_t> submitted{0};
  std::atomic<uint64_t> completed{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> eagain_retries{0};
  std::atomic<uint64_t> partial_submits{0};
  std::atomic<uint64_t> submit_calls{0};
  std::atomic<uint64_t> wait_calls{0};
  std::atomic<uint64_t> sleeps{0};
  std::atomic<uint64_t> ring_reaped{0};
  std::atomic<uint64_t> cancelled{0};
};

// A request's eventfd is signalled after its completion is visible, when the
// caller may already have reaped it, closed the eventfd and opened another
// file under that number. The kernel holds a reference to the eventfd; so do
// we: a second descriptor for it, taken while the request is still ours.
// -1 when there is none (or it is closed already: nothing to signal).
int HoldEventfd(int fd) noexcept;
// Adds 1 to the held eventfd and closes it (nothing for -1).
void SignalHeldEventfd(int held) noexcept;

class CoreState {
 public:
  explicit CoreState(const EngineOptions& options) : options_(options) {}
  CoreState(const CoreState&) = delete;
  CoreState& operator=(const CoreState&) = delete;

  [[nodiscard]] const EngineOptions& options() const noexcept {
    return options_;
  }
  [[nodiscard]] bool callbacks() const noexcept {
    return options_.on_complete != nullptr;
  }
  // The NotifyFd eventfd, or -1. Set once by EngineCore::Init before the
  // backend's Init.
  [[nodiscard]] int notify_fd() const noexcept { return notify_fd_; }
  DoneList& done() noexcept { return done_; }
  EngineCounters& counters() noexcept { return counters_; }
  [[nodiscard]] const EngineCounters& counters() const noexcept {
    return counters_;
  }
  // Shutdown has begun (acquire pairs with Shutdown's seq_cst store, so a
  // thread that sees it also sees the engine's state before it).
  [[nodiscard]] bool shutting_down() const noexcept {
    return shutdown_.load(std::memory_order_acquire);
  }

  // fsync and fdatasync requests: accepted and not yet handed to the caller
  // (by Reap, or to the callback), and handed over so far. The reaper does not
  // spin while one is in flight, nor for a few waits after one was handed
  // over (EngineCore::SpinAllowed): the kernel runs them on a worker thread
  // (io-wq, a kworker, the threads engine's pool) that needs the CPU a spin
  // would take. Hints for speed only (relaxed), never for liveness.
  [[nodiscard]] bool sync_in_flight() const noexcept {
    return syncs_in_flight_.load(std::memory_order_relaxed) != 0;
  }
  [[nodiscard]] uint64_t syncs_handed() const noexcept {
    return syncs_handed_.load(std::memory_order_relaxed);
  }
  static bool IsSync(const Request& req) noexcept {
    return req.op == Op::kFsync || req.op == Op::kFdatasync;
  }
  // Submit counts a sync request in (+1) and, if it is not accepted, out (-1).
  void CountSync(const Request& req, int delta) noexcept {
    if (IsSync(req)) {
      syncs_in_flight_.fetch_add(delta, std::memory_order_relaxed);
    }
  }
  // A request is handed to the caller.
  void SyncHanded(const Request& req) noexcept {
    if (IsSync(req)) {
      syncs_in_flight_.fetch_sub(1, std::memory_order_relaxed);
      syncs_handed_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // Hands a request the backend completed on a thread of its own to the
  // callback at once: sets rval and origin, marks it completed, calls
  // on_complete, then signals NotifyFd and the request's eventfd. The caller
  // then wakes a waiting reaper (a Reap counts deliveries). REQUIRES
  // callbacks(); the request is the caller's from the call on.
  void Deliver(Request* req, int64_t res, Origin origin);
  // Hands a request whose completion was already signalled (taken from a
  // ring or the done list by Reap) to the callback. REQUIRES callbacks().
  void Hand(Request* req);
  // Completions handed to the callback so far (seq_cst: a Reap waiting for a
  // count reads it after announcing itself).
  [[nodiscard]] uint64_t delivered() const noexcept {
    return delivered_.load(std::memory_order_seq_cst);
  }

 private:
  template <typename Backend>
  friend class EngineCore;

  const EngineOptions options_;
  int notify_fd_ = -1;

  // ---- Written by the threads that submit and reap.
  alignas(kCacheLine) std::atomic<int> users_{0};  // inside Submit or Cancel
  std::atomic<bool> shutdown_{false};
  EngineCounters counters_;
  std::atomic<int64_t> syncs_in_flight_{0};
  std::atomic<uint64_t> syncs_handed_{0};

  // ---- Written by whoever completes without I/O, and by the reaper.
  alignas(kCacheLine) DoneList done_;

  // ---- Written by whoever delivers to the callback (workers, reapers).
  alignas(kCacheLine) std::atomic<uint64_t> delivered_{0};
};

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_CORE_CORE_STATE_H_
