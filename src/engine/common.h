// Pieces every engine shares: the done list (requests completed and not yet
// reaped) with the handshake that keeps a sleeping reaper from missing one, the
// count of threads inside Submit/Cancel that Shutdown waits for, and the
// adaptive spin before sleeping.

#ifndef AIOKIT_SRC_ENGINE_COMMON_H_
#define AIOKIT_SRC_ENGINE_COMMON_H_

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "aiokit/request.h"

namespace aiokit::internal {

using Clock = std::chrono::steady_clock;

// A mutex that spins a little (glibc's PTHREAD_MUTEX_ADAPTIVE_NP) before it
// sleeps in the kernel. For locks held for a few instructions by threads on
// different CPUs (a queue's head, a ring's tail): with std::mutex, a thread
// that finds it held sleeps and must be woken (a futex wait and wake, several
// microseconds), and once that happens the lock's users fall into step behind
// each other -- the threads engine ran whole benchmark runs at half speed so.
// Meets Lockable; AdaptiveCondVar waits on it.
class AdaptiveMutex {
 public:
  AdaptiveMutex() noexcept {
    pthread_mutexattr_t attr;
    (void)pthread_mutexattr_init(&attr);
#if defined(__GLIBC__)
    (void)pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif  // (elsewhere a normal mutex)
    (void)pthread_mutex_init(&mu_, &attr);
    (void)pthread_mutexattr_destroy(&attr);
  }
  ~AdaptiveMutex() { (void)pthread_mutex_destroy(&mu_); }
  AdaptiveMutex(const AdaptiveMutex&) = delete;
  AdaptiveMutex& operator=(const AdaptiveMutex&) = delete;

  // (A normal mutex's lock and unlock fail only when misused: EDEADLK is not
  // checked for this type, and unlock by a non-owner is undefined anyway.)
  void lock() noexcept { (void)pthread_mutex_lock(&mu_); }
  void unlock() noexcept { (void)pthread_mutex_unlock(&mu_); }
  bool try_lock() noexcept { return pthread_mutex_trylock(&mu_) == 0; }
  pthread_mutex_t* native_handle() noexcept { return &mu_; }

 private:
  pthread_mutex_t mu_;
};

// A condition variable for AdaptiveMutex: glibc's pthread_cond_t, on the
// monotonic clock. (std::condition_variable_any adds a mutex of its own that
// every wait and notify takes: a second lock for woken and waking threads to
// meet on.) Notifying without holding the mutex is allowed, and better: the
// woken thread does not wake only to wait for the notifier's lock.
// Thread safety: as std::condition_variable.
class AdaptiveCondVar {
 public:
  AdaptiveCondVar() noexcept {
    pthread_condattr_t attr;
    (void)pthread_condattr_init(&attr);
    (void)pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    (void)pthread_cond_init(&cv_, &attr);
    (void)pthread_condattr_destroy(&attr);
  }
  ~AdaptiveCondVar() { (void)pthread_cond_destroy(&cv_); }
  AdaptiveCondVar(const AdaptiveCondVar&) = delete;
  AdaptiveCondVar& operator=(const AdaptiveCondVar&) = delete;

  void notify_one() noexcept { (void)pthread_cond_signal(&cv_); }
  void notify_all() noexcept { (void)pthread_cond_broadcast(&cv_); }

  // REQUIRES: `lock` holds its mutex.
  template <typename Pred>
  void wait(std::unique_lock<AdaptiveMutex>& lock, Pred pred) {
    while (!pred()) {
      (void)pthread_cond_wait(&cv_, lock.mutex()->native_handle());
    }
  }
  // Returns pred() at the end: false when `timeout` passed with it false.
  // REQUIRES: `lock` holds its mutex.
  template <typename Pred>
  bool wait_for(std::unique_lock<AdaptiveMutex>& lock,
                std::chrono::nanoseconds timeout, Pred pred) {
    timespec now{};
    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    const auto deadline = std::chrono::seconds(now.tv_sec) +
                          std::chrono::nanoseconds(now.tv_nsec) + timeout;
    const auto secs =
        std::chrono::duration_cast<std::chrono::seconds>(deadline);
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(secs.count());
    ts.tv_nsec = static_cast<long>((deadline - secs).count());
    while (!pred()) {
      if (pthread_cond_timedwait(&cv_, lock.mutex()->native_handle(), &ts) ==
          ETIMEDOUT) {
        return pred();
      }
    }
    return true;
  }

 private:
  pthread_cond_t cv_;
};

// Requests completed (by the engine itself, or collected from the kernel on
// behalf of the caller) and not yet returned by Reap, in completion order,
// linked through Request::engine_next.
//
// A reaper about to sleep announces itself (AnnounceWaiter) and then looks at
// count() once more; a completer pushes and then asks HasWaiters(). Both sides
// use seq_cst, a Dekker pair: at least one of them sees the other, so either
// the reaper finds the request or the completer wakes the reaper.
class DoneList {
 public:
  // Appends first..last (already linked through engine_next), n requests.
  // Returns true when a reaper may be asleep and must be woken.
  bool Push(Request* first, Request* last, size_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last->engine_next = nullptr;
      if (tail_ != nullptr) {
        tail_->engine_next = first;
      } else {
        head_ = first;
      }
      tail_ = last;
      // Under the lock, so that Take never subtracts what was not added yet.
      count_.fetch_add(n, std::memory_order_seq_cst);
    }
    return waiters_.load(std::memory_order_seq_cst) > 0;
  }
  bool Push(Request* r) { return Push(r, r, 1); }

  // Moves up to max requests to out. Cheap when empty (one load).
  size_t Take(Request** out, size_t max) {
    if (max == 0 || count_.load(std::memory_order_acquire) == 0) return 0;
    size_t n = 0;
    std::lock_guard<std::mutex> lock(mu_);
    while (head_ != nullptr && n < max) {
      Request* r = head_;
      head_ = r->engine_next;
      r->engine_next = nullptr;
      out[n++] = r;
    }
    if (head_ == nullptr) tail_ = nullptr;
    count_.fetch_sub(n, std::memory_order_relaxed);
    return n;
  }

  [[nodiscard]] size_t count() const noexcept {
    return count_.load(std::memory_order_seq_cst);
  }
  [[nodiscard]] size_t count_relaxed() const noexcept {
    return count_.load(std::memory_order_relaxed);
  }

  // Returns true when the reaper must not sleep: something is already here.
  bool AnnounceWaiter() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    if (count_.load(std::memory_order_seq_cst) != 0) {
      RetireWaiter();
      return true;
    }
    return false;
  }
  // A waiter for something other than this list (the threads engine's
  // MakeRoom waits for ring events): counted, so that Signal wakes it, whatever
  // the list holds.
  void AddWaiter() noexcept {
    waiters_.fetch_add(1, std::memory_order_seq_cst);
  }
  void RetireWaiter() noexcept {
    waiters_.fetch_sub(1, std::memory_order_relaxed);
  }
  // For completions that do not go through Push (the threads engine's ring):
  // true when a reaper announced a wait. seq_cst, the other half of the pair.
  [[nodiscard]] bool HasWaiters() const noexcept {
    return waiters_.load(std::memory_order_seq_cst) > 0;
  }

 private:
  std::mutex mu_;
  Request* head_ = nullptr;
  Request* tail_ = nullptr;
  std::atomic<size_t> count_{0};
  std::atomic<int> waiters_{0};
};

// One reaper at a time, with a deadline: a poller does not wait behind a
// reaper sleeping with a long timeout. (A mutex and a condition variable rather
// than std::timed_mutex, whose pthread_mutex_clocklock GCC 12's ThreadSanitizer
// does not understand.)
class ReaperGate {
 public:
  // timeout 0: try once; negative: wait without limit.
  bool Acquire(std::chrono::nanoseconds timeout, Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    if (busy_) {
      if (timeout.count() == 0) return false;
      if (timeout.count() < 0) {
        cv_.wait(lock, [&] { return !busy_; });
      } else if (!cv_.wait_until(lock, deadline, [&] { return !busy_; })) {
        return false;
      }
    }
    busy_ = true;
    return true;
  }
  bool TryAcquire() { return Acquire(std::chrono::nanoseconds(0), {}); }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
    }
    cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool busy_ = false;
};

// Holds the ReaperGate for its lifetime, when Acquire succeeded.
class ReaperLock {
 public:
  ReaperLock(ReaperGate* gate, std::chrono::nanoseconds timeout,
             Clock::time_point deadline)
      : gate_(gate), owns_(gate->Acquire(timeout, deadline)) {}
  ~ReaperLock() { Unlock(); }
  ReaperLock(const ReaperLock&) = delete;
  ReaperLock& operator=(const ReaperLock&) = delete;
  [[nodiscard]] bool owns_lock() const noexcept { return owns_; }
  void Unlock() {
    if (owns_) gate_->Release();
    owns_ = false;
  }

 private:
  ReaperGate* gate_;
  bool owns_;
};

// The cache line size assumed for keeping apart data written by different
// threads (x86-64 and most arm64 cores; std::hardware_destructive_
// interference_size warns under GCC 12 as its value may change).
inline constexpr size_t kCacheLine = 64;

// A hint to the CPU that this thread is spinning.
inline void CpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

// Asks the CPU to fetch every cache line of *p, for writing when `write`, so
// that the misses of a structure another CPU wrote last overlap instead of
// coming one after another (a few hundred nanoseconds each when the host puts
// the two CPUs apart; see bench/cpu_pingpong).
template <typename T>
inline void PrefetchLines(const T* p, bool write) noexcept {
  const auto begin = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t a = begin & ~uintptr_t{kCacheLine - 1}; a < begin + sizeof(T);
       a += kCacheLine) {
    const auto* line = reinterpret_cast<const void*>(a);
    if (write) {
      __builtin_prefetch(line, 1);
    } else {
      __builtin_prefetch(line, 0);
    }
  }
}

// A full memory barrier (StoreLoad). ThreadSanitizer does not model
// atomic_thread_fence; there a seq_cst read-modify-write of a private
// variable does the same job in a way it understands.
inline void FullFence() noexcept {
#if defined(__SANITIZE_THREAD__)
  static std::atomic<int> fence_word{0};
  fence_word.fetch_add(0, std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// The EAGAIN back-off after `delay`: doubled, but never above 10 s (a large
// RetryPolicy::max_retries would otherwise overflow it).
inline std::chrono::microseconds NextDelay(std::chrono::microseconds delay) {
  constexpr std::chrono::microseconds kMax = std::chrono::seconds(10);
  return delay >= kMax / 2 ? kMax : delay * 2;
}

// ThreadSanitizer cannot see the hand-over of a request through the kernel
// (submitted by one thread, its completion read from a ring by another).
// These make it visible; they compile to nothing otherwise.
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(
    void* addr);  // NOLINT(readability-identifier-naming)
extern "C" void __tsan_release(
    void* addr);  // NOLINT(readability-identifier-naming)
inline void TsanRelease(void* p) noexcept { __tsan_release(p); }
inline void TsanAcquire(void* p) noexcept { __tsan_acquire(p); }
#else
inline void TsanRelease(void* /*p*/) noexcept {}
inline void TsanAcquire(void* /*p*/) noexcept {}
#endif

// ThreadSanitizer's stand-in for the kernel's ordering of a completion ring's
// unmap (io_destroy, io_uring's close) before a later setup maps one at those
// addresses: it sees neither. One for every engine, since any engine's ring
// may be mapped where another's was. Only its address is used.
inline char kernel_ring_mapping_sync;

// Counts a thread inside Submit or Cancel for as long as the object lives.
// Shutdown sets its flag and then waits for the count to reach zero; a thread
// increments and then reads the flag (seq_cst both): either Shutdown sees the
// thread and waits for it, or the thread sees the flag and leaves.
class UserGuard {
 public:
  explicit UserGuard(std::atomic<int>* users) : users_(users) {
    users_->fetch_add(1, std::memory_order_seq_cst);
  }
  ~UserGuard() { users_->fetch_sub(1, std::memory_order_release); }
  UserGuard(const UserGuard&) = delete;
  UserGuard& operator=(const UserGuard&) = delete;

 private:
  std::atomic<int>* users_;
};

// The process's spinning reapers, across all its engines. A spinner holds a
// CPU that the thread producing its completions (a loop device's worker,
// another job's submitter) may need, so at most one fewer reapers than the CPUs
// the process may run on spin at once (none on one CPU); the others sleep at
// once. Thread safety: any thread.
class SpinSlots {
 public:
  // On success (true) the caller may spin and MUST call Give() after.
  static bool TryTake() noexcept {
    static const int kSlots = Count();
    if (spinning().fetch_add(1, std::memory_order_relaxed) < kSlots) {
      return true;
    }
    spinning().fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  static void Give() noexcept {
    spinning().fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  // Relaxed: a count of threads, ordering nothing else.
  static std::atomic<int>& spinning() noexcept {
    static std::atomic<int> n{0};
    return n;
  }
  static int Count() noexcept {
    cpu_set_t mask;
    CPU_ZERO(&mask);
    if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return 1;
    return CPU_COUNT(&mask) - 1;
  }
};

// The adaptive spin of EngineOptions::spin_before_wait: spin while at least
// half of the recent spins caught a completion (a fast device), else only on
// every 16th wait, to notice when that changes. On a device whose completions
// take longer than the budget, this bounds the CPU spent spinning to
// budget / 16 per wait. Only as many threads spin at once as SpinSlots allows.
// Not thread-safe: used under an engine's reap lock.
class AdaptiveSpin {
 public:
  AdaptiveSpin(std::chrono::microseconds budget, bool adaptive)
      : budget_(budget), adaptive_(adaptive) {}

  // Spins until ready() is true (returns true) or the budget or the deadline
  // runs out, or no SpinSlots slot is free (returns false). `ready` must be
  // cheap and must neither block nor throw.
  template <typename Ready>
  bool Spin(Clock::time_point deadline, Ready&& ready) {
    if (budget_.count() <= 0) return false;
    constexpr unsigned kProbeEvery = 16;
    if (adaptive_ && hit_rate_ < 512 && ++waits_since_spin_ < kProbeEvery) {
      return false;
    }
    if (!SpinSlots::TryTake()) return false;
    waits_since_spin_ = 0;
    const Clock::time_point until = std::min(deadline, Clock::now() + budget_);
    bool hit = false;
    do {
      for (int i = 0; i < 32 && !hit; ++i) {
        hit = ready();
        if (!hit) CpuRelax();
      }
    } while (!hit && Clock::now() < until);
    SpinSlots::Give();
    // A moving average with weight 1/8, in 1/1024ths.
    hit_rate_ += ((hit ? 1024 : 0) - hit_rate_) / 8;
    return hit;
  }

 private:
  std::chrono::microseconds budget_;
  bool adaptive_;
  int hit_rate_ = 1024;
  unsigned waits_since_spin_ = 0;
};

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_COMMON_H_
