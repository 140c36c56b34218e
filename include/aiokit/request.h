// aiokit: one asynchronous I/O request (BlueStore's aio_t).
//
// A Request describes one operation (read, write, readv, writev, fsync,
// fdatasync, noop) on one file descriptor, and receives its result. Its first
// member is the kernel's `struct iocb`, so that the `obj` field of a kernel
// `io_event` casts straight back to the Request, as BlueStore's aio_t does.
//
// Life cycle:  idle --Engine::Submit--> in flight --Engine::Reap--> completed
// --Prep*/Submit--> ...
//  - The caller fills a request with one of the Prep* functions (and optional
//    Set* options), then submits it.
//  - From submission until Reap returns it (or the completion callback gets
//    it), the request, its iovec array and its buffers belong to the engine
//    and the kernel: do not touch, move or free them.
//  - Every submitted request completes exactly once: Reap returns it once (or
//    the callback is called once), with `rval` set to the bytes transferred or
//    to -errno. A request refused at submission (bad fd, misaligned O_DIRECT,
//    ...) is completed with that error like any other, never dropped.
//  - `rval` is kNotCompleted (-1000, BlueStore's value) until the request
//    completes.
//
// The `iocb` is the caller's, as libaio's: Prep* fill it as io_prep_* do
// (opcode, fd, buffer, length, offset, and aio_data cleared) and Set* add the
// RWF flags, priority and eventfd; after that aio_data is the caller's cookie.
// After completion it describes the request as Prep* and Set* built it, on
// every engine. While in flight on linux-aio it is what the kernel reads: that
// engine builds it from the fields at submission (so a field changed directly
// after Prep* shows there, and nowhere else; change requests through Prep* and
// Set*) and adds its NotifyFd eventfd until the request completes.
//
// Thread safety: a Request is used by one thread at a time, except that
// Engine::Reap may run on another thread than Engine::Submit.

#ifndef AIOKIT_REQUEST_H_
#define AIOKIT_REQUEST_H_

#include <linux/aio_abi.h>
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>

#include "aiokit/file.h"

namespace aiokit {

// A vector of iovecs with four stored inline (no allocation for up to four
// buffers), growing on the heap beyond that. Only what Request needs of
// std::vector.
class IovecVector {
 public:
  static constexpr size_t kInline = 4;

  IovecVector() noexcept = default;
  IovecVector(const IovecVector& other);
  IovecVector& operator=(const IovecVector& other);
  IovecVector(IovecVector&& other) noexcept;
  IovecVector& operator=(IovecVector&& other) noexcept;
  ~IovecVector() { delete[] heap_; }

  [[nodiscard]] size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] size_t capacity() const noexcept {
    return heap_ != nullptr ? capacity_ : kInline;
  }
  // True while no heap memory is used.
  [[nodiscard]] bool is_inline() const noexcept { return heap_ == nullptr; }
  [[nodiscard]] iovec* data() noexcept {
    return heap_ != nullptr ? heap_ : inline_;
  }
  [[nodiscard]] const iovec* data() const noexcept {
    return heap_ != nullptr ? heap_ : inline_;
  }
  iovec& operator[](size_t i) noexcept { return data()[i]; }
  const iovec& operator[](size_t i) const noexcept { return data()[i]; }
  iovec* begin() noexcept { return data(); }
  iovec* end() noexcept { return data() + size_; }
  [[nodiscard]] const iovec* begin() const noexcept { return data(); }
  [[nodiscard]] const iovec* end() const noexcept { return data() + size_; }

  void push_back(const iovec& v);
  void emplace_back(void* base, size_t len) { push_back(iovec{base, len}); }
  void assign(const iovec* v, size_t n);
  // Makes the vector hold only `v` (there is always room for one).
  void assign_one(void* base, size_t len) noexcept {
    data()[0] = iovec{base, len};
    size_ = 1;
  }
  void reserve(size_t n);
  // Empties the vector and keeps its capacity.
  void clear() noexcept { size_ = 0; }
  // Sum of iov_len.
  [[nodiscard]] uint64_t total_bytes() const noexcept;

 private:
  iovec* heap_ = nullptr;
  uint32_t size_ = 0;
  uint32_t capacity_ = 0;  // of heap_ only
  iovec inline_[kInline] = {};
};

enum class Op : uint8_t {
  kNoop = 0,  // completes with 0 and touches nothing; a barrier-free "ping"
              // through the engine
  kRead,
  kWrite,
  kReadv,
  kWritev,
  kFsync,
  kFdatasync,
};
// "read", "write", ... as in messages and `aiokit bench`.
const char* OpName(Op op) noexcept;

// Per-request RWF_* flags (the kernel's values; see preadv2(2)).
namespace rwf {
inline constexpr uint32_t kHipri =
    0x01;  // polled completion (io_uring with IOPOLL; AIO ignores it)
inline constexpr uint32_t kDsync = 0x02;  // this write is O_DSYNC
inline constexpr uint32_t kSync = 0x04;   // this write is O_SYNC
inline constexpr uint32_t kNowait =
    0x08;  // fail with -EAGAIN instead of blocking
inline constexpr uint32_t kAppend =
    0x10;  // this write appends (offset ignored)
// This write is all or nothing on power loss (Linux 6.11+; statx
// STATX_WRITE_ATOMIC gives the sizes a file takes, and the kernel refuses
// others with EINVAL).
inline constexpr uint32_t kAtomic = 0x40;
inline constexpr uint32_t kAll =
    kHipri | kDsync | kSync | kNowait | kAppend | kAtomic;
}  // namespace rwf

// I/O priority classes (ioprio_set(2)).
enum class IoPrioClass : uint8_t {
  kNone = 0,
  kRealtime = 1,
  kBestEffort = 2,
  kIdle = 3
};
// The kernel's ioprio encoding: class in bits 13..15, level (0 highest .. 7)
// below.
constexpr uint16_t IoPriority(IoPrioClass cls, uint8_t level) noexcept {
  return static_cast<uint16_t>((static_cast<unsigned>(cls) << 13U) | level);
}

// The result a request carries until it completes (BlueStore's initial rval).
inline constexpr int64_t kNotCompleted = -1000;

// How a completed request came to complete.
enum class Origin : uint8_t {
  kNone = 0,   // not completed yet
  kEngine,     // the engine did the I/O (the kernel, or a worker thread)
  kLocal,      // the engine completed it without I/O (noop)
  kRefused,    // refused at submission: rval is the kernel's or the library's
               // -errno
  kCancelled,  // taken back by aiokit before it started (Engine::Cancel, or
               // Shutdown with ShutdownMode::kCancelNotStarted): -ECANCELED.
               // A cancel the kernel carries out completes as kEngine.
};
// "engine", "local", "refused", "cancelled" ("none" before completion).
const char* OriginName(Origin origin) noexcept;

// Request::engine_state values: what Request::in_flight() and completed()
// read. Engines and EngineWrapper subclasses set them; callers only read.
namespace request_state {
inline constexpr uint8_t kIdle = 0;
inline constexpr uint8_t kInFlight = 1;
inline constexpr uint8_t kCompleted = 2;
}  // namespace request_state

struct Request {
  // The kernel's control block, in libaio's shape (see the file comment). MUST
  // stay the first member: io_event.obj points here.
  struct iocb iocb = {};
  // The caller's cookie; never touched by aiokit (BlueStore sets it to the
  // IOContext).
  void* priv = nullptr;
  int fd = -1;
  // The buffers: iov[0] for read/write, all of them for readv/writev.
  IovecVector iov;
  uint64_t offset = 0;
  // Bytes asked for: the buffer length, or the sum of the iovecs.
  uint64_t length = 0;
  // Bytes transferred (may be short) or -errno once completed; kNotCompleted
  // before.
  int64_t rval = kNotCompleted;
  Op op = Op::kNoop;
  // How it completed; kNone before.
  Origin origin = Origin::kNone;
  // RWF_* flags for this request only (rwf::k*).
  uint32_t rw_flags = 0;
  // I/O priority (IoPriority()) and whether it is set.
  uint16_t ioprio = 0;
  bool has_ioprio = false;
  // An eventfd signalled when this request completes, or -1.
  int resfd = -1;
  // What O_DIRECT requires of this request; checked before submission when
  // known.
  Alignment align;
  // The index of the registered buffer (Engine::RegisterBuffers) that holds
  // this read's or write's buffer, or -1. Engines without fixed buffers ignore
  // it.
  int16_t buf_index = -1;

  // ---- Engine-private: do not touch. ----
  // request_state::k*. Atomic so that a reaper thread and a submitting thread
  // may inspect it without a data race; relaxed is enough, as the handover
  // itself is ordered by the engine.
  std::atomic<uint8_t> engine_state{request_state::kIdle};
  // An engine's scratch (the threads engine: queue state and priority bucket).
  uint8_t engine_mark = 0;
  uint8_t engine_bucket = 0;
  // An engine's scratch (the threads engine: the queue ticket; io_uring: the
  // submission run).
  uint64_t engine_seq = 0;
  // Intrusive link for the engine's lists.
  Request* engine_next = nullptr;

  Request() = default;
  // Copies what is asked (op, fd, buffers, offset, length, options, priv):
  // the copy is idle, with rval kNotCompleted and origin kNone, and its iocb
  // describes it (its own iovec array). REQUIRES: other is not in flight.
  Request(const Request& other);
  Request& operator=(const Request& other);
  ~Request() = default;

  // ---- Preparation: each resets the request to idle with the given operation.
  // ----
  void PrepRead(int fd, void* buf, size_t len, uint64_t off);
  void PrepWrite(int fd, const void* buf, size_t len, uint64_t off);
  // Copies the iovec array (inline up to 4, heap beyond).
  void PrepReadv(int fd, const iovec* iovs, size_t n, uint64_t off);
  void PrepWritev(int fd, const iovec* iovs, size_t n, uint64_t off);
  void PrepFsync(int fd);
  void PrepFdatasync(int fd);
  void PrepNoop();
  // The same, taking the descriptor and its O_DIRECT alignment from a File.
  void PrepRead(const File& f, void* buf, size_t len, uint64_t off);
  void PrepWrite(const File& f, const void* buf, size_t len, uint64_t off);
  void PrepReadv(const File& f, const iovec* iovs, size_t n, uint64_t off);
  void PrepWritev(const File& f, const iovec* iovs, size_t n, uint64_t off);

  // ---- Options, after Prep*; each also sets the iocb as libaio does. ----
  void SetRwFlags(uint32_t flags) noexcept;
  void SetIoPriority(uint16_t prio) noexcept;
  // An eventfd signalled when this request completes; -1 for none.
  void SetEventFd(int efd) noexcept;
  void SetAlignment(Alignment a) noexcept { align = a; }
  void SetFixedBuffer(int16_t index) noexcept { buf_index = index; }

  // Writes `iocb` from the fields above, as Prep* and Set* leave it; keeps
  // iocb.aio_data. (Inline: it is on every request's path, twice on
  // linux-aio.)
  void FillIocb() noexcept {
    // By Op: kNoop, kRead, kWrite, kReadv, kWritev, kFsync, kFdatasync.
    static constexpr uint16_t kOpcode[] = {
        IOCB_CMD_NOOP,    IOCB_CMD_PREAD, IOCB_CMD_PWRITE, IOCB_CMD_PREADV,
        IOCB_CMD_PWRITEV, IOCB_CMD_FSYNC, IOCB_CMD_FDSYNC};
    struct iocb cb = {};
    cb.aio_data = iocb.aio_data;
    const auto o = static_cast<unsigned>(op);
    cb.aio_lio_opcode =
        o < std::size(kOpcode) ? kOpcode[o] : uint16_t{IOCB_CMD_NOOP};
    cb.aio_fildes = static_cast<uint32_t>(fd);
    cb.aio_rw_flags = static_cast<__kernel_rwf_t>(rw_flags);
    if (op == Op::kRead || op == Op::kWrite) {
      cb.aio_buf =
          iov.empty() ? 0 : reinterpret_cast<uint64_t>(iov[0].iov_base);
      cb.aio_nbytes = length;
      cb.aio_offset = static_cast<int64_t>(offset);
    } else if (op == Op::kReadv || op == Op::kWritev) {
      cb.aio_buf = reinterpret_cast<uint64_t>(iov.data());
      cb.aio_nbytes = iov.size();
      cb.aio_offset = static_cast<int64_t>(offset);
    }
    if (has_ioprio) {
      cb.aio_flags |= IOCB_FLAG_IOPRIO;
      cb.aio_reqprio = static_cast<int16_t>(ioprio);
    }
    if (resfd >= 0) {
      cb.aio_flags |= IOCB_FLAG_RESFD;
      cb.aio_resfd = static_cast<uint32_t>(resfd);
    }
    iocb = cb;
  }

  [[nodiscard]] bool in_flight() const noexcept {
    return engine_state.load(std::memory_order_relaxed) ==
           request_state::kInFlight;
  }
  [[nodiscard]] bool completed() const noexcept {
    return engine_state.load(std::memory_order_relaxed) ==
           request_state::kCompleted;
  }
  // BlueStore's accessor: rval, which is kNotCompleted until the request
  // completes.
  [[nodiscard]] int64_t get_return_value() const noexcept { return rval; }

  // OK when the request is well formed for submission (known op, buffers and
  // lengths consistent, offset in range, alignment respected). Otherwise the
  // reason, with the request's context. Engines call this before submission;
  // callers may call it to check early.
  [[nodiscard]] Status Validate() const;

 private:
  void Reset(Op new_op, int new_fd, uint64_t off) noexcept;
  // PrepRead / PrepWrite. REQUIRES: new_op is kRead or kWrite.
  void PrepOneBuffer(Op new_op, int f, void* buf, size_t len,
                     uint64_t off) noexcept;
};

// "read fd=5 offset=4096 length=512: completed, 512 bytes" or, for a failure,
// the errno with its meaning and, when the library refused it, the rule it
// broke (for instance the O_DIRECT alignment).
std::string Describe(const Request& req);

// What was asked only ("read fd=5 offset=4096 length=512"), without the result:
// safe to call while the request is in flight on another thread.
std::string DescribeAsked(const Request& req);

}  // namespace aiokit

#endif  // AIOKIT_REQUEST_H_
