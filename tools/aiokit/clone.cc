// A clone's I/O and verify loop (clone.h).

#include "clone.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/fault.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "pace.h"
#include "place.h"
#include "random.h"
#include "verify.h"

namespace aiokit::tool {

Clock::time_point WaitToStart(const JobOptions& o, RunShared* shared) {
  Clock::time_point start =
      shared->start + std::chrono::microseconds(o.startdelay_us);
  std::this_thread::sleep_until(start);
  if (!o.wait_for.empty()) {
    std::unique_lock<std::mutex> lock(shared->mu);
    shared->cv.wait(lock, [&] {
      const auto it = shared->running_of.find(o.wait_for);
      return it == shared->running_of.end() || it->second == 0;
    });
    start = std::max(start, Clock::now());
  }
  return start;
}

void EndMeasured(const JobOptions& o, RunShared* shared) {
  if (o.exitall) shared->exit_all.store(true, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(shared->mu);
  --shared->running_of[o.name];
  if (--shared->running == 0) {
    ::getrusage(RUSAGE_SELF, &shared->ru_end);
    shared->end = Clock::now();
  }
  // The run's loop and jobs that wait_for this one wait on cv.
  shared->cv.notify_all();
}

namespace {

uint64_t NsBetween(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

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
        random_(o.Random()),
        vf_(o.verify) {
    vf_.thread = static_cast<uint16_t>(index + 1);
    r_.job = o.name;
    r_.clone = index;
  }

  CloneResult Run() {
    if (!SetUp()) return std::move(r_);
    if (!WaitForGo()) return std::move(r_);
    if (o_.verify_only) {
      // Nothing is written: every block of the region is read and checked
      // as an earlier run left it.
      WaitToStart(o_, shared_);
      std::fill(gen_done_.begin(), gen_done_.end(), kAny);
      VerifyWritten();
      EndMeasured(o_, shared_);
    } else {
      Main();
      if (o_.verify.enabled() && o_.do_verify && o_.Writes() &&
          r_.first_error.empty() && !verify_stop_) {
        // With a backlog, what was checked during the run is not read again.
        if (o_.verify_backlog != 0) {
          VerifyBacklog();
        } else {
          VerifyWritten();
        }
      }
    }
    r_.es = engine_->Stats();
    r_.unfinished = in_flight_;
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
    bool prio = false;     // carries a priority of its own (cmdprio)
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
    eo.threads_kernel_aio = o_.threads_kernel_aio;
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
      std::vector<int> fds = {t_->file.fd()};
      for (const Target::Extra& e : t_->extra) fds.push_back(e.file.fd());
      if (Status s = engine_->RegisterFiles(std::span<const int>(fds));
          !s.ok()) {
        Fail(std::nullopt,
             UsageError("--registerfiles" + job + ": " + s.ToString()));
        return false;
      }
    }
    if (o_.Writes() && !o_.verify.enabled() && !o_.buffer_pattern.empty()) {
      for (size_t b = 0; b < pool_.count(); ++b) {
        const std::string& p = o_.buffer_pattern;
        for (size_t i = 0; i < o_.MaxBs(); i += p.size()) {
          std::memcpy(pool_.buffer(b) + i, p.data(),
                      std::min(p.size(), o_.MaxBs() - i));
        }
      }
    } else if (o_.Writes() && !o_.verify.enabled()) {
      for (size_t b = 0; b < pool_.count(); ++b) {
        for (size_t i = 0; i + 8 <= o_.MaxBs(); i += 8) {
          const uint64_t v = rng_.Next();
          std::memcpy(pool_.buffer(b) + i, &v, 8);
        }
      }
    }
    placer_ = Placer(o_, t_->size, rng_.Next());
    pacer_ = Pacer(o_, rng_.Next());
    sync_file_ = &t_->file;
    reqs_.resize(o_.iodepth);
    slots_.resize(o_.iodepth);
    done_.resize(o_.iodepth);
    batch_.reserve(o_.iodepth);
    if (o_.verify.enabled()) {
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
    // A place held back because its block was busy goes first.
    const Place p = held_ ? *held_ : placer_.Next(kind == Kind::kRead);
    held_.reset();
    *off = p.off;
    *len = p.len;
    if (busy_.empty()) return true;
    // Verify: never two requests on one block at once (every block has the
    // one size --bs, and offsets are its multiples).
    const uint64_t blocks = busy_.size();
    uint64_t b = p.off / p.len;
    if (busy_[b] == 0) return true;
    if (!random_) {
      held_ = p;  // in order: wait for the block
      return false;
    }
    for (uint64_t k = 0; k < blocks && busy_[b] != 0; ++k) {
      b = b + 1 == blocks ? 0 : b + 1;  // at random: probe onward
    }
    if (busy_[b] != 0) return false;
    *off = b * p.len;
    return true;
  }

  // The read/write mix's next draw.
  bool DrawRead() {
    const unsigned pct = read_pct_;
    return pct == 100 || (pct != 0 && rng_.Below(100) < pct);
  }

  // Prepares slot i for the next request; false if none can be issued now.
  // `read`: the direction the schedule chose (nullopt: drawn here).
  bool Prep(size_t i, std::optional<bool> read) {
    Slot& s = slots_[i];
    Request& r = reqs_[i];
    if (o_.fsync != 0 && writes_since_fsync_ >= o_.fsync) {
      writes_since_fsync_ = 0;
      s.kind = Kind::kSync;
      r.PrepFsync(sync_file_->fd());  // the file written last
      r.priv = nullptr;
      batch_.push_back(&r);
      return true;
    }
    const Kind kind = (read ? *read : DrawRead()) ? Kind::kRead : Kind::kWrite;
    uint64_t len = 0, off = 0;
    if (!PickPlace(kind, &len, &off)) return false;
    if (pacer_.active()) {
      pacer_.Issued(kind == Kind::kRead, len, Clock::now());
      want_.reset();
    }
    s.kind = kind;
    char* buf = pool_.buffer(i);
    const Target::Spot spot = t_->Map(off);
    const uint64_t at = spot.at;
    if (!busy_.empty()) {
      s.block = off / o_.bs;
      busy_[s.block] = 1;
    }
    if (kind == Kind::kRead) {
      r.PrepRead(*spot.file, buf, len, at);
    } else {
      if (!busy_.empty()) {
        s.gen = ++next_gen_;
        FillVerifyBlock(vf_, buf, len, at, s.gen);
      }
      r.PrepWrite(*spot.file, buf, len, at);
      sync_file_ = spot.file;
      ++writes_since_fsync_;
      ++backlog_writes_;
    }
    if (o_.fixedbufs) r.SetFixedBuffer(static_cast<int16_t>(i));
    const int d = kind == Kind::kRead ? 0 : 1;
    // cmdprio_percentage, or cmdprio_bssplit's entry for this size: the
    // share of requests that carry a priority of their own.
    unsigned pct = o_.cmdprio_pct[d];
    unsigned cls = o_.cmdprio_class[d], level = o_.cmdprio[d];
    for (const CmdprioSplit& s : o_.cmdprio_bssplit[d]) {
      if (s.bs != len) continue;
      pct = s.pct;
      if (s.cls >= 0) {
        cls = static_cast<unsigned>(s.cls);
        level = static_cast<unsigned>(s.level);
      }
      break;
    }
    s.prio = pct != 0 && rng_.Below(100) < pct;
    if (s.prio) {
      r.SetIoPriority(IoPriority(static_cast<IoPrioClass>(cls),
                                 static_cast<uint8_t>(level)));
      ++r_.prio_ios;
    }
    issued_bytes_ += len;
    ++issued_ios_;
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
  // True when continue_on_error names requests of this kind.
  bool GoesOnAfter(Kind kind) const {
    return (o_.continue_on_error &
            (kind == Kind::kRead ? kContinueRead : kContinueWrite)) != 0;
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
      if (fault_ != nullptr || GoesOnAfter(s.kind)) {
        // Injected errors, and those continue_on_error names, are counted and
        // the run goes on; a block whose write failed holds unknown data.
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
      if (r_.log.enabled() && s.kind != Kind::kSync) {
        r_.log.Record(
            now, s.kind == Kind::kRead, static_cast<uint64_t>(r.rval),
            r.offset - t_->offset, NsBetween(s.submit_start, s.issued),
            NsBetween(s.issued, now), NsBetween(s.submit_start, now), s.prio);
      }
    }
    if (tracked) {
      if (s.kind == Kind::kWrite) {
        if (static_cast<uint64_t>(r.rval) == r.length) {
          gen_done_[s.block] = s.gen;
          if (o_.verify_backlog != 0) backlog_.push_back(s.block);
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
    if (gen == kAny) {
      // verify_only: whatever an earlier run wrote there.
    } else if (gen != 0 || t_->verify_layout) {
      want = gen;
    } else if (o_.Writes()) {
      return;
    }
    ++r_.verify_checked;
    std::string bad = CheckVerifyBlock(vf_, buf, len, at, want);
    if (!bad.empty()) {
      ++r_.verify_failed;
      if (o_.verify_dump) bad += Dump(buf, len, at, want);
      if (r_.verify_lines.size() < kMaxVerifyLines) {
        r_.verify_lines.push_back(std::move(bad));
      }
      if (o_.verify_fatal) {
        verify_stop_ = true;
        stop_ = true;
      }
    }
  }

  // verify_dump: the block as read (and as written, when this run knows it)
  // into files named as fio names them, in the working directory. Returns
  // what was written, for the mismatch line.
  std::string Dump(const char* buf, uint64_t len, uint64_t at,
                   std::optional<uint64_t> gen) {
    const std::string& path = o_.filename.empty() ? o_.name : o_.filename;
    const size_t slash = path.rfind('/');
    const std::string base =
        (slash == std::string::npos ? path : path.substr(slash + 1)) + "." +
        std::to_string(at);
    const auto write = [&](const std::string& name, const char* p) {
      Result<File> opened =
          File::Open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (!opened.ok()) return "; dump: " + opened.status().ToString();
      const ssize_t w = ::pwrite(opened->fd(), p, len, 0);
      if (w != static_cast<ssize_t>(len)) {
        return "; dump: " +
               (w < 0 ? Status::FromErrno(errno, "writing " + name).ToString()
                      : "writing " + name + ": short write of " +
                            std::to_string(w) + " bytes");
      }
      return "; dumped to " + name;
    };
    std::string out = write(base + ".received", buf);
    if (gen) {
      std::vector<char> want(len);
      FillVerifyBlock(vf_, want.data(), len, at, *gen);
      out += write(base + ".expected", want.data());
    }
    return out;
  }

  void Main() {
    const Clock::time_point start = WaitToStart(o_, shared_);
    const Clock::time_point measure_from =
        start + std::chrono::microseconds(o_.ramp_time_us);
    const Clock::time_point end_at =
        o_.runtime_us != 0
            ? measure_from + std::chrono::microseconds(o_.runtime_us)
            : Clock::time_point::max();
    bool measuring = o_.ramp_time_us == 0;
    const size_t cmax = o_.iodepth_batch_complete_max != 0
                            ? o_.iodepth_batch_complete_max
                            : o_.iodepth;
    std::vector<size_t> idle;  // slots with nothing to do
    for (size_t i = 0; i < o_.iodepth; ++i) idle.push_back(i);
    pacer_.Start(start);
    r_.log.Start(o_, measure_from);
    // With --rate or --thinktime: when the next request may go (max: after
    // a completion); nullopt while nothing waits for the schedule.
    std::optional<Clock::time_point> paced;
    auto refill = [&] {
      // An fsync that is due still goes after the last write.
      if (StopAsked(*shared_, *progress_)) stop_ = true;
      paced.reset();
      if (BacklogDue()) {
        // The writes since the last check drain, then are read back.
        if (in_flight_ != 0 || !batch_.empty() || stop_) return;
        VerifyBacklog();
      }
      while (!idle.empty() && !stop_ && !BacklogDue() &&
             (o_.WantsMore(t_->size, issued_bytes_, issued_ios_,
                           placer_.passes()) ||
              (o_.fsync != 0 && writes_since_fsync_ >= o_.fsync))) {
        std::optional<bool> dir;
        if (pacer_.active()) {
          // The mix's draw is kept until its request goes.
          if (!want_) want_ = DrawRead();
          const Clock::time_point now = Clock::now();
          const Pacer::Turn turn =
              pacer_.Next(*want_, now, in_flight_ + batch_.size());
          if (turn.at > now) {
            paced = turn.at;
            break;
          }
          dir = turn.read;
        }
        if (!Prep(idle.back(), dir)) break;
        idle.pop_back();
      }
    };
    // Requests refill prepared but may not submit (the run stops): their
    // blocks are free again.
    auto drop_batch = [&] {
      for (Request* r : batch_) {
        const auto i = static_cast<size_t>(r - reqs_.data());
        if (!busy_.empty() && slots_[i].kind != Kind::kSync) {
          busy_[slots_[i].block] = 0;
        }
      }
      batch_.clear();
    };
    refill();
    Submit();
    Clock::time_point last = start;
    uint64_t shown_ios = 0, shown_bytes = 0;
    while (in_flight_ != 0 || paced) {
      if (in_flight_ == 0) {
        // Nothing out: wait for the schedule, at most to the run's end.
        if (*paced != Clock::time_point::max()) {
          std::this_thread::sleep_until(std::min(*paced, end_at));
        }
        if (Clock::now() >= end_at) stop_ = true;
        refill();
        if (stop_) {
          drop_batch();
        } else if (!batch_.empty()) {
          Submit();
        }
        continue;
      }
      size_t min = std::min<size_t>(o_.iodepth_batch_complete_min, in_flight_);
      std::chrono::nanoseconds timeout = ReapTimeout();
      bool timed = false;  // a wait cut short by the schedule
      if (paced && *paced != Clock::time_point::max()) {
        if (pacer_.quiesce()) {
          // fio's io_submit_mode=inline: what is out completes first.
          min = std::min(in_flight_, std::min(cmax, done_.size()));
        } else {
          timeout = std::clamp<std::chrono::nanoseconds>(
              *paced - Clock::now(), std::chrono::nanoseconds(0), timeout);
          timed = true;
        }
      }
      Result<size_t> got = engine_->Reap(
          std::span<Request*>(done_.data(), std::min(cmax, done_.size())), min,
          timeout);
      ++r_.reap_calls;
      if (!got.ok()) {
        if (r_.first_error.empty()) r_.first_error = got.status().ToString();
        break;
      }
      const size_t raw = *got;
      got = Fresh(raw);
      if (raw == 0 && min != 0 && fault_ != nullptr && !timed) {
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
        issued_bytes_ = 0;
        issued_ios_ = 0;
        last = measure_from;
      }
      if (now >= end_at) stop_ = true;
      for (size_t k = 0; k < *got; ++k) {
        const auto i = static_cast<size_t>(done_[k] - reqs_.data());
        Complete(i, now, measuring && now >= measure_from);
        if (pacer_.active() || o_.HasMinimum()) {
          const Slot& s = slots_[i];
          if (s.kind != Kind::kSync) {
            pacer_.Completed(s.kind == Kind::kRead, reqs_[i].length, now,
                             measuring && now >= measure_from);
          }
        }
        idle.push_back(i);
      }
      pacer_.Spin();
      if (o_.HasMinimum()) {
        if (std::string bad = pacer_.CheckMinimum(now); !bad.empty()) {
          if (r_.first_error.empty()) r_.first_error = std::move(bad);
          stop_ = true;
        }
      }
      refill();
      if (!batch_.empty()) {
        if (stop_) {
          drop_batch();
        } else {
          Submit();
        }
      }
      const uint64_t ios = r_.read.ios + r_.write.ios + r_.sync.ios;
      if (ios - shown_ios >= o_.ProgressEvery() || in_flight_ == 0) {
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
    r_.log.Finish(std::max(last, measure_from));
    EndMeasured(o_, shared_);
  }

  // After a job that wrote: read back every block it wrote, at its depth,
  // and check each against the generation written last.
  void VerifyWritten() {
    const uint64_t blocks = gen_done_.size();
    uint64_t next = 0;
    VerifyBlocks([&](uint64_t* b) {
      while (next < blocks &&
             (gen_done_[next] == 0 || gen_done_[next] == kTorn)) {
        ++next;
      }
      if (next == blocks) return false;
      *b = next++;
      return true;
    });
  }

  bool BacklogDue() const {
    return o_.verify_backlog != 0 && backlog_writes_ >= o_.verify_backlog;
  }

  // verify_backlog: the blocks written since the last check, read back
  // while the job runs. REQUIRES: nothing in flight.
  void VerifyBacklog() {
    if (backlog_.empty()) return;
    ++r_.verify_rounds;
    size_t k = 0;
    VerifyBlocks([&](uint64_t* b) {
      if (k == backlog_.size()) return false;
      *b = backlog_[k++];
      return true;
    });
    backlog_.clear();
    backlog_writes_ = 0;
  }

  // Reads the blocks `next` yields (false: no more) at the job's depth and
  // checks each against the generation written last. REQUIRES: nothing in
  // flight.
  template <typename Next>
  void VerifyBlocks(Next next) {
    bool more = true;
    std::vector<size_t> idle;
    for (size_t i = 0; i < o_.iodepth; ++i) idle.push_back(i);
    in_flight_ = 0;
    for (;;) {
      uint64_t b = 0;
      while (!idle.empty() && more && !verify_stop_ && next(&b)) {
        const size_t i = idle.back();
        idle.pop_back();
        slots_[i].block = b;
        const Target::Spot spot = t_->Map(b * o_.bs);
        reqs_[i].PrepRead(*spot.file, pool_.buffer(i), o_.bs, spot.at);
        if (o_.fixedbufs) reqs_[i].SetFixedBuffer(static_cast<int16_t>(i));
        batch_.push_back(&reqs_[i]);
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
          more = false;
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
          if (r_.first_error.empty() && fault_ == nullptr &&
              !GoesOnAfter(Kind::kRead))
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
  static constexpr uint64_t kAny = UINT64_MAX - 1;  // verify_only: unknown

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
  Placer placer_;
  std::optional<Place> held_;
  Pacer pacer_;
  std::optional<bool> want_;  // paced: the mix's draw, until its request goes
  CloneResult r_;
  BufferPool pool_;
  std::vector<Request> reqs_;
  std::vector<Slot> slots_;
  std::vector<Request*> done_;
  std::vector<Request*> batch_;
  size_t in_flight_ = 0;
  bool stop_ = false;
  uint64_t issued_bytes_ = 0;  // data requests' bytes, since the ramp
  uint64_t issued_ios_ = 0;    // and their count
  uint64_t writes_since_fsync_ = 0;
  const File* sync_file_ = nullptr;  // --fsync's: the file written last
  // Verify: the generation last written to each block (0: not in this run),
  // and whether a request on it is in flight.
  std::vector<uint64_t> gen_done_;
  std::vector<uint8_t> busy_;
  uint64_t next_gen_ = 0;
  VerifyFormat vf_;  // o_.verify, with this clone's number in fio's header
  bool verify_stop_ = false;  // verify_fatal: a block failed
  // verify_backlog: blocks written whole since the last check, and writes
  // issued since then.
  std::vector<uint64_t> backlog_;
  uint64_t backlog_writes_ = 0;
  // Last, so destroyed first: requests still in flight (a run that stopped on
  // an error) are waited for while their memory and buffers still exist.
  std::unique_ptr<Engine> engine_;
  FaultInjectingEngine* fault_ = nullptr;  // engine_, when --inject wraps it
};

}  // namespace

CloneResult RunClone(const JobOptions& o, unsigned index, Target* target,
                     RunShared* shared, Progress* progress, uint64_t seed) {
  Clone c(o, index, target, shared, progress, seed);
  return c.Run();
}

}  // namespace aiokit::tool
