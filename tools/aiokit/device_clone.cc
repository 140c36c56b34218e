// A clone of an `aiokit bench --api=device` job: the same reads and writes as
// the engine clone (clone.cc), made through the device layer (aiokit/
// device.h) the way a storage engine would: one IoContext per request slot,
// its callback marking the slot done, the contexts of a submission batch
// sent in one Device::Submit, and the clone's thread reaping with Device::Run
// (no completion threads), so that what differs from the raw engine is the
// layer's own cost.

#include <sys/resource.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "aiokit/device.h"
#include "clone.h"
#include "pace.h"
#include "place.h"
#include "random.h"

namespace aiokit::tool {
namespace {

uint64_t NsBetween(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

class DeviceClone {
 public:
  DeviceClone(const JobOptions& o, unsigned index, Target* target,
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

  CloneResult Run() {
    if (!SetUp()) return std::move(r_);
    if (!WaitForGo()) return std::move(r_);
    Main();
    r_.es = dev_->engine().Stats();
    if (Status s = dev_->Close(); !s.ok() && r_.first_error.empty()) {
      r_.first_error = s.ToString();
    }
    return std::move(r_);
  }

 private:
  struct Slot {
    std::unique_ptr<IoContext> ioc;
    Buffer buf;
    bool read = true;
    uint64_t len = 0;
    uint64_t off = 0;  // in the region
    Clock::time_point submit_start, issued;
  };

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

  bool SetUp() {
    const std::string job = o_.name == "aiokit" ? "" : " (job " + o_.name + ")";
    DeviceOptions d;
    Result<EngineKind> kind = ParseEngineKind(o_.engine);
    d.engine.kind = kind.ok() ? *kind : EngineKind::kAuto;
    d.engine.queue_depth = o_.iodepth;
    d.engine.notify_fd = false;
    if (o_.spin_us >= 0) {
      d.engine.spin_before_wait = std::chrono::microseconds(o_.spin_us);
    }
    d.engine.adaptive_spin = !o_.spin_always;
    // The clone's thread makes every call (no completion threads), as in the
    // engine clone.
    d.engine.single_thread = true;
    d.engine.threads_min = o_.threads_min;
    d.engine.threads_max = o_.threads_max;
    d.engine.threads_ordered_per_fd = o_.threads_ordered;
    d.engine.threads_kernel_aio = o_.threads_kernel_aio;
    d.completion_threads = 0;
    d.reap_max = std::max(1U, o_.iodepth);
    d.direct = o_.direct != 0;
    d.write_hints = false;
    d.requests = o_.iodepth;
    if (o_.fixedbufs) {
      d.buffer_count = o_.iodepth;
      d.buffer_size = o_.MaxBs();
    }
    // The target's descriptor, reopened through /proc: the run may have made
    // an unnamed file.
    const std::string path = "/proc/self/fd/" + std::to_string(t_->file.fd());
    Result<std::unique_ptr<Device>> dev = Device::Open(path, d);
    if (!dev.ok()) {
      const Status& s = dev.status();
      if (s.Is(Errc::kUnsupported) ||
          s.code() == std::errc::operation_not_permitted ||
          s.code() == std::errc::function_not_supported) {
        Fail(EngineRefused{o_.engine, s.ToString()}, Status());
      } else {
        Fail(std::nullopt,
             UsageError("--api=device" + job + ": " + s.ToString()));
      }
      return false;
    }
    dev_ = std::move(*dev);
    r_.engine = dev_->engine().Name();
    r_.caps = dev_->engine().GetCapabilities();
    r_.passed_over = dev_->Info().engines_passed_over;
    slots_.resize(o_.iodepth);
    for (size_t i = 0; i < slots_.size(); ++i) {
      Result<Buffer> b = dev_->AllocateBuffer(o_.MaxBs());
      if (!b.ok()) {
        Fail(std::nullopt, UsageError("--bs x --iodepth" + job + ": " +
                                      b.status().ToString()));
        return false;
      }
      for (size_t k = 0; k + 8 <= b->size(); k += 8) {
        const uint64_t v = rng_.Next();
        std::memcpy(b->data() + k, &v, 8);
      }
      slots_[i].buf = std::move(*b);
      slots_[i].ioc = std::make_unique<IoContext>(
          [this, i](IoContext&) { done_.push_back(i); });
    }
    done_.reserve(o_.iodepth);
    idle_.reserve(o_.iodepth);
    batch_.reserve(o_.iodepth);
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

  // The read/write mix's next draw.
  bool DrawRead() {
    return read_pct_ == 100 || (read_pct_ != 0 && rng_.Below(100) < read_pct_);
  }

  // Queues the next request on slot i, in direction `read` (nullopt: drawn
  // here).
  bool Prep(size_t i, std::optional<bool> read) {
    Slot& s = slots_[i];
    s.read = read ? *read : DrawRead();
    const Place p = placer_.Next(s.read);
    const uint64_t n = p.len;
    const uint64_t off = p.off;
    s.len = n;
    s.off = off;
    const uint64_t at = t_->offset + off;
    Buffer b = s.buf.size() == n ? s.buf : s.buf.Slice(0, n);
    Status st = s.read ? dev_->AioRead(at, std::move(b), s.ioc.get())
                       : dev_->AioWrite(at, b, s.ioc.get());
    if (!st.ok()) {
      if (r_.first_error.empty()) r_.first_error = st.ToString();
      stop_ = true;
      return false;
    }
    issued_bytes_ += n;
    ++issued_ios_;
    if (pacer_.active()) {
      pacer_.Issued(s.read, n, Clock::now());
      want_.reset();
    }
    batch_.push_back(i);
    return true;
  }

  void Submit() {
    const size_t per_call = o_.SubmitBatch();
    size_t off = 0;
    IoContext* iocs[256];
    while (off < batch_.size()) {
      const size_t n = std::min({per_call, batch_.size() - off, size_t{256}});
      for (size_t k = 0; k < n; ++k)
        iocs[k] = slots_[batch_[off + k]].ioc.get();
      const Clock::time_point before = Clock::now();
      Status st = dev_->Submit(std::span<IoContext* const>(iocs, n));
      ++r_.submit_calls;
      const Clock::time_point now = Clock::now();
      if (!st.ok()) {
        if (r_.first_error.empty()) r_.first_error = st.ToString();
        stop_ = true;
        return;
      }
      for (size_t k = 0; k < n; ++k) {
        Slot& s = slots_[batch_[off + k]];
        s.submit_start = before;
        s.issued = now;
      }
      r_.submitted += n;
      in_flight_ += n;
      off += n;
    }
    batch_.clear();
  }

  void Complete(size_t i, Clock::time_point now, bool measuring) {
    Slot& s = slots_[i];
    DirStats& d = s.read ? r_.read : r_.write;
    if (!s.ioc->ok()) {
      const Status st = s.ioc->status();
      const int e = st.Errno();
      ++r_.errors[e != 0 ? e : EIO];
      if (r_.first_error.empty()) r_.first_error = st.ToString();
      stop_ = true;
      s.ioc->Reset();
      return;
    }
    if (measuring) {
      d.slat.Record(NsBetween(s.submit_start, s.issued));
      d.clat.Record(NsBetween(s.issued, now));
      d.lat.Record(NsBetween(s.submit_start, now));
      ++d.ios;
      d.bytes += s.len;
      r_.log.Record(now, s.read, s.len, s.off,
                    NsBetween(s.submit_start, s.issued),
                    NsBetween(s.issued, now), NsBetween(s.submit_start, now));
    }
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
    for (size_t i = 0; i < o_.iodepth; ++i) idle_.push_back(i);
    pacer_.Start(start);
    r_.log.Start(o_, measure_from);
    // With --rate or --thinktime: when the next request may go (max: after
    // a completion); nullopt while nothing waits for the schedule.
    std::optional<Clock::time_point> paced;
    auto refill = [&] {
      if (StopAsked(*shared_, *progress_)) stop_ = true;
      paced.reset();
      while (!idle_.empty() && !stop_ &&
             o_.WantsMore(t_->size, issued_bytes_, issued_ios_,
                          placer_.passes())) {
        std::optional<bool> dir;
        if (pacer_.active()) {
          if (!want_) want_ = DrawRead();  // kept until its request goes
          const Clock::time_point now = Clock::now();
          const Pacer::Turn turn =
              pacer_.Next(*want_, now, in_flight_ + batch_.size());
          if (turn.at > now) {
            paced = turn.at;
            break;
          }
          dir = turn.read;
        }
        if (!Prep(idle_.back(), dir)) break;
        idle_.pop_back();
      }
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
        if (!batch_.empty()) Submit();
        continue;
      }
      std::chrono::nanoseconds timeout = kForever;
      if (paced && *paced != Clock::time_point::max()) {
        if (pacer_.quiesce()) {
          // fio's io_submit_mode=inline: what is out completes first.
          while (in_flight_ != done_.size()) {
            Result<size_t> ran = dev_->Run(kForever);
            ++r_.reap_calls;
            if (!ran.ok()) break;
          }
          timeout = std::chrono::nanoseconds(0);
        } else {
          timeout = std::clamp<std::chrono::nanoseconds>(
              *paced - Clock::now(), std::chrono::nanoseconds(0), kForever);
        }
      }
      Result<size_t> got = dev_->Run(timeout);
      ++r_.reap_calls;
      if (!got.ok()) {
        if (r_.first_error.empty()) r_.first_error = got.status().ToString();
        break;
      }
      const Clock::time_point now = Clock::now();
      if (!done_.empty()) last = now;
      r_.reaped += done_.size();
      in_flight_ -= done_.size();
      if (!measuring && now >= measure_from) {
        measuring = true;
        r_.read = DirStats{};
        r_.write = DirStats{};
        issued_bytes_ = 0;
        issued_ios_ = 0;
        last = measure_from;
      }
      if (now >= end_at) stop_ = true;
      for (size_t i : done_) {
        Complete(i, now, measuring && now >= measure_from);
        pacer_.Completed(slots_[i].read, slots_[i].len, now,
                         measuring && now >= measure_from);
        idle_.push_back(i);
      }
      done_.clear();
      pacer_.Spin();
      if (o_.HasMinimum()) {
        if (std::string bad = pacer_.CheckMinimum(now); !bad.empty()) {
          if (r_.first_error.empty()) r_.first_error = std::move(bad);
          stop_ = true;
        }
      }
      refill();
      if (!batch_.empty()) Submit();
      const uint64_t ios = r_.read.ios + r_.write.ios;
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

  const JobOptions& o_;
  Target* t_;
  RunShared* shared_;
  Progress* progress_;
  Rng rng_;
  unsigned read_pct_;
  Placer placer_;
  Pacer pacer_;
  std::optional<bool> want_;  // paced: the mix's draw, until its request goes
  CloneResult r_;
  std::vector<Slot> slots_;
  std::vector<size_t> done_;   // slots whose group completed, by callbacks
  std::vector<size_t> idle_;   // slots with nothing in flight
  std::vector<size_t> batch_;  // slots queued, to submit
  size_t in_flight_ = 0;
  bool stop_ = false;
  uint64_t issued_bytes_ = 0;  // since the ramp
  uint64_t issued_ios_ = 0;
  // Last, so closed first: it waits for what is in flight while the slots'
  // contexts and buffers still exist.
  std::unique_ptr<Device> dev_;
};

}  // namespace

CloneResult RunDeviceClone(const JobOptions& o, unsigned index, Target* target,
                           RunShared* shared, Progress* progress,
                           uint64_t seed) {
  DeviceClone c(o, index, target, shared, progress, seed);
  return c.Run();
}

}  // namespace aiokit::tool
