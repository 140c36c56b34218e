// The device layer's internals: one user request (Io) and the device that
// runs them over an engine. See include/aiokit/device.h for the contract and
// docs/design.md ("The device layer") for how it is kept.
//
// An Io is one AioRead or AioWrite as the caller sees it. It has one engine
// request in flight at a time (a "piece": at most the kernel's maximum
// transfer and IOV_MAX buffers, from the byte the Io has reached); short
// transfers, EINTR/EAGAIN results and the next piece are resubmitted from the
// completion path, and the IoContext hears of the Io once, when it is done
// (or at its deadline). Ios come from a pool that only grows.

#ifndef AIOKIT_SRC_DEVICE_DEVICE_IMPL_H_
#define AIOKIT_SRC_DEVICE_DEVICE_IMPL_H_

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "aiokit/status.h"
#include "device/buffer_control.h"

namespace aiokit::device_internal {

using Clock = std::chrono::steady_clock;

// The kernel's MAX_RW_COUNT: the most one read or write transfers.
inline constexpr uint64_t kMaxTransfer = 0x7ffff000;
// Results of EINTR, EAGAIN or no progress retried per piece before the Io
// fails with the last one.
inline constexpr unsigned kMaxRetries = 64;

struct Io {
  enum class Kind : uint8_t { kData, kFlush };

  // The engine request; req.priv points back here.
  Request req;
  Kind kind = Kind::kData;
  Op op = Op::kRead;  // kRead or kWrite
  IoContext* ioc = nullptr;
  uint64_t offset = 0;  // what was asked
  uint64_t length = 0;
  uint64_t done = 0;  // bytes transferred so far
  uint64_t* got = nullptr;
  WriteOptions write;
  // The caller's buffers (references held until the Io is released) and
  // their iovecs; both keep their capacity in the pool.
  std::vector<Buffer> buffers;
  std::vector<iovec> iov;
  unsigned retries = 0;  // for the current piece
  bool split = false;    // made of more than one piece
  // The IoContext was told (completion, or timeout): whoever exchanges it
  // to true reports, once.
  std::atomic<bool> reported{false};
  // Deadline bookkeeping, guarded by the device's deadline mutex.
  bool has_deadline = false;
  bool linked = false;
  bool cancel_asked = false;      // the engine's Cancel said OK
  bool cancel_by_caller = false;  // asked by Device::Cancel, not a deadline
  Clock::time_point deadline{};
  Io* dl_prev = nullptr;
  Io* dl_next = nullptr;
  // The context's pending list, or the pool's free list.
  Io* next = nullptr;
};

// A lock for a few instructions (the request pool's free list): a test and
// set, spinning briefly and then yielding while another thread holds it.
// Yielding keeps a preempted holder from being waited for at full speed; it
// tunes speed only: the holder always gets to finish.
class PoolLock {
 public:
  void lock() noexcept {
    for (unsigned spins = 0; held_.exchange(true, std::memory_order_acquire);) {
      while (held_.load(std::memory_order_relaxed)) {
        if (++spins < 64) {
          CpuPause();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  // Release pairs with the acquire exchange of the next holder.
  void unlock() noexcept { held_.store(false, std::memory_order_release); }

 private:
  static void CpuPause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  std::atomic<bool> held_{false};
};

// True when ~IoContext runs inside the context's own callback: it must not
// wait, and the thread that called the callback must not touch it again
// (this records that it is gone).
bool DestroyedInsideOwnCallback(IoContext* ioc) noexcept;

class DeviceImpl {
 public:
  DeviceImpl(std::string path, const DeviceOptions& options);
  ~DeviceImpl();

  // Opens, probes, makes the engine and starts the threads.
  Status Open();
  Status Close();

  const DeviceInfo& info() const noexcept { return info_; }
  DeviceStats Stats() const noexcept;
  Engine& engine() noexcept { return *engine_; }
  int fd() const noexcept { return file_.fd(); }
  Result<uint64_t> Size() const;
  Result<Buffer> AllocateBuffer(size_t length);

  Status AioRead(uint64_t offset, std::span<const Buffer> buffers,
                 IoContext* ioc, uint64_t* got);
  Status AioRead(uint64_t offset, Buffer&& buffer, IoContext* ioc,
                 uint64_t* got);
  Status AioWrite(uint64_t offset, std::span<const Buffer> buffers,
                  IoContext* ioc, WriteOptions options);
  Status Submit(std::span<IoContext* const> iocs, ThenFlush then_flush);
  Status Cancel(IoContext* ioc);
  Status Submit(IoContext* ioc, ThenFlush then_flush) {
    IoContext* one[1] = {ioc};
    return Submit(one, then_flush);
  }
  Result<uint64_t> Read(uint64_t offset, Buffer buffer, bool exactly);
  Status Write(uint64_t offset, std::span<const Buffer> buffers,
               WriteOptions options);
  Result<uint64_t> ReadUnaligned(uint64_t offset, size_t length, char* dst);
  Status Flush();
  Status Preallocate(uint64_t offset, uint64_t length);
  Status QueueDiscard(std::span<const Extent> ranges);
  Status DiscardDrain();
  Result<size_t> Reap(std::chrono::nanoseconds timeout, bool wait);
  Result<int> NotifyFd() { return engine_->NotifyFd(); }

  // IoContext's side.
  Status Wait(IoContext* ioc, std::chrono::nanoseconds timeout);
  // Drops what is queued on ioc and never submitted.
  void DropPending(IoContext* ioc);
  // True when the calling thread delivers this device's completions (a
  // completion thread, or a thread inside Poll/Run/Wait): waiting there could
  // wait for itself.
  bool OnCompletionThread() const noexcept;

 private:
  // ---- Open ----
  Status ProbeDiscard();
  Status ProbeWriteHints();
  Status ProbeAtomicWrites();
  Status MakeEngine();
  Status SetUpBufferPool();

  // ---- The pool ----
  Io* TakeIo();
  void ReleaseIo(Io* io);
  Status GrowPool(size_t n);

  // ---- Submission ----
  // The quick test of a request's range (per request); RangeError says what
  // is wrong when it fails.
  bool RangeOk(uint64_t offset, uint64_t length, bool write) const noexcept {
    const uint64_t end = offset + length;
    // One branch: each term is one rule (closing, read-only, empty, past
    // 2^63 - 1 or wrapped, past a block device's end).
    const bool bad = closing_.load(std::memory_order_acquire) |
                     (write & options_.read_only) | (length == 0) |
                     (end < offset) | (end > static_cast<uint64_t>(INT64_MAX)) |
                     (block_device_ & (end > info_.size));
    return !bad;
  }
  Status RangeError(const char* what, uint64_t offset, uint64_t length,
                    bool write) const;
  Status Queue(Io* io, IoContext* ioc);
  // Makes io->req the next piece from io->done.
  void PreparePiece(Io* io);
  // Hands prepared requests to the engine; those it will not take fail.
  void SubmitToEngine(Io* const* ios, size_t n);

  // ---- Completion ----
  // Everything a reaped request leads to.
  void Process(Request* req);
  void ProcessData(Io* io);
  // The next piece of `io` to the engine, or the Io finished as cancelled
  // when its context was cancelled meanwhile.
  void NextPiece(Io* io);
  // The Io is done: counted, its context told (unless a deadline did), and
  // released.
  void FinishIo(Io* io, const Status& error, bool is_eio);
  // One request of `ioc` (data or flush) completed with `error`.
  void CompleteOnContext(IoContext* ioc, const Status& error, bool is_eio,
                         Extent extent);
  // The group's last request completed: the callback, then running drops to
  // zero and waiters wake.
  void GroupDone(IoContext* ioc);
  std::string Describe(const Io& io) const;
  void CompletionThreadMain();
  void WakeReapWaiters();

  // ---- Flush ----
  void RequestFlush(IoContext* ioc);
  void StartFlushLocked(std::unique_lock<std::mutex>& lock);
  void FlushDone(int64_t rval);

  // ---- Deadlines ----
  // Links a request with a deadline (or of a cancellable context) before
  // its piece goes to the engine. False, and not linked, when its context
  // was cancelled: the piece must not start.
  bool LinkDeadline(Io* io);
  void UnlinkDeadlineLocked(Io* io);
  void DeadlineThreadMain();
  void EnsureDeadlineThread();

  // ---- Discard ----
  void DiscardThreadMain();
  Status DiscardOne(const Extent& e);

  const std::string path_;
  DeviceOptions options_;
  DeviceInfo info_;
  File file_;
  bool block_device_ = false;
  Alignment read_align_;  // known() only with O_DIRECT
  Alignment write_align_;
  // The same as masks (alignment - 1; 0 when buffered): one test per
  // request, the message only when it fails.
  uint64_t read_mask_ = 0;
  uint64_t write_mask_ = 0;
  uint64_t memory_mask_ = 0;
  std::unique_ptr<Engine> engine_;
  std::atomic<bool> closing_{false};
  bool closed_ = false;

  // The pool.
  PoolLock pool_mu_;
  Io* free_ = nullptr;                         // guarded by pool_mu_
  std::vector<std::unique_ptr<Io[]>> chunks_;  // guarded by pool_mu_
  size_t pool_size_ = 0;                       // guarded by pool_mu_
  std::atomic<uint64_t> pool_requests_{0};

  // Ios handed to the engine and not yet released; Close waits for zero.
  std::atomic<uint64_t> in_flight_{0};
  std::mutex idle_mu_;
  std::condition_variable idle_cv_;

  // Counters.
  std::atomic<uint64_t> reads_{0}, writes_{0}, requests_{0}, resubmitted_{0},
      split_{0}, fdatasyncs_{0}, flushes_skipped_{0}, timed_out_{0}, pinned_{0},
      cancelled_{0}, discarded_bytes_{0};

  // Waiters of contexts whose completions the completion threads deliver
  // park here, by the context's address (the device outlives the contexts,
  // so a completer never touches a context after its count reached zero).
  struct Park {
    std::mutex mu;
    std::condition_variable cv;
  };
  static constexpr size_t kParks = 16;
  Park& ParkOf(const IoContext* ioc) noexcept {
    return parks_[(reinterpret_cast<uintptr_t>(ioc) >> 6) % kParks];
  }
  Park parks_[kParks];
  std::atomic<uint32_t> parked_{0};  // threads parked in Wait

  // Completion threads, or the caller's reaping (leader and followers).
  std::vector<std::thread> completion_threads_;
  std::mutex reap_mu_;
  std::condition_variable reap_cv_;
  bool leader_ = false;  // guarded by reap_mu_
  std::atomic<unsigned> reap_waiters_{0};

  // Write hints: the lifetime the inode carries now (the kernel keeps one per
  // inode), and the lock that orders changing it with submitting.
  std::mutex hint_mu_;
  WriteLife inode_hint_ = WriteLife::kNotSet;  // guarded by hint_mu_

  // Flush.
  std::atomic<uint64_t> write_gen_{0};  // writes completed
  std::mutex flush_mu_;
  uint64_t flushed_gen_ = 0;                // guarded by flush_mu_
  bool flush_in_flight_ = false;            // guarded by flush_mu_
  uint64_t flush_gen_ = 0;                  // guarded by flush_mu_
  Status sticky_;                           // guarded by flush_mu_
  IoContext* flush_waiters_ = nullptr;      // guarded by flush_mu_
  std::atomic<uint64_t> flush_waiting_{0};  // the list's length
  Io flush_io_;

  // Deadlines.
  std::mutex dl_mu_;
  std::condition_variable dl_cv_;
  Io* dl_head_ = nullptr;  // guarded by dl_mu_
  bool dl_stop_ = false;   // guarded by dl_mu_
  std::thread dl_thread_;  // started by the first deadline
  std::once_flag dl_once_;

  // Discard.
  std::mutex disc_mu_;
  std::condition_variable disc_cv_;
  std::vector<Extent> disc_queue_;  // guarded by disc_mu_
  uint64_t disc_queued_ = 0;        // guarded by disc_mu_: calls queued
  uint64_t disc_done_ = 0;          // guarded by disc_mu_: calls processed
  bool disc_stop_ = false;          // guarded by disc_mu_
  std::thread disc_thread_;

  // Buffers.
  BufferPool* buffer_pool_ = nullptr;
  bool registered_ = false;
};

}  // namespace aiokit::device_internal

#endif  // AIOKIT_SRC_DEVICE_DEVICE_IMPL_H_
