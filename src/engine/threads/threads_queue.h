// The threads engine's queue of requests not yet started: 24 priority
// buckets (realtime 0-7, best effort 0-7, idle 0-7), each in submission order,
// and, when requests on one fd must run one at a time (threads_ordered_per_fd),
// a chain per fd of those waiting for the one queued or running.
//
// A request's engine-private fields hold its place: engine_seq its ticket
// (submission order), engine_bucket its bucket, engine_mark whether it is
// queued, started, or queued again for a worker because a try without
// blocking said it would block.
//
// Thread safety: none; the engine's queue lock guards every call, except
// empty_hint().

#ifndef AIOKIT_SRC_ENGINE_THREADS_THREADS_QUEUE_H_
#define AIOKIT_SRC_ENGINE_THREADS_THREADS_QUEUE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <unordered_map>

#include "aiokit/request.h"

namespace aiokit::internal {

// Request::engine_mark values.
inline constexpr uint8_t kQueued = 0;
inline constexpr uint8_t kStarted = 1;
// Queued again after a try without blocking said it would block: for a
// worker, which may wait (a thread that helps passes it by).
inline constexpr uint8_t kForWorker = 2;
// Submitted to the kernel's AIO (threads_kernel_aio): never on the queue.
inline constexpr uint8_t kInKernel = 3;

// Requests a thread that helps passes by when they are marked for a worker.
inline constexpr size_t kHelpSkip = 8;

class RequestQueue {
 public:
  explicit RequestQueue(bool ordered_per_fd) : ordered_(ordered_per_fd) {}

  // Queues `req`: in its priority bucket, or behind the request of its fd
  // that is queued or running (ordered per fd).
  void Enqueue(Request* req);
  // The most urgent request, off the queue; nullptr when none.
  Request* Dequeue();
  // A request taken to run that goes back (it would block, or was not
  // tried): queued again in its place, ahead of those queued after it, so it
  // keeps its turn; marked for a worker when it would block.
  void RequeueFront(Request* req, bool would_block);
  // Whether the most urgent request may be run with RWF_NOWAIT by a thread
  // that is not a worker set up for it (RunsWithoutBlocking).
  [[nodiscard]] bool HeadRunsWithoutBlocking() const noexcept;
  // A plain read or write without an I/O priority (that needs a worker's
  // ioprio_set), not O_DIRECT, and not marked for a worker.
  static bool RunsWithoutBlocking(const Request& req) noexcept;
  // The most urgent queued request that RunsWithoutBlocking, past at most
  // kHelpSkip left for workers, off the queue; nullptr if none.
  Request* TakeHelpable();
  // Whether TakeHelpable would find one.
  [[nodiscard]] bool HasHelpable() const noexcept;
  // Takes `req` off the queue (Cancel); false when it is not queued.
  bool Remove(Request* req);
  // Ordered per fd, after a request of `fd` finished: the next one of that
  // fd, which now runs (it is not queued), or nullptr when the fd's turn ends.
  Request* NextOfFd(int fd);
  // Every queued request, one at a time (Shutdown's cancel of what has not
  // started); nullptr when none is left.
  Request* TakeAny();

  [[nodiscard]] size_t size() const noexcept { return queued_; }
  [[nodiscard]] bool empty() const noexcept { return nonempty_ == 0; }
  // Whether a bucket holds requests, readable without the lock (a hint: it
  // is rechecked under the lock).
  [[nodiscard]] bool empty_hint() const noexcept {
    return nonempty_relaxed_.load(std::memory_order_relaxed) == 0;
  }
  // A hint for a waiter's check after it announced itself (seq_cst, the
  // other half of the queue's full fence after a requeue).
  [[nodiscard]] bool empty_hint_seq_cst() const noexcept {
    return nonempty_relaxed_.load(std::memory_order_seq_cst) == 0;
  }

 private:
  // While one request of an fd is queued or running, the next ones wait
  // here, in order.
  struct FdChain {
    bool active = false;  // a request of this fd is queued or running
    Request* head = nullptr;
    Request* tail = nullptr;
  };
  static constexpr unsigned kBuckets = 24;

  void PutInBucket(Request* req);
  void PublishNonempty() noexcept {
    nonempty_relaxed_.store(nonempty_, std::memory_order_relaxed);
  }
  const Request* FirstHelpable() const noexcept;

  const bool ordered_;
  Request* bucket_head_[kBuckets] = {};
  Request* bucket_tail_[kBuckets] = {};
  uint32_t nonempty_ = 0;                      // bit b: bucket b has requests
  uint64_t next_ticket_ = 0;                   // engine_seq: submission order
  std::atomic<uint32_t> nonempty_relaxed_{0};  // a copy of nonempty_
  size_t queued_ = 0;                          // in buckets and chains
  std::unordered_map<int, FdChain> chains_;
};

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_THREADS_THREADS_QUEUE_H_
