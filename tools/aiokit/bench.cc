#include "bench.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "aiokit/aiokit.h"
#include "histogram.h"
#include "units.h"

namespace aiokit::tool {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

// fio's default percentile list.
constexpr double kPercentiles[] = {1,  5,  10, 20, 30,   40,   50,    60,   70,
                                   80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};

// A bad option: the one line to print and exit status 2.
struct UsageError {
  std::string line;
};

std::string PercentKey(double p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6f", p);
  return buf;
}

// xorshift64*: fast, and good enough to spread offsets.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed != 0 ? seed : 0x9E3779B97F4A7C15ULL) {}
  uint64_t Next() noexcept {
    s_ ^= s_ >> 12;
    s_ ^= s_ << 25;
    s_ ^= s_ >> 27;
    return s_ * 0x2545F4914F6CDD1DULL;
  }
  // Uniform in [0, n) by Lemire's multiply-shift (bias below 2^-32 for any n
  // used here).
  uint64_t Below(uint64_t n) noexcept {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >>
                                 64);
  }

 private:
  uint64_t s_;
};

double CpuSeconds(const timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

// The file a job runs on, and whether it must be removed if the job is refused.
struct Target {
  File file;
  std::string shown;        // the path as printed
  std::string remove_path;  // non-empty: we created this named file
  bool temporary = false;   // unnamed: gone with its descriptor
  bool block_device = false;
  uint64_t size = 0;  // bytes the job may touch (a multiple of bs)
};

void RemoveCreated(Target& t) {
  if (!t.remove_path.empty()) {
    (void)t.file.Close();
    ::unlink(t.remove_path.c_str());
    t.remove_path.clear();
  }
}

// Writes [from, to) of the file with a data pattern in 1 MiB O_DIRECT-safe
// chunks.
Status LayOut(const File& f, uint64_t from, uint64_t to) {
  const size_t chunk = 1 << 20;
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(chunk, 4096);
  if (!buf.ok()) return buf.status();
  Rng rng(from + 1);
  for (size_t i = 0; i + 8 <= chunk; i += 8) {
    const uint64_t v = rng.Next();
    std::memcpy(buf->data() + i, &v, 8);
  }
  for (uint64_t off = from; off < to;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, to - off));
    const ssize_t w = ::pwrite(f.fd(), buf->data(), n, static_cast<off_t>(off));
    if (w < 0) {
      return Status::FromErrno(errno, "laying out \"" + f.path() +
                                          "\": pwrite(offset " +
                                          std::to_string(off) + ", length " +
                                          std::to_string(n) + ")");
    }
    if (w == 0) {
      return Status::FromErrno(ENOSPC, "laying out \"" + f.path() +
                                           "\": no progress at offset " +
                                           std::to_string(off));
    }
    off += static_cast<uint64_t>(w);
  }
  if (::fdatasync(f.fd()) != 0) {
    return Status::FromErrno(errno,
                             "laying out \"" + f.path() + "\": fdatasync");
  }
  return {};
}

bool IsRead(const std::string& rw) { return rw == "read" || rw == "randread"; }
bool IsRandom(const std::string& rw) {
  return rw == "randread" || rw == "randwrite";
}

// Opens (or creates) the target and settles its size. Throws UsageError for
// what the user must fix.
Target OpenTarget(const BenchOptions& o) {
  Target t;
  const int direct = o.direct != 0 ? O_DIRECT : 0;
  if (o.filename.empty()) {
    // Single-threaded here: nothing calls setenv concurrently.
    // NOLINTNEXTLINE(concurrency-mt-unsafe)
    const char* tmp = std::getenv("TMPDIR");
    const std::string dir = tmp != nullptr && *tmp != '\0' ? tmp : "/var/tmp";
    Result<File> f = File::CreateTemporary(dir, direct);
    if (!f.ok()) {
      std::string line = "--filename (default: a temporary file in " + dir +
                         "): " + f.status().ToString();
      if (direct != 0)
        line +=
            "; use --direct=0, or --filename on a file system with O_DIRECT";
      throw UsageError{line};
    }
    t.file = std::move(*f);
    t.shown = dir + "/(temporary file, removed after the run)";
    t.temporary = true;
    t.size = o.size;
    return t;
  }
  struct stat st;
  const bool exists = ::stat(o.filename.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) {
    throw UsageError{"--filename=" + o.filename +
                     ": is a directory; name a file or a block device"};
  }
  t.block_device = exists && S_ISBLK(st.st_mode);
  int flags = (IsRead(o.rw) ? O_RDONLY : O_RDWR) | direct;
  if (!exists) flags = O_RDWR | O_CREAT | O_EXCL | direct;
  // A file that is too short for a read job is extended, so it must be
  // writable.
  if (exists && !t.block_device && IsRead(o.rw) && o.size_set &&
      static_cast<uint64_t>(st.st_size) < o.size) {
    flags = (flags & ~O_ACCMODE) | O_RDWR;
  }
  Result<File> f = File::Open(o.filename, flags, 0644);
  if (!f.ok())
    throw UsageError{"--filename=" + o.filename + ": " + f.status().ToString()};
  t.file = std::move(*f);
  t.shown = o.filename;
  if (!exists) t.remove_path = o.filename;
  Result<uint64_t> have = t.file.Size();
  if (!have.ok()) {
    RemoveCreated(t);
    throw UsageError{"--filename=" + o.filename + ": " +
                     have.status().ToString()};
  }
  if (t.block_device) {
    if (o.size_set && o.size > *have) {
      throw UsageError{"--size=" + std::to_string(o.size) +
                       ": larger than the device " + o.filename + " (" +
                       std::to_string(*have) + " bytes)"};
    }
    t.size = o.size_set ? o.size : *have;
  } else {
    t.size = o.size_set || *have == 0 ? o.size : *have;
  }
  return t;
}

// fio's three latencies: slat from the submission call's start to its return,
// clat from there to the completion being reaped, lat the two together.
struct DirStats {
  uint64_t ios = 0;
  uint64_t bytes = 0;
  uint64_t short_ios = 0;
  LatencyHistogram slat;
  LatencyHistogram clat;
  LatencyHistogram lat;
};

Json LatJson(const LatencyHistogram& h) {
  Json j;
  j["min"] = h.min();
  j["max"] = h.max();
  j["mean"] = h.mean();
  j["stddev"] = h.stddev();
  j["N"] = h.count();
  Json pct = Json::object();
  for (double p : kPercentiles) pct[PercentKey(p)] = h.Percentile(p);
  j["percentile"] = pct;
  return j;
}

Json DirJson(const DirStats& d, double seconds) {
  Json j;
  const double runtime_ms = seconds * 1000.0;
  const double bw_bytes =
      seconds > 0 ? static_cast<double>(d.bytes) / seconds : 0;
  j["io_bytes"] = d.bytes;
  j["io_kbytes"] = d.bytes / 1024;
  j["bw_bytes"] = static_cast<uint64_t>(bw_bytes);
  j["bw"] = static_cast<uint64_t>(bw_bytes / 1024);  // KiB/s, as fio
  j["iops"] = seconds > 0 ? static_cast<double>(d.ios) / seconds : 0.0;
  j["runtime"] = static_cast<uint64_t>(runtime_ms);
  j["total_ios"] = d.ios;
  j["short_ios"] = d.short_ios;
  j["slat_ns"] = LatJson(d.slat);
  j["clat_ns"] = LatJson(d.clat);
  j["lat_ns"] = LatJson(d.lat);
  return j;
}

Json EmptyDirJson() { return DirJson(DirStats{}, 0); }

std::string Ns(uint64_t ns) {
  char buf[32];
  if (ns >= 10'000'000) {
    std::snprintf(buf, sizeof(buf), "%.1fms", static_cast<double>(ns) / 1e6);
  } else if (ns >= 10'000) {
    std::snprintf(buf, sizeof(buf), "%.1fus", static_cast<double>(ns) / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%lluns",
                  static_cast<unsigned long long>(ns));
  }
  return buf;
}

}  // namespace

int RunBench(const BenchOptions& o, std::ostream& out, std::ostream& err) {
  Target target;
  try {
    // ---- Options that need no file. ----
    if (o.rw != "read" && o.rw != "write" && o.rw != "randread" &&
        o.rw != "randwrite") {
      throw UsageError{
          "--rw=" + o.rw +
          ": unknown; expected read, write, randread or randwrite"};
    }
    if (o.bs == 0)
      throw UsageError{"--bs=0: the block size must be at least 1 byte"};
    if (o.bs > (64ULL << 20)) {
      throw UsageError{"--bs=" + std::to_string(o.bs) +
                       ": at most 64MiB per request"};
    }
    if (o.iodepth == 0 || o.iodepth > 65536) {
      throw UsageError{"--iodepth=" + std::to_string(o.iodepth) +
                       ": must be 1 to 65536"};
    }
    if (o.fixedbufs && o.iodepth > 16384) {
      throw UsageError{
          "--fixedbufs: at most 16384 registered buffers (one per "
          "request of --iodepth=" +
          std::to_string(o.iodepth) + ")"};
    }
    if (o.direct != 0 && o.direct != 1) {
      throw UsageError{"--direct=" + std::to_string(o.direct) +
                       ": must be 0 or 1"};
    }
    if (o.output_format != "normal" && o.output_format != "json") {
      throw UsageError{"--output-format=" + o.output_format +
                       ": expected normal or json"};
    }
    if (o.time_based && o.runtime_us == 0) {
      throw UsageError{"--time_based needs --runtime"};
    }
    Result<EngineKind> kind = ParseEngineKind(o.engine);
    if (!kind.ok())
      throw UsageError{"--engine=" + o.engine + ": " + kind.status().context()};
    if (o.size_set && o.size < o.bs) {
      throw UsageError{"--size=" + std::to_string(o.size) +
                       ": smaller than --bs=" + std::to_string(o.bs)};
    }

    // ---- The file. ----
    target = OpenTarget(o);
    if (target.size < o.bs) {
      const std::string line = "--size: " + target.shown + " has " +
                               std::to_string(target.size) +
                               " bytes, less than --bs=" + std::to_string(o.bs);
      RemoveCreated(target);
      throw UsageError{line};
    }
    const Alignment align = target.file.alignment();
    if (o.direct != 0 && align.known() && o.bs % align.offset != 0) {
      const std::string line = "--bs=" + std::to_string(o.bs) +
                               ": with --direct=1 the block size must " +
                               "be a multiple of " +
                               std::to_string(align.offset) +
                               ", the O_DIRECT alignment of " + target.shown;
      RemoveCreated(target);
      throw UsageError{line};
    }
    target.size -= target.size % o.bs;

    // ---- The engine. ----
    EngineOptions eo;
    eo.kind = *kind;
    eo.queue_depth = o.iodepth;
    eo.notify_fd = false;  // nothing polls it here
    if (o.spin_us >= 0) {
      eo.spin_before_wait = std::chrono::microseconds(o.spin_us);
    }
    eo.adaptive_spin = !o.spin_always;
    // One job, one thread: the engine may use what that allows (io_uring:
    // SINGLE_ISSUER, DEFER_TASKRUN, a registered ring fd), as fio does.
    eo.single_thread = true;
    eo.sqpoll = o.sqthread_poll;
    eo.sqpoll_cpu = o.sqthread_poll_cpu;
    eo.iopoll = o.hipri;
    eo.threads_min = o.threads_min;
    eo.threads_max = o.threads_max;
    eo.threads_ordered_per_fd = o.threads_ordered;
    std::vector<EngineRefusal> passed_over;
    Result<std::unique_ptr<Engine>> made = MakeEngine(eo, &passed_over);
    if (!made.ok()) {
      RemoveCreated(target);
      throw UsageError{"--engine=" + o.engine + ": " +
                       made.status().ToString()};
    }
    std::unique_ptr<Engine> engine = std::move(*made);

    // ---- Lay out what a read job will read. ----
    if (!target.block_device) {
      Result<uint64_t> have = target.file.Size();
      const uint64_t from = have.ok() ? *have : 0;
      if (IsRead(o.rw) && from < target.size) {
        if (Status s = LayOut(target.file, from, target.size); !s.ok()) {
          RemoveCreated(target);
          throw UsageError{"--size=" + std::to_string(target.size) + ": " +
                           s.ToString()};
        }
      }
    }

    // ---- Buffers and requests. ----
    const size_t mem_align =
        std::max<size_t>(align.known() ? align.memory : 1, 4096);
    Result<BufferPool> buffers = BufferPool::Create(o.iodepth, o.bs, mem_align);
    if (!buffers.ok()) {
      RemoveCreated(target);
      throw UsageError{"--bs x --iodepth: " + buffers.status().ToString()};
    }
    if (o.fixedbufs) {
      if (Status s = engine->RegisterBuffers(buffers->iovecs()); !s.ok()) {
        RemoveCreated(target);
        throw UsageError{"--fixedbufs: " + s.ToString()};
      }
    }
    if (o.registerfiles) {
      const int fd = target.file.fd();
      if (Status s = engine->RegisterFiles(std::span<const int>(&fd, 1));
          !s.ok()) {
        RemoveCreated(target);
        throw UsageError{"--registerfiles: " + s.ToString()};
      }
    }
    Rng rng(static_cast<uint64_t>(::getpid()) * 7919 + 17);
    if (!IsRead(o.rw)) {
      for (size_t b = 0; b < buffers->count(); ++b) {
        for (size_t i = 0; i + 8 <= o.bs; i += 8) {
          const uint64_t v = rng.Next();
          std::memcpy(buffers->buffer(b) + i, &v, 8);
        }
      }
    }
    std::vector<Request> reqs(o.iodepth);
    std::vector<Request*> batch;
    batch.reserve(o.iodepth);
    std::vector<Request*> done(o.iodepth);
    const bool read = IsRead(o.rw);
    const bool random = IsRandom(o.rw);
    const uint64_t blocks = target.size / o.bs;
    uint64_t seq_block = 0;
    const uint64_t budget_bytes = o.time_based ? UINT64_MAX : target.size;
    uint64_t issued_bytes = 0;

    auto prep = [&](size_t i) {
      const uint64_t block =
          random ? rng.Below(blocks) : (seq_block++ % blocks);
      char* buf = buffers->buffer(i);
      if (read) {
        reqs[i].PrepRead(target.file, buf, o.bs, block * o.bs);
      } else {
        reqs[i].PrepWrite(target.file, buf, o.bs, block * o.bs);
      }
      if (o.fixedbufs) reqs[i].SetFixedBuffer(static_cast<int16_t>(i));
      issued_bytes += o.bs;
      batch.push_back(&reqs[i]);
    };

    DirStats stats;
    std::map<int, uint64_t> errors;
    std::string first_error;
    uint64_t submit_batches = 0, submitted = 0, reap_calls = 0, reaped = 0;
    // When each request's submission call started and returned.
    std::vector<Clock::time_point> submit_start(o.iodepth);
    std::vector<Clock::time_point> issue_time(o.iodepth);
    size_t in_flight = 0;
    bool stop = false;

    rusage ru0, ru1;
    ::getrusage(RUSAGE_SELF, &ru0);
    const Clock::time_point start = Clock::now();
    const Clock::time_point end_at =
        o.runtime_us != 0 ? start + std::chrono::microseconds(o.runtime_us)
                          : Clock::time_point::max();

    for (size_t i = 0; i < o.iodepth && issued_bytes < budget_bytes; ++i)
      prep(i);
    auto submit = [&]() {
      size_t off = 0;
      while (off < batch.size()) {
        const Clock::time_point before = Clock::now();
        SubmitResult sr = engine->Submit(
            std::span<Request* const>(batch.data() + off, batch.size() - off));
        ++submit_batches;
        const Clock::time_point now = Clock::now();
        const auto slat = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(now - before)
                .count());
        stats.slat.RecordN(slat, sr.accepted);
        for (size_t k = off; k < off + sr.accepted; ++k) {
          const auto idx = static_cast<size_t>(batch[k] - reqs.data());
          submit_start[idx] = before;
          issue_time[idx] = now;
        }
        submitted += sr.accepted;
        in_flight += sr.accepted;
        off += sr.accepted;
        if (!sr.status.ok()) {
          if (sr.status.Is(Errc::kQueueFull) && in_flight != 0)
            break;  // retried after the next reap
          if (first_error.empty()) first_error = sr.status.ToString();
          stop = true;
          break;
        }
      }
      batch.erase(batch.begin(),
                  batch.begin() + static_cast<std::ptrdiff_t>(off));
    };
    submit();

    Clock::time_point last = start;
    while (in_flight != 0) {
      Result<size_t> got = engine->Reap(done, 1, kForever);
      ++reap_calls;
      if (!got.ok()) {
        if (first_error.empty()) first_error = got.status().ToString();
        break;
      }
      const Clock::time_point now = Clock::now();
      last = now;
      reaped += *got;
      in_flight -= *got;
      if (now >= end_at) stop = true;
      for (size_t k = 0; k < *got; ++k) {
        Request* r = done[k];
        const auto idx = static_cast<size_t>(r - reqs.data());
        stats.clat.Record(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(
                now - issue_time[idx])
                .count()));
        stats.lat.Record(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(
                now - submit_start[idx])
                .count()));
        if (r->rval < 0) {
          ++errors[static_cast<int>(-r->rval)];
          if (first_error.empty()) first_error = Describe(*r);
          stop = true;
          continue;
        }
        ++stats.ios;
        stats.bytes += static_cast<uint64_t>(r->rval);
        if (static_cast<uint64_t>(r->rval) < r->length) ++stats.short_ios;
        if (!stop && issued_bytes < budget_bytes) prep(idx);
      }
      if (!batch.empty()) {
        if (stop) {
          batch.clear();
        } else {
          submit();
        }
      }
    }
    ::getrusage(RUSAGE_SELF, &ru1);
    const double seconds = std::chrono::duration<double>(last - start).count();
    const double usr = CpuSeconds(ru1.ru_utime) - CpuSeconds(ru0.ru_utime);
    const double sys = CpuSeconds(ru1.ru_stime) - CpuSeconds(ru0.ru_stime);
    const EngineStats es = engine->Stats();
    (void)engine->Shutdown(kForever);

    const double iops =
        seconds > 0 ? static_cast<double>(stats.ios) / seconds : 0;
    const double bw =
        seconds > 0 ? static_cast<double>(stats.bytes) / seconds : 0;
    const double usr_pct = seconds > 0 ? 100.0 * usr / seconds : 0;
    const double sys_pct = seconds > 0 ? 100.0 * sys / seconds : 0;
    const double cpu_per_io_us =
        stats.ios != 0 ? (usr + sys) * 1e6 / static_cast<double>(stats.ios) : 0;

    if (o.output_format == "json") {
      Json job;
      job["jobname"] = o.name;
      job["groupid"] = 0;
      job["error"] = errors.empty() && first_error.empty()
                         ? 0
                         : (errors.empty() ? EIO : errors.begin()->first);
      job["elapsed"] = static_cast<uint64_t>(std::llround(seconds));
      Json jo;
      jo["name"] = o.name;
      jo["filename"] = target.shown;
      jo["rw"] = o.rw;
      jo["bs"] = std::to_string(o.bs);
      jo["iodepth"] = std::to_string(o.iodepth);
      jo["size"] = std::to_string(target.size);
      jo["direct"] = std::to_string(o.direct);
      jo["ioengine"] = engine->Name();
      if (o.runtime_us != 0)
        jo["runtime"] = std::to_string(o.runtime_us / 1000) + "ms";
      if (o.time_based) jo["time_based"] = "1";
      job["job options"] = jo;
      job["read"] = read ? DirJson(stats, seconds) : EmptyDirJson();
      job["write"] = read ? EmptyDirJson() : DirJson(stats, seconds);
      job["job_runtime"] = static_cast<uint64_t>(seconds * 1000);
      job["usr_cpu"] = usr_pct;
      job["sys_cpu"] = sys_pct;
      job["ctx"] = static_cast<uint64_t>((ru1.ru_nvcsw - ru0.ru_nvcsw) +
                                         (ru1.ru_nivcsw - ru0.ru_nivcsw));
      Json ak;
      ak["engine"] = engine->Name();
      Json passed = Json::array();
      for (const EngineRefusal& r : passed_over) {
        passed.push_back({{"engine", EngineKindName(r.kind)},
                          {"reason", r.reason.ToString()}});
      }
      ak["engines_passed_over"] = passed;
      ak["cpu_per_io_us"] = cpu_per_io_us;
      ak["submit_calls"] = es.submit_calls;
      ak["wait_calls"] = es.wait_calls;
      ak["ring_reaped"] = es.ring_reaped;
      ak["avg_submit_batch"] = submit_batches != 0
                                   ? static_cast<double>(submitted) /
                                         static_cast<double>(submit_batches)
                                   : 0.0;
      ak["avg_reap_batch"] =
          reap_calls != 0
              ? static_cast<double>(reaped) / static_cast<double>(reap_calls)
              : 0.0;
      ak["eagain_retries"] = es.eagain_retries;
      const Capabilities& caps = engine->GetCapabilities();
      Json features;
      features["user_space_reap"] = caps.user_space_reap;
      features["fixed_buffers"] = o.fixedbufs;
      features["fixed_files"] = o.registerfiles;
      features["sqpoll"] = caps.sqpoll;
      features["iopoll"] = caps.iopoll;
      features["single_issuer"] = caps.single_issuer;
      features["defer_taskrun"] = caps.defer_taskrun;
      features["coop_taskrun"] = caps.coop_taskrun;
      features["registered_ring_fd"] = caps.registered_ring_fd;
      features["fallbacks"] = caps.fallbacks;
      ak["engine_features"] = features;
      Json errs = Json::object();
      for (const auto& [e, n] : errors)
        errs[strerrorname_np(e) != nullptr ? strerrorname_np(e)
                                           : std::to_string(e)] = n;
      ak["errors"] = errs;
      if (!first_error.empty()) ak["first_error"] = first_error;
      job["aiokit"] = ak;
      Json root;
      root["fio version"] = std::string("aiokit-") + AIOKIT_VERSION_STRING;
      root["timestamp"] = static_cast<uint64_t>(std::time(nullptr));
      root["jobs"] = Json::array({job});
      out << root.dump(2) << "\n";
    } else {
      const char* dir = read ? "read" : "write";
      out << o.name << ": (g=0): rw=" << o.rw << ", bs=" << o.bs
          << "B, engine=" << engine->Name() << ", iodepth=" << o.iodepth
          << ", direct=" << o.direct << "\n";
      out << "  file: " << target.shown << " (" << FormatBytes(target.size)
          << ")\n";
      char line[256];
      std::snprintf(line, sizeof(line),
                    "  %s: IOPS=%s, BW=%s/s (%.1fMB/s)(%s/%.0fmsec)\n", dir,
                    FormatCount(iops).c_str(),
                    FormatBytes(static_cast<uint64_t>(bw)).c_str(), bw / 1e6,
                    FormatBytes(stats.bytes).c_str(), seconds * 1000);
      out << line;
      out << "    clat: min=" << Ns(stats.clat.min())
          << ", avg=" << Ns(static_cast<uint64_t>(stats.clat.mean()))
          << ", p50=" << Ns(stats.clat.Percentile(50))
          << ", p99=" << Ns(stats.clat.Percentile(99))
          << ", p99.9=" << Ns(stats.clat.Percentile(99.9))
          << ", max=" << Ns(stats.clat.max()) << "\n";
      out << "     lat: min=" << Ns(stats.lat.min())
          << ", avg=" << Ns(static_cast<uint64_t>(stats.lat.mean()))
          << ", p50=" << Ns(stats.lat.Percentile(50))
          << ", p99=" << Ns(stats.lat.Percentile(99))
          << " (submission call included; slat p50="
          << Ns(stats.slat.Percentile(50)) << ")\n";
      std::snprintf(line, sizeof(line),
                    "  cpu: usr=%.2f%%, sys=%.2f%%, %.2fus per I/O\n", usr_pct,
                    sys_pct, cpu_per_io_us);
      out << line;
      std::snprintf(
          line, sizeof(line),
          "  engine: %llu submit calls (%.1f requests each), %llu waits, "
          "%.0f%% of "
          "completions read from the ring without a syscall\n",
          static_cast<unsigned long long>(es.submit_calls),
          es.submit_calls != 0 ? static_cast<double>(es.submitted) /
                                     static_cast<double>(es.submit_calls)
                               : 0.0,
          static_cast<unsigned long long>(es.wait_calls),
          es.completed != 0 ? 100.0 * static_cast<double>(es.ring_reaped) /
                                  static_cast<double>(es.completed)
                            : 0.0);
      out << line;
      for (const EngineRefusal& r : passed_over) {
        out << "  (passed over " << EngineKindName(r.kind) << ": "
            << r.reason.ToString() << ")\n";
      }
    }
    if (!first_error.empty()) {
      err << "aiokit bench: I/O error: " << first_error << "\n";
      return kExitIoError;
    }
    return kExitOk;
  } catch (const UsageError& e) {
    RemoveCreated(target);
    err << "aiokit bench: " << e.line << "\n";
    return kExitUsage;
  }
}

}  // namespace aiokit::tool
