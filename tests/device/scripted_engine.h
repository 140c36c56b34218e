// A test engine wrapper with deterministic faults for the device layer's
// tests (aiokit/fault.h injects at random; these tests need "this range
// fails", "every transfer is short", "the first fdatasync fails", "hold
// these requests until I say so"). Rules are changed while the engine runs;
// each is read under the wrapper's lock.

#ifndef AIOKIT_TESTS_DEVICE_SCRIPTED_ENGINE_H_
#define AIOKIT_TESTS_DEVICE_SCRIPTED_ENGINE_H_

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <thread>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/engine_wrapper.h"
#include "aiokit/request.h"
#include "aiokit/status.h"

namespace aiokit::testing {

class ScriptedEngine final : public EngineWrapper {
 public:
  struct Rules {
    // Reads and writes overlapping [fail_offset, fail_offset + fail_length)
    // complete with -fail_errno (0: off).
    uint64_t fail_offset = 0;
    uint64_t fail_length = 0;
    int fail_errno = 0;
    // Reads and writes longer than short_unit report half their length,
    // rounded down to short_unit (0: off). The I/O itself was whole.
    uint64_t short_unit = 0;
    // The first `fail_syncs` fdatasync/fsync complete with -sync_errno.
    int fail_syncs = 0;
    int sync_errno = EIO;
    // Requests overlapping this range are held back until Release().
    uint64_t hold_offset = 0;
    uint64_t hold_length = 0;
    // Completions with -EAGAIN instead of the result, for the first N
    // reads and writes (the I/O itself happened; a retry redoes it).
    int eagain_results = 0;
    // fdatasync/fsync completions are held back until Release().
    bool hold_syncs = false;
    // Cancel of a request in the hold range succeeds: it completes with
    // -ECANCELED, held already or when the target returns it (as an engine
    // that stops a blocked transfer). Off: kNotCancellable, held or not, so
    // that a cancel coming early on a loaded machine changes nothing.
    bool cancel_held = false;
    // Cancel of a request in the hold range says OK and does nothing: it
    // stays held until Release (as io_uring takes a cancel it cannot carry
    // out on a worker in an uninterruptible wait).
    bool cancel_ignored = false;
  };

  explicit ScriptedEngine(std::unique_ptr<Engine> target)
      : EngineWrapper(std::move(target)) {}
  ~ScriptedEngine() override {
    Release();
    // Hand back anything still held so the target's Shutdown sees it reaped.
    ResetTarget();
  }

  void SetRules(const Rules& r) {
    std::lock_guard lock(mu_);
    rules_ = r;
  }
  // Held requests complete now (at the next Reap).
  void Release() {
    // Woken under the lock: once it is released, a reaper may hand the
    // requests back and the engine (with its NotifyFd) may be destroyed.
    std::lock_guard lock(mu_);
    rules_.hold_length = 0;
    rules_.hold_syncs = false;
    for (Request* r : held_) ready_.push_back(r);
    held_.clear();
    Wake();
  }
  size_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  uint64_t syncs_seen() const { return syncs_.load(); }
  // fdatasync/fsync requests handed to the target so far, and the highest
  // such number (1-based, in submission order) that has completed.
  uint64_t syncs_submitted() {
    std::lock_guard lock(mu_);
    return syncs_submitted_;
  }
  uint64_t newest_sync_completed() {
    std::lock_guard lock(mu_);
    return newest_sync_completed_;
  }

  // True when a write at `offset` had completed before a sync that has
  // completed successfully was submitted.
  bool Durable(uint64_t offset) {
    std::lock_guard lock(mu_);
    return durable_.count(offset) != 0;
  }

  SubmitResult Submit(std::span<Request* const> batch) override {
    {
      std::lock_guard lock(mu_);
      for (Request* r : batch) {
        if (r->op == Op::kFsync || r->op == Op::kFdatasync) {
          sync_number_[r] = ++syncs_submitted_;
          sync_covers_[r] = written_;
        }
      }
    }
    return target().Submit(batch);
  }

  Result<size_t> Reap(std::span<Request*> out, size_t min,
                      std::chrono::nanoseconds timeout) override {
    using Clock = std::chrono::steady_clock;
    const bool forever = timeout < std::chrono::nanoseconds::zero();
    const Clock::time_point deadline = Clock::now() + timeout;
    min = std::min(min, out.size());
    size_t n = 0;
    for (;;) {
      std::chrono::nanoseconds slice{0};
      if (n < min) {
        slice = std::chrono::milliseconds(5);
        if (!forever) {
          slice = std::min(slice,
                           std::chrono::duration_cast<std::chrono::nanoseconds>(
                               deadline - Clock::now()));
          if (slice < std::chrono::nanoseconds::zero()) slice = {};
        }
      }
      Request* got[64];
      Result<size_t> r = target().Reap(std::span<Request*>(got, 64),
                                       slice.count() > 0 ? 1 : 0, slice);
      bool pending = false;
      {
        std::lock_guard lock(mu_);
        if (r.ok()) {
          for (size_t i = 0; i < *r; ++i) Apply(got[i]);
        }
        while (n < out.size() && !ready_.empty()) {
          Request* req = ready_.front();
          ready_.pop_front();
          HandOut(req);
          out[n++] = req;
        }
        pending = !held_.empty() || !ready_.empty();
      }
      if (n >= min) return n;
      if (!forever && Clock::now() >= deadline) return n;
      if (!r.ok()) {
        if (!pending) {
          if (n > 0) return n;
          return r.status();
        }
        // The target is shut down but requests are held here: wait for
        // Release.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }

  Status Cancel(Request* req) override {
    {
      std::lock_guard lock(mu_);
      if (rules_.cancel_ignored &&
          Overlaps(*req, rules_.hold_offset, rules_.hold_length)) {
        return {};
      }
      auto it = std::find(held_.begin(), held_.end(), req);
      if (it == held_.end()) {
        if (!Overlaps(*req, rules_.hold_offset, rules_.hold_length)) {
          return target().Cancel(req);
        }
        if (!rules_.cancel_held) {
          return Status::Error(Errc::kNotCancellable,
                               "in the scripted engine's hold range");
        }
        cancel_on_arrival_.insert(req);  // Apply completes it cancelled
        return {};
      }
      if (!rules_.cancel_held) {
        return Status::Error(Errc::kNotCancellable,
                             "held by the scripted engine");
      }
      held_.erase(it);
      req->rval = -ECANCELED;
      ready_.push_back(req);
      cancelled_held_.fetch_add(1);
      Wake();  // under the lock, as in Release
    }
    return {};
  }
  // Held requests that Cancel completed with -ECANCELED.
  uint64_t cancelled_held() const { return cancelled_held_.load(); }
  // The target's: a completion the target signals is reaped here; Release
  // and Cancel signal it too for what they hand out.
  Result<int> NotifyFd() override {
    Result<int> fd = target().NotifyFd();
    if (fd.ok()) notify_fd_.store(*fd);
    return fd;
  }

 private:
  // Wakes a loop waiting on the NotifyFd for what Release or Cancel made
  // ready (an extra count is harmless: the reader polls and finds less).
  // REQUIRES mu_.
  void Wake() {
    const int fd = notify_fd_.load();
    if (fd >= 0) {
      const uint64_t one = 1;
      (void)!::write(fd, &one, sizeof(one));
    }
  }
  static bool Overlaps(const Request& r, uint64_t off, uint64_t len) {
    return len != 0 && r.offset < off + len && off < r.offset + r.length;
  }
  // REQUIRES mu_.
  void Apply(Request* r) {
    if (cancel_on_arrival_.erase(r) != 0) {
      r->rval = -ECANCELED;
      cancelled_held_.fetch_add(1);
      HoldBack(r);
      ready_.push_back(r);
      return;
    }
    const bool rw = r->op == Op::kRead || r->op == Op::kWrite ||
                    r->op == Op::kReadv || r->op == Op::kWritev;
    const bool sync = r->op == Op::kFsync || r->op == Op::kFdatasync;
    if (sync) {
      syncs_.fetch_add(1);
      newest_sync_completed_ =
          std::max(newest_sync_completed_, sync_number_[r]);
      if (r->rval == 0) {
        const std::set<uint64_t>& covers = sync_covers_[r];
        durable_.insert(covers.begin(), covers.end());
      }
      if (rules_.fail_syncs > 0) {
        --rules_.fail_syncs;
        r->rval = -rules_.sync_errno;
      }
    }
    if ((r->op == Op::kWrite || r->op == Op::kWritev) && r->rval > 0) {
      written_.insert(r->offset);
    }
    if (rw && r->rval >= 0) {
      if (rules_.fail_errno != 0 &&
          Overlaps(*r, rules_.fail_offset, rules_.fail_length)) {
        r->rval = -rules_.fail_errno;
      } else if (rules_.eagain_results > 0) {
        --rules_.eagain_results;
        r->rval = -EAGAIN;
      } else if (rules_.short_unit != 0 &&
                 static_cast<uint64_t>(r->rval) > rules_.short_unit) {
        const uint64_t half = static_cast<uint64_t>(r->rval) / 2;
        r->rval = static_cast<int64_t>(half - half % rules_.short_unit);
      }
    }
    if ((rw && Overlaps(*r, rules_.hold_offset, rules_.hold_length)) ||
        (sync && rules_.hold_syncs)) {
      HoldBack(r);
      held_.push_back(r);
      return;
    }
    HoldBack(r);
    ready_.push_back(r);
  }

  std::mutex mu_;
  Rules rules_;
  std::deque<Request*> ready_;
  std::vector<Request*> held_;
  std::set<Request*> cancel_on_arrival_;  // guarded by mu_
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> cancelled_held_{0};
  std::atomic<int> notify_fd_{-1};
  std::map<Request*, uint64_t> sync_number_;  // guarded by mu_
  // Offsets of the writes completed before each sync was submitted, and of
  // those a completed sync covers.
  std::set<uint64_t> written_;                          // guarded by mu_
  std::map<Request*, std::set<uint64_t>> sync_covers_;  // guarded by mu_
  std::set<uint64_t> durable_;                          // guarded by mu_
  uint64_t syncs_submitted_ = 0;                        // guarded by mu_
  uint64_t newest_sync_completed_ = 0;                  // guarded by mu_
};

}  // namespace aiokit::testing

#endif  // AIOKIT_TESTS_DEVICE_SCRIPTED_ENGINE_H_
