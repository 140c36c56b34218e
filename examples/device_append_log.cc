// An append-only log with group commit beside random reads, on the device
// layer (aiokit/device.h): the program bench/logstore_mix.cc writes against
// the engine interface, without its plumbing. Each of `writers` threads
// appends 4 KiB records and acknowledges one once Submit(..., ThenFlush::kYes)
// says it is stable: the device shares one fdatasync among the writers
// waiting at once (group commit). One reader keeps `depth` random reads of a
// data file in flight, each context's callback checking its block and
// reading the next. At the end every acknowledged record is read back.
// The record format and recovery are in device_append_log.h.
//
// Usage: device_append_log [DIR] [--engine=E] [--seconds=S] [--writers=N]
//                          [--depth=Q] [--log-mib=M] [--data-mib=M]
//                          [--records=N] [--log-file=PATH] [--ack-file=PATH]
//                          [--unsafe-ack]
//        device_append_log --recover=IMAGE [--engine=E]
// --records stops once N records are acknowledged (or --seconds pass);
// --log-file puts the log there and keeps it; --ack-file appends each
// acknowledged sequence number (8 bytes, native order) to PATH as it is
// acknowledged; --unsafe-ack acknowledges a record once its write completes,
// without a flush (a bug, for crash tests to catch). --recover scans a log
// (a crash image) through the device layer and prints "recovered N records:"
// and their sequence numbers as ranges ("0-41 43 45-99").
// Prints the same figures as logstore_mix. Exit 1 on an I/O error or a
// record that does not read back, 77 when the engine or O_DIRECT is refused.

#include "device_append_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "aiokit/device.h"

namespace {

using append_log::kRecord;

int Exit(int code, const std::string& why) {
  std::fprintf(stderr, "device_append_log: %s\n", why.c_str());
  return code;
}

// A named file for Device::Open, removed when the program ends unless kept.
struct ScratchPath {
  std::string path;
  bool keep = false;
  explicit ScratchPath(const std::string& dir, const char* name)
      : path(dir + "/" + name + "-" + std::to_string(::getpid())) {}
  ~ScratchPath() {
    if (!keep) ::unlink(path.c_str());
  }
};

// Recovery: every slot of the log at `path` read through the device layer;
// prints the records found. Exit 0, or 1 when the log cannot be read.
int Recover(const std::string& path, aiokit::DeviceOptions o) {
  o.create = false;
  o.read_only = true;
  auto opened = aiokit::Device::Open(path, o);
  if (!opened.ok()) return Exit(1, opened.status().ToString());
  aiokit::Device& dev = **opened;
  const uint64_t slots = dev.Info().size / kRecord;
  constexpr uint64_t kChunk = 256;  // slots per read
  aiokit::Result<aiokit::Buffer> buf = dev.AllocateBuffer(kChunk * kRecord);
  if (!buf.ok()) return Exit(1, buf.status().ToString());
  std::string ranges;
  uint64_t found = 0, run_start = 0, run_end = 0;  // a run: [start, end)
  const auto close_run = [&] {
    if (run_end == run_start) return;
    ranges += " " + std::to_string(run_start);
    if (run_end - run_start > 1) ranges += "-" + std::to_string(run_end - 1);
  };
  for (uint64_t at = 0; at < slots; at += kChunk) {
    const uint64_t n = std::min(kChunk, slots - at);
    const aiokit::Status s =
        dev.ReadExactly(at * kRecord, buf->Slice(0, n * kRecord));
    if (!s.ok()) return Exit(1, s.ToString());
    for (uint64_t i = 0; i < n; ++i) {
      if (!append_log::ParseSlot(buf->data() + i * kRecord, at + i)) continue;
      ++found;
      if (run_end != at + i) {
        close_run();
        run_start = at + i;
      }
      run_end = at + i + 1;
    }
  }
  close_run();
  std::printf("recovered %llu records:%s\n",
              static_cast<unsigned long long>(found), ranges.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/var/tmp", engine = "default", log_file, ack_file, recover;
  long seconds = 2, writers = 4, depth = 8, log_mib = 64, data_mib = 64,
       records = 0;
  bool unsafe_ack = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string v = a.substr(a.find('=') + 1);
    // A positive count, or 0 when the text is not one.
    auto count = [&v] {
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      return end != v.c_str() && *end == '\0' && n > 0 ? n : 0L;
    };
    long* num = nullptr;
    if (a.rfind("--engine=", 0) == 0) {
      engine = v;
    } else if (a.rfind("--seconds=", 0) == 0) {
      num = &seconds;
    } else if (a.rfind("--writers=", 0) == 0) {
      num = &writers;
    } else if (a.rfind("--depth=", 0) == 0) {
      num = &depth;
    } else if (a.rfind("--log-mib=", 0) == 0) {
      num = &log_mib;
    } else if (a.rfind("--data-mib=", 0) == 0) {
      num = &data_mib;
    } else if (a.rfind("--records=", 0) == 0) {
      num = &records;
    } else if (a.rfind("--log-file=", 0) == 0) {
      log_file = v;
    } else if (a.rfind("--ack-file=", 0) == 0) {
      ack_file = v;
    } else if (a.rfind("--recover=", 0) == 0) {
      recover = v;
    } else if (a == "--unsafe-ack") {
      unsafe_ack = true;
    } else if (a.rfind("--", 0) != 0) {
      dir = a;
    } else {
      return Exit(2, "unknown option " + a);
    }
    if (num != nullptr && (*num = count()) == 0) {
      return Exit(2, a + ": not a positive whole number");
    }
  }
  aiokit::DeviceOptions o;
  if (engine != "default") {
    aiokit::Result<aiokit::EngineKind> k = aiokit::ParseEngineKind(engine);
    if (!k.ok()) return Exit(2, k.status().ToString());
    o.engine.kind = *k;
  }
  if (!recover.empty()) return Recover(recover, o);
  o.create = true;
  ScratchPath log_path(dir, "device-append-log"),
      data_path(dir, "device-append-data");
  if (!log_file.empty()) {
    log_path.path = log_file;
    log_path.keep = true;
  }
  int ack_fd = -1;
  if (!ack_file.empty()) {
    ack_fd = ::open(ack_file.c_str(),
                    O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (ack_fd < 0)
      return Exit(1, ack_file + ": " + std::system_category().message(errno));
  }
  auto log = aiokit::Device::Open(log_path.path, o);
  if (!log.ok()) return Exit(77, log.status().ToString());
  auto data = aiokit::Device::Open(data_path.path, o);
  if (!data.ok()) return Exit(77, data.status().ToString());
  aiokit::Device& L = **log;
  aiokit::Device& D = **data;
  if (aiokit::Status s = L.Preallocate(0, static_cast<uint64_t>(log_mib) << 20);
      !s.ok() && !s.Is(aiokit::Errc::kUnsupported))
    return Exit(1, s.ToString());
  // The data file: block b holds byte b >> 8 (its MiB).
  for (long m = 0; m < data_mib; ++m) {
    aiokit::Result<aiokit::Buffer> chunk = D.AllocateBuffer(1 << 20);
    if (!chunk.ok()) return Exit(1, chunk.status().ToString());
    std::memset(chunk->data(), static_cast<int>(m & 0xff), chunk->size());
    if (aiokit::Status s = D.Write(static_cast<uint64_t>(m) << 20, *chunk);
        !s.ok())
      return Exit(1, s.ToString());
  }
  uint64_t log_records = (static_cast<uint64_t>(log_mib) << 20) / kRecord;
  if (records != 0) {
    if (static_cast<uint64_t>(records) > log_records)
      return Exit(2, "--records=" + std::to_string(records) +
                         " does not fit the log of --log-mib=" +
                         std::to_string(log_mib));
    log_records = static_cast<uint64_t>(records);
  }
  const uint64_t data_blocks =
      (static_cast<uint64_t>(data_mib) << 20) / kRecord;

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> next_seq{0}, acked_count{0}, reads{0};
  std::vector<std::atomic<uint8_t>> acked(log_records);
  std::vector<std::string> errors(static_cast<size_t>(writers) + 1);
  // The reader: each context's callback checks its block and reads the next.
  struct Slot {
    aiokit::Buffer buf;
    uint64_t at = 0;
    std::unique_ptr<aiokit::IoContext> ioc;
  };
  std::vector<Slot> slots(static_cast<size_t>(depth));
  std::mt19937_64 rng(42);
  std::mutex mu;  // rng and the reader's error
  std::string& read_error = errors[static_cast<size_t>(writers)];
  auto read_next = [&](Slot& s) {
    {
      std::lock_guard lock(mu);
      s.at = (rng() % data_blocks) * kRecord;
    }
    aiokit::Status st = D.AioRead(s.at, s.buf, s.ioc.get());
    if (st.ok()) st = D.Submit(s.ioc.get());
    if (!st.ok()) {
      std::lock_guard lock(mu);
      read_error = st.ToString();
    }
  };
  for (Slot& s : slots) {
    aiokit::Result<aiokit::Buffer> b = D.AllocateBuffer(kRecord);
    if (!b.ok()) return Exit(1, b.status().ToString());
    s.buf = *b;
    s.ioc = std::make_unique<aiokit::IoContext>(
        [&, p = &s](aiokit::IoContext& self) {
          std::string bad = self.status().ok() ? "" : self.status().ToString();
          if (bad.empty() &&
              p->buf.data()[kRecord - 1] != static_cast<char>(p->at >> 20))
            bad = "wrong bytes at " + std::to_string(p->at);
          if (!bad.empty()) {
            std::lock_guard lock(mu);
            read_error = bad;
            return;
          }
          reads.fetch_add(1);
          if (!stop.load()) read_next(*p);
        });
  }
  // The main thread waits for the writers (the log full) or the time.
  std::mutex done_mu;
  std::condition_variable done_cv;
  long writers_done = 0;
  std::mutex ack_mu;  // one acknowledgement at a time in the ack file
  std::vector<std::thread> threads;
  for (long w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      const auto write_records = [&]() -> std::string {
        aiokit::Result<aiokit::Buffer> buf = L.AllocateBuffer(kRecord);
        if (!buf.ok()) return buf.status().ToString();
        aiokit::IoContext commit;
        while (!stop.load()) {
          const uint64_t seq = next_seq.fetch_add(1);
          if (seq >= log_records) return "";
          append_log::FillRecord(buf->data(), seq);
          aiokit::Status s = L.AioWrite(seq * kRecord, *buf, &commit);
          if (s.ok()) {
            s = L.Submit(&commit, unsafe_ack ? aiokit::ThenFlush::kNo
                                             : aiokit::ThenFlush::kYes);
          }
          if (s.ok()) s = commit.Wait();
          if (!s.ok()) return s.ToString();
          acked[seq].store(1);
          acked_count.fetch_add(1);
          if (ack_fd >= 0) {
            std::lock_guard lock(ack_mu);
            if (::write(ack_fd, &seq, sizeof(seq)) != sizeof(seq))
              return ack_file + ": " + std::system_category().message(errno);
          }
        }
        return "";
      };
      errors[w] = write_records();
      std::lock_guard lock(done_mu);
      ++writers_done;
      done_cv.notify_one();
    });
  }
  for (Slot& s : slots) read_next(s);
  const auto t0 = std::chrono::steady_clock::now();
  {
    std::unique_lock lock(done_mu);
    done_cv.wait_until(lock, t0 + std::chrono::seconds(seconds),
                       [&] { return writers_done == writers; });
  }
  stop.store(true);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  const uint64_t acked_at_stop = acked_count.load(),
                 reads_at_stop = reads.load();
  for (std::thread& t : threads) t.join();
  for (Slot& s : slots) (void)s.ioc->Wait();
  if (ack_fd >= 0 && ::close(ack_fd) != 0)
    return Exit(1, ack_file + ": " + std::system_category().message(errno));

  int rc = 0;
  for (const std::string& e : errors)
    if (!e.empty()) rc = Exit(1, e);
  aiokit::Result<aiokit::Buffer> check = L.AllocateBuffer(kRecord);
  uint64_t verified = 0;
  for (uint64_t seq = 0; check.ok() && seq < log_records; ++seq) {
    if (acked[seq].load() == 0) continue;
    if (!L.ReadExactly(seq * kRecord, *check).ok() ||
        !append_log::ParseSlot(check->data(), seq)) {
      rc = Exit(1, "acknowledged record " + std::to_string(seq) +
                       " did not read back");
      break;
    }
    ++verified;
  }
  const uint64_t syncs = L.Stats().fdatasyncs;
  std::printf(
      "device_append_log engine=%s writers=%ld depth=%ld: %.0f acknowledged "
      "records/s, %.0f reads/s, "
      "%.0f syncs/s, %.2f records per sync; %llu records verified\n",
      L.engine().Name(), writers, depth,
      static_cast<double>(acked_at_stop) / secs,
      static_cast<double>(reads_at_stop) / secs,
      static_cast<double>(syncs) / secs,
      syncs != 0
          ? static_cast<double>(acked_count.load()) / static_cast<double>(syncs)
          : 0.0,
      static_cast<unsigned long long>(verified));
  return rc;
}
