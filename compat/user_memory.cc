#include "user_memory.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace aiokit::compat {
namespace {

// How copies are made (see user_memory.h).
enum Mode : int {
  kPlain = -1,   // AIOKIT_COMPAT_CHECK_POINTERS=0, or the system calls refused
  kSyscall = 0,  // process_vm_readv/writev
  kCatcher = 1,  // a window the fault handler ends
};

int InitialMode() noexcept {
  // Read once, at load, before the program can call from two threads.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  const char* v = std::getenv("AIOKIT_COMPAT_CHECK_POINTERS");
  return v != nullptr && std::strcmp(v, "0") == 0 ? kPlain : kSyscall;
}
// Release when it becomes kCatcher, after g_prev_* are written; the acquire
// loads in the copies pair with it (the handler reads g_prev_* only after a
// copy saw kCatcher, or after the handler was installed by this thread).
std::atomic<int> g_mode{InitialMode()};

// The handlers that were there before ours: faults outside a window go there.
// Written under InstallFaultCatcher's lock; the handler reads them unlocked (a
// fault on another thread while an io_setup reinstalls ours could see one
// half written: accepted, against a lock no signal handler may take).
struct sigaction g_prev_segv {};
struct sigaction g_prev_bus {};

// The jump buffer of the window open on this thread, or null. Initial-exec TLS:
// the handler reads it, and a dynamic TLS access may allocate.
thread_local sigjmp_buf* t_window __attribute__((tls_model("initial-exec"))) =
    nullptr;

void DefaultAction(int sig) noexcept {
  // Put it back and return: the faulting instruction runs again and takes it.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  (void)sigaction(sig, &dfl, nullptr);
}

void OnFault(int sig, siginfo_t* info, void* uctx) {
  sigjmp_buf* window = t_window;
  // A fault of the copy (si_code > 0: raised by the kernel for this access,
  // not sent with kill).
  if (window != nullptr && info != nullptr && info->si_code > 0) {
    t_window = nullptr;
    siglongjmp(*window, 1);  // NOLINT(cert-err52-cpp): leaves only a copy loop
  }
  const struct sigaction& prev = sig == SIGBUS ? g_prev_bus : g_prev_segv;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, uctx);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  DefaultAction(sig);
}

// Copies `count` regions inside one window; returns how many were copied
// whole before a fault ended it. Word copies where the regions allow (iocbs,
// events, iovecs and pointers all do), volatile so that every access stays
// inside the window; not instrumented, since the sanitizers would check the
// bad address before the fault could be caught.
__attribute__((noinline, no_sanitize("address", "undefined"))) size_t
WindowCopy(const iovec* to, const iovec* from, size_t count) noexcept {
  volatile size_t done = 0;
  sigjmp_buf jb;
  // NOLINTNEXTLINE(cert-err52-cpp): the handler jumps back only from the loop
  if (sigsetjmp(jb, 0) != 0) return done;
  t_window = &jb;
  asm volatile("" ::: "memory");
  for (size_t k = 0; k < count; ++k) {
    const size_t n = from[k].iov_len;
    const auto s = reinterpret_cast<uintptr_t>(from[k].iov_base);
    const auto d = reinterpret_cast<uintptr_t>(to[k].iov_base);
    if (((s | d | n) & 7U) == 0) {
      auto* dw = reinterpret_cast<volatile uint64_t*>(d);
      const auto* sw = reinterpret_cast<const volatile uint64_t*>(s);
      for (size_t i = 0; i < n / 8; ++i) dw[i] = sw[i];
    } else {
      auto* db = reinterpret_cast<volatile unsigned char*>(d);
      const auto* sb = reinterpret_cast<const volatile unsigned char*>(s);
      for (size_t i = 0; i < n; ++i) db[i] = sb[i];
    }
    done = k + 1;
  }
  asm volatile("" ::: "memory");
  t_window = nullptr;
  return done;
}

// After a failed system call: false when the calls are refused here (a
// seccomp filter's EPERM, ENOSYS), which turns them off; true for a failure
// of the request itself (EFAULT for the address, or ENOMEM, EINVAL), which
// the caller reports as a bad pointer.
bool FailedOnTheAddress(int err) noexcept {
  if (err == EPERM || err == ENOSYS || err == ESRCH) {
    int expected = kSyscall;
    (void)g_mode.compare_exchange_strong(expected, kPlain,
                                         std::memory_order_relaxed);
    return false;
  }
  return true;
}

// Moves `count` regions with the system calls; how many leading regions were
// moved whole, or -1 when the calls are refused here.
long SyscallMove(bool write, const iovec* local, const iovec* remote,
                 size_t count) noexcept {
  const pid_t self = ::getpid();
  size_t done = 0;
  while (done < count) {
    const size_t chunk = std::min<size_t>(count - done, IOV_MAX);
    const ssize_t r = write ? ::process_vm_writev(self, local + done, chunk,
                                                  remote + done, chunk, 0)
                            : ::process_vm_readv(self, local + done, chunk,
                                                 remote + done, chunk, 0);
    if (r < 0) return FailedOnTheAddress(errno) ? static_cast<long>(done) : -1;
    // A short count stops at the first region it could not move whole.
    auto left = static_cast<size_t>(r);
    size_t whole = 0;
    while (whole < chunk && left >= remote[done + whole].iov_len) {
      left -= remote[done + whole].iov_len;
      ++whole;
    }
    done += whole;
    if (whole < chunk) break;
  }
  return static_cast<long>(done);
}

// `to` and `from` as the copy sees them: for a write the program's memory is
// the destination.
size_t Move(bool write, const iovec* to, const iovec* from,
            size_t count) noexcept {
  const int mode = g_mode.load(std::memory_order_acquire);
  if (mode == kCatcher) return WindowCopy(to, from, count);
  if (mode == kSyscall) {
    const long done = write ? SyscallMove(true, from, to, count)
                            : SyscallMove(false, to, from, count);
    if (done >= 0) return static_cast<size_t>(done);
  }
  for (size_t k = 0; k < count; ++k) {
    std::memcpy(to[k].iov_base, from[k].iov_base, from[k].iov_len);
  }
  return count;
}

}  // namespace

void InstallFaultCatcher() noexcept {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (g_mode.load(std::memory_order_relaxed) == kPlain) return;
  struct sigaction ours {};
  ours.sa_sigaction = &OnFault;
  // SA_NODEFER: the jump out leaves the signal mask as the window found it
  // (sigsetjmp saves no mask: that would be a system call per copy).
  ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&ours.sa_mask);
  // Each signal's handler now: if it is not ours (never installed, or the
  // program installed its own since), it becomes the one ours hands faults
  // outside a window to. Read first, so that a fault in between finds it.
  for (int sig : {SIGSEGV, SIGBUS}) {
    struct sigaction now {};
    if (sigaction(sig, nullptr, &now) != 0) return;
    if ((now.sa_flags & SA_SIGINFO) != 0 && now.sa_sigaction == &OnFault) {
      continue;
    }
    (sig == SIGBUS ? g_prev_bus : g_prev_segv) = now;
    if (sigaction(sig, &ours, nullptr) != 0) return;
  }
  g_mode.store(kCatcher, std::memory_order_release);
}

bool CopyFromUser(void* to, const void* from, size_t n) noexcept {
  if (n == 0) return true;
  const iovec t{to, n};
  const iovec f{const_cast<void*>(from), n};
  return Move(false, &t, &f, 1) == 1;
}

bool CopyToUser(void* to, const void* from, size_t n) noexcept {
  if (n == 0) return true;
  const iovec t{to, n};
  const iovec f{const_cast<void*>(from), n};
  return Move(true, &t, &f, 1) == 1;
}

size_t CopyRegionsFromUser(const iovec* to, const iovec* from,
                           size_t count) noexcept {
  return Move(false, to, from, count);
}

}  // namespace aiokit::compat
