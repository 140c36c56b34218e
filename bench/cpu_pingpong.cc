// How long a cache line takes to go from one CPU to another and back: two
// threads, pinned to two CPUs, hand a counter to each other. On a VM the
// figure moves with where the host runs the virtual CPUs (about 80 ns when
// they share a cache, 400 ns and more when they do not), and every engine
// that hands a request to a worker thread pays it several times per I/O,
// while threads that each do their own pread do not. scripts/compare_fio.py
// prints it for every round, so that a slow round can be told from a slow
// engine.
//
// Usage: cpu_pingpong [CPU_A CPU_B [ROUND_TRIPS]]   (default: 0 1 500000)
// Prints the mean round trip in nanoseconds, or a reason and exit status 1.

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "parse_count.h"

namespace {

using aiokit::bench::ParseCount;

struct alignas(64) Line {
  std::atomic<long> value{0};
};

Line g_line;

bool Pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  const int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  if (err != 0) {
    std::fprintf(stderr, "cpu_pingpong: cannot run on CPU %d (error %d)\n", cpu,
                 err);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const long cpu_a = argc > 1 ? ParseCount(argv[1]) : 0;
  const long cpu_b = argc > 2 ? ParseCount(argv[2]) : 1;
  const long trips = argc > 3 ? ParseCount(argv[3]) : 500000;
  if (cpu_a < 0 || cpu_b < 0 || cpu_a >= CPU_SETSIZE || cpu_b >= CPU_SETSIZE ||
      cpu_a == cpu_b || trips <= 0) {
    std::fprintf(stderr,
                 "usage: cpu_pingpong [CPU_A CPU_B [ROUND_TRIPS]] (two "
                 "different CPUs, a positive count)\n");
    return 1;
  }
  std::atomic<bool> pinned_ok{true};
  std::thread other([&] {
    if (!Pin(static_cast<int>(cpu_b))) {
      pinned_ok = false;
      g_line.value.store(-1, std::memory_order_release);
      return;
    }
    for (long i = 0; i < trips; ++i) {
      long v = 0;
      while ((v = g_line.value.load(std::memory_order_acquire)) != 2 * i + 1) {
        if (v < 0) return;
      }
      g_line.value.store(2 * i + 2, std::memory_order_release);
    }
  });
  if (!Pin(static_cast<int>(cpu_a))) {
    g_line.value.store(-1, std::memory_order_release);
    other.join();
    return 1;
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < trips && pinned_ok; ++i) {
    g_line.value.store(2 * i + 1, std::memory_order_release);
    long v = 0;
    while ((v = g_line.value.load(std::memory_order_acquire)) != 2 * i + 2) {
      if (v < 0) break;
    }
  }
  const auto t1 = std::chrono::steady_clock::now();
  other.join();
  if (!pinned_ok) return 1;
  std::printf("%.1f\n",
              std::chrono::duration<double, std::nano>(t1 - t0).count() /
                  static_cast<double>(trips));
  return 0;
}
