#include "bench.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <variant>
#include <vector>

#include "aiokit/aiokit.h"
#include "histogram.h"
#include "random.h"
#include "target.h"
#include "units.h"
#include "verify.h"

namespace aiokit::tool {
namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::ordered_json;

// fio's default percentile list.
constexpr double kPercentiles[] = {1,  5,  10, 20, 30,   40,   50,    60,   70,
                                   80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};
// Mismatch lines kept per clone (all are counted).
constexpr size_t kMaxVerifyLines = 10;

// An engine this machine refuses: a row of --compare, a usage error (exit
// status 2) otherwise.
struct EngineRefused {
  std::string engine;  // as asked ("default": $AIOKIT_ENGINE, else auto)
  std::string reason;
  // The error line without --compare.
  [[nodiscard]] std::string Line() const {
    return "--ioengine=" + engine + ": " + reason;
  }
};

// Prints a usage error's line and returns the exit status for it.
int ExitUsage(std::ostream& err, const std::string& line) {
  err << "aiokit bench: " << line << "\n";
  return kExitUsage;
}

std::string PercentKey(double p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6f", p);
  return buf;
}

uint64_t NsBetween(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

double CpuSeconds(const timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

// -------------------------------------------------------------- One clone

struct DirStats {
  uint64_t ios = 0;
  uint64_t bytes = 0;
  uint64_t short_ios = 0;
  LatencyHistogram slat;  // submission call's start to its return
  LatencyHistogram clat;  // from there to the completion being reaped
  LatencyHistogram lat;   // the two together
  void Merge(const DirStats& o) {
    ios += o.ios;
    bytes += o.bytes;
    short_ios += o.short_ios;
    slat.Merge(o.slat);
    clat.Merge(o.clat);
    lat.Merge(o.lat);
  }
};

struct CloneResult {
  std::string job;
  unsigned clone = 0;
  std::string engine;
  std::vector<EngineRefusal> passed_over;
  Capabilities caps;
  EngineStats es;
  DirStats read, write, sync;
  std::map<int, uint64_t> errors;  // errno -> completions
  std::string first_error;
  uint64_t submit_calls = 0, submitted = 0, reap_calls = 0, reaped = 0;
  uint64_t verify_checked = 0, verify_failed = 0;
  std::vector<std::string> verify_lines;
  // --inject: the spec with its seed, what was injected, and requests reaped
  // while not in flight (must stay 0).
  std::string inject;
  FaultStats faults;
  uint64_t reaped_twice = 0;
  double seconds = 0;  // measured: from the end of ramp_time to the last
                       // completion
  void Merge(const CloneResult& o) {
    read.Merge(o.read);
    write.Merge(o.write);
    sync.Merge(o.sync);
    for (const auto& [e, n] : o.errors) errors[e] += n;
    if (first_error.empty()) first_error = o.first_error;
    submit_calls += o.submit_calls;
    submitted += o.submitted;
    reap_calls += o.reap_calls;
    reaped += o.reaped;
    verify_checked += o.verify_checked;
    verify_failed += o.verify_failed;
    if (inject.empty()) inject = o.inject;
    faults.submit_calls += o.faults.submit_calls;
    faults.accepted += o.faults.accepted;
    faults.completed += o.faults.completed;
    faults.eagain += o.faults.eagain;
    faults.partial += o.faults.partial;
    faults.short_io += o.faults.short_io;
    faults.eio += o.faults.eio;
    faults.enospc += o.faults.enospc;
    faults.delayed += o.faults.delayed;
    faults.reordered += o.faults.reordered;
    faults.stalls += o.faults.stalls;
    reaped_twice += o.reaped_twice;
    for (const std::string& l : o.verify_lines) {
      if (verify_lines.size() < kMaxVerifyLines) verify_lines.push_back(l);
    }
    seconds = std::max(seconds, o.seconds);
    es.submit_calls += o.es.submit_calls;
    es.submitted += o.es.submitted;
    es.wait_calls += o.es.wait_calls;
    es.completed += o.es.completed;
    es.ring_reaped += o.es.ring_reaped;
    es.eagain_retries += o.es.eagain_retries;
  }
};

// What the clones and the run share.
struct RunShared {
  std::mutex mu;
  std::condition_variable cv;
  unsigned ready = 0;  // clones that set up (or failed to)
  bool go = false;     // start the clock
  bool abort = false;  // a clone could not set up: everyone leaves
  // Why the run cannot start (the first clone's reason): an engine refused, or
  // a usage error.
  std::optional<EngineRefused> refused;
  Status usage;
  Clock::time_point start;  // when the clones start
  // The process's CPU time when the last clone ends its measured phase.
  unsigned running = 0;
  rusage ru_end{};
  Clock::time_point end;
  uint64_t inject_seed = 0;  // --inject without a seed: this run's
};

struct Progress {
  std::atomic<uint64_t> ios{0};
  std::atomic<uint64_t> bytes{0};
};

enum class Kind : uint8_t { kRead, kWrite, kSync };

class Clone {
 public:
  Clone(const JobOptions& o, unsigned index, Target* target, RunShared* shared,
        Progress* progress, uint64_t seed)
      : o_(o),
        index_(index),
        t_(target),
        shared_(shared),
        progress_(progress),
        rng_(seed),
        read_pct_(o.ReadPercent()),
        random_(o.Random()) {
    r_.job = o.name;
    r_.clone = index;
  }

  CloneResult Run() {
    if (!SetUp()) return std::move(r_);
    if (!WaitForGo()) return std::move(r_);
    Main();
    if (!o_.verify.empty() && o_.Writes() && r_.first_error.empty()) {
      VerifyWritten();
    }
    r_.es = engine_->Stats();
    (void)engine_->Shutdown(kForever);
    if (fault_ != nullptr) {
      r_.faults = fault_->fault_stats();
      // Every request handed to the engine came back exactly once.
      if (r_.reaped_twice != 0) {
        r_.first_error = std::to_string(r_.reaped_twice) +
                         " requests were reaped while not in flight";
      } else if (r_.faults.accepted != r_.faults.completed &&
                 r_.first_error.empty()) {
        r_.first_error =
            "fault injection: " + std::to_string(r_.faults.accepted) +
            " requests accepted, " + std::to_string(r_.faults.completed) +
            " completed";
      }
    }
    return std::move(r_);
  }

 private:
  struct Slot {
    Kind kind = Kind::kRead;
    uint64_t block = 0;    // verify: the block index
    uint64_t gen = 0;      // verify: the generation written
    bool pending = false;  // accepted by the engine, not reaped yet
    Clock::time_point submit_start, issued;
  };

  // This clone cannot start, and why: an engine refused, or a usage error.
  void Fail(std::optional<EngineRefused> refused, Status usage) {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (!shared_->refused && shared_->usage.ok()) {
      shared_->refused = std::move(refused);
      shared_->usage = std::move(usage);
    }
    shared_->abort = true;
    ++shared_->ready;
    shared_->cv.notify_all();
  }

  // Creates the engine (here: io_uring may tie the ring to its creating
  // thread), the buffers and the registrations. False if the run must stop.
  bool SetUp() {
    const std::string job = o_.name == "aiokit" ? "" : " (job " + o_.name + ")";
    EngineOptions eo;
    Result<EngineKind> kind = ParseEngineKind(o_.engine);
    eo.kind = kind.ok() ? *kind : EngineKind::kAuto;
    eo.queue_depth = o_.iodepth;
    eo.notify_fd = false;  // nothing polls it here
    if (o_.spin_us >= 0) {
      eo.spin_before_wait = std::chrono::microseconds(o_.spin_us);
    }
    eo.adaptive_spin = !o_.spin_always;
    // One clone, one thread: the engine may use what that allows (io_uring:
    // SINGLE_ISSUER, a registered ring fd), as fio does.
    eo.single_thread = true;
    eo.sqpoll = o_.sqthread_poll;
    eo.sqpoll_cpu = o_.sqthread_poll_cpu;
    eo.iopoll = o_.hipri;
    eo.threads_min = o_.threads_min;
    eo.threads_max = o_.threads_max;
    eo.threads_ordered_per_fd = o_.threads_ordered;
    Result<std::unique_ptr<Engine>> made = MakeEngine(eo, &r_.passed_over);
    if (!made.ok()) {
      Fail(EngineRefused{o_.engine, made.status().ToString()}, Status());
      return false;
    }
    engine_ = std::move(*made);
    if (!o_.inject.empty()) {
      Result<FaultSpec> spec = ParseFaultSpec(o_.inject);
      if (!spec.ok()) {  // checked when parsed; kept for safety
        Fail(std::nullopt,
             UsageError("--inject" + job + ": " + spec.status().ToString()));
        return false;
      }
      // One seed per run (printed), one stream per clone.
      if (spec->seed == 0) spec->seed = shared_->inject_seed;
      spec->seed += r_.clone;
      Result<std::unique_ptr<FaultInjectingEngine>> wrapped =
          MakeFaultInjectingEngine(std::move(engine_), *spec);
      if (!wrapped.ok()) {
        Fail(std::nullopt,
             UsageError("--inject" + job + ": " + wrapped.status().ToString()));
        return false;
      }
      fault_ = wrapped->get();
      r_.inject = FaultSpecString(fault_->spec());
      engine_ = std::move(*wrapped);
    }
    r_.engine = engine_->Name();
    r_.caps = engine_->GetCapabilities();
    const Alignment align = t_->file.alignment();
    const size_t mem_align =
        std::max<size_t>(align.known() ? align.memory : 1, 4096);
    Result<BufferPool> pool =
        BufferPool::Create(o_.iodepth, o_.MaxBs(), mem_align);
    if (!pool.ok()) {
      Fail(std::nullopt, UsageError("--bs x --iodepth" + job + ": " +
                                    pool.status().ToString()));
      return false;
    }
    pool_ = std::move(*pool);
    if (o_.fixedbufs) {
      if (Status s = engine_->RegisterBuffers(pool_.iovecs()); !s.ok()) {
        Fail(std::nullopt,
             UsageError("--fixedbufs" + job + ": " + s.ToString()));
        return false;
      }
    }
    if (o_.registerfiles) {
      const int fd = t_->file.fd();
      if (Status s = engine_->RegisterFiles(std::span<const int>(&fd, 1));
          !s.ok()) {
        Fail(std::nullopt,
             UsageError("--registerfiles" + job + ": " + s.ToString()));
        return false;
      }
    }
    if (o_.Writes() && o_.verify.empty()) {
      for (size_t b = 0; b < pool_.count(); ++b) {
        for (size_t i = 0; i + 8 <= o_.MaxBs(); i += 8) {
          const uint64_t v = rng_.Next();
          std::memcpy(pool_.buffer(b) + i, &v, 8);
        }
      }
    }
    perm_ = Permutation(t_->size / o_.bs, rng_);
    reqs_.resize(o_.iodepth);
    slots_.resize(o_.iodepth);
    done_.resize(o_.iodepth);
    batch_.reserve(o_.iodepth);
    if (!o_.verify.empty()) {
      const uint64_t blocks = t_->size / o_.bs;
      gen_done_.assign(blocks, 0);
      busy_.assign(blocks, 0);
    }
    std::lock_guard<std::mutex> lock(shared_->mu);
    ++shared_->ready;
    shared_->cv.notify_all();
    return true;
  }

  bool WaitForGo() {
    std::unique_lock<std::mutex> lock(shared_->mu);
    shared_->cv.wait(lock, [&] { return shared_->go || shared_->abort; });
    return !shared_->abort;
  }

  // The next block size and offset in the region (relative to its start).
  // False when verify finds no block free of I/O in flight.
  bool PickPlace(Kind kind, uint64_t* len, uint64_t* off) {
    const uint64_t unit = o_.MinBs();
    uint64_t n = o_.bs;
    if (o_.bs_min != 0) n = unit * (1 + rng_.Below(o_.MaxBs() / unit));
    const uint64_t size = t_->size;
    if (random_) {
      const uint64_t places = (size - n) / unit + 1;
      // One size: every block once per pass, in random order (fio's random
      // map). Block sizes from a range: offsets at random.
      *off = (o_.bs_min != 0 ? rng_.Below(places) : perm_.Next()) * unit;
      if (!busy_.empty()) {
        // Verify: never two requests on one block at once. Probe onward.
        const uint64_t blocks = busy_.size();
        uint64_t b = *off / n;
        for (uint64_t k = 0; k < blocks && busy_[b] != 0; ++k) {
          b = b + 1 == blocks ? 0 : b + 1;
        }
        if (busy_[b] != 0) return false;
        *off = b * n;
      }
    } else {
      if (seq_off_ + n > size) seq_off_ = 0;
      *off = seq_off_;
      if (!busy_.empty() && busy_[*off / n] != 0) return false;
      seq_off_ += n;
    }
    (void)kind;
    *len = n;
    return true;
  }

  // Prepares slot i for the next request; false if none can be issued now.
  bool Prep(size_t i) {
    Slot& s = slots_[i];
    Request& r = reqs_[i];
    if (o_.fsync != 0 && writes_since_fsync_ >= o_.fsync) {
      writes_since_fsync_ = 0;
      s.kind = Kind::kSync;
      r.PrepFsync(t_->file.fd());
      r.priv = nullptr;
      batch_.push_back(&r);
      return true;
    }
    const unsigned pct = read_pct_;
    const Kind kind = pct == 100              ? Kind::kRead
                      : pct == 0              ? Kind::kWrite
                      : rng_.Below(100) < pct ? Kind::kRead
                                              : Kind::kWrite;
    uint64_t len = 0, off = 0;
    if (!PickPlace(kind, &len, &off)) return false;
    s.kind = kind;
    char* buf = pool_.buffer(i);
    const uint64_t at = t_->offset + off;
    if (!busy_.empty()) {
      s.block = off / o_.bs;
      busy_[s.block] = 1;
    }
    if (kind == Kind::kRead) {
      r.PrepRead(t_->file, buf, len, at);
    } else {
      if (!busy_.empty()) {
        s.gen = ++next_gen_;
        FillVerifyBlock(buf, len, at, s.gen);
      }
      r.PrepWrite(t_->file, buf, len, at);
      ++writes_since_fsync_;
    }
    if (o_.fixedbufs) r.SetFixedBuffer(static_cast<int16_t>(i));
    issued_bytes_ += len;
    batch_.push_back(&r);
    return true;
  }

  void Submit() {
    const size_t per_call = o_.SubmitBatch();
    size_t off = 0;
    while (off < batch_.size()) {
      const size_t n = std::min(per_call, batch_.size() - off);
      const Clock::time_point before = Clock::now();
      const uint64_t eagain_before = InjectedEagains();
      SubmitResult sr =
          engine_->Submit(std::span<Request* const>(batch_.data() + off, n));
      ++r_.submit_calls;
      const Clock::time_point now = Clock::now();
      for (size_t k = off; k < off + sr.accepted; ++k) {
        Slot& s = slots_[static_cast<size_t>(batch_[k] - reqs_.data())];
        s.submit_start = before;
        s.issued = now;
        s.pending = true;
      }
      // slat is recorded at completion, into its direction.
      r_.submitted += sr.accepted;
      in_flight_ += sr.accepted;
      off += sr.accepted;
      if (!sr.status.ok()) {
        if (sr.status.Is(Errc::kQueueFull) && in_flight_ != 0) {
          break;  // retried after the next reap
        }
        // An injected EAGAIN with nothing in flight: at once again.
        if (sr.status.Is(Errc::kQueueFull) && InjectedEagain(eagain_before)) {
          continue;
        }
        if (r_.first_error.empty()) r_.first_error = sr.status.ToString();
        stop_ = true;
        break;
      }
    }
    if (stop_) {
      // Requests never accepted free their blocks and slots.
      for (size_t k = off; k < batch_.size(); ++k) {
        const auto i = static_cast<size_t>(batch_[k] - reqs_.data());
        if (!busy_.empty() && slots_[i].kind != Kind::kSync) {
          busy_[slots_[i].block] = 0;
        }
      }
      batch_.clear();
      return;
    }
    batch_.erase(batch_.begin(),
                 batch_.begin() + static_cast<std::ptrdiff_t>(off));
  }

  // --inject: EAGAINs injected so far (0 without it).
  uint64_t InjectedEagains() const {
    return fault_ != nullptr ? fault_->fault_stats().eagain : 0;
  }
  // True when the Submit that began at `before` met an injected EAGAIN (a
  // real, lasting kQueueFull with nothing in flight stays an error).
  bool InjectedEagain(uint64_t before) const {
    return fault_ != nullptr && InjectedEagains() > before;
  }
  // Without --inject, Reap waits as long as it takes; with it, a completion
  // that never comes is what the run checks for: wait long past any injected
  // delay or stall, then report it.
  std::chrono::nanoseconds ReapTimeout() const {
    if (fault_ == nullptr) return kForever;
    const FaultSpec& f = fault_->spec();
    return std::chrono::seconds(30) +
           2 * (f.delay_for + f.reorder_for + f.stall_for);
  }
  void Lost() {
    if (!r_.first_error.empty()) return;
    r_.first_error =
        "fault injection: " + std::to_string(in_flight_) +
        " requests accepted and never completed (no completion for " +
        std::to_string(
            std::chrono::duration_cast<std::chrono::seconds>(ReapTimeout())
                .count()) +
        " s)";
  }
  // Drops from done_[0, n) any request that was not in flight (reaped twice,
  // or never submitted: counted, never handled as a completion); returns how
  // many are left, moved to the front.
  size_t Fresh(size_t n) {
    size_t kept = 0;
    for (size_t k = 0; k < n; ++k) {
      const auto i = static_cast<size_t>(done_[k] - reqs_.data());
      if (i >= slots_.size() || !slots_[i].pending) {
        ++r_.reaped_twice;
        continue;
      }
      done_[kept++] = done_[k];
    }
    return kept;
  }

  void Complete(size_t i, Clock::time_point now, bool measuring) {
    Slot& s = slots_[i];
    Request& r = reqs_[i];
    DirStats& d = s.kind == Kind::kRead    ? r_.read
                  : s.kind == Kind::kWrite ? r_.write
                                           : r_.sync;
    if (measuring) {
      d.slat.Record(NsBetween(s.submit_start, s.issued));
      d.clat.Record(NsBetween(s.issued, now));
      d.lat.Record(NsBetween(s.submit_start, now));
    }
    s.pending = false;
    const bool tracked = !busy_.empty() && s.kind != Kind::kSync;
    if (tracked) busy_[s.block] = 0;
    if (r.rval < 0) {
      ++r_.errors[static_cast<int>(-r.rval)];
      if (fault_ != nullptr) {
        // Injected (or real) errors are counted and the run goes on; a block
        // whose write failed holds unknown data.
        if (tracked && s.kind == Kind::kWrite) gen_done_[s.block] = kTorn;
        return;
      }
      if (r_.first_error.empty()) r_.first_error = Describe(r);
      stop_ = true;
      return;
    }
    if (measuring) {
      ++d.ios;
      d.bytes += static_cast<uint64_t>(r.rval);
      if (static_cast<uint64_t>(r.rval) < r.length) ++d.short_ios;
    }
    if (tracked) {
      if (s.kind == Kind::kWrite) {
        if (static_cast<uint64_t>(r.rval) == r.length) {
          gen_done_[s.block] = s.gen;
        } else {
          gen_done_[s.block] = kTorn;  // a short write: not checkable
        }
      } else if (static_cast<uint64_t>(r.rval) == r.length) {
        Check(pool_.buffer(i), r.length, r.offset, gen_done_[s.block]);
      }
    }
  }

  // A read block against what this clone wrote there (`gen`: 0 for never
  // written in this run).
  void Check(const char* buf, uint64_t len, uint64_t at, uint64_t gen) {
    if (gen == kTorn) return;
    // Generation 0: not written by this clone; known only when this run laid
    // the region out, otherwise any whole block of the right offset will do
    // for a read job, and nothing can be said in a job that writes (another
    // program may have left anything there).
    std::optional<uint64_t> want;
    if (gen != 0 || t_->verify_layout) {
      want = gen;
    } else if (o_.Writes()) {
      return;
    }
    ++r_.verify_checked;
    std::string bad = CheckVerifyBlock(buf, len, at, want);
    if (!bad.empty()) {
      ++r_.verify_failed;
      if (r_.verify_lines.size() < kMaxVerifyLines) {
        r_.verify_lines.push_back(std::move(bad));
      }
    }
  }

  void Main() {
    const Clock::time_point start = shared_->start;
    const Clock::time_point measure_from =
        start + std::chrono::microseconds(o_.ramp_time_us);
    const Clock::time_point end_at =
        o_.runtime_us != 0
            ? measure_from + std::chrono::microseconds(o_.runtime_us)
            : Clock::time_point::max();
    bool measuring = o_.ramp_time_us == 0;
    const uint64_t budget = o_.time_based ? UINT64_MAX : t_->size;
    const size_t cmax = o_.iodepth_batch_complete_max != 0
                            ? o_.iodepth_batch_complete_max
                            : o_.iodepth;
    std::vector<size_t> idle;  // slots with nothing to do
    for (size_t i = 0; i < o_.iodepth; ++i) idle.push_back(i);
    auto refill = [&] {
      // An fsync that is due still goes after the last write.
      while (!idle.empty() && !stop_ &&
             (issued_bytes_ < budget ||
              (o_.fsync != 0 && writes_since_fsync_ >= o_.fsync))) {
        if (!Prep(idle.back())) break;
        idle.pop_back();
      }
    };
    refill();
    Submit();
    Clock::time_point last = start;
    uint64_t shown_ios = 0, shown_bytes = 0;
    while (in_flight_ != 0) {
      const size_t min =
          std::min<size_t>(o_.iodepth_batch_complete_min, in_flight_);
      Result<size_t> got = engine_->Reap(
          std::span<Request*>(done_.data(), std::min(cmax, done_.size())), min,
          ReapTimeout());
      ++r_.reap_calls;
      if (!got.ok()) {
        if (r_.first_error.empty()) r_.first_error = got.status().ToString();
        break;
      }
      const size_t raw = *got;
      got = Fresh(raw);
      if (raw == 0 && min != 0 && fault_ != nullptr) {
        Lost();
        break;
      }
      const Clock::time_point now = Clock::now();
      if (*got != 0) last = now;
      r_.reaped += *got;
      in_flight_ -= *got;
      if (!measuring && now >= measure_from) {
        // The ramp is over: what follows is measured.
        measuring = true;
        r_.read = DirStats{};
        r_.write = DirStats{};
        r_.sync = DirStats{};
        if (!o_.time_based) issued_bytes_ = 0;
        last = measure_from;
      }
      if (now >= end_at) stop_ = true;
      for (size_t k = 0; k < *got; ++k) {
        const auto i = static_cast<size_t>(done_[k] - reqs_.data());
        Complete(i, now, measuring && now >= measure_from);
        idle.push_back(i);
      }
      refill();
      if (!batch_.empty()) {
        if (stop_) {
          for (Request* r : batch_) {
            const auto i = static_cast<size_t>(r - reqs_.data());
            if (!busy_.empty() && slots_[i].kind != Kind::kSync) {
              busy_[slots_[i].block] = 0;
            }
          }
          batch_.clear();
        } else {
          Submit();
        }
      }
      const uint64_t ios = r_.read.ios + r_.write.ios + r_.sync.ios;
      if (ios - shown_ios >= 64 || in_flight_ == 0) {
        progress_->ios.fetch_add(ios - shown_ios, std::memory_order_relaxed);
        const uint64_t bytes = r_.read.bytes + r_.write.bytes;
        progress_->bytes.fetch_add(bytes - shown_bytes,
                                   std::memory_order_relaxed);
        shown_ios = ios;
        shown_bytes = bytes;
      }
    }
    r_.seconds = measuring ? std::chrono::duration<double>(
                                 std::max(last, measure_from) - measure_from)
                                 .count()
                           : 0.0;
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (--shared_->running == 0) {
      ::getrusage(RUSAGE_SELF, &shared_->ru_end);
      shared_->end = Clock::now();
    }
  }

  // After a job that wrote: read back every block it wrote, at its depth,
  // and check each against the generation written last.
  void VerifyWritten() {
    const uint64_t blocks = gen_done_.size();
    uint64_t next = 0;
    std::vector<size_t> idle;
    for (size_t i = 0; i < o_.iodepth; ++i) idle.push_back(i);
    in_flight_ = 0;
    for (;;) {
      while (!idle.empty() && next < blocks) {
        if (gen_done_[next] == 0 || gen_done_[next] == kTorn) {
          ++next;
          continue;
        }
        const size_t i = idle.back();
        idle.pop_back();
        slots_[i].block = next;
        reqs_[i].PrepRead(t_->file, pool_.buffer(i), o_.bs,
                          t_->offset + next * o_.bs);
        if (o_.fixedbufs) reqs_[i].SetFixedBuffer(static_cast<int16_t>(i));
        batch_.push_back(&reqs_[i]);
        ++next;
      }
      size_t off = 0;
      while (off < batch_.size()) {
        const uint64_t eagain_before = InjectedEagains();
        SubmitResult sr = engine_->Submit(std::span<Request* const>(
            batch_.data() + off, batch_.size() - off));
        for (size_t k = off; k < off + sr.accepted; ++k) {
          slots_[static_cast<size_t>(batch_[k] - reqs_.data())].pending = true;
        }
        off += sr.accepted;
        in_flight_ += sr.accepted;
        if (!sr.status.ok()) {
          if (sr.status.Is(Errc::kQueueFull) && in_flight_ != 0) break;
          if (sr.status.Is(Errc::kQueueFull) && InjectedEagain(eagain_before)) {
            continue;
          }
          if (r_.first_error.empty()) {
            r_.first_error = "verify: " + sr.status.ToString();
          }
          batch_.clear();
          off = 0;
          next = blocks;
          break;
        }
      }
      batch_.erase(batch_.begin(),
                   batch_.begin() + static_cast<std::ptrdiff_t>(off));
      if (in_flight_ == 0) break;
      Result<size_t> got = engine_->Reap(done_, 1, ReapTimeout());
      if (!got.ok()) {
        if (r_.first_error.empty()) {
          r_.first_error = "verify: " + got.status().ToString();
        }
        return;
      }
      const size_t raw = *got;
      got = Fresh(raw);
      if (raw == 0 && fault_ != nullptr) {
        Lost();
        return;
      }
      in_flight_ -= *got;
      for (size_t k = 0; k < *got; ++k) {
        Request* r = done_[k];
        const auto i = static_cast<size_t>(r - reqs_.data());
        idle.push_back(i);
        slots_[i].pending = false;
        if (r->rval < 0) {
          ++r_.errors[static_cast<int>(-r->rval)];
          if (r_.first_error.empty() && fault_ == nullptr)
            r_.first_error = "verify: " + Describe(*r);
          continue;
        }
        if (fault_ != nullptr && static_cast<uint64_t>(r->rval) != r->length) {
          continue;  // a short read may be injected: not checkable
        }
        if (static_cast<uint64_t>(r->rval) != r->length) {
          ++r_.verify_failed;
          if (r_.verify_lines.size() < kMaxVerifyLines) {
            r_.verify_lines.push_back(
                "offset " + std::to_string(r->offset) + ": expected " +
                std::to_string(r->length) + " bytes, read " +
                std::to_string(r->rval) + " (the file is shorter)");
          }
          continue;
        }
        Check(pool_.buffer(i), r->length, r->offset,
              gen_done_[slots_[i].block]);
      }
    }
  }

  static constexpr uint64_t kTorn = UINT64_MAX;

  const JobOptions& o_;
  unsigned index_;
  Target* t_;
  RunShared* shared_;
  Progress* progress_;
  Rng rng_;
  // o_.ReadPercent() and o_.Random(), asked once: they compare strings (1% of
  // the CPU of a page-cache run when asked per request).
  unsigned read_pct_;
  bool random_;
  Permutation perm_;
  CloneResult r_;
  BufferPool pool_;
  std::vector<Request> reqs_;
  std::vector<Slot> slots_;
  std::vector<Request*> done_;
  std::vector<Request*> batch_;
  size_t in_flight_ = 0;
  bool stop_ = false;
  uint64_t issued_bytes_ = 0;
  uint64_t seq_off_ = 0;
  uint64_t writes_since_fsync_ = 0;
  // Verify: the generation last written to each block (0: not in this run),
  // and whether a request on it is in flight.
  std::vector<uint64_t> gen_done_;
  std::vector<uint8_t> busy_;
  uint64_t next_gen_ = 0;
  // Last, so destroyed first: requests still in flight (a run that stopped on
  // an error) are waited for while their memory and buffers still exist.
  std::unique_ptr<Engine> engine_;
  FaultInjectingEngine* fault_ = nullptr;  // engine_, when --inject wraps it
};

// -------------------------------------------------------------- One run

struct RunResult {
  std::vector<CloneResult> clones;
  std::vector<const JobOptions*> job_of;  // per clone
  double usr = 0, sys = 0;                // process CPU seconds, measured
  double wall = 0;                        // seconds from go to the last end
  uint64_t ctx = 0;
  std::vector<std::string> shown;  // per clone: the target as printed
  std::vector<uint64_t> sizes;     // per clone: the region's bytes
};

std::string JobSuffix(const BenchPlan& plan, const JobOptions& j) {
  return plan.jobs.size() > 1 || j.name != "aiokit" ? " (job " + j.name + ")"
                                                    : "";
}

// What one run gives: what it measured (failed I/O and verify mismatches
// included), or why it did not start: a usage error (a bad option or
// combination that only the files or the engines revealed) or an engine this
// machine refuses. Files the run created are removed when it did not start.
using RunOutcome = std::variant<RunResult, Status, EngineRefused>;

// Runs every job of the plan together.
RunOutcome RunOnce(const BenchPlan& plan, std::ostream& err, bool tty) {
  for (const JobOptions& j : plan.jobs) {
    if (Status bad = ValidateJob(j, plan); !bad.ok()) return bad;
  }
  Targets targets;
  std::vector<Target*> target_of;
  RunResult res;
  for (const JobOptions& j : plan.jobs) {
    const std::string suffix = JobSuffix(plan, j);
    Target* shared = nullptr;
    for (unsigned c = 0; c < j.numjobs; ++c) {
      // A named file is shared by the clones; the default temporary file is
      // one per clone, as fio gives each clone a file of its own.
      if (shared == nullptr || j.filename.empty()) {
        targets.all.push_back(std::make_unique<Target>());
        if (Status bad = OpenTarget(j, suffix, *targets.all.back());
            !bad.ok()) {
          return bad;
        }
        shared = targets.all.back().get();
      }
      target_of.push_back(shared);
      res.job_of.push_back(&j);
      res.shown.push_back(shared->shown);
      res.sizes.push_back(shared->size);
    }
  }
  const size_t n = target_of.size();
  RunShared shared;
  {
    std::random_device rd;
    shared.inject_seed =
        ((uint64_t{rd()} << 32) | rd()) & ((uint64_t{1} << 62) - 1);
    if (shared.inject_seed == 0) shared.inject_seed = 1;
  }
  std::vector<Progress> progress(n);
  std::vector<CloneResult> results(n);
  std::vector<std::thread> threads;
  shared.running = static_cast<unsigned>(n);
  const auto seed_base = static_cast<uint64_t>(::getpid()) * 7919 + 17;
  for (size_t i = 0; i < n; ++i) {
    // std::thread reports that it could not start a thread only by throwing
    // std::system_error; it is caught here, at that one call, and becomes a
    // usage error like any other.
    try {
      threads.emplace_back([&, i] {
        Clone c(*res.job_of[i], static_cast<unsigned>(i), target_of[i], &shared,
                &progress[i], seed_base + i * 0x9E3779B97F4A7C15ULL);
        results[i] = c.Run();
      });
    } catch (const std::system_error& e) {
      // The clones started so far are told to leave, then joined.
      {
        std::lock_guard<std::mutex> lock(shared.mu);
        shared.abort = true;
        shared.cv.notify_all();
      }
      for (std::thread& t : threads) t.join();
      return UsageError("--numjobs: could not start clone " +
                        std::to_string(i) + " of " + std::to_string(n) + " (" +
                        e.what() + ")");
    }
  }
  rusage ru0;
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    shared.cv.wait(lock, [&] { return shared.ready == n; });
    if (!shared.abort) {
      shared.start = Clock::now();
      ::getrusage(RUSAGE_SELF, &ru0);
      shared.go = true;
    }
    shared.cv.notify_all();
  }
  // Ramp: the CPU that counts starts when measuring does.
  uint64_t ramp = 0;
  for (const JobOptions& j : plan.jobs) ramp = std::max(ramp, j.ramp_time_us);
  uint64_t expect_us = 0;  // for the ETA: the longest runtime, if any
  for (const JobOptions& j : plan.jobs) {
    expect_us = std::max(expect_us, j.ramp_time_us + j.runtime_us);
  }
  uint64_t total_bytes = 0;
  for (const uint64_t size : res.sizes) total_bytes += size;
  bool ramp_done = ramp == 0;
  bool printed = false;
  uint64_t last_ios = 0, last_bytes = 0;
  Clock::time_point last_t = shared.start;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(shared.mu);
      if (shared.abort) break;
      const bool over = shared.cv.wait_for(
          lock, std::chrono::milliseconds(ramp_done ? 1000 : 50),
          [&] { return shared.running == 0; });
      if (over) break;
    }
    const Clock::time_point now = Clock::now();
    if (!ramp_done && now >= shared.start + std::chrono::microseconds(ramp)) {
      ::getrusage(RUSAGE_SELF, &ru0);
      ramp_done = true;
    }
    if (tty && ramp_done) {
      uint64_t ios = 0, bytes = 0;
      for (const Progress& p : progress) {
        ios += p.ios.load(std::memory_order_relaxed);
        bytes += p.bytes.load(std::memory_order_relaxed);
      }
      const double dt = std::chrono::duration<double>(now - last_t).count();
      const double el =
          std::chrono::duration<double>(now - shared.start).count();
      char line[160];
      std::string eta = "--";
      double left = -1;
      if (expect_us != 0) {
        left = static_cast<double>(expect_us) / 1e6 - el;
      } else if (bytes != 0 && el > 0) {
        // Jobs that end when --size is done: at the rate so far.
        left = static_cast<double>(total_bytes - std::min(bytes, total_bytes)) /
               (static_cast<double>(bytes) / el);
      }
      if (left >= 0) {
        char b[32];
        std::snprintf(b, sizeof(b), "%.0fs", left);
        eta = b;
      }
      std::snprintf(
          line, sizeof(line),
          "\r[%.0fs elapsed, eta %s] IOPS=%s, BW=%s/s\033[K", el, eta.c_str(),
          FormatCount(dt > 0 ? static_cast<double>(ios - last_ios) / dt : 0)
              .c_str(),
          FormatBytes(
              static_cast<uint64_t>(
                  dt > 0 ? static_cast<double>(bytes - last_bytes) / dt : 0))
              .c_str());
      err << line << std::flush;
      printed = true;
      last_ios = ios;
      last_bytes = bytes;
      last_t = now;
    }
  }
  for (std::thread& t : threads) t.join();
  if (printed) err << "\r\033[K" << std::flush;
  if (shared.refused) return *shared.refused;
  if (!shared.usage.ok()) return shared.usage;
  res.usr = CpuSeconds(shared.ru_end.ru_utime) - CpuSeconds(ru0.ru_utime);
  res.sys = CpuSeconds(shared.ru_end.ru_stime) - CpuSeconds(ru0.ru_stime);
  res.ctx = static_cast<uint64_t>((shared.ru_end.ru_nvcsw - ru0.ru_nvcsw) +
                                  (shared.ru_end.ru_nivcsw - ru0.ru_nivcsw));
  res.wall = std::chrono::duration<double>(shared.end - shared.start).count();
  res.clones = std::move(results);
  targets.Keep();
  return res;
}

// ------------------------------------------------------------- Reporting

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
  const double bw_bytes =
      seconds > 0 ? static_cast<double>(d.bytes) / seconds : 0;
  j["io_bytes"] = d.bytes;
  j["io_kbytes"] = d.bytes / 1024;
  j["bw_bytes"] = static_cast<uint64_t>(bw_bytes);
  j["bw"] = static_cast<uint64_t>(bw_bytes / 1024);  // KiB/s, as fio
  j["iops"] = seconds > 0 ? static_cast<double>(d.ios) / seconds : 0.0;
  j["runtime"] = static_cast<uint64_t>(seconds * 1000.0);
  j["total_ios"] = d.ios;
  j["short_ios"] = d.short_ios;
  j["slat_ns"] = LatJson(d.slat);
  j["clat_ns"] = LatJson(d.clat);
  j["lat_ns"] = LatJson(d.lat);
  return j;
}

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

std::string ErrnoName(int e) {
  const char* n = strerrorname_np(e);
  return n != nullptr ? n : std::to_string(e);
}

// One report entry: a clone, or a job's clones merged (group_reporting).
struct Entry {
  const JobOptions* job;
  CloneResult r;
  std::string shown;
  uint64_t size;
  unsigned clones = 1;
};

std::vector<Entry> Entries(const BenchPlan& plan, const RunResult& res) {
  std::vector<Entry> out;
  for (size_t i = 0; i < res.clones.size(); ++i) {
    const JobOptions* j = res.job_of[i];
    if (plan.group_reporting && !out.empty() && out.back().job == j) {
      out.back().r.Merge(res.clones[i]);
      ++out.back().clones;
      continue;
    }
    out.push_back(Entry{j, res.clones[i], res.shown[i], res.sizes[i], 1});
  }
  return out;
}

uint64_t TotalIos(const CloneResult& r) {
  return r.read.ios + r.write.ios + r.sync.ios;
}

// The engine-side numbers every report carries.
Json AiokitJson(const Entry& e, const RunResult& res, uint64_t run_ios) {
  const CloneResult& r = e.r;
  Json ak;
  ak["engine"] = r.engine;
  Json passed = Json::array();
  for (const EngineRefusal& p : r.passed_over) {
    passed.push_back(
        {{"engine", EngineKindName(p.kind)}, {"reason", p.reason.ToString()}});
  }
  ak["engines_passed_over"] = passed;
  const double cpu = res.usr + res.sys;
  ak["cpu_per_io_us"] =
      run_ios != 0 ? cpu * 1e6 / static_cast<double>(run_ios) : 0.0;
  ak["usr_per_io_us"] =
      run_ios != 0 ? res.usr * 1e6 / static_cast<double>(run_ios) : 0.0;
  ak["sys_per_io_us"] =
      run_ios != 0 ? res.sys * 1e6 / static_cast<double>(run_ios) : 0.0;
  ak["submit_calls"] = r.es.submit_calls;
  ak["wait_calls"] = r.es.wait_calls;
  ak["ring_reaped"] = r.es.ring_reaped;
  ak["avg_submit_batch"] = r.submit_calls != 0
                               ? static_cast<double>(r.submitted) /
                                     static_cast<double>(r.submit_calls)
                               : 0.0;
  ak["avg_reap_batch"] =
      r.reap_calls != 0
          ? static_cast<double>(r.reaped) / static_cast<double>(r.reap_calls)
          : 0.0;
  ak["eagain_retries"] = r.es.eagain_retries;
  Json features;
  features["user_space_reap"] = r.caps.user_space_reap;
  features["fixed_buffers"] = e.job->fixedbufs;
  features["fixed_files"] = e.job->registerfiles;
  features["sqpoll"] = r.caps.sqpoll;
  features["iopoll"] = r.caps.iopoll;
  features["single_issuer"] = r.caps.single_issuer;
  features["defer_taskrun"] = r.caps.defer_taskrun;
  features["coop_taskrun"] = r.caps.coop_taskrun;
  features["registered_ring_fd"] = r.caps.registered_ring_fd;
  features["fallbacks"] = r.caps.fallbacks;
  ak["engine_features"] = features;
  Json errs = Json::object();
  for (const auto& [err, count] : r.errors) errs[ErrnoName(err)] = count;
  ak["errors"] = errs;
  if (!r.first_error.empty()) ak["first_error"] = r.first_error;
  if (!r.inject.empty()) {
    Json f;
    f["spec"] = r.inject;
    f["submit_calls"] = r.faults.submit_calls;
    f["accepted"] = r.faults.accepted;
    f["completed"] = r.faults.completed;
    f["reaped_twice"] = r.reaped_twice;
    f["eagain"] = r.faults.eagain;
    f["partial"] = r.faults.partial;
    f["short"] = r.faults.short_io;
    f["eio"] = r.faults.eio;
    f["enospc"] = r.faults.enospc;
    f["delayed"] = r.faults.delayed;
    f["reordered"] = r.faults.reordered;
    f["stalls"] = r.faults.stalls;
    ak["inject"] = f;
  }
  if (!e.job->verify.empty()) {
    Json v;
    v["checked"] = r.verify_checked;
    v["failed"] = r.verify_failed;
    v["mismatches"] = r.verify_lines;
    ak["verify"] = v;
  }
  return ak;
}

Json JobJson(const Entry& e, const RunResult& res, uint64_t run_ios) {
  const JobOptions& o = *e.job;
  const CloneResult& r = e.r;
  Json job;
  job["jobname"] = o.name;
  job["groupid"] = 0;
  int error = 0;
  if (!r.errors.empty()) {
    error = r.errors.begin()->first;
  } else if (!r.first_error.empty()) {
    error = EIO;
  } else if (r.verify_failed != 0) {
    error = EILSEQ;
  }
  job["error"] = error;
  job["elapsed"] = static_cast<uint64_t>(std::llround(res.wall));
  Json jo;
  jo["name"] = o.name;
  jo["filename"] = e.shown;
  jo["rw"] = o.rw;
  if (o.Reads() && o.Writes()) jo["rwmixread"] = std::to_string(o.rwmixread);
  if (o.bs_min != 0) {
    jo["bsrange"] = std::to_string(o.bs_min) + "-" + std::to_string(o.bs_max);
  } else {
    jo["bs"] = std::to_string(o.bs);
  }
  jo["iodepth"] = std::to_string(o.iodepth);
  jo["size"] = std::to_string(e.size);
  if (o.offset != 0) jo["offset"] = std::to_string(o.offset);
  jo["direct"] = std::to_string(o.direct);
  jo["ioengine"] = r.engine;
  if (o.numjobs != 1) jo["numjobs"] = std::to_string(o.numjobs);
  if (o.fsync != 0) jo["fsync"] = std::to_string(o.fsync);
  if (!o.verify.empty()) jo["verify"] = o.verify;
  if (o.runtime_us != 0) {
    jo["runtime"] = std::to_string(o.runtime_us / 1000) + "ms";
  }
  if (o.ramp_time_us != 0) {
    jo["ramp_time"] = std::to_string(o.ramp_time_us / 1000) + "ms";
  }
  if (o.time_based) jo["time_based"] = "1";
  job["job options"] = jo;
  job["read"] = DirJson(r.read, r.seconds);
  job["write"] = DirJson(r.write, r.seconds);
  Json sync;
  sync["total_ios"] = r.sync.ios;
  sync["lat_ns"] = LatJson(r.sync.lat);
  job["sync"] = sync;
  job["job_runtime"] = static_cast<uint64_t>(r.seconds * 1000);
  // CPU is the process's (engine threads included), as a share of the run.
  job["usr_cpu"] = res.wall > 0 ? 100.0 * res.usr / res.wall : 0.0;
  job["sys_cpu"] = res.wall > 0 ? 100.0 * res.sys / res.wall : 0.0;
  job["ctx"] = res.ctx;
  job["aiokit"] = AiokitJson(e, res, run_ios);
  return job;
}

void PrintDir(std::ostream& out, const char* dir, const DirStats& d,
              double seconds) {
  if (d.ios == 0) return;
  const double iops = seconds > 0 ? static_cast<double>(d.ios) / seconds : 0;
  const double bw = seconds > 0 ? static_cast<double>(d.bytes) / seconds : 0;
  char line[256];
  std::snprintf(line, sizeof(line),
                "  %s: IOPS=%s, BW=%s/s (%.1fMB/s)(%s/%.0fmsec)\n", dir,
                FormatCount(iops).c_str(),
                FormatBytes(static_cast<uint64_t>(bw)).c_str(), bw / 1e6,
                FormatBytes(d.bytes).c_str(), seconds * 1000);
  out << line;
  const LatencyHistogram& c = d.clat;
  out << "    clat: min=" << Ns(c.min())
      << ", avg=" << Ns(static_cast<uint64_t>(c.mean()))
      << ", max=" << Ns(c.max()) << "\n";
  out << "     clat percentiles: p50=" << Ns(c.Percentile(50))
      << ", p90=" << Ns(c.Percentile(90)) << ", p99=" << Ns(c.Percentile(99))
      << ", p99.9=" << Ns(c.Percentile(99.9))
      << ", p99.99=" << Ns(c.Percentile(99.99)) << "\n";
  out << "     lat: min=" << Ns(d.lat.min())
      << ", avg=" << Ns(static_cast<uint64_t>(d.lat.mean()))
      << ", p50=" << Ns(d.lat.Percentile(50))
      << ", p99=" << Ns(d.lat.Percentile(99))
      << " (submission call included; slat p50=" << Ns(d.slat.Percentile(50))
      << ")\n";
  if (d.short_ios != 0) out << "    short: " << d.short_ios << "\n";
}

void PrintEntry(std::ostream& out, const Entry& e) {
  const JobOptions& o = *e.job;
  const CloneResult& r = e.r;
  out << o.name << ": (g=0): rw=" << o.rw;
  if (o.Reads() && o.Writes()) out << " (" << o.rwmixread << "% reads)";
  if (o.bs_min != 0) {
    out << ", bs=" << o.bs_min << "B-" << o.bs_max << "B";
  } else {
    out << ", bs=" << o.bs << "B";
  }
  out << ", engine=" << r.engine << ", iodepth=" << o.iodepth
      << ", direct=" << o.direct;
  if (e.clones > 1) out << ", " << e.clones << " clones";
  if (o.numjobs > 1 && e.clones == 1) out << ", clone " << r.clone;
  out << "\n  file: " << e.shown << " (" << FormatBytes(e.size) << ")\n";
  PrintDir(out, "read", r.read, r.seconds);
  PrintDir(out, "write", r.write, r.seconds);
  if (r.sync.ios != 0) {
    out << "  sync (fsync every " << o.fsync << " writes): " << r.sync.ios
        << " calls, lat p50=" << Ns(r.sync.lat.Percentile(50))
        << ", p99=" << Ns(r.sync.lat.Percentile(99)) << "\n";
  }
  char line[256];
  std::snprintf(
      line, sizeof(line),
      "  batches: %.1f requests per submit, %.1f completions per reap; "
      "engine: %llu submit calls, %llu waits, %.0f%% of completions read "
      "from the ring without a syscall\n",
      r.submit_calls != 0 ? static_cast<double>(r.submitted) /
                                static_cast<double>(r.submit_calls)
                          : 0.0,
      r.reap_calls != 0
          ? static_cast<double>(r.reaped) / static_cast<double>(r.reap_calls)
          : 0.0,
      static_cast<unsigned long long>(r.es.submit_calls),
      static_cast<unsigned long long>(r.es.wait_calls),
      r.es.completed != 0 ? 100.0 * static_cast<double>(r.es.ring_reaped) /
                                static_cast<double>(r.es.completed)
                          : 0.0);
  out << line;
  if (!r.errors.empty()) {
    out << "  errors:";
    for (const auto& [err, count] : r.errors) {
      out << " " << ErrnoName(err) << "=" << count;
    }
    out << "\n";
  }
  if (!r.inject.empty()) {
    out << "  injected (" << r.inject << "): " << r.faults.eagain << " EAGAIN, "
        << r.faults.partial << " partial submits, " << r.faults.short_io
        << " short, " << r.faults.eio << " EIO, " << r.faults.enospc
        << " ENOSPC, " << r.faults.delayed << " delayed, " << r.faults.reordered
        << " reordered, " << r.faults.stalls << " stalls; " << r.faults.accepted
        << " accepted, " << r.faults.completed << " completed, "
        << r.reaped_twice << " twice\n";
  }
  if (!o.verify.empty()) {
    out << "  verify (" << o.verify << "): " << r.verify_checked
        << " blocks checked, " << r.verify_failed << " failed\n";
    for (const std::string& l : r.verify_lines) {
      out << "    mismatch: " << l << "\n";
    }
  }
  for (const EngineRefusal& p : r.passed_over) {
    out << "  (passed over " << EngineKindName(p.kind) << ": "
        << p.reason.ToString() << ")\n";
  }
}

uint64_t RunIos(const RunResult& res) {
  uint64_t n = 0;
  for (const CloneResult& c : res.clones) n += TotalIos(c);
  return n;
}

void PrintCpu(std::ostream& out, const RunResult& res) {
  const uint64_t ios = RunIos(res);
  char line[256];
  std::snprintf(
      line, sizeof(line),
      "cpu (the whole process): usr=%.2f%%, sys=%.2f%%, %.2fus per "
      "I/O (usr %.2f, sys %.2f), ctx=%llu\n",
      res.wall > 0 ? 100.0 * res.usr / res.wall : 0.0,
      res.wall > 0 ? 100.0 * res.sys / res.wall : 0.0,
      ios != 0 ? (res.usr + res.sys) * 1e6 / static_cast<double>(ios) : 0.0,
      ios != 0 ? res.usr * 1e6 / static_cast<double>(ios) : 0.0,
      ios != 0 ? res.sys * 1e6 / static_cast<double>(ios) : 0.0,
      static_cast<unsigned long long>(res.ctx));
  out << line;
}

// The first failure of a run, as the one error line; empty if it ran clean.
std::string Failure(const RunResult& res) {
  for (const CloneResult& c : res.clones) {
    if (!c.first_error.empty()) return "I/O error: " + c.first_error;
  }
  for (const CloneResult& c : res.clones) {
    if (c.verify_failed != 0) {
      return "verify failed: " + std::to_string(c.verify_failed) + " of " +
             std::to_string(c.verify_checked) + " blocks; first: " +
             (c.verify_lines.empty() ? std::string("?") : c.verify_lines[0]);
    }
  }
  return {};
}

// ------------------------------------------------ --compare and --sweep

struct Row {
  std::string engine;               // as asked
  std::string value;                // the swept value, if any
  std::unique_ptr<BenchPlan> plan;  // what ran (run's jobs point into it)
  std::optional<RunResult> run;
  std::string refused;  // why the engine could not run here
};

struct RowFigures {
  double iops = 0, mib_s = 0, cpu_per_io_us = 0;
  uint64_t p50 = 0, p99 = 0;
};

RowFigures Figures(const RunResult& res) {
  RowFigures f;
  LatencyHistogram clat;
  uint64_t bytes = 0;
  double seconds = 0;
  for (const CloneResult& c : res.clones) {
    clat.Merge(c.read.clat);
    clat.Merge(c.write.clat);
    bytes += c.read.bytes + c.write.bytes;
    seconds = std::max(seconds, c.seconds);
  }
  const uint64_t ios = RunIos(res);
  if (seconds > 0) {
    f.iops = static_cast<double>(ios) / seconds;
    f.mib_s = static_cast<double>(bytes) / seconds / (1 << 20);
  }
  f.p50 = clat.Percentile(50);
  f.p99 = clat.Percentile(99);
  f.cpu_per_io_us =
      ios != 0 ? (res.usr + res.sys) * 1e6 / static_cast<double>(ios) : 0;
  return f;
}

// The plan of one row: `engine` (empty: as asked) and the swept value.
// On failure: a UsageError (values are checked when parsed; kept for safety).
Result<BenchPlan> WithValue(const BenchPlan& plan, const std::string& engine,
                            const std::string& value) {
  BenchPlan p = plan;
  p.compare = false;
  p.sweep = Sweep{};
  for (JobOptions& j : p.jobs) {
    if (!engine.empty()) j.engine = engine;
    if (!plan.sweep.option.empty()) {
      if (Status bad = ApplyOption(p, j, plan.sweep.option, value, true,
                                   "--sweep " + plan.sweep.option);
          !bad.ok()) {
        return bad;
      }
    }
  }
  return p;
}

int RunTable(const BenchPlan& plan, std::ostream& out, std::ostream& err,
             bool tty) {
  std::vector<std::string> engines;
  if (plan.compare) {
    engines = {"linux-aio", "io_uring", "threads"};
  } else {
    engines = {""};
  }
  std::vector<std::string> values = plan.sweep.values;
  if (values.empty()) values = {""};
  std::vector<Row> rows;
  std::string failure;
  for (const std::string& engine : engines) {
    for (const std::string& value : values) {
      Result<BenchPlan> with = WithValue(plan, engine, value);
      if (!with.ok()) return ExitUsage(err, with.status().context());
      Row row{engine,
              value,
              std::make_unique<BenchPlan>(std::move(*with)),
              std::nullopt,
              {}};
      const BenchPlan& p = *row.plan;
      if (tty) {
        err << "\r" << (engine.empty() ? "" : engine + " ")
            << (value.empty() ? "" : plan.sweep.option + "=" + value)
            << "...\033[K" << std::flush;
      }
      RunOutcome got = RunOnce(p, err, tty);
      if (auto* res = std::get_if<RunResult>(&got)) {
        row.run = std::move(*res);
        if (failure.empty()) failure = Failure(*row.run);
      } else if (const auto* refused = std::get_if<EngineRefused>(&got)) {
        if (!plan.compare) return ExitUsage(err, refused->Line());
        row.refused = refused->reason;
      } else {
        return ExitUsage(err, std::get<Status>(got).context());
      }
      rows.push_back(std::move(row));
    }
  }
  if (tty) err << "\r\033[K" << std::flush;
  const std::string& swept = plan.sweep.option;
  if (plan.output_format == "json") {
    Json jobs = Json::array();
    Json table = Json::array();
    for (const Row& row : rows) {
      Json t;
      t["engine"] = row.engine.empty() ? Json(nullptr) : Json(row.engine);
      if (!swept.empty()) t[swept] = row.value;
      if (!row.run) {
        t["refused"] = row.refused;
        table.push_back(t);
        continue;
      }
      const RunResult& res = *row.run;
      if (row.engine.empty() && !res.clones.empty()) {
        t["engine"] = res.clones[0].engine;
      }
      const RowFigures f = Figures(res);
      t["iops"] = f.iops;
      t["mib_s"] = f.mib_s;
      t["clat_p50_ns"] = f.p50;
      t["clat_p99_ns"] = f.p99;
      t["cpu_per_io_us"] = f.cpu_per_io_us;
      table.push_back(t);
      for (const Entry& e : Entries(*row.plan, res)) {
        Json j = JobJson(e, res, RunIos(res));
        if (!swept.empty()) {
          j["aiokit"]["sweep"] = {{"option", swept}, {"value", row.value}};
        }
        jobs.push_back(std::move(j));
      }
    }
    Json root;
    root["fio version"] = std::string("aiokit-") + AIOKIT_VERSION_STRING;
    root["timestamp"] = static_cast<uint64_t>(std::time(nullptr));
    root["jobs"] = jobs;
    root["aiokit_table"] = table;
    out << root.dump(2) << "\n";
  } else {
    char line[256];
    std::snprintf(line, sizeof(line), "%-10s %-8s %10s %10s %10s %10s %10s\n",
                  "engine", swept.empty() ? "" : swept.c_str(), "IOPS", "MiB/s",
                  "clat p50", "clat p99", "CPU/IO");
    out << line;
    for (const Row& row : rows) {
      std::string name = row.engine;
      if (name.empty() && row.run && !row.run->clones.empty()) {
        name = row.run->clones[0].engine;
      }
      if (!row.run) {
        out << name << "  refused: " << row.refused << "\n";
        continue;
      }
      const RowFigures f = Figures(*row.run);
      std::snprintf(line, sizeof(line),
                    "%-10s %-8s %10s %10.1f %10s %10s %8.2fus\n", name.c_str(),
                    row.value.c_str(), FormatCount(f.iops).c_str(), f.mib_s,
                    Ns(f.p50).c_str(), Ns(f.p99).c_str(), f.cpu_per_io_us);
      out << line;
    }
  }
  if (!failure.empty()) {
    err << "aiokit bench: " << failure << "\n";
    return kExitIoError;
  }
  return kExitOk;
}

}  // namespace

int RunBench(const BenchPlan& plan, std::ostream& out, std::ostream& err,
             bool err_is_tty) {
  if (plan.compare || !plan.sweep.option.empty()) {
    // Every combination is checked before the first run.
    for (const JobOptions& j : plan.jobs) {
      if (Status bad = ValidateJob(j, plan); !bad.ok()) {
        return ExitUsage(err, bad.context());
      }
    }
    return RunTable(plan, out, err, err_is_tty);
  }
  RunOutcome got = RunOnce(plan, err, err_is_tty);
  if (const auto* bad = std::get_if<Status>(&got)) {
    return ExitUsage(err, bad->context());
  }
  if (const auto* refused = std::get_if<EngineRefused>(&got)) {
    return ExitUsage(err, refused->Line());
  }
  const RunResult& res = std::get<RunResult>(got);
  const std::vector<Entry> entries = Entries(plan, res);
  const uint64_t ios = RunIos(res);
  if (plan.output_format == "json") {
    Json jobs = Json::array();
    for (const Entry& e : entries) jobs.push_back(JobJson(e, res, ios));
    Json root;
    root["fio version"] = std::string("aiokit-") + AIOKIT_VERSION_STRING;
    root["timestamp"] = static_cast<uint64_t>(std::time(nullptr));
    root["jobs"] = jobs;
    out << root.dump(2) << "\n";
  } else {
    for (const Entry& e : entries) PrintEntry(out, e);
    PrintCpu(out, res);
  }
  const std::string failure = Failure(res);
  if (!failure.empty()) {
    err << "aiokit bench: " << failure << "\n";
    return kExitIoError;
  }
  return kExitOk;
}

}  // namespace aiokit::tool
