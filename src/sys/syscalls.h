// Thin wrappers around the system calls aiokit makes. The only place errno is
// read.
//
// Each wrapper returns the call's value, or -errno on failure. EINTR is retried
// where that is safe (the call has no timeout to recompute); callers with
// deadlines handle -EINTR themselves.
//
// The AIO calls can be intercepted by tests through FaultHooks: a hook sits
// between the engine and the kernel and may fail, shorten or delay a call, or
// pass it on to `real::`. With no hooks installed the cost is one
// relaxed-acquire load and a predictable branch.

#ifndef AIOKIT_SRC_SYS_SYSCALLS_H_
#define AIOKIT_SRC_SYS_SYSCALLS_H_

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <linux/stat.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace aiokit::sys {

// The kernel's AIO calls, unintercepted.
namespace real {
long IoSetup(unsigned nr_events, aio_context_t* ctx) noexcept;
long IoDestroy(aio_context_t ctx) noexcept;
long IoSubmit(aio_context_t ctx, long nr, struct iocb** iocbs) noexcept;
long IoGetevents(aio_context_t ctx, long min_nr, long nr, io_event* events,
                 timespec* timeout) noexcept;
long IoCancel(aio_context_t ctx, struct iocb* iocb, io_event* result) noexcept;
// `usig` is the kernel's struct __aio_sigset (the mask and its size), or null.
long IoPgetevents(aio_context_t ctx, long min_nr, long nr, io_event* events,
                  timespec* timeout, const void* usig) noexcept;
}  // namespace real

// Replacement functions for tests. A null member passes the call through to
// real::.
struct FaultHooks {
  long (*io_setup)(unsigned nr_events, aio_context_t* ctx) = nullptr;
  long (*io_destroy)(aio_context_t ctx) = nullptr;
  long (*io_submit)(aio_context_t ctx, long nr, struct iocb** iocbs) = nullptr;
  long (*io_getevents)(aio_context_t ctx, long min_nr, long nr,
                       io_event* events, timespec* timeout) = nullptr;
  long (*io_cancel)(aio_context_t ctx, struct iocb* iocb,
                    io_event* result) = nullptr;

  // io_uring (see sys/uring.h). These filter a call instead of replacing it:
  // return 0 to let it through, or -errno to fail it without calling.
  // Before io_uring_setup:
  int (*io_uring_setup)(unsigned entries, unsigned flags) = nullptr;
  // After a successful io_uring_setup: the features to report (mask some to
  // pretend an older kernel).
  unsigned (*io_uring_features)(unsigned features) = nullptr;
  // Before io_uring_enter; may lower *to_submit (a partial submission).
  int (*io_uring_enter)(unsigned* to_submit, unsigned min_complete,
                        unsigned flags) = nullptr;
  // Before io_uring_register (opcode IORING_REGISTER_*).
  int (*io_uring_register)(unsigned opcode) = nullptr;

  // A submission that makes no system call (the threads engine taking ring
  // slots and queueing n requests; the sync engine running them): may lower
  // *n (a partial submission) or return -errno (EAGAIN) to fail it; 0 to let
  // it through.
  int (*user_submit)(unsigned* n) = nullptr;
  // The threads engine's Init: -errno to refuse it (as when no thread can be
  // created), 0 to let it through.
  int (*threads_init)() = nullptr;

  // ReadSmallFile: the text to return for `path` instead of reading it, or
  // nullptr to read it (fakes /proc/sys values such as fs.aio-max-nr).
  const char* (*read_file)(const char* path) = nullptr;

  // SetRwHint: -errno to refuse it (as a kernel without write hints), 0 to
  // let it through.
  int (*set_rw_hint)(int fd, uint64_t hint) = nullptr;
};

namespace detail {
extern std::atomic<const FaultHooks*> g_hooks;
}  // namespace detail

// Installs `hooks` (nullptr removes them). The object must outlive its
// installation. Install before the engine under test is created and remove
// after it is destroyed: calls in progress are not waited for.
void SetFaultHooks(const FaultHooks* hooks) noexcept;

inline const FaultHooks* Hooks() noexcept {
  // Acquire pairs with the release store in SetFaultHooks, so a hook's own
  // state is visible.
  return detail::g_hooks.load(std::memory_order_acquire);
}

inline long IoSetup(unsigned nr_events, aio_context_t* ctx) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_setup != nullptr) [[unlikely]] {
    return h->io_setup(nr_events, ctx);
  }
  return real::IoSetup(nr_events, ctx);
}
inline long IoDestroy(aio_context_t ctx) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_destroy != nullptr) [[unlikely]] {
    return h->io_destroy(ctx);
  }
  return real::IoDestroy(ctx);
}
inline long IoSubmit(aio_context_t ctx, long nr, struct iocb** iocbs) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_submit != nullptr) [[unlikely]] {
    return h->io_submit(ctx, nr, iocbs);
  }
  return real::IoSubmit(ctx, nr, iocbs);
}
inline long IoGetevents(aio_context_t ctx, long min_nr, long nr,
                        io_event* events, timespec* timeout) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_getevents != nullptr) [[unlikely]] {
    return h->io_getevents(ctx, min_nr, nr, events, timeout);
  }
  return real::IoGetevents(ctx, min_nr, nr, events, timeout);
}
inline long IoCancel(aio_context_t ctx, struct iocb* iocb,
                     io_event* result) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_cancel != nullptr) [[unlikely]] {
    return h->io_cancel(ctx, iocb, result);
  }
  return real::IoCancel(ctx, iocb, result);
}

// ---- Descriptors and files. ----
int Open(const char* path, int flags, mode_t mode) noexcept;
int Close(int fd) noexcept;  // never retried: the fd is gone either way
int Eventfd(unsigned initval, int flags) noexcept;
// One 8-byte eventfd read or write.
long EventfdRead(int fd, uint64_t* value) noexcept;
long EventfdWrite(int fd, uint64_t value) noexcept;
int Pipe2(int fds[2], int flags) noexcept;
int Fstat(int fd, struct stat* st) noexcept;
int Stat(const char* path, struct stat* st) noexcept;
// RLIMIT_MEMLOCK in bytes (UINT64_MAX for no limit): 0 or -errno.
int MemlockLimit(uint64_t* soft, uint64_t* hard) noexcept;
int Statx(int dirfd, const char* path, int flags, unsigned mask,
          struct statx* out) noexcept;
int Ioctl(int fd, unsigned long request, void* arg) noexcept;
int Fcntl(int fd, int cmd) noexcept;
// A new descriptor for the same open file (F_DUPFD_CLOEXEC), or -errno.
int DupCloexec(int fd) noexcept;
int Unlink(const char* path) noexcept;
// mkostemp(3): the descriptor, or -errno.
int Mkostemp(char* path_template, int flags) noexcept;
long Pread(int fd, void* buf, size_t len, off_t off) noexcept;
long Pwrite(int fd, const void* buf, size_t len, off_t off) noexcept;
int Fallocate(int fd, int mode, off_t off, off_t len) noexcept;
// preadv2/pwritev2 (flags: RWF_*): bytes or -errno; EINTR retried.
long Preadv2(int fd, const struct iovec* iov, int n, off_t off,
             int flags) noexcept;
long Pwritev2(int fd, const struct iovec* iov, int n, off_t off,
              int flags) noexcept;
int Fsync(int fd) noexcept;
int Fdatasync(int fd) noexcept;
// ioprio_set(IOPRIO_WHO_PROCESS, 0 = the calling thread, prio).
int IoprioSetThread(int prio) noexcept;
// ioprio_get(IOPRIO_WHO_PROCESS, 0): the calling thread's I/O priority, or
// -errno.
int IoprioGetThread() noexcept;
// FUTEX_WAIT_PRIVATE on *addr while it holds `expected`, up to `timeout`
// (negative: no limit): 0, or -errno (EAGAIN: the value differed; ETIMEDOUT).
int FutexWait(const uint32_t* addr, uint32_t expected,
              std::chrono::nanoseconds timeout) noexcept;
// FUTEX_WAKE_PRIVATE: threads woken, or -errno.
int FutexWake(const uint32_t* addr, int count) noexcept;
// The thread id (gettid).
int ThreadId() noexcept;
int Ftruncate(int fd, off_t len) noexcept;
// fcntl(F_SET_RW_HINT) and fcntl(F_GET_RW_HINT): the inode's write lifetime
// hint (RWH_WRITE_LIFE_*). 0 or -errno; SetRwHint goes through the hook.
int SetRwHint(int fd, uint64_t hint) noexcept;
int GetRwHint(int fd, uint64_t* hint) noexcept;

// What statx says of O_DIRECT and atomic writes, including the fields newer
// than the C library's struct statx (read with the raw system call). A field
// whose mask bit is not in `mask` is 0.
struct StatxLimits {
  uint32_t mask = 0;
  uint64_t attributes = 0;
  uint32_t dio_mem_align = 0;
  uint32_t dio_offset_align = 0;
  uint32_t dio_read_offset_align = 0;  // 0: dio_offset_align applies
  uint32_t atomic_write_unit_min = 0;
  uint32_t atomic_write_unit_max = 0;
  uint32_t atomic_write_segments_max = 0;
};
inline constexpr unsigned kStatxDioAlign = 0x2000;       // Linux 6.1
inline constexpr unsigned kStatxWriteAtomic = 0x10000;   // Linux 6.11
inline constexpr unsigned kStatxDioReadAlign = 0x20000;  // Linux 6.14
inline constexpr uint64_t kStatxAttrWriteAtomic = 0x400000;
// 0 or -errno.
int StatxLimitsOf(int fd, StatxLimits* out) noexcept;

struct KernelVersion {
  int major = 0;
  int minor = 0;
  int patch = 0;
  [[nodiscard]] bool AtLeast(int ma, int mi) const noexcept {
    return major > ma || (major == ma && minor >= mi);
  }
};
// The running kernel's version from uname(2) (0.0.0 if unreadable), and its
// full release string.
KernelVersion RunningKernel() noexcept;
std::string KernelRelease();
// uname's machine ("x86_64").
std::string Machine();

// The text of a file such as /proc/sys/fs/aio-max-nr without its trailing
// newline, or "" if unreadable.
std::string ReadSmallFile(const char* path);

}  // namespace aiokit::sys

#endif  // AIOKIT_SRC_SYS_SYSCALLS_H_
