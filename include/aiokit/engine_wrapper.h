// aiokit: EngineWrapper, an Engine that forwards every call to an engine it
// owns (LevelDB's EnvWrapper). Derive from it and override the calls to
// change: count or time requests, inject faults (aiokit/fault.h is built on
// it), trace, throttle. examples/latency_wrapper.cc is one in a few dozen
// lines.
//
// A wrapper keeps the engine contract (engine.h) if every request its Submit
// accepted comes back exactly once from its Reap. One that holds a completion
// back after the target returned it (to delay or reorder it) marks it with
// HoldBack() and hands it out with HandOut(), so that the request reads as in
// flight meanwhile.
//
// Thread safety: as the target's; the forwarding adds no locking.

#ifndef AIOKIT_ENGINE_WRAPPER_H_
#define AIOKIT_ENGINE_WRAPPER_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>

#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "aiokit/status.h"

namespace aiokit {

// Completion callbacks for a wrapper that delivers completions itself (as
// EngineOptions::on_complete and completion_thread do for an engine). The
// wrapped engine then has none of its own.
struct CompletionDelivery {
  void (*on_complete)(void* arg, Request* req) = nullptr;
  void* on_complete_arg = nullptr;
  bool completion_thread = false;
};

class EngineWrapper : public Engine {
 public:
  // REQUIRES: target is not null.
  explicit EngineWrapper(std::unique_ptr<Engine> target)
      : target_(std::move(target)) {}
  // Destroys the target, which waits for its requests in flight.
  ~EngineWrapper() override = default;

  // The wrapped engine.
  Engine& target() noexcept { return *target_; }
  [[nodiscard]] const Engine& target() const noexcept { return *target_; }

  [[nodiscard]] EngineKind kind() const noexcept override {
    return target_->kind();
  }
  [[nodiscard]] const Capabilities& GetCapabilities() const noexcept override {
    return target_->GetCapabilities();
  }
  [[nodiscard]] unsigned queue_depth() const noexcept override {
    return target_->queue_depth();
  }
  [[nodiscard]] EngineStats Stats() const noexcept override {
    return target_->Stats();
  }
  SubmitResult Submit(std::span<Request* const> batch) override {
    return target_->Submit(batch);
  }
  Result<size_t> Reap(std::span<Request*> out, size_t min,
                      std::chrono::nanoseconds timeout) override {
    return target_->Reap(out, min, timeout);
  }
  Status Cancel(Request* req) override { return target_->Cancel(req); }
  Result<int> NotifyFd() override { return target_->NotifyFd(); }
  Status RegisterBuffers(std::span<const iovec> buffers) override {
    return target_->RegisterBuffers(buffers);
  }
  Status RegisterFiles(std::span<const int> fds) override {
    return target_->RegisterFiles(fds);
  }
  bool RunQueuedOnce() override { return target_->RunQueuedOnce(); }
  using Engine::Shutdown;
  Status Shutdown(std::chrono::nanoseconds timeout,
                  ShutdownMode mode) override {
    return target_->Shutdown(timeout, mode);
  }

 protected:
  // Destroys the target now (a derived destructor that must outlive the
  // target's last completion calls it first).
  void ResetTarget() noexcept { target_.reset(); }

  // A request the target returned that this wrapper keeps for later reads as
  // in flight (not completed) until HandOut().
  static void HoldBack(Request* req) noexcept {
    req->engine_state.store(request_state::kInFlight,
                            std::memory_order_relaxed);
  }
  // ... and as completed again when the wrapper hands it out.
  static void HandOut(Request* req) noexcept {
    req->engine_state.store(request_state::kCompleted,
                            std::memory_order_relaxed);
  }

 private:
  std::unique_ptr<Engine> target_;
};

}  // namespace aiokit

#endif  // AIOKIT_ENGINE_WRAPPER_H_
