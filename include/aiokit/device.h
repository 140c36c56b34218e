// aiokit: the device layer (BlueStore's KernelDevice and IOContext).
//
// A storage engine does not program against a request queue but against a
// device: "write these extents of this transaction and tell me when all are
// done", "read this range", "flush", "discard these ranges". `Device` is that
// layer over any aiokit engine:
//  - IoContext groups requests (usually one transaction): one callback, or
//    one Wait, when every request of the group has completed, and the first
//    error kept with the context of the request that failed;
//  - reads and writes of any length and any number of buffers: short
//    transfers are resubmitted for the rest (restarted at the alignment),
//    EINTR and EAGAIN results retried, transfers over the kernel's maximum
//    (0x7ffff000 bytes) and iovec arrays over IOV_MAX split, and the caller
//    sees one request;
//  - Flush() runs fdatasync only when a write completed since the last one,
//    shares one fdatasync among concurrent callers, and remembers a failure
//    (sticky) until the device is reopened;
//  - discard (BLKDISCARD or a punched hole) on a thread of its own, write
//    lifetime hints, RWF_ATOMIC writes, per-request deadlines, and buffers
//    from a pool registered with io_uring when the engine offers it.
// Nothing aborts: every error is a Status, every request completes exactly
// once, and memory the kernel may still write (a timed-out request's buffer)
// stays alive until the real completion arrives.
//
// Thread safety: a Device may be used from any number of threads at once;
// each IoContext by one thread at a time for queueing and submitting, while
// completions arrive on the device's threads. Buffer handles may be copied
// between threads freely.

#ifndef AIOKIT_DEVICE_H_
#define AIOKIT_DEVICE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/status.h"

namespace aiokit {

class Device;
class IoContext;
namespace device_internal {
struct Io;
class DeviceImpl;
struct BufferControl;
// IoContext::running_: the count of requests running in the low 32 bits,
// the number of Submit calls above.
inline constexpr uint64_t kRunningMask = 0xffffffffU;
inline constexpr uint64_t kSubmitOne = uint64_t{1} << 32;
}  // namespace device_internal

// A byte range of the device.
struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  friend bool operator==(const Extent&, const Extent&) = default;
};

// The kernel's write lifetime hints (RWH_WRITE_LIFE_*).
enum class WriteLife : uint8_t {
  kNotSet = 0,
  kNone = 1,
  kShort = 2,
  kMedium = 3,
  kLong = 4,
  kExtreme = 5,
};
inline constexpr unsigned kWriteLifeCount = 6;
// "not-set", "none", "short", "medium", "long", "extreme".
const char* WriteLifeName(WriteLife life) noexcept;

// A reference-counted buffer, or a slice of one. Requests hold a reference
// until they really complete, so a buffer is never freed or reused while the
// kernel may still write it, even after its IoContext gave up on a deadline.
// Copying a Buffer copies the handle (an atomic increment), not the bytes.
class Buffer {
 public:
  Buffer() noexcept = default;
  Buffer(const Buffer& other) noexcept;
  Buffer& operator=(const Buffer& other) noexcept;
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  ~Buffer();

  // An aligned heap buffer of `length` bytes, zero-filled, not from a
  // device's pool (Device::AllocateBuffer prefers the pool); from 1 MiB on,
  // on transparent huge pages as AlignedBuffer (aiokit/file.h). On failure:
  // kInvalidArgument (alignment not a power of two), ENOMEM.
  static Result<Buffer> Allocate(size_t length, size_t alignment = 4096);
  // Memory the caller owns, kept alive by `keepalive` (released when the last
  // handle and the last request using it are gone). With no keepalive the
  // caller must keep the memory alive until every request on it completed,
  // deadlines included.
  static Buffer Wrap(void* data, size_t length,
                     std::shared_ptr<void> keepalive = nullptr);

  [[nodiscard]] char* data() const noexcept { return data_; }
  [[nodiscard]] size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  // The bytes [offset, offset + length) of this buffer, sharing its memory.
  // REQUIRES: offset + length <= size().
  [[nodiscard]] Buffer Slice(size_t offset, size_t length) const noexcept;
  // The index of the registered (io_uring fixed) buffer that holds this one,
  // or -1.
  [[nodiscard]] int16_t registered_index() const noexcept;
  // Handles on this memory, requests included (for tests and diagnostics).
  [[nodiscard]] uint32_t use_count() const noexcept;

 private:
  friend class Device;
  friend class device_internal::DeviceImpl;
  Buffer(device_internal::BufferControl* control, char* data,
         size_t size) noexcept
      : control_(control), data_(data), size_(size) {}

  device_internal::BufferControl* control_ = nullptr;
  char* data_ = nullptr;
  size_t size_ = 0;
};

// What a discard pass did, handed to DeviceOptions::on_discard.
struct DiscardResult {
  // Ranges discarded: the device (or the file system) was told they are free.
  std::vector<Extent> discarded;
  // Ranges that were not, each with why (the ranges are still allocated on
  // the device; freeing them is the caller's choice).
  std::vector<std::pair<Extent, Status>> failed;
};

struct DeviceOptions {
  // The engine, as MakeEngine takes it (kind, queue depth, spin, ...).
  // on_complete and completion_thread must be left unset: the device reaps.
  // single_thread (io_uring's cheapest setup) is honoured only with no
  // completion threads, and then promises that the thread that opens the
  // device makes every call; request deadlines are refused then.
  EngineOptions engine;
  // O_DIRECT (the default): reads and writes bypass the page cache; buffers,
  // offsets and lengths must respect the alignment Info() reports.
  bool direct = true;
  bool read_only = false;
  // Create a regular file that does not exist (mode 0644).
  bool create = false;
  // Threads that reap completions and run IoContext callbacks (BlueStore's
  // aio thread). 0: the caller reaps, with Poll or Run, or inside Wait and
  // the synchronous calls.
  unsigned completion_threads = 1;
  // Completions one reap takes at most (BlueStore's bdev_aio_reap_max).
  unsigned reap_max = 16;
  // How long a completion thread sleeps in one reap when nothing completes
  // (BlueStore's bdev_aio_poll_ms); also how often deadlines are checked at
  // the latest when no request is due sooner.
  std::chrono::milliseconds poll_interval{250};
  // Requests in the pool made at Open (0: four per queue slot). The pool
  // grows when a burst needs more; it never shrinks.
  unsigned requests = 0;
  // A pool of `buffer_count` buffers of `buffer_size` bytes carved from one
  // region and, when the engine offers it, registered with the kernel
  // (io_uring fixed buffers). AllocateBuffer takes from it. 0: no pool.
  size_t buffer_count = 0;
  size_t buffer_size = 0;
  // Open one descriptor per write lifetime and set F_SET_RW_HINT on each,
  // as BlueStore does. Where the kernel refuses hints, writes go on unhinted
  // and Info() says why.
  bool write_hints = true;
  // Called on the discard thread after each discard pass.
  std::function<void(const DiscardResult&)> on_discard;
  // For tests of what is built on the device: wraps the engine once it is
  // made (for instance with MakeFaultInjectingEngine).
  std::function<Result<std::unique_ptr<Engine>>(std::unique_ptr<Engine>)>
      wrap_engine;
};

// What Open found out about the device and this kernel.
struct DeviceInfo {
  std::string path;
  bool block_device = false;
  bool direct = false;
  bool read_only = false;
  // Bytes: the block device's size, or the file's size at Open.
  uint64_t size = 0;
  // What O_DIRECT requires, per direction (statx STATX_DIOALIGN and
  // STATX_DIO_READ_ALIGN, else the logical block size); all 1 when buffered.
  uint32_t memory_alignment = 1;
  uint32_t read_alignment = 1;
  uint32_t write_alignment = 1;
  AlignmentSource alignment_source = AlignmentSource::kDefault;
  // The engine MakeEngine chose, and why it passed others over.
  EngineKind engine = EngineKind::kDefault;
  std::vector<EngineRefusal> engines_passed_over;
  // The largest transfer one request makes (the kernel's MAX_RW_COUNT);
  // longer ones are split.
  uint64_t max_transfer = 0;
  bool discard = false;
  std::string discard_note;  // how discard works here, or why it cannot
  bool write_hints = false;
  std::string write_hints_note;
  // RWF_ATOMIC: the unit sizes statx STATX_WRITE_ATOMIC reports (0: none).
  uint32_t atomic_write_min = 0;
  uint32_t atomic_write_max = 0;
  std::string atomic_write_note;
  bool registered_buffers = false;
  std::string buffers_note;
  unsigned completion_threads = 0;

  // Several lines, "name: value", for `aiokit info` and logs.
  [[nodiscard]] std::string ToString() const;
};

// Per-write options.
struct WriteOptions {
  WriteLife life = WriteLife::kNotSet;
  // RWF_ATOMIC: the write is all or nothing on power loss. REQUIRES one
  // buffer, a length that is a power of two within Info()'s atomic unit
  // sizes and an offset aligned to it; refused otherwise with the limits.
  bool atomic = false;
};

// Counters since Open, each exact when read.
struct DeviceStats {
  uint64_t reads = 0;            // AioRead calls that completed
  uint64_t writes = 0;           // AioWrite calls that completed
  uint64_t requests = 0;         // engine requests, resubmissions included
  uint64_t resubmitted = 0;      // short transfers, EINTR and EAGAIN retries
  uint64_t split = 0;            // reads and writes made of several requests
  uint64_t fdatasyncs = 0;       // fdatasync calls made
  uint64_t flushes_skipped = 0;  // Flush calls with no write since the last
  uint64_t timed_out = 0;        // requests reported timed out
  uint64_t pinned = 0;         // timed-out requests still in the kernel's hands
  uint64_t cancelled = 0;      // requests stopped by Device::Cancel
  uint64_t pool_requests = 0;  // requests in the pool
  uint64_t discarded_bytes = 0;
  uint64_t flush_waiters = 0;  // contexts waiting for a flush now
};

// A group of requests (BlueStore's IOContext), usually one transaction.
//
// Life: AioRead/AioWrite queue requests on it (pending), Device::Submit sends
// them (running); when the last running request completes, the callback is
// called once (on the thread that reaped it) and Wait returns. The group's
// status is its first error, with the failed request's context; with
// allow_eio an EIO is listed in eio_extents() instead.
//
// Thread safety: queueing, Submit and Reset from one thread at a time;
// pending(), running(), status() and Wait from any thread.
class IoContext {
 public:
  using Callback = std::function<void(IoContext&)>;

  IoContext() = default;
  // `on_done` is called once each time the running count drops to zero after
  // a Submit, on the thread that completed the last request (a completion
  // thread, or the caller of Poll/Run/Wait). It must not block for long, nor
  // wait on this device (Wait, Read, Write, Flush, Close are refused there).
  // It may queue and submit more requests, and may destroy the context
  // (and with it the callback's own captures: copy what it needs first).
  explicit IoContext(Callback on_done, bool allow_eio = false)
      : on_done_(std::move(on_done)), allow_eio_(allow_eio) {}
  // Waits for requests still running (never frees a running request's
  // context); requests queued and never submitted are dropped.
  // REQUIRES: not on a completion thread of its device while requests run
  // (it would wait for itself: the process ends with a message), and, with
  // requests queued and not submitted, before its device is destroyed.
  ~IoContext();
  IoContext(const IoContext&) = delete;
  IoContext& operator=(const IoContext&) = delete;

  // Requests queued and not submitted.
  [[nodiscard]] size_t pending() const noexcept;
  // Requests submitted and not yet completed (a write over the kernel's
  // limit counts once; inside the callback, the request whose completion
  // runs it still counts).
  [[nodiscard]] size_t running() const noexcept;
  // status().ok() without copying the status. Reliable once nothing runs.
  [[nodiscard]] bool ok() const noexcept {
    return !failed_.load(std::memory_order_acquire);
  }

  // Waits until nothing of this context is running, at most `timeout`
  // (kForever: no limit). Reaps itself when the device has no completion
  // threads.
  // On success: the group's status (OK, or its first error).
  // On failure: kTimedOut at the deadline (requests still run; wait again);
  //   kInvalidArgument when requests are queued but not submitted, or when
  //   called from a completion callback of the same device (it would wait
  //   for the thread it is blocking).
  Status Wait(std::chrono::nanoseconds timeout = kForever);

  // The first error of the requests completed since the last Reset (OK if
  // none). Errors name the request (op, path, offset, length).
  [[nodiscard]] Status status() const;
  // With allow_eio: the ranges whose reads or writes failed with EIO.
  [[nodiscard]] std::vector<Extent> eio_extents() const;
  // A deadline for each request submitted from now on, from its Submit (0:
  // none). A request still running at its deadline is cancelled where the
  // engine can; where it cannot, or where the cancel has not stopped the
  // request a poll interval (DeviceOptions::poll_interval) later, the
  // context reports it timed out (kTimedOut) while the request keeps its
  // buffers until it really completes.
  void set_request_timeout(std::chrono::nanoseconds timeout) noexcept {
    request_timeout_ = timeout;
  }
  void set_allow_eio(bool allow) noexcept { allow_eio_ = allow; }
  // Requests submitted from now on can be found by Device::Cancel. Costs a
  // lock per request and piece (the device's deadline list).
  void set_cancellable(bool cancellable) noexcept {
    cancellable_ = cancellable;
  }
  // Forgets the status and EIO list. REQUIRES: nothing running.
  void Reset();

 private:
  friend class Device;
  friend class device_internal::DeviceImpl;

  Callback on_done_;
  bool allow_eio_ = false;
  std::chrono::nanoseconds request_timeout_{0};
  bool cancellable_ = false;
  // Device::Cancel asked; cleared by Submit. Written under the device's
  // deadline mutex and read under it (the pieces a cancel stops).
  bool cancel_requested_ = false;
  // The device the first request bound this context to.
  std::atomic<device_internal::DeviceImpl*> device_{nullptr};
  mutable std::mutex mu_;  // status_ and eio_
  // Queued, in order; only the queueing thread touches the list.
  device_internal::Io* pending_head_ = nullptr;
  device_internal::Io* pending_tail_ = nullptr;
  std::atomic<size_t> pending_{0};
  // Requests running (the low 32 bits) and Submit calls (the high 32, a
  // generation), in one word so that the group's last completer, whose
  // compare-and-swap lowers the count, fails when a Submit came in between
  // even if the count is back where it was (ABA). Raised by Submit, lowered
  // by completions without a lock; the last one of a group lowers it to
  // zero only after the callback returned, and touches the context no more
  // after that (waiters sleep on the device's side), so a waiter that sees
  // zero may destroy it at once.
  std::atomic<uint64_t> running_{0};
  std::atomic<bool> flush_after_{false};  // Submit asked a flush after
  std::atomic<bool> failed_{false};       // status_ is not OK
  Status status_;                         // guarded by mu_
  std::vector<Extent> eio_;               // guarded by mu_
  // The flush coordinator's waiter list (guarded by its mutex).
  IoContext* flush_next_ = nullptr;
  uint64_t flush_target_ = 0;
};

// Whether Submit flushes after the group.
enum class ThenFlush : uint8_t { kNo = 0, kYes = 1 };

class Device {
 public:
  // Opens a block device or a file.
  // On success: the device, its alignment and size discovered, its engine
  //   made (Info() says which and why), its completion and discard threads
  //   started.
  // On failure: the open, statx, engine or thread error, with the path.
  static Result<std::unique_ptr<Device>> Open(const std::string& path,
                                              const DeviceOptions& options);

  // Waits for every request still in flight (timed-out ones included), stops
  // the threads and closes the descriptors. Call Close() first to see errors.
  // Buffers from AllocateBuffer and idle IoContexts may outlive it.
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  [[nodiscard]] const DeviceInfo& Info() const noexcept;
  [[nodiscard]] DeviceStats Stats() const noexcept;
  // The engine (for its Stats and capabilities; do not submit to it).
  [[nodiscard]] Engine& engine() noexcept;
  // The main descriptor (O_DIRECT unless DeviceOptions::direct was false).
  [[nodiscard]] int fd() const noexcept;
  // The size: a block device's, or a file's now (fstat).
  [[nodiscard]] Result<uint64_t> Size() const;

  // A buffer of `length` bytes aligned for this device: from the registered
  // pool when one is free and large enough, else from the heap.
  // On failure: ENOMEM.
  Result<Buffer> AllocateBuffer(size_t length);

  // ---- Asynchronous, in groups. ----
  // Queues a read of buffer.size() bytes at `offset` into `buffer` on `ioc`.
  // `got`, when not null, receives the bytes read when the request completes
  // (before the group's callback): a read that meets the end of the file then
  // completes with the bytes it got. Without `got`, a short read at the end
  // of the file is an error of the group (kEndOfFile... see Errc).
  // On failure (nothing queued): kInvalidArgument (empty buffer, beyond a
  // block device's end, ioc used on another device), kMisaligned,
  // kShutdown.
  Status AioRead(uint64_t offset, Buffer buffer, IoContext* ioc,
                 uint64_t* got = nullptr);
  // Queues a read into the buffers, in order, from `offset` (readv): one
  // request of their total length, as above.
  // On failure (nothing queued): as above, and kInvalidArgument for an
  // empty list or an empty buffer in it.
  Status AioRead(uint64_t offset, std::span<const Buffer> buffers,
                 IoContext* ioc, uint64_t* got = nullptr);
  // Queues a write of the buffers, in order, at `offset`.
  // On failure (nothing queued): as AioRead, and kInvalidArgument for a
  // read-only device; kUnsupported for an atomic write this file cannot do.
  Status AioWrite(uint64_t offset, std::span<const Buffer> buffers,
                  IoContext* ioc, WriteOptions options = {});
  Status AioWrite(uint64_t offset, const Buffer& buffer, IoContext* ioc,
                  WriteOptions options = {}) {
    return AioWrite(offset, std::span<const Buffer>(&buffer, 1), ioc, options);
  }
  // Sends what is queued on `ioc`. With ThenFlush::kYes, an fdatasync runs
  // once every write of the group has completed and the group completes
  // after it (shared with concurrent flushes, as Flush()).
  // On success: every queued request is running and will complete once. A
  //   request the engine would not take (the queue stayed full through the
  //   retry policy) completes with that error.
  // On failure: kInvalidArgument when nothing is queued on ioc and no flush
  //   is asked; kShutdown (the requests stay queued).
  Status Submit(IoContext* ioc, ThenFlush then_flush = ThenFlush::kNo);
  // Sends what is queued on each context, in one engine submission where the
  // engine takes it (contexts with nothing queued are skipped, unless
  // ThenFlush asks a flush of each). Each context is a group of its own.
  // On failure (nothing sent): kInvalidArgument for a null context, one bound
  // to another device, or nothing queued on any; kShutdown.
  Status Submit(std::span<IoContext* const> iocs,
                ThenFlush then_flush = ThenFlush::kNo);

  // Asks that the requests of `ioc` running now stop: the engine is asked to
  // cancel each one's transfer in flight and no further piece of it is
  // started. Each still completes exactly once, as always: with ECANCELED
  // (the message says how many bytes were done), or with its real result
  // when the engine could not stop it (linux-aio on files; a transfer a
  // worker already runs). Its buffers stay held until then, so the group's
  // callback and Wait still mean "the kernel is done with them". A later
  // Submit on the context is not affected.
  // REQUIRES: the context was made cancellable (set_cancellable) before the
  //   requests were submitted; the requests of other contexts are not found.
  // On success: OK, also when nothing was running. On failure:
  //   kInvalidArgument for a null context or one of another device, or one
  //   not cancellable.
  // Thread safety: any thread (a device promised to one thread: that one).
  Status Cancel(IoContext* ioc);

  // ---- Synchronous (each a group of one, waited for). ----
  // Reads up to buffer.size() bytes at offset: fewer only at the end of the
  // file. The count, or the error.
  Result<uint64_t> Read(uint64_t offset, Buffer buffer);
  // The whole range or an error (kEndOfFile names how many bytes there were).
  Status ReadExactly(uint64_t offset, Buffer buffer);
  // Writes the whole range (short writes resubmitted) or fails.
  Status Write(uint64_t offset, std::span<const Buffer> buffers,
               WriteOptions options = {});
  Status Write(uint64_t offset, const Buffer& buffer,
               WriteOptions options = {}) {
    return Write(offset, std::span<const Buffer>(&buffer, 1), options);
  }
  // Seastar's name for Write: every write here is written in full.
  Status WriteFull(uint64_t offset, const Buffer& buffer,
                   WriteOptions options = {}) {
    return Write(offset, buffer, options);
  }
  // Reads any range into dst, whatever its alignment (a bounce buffer, as
  // BlueStore's read_random). The bytes read (fewer only at the end of the
  // file), or the error.
  Result<uint64_t> ReadUnaligned(uint64_t offset, size_t length, char* dst);

  // fdatasync when a write completed since the last one. Concurrent callers
  // share one fdatasync; none returns before the writes it saw complete are
  // stable.
  // On failure: the fdatasync error, sticky: every later Flush (and
  // Submit with ThenFlush) fails with it until the device is reopened, since
  // the kernel may have dropped the dirty pages and report success next time.
  Status Flush();
  // fallocate(offset, length): reserves the space of a file.
  // On failure: kUnsupported with the reason on a block device or a file
  // system without fallocate; the errno otherwise (ENOSPC).
  Status Preallocate(uint64_t offset, uint64_t length);

  // ---- Discard, on the discard thread. ----
  // Queues the ranges; the discard thread discards them (BLKDISCARD, or a
  // punched hole in a file) and calls DeviceOptions::on_discard with what it
  // did. On failure (nothing queued): kUnsupported with the reason where the
  // device cannot discard; kInvalidArgument for a range past a block
  // device's end or misaligned for O_DIRECT.
  Status QueueDiscard(std::span<const Extent> ranges);
  // Waits until every range queued before the call was processed and its
  // callback returned.
  Status DiscardDrain();

  // ---- Reaping by the caller (completion_threads = 0). ----
  // Processes what has completed without waiting: callbacks run on this
  // thread. How many requests completed.
  Result<size_t> Poll();
  // Waits up to `timeout` for at least one completion, then processes what
  // came. How many.
  Result<size_t> Run(std::chrono::nanoseconds timeout);
  // Readable when completions are waiting to be processed (for epoll; then
  // call Poll). kUnsupported when the engine has none.
  Result<int> NotifyFd();

  // Refuses new requests, waits for those in flight (deadlines do not cut
  // this short), stops the threads and closes the descriptors. The first
  // error met (a failed close). Safe to call twice.
  Status Close();

 private:
  friend class IoContext;
  explicit Device(std::unique_ptr<device_internal::DeviceImpl> impl);
  std::unique_ptr<device_internal::DeviceImpl> impl_;
};

}  // namespace aiokit

#endif  // AIOKIT_DEVICE_H_
