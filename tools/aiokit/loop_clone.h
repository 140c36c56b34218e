// What the closed-loop clones share (--api=coro, --api=asio): --iodepth
// workers on the clone's thread, each with one request in flight at a time,
// on an engine made for one thread with NotifyFd. A derived clone supplies
// the loop and the workers; this class sets up the engine and buffers, picks
// offsets and accounts each completion as the engine clone does.

#ifndef AIOKIT_TOOLS_AIOKIT_LOOP_CLONE_H_
#define AIOKIT_TOOLS_AIOKIT_LOOP_CLONE_H_

#include <sys/resource.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "clone.h"
#include "pace.h"
#include "place.h"
#include "random.h"

namespace aiokit::tool {

class LoopClone {
 public:
  LoopClone(const JobOptions& o, unsigned index, Target* target,
            RunShared* shared, Progress* progress, uint64_t seed)
      : o_(o),
        t_(target),
        shared_(shared),
        progress_(progress),
        rng_(seed),
        read_pct_(o.ReadPercent()) {
    r_.job = o.name;
    r_.clone = index;
  }
  virtual ~LoopClone() = default;
  LoopClone(const LoopClone&) = delete;
  LoopClone& operator=(const LoopClone&) = delete;

  CloneResult Run() {
    if (!SetUp()) return std::move(r_);
    if (!WaitForGo()) return std::move(r_);
    Main();
    r_.es = engine_->Stats();
    r_.submit_calls = SubmitCalls();
    TearDown();
    (void)engine_->Shutdown(kForever);
    return std::move(r_);
  }

 protected:
  // The loop on engine_ (false: Fail was called); the workers run to the
  // end; how many Submit calls the loop made; the loop goes.
  virtual bool MakeLoop(const std::string& job) = 0;
  virtual void RunWorkers() = 0;
  virtual uint64_t SubmitCalls() = 0;
  virtual void TearDown() = 0;

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

  // What a worker does next: issue a request (then Next), wait until `at`
  // and ask again (pacing: the schedule or a think), or stop.
  struct Step {
    enum What : uint8_t { kIssue, kWait, kStop } what;
    Clock::time_point at;
  };
  Step Plan(Clock::time_point now) {
    if (now >= end_at_) stop_ = true;
    if (stop_ || StopAsked(*shared_, *progress_) ||
        !o_.WantsMore(t_->size, issued_bytes_, issued_ios_, placer_.passes())) {
      return {Step::kStop, now};
    }
    if (!pacer_.active()) return {Step::kIssue, now};
    // The mix's draw is kept until its request goes, as the engine clone's.
    if (!want_) want_ = DrawRead();
    const Pacer::Turn turn = pacer_.Next(*want_, now, in_flight_);
    if (turn.at <= now) {
      dir_ = turn.read;
      return {Step::kIssue, now};
    }
    // Capped by thinktime_blocks until a completion: a worker cannot wait
    // for another's completion here, so it looks again shortly (a poll that
    // tunes speed, not liveness: the completion comes either way).
    const Clock::time_point at = turn.at == Clock::time_point::max()
                                     ? now + std::chrono::microseconds(50)
                                     : turn.at;
    return {Step::kWait, std::min(at, end_at_)};
  }

  // The next request of a worker: whether it reads, where, and how many
  // bytes. False when the job is over. REQUIRES: Plan said kIssue.
  bool Next(bool* read, int* fd, uint64_t* at, uint64_t* len) {
    if (stop_ || StopAsked(*shared_, *progress_) ||
        !o_.WantsMore(t_->size, issued_bytes_, issued_ios_, placer_.passes())) {
      return false;
    }
    *read = pacer_.active() ? dir_ : DrawRead();
    const Place p = placer_.Next(*read);
    if (pacer_.active()) {
      pacer_.Issued(*read, p.len, Clock::now());
      want_.reset();
    }
    ++in_flight_;
    issued_bytes_ += p.len;
    ++issued_ios_;
    const Target::Spot spot = t_->Map(p.off);
    *fd = spot.file->fd();
    *at = spot.at;
    *len = p.len;
    return true;
  }

  // `len` bytes of worker i's buffer.
  Buffer WorkerBuffer(size_t i, uint64_t len) const {
    return bufs_[i].size() == len ? bufs_[i] : bufs_[i].Slice(0, len);
  }

  // One completion: `bytes`, or the error.
  void Account(bool read, Clock::time_point start, Clock::time_point now,
               const Status& error, size_t bytes, uint64_t len, uint64_t at) {
    ++r_.reaped;
    --in_flight_;
    if (pacer_.active() || o_.HasMinimum()) {
      pacer_.Completed(read, len, now, start >= measure_from_);
      pacer_.Spin();
      if (o_.HasMinimum()) {
        if (std::string bad = pacer_.CheckMinimum(now); !bad.empty()) {
          if (r_.first_error.empty()) r_.first_error = std::move(bad);
          stop_ = true;
        }
      }
    }
    if (!error.ok()) {
      const int e = error.Errno();
      ++r_.errors[e != 0 ? e : EIO];
      if (r_.first_error.empty()) r_.first_error = error.ToString();
      stop_ = true;
      return;
    }
    if (!measuring_ && now >= measure_from_) {
      measuring_ = true;
      r_.read = DirStats{};
      r_.write = DirStats{};
      issued_bytes_ = 0;
      issued_ios_ = 0;
      last_ = measure_from_;
    }
    if (now >= end_at_) stop_ = true;
    last_ = now;
    if (measuring_ && start >= measure_from_) {
      DirStats& d = read ? r_.read : r_.write;
      d.clat.Record(NsBetween(start, now));
      d.lat.Record(NsBetween(start, now));
      ++d.ios;
      d.bytes += bytes;
      if (bytes < len) ++d.short_ios;
      // No slat: a worker's request is submitted inside its wait.
      r_.log.Record(now, read, bytes, at - t_->offset, UINT64_MAX,
                    NsBetween(start, now), NsBetween(start, now));
    }
    const uint64_t ios = r_.read.ios + r_.write.ios;
    if (ios - shown_ios_ >= o_.ProgressEvery()) {
      progress_->ios.fetch_add(ios - shown_ios_, std::memory_order_relaxed);
      const uint64_t all = r_.read.bytes + r_.write.bytes;
      progress_->bytes.fetch_add(all - shown_bytes_, std::memory_order_relaxed);
      shown_ios_ = ios;
      shown_bytes_ = all;
    }
  }

  const JobOptions& o_;
  Target* t_;
  CloneResult r_;
  std::unique_ptr<Engine> engine_;

 private:
  static uint64_t NsBetween(Clock::time_point a, Clock::time_point b) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
  }

  bool SetUp() {
    const std::string job = o_.name == "aiokit" ? "" : " (job " + o_.name + ")";
    EngineOptions eo;
    Result<EngineKind> kind = ParseEngineKind(o_.engine);
    eo.kind = kind.ok() ? *kind : EngineKind::kAuto;
    eo.queue_depth = o_.iodepth;
    eo.notify_fd = true;  // the loop sleeps on it
    if (o_.spin_us >= 0) {
      eo.spin_before_wait = std::chrono::microseconds(o_.spin_us);
    }
    eo.adaptive_spin = !o_.spin_always;
    eo.single_thread = true;  // the clone's thread makes every call
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
    r_.engine = engine_->Name();
    r_.caps = engine_->GetCapabilities();
    if (!MakeLoop(job)) return false;
    const Alignment a = t_->file.alignment();
    const size_t mem_align = std::max<size_t>(a.known() ? a.memory : 1, 4096);
    for (unsigned i = 0; i < o_.iodepth; ++i) {
      Result<Buffer> b = Buffer::Allocate(o_.MaxBs(), mem_align);
      if (!b.ok()) {
        Fail(std::nullopt, UsageError("--bs x --iodepth" + job + ": " +
                                      b.status().ToString()));
        return false;
      }
      for (size_t k = 0; k + 8 <= b->size(); k += 8) {
        const uint64_t v = rng_.Next();
        std::memcpy(b->data() + k, &v, 8);
      }
      bufs_.push_back(std::move(*b));
    }
    placer_ = Placer(o_, t_->size, rng_.Next());
    pacer_ = Pacer(o_, rng_.Next());
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

  void Main() {
    const Clock::time_point start = WaitToStart(o_, shared_);
    measure_from_ = start + std::chrono::microseconds(o_.ramp_time_us);
    end_at_ = o_.runtime_us != 0
                  ? measure_from_ + std::chrono::microseconds(o_.runtime_us)
                  : Clock::time_point::max();
    measuring_ = o_.ramp_time_us == 0;
    last_ = start;
    pacer_.Start(start);
    r_.log.Start(o_, measure_from_);
    RunWorkers();
    r_.submitted = r_.reaped;
    r_.seconds = measuring_
                     ? std::chrono::duration<double>(
                           std::max(last_, measure_from_) - measure_from_)
                           .count()
                     : 0.0;
    r_.log.Finish(std::max(last_, measure_from_));
    EndMeasured(o_, shared_);
  }

  RunShared* shared_;
  Progress* progress_;
  Rng rng_;
  unsigned read_pct_;
  // The read/write mix's next draw.
  bool DrawRead() {
    return read_pct_ == 100 || (read_pct_ != 0 && rng_.Below(100) < read_pct_);
  }

  Placer placer_;
  Pacer pacer_;
  std::optional<bool> want_;  // paced: the mix's draw, until its request goes
  bool dir_ = false;          // paced: the direction Plan chose
  size_t in_flight_ = 0;      // workers with a request out
  std::vector<Buffer> bufs_;
  bool stop_ = false;
  bool measuring_ = false;
  uint64_t issued_bytes_ = 0;  // since the ramp
  uint64_t issued_ios_ = 0;
  uint64_t shown_ios_ = 0, shown_bytes_ = 0;
  Clock::time_point measure_from_, end_at_, last_;
};

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_LOOP_CLONE_H_
