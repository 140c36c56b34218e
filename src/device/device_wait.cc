// Waiting: IoContext::Wait (on a completion thread's news, or reaping itself
// as the leader of the waiting callers), the synchronous calls built on it,
// and Close.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "device/device_impl.h"
#include "sys/syscalls.h"

namespace aiokit {
namespace device_internal {

namespace {
// Nothing of the context runs: no request, no callback (the last request
// counts until its callback returned).
bool Quiet(const std::atomic<uint64_t>& running) {
  // seq_cst: the reading half of the followers' handshake (WakeReapWaiters).
  return (running.load(std::memory_order_seq_cst) &
          device_internal::kRunningMask) == 0;
}
}  // namespace

Status DeviceImpl::Wait(IoContext* ioc, std::chrono::nanoseconds timeout) {
  if (OnCompletionThread()) {
    return Status::Error(Errc::kInvalidArgument,
                         "waiting on \"" + path_ +
                             "\" from a completion callback of the same "
                             "device: it would wait for the completions this "
                             "thread delivers");
  }
  if (ioc->pending_.load(std::memory_order_relaxed) != 0) {
    return Status::Error(
        Errc::kInvalidArgument,
        "IoContext::Wait on \"" + path_ + "\": " +
            std::to_string(ioc->pending_.load(std::memory_order_relaxed)) +
            " requests are queued and not submitted (Device::Submit first)");
  }
  const bool forever = timeout < std::chrono::nanoseconds::zero();
  const Clock::time_point deadline =
      forever ? Clock::time_point::max() : Clock::now() + timeout;
  auto timed_out = [&] {
    return Status::Error(
        Errc::kTimedOut,
        "IoContext::Wait on \"" + path_ + "\": " +
            std::to_string(ioc->running_.load(std::memory_order_relaxed) &
                           device_internal::kRunningMask) +
            " requests still running at the deadline");
  };
  if (options_.completion_threads > 0) {
    Park& park = ParkOf(ioc);
    std::unique_lock lock(park.mu);
    // Counted before it looks (seq_cst, with GroupDone's decrement and load).
    parked_.fetch_add(1, std::memory_order_seq_cst);
    auto quiet = [&] { return Quiet(ioc->running_); };
    const bool done = forever ? (park.cv.wait(lock, quiet), true)
                              : park.cv.wait_until(lock, deadline, quiet);
    parked_.fetch_sub(1, std::memory_order_relaxed);
    lock.unlock();
    if (!done) return timed_out();
    std::lock_guard status_lock(ioc->mu_);
    return ioc->status_;
  }
  // No completion threads: one waiter reaps (the leader) while the others
  // sleep until it hands over or their group completes.
  for (;;) {
    if (Quiet(ioc->running_)) break;
    std::unique_lock rl(reap_mu_);
    const Clock::time_point now = Clock::now();
    if (!leader_) {
      if (Quiet(ioc->running_)) break;
      if (now >= deadline) return timed_out();
      const Clock::time_point slice =
          std::min(deadline, now + options_.poll_interval);
      leader_ = true;
      rl.unlock();
      Result<size_t> r = Reap(slice - now, true);
      rl.lock();
      leader_ = false;
      reap_cv_.notify_all();
      if (!r.ok() && !r.status().Is(Errc::kShutdown)) return r.status();
      continue;
    }
    // A follower: counted before it looks, so that a completer that made the
    // group quiet after the look sees the count and wakes it (seq_cst, with
    // WakeReapWaiters).
    reap_waiters_.fetch_add(1, std::memory_order_seq_cst);
    if (!Quiet(ioc->running_) && now < deadline) {
      reap_cv_.wait_until(rl, std::min(deadline, now + options_.poll_interval));
    }
    reap_waiters_.fetch_sub(1, std::memory_order_relaxed);
    if (Clock::now() >= deadline && !Quiet(ioc->running_)) {
      return timed_out();
    }
  }
  std::lock_guard lock(ioc->mu_);
  return ioc->status_;
}

Result<uint64_t> DeviceImpl::Read(uint64_t offset, Buffer buffer,
                                  bool exactly) {
  if (OnCompletionThread()) {
    return Status::Error(Errc::kInvalidArgument,
                         "Device::Read on \"" + path_ +
                             "\" from a completion callback of the same "
                             "device");
  }
  const uint64_t length = buffer.size();
  IoContext ioc;
  uint64_t got = 0;
  if (Status s =
          AioRead(offset, std::move(buffer), &ioc, exactly ? nullptr : &got);
      !s.ok()) {
    return s;
  }
  if (Status s = Submit(&ioc, ThenFlush::kNo); !s.ok()) {
    DropPending(&ioc);
    return s;
  }
  if (Status s = Wait(&ioc, kForever); !s.ok()) return s;
  return exactly ? length : got;
}

Status DeviceImpl::Write(uint64_t offset, std::span<const Buffer> buffers,
                         WriteOptions options) {
  if (OnCompletionThread()) {
    return Status::Error(Errc::kInvalidArgument,
                         "Device::Write on \"" + path_ +
                             "\" from a completion callback of the same "
                             "device");
  }
  IoContext ioc;
  if (Status s = AioWrite(offset, buffers, &ioc, options); !s.ok()) return s;
  if (Status s = Submit(&ioc, ThenFlush::kNo); !s.ok()) {
    DropPending(&ioc);
    return s;
  }
  return Wait(&ioc, kForever);
}

Result<uint64_t> DeviceImpl::ReadUnaligned(uint64_t offset, size_t length,
                                           char* dst) {
  if (length == 0) return uint64_t{0};
  if (!read_align_.known()) {
    return Read(offset, Buffer::Wrap(dst, length), false);
  }
  const uint64_t a = read_align_.offset;
  const uint64_t start = offset - offset % a;
  if (length > UINT64_MAX - offset - a) {
    return Status::Error(Errc::kInvalidArgument, "ReadUnaligned of \"" + path_ +
                                                     "\": the range overflows");
  }
  uint64_t end = offset + length;
  end += (a - end % a) % a;
  if (block_device_ && end > info_.size) end = info_.size;
  Result<Buffer> bounce = AllocateBuffer(end - start);
  if (!bounce.ok()) return bounce.status();
  Result<uint64_t> got = Read(start, *bounce, false);
  if (!got.ok()) return got.status();
  const uint64_t head = offset - start;
  if (*got <= head) return uint64_t{0};
  const uint64_t n = std::min<uint64_t>(*got - head, length);
  std::memcpy(dst, bounce->data() + head, n);
  return n;
}

Status DeviceImpl::Flush() {
  if (OnCompletionThread()) {
    return Status::Error(Errc::kInvalidArgument,
                         "Device::Flush on \"" + path_ +
                             "\" from a completion callback of the same "
                             "device (use Submit with ThenFlush::kYes)");
  }
  IoContext ioc;
  if (Status s = Submit(&ioc, ThenFlush::kYes); !s.ok()) return s;
  return Wait(&ioc, kForever);
}

Status DeviceImpl::Close() {
  if (closed_) return {};
  if (OnCompletionThread()) {
    return Status::Error(Errc::kInvalidArgument,
                         "Device::Close on \"" + path_ +
                             "\" from a completion callback of the same "
                             "device");
  }
  closing_.store(true, std::memory_order_release);
  if (disc_thread_.joinable()) {
    {
      std::lock_guard lock(disc_mu_);
      disc_stop_ = true;
    }
    disc_cv_.notify_all();
    disc_thread_.join();
  }
  // Every request, timed-out ones included, completes before anything goes.
  if (engine_ != nullptr) {
    while (in_flight_.load(std::memory_order_acquire) != 0) {
      if (options_.completion_threads > 0) {
        std::unique_lock lock(idle_mu_);
        idle_cv_.wait_for(lock, options_.poll_interval, [&] {
          return in_flight_.load(std::memory_order_acquire) == 0;
        });
      } else {
        (void)Reap(options_.poll_interval, true);
      }
    }
  }
  if (dl_thread_.joinable()) {
    {
      std::lock_guard lock(dl_mu_);
      dl_stop_ = true;
    }
    dl_cv_.notify_all();
    dl_thread_.join();
  }
  Status first;
  if (engine_ != nullptr) {
    first = engine_->Shutdown(kForever);
  }
  for (std::thread& t : completion_threads_) t.join();
  completion_threads_.clear();
  engine_.reset();
  if (buffer_pool_ != nullptr) {
    buffer_pool_->Release();
    buffer_pool_ = nullptr;
  }
  if (Status s = file_.Close(); !s.ok() && first.ok()) first = s;
  closed_ = true;
  return first;
}

DeviceImpl::~DeviceImpl() { (void)Close(); }

}  // namespace device_internal

// ---------------------------------------------------------------- IoContext

IoContext::~IoContext() {
  if (pending_.load(std::memory_order_relaxed) == 0 &&
      (running_.load(std::memory_order_acquire) &
       device_internal::kRunningMask) == 0) {
    return;  // nothing to wait for (and the device may be gone)
  }
  device_internal::DeviceImpl* d = device_.load(std::memory_order_acquire);
  d->DropPending(this);
  if (device_internal::DestroyedInsideOwnCallback(this)) return;
  if ((running_.load(std::memory_order_acquire) &
       device_internal::kRunningMask) == 0)
    return;
  if (d->OnCompletionThread()) {
    // It cannot wait for itself, and freeing it would let the kernel's
    // completions write into freed memory: a programming error (REQUIRES).
    std::fprintf(stderr,
                 "aiokit: an IoContext with %zu requests running was "
                 "destroyed on a completion thread of its device\n",
                 static_cast<size_t>(running_.load(std::memory_order_relaxed) &
                                     device_internal::kRunningMask));
    std::abort();
  }
  (void)d->Wait(this, kForever);
}

size_t IoContext::pending() const noexcept {
  return pending_.load(std::memory_order_relaxed);
}

size_t IoContext::running() const noexcept {
  return running_.load(std::memory_order_acquire) &
         device_internal::kRunningMask;
}

Status IoContext::Wait(std::chrono::nanoseconds timeout) {
  device_internal::DeviceImpl* d = device_.load(std::memory_order_acquire);
  if (d == nullptr) return {};
  return d->Wait(this, timeout);
}

Status IoContext::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

std::vector<Extent> IoContext::eio_extents() const {
  std::lock_guard lock(mu_);
  return eio_;
}

void IoContext::Reset() {
  std::lock_guard lock(mu_);
  status_ = Status();
  failed_.store(false, std::memory_order_release);
  eio_.clear();
}

}  // namespace aiokit
