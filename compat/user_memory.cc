#include "user_memory.h"

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace aiokit::compat {
namespace {

// How copies are made (see user_memory.h).
enum Mode : int {
  kOff = -1,     // AIOKIT_COMPAT_CHECK_POINTERS=0: plain copies for good
  kUnarmed = 0,  // no engine context yet: plain copies, as libaio makes
  kCatcher = 1,  // a window the fault handler ends
};

int InitialMode() noexcept {
  // Read once, at load, before the program can call from two threads.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  const char* v = std::getenv("AIOKIT_COMPAT_CHECK_POINTERS");
  return v != nullptr && std::strcmp(v, "0") == 0 ? kOff : kUnarmed;
}
// Release when it becomes kCatcher, after g_prev_* are written; the acquire
// load in Move pairs with it.
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

void SetDefault(int sig) noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  (void)sigaction(sig, &dfl, nullptr);
}

void OnFault(int sig, siginfo_t* info, void* uctx) {
  // si_code > 0: raised by the kernel for an access of this thread, not sent
  // with kill, raise or pthread_kill.
  const bool fault = info != nullptr && info->si_code > 0;
  sigjmp_buf* window = t_window;
  if (window != nullptr && fault) {
    t_window = nullptr;
    siglongjmp(*window, 1);  // NOLINT(cert-err52-cpp): leaves only a copy loop
  }
  const struct sigaction& prev = sig == SIGBUS ? g_prev_bus : g_prev_segv;
  const bool has_action =
      (prev.sa_flags & SA_SIGINFO) != 0
          ? prev.sa_sigaction != nullptr
          : prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN;
  if (has_action) {
    // As the kernel would have called it: its mask, and the signal itself
    // unless SA_NODEFER, blocked while it runs.
    sigset_t mask = prev.sa_mask;
    if ((prev.sa_flags & SA_NODEFER) == 0) sigaddset(&mask, sig);
    sigset_t old;
    (void)pthread_sigmask(SIG_BLOCK, &mask, &old);
    if ((prev.sa_flags & SA_SIGINFO) != 0) {
      prev.sa_sigaction(sig, info, uctx);
    } else {
      prev.sa_handler(sig);
    }
    (void)pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return;
  }
  if (!fault) {
    // Sent, not raised by an access: ignored if it was, else its default
    // action, now.
    if (prev.sa_handler == SIG_IGN && (prev.sa_flags & SA_SIGINFO) == 0) return;
    SetDefault(sig);
    (void)raise(sig);
    return;
  }
  // A fault with no handler before ours (ignoring one is not possible): the
  // default action; the faulting instruction runs again and takes it.
  SetDefault(sig);
}

// Copies `count` regions inside one window; returns how many were copied
// whole before a fault ended it. Word copies where the regions allow (iocbs,
// events, iovecs and pointers all do), volatile so that every access stays
// inside the window; not instrumented, since the sanitizers would check the
// bad address before the fault could be caught. A window opened by a signal
// handler that interrupted another on this thread puts the outer one back.
__attribute__((noinline, no_sanitize("address", "undefined"))) size_t
WindowCopy(const iovec* to, const iovec* from, size_t count) noexcept {
  volatile size_t done = 0;
  sigjmp_buf* const outer = t_window;
  sigjmp_buf jb;
  // NOLINTNEXTLINE(cert-err52-cpp): the handler jumps back only from the loop
  if (sigsetjmp(jb, 0) != 0) {
    t_window = outer;
    return done;
  }
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
  t_window = outer;
  return done;
}

size_t Move(const iovec* to, const iovec* from, size_t count) noexcept {
  if (g_mode.load(std::memory_order_acquire) == kCatcher) {
    return WindowCopy(to, from, count);
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
  if (g_mode.load(std::memory_order_relaxed) == kOff) return;
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
  return Move(&t, &f, 1) == 1;
}

bool CopyToUser(void* to, const void* from, size_t n) noexcept {
  if (n == 0) return true;
  const iovec t{to, n};
  const iovec f{const_cast<void*>(from), n};
  return Move(&t, &f, 1) == 1;
}

size_t CopyRegionsFromUser(const iovec* to, const iovec* from,
                           size_t count) noexcept {
  return Move(to, from, count);
}

}  // namespace aiokit::compat
