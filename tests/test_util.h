// Helpers shared by aiokit's tests: scratch files, data patterns, engines by
// name (engines.h), exactly-once reaping and fault injection under the
// syscall layer.

#ifndef AIOKIT_TESTS_TEST_UTIL_H_
#define AIOKIT_TESTS_TEST_UTIL_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "engines.h"
#include "sys/syscalls.h"

namespace aiokit::testing {

// Where tests put their files: $AIOKIT_TEST_DIR, else /var/tmp (a disk file
// system, where O_DIRECT works; /tmp may be tmpfs).
inline std::string TestDir() {
  const char* d =
      std::getenv("AIOKIT_TEST_DIR");  // NOLINT(concurrency-mt-unsafe)
  return d != nullptr && *d != '\0' ? d : "/var/tmp";
}

// A deterministic byte pattern: byte i of a stream seeded `seed`.
inline char PatternByte(uint64_t seed, uint64_t i) {
  uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ULL + i * 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 31;
  return static_cast<char>(x & 0xff);
}
inline void FillPattern(char* p, size_t len, uint64_t seed,
                        uint64_t start = 0) {
  for (size_t i = 0; i < len; ++i) p[i] = PatternByte(seed, start + i);
}
// The index of the first byte that differs from the pattern, or -1.
inline int64_t FirstMismatch(const char* p, size_t len, uint64_t seed,
                             uint64_t start = 0) {
  for (size_t i = 0; i < len; ++i) {
    if (p[i] != PatternByte(seed, start + i)) return static_cast<int64_t>(i);
  }
  return -1;
}

// An unnamed scratch file of `size` bytes filled with the pattern `seed`,
// opened with `flags` (O_RDWR implied), e.g. O_DIRECT. Skips the test when the
// file system refuses O_DIRECT.
inline File ScratchFile(size_t size, uint64_t seed, int flags = 0) {
  Result<File> f = File::CreateTemporary(TestDir(), flags);
  if (!f.ok()) {
    ADD_FAILURE() << "scratch file in " << TestDir() << ": "
                  << f.status().ToString();
    return File();
  }
  if (size != 0) {
    // Written through a buffered descriptor of the same file, so that O_DIRECT
    // files get data too.
    std::string path = "/proc/self/fd/" + std::to_string(f->fd());
    const int wfd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    EXPECT_GE(wfd, 0);
    std::string data(size, '\0');
    FillPattern(data.data(), size, seed);
    EXPECT_EQ(::pwrite(wfd, data.data(), size, 0), static_cast<ssize_t>(size));
    EXPECT_EQ(::fsync(wfd), 0);
    ::close(wfd);
  }
  return std::move(*f);
}

// Reaps until `expected` requests have come back or `timeout` passes. Counts
// every return of every request, so that a test can check each came back
// exactly once.
struct Reaped {
  std::vector<Request*> order;
  std::map<Request*, int> times;
  Status error;
};
inline Reaped ReapAll(
    Engine& e, size_t expected,
    std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  Reaped out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::vector<Request*> buf(64);
  while (out.order.size() < expected) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left.count() <= 0) break;
    Result<size_t> r = e.Reap(
        buf, 1, std::chrono::duration_cast<std::chrono::nanoseconds>(left));
    if (!r.ok()) {
      out.error = r.status();
      break;
    }
    for (size_t i = 0; i < *r; ++i) {
      out.order.push_back(buf[i]);
      ++out.times[buf[i]];
    }
  }
  return out;
}

// Asserts that each of `reqs` came back exactly once and nothing else did.
inline void ExpectExactlyOnce(const Reaped& got,
                              const std::vector<Request*>& reqs) {
  EXPECT_EQ(got.order.size(), reqs.size()) << got.error.ToString();
  for (Request* r : reqs) {
    auto it = got.times.find(r);
    const int times = it == got.times.end() ? 0 : it->second;
    EXPECT_EQ(times, 1) << Describe(*r);
  }
  EXPECT_EQ(got.times.size(), reqs.size());
}

inline std::vector<Request*> Pointers(std::vector<Request>& reqs) {
  std::vector<Request*> p;
  p.reserve(reqs.size());
  for (Request& r : reqs) p.push_back(&r);
  return p;
}

// ---- Fault injection under the syscall layer. ----
// Test-wide knobs read by the hooks below (function pointers cannot capture).
struct FaultState {
  // io_submit: fail the next N calls with -EAGAIN.
  std::atomic<int> submit_eagain{0};
  // io_submit: fail every call with -EAGAIN while true.
  std::atomic<bool> submit_always_eagain{false};
  // io_submit: pass at most this many iocbs to the kernel per call (0: no
  // limit).
  std::atomic<long> submit_max{0};
  // io_setup: return this -errno instead of calling the kernel (0: pass
  // through).
  std::atomic<int> setup_errno{0};
  // io_uring_setup: return this -errno instead (0: pass through).
  std::atomic<int> uring_setup_errno{0};
  // The threads engine's Init: refuse with this errno (0: pass through).
  std::atomic<int> threads_init_errno{0};
  // io_uring_setup: the features to hide (e.g. IORING_FEAT_EXT_ARG).
  std::atomic<unsigned> uring_hide_features{0};
  // io_uring_register: fail this opcode (-1: none) with uring_register_errno.
  std::atomic<int> uring_register_opcode{-1};
  std::atomic<int> uring_register_errno{0};
  // ReadSmallFile: pretend /proc/sys/kernel/io_uring_disabled holds this
  // (empty: read the real one).
  std::string io_uring_disabled;
  std::atomic<int> submit_calls{0};
  std::atomic<int> getevents_calls{0};
};
inline FaultState& Faults() {
  static FaultState s;
  return s;
}

inline long HookIoSubmit(aio_context_t ctx, long nr, struct iocb** iocbs) {
  FaultState& f = Faults();
  f.submit_calls.fetch_add(1);
  if (f.submit_always_eagain.load()) return -EAGAIN;
  int left = f.submit_eagain.load();
  while (left > 0 && !f.submit_eagain.compare_exchange_weak(left, left - 1)) {
  }
  if (left > 0) return -EAGAIN;
  const long cap = f.submit_max.load();
  if (cap > 0 && nr > cap) nr = cap;
  return sys::real::IoSubmit(ctx, nr, iocbs);
}
// io_uring_enter with SQEs to submit: the same knobs as io_submit.
inline int HookUringEnter(unsigned* to_submit, unsigned /*min_complete*/,
                          unsigned /*flags*/) {
  if (*to_submit == 0) return 0;
  FaultState& f = Faults();
  f.submit_calls.fetch_add(1);
  if (f.submit_always_eagain.load()) return -EAGAIN;
  int left = f.submit_eagain.load();
  while (left > 0 && !f.submit_eagain.compare_exchange_weak(left, left - 1)) {
  }
  if (left > 0) return -EAGAIN;
  const long cap = f.submit_max.load();
  if (cap > 0 && *to_submit > static_cast<unsigned>(cap)) {
    *to_submit = static_cast<unsigned>(cap);
  }
  return 0;
}
inline int HookUserSubmit(unsigned* n) { return HookUringEnter(n, 0, 0); }
inline int HookThreadsInit() { return -Faults().threads_init_errno.load(); }
inline int HookUringSetup(unsigned /*entries*/, unsigned /*flags*/) {
  if (int e = Faults().uring_setup_errno.load(); e != 0) return -e;
  return 0;
}
inline unsigned HookUringFeatures(unsigned features) {
  return features & ~Faults().uring_hide_features.load();
}
inline int HookUringRegister(unsigned opcode) {
  FaultState& f = Faults();
  if (static_cast<int>(opcode) == f.uring_register_opcode.load()) {
    return -f.uring_register_errno.load();
  }
  return 0;
}
inline const char* HookReadFile(const char* path) {
  FaultState& f = Faults();
  if (!f.io_uring_disabled.empty() &&
      std::string(path) == "/proc/sys/kernel/io_uring_disabled") {
    return f.io_uring_disabled.c_str();
  }
  return nullptr;
}

inline long HookIoSetup(unsigned nr, aio_context_t* ctx) {
  if (int e = Faults().setup_errno.load(); e != 0) return -e;
  return sys::real::IoSetup(nr, ctx);
}
inline long HookIoGetevents(aio_context_t ctx, long min_nr, long nr,
                            io_event* ev, timespec* ts) {
  Faults().getevents_calls.fetch_add(1);
  return sys::real::IoGetevents(ctx, min_nr, nr, ev, ts);
}

// Installs the hooks for the life of the object and resets the knobs around it.
class ScopedFaults {
 public:
  ScopedFaults() {
    Reset();
    sys::SetFaultHooks(&TheHooks());
  }
  ~ScopedFaults() {
    sys::SetFaultHooks(nullptr);
    Reset();
  }
  ScopedFaults(const ScopedFaults&) = delete;
  ScopedFaults& operator=(const ScopedFaults&) = delete;
  FaultState& state() { return Faults(); }

 private:
  // Static and never written after it is made: an engine's thread that loaded
  // the pointer just before the destructor cleared it still reads valid hooks.
  static const sys::FaultHooks& TheHooks() {
    static const sys::FaultHooks hooks = [] {
      sys::FaultHooks h;
      h.io_submit = &HookIoSubmit;
      h.io_setup = &HookIoSetup;
      h.io_getevents = &HookIoGetevents;
      h.io_uring_setup = &HookUringSetup;
      h.io_uring_features = &HookUringFeatures;
      h.io_uring_enter = &HookUringEnter;
      h.io_uring_register = &HookUringRegister;
      h.user_submit = &HookUserSubmit;
      h.threads_init = &HookThreadsInit;
      h.read_file = &HookReadFile;
      return h;
    }();
    return hooks;
  }
  static void Reset() {
    FaultState& f = Faults();
    f.submit_eagain = 0;
    f.submit_always_eagain = false;
    f.submit_max = 0;
    f.setup_errno = 0;
    f.uring_setup_errno = 0;
    f.threads_init_errno = 0;
    f.uring_hide_features = 0;
    f.uring_register_opcode = -1;
    f.uring_register_errno = 0;
    f.io_uring_disabled.clear();
    f.submit_calls = 0;
    f.getevents_calls = 0;
  }
};

}  // namespace aiokit::testing

#endif  // AIOKIT_TESTS_TEST_UTIL_H_
