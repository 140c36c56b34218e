// Differential testing: random sequences of writes, reads, vectored I/O and
// fsyncs from several submitting threads on one engine, checked byte for byte
// against an in-memory model of the file — every read as it completes, and
// the whole file after it is closed and opened again (read back through a
// new engine and with plain pread).
//
// Each thread owns a region of the file and never has two requests on
// overlapping bytes in flight, so the model's answer is defined; completions
// are reaped by whichever thread gets them. A failure prints the seed;
// AIOKIT_DIFF_SEED=N replays the same operations (the interleaving of threads
// is the scheduler's). AIOKIT_DIFF_OPS sets the operations per thread.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "test_util.h"

namespace aiokit {
namespace {

using testing::MakeNamedEngine;
using testing::TestDir;

constexpr size_t kThreads = 3;
constexpr size_t kRegion = 256 * 1024;  // bytes per thread
constexpr size_t kSlots = 16;           // requests in flight per thread
constexpr size_t kMaxLen = 16 * 1024;
constexpr size_t kMaxIov = 4;

uint64_t EnvU64(const char* name, uint64_t fallback) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): read before threads start
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : fallback;
}

enum class Kind { kRead, kReadv, kWrite, kWritev, kFsync, kFdatasync };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kRead:
      return "read";
    case Kind::kReadv:
      return "readv";
    case Kind::kWrite:
      return "write";
    case Kind::kWritev:
      return "writev";
    case Kind::kFsync:
      return "fsync";
    case Kind::kFdatasync:
      return "fdatasync";
  }
  return "?";
}

struct Op {
  Kind kind = Kind::kRead;
  uint64_t offset = 0;
  size_t length = 0;
  bool busy = false;  // in flight
  uint64_t number = 0;
};

// One submitting thread's state; the request's priv points at its Worker.
struct Worker {
  size_t index = 0;
  uint64_t base = 0;  // the region's first byte
  std::mt19937_64 rng;
  std::vector<Request> reqs;
  std::vector<Op> ops;
  AlignedBuffer mem;  // kSlots x kMaxLen
  uint64_t issued = 0;
  uint64_t done = 0;
  size_t in_flight = 0;
  std::vector<Request*> unsent;  // refused with kQueueFull: submitted again
};

std::string TestFullName() {
  const ::testing::TestInfo* t =
      ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(t->test_suite_name()) + "." + t->name();
}

class DifferentialTest
    : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(DifferentialTest, RandomIoFromSeveralThreadsMatchesTheModel) {
  const std::string engine_name = std::get<0>(GetParam());
  const bool direct = std::get<1>(GetParam());
  const uint64_t seed = EnvU64("AIOKIT_DIFF_SEED", std::random_device{}());
  const uint64_t ops_per_thread = EnvU64("AIOKIT_DIFF_OPS", 3000);
  SCOPED_TRACE("seed " + std::to_string(seed) +
               " (replay: AIOKIT_DIFF_SEED=" + std::to_string(seed) +
               " --gtest_filter=" + TestFullName() + ")");

  const std::string path = TestDir() + "/aiokit-diff-" +
                           std::to_string(::getpid()) + "-" +
                           std::to_string(seed);
  struct Unlink {
    std::string p;
    ~Unlink() { ::unlink(p.c_str()); }
  } unlink_at_end{path};
  const size_t file_size = kThreads * kRegion;
  std::vector<char> model(file_size);
  {
    // The starting content: a pattern, written plainly.
    std::mt19937_64 fill(seed ^ 0x5eed);
    for (char& c : model) c = static_cast<char>(fill());
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
    ASSERT_EQ(::pwrite(fd, model.data(), file_size, 0),
              static_cast<ssize_t>(file_size));
    ASSERT_EQ(::close(fd), 0);
  }
  Result<File> file = File::Open(path, O_RDWR | (direct ? O_DIRECT : 0));
  if (!file.ok() && direct) GTEST_SKIP() << file.status().ToString();
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  // O_DIRECT: offsets, lengths and iovec addresses in units of the file's
  // alignment.
  const size_t unit = direct ? std::max<size_t>({file->alignment().offset,
                                                 file->alignment().memory, 512})
                             : 1;
  const size_t mem_align =
      direct ? std::max<size_t>(file->alignment().memory, 4096) : 4096;

  EngineOptions opts;
  opts.queue_depth = kThreads * kSlots;
  AIOKIT_MAKE_ENGINE_OR_SKIP(made, engine_name, opts);
  Engine& engine = *made;

  std::mutex mu;  // the model, every Worker's ops and counters
  std::vector<std::string> failures;
  std::vector<std::unique_ptr<Worker>> workers;
  for (size_t t = 0; t < kThreads; ++t) {
    auto w = std::make_unique<Worker>();
    w->index = t;
    w->base = t * kRegion;
    w->rng.seed(seed * 1000003 + t);
    w->reqs.resize(kSlots);
    w->ops.resize(kSlots);
    Result<AlignedBuffer> mem =
        AlignedBuffer::Allocate(kSlots * kMaxLen, mem_align);
    ASSERT_TRUE(mem.ok()) << mem.status().ToString();
    w->mem = std::move(*mem);
    workers.push_back(std::move(w));
  }
  std::atomic<uint64_t> total_done{0};
  const uint64_t total = ops_per_thread * kThreads;

  auto fail = [&](const std::string& what) {
    if (failures.size() < 8) failures.push_back(what);
  };

  // Called with mu held, for any worker's completed request.
  auto complete = [&](Request* r) {
    auto* w = static_cast<Worker*>(r->priv);
    const auto slot = static_cast<size_t>(r - w->reqs.data());
    Op& op = w->ops[slot];
    char* buf = w->mem.data() + slot * kMaxLen;
    const std::string what =
        std::string(KindName(op.kind)) + " #" + std::to_string(op.number) +
        " of thread " + std::to_string(w->index) + " at " +
        std::to_string(op.offset) + "+" + std::to_string(op.length) + ": ";
    if (!op.busy) {
      fail(what + "completed twice");
      return;
    }
    op.busy = false;
    --w->in_flight;
    ++w->done;
    total_done.fetch_add(1, std::memory_order_relaxed);
    const auto want = static_cast<int64_t>(op.length);
    if (r->rval != want) {
      fail(what + "rval " + std::to_string(r->rval) + ", want " +
           std::to_string(want) + " (" + Describe(*r) + ")");
      return;
    }
    if (op.kind == Kind::kRead || op.kind == Kind::kReadv) {
      const char* m = model.data() + op.offset;
      for (size_t i = 0; i < op.length; ++i) {
        if (buf[i] != m[i]) {
          fail(what + "byte " + std::to_string(op.offset + i) + " is " +
               std::to_string(static_cast<unsigned char>(buf[i])) +
               ", the model says " +
               std::to_string(static_cast<unsigned char>(m[i])));
          return;
        }
      }
    }
  };

  // True when [off, off+len) overlaps a request of w's in flight.
  auto overlaps = [](const Worker& w, uint64_t off, size_t len) {
    for (const Op& o : w.ops) {
      if (!o.busy || o.length == 0) continue;
      if (off < o.offset + o.length && o.offset < off + len) return true;
    }
    return false;
  };

  auto run = [&](Worker* w) {
    std::vector<Request*> batch;
    std::vector<Request*> out(kSlots * kThreads);
    while (total_done.load(std::memory_order_relaxed) < total) {
      batch.swap(w->unsent);
      w->unsent.clear();
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!failures.empty()) return;
        for (size_t slot = 0; slot < kSlots && w->issued < ops_per_thread;
             ++slot) {
          Op& op = w->ops[slot];
          if (op.busy) continue;
          if (w->rng() % 3 == 0) continue;  // leave some idle: varied depth
          const unsigned pick = w->rng() % 100;
          op.kind = pick < 35   ? Kind::kRead
                    : pick < 50 ? Kind::kReadv
                    : pick < 80 ? Kind::kWrite
                    : pick < 95 ? Kind::kWritev
                    : pick < 98 ? Kind::kFsync
                                : Kind::kFdatasync;
          Request& r = w->reqs[slot];
          char* buf = w->mem.data() + slot * kMaxLen;
          if (op.kind == Kind::kFsync || op.kind == Kind::kFdatasync) {
            op.offset = 0;
            op.length = 0;
            if (op.kind == Kind::kFsync) {
              r.PrepFsync(file->fd());
            } else {
              r.PrepFdatasync(file->fd());
            }
          } else {
            // A range of this thread's region that nothing of its own in
            // flight touches (a few tries, else the slot waits).
            bool found = false;
            for (int tries = 0; tries < 8 && !found; ++tries) {
              const size_t units = kMaxLen / unit;
              op.length = (1 + w->rng() % units) * unit;
              op.offset =
                  w->base +
                  (w->rng() % ((kRegion - op.length) / unit + 1)) * unit;
              found = !overlaps(*w, op.offset, op.length);
            }
            if (!found) continue;
            const bool writes =
                op.kind == Kind::kWrite || op.kind == Kind::kWritev;
            if (writes) {
              for (size_t i = 0; i < op.length; ++i) {
                buf[i] = static_cast<char>(w->rng());
              }
              // The model takes the write now: no read of these bytes is in
              // flight, and none starts until it completes.
              std::memcpy(model.data() + op.offset, buf, op.length);
            } else {
              std::memset(buf, 0xee, op.length);
            }
            if (op.kind == Kind::kRead) {
              r.PrepRead(*file, buf, op.length, op.offset);
            } else if (op.kind == Kind::kWrite) {
              r.PrepWrite(*file, buf, op.length, op.offset);
            } else {
              // Cut into up to kMaxIov pieces (O_DIRECT: aligned pieces).
              iovec iov[kMaxIov];
              size_t n = 0, at = 0;
              while (at < op.length) {
                size_t piece = op.length - at;
                if (n + 1 < kMaxIov && piece > unit) {
                  piece = (1 + w->rng() % (piece / unit)) * unit;
                }
                iov[n++] = iovec{buf + at, piece};
                at += piece;
              }
              if (op.kind == Kind::kReadv) {
                r.PrepReadv(*file, iov, n, op.offset);
              } else {
                r.PrepWritev(*file, iov, n, op.offset);
              }
            }
          }
          r.priv = w;
          op.busy = true;
          op.number = w->issued++;
          ++w->in_flight;
          batch.push_back(&r);
        }
      }
      size_t off = 0;
      while (off < batch.size()) {
        SubmitResult sr = engine.Submit(
            std::span<Request* const>(batch.data() + off, batch.size() - off));
        off += sr.accepted;
        if (!sr.status.ok()) {
          if (sr.status.Is(Errc::kQueueFull)) {
            // Not taken: still ours, still busy; submitted again next turn.
            w->unsent.assign(batch.begin() + static_cast<std::ptrdiff_t>(off),
                             batch.end());
            break;
          }
          std::lock_guard<std::mutex> lock(mu);
          fail("Submit: " + sr.status.ToString());
          return;
        }
      }
      Result<size_t> got = engine.Reap(out, 1, std::chrono::milliseconds(20));
      if (!got.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        fail("Reap: " + got.status().ToString());
        return;
      }
      std::lock_guard<std::mutex> lock(mu);
      for (size_t k = 0; k < *got; ++k) complete(out[k]);
    }
  };

  std::vector<std::thread> threads;
  threads.reserve(workers.size());
  const auto started = std::chrono::steady_clock::now();
  for (auto& w : workers) threads.emplace_back(run, w.get());
  for (std::thread& t : threads) t.join();
  for (const std::string& f : failures) ADD_FAILURE() << f;
  if (!failures.empty()) return;
  ASSERT_EQ(total_done.load(), total);
  for (const auto& w : workers) {
    EXPECT_EQ(w->in_flight, 0U);
    EXPECT_EQ(w->done, ops_per_thread);
  }
  const EngineStats st = engine.Stats();
  EXPECT_EQ(st.in_flight, 0U);
  ASSERT_TRUE(engine.Shutdown(std::chrono::seconds(10)).ok());
  made.reset();
  ASSERT_TRUE(file->Close().ok());

  // Opened again: the whole file through a new engine, then with pread.
  Result<File> again = File::Open(path, O_RDWR | (direct ? O_DIRECT : 0));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  Result<std::unique_ptr<Engine>> second = MakeNamedEngine(engine_name, opts);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  Result<AlignedBuffer> whole = AlignedBuffer::Allocate(file_size, mem_align);
  ASSERT_TRUE(whole.ok());
  constexpr size_t kChunk = 64 * 1024;
  std::vector<Request> reads(file_size / kChunk);
  std::vector<Request*> ptrs;
  for (size_t i = 0; i < reads.size(); ++i) {
    reads[i].PrepRead(*again, whole->data() + i * kChunk, kChunk, i * kChunk);
    ptrs.push_back(&reads[i]);
  }
  SubmitResult sr = (*second)->Submit(ptrs);
  ASSERT_TRUE(sr.status.ok()) << sr.status.ToString();
  testing::Reaped got = testing::ReapAll(**second, reads.size());
  ASSERT_TRUE(got.error.ok()) << got.error.ToString();
  ASSERT_EQ(got.order.size(), reads.size());
  for (const Request& r : reads) {
    ASSERT_EQ(r.rval, static_cast<int64_t>(kChunk)) << Describe(r);
  }
  for (size_t i = 0; i < file_size; ++i) {
    ASSERT_EQ(whole->data()[i], model[i])
        << "after reopening, through the engine: byte " << i;
  }
  std::vector<char> plain(file_size);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pread(fd, plain.data(), file_size, 0),
            static_cast<ssize_t>(file_size));
  ::close(fd);
  for (size_t i = 0; i < file_size; ++i) {
    ASSERT_EQ(plain[i], model[i]) << "after reopening, with pread: byte " << i;
  }
  std::printf(
      "[ diff     ] %s%s: %llu operations from %zu threads in %lld ms\n",
      engine_name.c_str(), direct ? " O_DIRECT" : "",
      static_cast<unsigned long long>(total), kThreads,
      static_cast<long long>(
          std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - started)
              .count()));
}

std::string ParamName(
    const ::testing::TestParamInfo<std::tuple<std::string, bool>>& info) {
  return testing::ParamName(std::get<0>(info.param) + (std::get<1>(info.param)
                                                           ? "_direct"
                                                           : "_buffered"));
}

// Each engine with its default options, as since this suite was written (no
// reason was recorded; all of AllEngines() would triple its running time).
INSTANTIATE_TEST_SUITE_P(
    Engines, DifferentialTest,
    ::testing::Combine(::testing::ValuesIn(testing::PlainEngines()),
                       ::testing::Bool()),
    ParamName);

}  // namespace
}  // namespace aiokit
