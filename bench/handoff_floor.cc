// What two CPUs can do with buffered 4 KiB random reads of a cached file, with
// nothing but the reads and the least hand-over there is. It puts the threads
// engine's row against `fio --ioengine=psync --numjobs=2` in proportion:
//
//   own-fd     two threads, each with its own open() of the file and its own
//              buffer, pread in a loop (what fio's psync x2 does, without
//              fio's bookkeeping);
//   shared-fd  the same on one descriptor, as one process with one open file
//              does (the struct file's reference count and read-ahead state
//              are then written by both CPUs);
//   handoff    one thread keeps `depth` reads in flight on 32 buffers, hands
//              reads to one worker through a ring of 16-byte descriptors
//              (at most `share` outstanding there), runs the others itself,
//              and takes the worker's completions back through another ring:
//              the floor for any engine that gives work to another thread.
//
// Usage: handoff_floor FILE [SECONDS [SHARE]]   (default: 2 s, share 16)
// FILE must be at least 1 GiB and in the page cache (cat it first). Prints
// one line per mode: IOPS and, for handoff, the worker's share of the reads.

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "parse_count.h"

namespace {

using aiokit::bench::ParseCount;

constexpr size_t kBlock = 4096;
constexpr uint64_t kBlocks = (uint64_t{1} << 30) / kBlock;
constexpr unsigned kDepth = 32;

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const char* what, const char* path, uint64_t off) {
  std::fprintf(stderr, "handoff_floor: %s %s at offset %llu: errno %d\n", what,
               path, static_cast<unsigned long long>(off), errno);
  _exit(1);  // threads may be running: no exit handlers
}

void ReadBlock(int fd, char* buf, uint64_t off, const char* path) {
  const ssize_t n = pread(fd, buf, kBlock, static_cast<off_t>(off));
  if (n != static_cast<ssize_t>(kBlock)) {
    if (n >= 0) errno = EIO;  // short: the file is below 1 GiB
    Die("pread", path, off);
  }
}

char* Buffers(size_t n) {
  void* p = std::aligned_alloc(kBlock, n * kBlock);
  if (p == nullptr) {
    std::fprintf(stderr, "handoff_floor: out of memory\n");
    _exit(1);
  }
  return static_cast<char*>(p);
}

double TwoReaders(const char* path, bool own_fd, long seconds) {
  const int shared = open(path, O_RDONLY | O_CLOEXEC);
  if (shared < 0) Die("open", path, 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> total{0};
  auto body = [&](unsigned seed) {
    const int fd = own_fd ? open(path, O_RDONLY | O_CLOEXEC) : shared;
    if (fd < 0) Die("open", path, 0);
    char* buf = Buffers(1);
    std::mt19937_64 rng(seed);
    uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      ReadBlock(fd, buf, (rng() % kBlocks) * kBlock, path);
      ++n;
    }
    total.fetch_add(n);
    std::free(buf);
    if (own_fd) close(fd);
  };
  std::thread a(body, 1);
  std::thread b(body, 2);
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  a.join();
  b.join();
  close(shared);
  return static_cast<double>(total.load()) / static_cast<double>(seconds);
}

struct Desc {
  uint32_t slot;
  uint64_t off;
};

// One producer, one consumer.
class Ring {
 public:
  bool Push(Desc d) {
    const uint32_t t = tail_.load(std::memory_order_relaxed);
    if (t - head_.load(std::memory_order_acquire) == kSize) return false;
    slots_[t % kSize] = d;
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }
  bool Pop(Desc* d) {
    const uint32_t h = head_.load(std::memory_order_relaxed);
    if (h == tail_.load(std::memory_order_acquire)) return false;
    *d = slots_[h % kSize];
    head_.store(h + 1, std::memory_order_release);
    return true;
  }
  uint32_t Size() const {
    return tail_.load(std::memory_order_acquire) -
           head_.load(std::memory_order_acquire);
  }

 private:
  static constexpr uint32_t kSize = 64;
  alignas(64) std::atomic<uint32_t> head_{0};
  alignas(64) std::atomic<uint32_t> tail_{0};
  alignas(64) Desc slots_[kSize];
};

double Handoff(const char* path, long seconds, unsigned share, double* worker) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) Die("open", path, 0);
  char* bufs = Buffers(kDepth);
  Ring to_worker;
  Ring to_main;
  std::atomic<bool> stop{false};
  uint64_t by_worker = 0;
  std::thread w([&] {
    Desc d{};
    while (!stop.load(std::memory_order_relaxed)) {
      if (!to_worker.Pop(&d)) continue;
      ReadBlock(fd, bufs + d.slot * kBlock, d.off, path);
      ++by_worker;
      while (!to_main.Push(d)) {
      }
    }
  });
  std::mt19937_64 rng(3);
  uint64_t done = 0;
  uint32_t idle[kDepth];
  unsigned n_idle = kDepth;
  for (unsigned i = 0; i < kDepth; ++i) idle[i] = i;
  const Clock::time_point end = Clock::now() + std::chrono::seconds(seconds);
  for (;;) {
    Desc d{};
    while (to_main.Pop(&d)) {
      idle[n_idle++] = d.slot;
      ++done;
    }
    if ((done & 1023U) == 0 && Clock::now() >= end) break;
    if (n_idle == 0) continue;
    d = Desc{idle[--n_idle], (rng() % kBlocks) * kBlock};
    if (to_worker.Size() < share && to_worker.Push(d)) continue;
    ReadBlock(fd, bufs + d.slot * kBlock, d.off, path);
    idle[n_idle++] = d.slot;
    ++done;
  }
  stop = true;
  w.join();
  close(fd);
  std::free(bufs);
  *worker = done == 0
                ? 0
                : static_cast<double>(by_worker) / static_cast<double>(done);
  return static_cast<double>(done) / static_cast<double>(seconds);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: handoff_floor FILE [SECONDS [SHARE]]\n");
    return 2;
  }
  const char* path = argv[1];
  const long seconds = argc > 2 ? ParseCount(argv[2]) : 2;
  const long share = argc > 3 ? ParseCount(argv[3]) : 16;
  if (seconds <= 0 || seconds > 3600 || share <= 0 || share > 64) {
    std::fprintf(stderr, "handoff_floor: SECONDS in 1..3600, SHARE in 1..64\n");
    return 2;
  }
  std::printf("own-fd %.0f IOPS\n", TwoReaders(path, true, seconds));
  std::printf("shared-fd %.0f IOPS\n", TwoReaders(path, false, seconds));
  double worker = 0;
  const double h =
      Handoff(path, seconds, static_cast<unsigned>(share), &worker);
  std::printf("handoff %.0f IOPS (worker share %.2f)\n", h, worker);
  return 0;
}
