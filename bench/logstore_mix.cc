// A group-commit log store under a read load, the mix a storage engine runs
// (not one fio row): `writers` threads append 4 KiB records to a log file
// through one engine whose completion thread calls back (BlueStore's aio
// thread); a record is acknowledged once an fdatasync that was submitted
// after its write completed has completed (group commit: one sync covers
// every writer waiting when it starts). Beside them one thread keeps `depth`
// random 4 KiB reads of a data file in flight on a second engine and learns
// of completions from NotifyFd through epoll. Both files are O_DIRECT.
//
// At the end every acknowledged record is read back and checked (its
// sequence number and contents), so a lost or torn acknowledged write fails
// the run.
//
// Usage: logstore_mix [--engine=E] [--dir=D] [--seconds=S] [--writers=N]
//                     [--depth=Q] [--log-mib=M] [--data-mib=M]
//                     [--log-reap=thread|self] [--read-engine=E]
// --log-reap=self: no completion thread; the waiting writers reap the log
// engine themselves (Reap delivers to the callback).
// --read-engine: the reader's engine, when it is to differ from the log's
// (--engine), to tell which of the two an engine's figures owe to.
// Defaults: the default engine, /var/tmp, 5 s, 4 writers, depth 8, a 512 MiB
// log (preallocated), a 256 MiB data file. Prints one line of figures
// (acknowledged records/s, reads/s, syncs/s, records per sync) and each
// engine's counters. Exit status 1 on any I/O error or verification failure,
// 77 when the engine asked for is refused here or the directory's file system
// has no O_DIRECT (tests/CMakeLists.txt runs it on every engine so).

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "aiokit/aiokit.h"
#include "parse_count.h"

namespace {

using aiokit::bench::ParseCount;
using Clock = std::chrono::steady_clock;

constexpr size_t kRecord = 4096;

struct Config {
  aiokit::EngineKind engine = aiokit::EngineKind::kDefault;
  // The reader's engine; unset: the same as the log's.
  std::optional<aiokit::EngineKind> read_engine;
  std::string dir = "/var/tmp";
  long seconds = 5;
  long writers = 4;
  long depth = 8;
  long log_mib = 512;
  long data_mib = 256;
  // The log engine's completions: delivered by its completion thread
  // ("thread", BlueStore's aio thread), or reaped by the waiting writers
  // themselves ("self").
  bool self_reap = false;
};

// Record `seq`: its sequence number, then bytes that depend on it and on their
// position, so that a record written to the wrong place or torn is caught.
void FillRecord(char* buf, uint64_t seq) {
  std::memcpy(buf, &seq, sizeof(seq));
  for (size_t i = sizeof(seq); i < kRecord; ++i)
    buf[i] = static_cast<char>((seq * 131) + (i * 7));
}

bool CheckRecord(const char* buf, uint64_t seq) {
  uint64_t got = 0;
  std::memcpy(&got, buf, sizeof(got));
  if (got != seq) return false;
  for (size_t i = sizeof(seq); i < kRecord; ++i)
    if (buf[i] != static_cast<char>((seq * 131) + (i * 7))) return false;
  return true;
}

// The group-commit state shared by the writers and the log engine's callback.
class GroupCommit {
 public:
  // Blocks until an fdatasync submitted after this call began has completed.
  // The first caller that finds no sync in flight submits one (through
  // `submit`); the others wait for the next one to finish. Returns false when
  // a sync failed (the error is in error()).
  // `reap` is empty when the engine's completion thread delivers; otherwise
  // the waiting writers reap (and so deliver) themselves.
  template <typename SubmitSync>
  bool WaitDurable(SubmitSync&& submit, const std::function<bool()>& reap) {
    std::unique_lock lock(mu_);
    // A sync already in flight may have started before our write completed,
    // so only the one after it counts.
    const uint64_t target = started_ + 1;
    while (done_ < target && failed_.empty()) {
      if (!in_flight_) {
        in_flight_ = true;
        ++started_;
        lock.unlock();
        submit();
        lock.lock();
        continue;
      }
      if (reap) {
        lock.unlock();
        const bool ok = reap();
        lock.lock();
        if (!ok) break;
      } else {
        cv_.wait(lock);
      }
    }
    return failed_.empty();
  }

  // Called by the log engine's callback when the sync completes.
  void SyncDone(int64_t rval) {
    std::lock_guard lock(mu_);
    if (rval != 0 && failed_.empty())
      failed_ = aiokit::Status::FromErrno(static_cast<int>(-rval),
                                          "fdatasync of the log")
                    .ToString();
    ++done_;
    in_flight_ = false;
    cv_.notify_all();
  }

  void Fail(std::string why) {
    std::lock_guard lock(mu_);
    if (failed_.empty()) failed_ = std::move(why);
    cv_.notify_all();
  }

  std::string error() {
    std::lock_guard lock(mu_);
    return failed_;
  }
  uint64_t syncs() {
    std::lock_guard lock(mu_);
    return done_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t started_ = 0;
  uint64_t done_ = 0;
  bool in_flight_ = false;
  std::string failed_;
};

// A writer's one request in flight, and the flag the callback raises.
struct WriterSlot {
  aiokit::Request req;
  std::atomic<uint32_t> done{0};
};

// The log engine's callback: wakes the writer whose write completed, or
// finishes the group's sync.
struct LogCallbackArg {
  GroupCommit* group = nullptr;
  aiokit::Request* sync_req = nullptr;
};

void OnLogComplete(void* arg, aiokit::Request* req) {
  auto* a = static_cast<LogCallbackArg*>(arg);
  if (req == a->sync_req) {
    a->group->SyncDone(req->rval);
    return;
  }
  auto* slot = static_cast<WriterSlot*>(req->priv);
  // Pairs with the acquire load in the writer's wait: rval is visible there.
  slot->done.store(1, std::memory_order_release);
  slot->done.notify_one();
}

void PrintStats(const char* what, aiokit::Engine& e) {
  const aiokit::EngineStats s = e.Stats();
  std::printf(
      "  %s engine %s: completed %llu, submit calls %llu, wait calls %llu, "
      "reaped from the ring %llu",
      what, e.Name(), static_cast<unsigned long long>(s.completed),
      static_cast<unsigned long long>(s.submit_calls),
      static_cast<unsigned long long>(s.wait_calls),
      static_cast<unsigned long long>(s.ring_reaped));
  if (s.kernel_aio != 0 || s.kernel_aio_fallbacks != 0) {
    std::printf(", by the kernel's AIO %llu (given to workers %llu)",
                static_cast<unsigned long long>(s.kernel_aio),
                static_cast<unsigned long long>(s.kernel_aio_fallbacks));
  }
  std::printf("\n");
}

bool ParseArgs(int argc, char** argv, Config* c) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    const size_t eq = a.find('=');
    if (eq == std::string_view::npos) return false;
    const std::string_view key = a.substr(0, eq);
    const std::string value(a.substr(eq + 1));
    long* num = nullptr;
    if (key == "--engine") {
      auto k = aiokit::ParseEngineKind(value);
      if (!k.ok()) return false;
      c->engine = *k;
      continue;
    }
    if (key == "--read-engine") {
      auto k = aiokit::ParseEngineKind(value);
      if (!k.ok()) return false;
      c->read_engine = *k;
      continue;
    }
    if (key == "--log-reap") {
      if (value != "thread" && value != "self") return false;
      c->self_reap = value == "self";
      continue;
    }
    if (key == "--dir") {
      c->dir = value;
      continue;
    }
    if (key == "--seconds") num = &c->seconds;
    if (key == "--writers") num = &c->writers;
    if (key == "--depth") num = &c->depth;
    if (key == "--log-mib") num = &c->log_mib;
    if (key == "--data-mib") num = &c->data_mib;
    if (num == nullptr) return false;
    *num = ParseCount(value.c_str());
    if (*num <= 0) return false;
  }
  return c->writers <= 256 && c->depth <= 1024;
}

aiokit::Result<aiokit::File> MakeFile(const std::string& dir, long mib,
                                      bool fill) {
  auto f = aiokit::File::CreateTemporary(dir, O_DIRECT);
  if (!f.ok()) return f;
  const auto size = static_cast<off_t>(mib) << 20;
  if (!fill) {
    if (::fallocate(f->fd(), 0, 0, size) != 0)
      return aiokit::Status::FromErrno(errno, "fallocate of the log in " + dir);
    return f;
  }
  auto chunk = aiokit::AlignedBuffer::Allocate(size_t{1} << 20);
  if (!chunk.ok()) return chunk.status();
  for (off_t off = 0; off < size; off += 1 << 20) {
    std::memset(chunk->data(), static_cast<int>(off >> 20), chunk->size());
    if (::pwrite(f->fd(), chunk->data(), chunk->size(), off) !=
        static_cast<ssize_t>(chunk->size()))
      return aiokit::Status::FromErrno(errno,
                                       "writing the data file in " + dir);
  }
  return f;
}

int Fail(const std::string& why) {
  std::fprintf(stderr, "logstore_mix: %s\n", why.c_str());
  return 1;
}

// Exit status 77: ctest's "skipped".
int Skip(const std::string& why) {
  std::fprintf(stderr, "logstore_mix: skipped: %s\n", why.c_str());
  return 77;
}

}  // namespace

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  Config cfg;
  if (!ParseArgs(argc, argv, &cfg)) {
    std::fprintf(stderr,
                 "usage: logstore_mix [--engine=E] [--dir=D] [--seconds=S] "
                 "[--writers=N] [--depth=Q] [--log-mib=M] [--data-mib=M] "
                 "[--log-reap=thread|self] [--read-engine=E]\n");
    return 2;
  }
  auto log = MakeFile(cfg.dir, cfg.log_mib, false);
  if (!log.ok() && log.status().code() == std::errc::invalid_argument)
    return Skip(cfg.dir + ": no O_DIRECT here (" + log.status().ToString() +
                ")");
  if (!log.ok()) return Fail(log.status().ToString());
  auto data = MakeFile(cfg.dir, cfg.data_mib, true);
  if (!data.ok()) return Fail(data.status().ToString());
  const uint64_t log_records = (uint64_t(cfg.log_mib) << 20) / kRecord;
  const uint64_t data_blocks = (uint64_t(cfg.data_mib) << 20) / kRecord;

  GroupCommit group;
  aiokit::Request sync_req;
  LogCallbackArg cb{&group, &sync_req};
  aiokit::EngineOptions lo;
  lo.kind = cfg.engine;
  lo.queue_depth = static_cast<unsigned>(cfg.writers) + 1;
  lo.notify_fd = false;
  lo.on_complete = OnLogComplete;
  lo.on_complete_arg = &cb;
  lo.completion_thread = !cfg.self_reap;
  auto log_engine = aiokit::MakeEngine(lo);
  // An engine this kernel or process refuses is not a failure of the mix.
  if (!log_engine.ok()) return Skip(log_engine.status().ToString());

  aiokit::EngineOptions ro;
  ro.kind = cfg.read_engine.value_or(cfg.engine);
  ro.queue_depth = static_cast<unsigned>(cfg.depth);
  auto read_engine = aiokit::MakeEngine(ro);
  if (!read_engine.ok() && cfg.read_engine.has_value())
    return Skip(read_engine.status().ToString());
  if (!read_engine.ok()) return Fail(read_engine.status().ToString());

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> next_seq{0};
  std::vector<std::atomic<uint8_t>> acked(log_records);
  std::atomic<uint64_t> acked_count{0};
  std::atomic<bool> log_full{false};
  const auto submit_sync = [&] {
    sync_req.PrepFdatasync(log->fd());
    aiokit::Request* one[] = {&sync_req};
    const aiokit::SubmitResult sr = (*log_engine)->Submit(one);
    if (sr.accepted != 1)
      group.Fail("submitting fdatasync: " + sr.status.ToString());
  };

  // A self-reaping writer delivers whatever has completed (its own request or
  // another's) and looks at its own state again at least every millisecond:
  // another writer may be the one that delivers its completion.
  // False (and the group failed) when Reap fails.
  const std::function<bool()> reap = [&] {
    const aiokit::Result<size_t> r =
        (*log_engine)->Reap({}, 1, std::chrono::milliseconds(1));
    if (!r.ok()) group.Fail("reaping the log: " + r.status().ToString());
    return r.ok();
  };
  std::vector<std::thread> writers;
  std::vector<std::string> writer_errors(static_cast<size_t>(cfg.writers));
  for (long w = 0; w < cfg.writers; ++w) {
    writers.emplace_back([&, w] {
      auto buf =
          aiokit::AlignedBuffer::Allocate(kRecord, log->alignment().memory);
      if (!buf.ok()) {
        writer_errors[w] = buf.status().ToString();
        return;
      }
      WriterSlot slot;
      while (!stop.load(std::memory_order_relaxed)) {
        const uint64_t seq = next_seq.fetch_add(1, std::memory_order_relaxed);
        if (seq >= log_records) {
          log_full.store(true);
          return;
        }
        FillRecord(buf->data(), seq);
        slot.req.PrepWrite(*log, buf->data(), kRecord, seq * kRecord);
        slot.req.priv = &slot;
        slot.done.store(0, std::memory_order_relaxed);
        aiokit::Request* one[] = {&slot.req};
        const aiokit::SubmitResult sr = (*log_engine)->Submit(one);
        if (sr.accepted != 1) {
          writer_errors[w] = sr.status.ToString();
          return;
        }
        // Pairs with the release store in OnLogComplete.
        while (slot.done.load(std::memory_order_acquire) == 0) {
          if (cfg.self_reap) {
            if (!reap()) return;
          } else {
            slot.done.wait(0);
          }
        }
        if (slot.req.rval != static_cast<int64_t>(kRecord)) {
          writer_errors[w] = "write of record " + std::to_string(seq) +
                             " returned " + std::to_string(slot.req.rval);
          return;
        }
        if (!group.WaitDurable(submit_sync,
                               cfg.self_reap ? reap : std::function<bool()>()))
          return;
        acked[seq].store(1, std::memory_order_relaxed);
        acked_count.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }

  // The reader: `depth` random reads in flight, woken by epoll on NotifyFd.
  std::string reader_error;
  std::atomic<uint64_t> reads{0};
  uint64_t epoll_wakes = 0;  // the reader's; read after it is joined
  std::thread reader([&] {
    auto efd = (*read_engine)->NotifyFd();
    if (!efd.ok()) {
      reader_error = efd.status().ToString();
      return;
    }
    const int ep = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = *efd;
    if (ep < 0 || ::epoll_ctl(ep, EPOLL_CTL_ADD, *efd, &ev) != 0) {
      reader_error = aiokit::Status::FromErrno(errno, "epoll").ToString();
      return;
    }
    const auto n = static_cast<size_t>(cfg.depth);
    auto bufs =
        aiokit::BufferPool::Create(n, kRecord, data->alignment().memory);
    if (!bufs.ok()) {
      reader_error = bufs.status().ToString();
      ::close(ep);
      return;
    }
    std::vector<aiokit::Request> reqs(n);
    std::vector<aiokit::Request*> batch;
    std::mt19937_64 rng(42);
    for (size_t i = 0; i < n; ++i) {
      reqs[i].PrepRead(*data, bufs->buffer(i), kRecord,
                       (rng() % data_blocks) * kRecord);
      reqs[i].priv = bufs->buffer(i);
      batch.push_back(&reqs[i]);
    }
    size_t in_flight = 0;
    std::vector<aiokit::Request*> out(n);
    while (reader_error.empty()) {
      if (!batch.empty()) {
        const aiokit::SubmitResult sr = (*read_engine)->Submit(batch);
        in_flight += sr.accepted;
        if (sr.accepted != batch.size()) {
          reader_error = sr.status.ToString();
          break;
        }
        batch.clear();
      }
      if (in_flight == 0) break;
      epoll_event got[1];
      const int r = ::epoll_wait(ep, got, 1, 10000);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        reader_error =
            r == 0 ? "no completion in 10 s"
                   : aiokit::Status::FromErrno(errno, "epoll_wait").ToString();
        break;
      }
      ++epoll_wakes;
      uint64_t count = 0;
      if (::read(*efd, &count, sizeof(count)) < 0 && errno != EAGAIN) {
        reader_error =
            aiokit::Status::FromErrno(errno, "reading the eventfd").ToString();
        break;
      }
      auto got_n = (*read_engine)->Poll(out);
      if (!got_n.ok()) {
        reader_error = got_n.status().ToString();
        break;
      }
      in_flight -= *got_n;
      for (size_t i = 0; i < *got_n; ++i) {
        aiokit::Request* q = out[i];
        if (q->rval != static_cast<int64_t>(kRecord)) {
          reader_error = "read at " + std::to_string(q->offset) + " returned " +
                         std::to_string(q->rval);
          break;
        }
        // The data file's block b holds byte (b * 4096 >> 20) & 0xff.
        const auto want = static_cast<char>(q->offset >> 20);
        if (static_cast<char*>(q->priv)[kRecord - 1] != want) {
          reader_error = "read at " + std::to_string(q->offset) +
                         " returned the wrong bytes";
          break;
        }
        reads.fetch_add(1, std::memory_order_relaxed);
        if (stop.load(std::memory_order_relaxed)) continue;
        void* b = q->priv;
        q->PrepRead(*data, b, kRecord, (rng() % data_blocks) * kRecord);
        q->priv = b;
        batch.push_back(q);
      }
    }
    ::close(ep);
  });

  const auto t0 = Clock::now();
  while (Clock::now() - t0 < std::chrono::seconds(cfg.seconds) &&
         !log_full.load())
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  stop.store(true);
  const auto t1 = Clock::now();
  const uint64_t acked_at_stop = acked_count.load();
  const uint64_t reads_at_stop = reads.load();
  for (auto& t : writers) t.join();
  reader.join();
  const double secs = std::chrono::duration<double>(t1 - t0).count();

  int rc = 0;
  for (const std::string& e : writer_errors)
    if (!e.empty()) rc = Fail("writer: " + e);
  if (!group.error().empty()) rc = Fail(group.error());
  if (!reader_error.empty()) rc = Fail("reader: " + reader_error);

  // Every acknowledged record must read back intact.
  auto check =
      aiokit::AlignedBuffer::Allocate(kRecord, log->alignment().memory);
  uint64_t verified = 0;
  for (uint64_t seq = 0; check.ok() && seq < log_records; ++seq) {
    if (acked[seq].load(std::memory_order_relaxed) == 0) continue;
    if (::pread(log->fd(), check->data(), kRecord,
                static_cast<off_t>(seq * kRecord)) !=
            static_cast<ssize_t>(kRecord) ||
        !CheckRecord(check->data(), seq)) {
      rc = Fail("acknowledged record " + std::to_string(seq) +
                " did not read back");
      break;
    }
    ++verified;
  }

  const uint64_t syncs = group.syncs();
  std::printf(
      "logstore_mix engine=%s read engine=%s writers=%ld depth=%ld: %.0f "
      "acknowledged "
      "records/s, %.0f reads/s, %.0f syncs/s, %.2f records per sync, %.2f "
      "reads per epoll wake-up; %llu records verified\n",
      (*log_engine)->Name(), (*read_engine)->Name(), cfg.writers, cfg.depth,
      static_cast<double>(acked_at_stop) / secs,
      static_cast<double>(reads_at_stop) / secs,
      static_cast<double>(syncs) / secs,
      syncs != 0
          ? static_cast<double>(acked_count.load()) / static_cast<double>(syncs)
          : 0.0,
      epoll_wakes != 0
          ? static_cast<double>(reads.load()) / static_cast<double>(epoll_wakes)
          : 0.0,
      static_cast<unsigned long long>(verified));
  PrintStats("log", **log_engine);
  PrintStats("read", **read_engine);
  return rc;
}
