#include "sys/syscalls.h"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace aiokit::sys {

namespace detail {
std::atomic<const FaultHooks*> g_hooks{nullptr};
}  // namespace detail

void SetFaultHooks(const FaultHooks* hooks) noexcept {
  // Release pairs with the acquire in Hooks(): whatever the test set up before
  // installing the hooks is visible to the engine thread that calls them.
  detail::g_hooks.store(hooks, std::memory_order_release);
}

namespace {

// syscall(2) returns -1 and sets errno; fold that into -errno.
inline long Ret(long r) noexcept { return r < 0 ? -errno : r; }

template <typename F>
inline long RetryEintr(F call) noexcept {
  long r = 0;
  do {
    r = Ret(call());
  } while (r == -EINTR);
  return r;
}

}  // namespace

namespace real {

long IoSetup(unsigned nr_events, aio_context_t* ctx) noexcept {
  return Ret(syscall(SYS_io_setup, nr_events, ctx));
}
long IoDestroy(aio_context_t ctx) noexcept {
  return Ret(syscall(SYS_io_destroy, ctx));
}
long IoSubmit(aio_context_t ctx, long nr, struct iocb** iocbs) noexcept {
  return Ret(syscall(SYS_io_submit, ctx, nr, iocbs));
}
long IoGetevents(aio_context_t ctx, long min_nr, long nr, io_event* events,
                 timespec* timeout) noexcept {
  // Not retried on EINTR: the caller owns the deadline.
  return Ret(syscall(SYS_io_getevents, ctx, min_nr, nr, events, timeout));
}
long IoCancel(aio_context_t ctx, struct iocb* iocb, io_event* result) noexcept {
  return Ret(syscall(SYS_io_cancel, ctx, iocb, result));
}
long IoPgetevents(aio_context_t ctx, long min_nr, long nr, io_event* events,
                  timespec* timeout, const void* usig) noexcept {
  return Ret(
      syscall(SYS_io_pgetevents, ctx, min_nr, nr, events, timeout, usig));
}

}  // namespace real

int Open(const char* path, int flags, mode_t mode) noexcept {
  return static_cast<int>(
      RetryEintr([&] { return ::open(path, flags, mode); }));
}
int Close(int fd) noexcept { return static_cast<int>(Ret(::close(fd))); }
int Eventfd(unsigned initval, int flags) noexcept {
  return static_cast<int>(Ret(::eventfd(initval, flags)));
}
long EventfdRead(int fd, uint64_t* value) noexcept {
  return RetryEintr([&] { return ::read(fd, value, sizeof(*value)); });
}
long EventfdWrite(int fd, uint64_t value) noexcept {
  return RetryEintr([&] { return ::write(fd, &value, sizeof(value)); });
}
int Pipe2(int fds[2], int flags) noexcept {
  return static_cast<int>(Ret(::pipe2(fds, flags)));
}
int Fstat(int fd, struct stat* st) noexcept {
  return static_cast<int>(Ret(::fstat(fd, st)));
}
int Stat(const char* path, struct stat* st) noexcept {
  return static_cast<int>(Ret(::stat(path, st)));
}
int MemlockLimit(uint64_t* soft, uint64_t* hard) noexcept {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_MEMLOCK, &rl) != 0) return -errno;
  *soft = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : rl.rlim_cur;
  *hard = rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : rl.rlim_max;
  return 0;
}
int Statx(int dirfd, const char* path, int flags, unsigned mask,
          struct statx* out) noexcept {
  // Through syscall(2) so that the kernel's struct statx (with the DIO
  // alignment fields, which glibc 2.36's copy lacks) is filled.
  return static_cast<int>(RetryEintr(
      [&] { return syscall(SYS_statx, dirfd, path, flags, mask, out); }));
}
int Ioctl(int fd, unsigned long request, void* arg) noexcept {
  return static_cast<int>(
      RetryEintr([&] { return ::ioctl(fd, request, arg); }));
}
int DupCloexec(int fd) noexcept {
  return static_cast<int>(Ret(::fcntl(fd, F_DUPFD_CLOEXEC, 0)));
}

int Fcntl(int fd, int cmd) noexcept {
  return static_cast<int>(Ret(::fcntl(fd, cmd)));
}
int Unlink(const char* path) noexcept {
  return static_cast<int>(Ret(::unlink(path)));
}
int Mkostemp(char* path_template, int flags) noexcept {
  return static_cast<int>(Ret(::mkostemp(path_template, flags)));
}
long Pread(int fd, void* buf, size_t len, off_t off) noexcept {
  return RetryEintr([&] { return ::pread(fd, buf, len, off); });
}
long Pwrite(int fd, const void* buf, size_t len, off_t off) noexcept {
  return RetryEintr([&] { return ::pwrite(fd, buf, len, off); });
}
long Preadv2(int fd, const struct iovec* iov, int n, off_t off,
             int flags) noexcept {
  return RetryEintr([&] { return ::preadv2(fd, iov, n, off, flags); });
}
long Pwritev2(int fd, const struct iovec* iov, int n, off_t off,
              int flags) noexcept {
  return RetryEintr([&] { return ::pwritev2(fd, iov, n, off, flags); });
}
int Fsync(int fd) noexcept {
  return static_cast<int>(RetryEintr([&] { return ::fsync(fd); }));
}
int Fdatasync(int fd) noexcept {
  return static_cast<int>(RetryEintr([&] { return ::fdatasync(fd); }));
}
int IoprioSetThread(int prio) noexcept {
  constexpr int kIoprioWhoProcess = 1;  // with id 0: the calling thread
  return static_cast<int>(
      Ret(syscall(SYS_ioprio_set, kIoprioWhoProcess, 0, prio)));
}
int IoprioGetThread() noexcept {
  constexpr int kIoprioWhoProcess = 1;
  return static_cast<int>(Ret(syscall(SYS_ioprio_get, kIoprioWhoProcess, 0)));
}
int FutexWait(const uint32_t* addr, uint32_t expected,
              std::chrono::nanoseconds timeout) noexcept {
  timespec ts;
  timespec* tsp = nullptr;
  if (timeout.count() >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
    tsp = &ts;
  }
  // Relative timeout; EINTR is returned to the caller, who owns the deadline.
  return static_cast<int>(Ret(
      syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, tsp, nullptr, 0)));
}
int FutexWake(const uint32_t* addr, int count) noexcept {
  return static_cast<int>(Ret(syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE,
                                      count, nullptr, nullptr, 0)));
}
int ThreadId() noexcept {
  // A thread's id never changes: asked once per thread (gettid is a system
  // call, and the io_uring engine asks on its reaping path).
  thread_local const int tid = static_cast<int>(::gettid());
  return tid;
}
int Fallocate(int fd, int mode, off_t off, off_t len) noexcept {
  return static_cast<int>(
      RetryEintr([&] { return ::fallocate(fd, mode, off, len); }));
}
int Ftruncate(int fd, off_t len) noexcept {
  return static_cast<int>(RetryEintr([&] { return ::ftruncate(fd, len); }));
}

int SetRwHint(int fd, uint64_t hint) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->set_rw_hint != nullptr) [[unlikely]] {
    if (int r = h->set_rw_hint(fd, hint); r < 0) return r;
  }
  return static_cast<int>(Ret(::fcntl(fd, F_SET_RW_HINT, &hint)));
}
int GetRwHint(int fd, uint64_t* hint) noexcept {
  return static_cast<int>(Ret(::fcntl(fd, F_GET_RW_HINT, hint)));
}

namespace {
// The kernel's struct statx as of Linux 6.16 (include/uapi/linux/stat.h):
// 256 bytes, the fields after stx_dio_offset_align newer than glibc 2.36.
struct KernelStatx {
  uint32_t mask;
  uint32_t blksize;
  uint64_t attributes;
  uint32_t nlink, uid, gid;
  uint16_t mode, pad0;
  uint64_t ino, size, blocks, attributes_mask;
  uint8_t timestamps[64];  // atime, btime, ctime, mtime
  uint32_t rdev_major, rdev_minor, dev_major, dev_minor;
  uint64_t mnt_id;
  uint32_t dio_mem_align;
  uint32_t dio_offset_align;
  uint64_t subvol;
  uint32_t atomic_write_unit_min;
  uint32_t atomic_write_unit_max;
  uint32_t atomic_write_segments_max;
  uint32_t dio_read_offset_align;
  uint32_t atomic_write_unit_max_opt;
  uint32_t pad2;
  uint64_t spare[8];
};
static_assert(sizeof(KernelStatx) == 256);
static_assert(offsetof(KernelStatx, dio_mem_align) == 0x98);
static_assert(offsetof(KernelStatx, atomic_write_unit_min) == 0xa8);
}  // namespace

int StatxLimitsOf(int fd, StatxLimits* out) noexcept {
  KernelStatx k;
  std::memset(&k, 0, sizeof(k));
  const long r = RetryEintr([&] {
    return syscall(SYS_statx, fd, "", AT_EMPTY_PATH,
                   kStatxDioAlign | kStatxWriteAtomic | kStatxDioReadAlign, &k);
  });
  if (r < 0) return static_cast<int>(r);
  *out = StatxLimits{};
  out->mask = k.mask;
  out->attributes = k.attributes;
  if ((k.mask & kStatxDioAlign) != 0) {
    out->dio_mem_align = k.dio_mem_align;
    out->dio_offset_align = k.dio_offset_align;
  }
  if ((k.mask & kStatxDioReadAlign) != 0) {
    out->dio_read_offset_align = k.dio_read_offset_align;
  }
  if ((k.mask & kStatxWriteAtomic) != 0) {
    out->atomic_write_unit_min = k.atomic_write_unit_min;
    out->atomic_write_unit_max = k.atomic_write_unit_max;
    out->atomic_write_segments_max = k.atomic_write_segments_max;
  }
  return 0;
}

KernelVersion RunningKernel() noexcept {
  KernelVersion v;
  struct utsname u;
  if (::uname(&u) != 0) return v;
  // "6.18.44-fc-v445": major.minor[.patch] then anything.
  const char* p = u.release;
  int* fields[] = {&v.major, &v.minor, &v.patch};
  for (int* field : fields) {
    char* end = nullptr;
    const long n = std::strtol(p, &end, 10);
    if (end == p || n < 0 || n > 100000) break;
    *field = static_cast<int>(n);
    p = end;
    if (*p != '.') break;
    ++p;
  }
  return v;
}

std::string KernelRelease() {
  struct utsname u;
  if (::uname(&u) != 0) return "unknown";
  return u.release;
}

std::string Machine() {
  struct utsname u;
  if (::uname(&u) != 0) return "unknown";
  return u.machine;
}

std::string ReadSmallFile(const char* path) {
  if (const FaultHooks* h = Hooks(); h != nullptr && h->read_file != nullptr) {
    if (const char* fake = h->read_file(path)) return fake;
  }
  std::string out;
  int fd = Open(path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) return out;
  char buf[256];
  long n = 0;
  while ((n = RetryEintr([&] { return ::read(fd, buf, sizeof(buf)); })) > 0) {
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > size_t{64} * 1024) break;
  }
  Close(fd);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
    out.pop_back();
  return out;
}

}  // namespace aiokit::sys
