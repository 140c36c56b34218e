// Completion delivery for the suites: the same test runs whichever way the
// engine hands completions back. A test parameter may end in "+callback" (the
// engine's EngineOptions::on_complete, called by the thread in Reap, or by the
// engine's own threads) or "+thread" (on_complete called by the engine's
// completion thread). The test still drives the engine with Reap: a
// CallbackCollector wraps it, queues what the callback gets, and its Reap
// returns that, so that every assertion about what comes back holds
// unchanged.

#ifndef AIOKIT_TESTS_DELIVERY_H_
#define AIOKIT_TESTS_DELIVERY_H_

#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <utility>

#include "aiokit/engine.h"
#include "aiokit/engine_wrapper.h"
#include "aiokit/request.h"
#include "aiokit/status.h"

namespace aiokit::testing {

// Completions the callback was given, in order, until a Reap takes them.
struct DeliveredQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Request*> reqs;
  // An eventfd signalled after each request is queued, or -1 (the
  // collector's NotifyFd when a completion thread delivers).
  int efd = -1;
  // Requests the callback got whose state did not read completed there (an
  // engine that calls back too early): the collector counts them, and
  // DeliveredBeforeCompleted() makes the test fail.
  size_t not_completed = 0;

  static void OnComplete(void* arg, Request* req) {
    auto* q = static_cast<DeliveredQueue*>(arg);
    {
      std::lock_guard<std::mutex> lock(q->mu);
      if (!req->completed()) ++q->not_completed;
      q->reqs.push_back(req);
    }
    q->cv.notify_all();
    if (q->efd >= 0) {
      const uint64_t one = 1;
      (void)!::write(q->efd, &one, sizeof(one));
    }
  }
};

class CallbackCollector final : public EngineWrapper {
 public:
  // `target` was made with on_complete = DeliveredQueue::OnComplete and
  // on_complete_arg = queue.get(); `own_thread` when it has a completion
  // thread (or completes on threads of its own only).
  CallbackCollector(std::unique_ptr<Engine> target,
                    std::unique_ptr<DeliveredQueue> queue, bool own_thread)
      : EngineWrapper(std::move(target)),
        queue_(std::move(queue)),
        own_thread_(own_thread) {}
  // The target may still call back as it shuts down: it goes first.
  ~CallbackCollector() override {
    ResetTarget();
    if (queue_->efd >= 0) ::close(queue_->efd);
  }

  // With a completion thread the engine's NotifyFd fires when the kernel has
  // completed a request, before the thread delivers it, so it cannot say what
  // this Reap would find: the collector's own eventfd, signalled once the
  // callback has queued the request, does (as a program's own would).
  Result<int> NotifyFd() override {
    Result<int> inner = target().NotifyFd();
    if (!inner.ok() || !own_thread_) return inner;
    return queue_->efd;
  }

  [[nodiscard]] size_t not_completed() const {
    std::lock_guard<std::mutex> lock(queue_->mu);
    return queue_->not_completed;
  }

  Result<size_t> Reap(std::span<Request*> out, size_t min,
                      std::chrono::nanoseconds timeout) override {
    if (out.empty()) return size_t{0};
    min = std::min(min, out.size());
    const bool forever = timeout.count() < 0;
    const auto deadline = forever ? std::chrono::steady_clock::time_point::max()
                                  : std::chrono::steady_clock::now() + timeout;
    size_t n = 0;
    bool asked = false;  // the target was asked at least once
    for (;;) {
      n += Pop(out.subspan(n));
      const auto now = std::chrono::steady_clock::now();
      const bool time_left = forever || now < deadline;
      if (n == out.size() || (asked && (n >= min || !time_left))) return n;
      const std::chrono::nanoseconds left =
          forever     ? kForever
          : time_left ? std::chrono::duration_cast<std::chrono::nanoseconds>(
                            deadline - now)
                      : std::chrono::nanoseconds(0);
      if (!own_thread_) {
        // This thread delivers: the target's Reap calls back into the queue.
        Result<size_t> r =
            target().Reap(std::span<Request*>(), min > n ? min - n : 0, left);
        asked = true;
        if (!r.ok()) {
          n += Pop(out.subspan(n));
          if (n != 0) return n;
          return r.status();
        }
        continue;
      }
      // The completion thread delivers: wait for it, in slices, and ask the
      // target (a poll) whether anything can still come.
      if (asked) {
        std::unique_lock<std::mutex> lock(queue_->mu);
        const auto slice = now + std::chrono::milliseconds(10);
        queue_->cv.wait_until(lock, std::min(deadline, slice),
                              [&] { return !queue_->reqs.empty(); });
      }
      asked = true;
      bool empty = false;
      {
        std::lock_guard<std::mutex> lock(queue_->mu);
        empty = queue_->reqs.empty();
      }
      if (empty) {
        Result<size_t> r = target().Reap(std::span<Request*>(), 0,
                                         std::chrono::nanoseconds(0));
        if (!r.ok()) {
          n += Pop(out.subspan(n));
          if (n != 0) return n;
          return r.status();
        }
      }
    }
  }

 private:
  size_t Pop(std::span<Request*> out) {
    std::lock_guard<std::mutex> lock(queue_->mu);
    size_t n = 0;
    while (n < out.size() && !queue_->reqs.empty()) {
      out[n++] = queue_->reqs.front();
      queue_->reqs.pop_front();
    }
    return n;
  }

  std::unique_ptr<DeliveredQueue> queue_;
  const bool own_thread_;
};

// Splits "io_uring/single+callback" at the '+': the delivery mode ("" for
// Reap).
inline std::string DeliveryMode(const std::string& param) {
  const size_t plus = param.find('+');
  return plus == std::string::npos ? "" : param.substr(plus + 1);
}
inline std::string WithoutDelivery(const std::string& param) {
  return param.substr(0, param.find('+'));
}

// Makes an engine with `options` (already set up for the parameter's engine
// and variant) delivering as `mode` says: "" (Reap), "callback" or "thread".
inline Result<std::unique_ptr<Engine>> MakeDelivering(const std::string& mode,
                                                      EngineOptions options) {
  if (mode.empty()) return MakeEngine(options);
  if (mode != "callback" && mode != "thread") {
    return Status::Error(
        Errc::kInvalidArgument,
        "test parameter: no delivery \"" + mode + "\" (callback, thread)");
  }
  auto queue = std::make_unique<DeliveredQueue>();
  if (mode == "thread" && options.notify_fd) {
    queue->efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  options.on_complete = &DeliveredQueue::OnComplete;
  options.on_complete_arg = queue.get();
  options.completion_thread = mode == "thread";
  Result<std::unique_ptr<Engine>> e = MakeEngine(options);
  if (!e.ok()) return e.status();
  return std::unique_ptr<Engine>(std::make_unique<CallbackCollector>(
      std::move(*e), std::move(queue), mode == "thread"));
}

}  // namespace aiokit::testing

#endif  // AIOKIT_TESTS_DELIVERY_H_
