// The fault-injecting engine (include/aiokit/fault.h).
//
// Submission faults cut the batch before it reaches the inner engine, so the
// requests not taken are untouched, as SubmitResult promises. Completion
// faults are applied to what the inner engine's Reap returns: the result is
// replaced, or the request is held back in `held_` and handed out later.
// Everything taken from the inner engine goes to `ready_` or `held_` before
// anything else happens, so a Reap that returns early (deadline, caller's
// array full) loses nothing, and is marked in flight again until Reap hands it
// out (it reads as not completed; Cancel answers kNotCancellable).

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/engine_wrapper.h"
#include "aiokit/fault.h"

namespace aiokit {
namespace {

using Clock = std::chrono::steady_clock;

Status SpecError(std::string_view item, const std::string& rule) {
  return Status::Error(Errc::kInvalidArgument,
                       "fault spec: '" + std::string(item) + "': " + rule);
}

bool ParseProbability(std::string_view v, double* out) {
  if (v.empty()) return false;
  const std::string s(v);
  char* end = nullptr;
  const double p = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(p)) return false;
  *out = p;
  return true;
}

bool ParseDuration(std::string_view v, std::chrono::microseconds* out) {
  uint64_t n = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || ptr == v.data()) return false;
  const std::string_view unit(ptr, v.data() + v.size() - ptr);
  constexpr uint64_t kMax = uint64_t{1} << 40;  // about 12 days in us
  uint64_t us = 0;
  if (unit == "ns") {
    us = n / 1000;
  } else if (unit == "us" || unit.empty()) {
    us = n;
  } else if (unit == "ms") {
    us = n > kMax / 1000 ? kMax + 1 : n * 1000;
  } else if (unit == "s") {
    us = n > kMax / 1000000 ? kMax + 1 : n * 1000000;
  } else {
    return false;
  }
  if (us > kMax) return false;
  *out = std::chrono::microseconds(us);
  return true;
}

std::string DurationText(std::chrono::microseconds d) {
  const auto us = static_cast<uint64_t>(d.count());
  if (us != 0 && us % 1000000 == 0) return std::to_string(us / 1000000) + "s";
  if (us != 0 && us % 1000 == 0) return std::to_string(us / 1000) + "ms";
  return std::to_string(us) + "us";
}

class FaultEngine final : public FaultInjectingEngine {
 public:
  FaultEngine(std::unique_ptr<Engine> inner, const FaultSpec& spec,
              const CompletionDelivery& delivery)
      : FaultInjectingEngine(std::move(inner)),
        spec_(spec),
        delivery_(delivery),
        rng_(spec.seed) {}

  ~FaultEngine() override {
    (void)Shutdown(kForever);
    // The inner engine's destructor waits for what is in flight; what is held
    // here has completed already, and is the caller's again.
    ResetTarget();
    std::lock_guard<std::mutex> lock(held_mu_);
    for (const Held& h : held_) HandOut(h.req);
    for (Request* r : ready_) HandOut(r);
  }

  // Starts the completion thread, when asked for.
  Status Start() {
    if (!delivery_.completion_thread) return {};
    if (delivery_.on_complete == nullptr) {
      return Status::Error(Errc::kInvalidArgument,
                           "fault injection: completion_thread needs "
                           "on_complete (the callback it calls)");
    }
    // std::thread reports a thread it cannot create by throwing; no
    // exception crosses the API, so it is caught here.
    try {
      thread_ = std::thread([this] {
        for (;;) {
          Result<size_t> r = Reap(std::span<Request*>(), 1, kForever);
          if (!r.ok() && r.status().Is(Errc::kShutdown)) break;
          if (!r.ok())
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        std::lock_guard<std::mutex> lock(thread_mu_);
        thread_done_ = true;
        thread_cv_.notify_all();
      });
    } catch (const std::system_error& e) {
      return Status::FromErrno(e.code().value(),
                               "fault injection: starting the completion "
                               "thread");
    }
    return {};
  }

  [[nodiscard]] EngineStats Stats() const noexcept override {
    EngineStats s = target().Stats();
    // As the caller sees it: completed when Reap returned it here.
    const uint64_t done = completed_.load(std::memory_order_relaxed);
    const uint64_t taken = accepted_.load(std::memory_order_relaxed);
    s.completed = done;
    s.in_flight = taken >= done ? taken - done : 0;
    return s;
  }
  [[nodiscard]] FaultStats fault_stats() const noexcept override {
    FaultStats f;
    f.submit_calls = submit_calls_.load(std::memory_order_relaxed);
    f.accepted = accepted_.load(std::memory_order_relaxed);
    f.completed = completed_.load(std::memory_order_relaxed);
    f.eagain = eagain_.load(std::memory_order_relaxed);
    f.partial = partial_.load(std::memory_order_relaxed);
    f.short_io = short_io_.load(std::memory_order_relaxed);
    f.eio = eio_.load(std::memory_order_relaxed);
    f.enospc = enospc_.load(std::memory_order_relaxed);
    f.delayed = delayed_.load(std::memory_order_relaxed);
    f.reordered = reordered_.load(std::memory_order_relaxed);
    f.stalls = stalls_.load(std::memory_order_relaxed);
    return f;
  }
  [[nodiscard]] const FaultSpec& spec() const noexcept override {
    return spec_;
  }

  SubmitResult Submit(std::span<Request* const> batch) override {
    submit_calls_.fetch_add(1, std::memory_order_relaxed);
    size_t take = batch.size();
    bool eagain = false;
    {
      std::lock_guard<std::mutex> lock(rng_mu_);
      if (!batch.empty() && Chance(spec_.eagain)) {
        eagain = true;
      } else if (batch.size() > 1 && Chance(spec_.partial)) {
        take = 1 + Below(batch.size() - 1);  // 1 .. size-1
      }
    }
    if (eagain) {
      eagain_.fetch_add(1, std::memory_order_relaxed);
      SubmitResult r;
      r.status =
          Status::Error(Errc::kQueueFull, "fault injection: EAGAIN, none of " +
                                              std::to_string(batch.size()) +
                                              " requests submitted");
      return r;
    }
    SubmitResult r = target().Submit(batch.first(take));
    accepted_.fetch_add(r.accepted, std::memory_order_relaxed);
    if (take < batch.size() && r.status.ok()) {
      partial_.fetch_add(1, std::memory_order_relaxed);
      r.status = Status::Error(Errc::kQueueFull,
                               "fault injection: partial submission, " +
                                   std::to_string(take) + " of " +
                                   std::to_string(batch.size()) + " requests");
    }
    return r;
  }

  Result<size_t> Reap(std::span<Request*> out, size_t min,
                      std::chrono::nanoseconds timeout) override {
    if (delivery_.on_complete == nullptr) return ReapInto(out, min, timeout);
    // With callbacks: what Reap would return goes to the callback, until min
    // were delivered or the timeout passes.
    const bool forever = timeout.count() < 0;
    const Clock::time_point deadline =
        forever ? Clock::time_point::max() : Clock::now() + timeout;
    size_t delivered = 0;
    for (;;) {
      Request* buf[64];
      std::chrono::nanoseconds left = timeout;
      if (!forever && timeout.count() > 0) {
        left = std::max(std::chrono::nanoseconds(0),
                        std::chrono::duration_cast<std::chrono::nanoseconds>(
                            deadline - Clock::now()));
      }
      const size_t want =
          min > delivered ? std::min<size_t>(64, min - delivered) : 0;
      Result<size_t> r = ReapInto(std::span<Request*>(buf, 64), want, left);
      if (!r.ok()) {
        if (delivered != 0) return delivered;
        return r.status();
      }
      for (size_t i = 0; i < *r; ++i) {
        delivery_.on_complete(delivery_.on_complete_arg, buf[i]);
      }
      delivered += *r;
      if (delivered >= min || *r < 64 ||
          (!forever && Clock::now() >= deadline)) {
        return delivered;
      }
    }
  }

  Result<size_t> ReapInto(std::span<Request*> out, size_t min,
                          std::chrono::nanoseconds timeout) {
    if (out.empty()) return size_t{0};
    min = std::min(min, out.size());
    const bool forever = timeout.count() < 0;
    const Clock::time_point deadline =
        forever ? Clock::time_point::max() : Clock::now() + timeout;
    // One reaper at a time (a poller does not wait behind a blocked one for
    // longer than its own timeout). Not a timed_mutex: ThreadSanitizer does
    // not see pthread_mutex_clocklock.
    {
      std::unique_lock<std::mutex> g(gate_mu_);
      auto free = [&] { return !reaping_; };
      if (forever) {
        gate_cv_.wait(g, free);
      } else if (!gate_cv_.wait_until(g, deadline, free)) {
        return size_t{0};
      }
      reaping_ = true;
    }
    struct Leave {
      FaultEngine* e;
      ~Leave() {
        {
          std::lock_guard<std::mutex> g(e->gate_mu_);
          e->reaping_ = false;
        }
        e->gate_cv_.notify_one();
      }
    } leave{this};
    {
      std::lock_guard<std::mutex> g(rng_mu_);
      if (Chance(spec_.stall)) {
        stall_until_ = std::max(stall_until_, Clock::now() + spec_.stall_for);
        stalls_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    size_t n = 0;
    Status inner_status;  // kShutdown from the inner engine: nothing comes
    Status other_error;   // any other: returned at once (unless n > 0)
    for (;;) {
      Clock::time_point now = Clock::now();
      const bool stalled = now < stall_until_;
      if (!stalled) {
        // Take what the inner engine has, without waiting.
        Status s = Pull(std::chrono::nanoseconds(0), 0);
        if (!s.ok() && !s.Is(Errc::kShutdown)) {
          other_error = s;
          break;
        }
        if (!s.ok()) inner_status = s;
        now = Clock::now();
        ReleaseDue(now);
        n += Hand(out.subspan(n));
      }
      if (n >= min || n == out.size()) break;
      if (!inner_status.ok() && Idle()) break;
      if (now >= deadline) break;
      // Wait: for the stall to end, for a held completion to come due, or
      // for the inner engine.
      Clock::time_point until = deadline;
      if (stalled) until = std::min(until, stall_until_);
      {
        std::lock_guard<std::mutex> lock(held_mu_);
        for (const Held& h : held_) until = std::min(until, h.due);
      }
      if (stalled) {
        std::this_thread::sleep_until(until);
        continue;
      }
      const auto wait =
          until == Clock::time_point::max()
              ? kForever
              : std::max(std::chrono::nanoseconds(0),
                         std::chrono::duration_cast<std::chrono::nanoseconds>(
                             until - now));
      Status s = Pull(wait, 1);
      if (!s.ok() && !s.Is(Errc::kShutdown)) {
        other_error = s;
        break;
      }
      if (!s.ok()) {
        inner_status = s;
        if (Idle()) break;
        // Shut down: only held completions are left; sleep until one is due.
        std::this_thread::sleep_until(until);
      }
    }
    completed_.fetch_add(n, std::memory_order_relaxed);
    if (n == 0 && !other_error.ok()) return other_error;
    if (n == 0 && !inner_status.ok() && Idle()) return inner_status;
    return n;
  }

  Status Cancel(Request* req) override {
    if (req != nullptr && Holds(req)) return HeldBack(req);
    Status s = target().Cancel(req);
    // Taken from the inner engine meanwhile: completed, not yet handed out.
    if (s.Is(Errc::kInvalidArgument) && req != nullptr && Holds(req)) {
      return HeldBack(req);
    }
    return s;
  }

  Result<int> NotifyFd() override {
    if (spec_.HoldsCompletions()) {
      return Status::Error(
          Errc::kUnsupported,
          "fault injection: NotifyFd with delay, reorder or stall faults "
          "(the eventfd would not match what Reap returns)");
    }
    return target().NotifyFd();
  }

  using Engine::Shutdown;
  Status Shutdown(std::chrono::nanoseconds timeout,
                  ShutdownMode mode) override {
    const bool forever = timeout.count() < 0;
    const Clock::time_point deadline =
        forever ? Clock::time_point::max() : Clock::now() + timeout;
    Status s = target().Shutdown(timeout, mode);
    if (!s.ok() || !thread_.joinable()) return s;
    // The completion thread hands out what is held and ends once nothing is
    // left.
    std::unique_lock<std::mutex> lock(thread_mu_);
    auto ended = [&] { return thread_done_; };
    if (forever) {
      thread_cv_.wait(lock, ended);
    } else if (!thread_cv_.wait_until(lock, deadline, ended)) {
      return Status::Error(Errc::kTimedOut,
                           "fault injection: Shutdown: completions held back "
                           "were still being delivered at the deadline; call "
                           "Shutdown again");
    }
    lock.unlock();
    thread_.join();
    return s;
  }

 private:
  struct Held {
    Request* req;
    Clock::time_point due;
    bool reordered;
    uint64_t pull;  // the Pull that took it
  };

  // Completed by the inner engine and not handed out yet.
  bool Holds(const Request* req) {
    std::lock_guard<std::mutex> lock(held_mu_);
    for (const Held& h : held_) {
      if (h.req == req) return true;
    }
    return std::find(ready_.begin(), ready_.end(), req) != ready_.end();
  }
  bool Idle() {
    std::lock_guard<std::mutex> lock(held_mu_);
    return held_.empty() && ready_.empty();
  }
  static Status HeldBack(const Request* req) {
    return Status::Error(Errc::kNotCancellable,
                         "fault injection: " + DescribeAsked(*req) +
                             ": already completed (its completion is held "
                             "back, or not handed out yet)");
  }

  bool Chance(double p) {
    if (p <= 0) return false;
    return std::uniform_real_distribution<double>(0, 1)(rng_) < p;
  }
  uint64_t Below(uint64_t n) {  // uniform in [0, n)
    return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_);
  }

  // One inner Reap into ready_ / held_, with faults applied. By the reaper.
  // Every request taken is marked in flight again until Hand returns it.
  Status Pull(std::chrono::nanoseconds wait, size_t min) {
    Request* got[64];
    Result<size_t> r = target().Reap(std::span<Request*>(got, 64), min, wait);
    if (!r.ok()) return r.status();
    if (*r == 0) return Status();
    ++pulls_;
    bool fresh = false;
    const Clock::time_point now = Clock::now();
    std::lock_guard<std::mutex> g(rng_mu_);
    std::lock_guard<std::mutex> lock(held_mu_);
    for (size_t i = 0; i < *r; ++i) {
      Request* req = got[i];
      HoldBack(req);
      Inject(req);
      if (Chance(spec_.delay)) {
        delayed_.fetch_add(1, std::memory_order_relaxed);
        held_.push_back(Held{req, now + spec_.delay_for, false, pulls_});
      } else if (Chance(spec_.reorder)) {
        reordered_.fetch_add(1, std::memory_order_relaxed);
        held_.push_back(Held{req, now + spec_.reorder_for, true, pulls_});
      } else {
        ready_.push_back(req);
        fresh = true;
      }
    }
    // A completion held for reordering by an earlier Pull goes out now,
    // behind these later ones.
    if (fresh) {
      for (Held& h : held_) {
        if (h.reordered && h.pull < pulls_) h.due = now;
      }
    }
    return Status();
  }

  void Inject(Request* req) {
    // Only requests the engine ran and that succeeded: a refusal stays the
    // engine's (it is the answer to a bad request, not a device fault).
    if (req->origin != Origin::kEngine || req->rval < 0) return;
    const bool rw = req->op == Op::kRead || req->op == Op::kWrite ||
                    req->op == Op::kReadv || req->op == Op::kWritev;
    const bool writes = req->op == Op::kWrite || req->op == Op::kWritev ||
                        req->op == Op::kFsync || req->op == Op::kFdatasync;
    if (rw || writes) {
      if (Chance(spec_.eio)) {
        req->rval = -EIO;
        eio_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
    if (writes && Chance(spec_.enospc)) {
      req->rval = -ENOSPC;
      enospc_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (rw && req->rval > 0 && Chance(spec_.short_io)) {
      req->rval = static_cast<int64_t>(Below(static_cast<uint64_t>(req->rval)));
      short_io_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // Moves held completions that are due to ready_. By the reaper.
  void ReleaseDue(Clock::time_point now) {
    std::lock_guard<std::mutex> lock(held_mu_);
    auto it = std::stable_partition(held_.begin(), held_.end(),
                                    [&](const Held& h) { return h.due > now; });
    for (auto i = it; i != held_.end(); ++i) ready_.push_back(i->req);
    held_.erase(it, held_.end());
  }

  size_t Hand(std::span<Request*> out) {
    std::lock_guard<std::mutex> lock(held_mu_);
    size_t n = 0;
    while (n < out.size() && !ready_.empty()) {
      Request* r = ready_.front();
      ready_.pop_front();
      HandOut(r);
      out[n++] = r;
    }
    return n;
  }

  const FaultSpec spec_;
  const CompletionDelivery delivery_;
  std::thread thread_;  // the completion thread, when asked for
  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool thread_done_ = false;  // guarded by thread_mu_
  std::mutex rng_mu_;
  std::mt19937_64 rng_;
  std::mutex gate_mu_;  // reaping_: one Reap at a time
  std::condition_variable gate_cv_;
  bool reaping_ = false;
  Clock::time_point stall_until_{};  // the reaper's
  uint64_t pulls_ = 0;               // the reaper's
  std::mutex held_mu_;               // ready_ and held_ (Cancel looks too)
  std::deque<Request*> ready_;
  std::vector<Held> held_;
  std::atomic<uint64_t> submit_calls_{0}, accepted_{0}, completed_{0},
      eagain_{0}, partial_{0}, short_io_{0}, eio_{0}, enospc_{0}, delayed_{0},
      reordered_{0}, stalls_{0};
};

}  // namespace

Result<FaultSpec> ParseFaultSpec(std::string_view text) {
  FaultSpec spec;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string_view item = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) {
      if (comma == text.size()) break;
      return SpecError(item, "empty item (two commas in a row?)");
    }
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return SpecError(item, "expected NAME=VALUE");
    }
    const std::string_view name = item.substr(0, eq);
    std::string_view value = item.substr(eq + 1);
    if (name == "seed") {
      uint64_t seed = 0;
      const auto [p, ec] =
          std::from_chars(value.data(), value.data() + value.size(), seed);
      if (ec != std::errc() || p != value.data() + value.size()) {
        return SpecError(item, "the seed is an unsigned integer");
      }
      spec.seed = seed;
      continue;
    }
    std::string_view duration;
    if (const size_t colon = value.find(':'); colon != std::string_view::npos) {
      duration = value.substr(colon + 1);
      value = value.substr(0, colon);
    }
    double* p = nullptr;
    std::chrono::microseconds* d = nullptr;
    if (name == "eagain") {
      p = &spec.eagain;
    } else if (name == "partial") {
      p = &spec.partial;
    } else if (name == "short") {
      p = &spec.short_io;
    } else if (name == "eio") {
      p = &spec.eio;
    } else if (name == "enospc") {
      p = &spec.enospc;
    } else if (name == "delay") {
      p = &spec.delay;
      d = &spec.delay_for;
    } else if (name == "reorder") {
      p = &spec.reorder;
      d = &spec.reorder_for;
    } else if (name == "stall") {
      p = &spec.stall;
      d = &spec.stall_for;
    } else {
      return SpecError(item,
                       "unknown fault (eagain, partial, short, eio, enospc, "
                       "delay, reorder, stall, seed)");
    }
    if (!ParseProbability(value, p) || *p < 0 || *p >= 1) {
      return SpecError(item, "the probability is a number in [0, 1)");
    }
    if (!duration.empty()) {
      if (d == nullptr) {
        return SpecError(item, "only delay, reorder and stall take a duration");
      }
      if (!ParseDuration(duration, d) || d->count() == 0) {
        return SpecError(item,
                         "the duration is a positive number with ns, us, ms or "
                         "s (at most about 12 days)");
      }
    }
  }
  return spec;
}

std::string FaultSpecString(const FaultSpec& spec) {
  std::ostringstream out;
  const char* sep = "";
  auto prob = [&](const char* name, double p) {
    if (p <= 0) return;
    out << sep << name << '=' << p;
    sep = ",";
  };
  prob("eagain", spec.eagain);
  prob("partial", spec.partial);
  prob("short", spec.short_io);
  prob("eio", spec.eio);
  prob("enospc", spec.enospc);
  if (spec.delay > 0) {
    out << sep << "delay=" << spec.delay << ':' << DurationText(spec.delay_for);
    sep = ",";
  }
  if (spec.reorder > 0) {
    out << sep << "reorder=" << spec.reorder << ':'
        << DurationText(spec.reorder_for);
    sep = ",";
  }
  if (spec.stall > 0) {
    out << sep << "stall=" << spec.stall << ':' << DurationText(spec.stall_for);
    sep = ",";
  }
  out << sep << "seed=" << spec.seed;
  return out.str();
}

Result<std::unique_ptr<FaultInjectingEngine>> MakeFaultInjectingEngine(
    std::unique_ptr<Engine> inner, const FaultSpec& spec,
    const CompletionDelivery& delivery) {
  if (inner == nullptr) {
    return Status::Error(Errc::kInvalidArgument,
                         "fault injection: no engine to wrap");
  }
  FaultSpec s = spec;
  if (s.seed == 0) {
    std::random_device rd;
    s.seed = (uint64_t{rd()} << 32) | rd();
    if (s.seed == 0) s.seed = 1;
  }
  auto engine = std::make_unique<FaultEngine>(std::move(inner), s, delivery);
  if (Status st = engine->Start(); !st.ok()) return st;
  return std::unique_ptr<FaultInjectingEngine>(std::move(engine));
}

}  // namespace aiokit
