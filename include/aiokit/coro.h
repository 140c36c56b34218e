// aiokit: C++20 coroutines over the engines, on an epoll loop.
//
//   auto loop = aiokit::coro::Loop::Create();                  // epoll
//   auto io = aiokit::coro::EngineIo::Create(**loop, *engine); // its NotifyFd
//   aiokit::coro::Task<size_t> ReadHeader(EngineIo& io, int fd) {
//     aiokit::Buffer b = *aiokit::Buffer::Allocate(4096);
//     aiokit::Result<size_t> n = co_await io.Read(fd, 0, b);
//     co_return n.ok() ? *n : 0;
//   }
//   size_t n = (*loop)->Run(ReadHeader(**io, fd));
//
// The lifetime rules that coroutine I/O gets wrong elsewhere hold here:
//  - a coroutine that awaits an operation resumes only after the request has
//    really completed (also when it was cancelled or its deadline passed), so
//    its buffer is never written after it resumes;
//  - buffers are aiokit::Buffer handles, and the request holds a reference:
//    a coroutine destroyed while suspended, or an EngineIo destroyed with
//    requests out, frees nothing the kernel may still write; the request is
//    detached and completes into a quarantine that only drops it;
//  - the request lives in a slot of the EngineIo's pool, not in the frame: a
//    request in flight cannot move, and the frame may be destroyed first. The
//    pool only grows, so steady state allocates nothing per operation.
// Requests that any number of coroutines start before the loop next turns to
// the kernel go to the engine in one Submit.
//
// Errors are values: an operation gives Result<size_t> (the byte count, or
// the request's errno, kTimedOut at its deadline, ECANCELED after a stop
// request). Nothing throws across this API; an exception that escapes a
// coroutine ends the process (std::terminate).
//
// Thread safety: a Loop, its EngineIos and the coroutines they resume belong
// to the thread that runs the loop; stop tokens may be triggered, and
// Loop::Post called, from any thread.

#ifndef AIOKIT_CORO_H_
#define AIOKIT_CORO_H_

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "aiokit/status.h"

namespace aiokit::coro {

template <typename T = void>
class Task;
class Loop;
class EngineIo;

namespace detail {

struct PromiseBase {
  std::coroutine_handle<> continuation;
  // Started by Loop::Spawn: nobody awaits it; it leaves the loop's list and
  // destroys itself when it ends.
  Loop* spawned_on = nullptr;
  PromiseBase* spawn_prev = nullptr;  // the loop's list of spawned tasks
  PromiseBase* spawn_next = nullptr;
  std::coroutine_handle<> self;

  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      PromiseBase& p = h.promise();
      if (p.spawned_on != nullptr) {
        Finished(p);
        h.destroy();
        return std::noop_coroutine();
      }
      return p.continuation ? p.continuation : std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };

  std::suspend_always initial_suspend() noexcept { return {}; }
  FinalAwaiter final_suspend() noexcept { return {}; }
  // No exception crosses aiokit's API: one escaping a coroutine is a bug.
  void unhandled_exception() noexcept { std::terminate(); }
  // A spawned task ended: off the loop's list.
  static void Finished(PromiseBase& p) noexcept;
};

template <typename T>
struct Promise : PromiseBase {
  std::optional<T> value;
  Task<T> get_return_object() noexcept;
  template <typename U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
};

template <>
struct Promise<void> : PromiseBase {
  Task<void> get_return_object() noexcept;
  void return_void() noexcept {}
};

}  // namespace detail

// A lazy coroutine: it starts when awaited (or run or spawned by a Loop) and
// resumes its awaiter when it returns. Move-only; destroying a Task that has
// not finished destroys the coroutine (its operations are detached, see the
// file comment).
template <typename T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::Promise<T>;
  using Handle = std::coroutine_handle<promise_type>;

  Task() noexcept = default;
  explicit Task(Handle h) noexcept : h_(h) {}
  Task(Task&& other) noexcept : h_(std::exchange(other.h_, {})) {}
  Task& operator=(Task&& other) noexcept {
    if (this != &other) {
      if (h_) h_.destroy();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  [[nodiscard]] bool done() const noexcept { return !h_ || h_.done(); }

  auto operator co_await() && noexcept {
    struct Awaiter {
      Handle h;
      bool await_ready() noexcept { return !h || h.done(); }
      std::coroutine_handle<> await_suspend(
          std::coroutine_handle<> caller) noexcept {
        h.promise().continuation = caller;
        return h;  // starts it (symmetric transfer)
      }
      T await_resume() {
        if constexpr (!std::is_void_v<T>) return std::move(*h.promise().value);
      }
    };
    return Awaiter{h_};
  }

  // The coroutine, given up (Loop::Spawn takes it).
  Handle Release() noexcept { return std::exchange(h_, {}); }
  [[nodiscard]] Handle handle() const noexcept { return h_; }

 private:
  Handle h_;
};

namespace detail {
template <typename T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace detail

// Runs every task, concurrently, and resumes once all have finished; their
// values in order.
template <typename T>
Task<std::vector<T>> WhenAll(std::vector<Task<T>> tasks);
Task<void> WhenAll(std::vector<Task<void>> tasks);

// Where a coroutine resumes instead of the thread that reaped its
// completion (the default).
class Executor {
 public:
  virtual ~Executor() = default;
  // Resumes `h` later, on the executor's thread. Thread safety: any thread.
  virtual void Post(std::coroutine_handle<> h) = 0;
};

// Options of one operation.
struct OpOptions {
  // A stop request asks the engine to cancel (a request aiokit still holds
  // is taken back); the coroutine resumes once the request has completed:
  // with ECANCELED, or with its real result if it finished first.
  std::stop_token stop;
  // A deadline from the start (0: none), on the same path: once the request
  // has completed the coroutine resumes with kTimedOut, or with the real
  // result if the engine could not stop it in time.
  std::chrono::nanoseconds timeout{0};
  // Resume there instead of on the loop's thread.
  Executor* executor = nullptr;
};

namespace detail {

// A timer of the loop (a node of its heap).
struct TimerNode {
  std::chrono::steady_clock::time_point due{};
  size_t heap_index = SIZE_MAX;  // SIZE_MAX: not armed
  void (*fire)(TimerNode* self) = nullptr;
};

// Work handed to the loop's thread from any thread, without allocating: the
// node belongs to whoever posts it, who must Cancel it before it goes.
struct RemoteCall {
  void (*fn)(RemoteCall* self) = nullptr;
  RemoteCall* next = nullptr;  // guarded by the loop's post lock
  bool queued = false;         // guarded by the loop's post lock
};

class Op;

// One request of an EngineIo's pool: the Request, the buffers it keeps
// alive, and the operation waiting for it (null once detached).
struct Slot {
  Request req;
  std::vector<Buffer> keep;  // alive until the engine returns the request
  std::vector<iovec> iov;    // readv/writev: built here, copied by Prep*
  Op* op = nullptr;
  bool queued = false;  // queued for the next submission, not yet submitted
  Slot* next_free = nullptr;
};

}  // namespace detail

// An epoll loop: runs coroutines, timers, fd readiness and the completions
// of the EngineIos attached to it.
class Loop final : public Executor {
 public:
  // On failure: the epoll_create1 or eventfd error.
  static Result<std::unique_ptr<Loop>> Create();
  // Destroys the spawned coroutines still suspended (their requests are
  // detached). REQUIRES: the EngineIos on it were destroyed first.
  ~Loop() override;
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Runs the loop until `task` finishes; its value. Spawned tasks run too.
  template <typename T>
  T Run(Task<T> task);
  // Starts `task` on the next turn; it destroys itself when it ends, or
  // when the loop is destroyed.
  void Spawn(Task<void> task);
  // One turn: resumes what is ready, hands queued requests to the kernel,
  // waits up to `timeout` (kForever: no limit) when nothing is ready, and
  // resumes what that brought. How many coroutines it resumed.
  Result<size_t> RunOnce(std::chrono::nanoseconds timeout);

  // Executor: `h` resumes on the loop's thread. Any thread.
  void Post(std::coroutine_handle<> h) override;

  // Resumes after `d`, or earlier on a stop request: true when the whole
  // time passed.
  class SleepAwaitable;
  SleepAwaitable Sleep(std::chrono::nanoseconds d, std::stop_token stop = {});
  // Resumes when `fd` is readable (writable): the epoll events, or the
  // epoll_ctl error.
  class FdAwaitable;
  FdAwaitable Readable(int fd);
  FdAwaitable Writable(int fd);

  // ---- For EngineIo (the loop's thread unless said). ----
  class Source {
   public:
    virtual ~Source() = default;
    // Hands queued requests to the kernel (before the loop blocks).
    virtual void SubmitQueued() = 0;
    // Collects completions without waiting; how many it found.
    virtual size_t Collect() = 0;

   private:
    friend class Loop;
    Source* prev_ = nullptr;
    Source* next_ = nullptr;
  };
  Status AddSource(Source* s, int notify_fd);
  void RemoveSource(Source* s, int notify_fd);
  void Schedule(std::coroutine_handle<> h);
  // Takes back a scheduled resumption (its coroutine is being destroyed).
  void Unschedule(std::coroutine_handle<> h);
  void AddTimer(detail::TimerNode* t);
  void RemoveTimer(detail::TimerNode* t);
  // Any thread: runs c->fn on the loop's thread soon (once, if posted
  // twice before it ran).
  void PostCall(detail::RemoteCall* c);
  // Any thread: takes a posted call back. True if it had not run.
  bool CancelCall(detail::RemoteCall* c);

 private:
  friend struct detail::PromiseBase;
  Loop(int epfd, int wakefd) noexcept : epfd_(epfd), wakefd_(wakefd) {}
  size_t RunReady();
  size_t FireTimers();
  void DrainPosted();
  void Wake();
  void HeapUp(size_t i);
  void HeapDown(size_t i);
  void HeapSwap(size_t a, size_t b);

  int epfd_ = -1;
  int wakefd_ = -1;
  std::vector<std::coroutine_handle<>> ready_;
  std::vector<std::coroutine_handle<>> running_;
  size_t running_pos_ = 0;  // the next of running_ to resume
  std::vector<detail::TimerNode*> heap_;
  Source* sources_ = nullptr;
  detail::PromiseBase* spawned_ = nullptr;
  std::mutex post_mu_;
  std::vector<std::coroutine_handle<>> posted_;  // guarded by post_mu_
  std::vector<std::coroutine_handle<>> posted_run_;
  detail::RemoteCall* calls_ = nullptr;  // guarded by post_mu_
  std::atomic<bool> post_pending_{false};
  bool woken_ = false;  // the wake eventfd was written (guarded by post_mu_)
};

class Loop::SleepAwaitable {
 public:
  SleepAwaitable(Loop* loop, std::chrono::nanoseconds d, std::stop_token stop)
      : loop_(loop), d_(d), stop_(std::move(stop)) {}
  SleepAwaitable(const SleepAwaitable&) = delete;
  SleepAwaitable& operator=(const SleepAwaitable&) = delete;
  ~SleepAwaitable();
  bool await_ready() noexcept { return d_.count() <= 0; }
  void await_suspend(std::coroutine_handle<> h);
  [[nodiscard]] bool await_resume() const noexcept { return !stopped_early_; }

 private:
  struct Node : detail::TimerNode {
    SleepAwaitable* self = nullptr;
  };
  struct Call : detail::RemoteCall {
    SleepAwaitable* self = nullptr;
  };
  struct OnStop {
    SleepAwaitable* self;
    void operator()() const noexcept;
  };
  void Fire(bool early);

  Loop* loop_;
  std::chrono::nanoseconds d_;
  std::stop_token stop_;
  std::coroutine_handle<> h_;
  Node node_;
  Call call_;
  std::optional<std::stop_callback<OnStop>> cb_;
  bool fired_ = false;
  bool stopped_early_ = false;
};

class Loop::FdAwaitable {
 public:
  FdAwaitable(Loop* loop, int fd, uint32_t events)
      : loop_(loop), fd_(fd), events_(events) {}
  FdAwaitable(const FdAwaitable&) = delete;
  FdAwaitable& operator=(const FdAwaitable&) = delete;
  ~FdAwaitable();
  bool await_ready() noexcept { return false; }
  // False (resume at once) when epoll_ctl refused the fd.
  bool await_suspend(std::coroutine_handle<> h);
  Result<uint32_t> await_resume();

 private:
  friend class Loop;
  Loop* loop_;
  int fd_;
  uint32_t events_;
  std::coroutine_handle<> h_;
  bool registered_ = false;
  uint32_t got_ = 0;
  Status error_;
};

namespace detail {

enum class OpKind : uint8_t {
  kRead,
  kWrite,
  kReadv,
  kWritev,
  kFsync,
  kFdatasync
};

// One operation awaitable: what to do, the slot its request occupies, the
// coroutine, cancellation and the deadline. A prvalue that the co_await
// keeps in the frame until the coroutine resumes.
class Op {
 public:
  Op(EngineIo* io, Loop* loop, OpKind kind, int fd, uint64_t offset, Buffer one,
     std::span<const Buffer> many, OpOptions opts) noexcept
      : io_(io),
        loop_(loop),
        kind_(kind),
        fd_(fd),
        offset_(offset),
        buffer_(std::move(one)),
        buffers_(many),
        opts_(std::move(opts)) {}
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;
  // Destroyed while its request is out (the coroutine was destroyed): the
  // request is detached and completes into the quarantine.
  ~Op();

  bool await_ready() noexcept { return false; }
  // Takes a slot, prepares the request, queues it for the loop's next
  // submission, arms the stop callback and the deadline.
  void await_suspend(std::coroutine_handle<> h);
  Result<size_t> await_resume();

 private:
  friend class aiokit::coro::EngineIo;
  struct Deadline : TimerNode {
    Op* op = nullptr;
  };
  struct Call : RemoteCall {
    Op* op = nullptr;
  };
  struct OnStop {
    Op* op;
    void operator()() const noexcept;
  };

  EngineIo* io_;  // null once completed, or let go by its EngineIo
  Loop* loop_;    // outlives the operation
  OpKind kind_;
  int fd_;
  uint64_t offset_;
  Buffer buffer_;                    // read, write
  std::span<const Buffer> buffers_;  // readv, writev: copied at the start
  OpOptions opts_;
  Slot* slot_ = nullptr;  // from the start until the request completes
  std::coroutine_handle<> waiter_;
  int64_t rval_ = kNotCompleted;
  uint64_t asked_ = 0;
  bool timed_out_ = false;
  bool scheduled_ = false;  // its resumption is on the loop's queue
  Deadline deadline_;
  Call cancel_;  // a stop request, posted to the loop
  std::optional<std::stop_callback<OnStop>> stop_cb_;
};

}  // namespace detail

// Operations on one engine for the coroutines of one loop. The engine must
// have been made with notify_fd and without callbacks: the loop reaps it.
class EngineIo final : public Loop::Source {
 public:
  // On failure: kInvalidArgument (no NotifyFd), or the epoll error.
  static Result<std::unique_ptr<EngineIo>> Create(Loop& loop, Engine& engine);
  // Detaches the operations still waiting (their coroutines will never
  // resume; destroy them, or the loop, afterwards), asks the engine to
  // cancel what is out, and reaps until the engine returned every request.
  // A request that never completes and cannot be cancelled (a read of a
  // pipe nobody writes, on linux-aio) blocks it.
  ~EngineIo() override;
  EngineIo(const EngineIo&) = delete;
  EngineIo& operator=(const EngineIo&) = delete;

  using Op = detail::Op;
  // co_await gives the byte count (0 for the syncs) or the error. The
  // request keeps the Buffer handles until it completes.
  Op Read(int fd, uint64_t offset, Buffer buffer, OpOptions opts = {}) {
    return {this, &loop_,         detail::OpKind::kRead,
            fd,   offset,         std::move(buffer),
            {},   std::move(opts)};
  }
  Op Write(int fd, uint64_t offset, Buffer buffer, OpOptions opts = {}) {
    return {this, &loop_,         detail::OpKind::kWrite,
            fd,   offset,         std::move(buffer),
            {},   std::move(opts)};
  }
  // REQUIRES: `buffers` is valid until the co_await starts (it is copied
  // then), as it is when the operation is awaited where it is made.
  Op Readv(int fd, uint64_t offset, std::span<const Buffer> buffers,
           OpOptions opts = {}) {
    return {this, &loop_,  detail::OpKind::kReadv, fd, offset,
            {},   buffers, std::move(opts)};
  }
  Op Writev(int fd, uint64_t offset, std::span<const Buffer> buffers,
            OpOptions opts = {}) {
    return {this, &loop_,  detail::OpKind::kWritev, fd, offset,
            {},   buffers, std::move(opts)};
  }
  Op Fsync(int fd, OpOptions opts = {}) {
    return {this, &loop_, detail::OpKind::kFsync, fd, 0,
            {},   {},     std::move(opts)};
  }
  Op Fdatasync(int fd, OpOptions opts = {}) {
    return {this, &loop_,         detail::OpKind::kFdatasync, fd, 0, {},
            {},   std::move(opts)};
  }

  Engine& engine() noexcept { return engine_; }
  Loop& loop() noexcept { return loop_; }
  // Requests out (queued or in the engine), detached ones included.
  [[nodiscard]] size_t in_flight() const noexcept { return in_flight_; }
  // Requests that completed after their operation was gone.
  [[nodiscard]] uint64_t quarantined() const noexcept { return quarantined_; }
  // Submit calls made (each may carry many requests).
  [[nodiscard]] uint64_t submit_calls() const noexcept { return submits_; }

  // ---- Loop::Source ----
  void SubmitQueued() override;
  size_t Collect() override;

 private:
  friend class detail::Op;
  EngineIo(Loop& loop, Engine& engine, int notify_fd) noexcept
      : loop_(loop), engine_(engine), notify_fd_(notify_fd) {}
  detail::Slot* Take();
  void Release(detail::Slot* s);
  // The engine returned the slot's request.
  void Complete(detail::Slot* s);
  // On the loop's thread: the op's stop request or deadline.
  void Cancel(detail::Op* op);
  // The op's frame goes while its request is out.
  void Detach(detail::Op* op);
  void Unqueue(detail::Slot* s);

  Loop& loop_;
  Engine& engine_;
  int notify_fd_;
  std::vector<std::unique_ptr<detail::Slot[]>> chunks_;
  detail::Slot* free_ = nullptr;
  std::vector<Request*> queued_;  // not yet submitted
  std::vector<Request*> reaped_;
  size_t in_flight_ = 0;
  uint64_t quarantined_ = 0;
  uint64_t submits_ = 0;
};

// ---- The device layer ----

class DeviceIo;

namespace detail {

class DeviceOp;

// One group of a DeviceIo's pool: an IoContext whose callback resumes the
// operation waiting for it, or, detached, returns the slot to the pool.
struct DeviceSlot {
  DeviceSlot();
  DeviceIo* io = nullptr;  // set once, before first use
  IoContext ioc;
  uint64_t got = 0;
  std::mutex mu;           // op, between the device's thread and the loop
  DeviceOp* op = nullptr;  // guarded by mu
  DeviceSlot* next_free = nullptr;  // guarded by the DeviceIo's pool lock
};

// An operation on the device layer: a group of one request (or a flush).
class DeviceOp {
 public:
  enum class Kind : uint8_t { kRead, kReadv, kWrite, kWritev, kFlush };
  DeviceOp(DeviceIo* io, Loop* loop, Kind kind, uint64_t offset, Buffer one,
           std::span<const Buffer> many, WriteOptions w, OpOptions o) noexcept
      : io_(io),
        loop_(loop),
        kind_(kind),
        offset_(offset),
        buffer_(std::move(one)),
        buffers_(many),
        write_(w),
        opts_(std::move(o)) {}
  DeviceOp(const DeviceOp&) = delete;
  DeviceOp& operator=(const DeviceOp&) = delete;
  ~DeviceOp();
  bool await_ready() noexcept { return false; }
  // False (resume at once with the error) when the device refused it.
  bool await_suspend(std::coroutine_handle<> h);
  Result<size_t> await_resume();

 private:
  friend class aiokit::coro::DeviceIo;
  friend struct DeviceSlot;
  struct Deadline : TimerNode {
    DeviceOp* op = nullptr;
  };
  struct Call : RemoteCall {
    DeviceOp* op = nullptr;
  };
  struct OnStop {
    DeviceOp* op;
    void operator()() const noexcept;
  };
  // A stop token, a deadline or an executor: the completion goes through
  // the loop's thread (finish_) to disarm them before the resumption.
  [[nodiscard]] bool Armed() const noexcept {
    return opts_.timeout.count() > 0 || opts_.stop.stop_possible() ||
           opts_.executor != nullptr;
  }

  DeviceIo* io_;  // null once its DeviceIo let it go
  Loop* loop_;    // outlives the operation
  Kind kind_;
  uint64_t offset_;
  Buffer buffer_;
  std::span<const Buffer> buffers_;
  WriteOptions write_;
  OpOptions opts_;
  DeviceSlot* slot_ = nullptr;     // from the start to the completion
  DeviceSlot* started_ = nullptr;  // the slot it started on (for its lock)
  std::coroutine_handle<> waiter_;
  Status status_;
  uint64_t got_ = 0;
  uint64_t asked_ = 0;
  bool posted_ = false;     // guarded by started_->mu: completion posted
  bool timed_out_ = false;  // the loop's thread: its deadline fired
  bool scheduled_ = false;  // the loop's thread: finish_ scheduled it
  Deadline deadline_;
  Call cancel_;  // a stop request or the deadline, on the loop's thread
  Call finish_;  // the completion, on the loop's thread (Armed() only)
  std::optional<std::stop_callback<OnStop>> stop_cb_;
};

}  // namespace detail

// Operations on a Device (aiokit/device.h) for the coroutines of one loop:
// each is a group of one request, with everything the device layer does
// (short transfers, splits, retries, the shared flush). The device may have
// completion threads (the coroutine resumes on the loop's thread, posted)
// or none (the loop reaps it through its NotifyFd).
// Reads and writes take OpOptions as EngineIo's do: a stop request or the
// deadline asks the device to cancel (Device::Cancel) and the coroutine
// resumes once the request has really completed, with ECANCELED (kTimedOut
// for the deadline) and the bytes done in the message, or with its real
// result when the engine could not stop it. A flush is shared with other
// callers and takes no options.
// Thread safety: operations start on the loop's thread.
class DeviceIo final : public Loop::Source {
 public:
  // On failure: kInvalidArgument when the device has no completion threads
  // and its engine no NotifyFd; the epoll error.
  static Result<std::unique_ptr<DeviceIo>> Create(Loop& loop, Device& device);
  // Waits for the groups still out (their coroutines are let go).
  ~DeviceIo() override;
  DeviceIo(const DeviceIo&) = delete;
  DeviceIo& operator=(const DeviceIo&) = delete;

  using Op = detail::DeviceOp;
  // The byte count (reads: fewer only at the end of the file) or the error.
  Op Read(uint64_t offset, Buffer buffer, OpOptions opts = {}) {
    return {this, &loop_, Op::Kind::kRead, offset, std::move(buffer),
            {},   {},     std::move(opts)};
  }
  // Into the buffers, in order (readv). REQUIRES: `buffers` valid until the
  // co_await starts.
  Op Read(uint64_t offset, std::span<const Buffer> buffers,
          OpOptions opts = {}) {
    return {this,    &loop_, Op::Kind::kReadv, offset, {},
            buffers, {},     std::move(opts)};
  }
  Op Write(uint64_t offset, Buffer buffer, WriteOptions w = {},
           OpOptions opts = {}) {
    return {this, &loop_, Op::Kind::kWrite, offset, std::move(buffer),
            {},   w,      std::move(opts)};
  }
  // REQUIRES: `buffers` valid until the co_await starts.
  Op Write(uint64_t offset, std::span<const Buffer> buffers,
           WriteOptions w = {}, OpOptions opts = {}) {
    return {this,    &loop_, Op::Kind::kWritev, offset, {},
            buffers, w,      std::move(opts)};
  }
  // Device::Flush's semantics (shared, sticky), without blocking the loop.
  Op Flush() { return {this, &loop_, Op::Kind::kFlush, 0, {}, {}, {}, {}}; }

  Device& device() noexcept { return device_; }
  Loop& loop() noexcept { return loop_; }
  // Groups out, and those that completed after their operation was gone.
  [[nodiscard]] size_t in_flight() const noexcept;
  [[nodiscard]] uint64_t quarantined() const noexcept;

  // ---- Loop::Source ----
  void SubmitQueued() override {}
  size_t Collect() override;

 private:
  friend class detail::DeviceOp;
  friend struct detail::DeviceSlot;
  DeviceIo(Loop& loop, Device& device, int notify_fd) noexcept
      : loop_(loop), device_(device), notify_fd_(notify_fd) {}
  detail::DeviceSlot* Take();
  // Back to the pool; `reusable` false keeps it aside (its context holds a
  // request that was never submitted).
  void Release(detail::DeviceSlot* s, bool reusable);
  // The slot's group completed (any thread).
  void Done(detail::DeviceSlot* s);
  // On the loop's thread: the op's stop request or deadline.
  void Cancel(detail::DeviceOp* op);

  Loop& loop_;
  Device& device_;
  int notify_fd_;  // -1: the device's completion threads deliver
  mutable std::mutex pool_mu_;
  static constexpr size_t kSlotChunk = 16;
  // Chunks of kSlotChunk slots; the pool never shrinks.
  std::vector<std::unique_ptr<detail::DeviceSlot[]>> slots_;  // guarded
  detail::DeviceSlot* free_ = nullptr;                        // guarded
  size_t out_ = 0;                                            // guarded
  uint64_t quarantined_ = 0;                                  // guarded
};

// ---- Templates ----

namespace detail {
template <typename T>
Task<void> Drive(Task<T>* task, bool* finished, std::optional<T>* out) {
  out->emplace(co_await std::move(*task));
  *finished = true;
}
inline Task<void> DriveVoid(Task<void>* task, bool* finished) {
  co_await std::move(*task);
  *finished = true;
}
}  // namespace detail

template <typename T>
T Loop::Run(Task<T> task) {
  bool finished = false;
  if constexpr (std::is_void_v<T>) {
    Task<void> driver = detail::DriveVoid(&task, &finished);
    Schedule(driver.handle());
    while (!finished) (void)RunOnce(kForever);
  } else {
    std::optional<T> out;
    Task<void> driver = detail::Drive(&task, &finished, &out);
    Schedule(driver.handle());
    while (!finished) (void)RunOnce(kForever);
    return std::move(*out);
  }
}

namespace detail {
// WhenAll's shared count: the parent resumes when it reaches zero.
struct AllLatch {
  std::atomic<size_t> left{0};
  std::coroutine_handle<> parent;
};
// A child's last step: it stays suspended here (its frame goes with
// WhenAll's), and the last one to arrive resumes the parent.
struct LatchArrive {
  AllLatch* latch;
  bool await_ready() noexcept { return false; }
  std::coroutine_handle<> await_suspend(
      std::coroutine_handle<> /*child*/) const noexcept {
    // acq_rel: each child's result happens before the parent reads them.
    if (latch->left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      return latch->parent;
    }
    return std::noop_coroutine();
  }
  void await_resume() noexcept {}
};
template <typename T>
Task<void> WhenAllChild(Task<T> t, AllLatch* latch, std::optional<T>* out) {
  out->emplace(co_await std::move(t));
  co_await LatchArrive{latch};
}
Task<void> WhenAllChildVoid(Task<void> t, AllLatch* latch);
struct AllAwaiter {
  AllLatch* latch;
  std::vector<Task<void>>* children;
  [[nodiscard]] bool await_ready() const noexcept { return children->empty(); }
  bool await_suspend(std::coroutine_handle<> h) const noexcept {
    latch->parent = h;
    latch->left.store(children->size() + 1, std::memory_order_relaxed);
    for (Task<void>& c : *children) c.handle().resume();
    // The extra count is this call's, so no child resumed the parent while
    // it started them; if all are done already, it goes on at once.
    return latch->left.fetch_sub(1, std::memory_order_acq_rel) != 1;
  }
  void await_resume() noexcept {}
};
}  // namespace detail

template <typename T>
Task<std::vector<T>> WhenAll(std::vector<Task<T>> tasks) {
  detail::AllLatch latch;
  std::vector<std::optional<T>> out(tasks.size());
  std::vector<Task<void>> children;
  children.reserve(tasks.size());
  for (size_t i = 0; i < tasks.size(); ++i) {
    children.push_back(
        detail::WhenAllChild(std::move(tasks[i]), &latch, &out[i]));
  }
  co_await detail::AllAwaiter{&latch, &children};
  std::vector<T> values;
  values.reserve(out.size());
  for (std::optional<T>& v : out) values.push_back(std::move(*v));
  co_return values;
}

}  // namespace aiokit::coro

#endif  // AIOKIT_CORO_H_
