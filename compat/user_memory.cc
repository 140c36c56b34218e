#include "user_memory.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

namespace aiokit::compat {
namespace {

// process_vm_readv/writev on our own pid: the kernel copies with its own
// fault handling and reports EFAULT instead of a signal. 0: usable; -1:
// refused here (plain copies from then on).
std::atomic<int> g_usable{0};

bool Usable() noexcept { return g_usable.load(std::memory_order_relaxed) >= 0; }

// After a failed call: false when the calls are refused here (a seccomp
// filter's EPERM, ENOSYS), which turns them off; true for a failure of the
// request itself (EFAULT for the address, or ENOMEM, EINVAL), which the
// caller reports as a bad pointer.
bool FailedOnTheAddress(int err) noexcept {
  if (err == EPERM || err == ENOSYS || err == ESRCH) {
    g_usable.store(-1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

// Moves `count` regions; the number of bytes moved, or -1 with errno.
ssize_t Move(bool write, const iovec* local, const iovec* remote,
             size_t count) noexcept {
  const pid_t self = ::getpid();
  return write ? ::process_vm_writev(self, local, count, remote, count, 0)
               : ::process_vm_readv(self, local, count, remote, count, 0);
}

bool CopyOne(bool write, void* to, const void* from, size_t n) noexcept {
  if (n == 0) return true;
  if (Usable()) {
    iovec local{write ? const_cast<void*>(from) : to, n};
    iovec remote{write ? to : const_cast<void*>(from), n};
    const ssize_t r = Move(write, &local, &remote, 1);
    if (r == static_cast<ssize_t>(n)) return true;
    if (r >= 0 || FailedOnTheAddress(errno)) return false;
  }
  std::memcpy(to, from, n);
  return true;
}

}  // namespace

bool CopyFromUser(void* to, const void* from, size_t n) noexcept {
  return CopyOne(false, to, from, n);
}

bool CopyToUser(void* to, const void* from, size_t n) noexcept {
  return CopyOne(true, to, from, n);
}

size_t CopyRegionsFromUser(const iovec* to, const iovec* from,
                           size_t count) noexcept {
  size_t done = 0;
  while (done < count && Usable()) {
    const size_t chunk = std::min<size_t>(count - done, IOV_MAX);
    const ssize_t r = Move(false, to + done, from + done, chunk);
    if (r < 0) {
      if (FailedOnTheAddress(errno)) return done;
      break;  // refused here: plain copies below
    }
    // A short count stops at the first region it could not read whole.
    auto left = static_cast<size_t>(r);
    size_t whole = 0;
    while (whole < chunk && left >= from[done + whole].iov_len) {
      left -= from[done + whole].iov_len;
      ++whole;
    }
    done += whole;
    if (whole < chunk) return done;
  }
  for (; done < count; ++done) {
    std::memcpy(to[done].iov_base, from[done].iov_base, from[done].iov_len);
  }
  return done;
}

}  // namespace aiokit::compat
