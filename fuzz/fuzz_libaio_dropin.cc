// libFuzzer target: the libaio drop-in (compat/libaio_compat.cc) on the
// threads engine, driven by a bounded sequence of libaio calls decoded from the
// input: io_setup, io_submit of up to kMaxBatch iocbs built from fuzzed fields,
// io_getevents, io_cancel, io_destroy, reaping the context's ring in user
// space as fio --userspace_reap does, and a second thread waiting in
// io_getevents while the next call (io_destroy among them) runs.
//
// Every pointer handed to the drop-in is memory this target owns for the whole
// process (iocbs, buffers, iovec arrays, events) or NULL: the drop-in reads
// iocbs and iovec arrays in user space, so a wild pointer would be the
// target's bug, not the drop-in's. For the same reason a read or write of more
// bytes than its buffer holds is only built when the kernel would refuse the
// iocb at io_submit anyway (then the drop-in must refuse it too; if it does
// not, ASan reports the overrun).
//
// Checked (a failure aborts with a message, which libFuzzer reports):
//  - no crash, no ASan or UBSan report;
//  - io_submit: a count in [1, nr] (0 for nr 0) or -errno from the kernel's
//    set; the first `count` iocbs are accepted, and none of them is one the
//    kernel refuses at io_submit;
//  - every accepted iocb comes back exactly once, through io_getevents or the
//    ring, on the context it was submitted to, with its aio_data and a result
//    that is a byte count within what was asked or -errno from a known set;
//    one that io_cancel cancelled (-EINPROGRESS) comes back -ECANCELED;
//  - at the end of the input every context is reaped with a bounded wait and
//    nothing is left over, then destroyed; io_destroy of a context with
//    requests in flight waits for them (their events are dropped, as the
//    kernel drops them).

#include <fcntl.h>
#include <fuzzer/FuzzedDataProvider.h>
#include <limits.h>
#include <linux/aio_abi.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <thread>

// Relative to this file, so that clang-tidy finds it with the compile
// commands of a build without the fuzz targets.
#include "../src/engine/aio_ring.h"

// libaio's handle, as compat/libaio_compat.cc declares it.
struct io_context;
using io_context_t = io_context*;

extern "C" {
// NOLINTBEGIN(readability-identifier-naming): libaio's names
int io_setup(int maxevents, io_context_t* ctxp);
int io_destroy(io_context_t ctx);
int io_submit(io_context_t ctx, long nr, struct iocb** iocbs);
// io_getevents@@LIBAIO_0.4 and io_cancel@@LIBAIO_0.4 (compat/libaio.map).
int aiokit_io_getevents_0_4(io_context_t ctx, long min_nr, long nr,
                            struct io_event* events, struct timespec* timeout);
int aiokit_io_cancel_0_4(io_context_t ctx, struct iocb* iocb,
                         struct io_event* result);
// NOLINTEND(readability-identifier-naming)
}

namespace {

constexpr int kMaxCalls = 32;     // calls per input
constexpr int kMaxSlots = 64;     // iocbs built per input
constexpr int kMaxEntries = 64;   // iocbs accepted per input (repeats count)
constexpr long kMaxBatch = 8;     // iocb pointers per io_submit
constexpr int kContexts = 2;      // contexts alive at once
constexpr size_t kArena = 65536;  // the bytes reads and writes use
constexpr size_t kFileBytes = 16384;
constexpr int kIovs = IOV_MAX + 8;  // any count up to IOV_MAX from any start
constexpr int kIovStarts = 8;
constexpr size_t kIovMisalign = 3;  // bytes: a copy of the array off 8-byte
constexpr int kClosedFd = 1000;     // never open in this process
// The kernel refuses io_setup beyond this (fs/aio.c).
constexpr int kMaxEvents = 0x10000000 / static_cast<int>(sizeof(io_event));

[[noreturn]] __attribute__((format(printf, 1, 2))) void Fail(const char* fmt,
                                                             ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("fuzz_libaio_dropin: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  std::abort();
}

// AIOKIT_FUZZ_TRACE=1: every call and its answer on stderr (to read what a
// crashing input does: run the target on that one file).
bool trace = false;

__attribute__((format(printf, 1, 2))) void Trace(const char* fmt, ...) {
  if (!trace) return;
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
}

void TraceIocb(const char* what, const struct iocb& cb) {
  Trace(
      "  %s: op %u fd %d buf %#llx nbytes %llu offset %lld rw_flags %#x "
      "flags %#x resfd %d reqprio %#x reserved2 %#llx",
      what, cb.aio_lio_opcode, static_cast<int>(cb.aio_fildes),
      static_cast<unsigned long long>(cb.aio_buf),
      static_cast<unsigned long long>(cb.aio_nbytes),
      static_cast<long long>(cb.aio_offset), cb.aio_rw_flags, cb.aio_flags,
      static_cast<int>(cb.aio_resfd), static_cast<uint16_t>(cb.aio_reqprio),
      static_cast<unsigned long long>(cb.aio_reserved2));
}

// What the whole process shares: descriptors and memory made once.
struct Fixture {
  int rw = -1;      // a temporary file, O_RDWR
  int rd = -1;      // the same file, O_RDONLY
  int pipe_r = -1;  // a pipe, both ends O_NONBLOCK (nothing ever blocks)
  int pipe_w = -1;
  int efd = -1;  // an eventfd for IOCB_FLAG_RESFD
  alignas(4096) unsigned char arena[kArena];
  std::array<iovec, kIovs> iovs;
  uint64_t iov_prefix[kIovs + 1];  // iov_prefix[i]: bytes of iovs[0, i)
  // The same iovecs at a misaligned address (the kernel copies them as bytes;
  // so must the drop-in).
  alignas(16) unsigned char iovs_misaligned[sizeof(iovec) * kIovs + 16];

  // O_RDONLY, O_WRONLY, O_RDWR, or -1 for a descriptor that is not open.
  [[nodiscard]] int ModeOf(int fd) const {
    if (fd == rw || fd == efd) return O_RDWR;
    if (fd == rd || fd == pipe_r) return O_RDONLY;
    if (fd == pipe_w) return O_WRONLY;
    return -1;
  }
  // The bytes addressed by `count` iovecs from index `start`.
  [[nodiscard]] uint64_t IovBytes(size_t start, uint64_t count) const {
    return iov_prefix[start + count] - iov_prefix[start];
  }

  // Back to the same state before every input.
  void Reset() const {
    if (::ftruncate(rw, 0) != 0) Fail("ftruncate: errno %d", errno);
    unsigned char pattern[4096];
    for (size_t i = 0; i < sizeof(pattern); ++i) {
      pattern[i] = static_cast<unsigned char>(i * 7);
    }
    for (size_t off = 0; off < kFileBytes; off += sizeof(pattern)) {
      if (::pwrite(rw, pattern, sizeof(pattern), static_cast<off_t>(off)) !=
          static_cast<ssize_t>(sizeof(pattern))) {
        Fail("pwrite: errno %d", errno);
      }
    }
    unsigned char sink[4096];
    while (::read(pipe_r, sink, sizeof(sink)) > 0) {
    }
    uint64_t count = 0;
    (void)::read(efd, &count, sizeof(count));
  }
};

Fixture* fx = nullptr;

void MakeFixture() {
  fx = new Fixture;  // never freed: the process's
  // tmpfs when there is one: fsync costs nothing there.
  std::string dir = "/dev/shm";
  if (::access(dir.c_str(), W_OK) != 0) {
    // Single-threaded here: nothing calls setenv concurrently.
    const char* tmp = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
    dir = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  std::string path = dir + "/aiokit-fuzz-XXXXXX";
  fx->rw = ::mkostemp(path.data(), O_CLOEXEC);
  if (fx->rw < 0) Fail("mkstemp in %s: errno %d", dir.c_str(), errno);
  fx->rd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ::unlink(path.c_str());  // nothing left behind, even after a crash
  int p[2];
  if (fx->rd < 0 || ::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) {
    Fail("open/pipe2: errno %d", errno);
  }
  fx->pipe_r = p[0];
  fx->pipe_w = p[1];
  fx->efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fx->efd < 0) Fail("eventfd: errno %d", errno);
  ::close(kClosedFd);
  // Segments of 0 to 47 bytes spread over the arena; a NULL one of 8 bytes
  // (the kernel faults on it: EFAULT, or a short transfer).
  fx->iov_prefix[0] = 0;
  for (int i = 0; i < kIovs; ++i) {
    iovec& v = fx->iovs[static_cast<size_t>(i)];
    if (i % 97 == 13) {
      v = {nullptr, 8};
    } else {
      const size_t len = i % 5 == 0 ? 0 : static_cast<size_t>(i * 7) % 48;
      v = {fx->arena + (static_cast<size_t>(i) * 61) % (kArena - 64), len};
    }
    fx->iov_prefix[i + 1] = fx->iov_prefix[i] + v.iov_len;
  }
  std::memcpy(fx->iovs_misaligned + kIovMisalign, fx->iovs.data(),
              sizeof(iovec) * kIovs);
}

// One iocb built by this input (never reused within it, so that its address
// identifies its submissions).
struct Slot {
  struct iocb cb = {};
  int ctx = -1;                 // the context it was submitted to
  int outstanding = 0;          // accepted and not yet returned
  int cancelled = 0;            // of those, io_cancel said -EINPROGRESS
  uint64_t max_res = 0;         // the most bytes a completion may report
  bool kernel_refuses = false;  // io_submit must refuse it
  // io_destroy dropped these while a second thread was reaping: they may
  // still come back from that thread.
  int dropped = 0;
};

struct Ctx {
  io_context_t handle = nullptr;  // nullptr: none (calls go to the kernel)
  int outstanding = 0;
};

// What the kernel's io_submit refuses for this iocb, whatever the errno
// (fs/aio.c: io_submit_one, aio_prep_rw, aio_setup_rw, rw_verify_area), given
// the descriptors the target made. IOCB_CMD_POLL counts as refused: the
// drop-in documents refusing it.
bool KernelRefuses(const struct iocb& cb) {
  if (cb.aio_reserved2 != 0) return true;
  if (static_cast<int64_t>(cb.aio_nbytes) < 0) return true;
  const int mode = fx->ModeOf(static_cast<int>(cb.aio_fildes));
  if (mode < 0) return true;
  if ((cb.aio_flags & IOCB_FLAG_RESFD) != 0 &&
      static_cast<int>(cb.aio_resfd) != fx->efd) {
    return true;
  }
  const unsigned op = cb.aio_lio_opcode;
  switch (op) {
    case IOCB_CMD_PREAD:
    case IOCB_CMD_PREADV:
      if (mode == O_WRONLY) return true;
      break;
    case IOCB_CMD_PWRITE:
    case IOCB_CMD_PWRITEV:
      if (mode == O_RDONLY) return true;
      break;
    case IOCB_CMD_FSYNC:
    case IOCB_CMD_FDSYNC:
      return cb.aio_buf != 0 || cb.aio_offset != 0 || cb.aio_nbytes != 0 ||
             cb.aio_rw_flags != 0;
    default:
      return true;
  }
  // An I/O priority class the kernel does not have, or a level with
  // IOPRIO_CLASS_NONE (ioprio_check_cap, the same on every kernel).
  if ((cb.aio_flags & IOCB_FLAG_IOPRIO) != 0) {
    const auto prio = static_cast<uint16_t>(cb.aio_reqprio);
    if ((prio >> 13U) > 3 || ((prio >> 13U) == 0 && (prio & 7U) != 0)) {
      return true;
    }
  }
  // A vectored op's iovec array is copied at io_submit: EFAULT from NULL.
  const bool vectored = op == IOCB_CMD_PREADV || op == IOCB_CMD_PWRITEV;
  if (vectored && cb.aio_buf == 0 && cb.aio_nbytes != 0) return true;
  constexpr uint32_t kKnownRwf = 0x1f;  // HIPRI DSYNC SYNC NOWAIT APPEND
  if ((cb.aio_rw_flags & ~kKnownRwf) != 0) return true;
  if (cb.aio_offset < 0) return true;
  return vectored && cb.aio_nbytes > IOV_MAX;
}

bool OneOf(long v, std::initializer_list<long> set) {
  for (long s : set) {
    if (v == s) return true;
  }
  return false;
}

// The errnos io_submit may answer with.
bool SubmitErrno(long r) {
  return OneOf(-r, {EINVAL, EFAULT, EBADF, EAGAIN, EOPNOTSUPP});
}

// The errnos a completion may carry (the I/O's own, or a cancel).
bool CompletionErrno(long r) {
  return OneOf(-r, {EBADF, EINVAL, EFAULT, EAGAIN, EOPNOTSUPP, ECANCELED, EPERM,
                    EFBIG, ENOSPC, EIO, EISDIR, ESPIPE, EOVERFLOW, EPIPE, EINTR,
                    ENXIO, EROFS, EDQUOT});
}

// A call on a handle that is not ours goes to the kernel, which refuses it (or
// has no AIO at all).
void ExpectKernelRefusal(const char* what, long r) {
  if (!OneOf(-r, {EINVAL, ENOSYS, EPERM, EFAULT})) {
    Fail("%s on a handle that is not a context: %ld", what, r);
  }
}

class Run {
 public:
  explicit Run(const uint8_t* data, size_t size) : in_(data, size) {}

  void Go() {
    for (int call = 0; call < kMaxCalls && in_.remaining_bytes() > 0; ++call) {
      const int op = in_.ConsumeIntegralInRange<int>(0, 8);
      if (op == 8) {
        Concurrently();
      } else {
        Call(op);
      }
    }
    for (int i = 0; i < kContexts; ++i) {
      if (ctx_[i].handle == nullptr) continue;
      Drain(i);
      if (int r = io_destroy(ctx_[i].handle); r != 0) {
        Fail("io_destroy after reaping everything: %d", r);
      }
      ctx_[i].handle = nullptr;
    }
    for (int s = 0; s < used_; ++s) {
      if (slots_[s].outstanding != 0 || slots_[s].cancelled != 0) {
        Fail("slot %d: %d outstanding, %d cancelled left at the end", s,
             slots_[s].outstanding, slots_[s].cancelled);
      }
    }
  }

 private:
  void Call(int op) {
    switch (op) {
      case 0:
        Setup();
        break;
      case 1:
      case 2:
        Submit();
        break;
      case 3:
        Getevents();
        break;
      case 4:
        Cancel();
        break;
      case 5:
        Destroy();
        break;
      case 6:
        ReapRing();
        break;
      default:
        UnknownHandle();
        break;
    }
  }

  // A second thread waits in io_getevents on a context while this one makes
  // the next call (a submit, a cancel, another io_getevents, io_destroy ...);
  // then it is joined and what it reaped is checked.
  void Concurrently() {
    int ci = 0;
    Ctx& c = PickCtx(&ci);
    const long min_nr = in_.ConsumeIntegralInRange<long>(0, 4);
    // Never a zero timeout: after an io_destroy that wins the race, the
    // handle is no context, and a poll of it would read the freed ring
    // header, as libaio's does.
    const long timeout_ns = in_.ConsumeIntegralInRange<long>(1000, 2000000);
    const int op = in_.ConsumeIntegralInRange<int>(0, 7);
    if (c.handle == nullptr) return;
    std::array<io_event, kMaxEntries + 1> events{};
    long r = 0;
    const io_context_t h = c.handle;
    std::thread waiter([&] {
      timespec ts{0, timeout_ns};
      r = aiokit_io_getevents_0_4(h, min_nr, kMaxEntries, events.data(), &ts);
    });
    concurrent_ = true;
    Call(op);
    waiter.join();
    concurrent_ = false;
    Trace(
        "  (concurrently) io_getevents(context %d, min %ld, nr %d, %ldns) = "
        "%ld",
        ci, min_nr, kMaxEntries, timeout_ns, r);
    // -EINVAL only after io_destroy: the waiter returns, or the handle is no
    // context by the time it calls.
    if (r < 0 && (r != -EINVAL || c.handle != nullptr)) {
      Fail("concurrent io_getevents: %ld", r);
    }
    if (r > kMaxEntries) Fail("concurrent io_getevents: %ld", r);
    for (long i = 0; i < r; ++i) CheckEvent(ci, events[i]);
    for (Slot& s : slots_) s.dropped = 0;
  }

  Ctx& PickCtx(int* index) {
    *index = in_.ConsumeIntegralInRange<int>(0, kContexts - 1);
    return ctx_[*index];
  }

  void Setup() {
    int i = 0;
    Ctx& c = PickCtx(&i);
    int maxevents = 0;
    switch (in_.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
        maxevents = in_.PickValueInArray(
            {0, -1, INT_MIN, INT_MAX, kMaxEvents + 1, kMaxEvents});
        break;
      default:
        maxevents = in_.ConsumeIntegralInRange<int>(1, 16);
        break;
    }
    const bool valid = maxevents > 0 && maxevents <= kMaxEvents;
    const int variant = in_.ConsumeIntegralInRange<int>(0, 7);
    if (variant == 0) {
      const int r = io_setup(maxevents, nullptr);
      Trace("io_setup(%d, NULL) = %d", maxevents, r);
      if (r != -EFAULT) {
        Fail("io_setup(%d, NULL): %d, want -EFAULT", maxevents, r);
      }
      return;
    }
    if (c.handle != nullptr || variant == 1) {
      // *ctxp must be 0.
      io_context_t h = c.handle != nullptr
                           ? c.handle
                           : reinterpret_cast<io_context_t>(uintptr_t{1});
      const io_context_t before = h;
      const int r = io_setup(maxevents, &h);
      Trace("io_setup(%d, *ctxp %p) = %d", maxevents,
            static_cast<void*>(before), r);
      if (r != -EINVAL || h != before) {
        Fail("io_setup(%d) with *ctxp != 0: %d, want -EINVAL", maxevents, r);
      }
      return;
    }
    io_context_t h = nullptr;
    const int r = io_setup(maxevents, &h);
    Trace("io_setup(%d) = %d: context %d", maxevents, r, i);
    if (!valid) {
      if (r != -EINVAL || h != nullptr) {
        Fail("io_setup(%d): %d, want -EINVAL", maxevents, r);
      }
      return;
    }
    if (r == 0) {
      if (h == nullptr) Fail("io_setup(%d): 0 but no context", maxevents);
      c.handle = h;
      c.outstanding = 0;
    } else if (r != -EAGAIN && r != -ENOMEM) {
      Fail("io_setup(%d): %d", maxevents, r);
    }
  }

  uint64_t PickOffset() {
    switch (in_.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        return in_.PickValueInArray<uint64_t>(
            {~uint64_t{0}, uint64_t{1} << 63, (uint64_t{1} << 63) - 1,
             uint64_t{1} << 40, uint64_t{1} << 44});
      case 1:
        return in_.ConsumeIntegral<uint64_t>();
      case 2:
      case 3:
        return in_.ConsumeIntegralInRange<uint64_t>(0, 8) * 4096;
      default:
        return in_.ConsumeIntegralInRange<uint64_t>(0, kFileBytes + 4096);
    }
  }

  int PickFd() {
    switch (in_.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
        return -1;
      case 1:
        return kClosedFd;
      case 2:
        return fx->rd;
      case 3:
        return fx->pipe_r;
      case 4:
        return fx->pipe_w;
      default:
        return fx->rw;
    }
  }

  // A new iocb from the input, or nullptr when this input has built enough.
  Slot* Build() {
    if (used_ == kMaxSlots) return nullptr;
    Slot& s = slots_[used_];
    s = Slot{};
    struct iocb& cb = s.cb;
    cb.aio_data = 0xda7a000000000000ULL | static_cast<uint64_t>(used_);
    ++used_;
    cb.aio_lio_opcode = in_.PickValueInArray<uint16_t>(
        {IOCB_CMD_PREAD, IOCB_CMD_PWRITE, IOCB_CMD_PREADV, IOCB_CMD_PWRITEV,
         IOCB_CMD_PREAD, IOCB_CMD_PWRITE, IOCB_CMD_PREADV, IOCB_CMD_PWRITEV,
         IOCB_CMD_FSYNC, IOCB_CMD_FDSYNC, IOCB_CMD_POLL, IOCB_CMD_NOOP, 4, 9,
         0xffff});
    if (in_.ConsumeIntegralInRange<int>(0, 15) == 0) {
      cb.aio_lio_opcode = in_.ConsumeIntegral<uint16_t>();
    }
    const unsigned op = cb.aio_lio_opcode;
    const bool vectored = op == IOCB_CMD_PREADV || op == IOCB_CMD_PWRITEV;
    const bool rw = vectored || op == IOCB_CMD_PREAD || op == IOCB_CMD_PWRITE;
    cb.aio_fildes = static_cast<uint32_t>(PickFd());
    const uint8_t knobs = in_.ConsumeIntegral<uint8_t>();
    if ((knobs & 0x01) != 0) {
      cb.aio_flags |= IOCB_FLAG_RESFD;
      cb.aio_resfd = static_cast<uint32_t>(in_.PickValueInArray<int>(
          {fx->efd, fx->efd, fx->efd, -1, kClosedFd, fx->rw, fx->pipe_r}));
    }
    if ((knobs & 0x02) != 0) {
      cb.aio_flags |= IOCB_FLAG_IOPRIO;
      cb.aio_reqprio = static_cast<int16_t>(in_.ConsumeIntegral<uint16_t>());
    }
    if ((knobs & 0x04) != 0) {
      cb.aio_rw_flags = (knobs & 0x08) != 0
                            ? in_.ConsumeIntegral<int>()
                            : in_.ConsumeIntegralInRange<int>(0, 0x1f);
    }
    if ((knobs & 0x10) != 0 && in_.ConsumeBool()) {
      cb.aio_reserved2 = in_.ConsumeIntegral<uint64_t>();
    }
    if (rw || (knobs & 0x20) != 0)
      cb.aio_offset = static_cast<int64_t>(PickOffset());

    // The buffer, then its length, bounded by what the target owns unless the
    // kernel refuses the iocb anyway.
    const int buf_kind = in_.ConsumeIntegralInRange<int>(0, 7);
    const bool null_buf = buf_kind == 0 || (!rw && (knobs & 0x40) == 0);
    uint64_t room = 0;  // bytes (or iovecs) the buffer has
    size_t iov_start = 0;
    if (null_buf) {
      cb.aio_buf = 0;
    } else if (vectored) {
      iov_start = static_cast<size_t>(
          in_.ConsumeIntegralInRange<int>(0, kIovStarts - 1));
      cb.aio_buf =
          buf_kind == 1
              ? reinterpret_cast<uintptr_t>(fx->iovs_misaligned + kIovMisalign +
                                            iov_start * sizeof(iovec))
              : reinterpret_cast<uintptr_t>(&fx->iovs[iov_start]);
      room = IOV_MAX;
    } else {
      // Aligned (at a 4 KiB boundary) or at any byte.
      const size_t off =
          buf_kind == 1 || buf_kind == 2
              ? in_.ConsumeIntegralInRange<size_t>(0, kArena - 1)
              : in_.ConsumeIntegralInRange<size_t>(0, kArena / 4096 - 1) * 4096;
      cb.aio_buf = reinterpret_cast<uintptr_t>(fx->arena + off);
      room = kArena - off;
    }
    const int len_kind = in_.ConsumeIntegralInRange<int>(0, 7);
    if (!rw && len_kind != 0) {
      cb.aio_nbytes = 0;
    } else if (len_kind == 0) {
      cb.aio_nbytes = in_.PickValueInArray<uint64_t>(
          {~uint64_t{0}, uint64_t{1} << 63, IOV_MAX + 1, 1U << 20,
           uint64_t{1} << 32, in_.ConsumeIntegral<uint64_t>()});
    } else if (vectored) {
      cb.aio_nbytes = in_.ConsumeIntegralInRange<uint64_t>(0, 16);
      if (len_kind == 1) {
        cb.aio_nbytes = in_.ConsumeIntegralInRange<uint64_t>(0, IOV_MAX);
      }
    } else {
      cb.aio_nbytes = in_.ConsumeIntegralInRange<uint64_t>(
          0, len_kind == 1 ? room : std::min<uint64_t>(room, 4096));
    }
    s.kernel_refuses = KernelRefuses(cb);
    if (!s.kernel_refuses && !null_buf && cb.aio_nbytes > room) {
      // More than the buffer holds, on an iocb the kernel would take: that is
      // the caller's bug, not something to ask of the drop-in.
      cb.aio_nbytes = room;
    }
    if (vectored) {
      s.max_res = null_buf || cb.aio_nbytes > IOV_MAX
                      ? 0
                      : fx->IovBytes(iov_start, cb.aio_nbytes);
    } else if (rw) {
      s.max_res = cb.aio_nbytes;
    }
    return &s;
  }

  void Submit() {
    int ci = 0;
    Ctx& c = PickCtx(&ci);
    std::array<struct iocb*, kMaxBatch> batch{};
    std::array<Slot*, kMaxBatch> owner{};
    const long count = in_.ConsumeIntegralInRange<long>(0, kMaxBatch);
    for (long i = 0; i < count; ++i) {
      const int what = in_.ConsumeIntegralInRange<int>(0, 15);
      if (what == 0) continue;  // NULL
      if (what == 1 && i > 0) {
        // The same iocb twice in one call: the kernel takes both.
        const long j = in_.ConsumeIntegralInRange<long>(0, i - 1);
        batch[i] = batch[j];
        owner[i] = owner[j];
        continue;
      }
      Slot* s = Build();
      if (s == nullptr) break;
      batch[i] = &s->cb;
      owner[i] = s;
    }
    long nr = count;
    switch (in_.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
        nr = in_.PickValueInArray<long>({-1, LONG_MIN, 0, -kMaxBatch});
        break;
      case 1:
        nr = in_.ConsumeIntegralInRange<long>(0, kMaxBatch);
        break;
      default:
        break;
    }
    // Never more entries than this input may still have accepted.
    nr = std::min(nr, static_cast<long>(kMaxEntries - entries_));
    const bool null_array = in_.ConsumeIntegralInRange<int>(0, 31) == 0;
    const long r = io_submit(c.handle, nr, null_array ? nullptr : batch.data());
    Trace("io_submit(context %d, nr %ld%s) = %ld", ci, nr,
          null_array ? ", NULL array" : "", r);
    for (long i = 0; trace && !null_array && i < std::min(nr, kMaxBatch); ++i) {
      if (owner[i] == nullptr) {
        Trace("  [%ld] NULL", i);
      } else {
        const std::string what =
            "[" + std::to_string(i) + "] slot " +
            std::to_string(owner[i] - slots_.data()) +
            (owner[i]->kernel_refuses ? " (the kernel refuses it)" : "");
        TraceIocb(what.c_str(), owner[i]->cb);
      }
    }
    if (c.handle == nullptr) {
      ExpectKernelRefusal("io_submit", r);
      return;
    }
    if (nr < 0) {
      if (r != -EINVAL) Fail("io_submit(nr %ld): %ld, want -EINVAL", nr, r);
      return;
    }
    if (nr == 0) {
      if (r != 0) Fail("io_submit(nr 0): %ld, want 0", r);
      return;
    }
    if (null_array) {
      if (r != -EFAULT) Fail("io_submit(NULL array): %ld, want -EFAULT", r);
      return;
    }
    if (r < 0) {
      if (!SubmitErrno(r)) Fail("io_submit: %ld, not an errno it may give", r);
      return;
    }
    if (r == 0 || r > nr) Fail("io_submit(nr %ld): %ld", nr, r);
    for (long i = 0; i < r; ++i) {
      Slot* s = owner[i];
      if (s == nullptr) Fail("io_submit accepted a NULL iocb (entry %ld)", i);
      if (s->kernel_refuses) {
        Fail(
            "io_submit accepted an iocb the kernel refuses: op %u fd %d "
            "buf %#llx nbytes %llu offset %lld rw_flags %#x flags %#x "
            "resfd %d reqprio %#x reserved2 %#llx",
            s->cb.aio_lio_opcode, static_cast<int>(s->cb.aio_fildes),
            static_cast<unsigned long long>(s->cb.aio_buf),
            static_cast<unsigned long long>(s->cb.aio_nbytes),
            static_cast<long long>(s->cb.aio_offset), s->cb.aio_rw_flags,
            s->cb.aio_flags, static_cast<int>(s->cb.aio_resfd),
            static_cast<uint16_t>(s->cb.aio_reqprio),
            static_cast<unsigned long long>(s->cb.aio_reserved2));
      }
      s->ctx = ci;
      ++s->outstanding;
      ++c.outstanding;
      ++entries_;
    }
  }

  Slot* SlotOf(uint64_t obj) {
    for (int s = 0; s < used_; ++s) {
      if (reinterpret_cast<uint64_t>(&slots_[s].cb) == obj) return &slots_[s];
    }
    return nullptr;
  }

  void CheckEvent(int ci, const io_event& ev) {
    Slot* s = SlotOf(ev.obj);
    if (s == nullptr) {
      Fail(
          "an event for an iocb never submitted: obj %#llx data %#llx res %lld",
          static_cast<unsigned long long>(ev.obj),
          static_cast<unsigned long long>(ev.data),
          static_cast<long long>(ev.res));
    }
    const auto slot = static_cast<int>(s - slots_.data());
    Trace("  event: slot %d res %lld", slot, static_cast<long long>(ev.res));
    if (s->dropped > 0 && s->outstanding == 0) {
      // Reaped by a second thread while io_destroy dropped the rest.
      --s->dropped;
      return;
    }
    if (s->ctx != ci || s->outstanding == 0) {
      Fail("slot %d: an event on context %d, submitted to %d, %d outstanding",
           slot, ci, s->ctx, s->outstanding);
    }
    if (ev.data != s->cb.aio_data) {
      Fail("slot %d: event data %#llx, want %#llx", slot,
           static_cast<unsigned long long>(ev.data),
           static_cast<unsigned long long>(s->cb.aio_data));
    }
    if (ev.res2 != 0) {
      Fail("slot %d: res2 %lld", slot, static_cast<long long>(ev.res2));
    }
    const auto res = static_cast<long>(ev.res);
    if (res == -ECANCELED) {
      if (s->cancelled == 0) Fail("slot %d: -ECANCELED, never cancelled", slot);
      --s->cancelled;
    } else if (res < 0) {
      if (!CompletionErrno(res)) Fail("slot %d: completion %ld", slot, res);
    } else if (static_cast<uint64_t>(res) > s->max_res) {
      Fail("slot %d: %ld bytes, at most %llu asked (op %u)", slot, res,
           static_cast<unsigned long long>(s->max_res), s->cb.aio_lio_opcode);
    }
    --s->outstanding;
    --ctx_[ci].outstanding;
    // What io_cancel cancelled comes back cancelled: once none of this iocb is
    // left, no cancel may be owed.
    if (s->outstanding < s->cancelled) {
      Fail("slot %d: cancelled but came back %ld", slot, res);
    }
  }

  // io_getevents; returns its result after checking it.
  long GetEvents(int ci, long min_nr, long nr, io_event* events, timespec* ts) {
    Ctx& c = ctx_[ci];
    const long r = aiokit_io_getevents_0_4(c.handle, min_nr, nr, events, ts);
    Trace("io_getevents(context %d, min %ld, nr %ld, %s, timeout %s) = %ld", ci,
          min_nr, nr, events == nullptr ? "NULL" : "events",
          ts == nullptr ? "none"
                        : (std::to_string(ts->tv_sec) + "s " +
                           std::to_string(ts->tv_nsec) + "ns")
                              .c_str(),
          r);
    if (c.handle == nullptr) {
      ExpectKernelRefusal("io_getevents", r);
      return r;
    }
    const bool bad_ts = ts != nullptr && (ts->tv_sec < 0 || ts->tv_nsec < 0 ||
                                          ts->tv_nsec >= 1000000000L);
    const bool zero_ts = ts != nullptr && ts->tv_sec == 0 && ts->tv_nsec == 0;
    if (min_nr < 0 || min_nr > nr) {
      // 0 is libaio's user-space answer to a poll of an empty ring.
      if (r != -EINVAL && !(r == 0 && zero_ts)) {
        Fail("io_getevents(min %ld, nr %ld): %ld, want -EINVAL", min_nr, nr, r);
      }
      return r;
    }
    if (bad_ts) {
      if (r != -EINVAL) Fail("io_getevents(bad timeout): %ld", r);
      return r;
    }
    if (nr == 0) {
      if (r != 0) Fail("io_getevents(nr 0): %ld", r);
      return r;
    }
    if (events == nullptr) {
      if (r != -EFAULT && r != 0) Fail("io_getevents(NULL events): %ld", r);
      return r;
    }
    if (r < 0 || r > nr || r > kMaxEntries) {
      Fail("io_getevents(min %ld, nr %ld): %ld", min_nr, nr, r);
    }
    if (ts == nullptr && r < min_nr) {
      Fail("io_getevents(min %ld, no timeout): %ld", min_nr, r);
    }
    for (long i = 0; i < r; ++i) CheckEvent(ci, events[i]);
    return r;
  }

  void Getevents() {
    int ci = 0;
    Ctx& c = PickCtx(&ci);
    auto pick = [&] {
      return in_.ConsumeIntegralInRange<int>(0, 7) == 0
                 ? in_.PickValueInArray<long>({-1, LONG_MIN, LONG_MAX, 0})
                 : in_.ConsumeIntegralInRange<long>(0, kMaxEntries);
    };
    const long min_nr = pick();
    const long nr = pick();
    timespec ts{};
    timespec* tsp = &ts;
    switch (in_.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        ts.tv_nsec = in_.PickValueInArray<long>({-1, 1000000000L, LONG_MIN});
        if (in_.ConsumeBool()) ts = {-1, 0};
        break;
      case 1:
        // No timeout: only when that many completions are sure to come here
        // (not with a second thread reaping too).
        if (min_nr <= c.outstanding && !concurrent_) tsp = nullptr;
        break;
      case 2:
      case 3:
        ts.tv_nsec = in_.ConsumeIntegralInRange<long>(1, 1000000);  // <= 1 ms
        break;
      default:
        break;  // a poll
    }
    std::array<io_event, kMaxEntries + 1> events{};
    const bool null_events = in_.ConsumeIntegralInRange<int>(0, 31) == 0;
    (void)GetEvents(ci, min_nr, nr, null_events ? nullptr : events.data(), tsp);
  }

  void Cancel() {
    int ci = 0;
    Ctx& c = PickCtx(&ci);
    struct iocb spare = {};
    struct iocb* target = &spare;
    Slot* s = nullptr;
    switch (in_.ConsumeIntegralInRange<int>(0, 7)) {
      case 0:
        target = nullptr;
        break;
      case 1:
        spare.aio_key = in_.ConsumeIntegral<uint32_t>();
        break;
      case 2:
        break;  // never submitted
      default:
        if (used_ > 0) {
          s = &slots_[in_.ConsumeIntegralInRange<int>(0, used_ - 1)];
          target = &s->cb;
        }
        break;
    }
    io_event result{};
    const long r = aiokit_io_cancel_0_4(c.handle, target, &result);
    Trace("io_cancel(context %d, %s) = %ld", ci,
          target == nullptr ? "NULL"
          : s != nullptr ? ("slot " + std::to_string(s - slots_.data())).c_str()
                         : "an iocb never submitted",
          r);
    if (c.handle == nullptr) {
      ExpectKernelRefusal("io_cancel", r);
      return;
    }
    if (target == nullptr) {
      if (r != -EFAULT) Fail("io_cancel(NULL): %ld, want -EFAULT", r);
      return;
    }
    const bool ours = s != nullptr && s->ctx == ci && s->outstanding > 0;
    if (r == -EINPROGRESS) {
      if (!ours) Fail("io_cancel of an iocb not in flight here: -EINPROGRESS");
      if (s->cancelled == s->outstanding) {
        Fail("io_cancel: every submission of this iocb was cancelled already");
      }
      ++s->cancelled;
      return;
    }
    if (r != -EINVAL && r != -EAGAIN) Fail("io_cancel: %ld", r);
  }

  // Reaps everything the context has outstanding, waiting at most 10 s.
  void Drain(int ci) {
    Ctx& c = ctx_[ci];
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::array<io_event, kMaxEntries + 1> events{};
    while (c.outstanding > 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        Fail("context %d: %d accepted iocbs never completed (10 s)", ci,
             c.outstanding);
      }
      timespec ts{0, 10000000};  // 10 ms
      const long r = GetEvents(ci, 1, kMaxEntries, events.data(), &ts);
      if (r < 0) Fail("io_getevents while draining: %ld", r);
    }
  }

  void Destroy() {
    int ci = 0;
    Ctx& c = PickCtx(&ci);
    if (c.handle == nullptr) {
      ExpectKernelRefusal("io_destroy", io_destroy(nullptr));
      return;
    }
    // Not with a second thread reaping: it may hold events Drain waits for.
    const bool drain = in_.ConsumeBool() && !concurrent_;
    if (drain) Drain(ci);
    // Waits for what is in flight; their events are dropped.
    const int r = io_destroy(c.handle);
    Trace("io_destroy(context %d, %d outstanding) = %d", ci, c.outstanding, r);
    if (r != 0) Fail("io_destroy: %d", r);
    for (int s = 0; s < used_; ++s) {
      if (slots_[s].ctx == ci) {
        // A second thread may have reaped some of them meanwhile.
        slots_[s].dropped = concurrent_ ? slots_[s].outstanding : 0;
        slots_[s].outstanding = 0;
        slots_[s].cancelled = 0;
      }
    }
    c = Ctx{};
  }

  // fio --userspace_reap: events straight from the ring, when the context is
  // a ring in the kernel's layout (the threads engine's).
  void ReapRing() {
    int ci = 0;
    Ctx& c = PickCtx(&ci);
    if (c.handle == nullptr) return;
    auto* ring = reinterpret_cast<aiokit::internal::AioRing*>(c.handle);
    if (!aiokit::internal::AioRingUsable(ring)) {
      Fail("context %d: its ring header is not usable", ci);
    }
    const auto max = in_.ConsumeIntegralInRange<size_t>(0, kMaxEntries);
    // One consumer at a time: not while a second thread is in io_getevents.
    if (concurrent_) return;
    Trace("reap the ring of context %d in user space, up to %zu", ci, max);
    (void)aiokit::internal::ConsumeAioRing(
        ring, max, [&](const io_event& ev) { CheckEvent(ci, ev); });
  }

  // Calls on a NULL handle: not ours, so the kernel's answer.
  void UnknownHandle() {
    struct iocb cb = {};
    struct iocb* list[1] = {&cb};
    io_event ev{};
    timespec zero{};
    ExpectKernelRefusal("io_submit", io_submit(nullptr, 1, list));
    ExpectKernelRefusal("io_getevents",
                        aiokit_io_getevents_0_4(nullptr, 0, 1, &ev, &zero));
    ExpectKernelRefusal("io_cancel", aiokit_io_cancel_0_4(nullptr, &cb, &ev));
  }

  FuzzedDataProvider in_;
  std::array<Ctx, kContexts> ctx_{};
  std::array<Slot, kMaxSlots> slots_{};
  int used_ = 0;             // slots built
  int entries_ = 0;          // iocbs accepted, repeats included
  bool concurrent_ = false;  // a second thread is in io_getevents
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // Read at each io_setup; set before the first. Single-threaded here.
  ::setenv("AIOKIT_ENGINE", "threads", 1);  // NOLINT(concurrency-mt-unsafe)
  // The drop-in is compiled into this program, which so imports io_getevents
  // from no library: give it the engine anyway.
  ::setenv("AIOKIT_COMPAT_FORCE", "1", 1);  // NOLINT(concurrency-mt-unsafe)
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  trace = std::getenv("AIOKIT_FUZZ_TRACE") != nullptr;
  MakeFixture();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fx->Reset();
  Run run(data, size);
  run.Go();
  return 0;
}
