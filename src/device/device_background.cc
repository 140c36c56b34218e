// What the device does beside the request path: flushes shared among
// callers with a sticky failure, deadlines (a thread that cancels or reports
// requests still running at theirs), and discard (a thread that discards
// queued ranges and tells the caller which).

#include <linux/falloc.h>
#include <linux/fs.h>

#include <algorithm>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "device/device_impl.h"
#include "sys/syscalls.h"

namespace aiokit::device_internal {

// ------------------------------------------------------------------- flush
//
// write_gen_ counts writes completed. A flush covers every write counted
// before it was handed to the engine (flush_gen_); a waiter is done once a
// flush covering the count it saw when it asked (flush_target_) has
// completed. One flush is in flight at a time; waiters that came after it
// started are served by the next one, so concurrent callers share.

void DeviceImpl::RequestFlush(IoContext* ioc) {
  // Acquire pairs with the release increment in FinishIo: a write whose
  // group completed before this call is counted.
  const uint64_t target = write_gen_.load(std::memory_order_acquire);
  std::unique_lock lock(flush_mu_);
  if (!sticky_.ok()) {
    const Status sticky = sticky_;
    lock.unlock();
    CompleteOnContext(ioc, sticky, false, {});
    return;
  }
  if (target <= flushed_gen_) {
    lock.unlock();
    flushes_skipped_.fetch_add(1, std::memory_order_relaxed);
    CompleteOnContext(ioc, {}, false, {});
    return;
  }
  ioc->flush_target_ = target;
  ioc->flush_next_ = flush_waiters_;
  flush_waiters_ = ioc;
  flush_waiting_.fetch_add(1, std::memory_order_relaxed);
  if (flush_in_flight_) return;
  StartFlushLocked(lock);
}

void DeviceImpl::StartFlushLocked(std::unique_lock<std::mutex>& lock) {
  flush_in_flight_ = true;
  flush_gen_ = write_gen_.load(std::memory_order_acquire);
  flush_io_.req.PrepFdatasync(file_.fd());
  flush_io_.req.priv = &flush_io_;
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  lock.unlock();
  fdatasyncs_.fetch_add(1, std::memory_order_relaxed);
  Request* one[1] = {&flush_io_.req};
  Status why;
  for (unsigned refusals = 0;; ++refusals) {
    SubmitResult r = engine_->Submit(one);
    if (r.accepted == 1) return;
    why = r.status;
    if (!why.Is(Errc::kQueueFull) || refusals >= 16) break;
    std::this_thread::sleep_for(
        std::chrono::milliseconds(refusals < 4 ? 1U << refusals : 10U));
  }
  // Not handed over: the waiters fail (not sticky: nothing was flushed or
  // lost).
  lock.lock();
  flush_in_flight_ = false;
  IoContext* waiters = std::exchange(flush_waiters_, nullptr);
  flush_waiting_.store(0, std::memory_order_relaxed);
  lock.unlock();
  const Status error(why.code(),
                     "fdatasync(\"" + path_ +
                         "\"): the engine did not take it: " + why.ToString());
  while (waiters != nullptr) {
    IoContext* next = waiters->flush_next_;
    CompleteOnContext(waiters, error, false, {});
    waiters = next;
  }
  if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard idle(idle_mu_);
    idle_cv_.notify_all();
  }
}

void DeviceImpl::FlushDone(int64_t rval) {
  std::unique_lock lock(flush_mu_);
  flush_in_flight_ = false;
  IoContext* done = nullptr;
  Status error;
  if (rval < 0) {
    sticky_ = Status::FromErrno(
        static_cast<int>(-rval),
        "fdatasync(\"" + path_ +
            "\") failed; the kernel may have dropped the unwritten pages and "
            "report success next time, so every later flush fails with this "
            "error until the device is reopened");
    error = sticky_;
    done = std::exchange(flush_waiters_, nullptr);
    flush_waiting_.store(0, std::memory_order_relaxed);
  } else {
    flushed_gen_ = std::max(flushed_gen_, flush_gen_);
    IoContext** link = &flush_waiters_;
    while (*link != nullptr) {
      IoContext* w = *link;
      if (w->flush_target_ <= flushed_gen_) {
        flush_waiting_.fetch_sub(1, std::memory_order_relaxed);
        *link = w->flush_next_;
        w->flush_next_ = done;
        done = w;
      } else {
        link = &w->flush_next_;
      }
    }
  }
  if (flush_waiters_ != nullptr) {
    StartFlushLocked(lock);  // unlocks
  } else {
    lock.unlock();
  }
  while (done != nullptr) {
    // Read before completing: a callback may destroy the context.
    IoContext* next = done->flush_next_;
    CompleteOnContext(done, error, false, {});
    done = next;
  }
  if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard idle(idle_mu_);
    idle_cv_.notify_all();
  }
}

// ---------------------------------------------------------------- deadlines

void DeviceImpl::EnsureDeadlineThread() {
  std::call_once(dl_once_, [this] {
    dl_thread_ = std::thread([this] { DeadlineThreadMain(); });
  });
}

bool DeviceImpl::LinkDeadline(Io* io) {
  bool wake = false;
  {
    std::lock_guard lock(dl_mu_);
    // Under dl_mu_, as Cancel sets it: a piece is either linked before
    // Cancel walks the list (and found there) or refused here.
    if (io->ioc->cancel_requested_) return false;
    if (io->linked) return true;
    io->linked = true;
    io->dl_prev = nullptr;
    io->dl_next = dl_head_;
    if (dl_head_ != nullptr) dl_head_->dl_prev = io;
    dl_head_ = io;
    // Read here: once linked, the deadline thread may move it (a cancel's
    // grace).
    wake = io->deadline != Clock::time_point::max();
  }
  // Only a deadline that may come sooner than the thread's next wake-up
  // needs it awake.
  if (wake) dl_cv_.notify_one();
  return true;
}

Status DeviceImpl::Cancel(IoContext* ioc) {
  if (ioc == nullptr) {
    return Status::Error(Errc::kInvalidArgument, "Cancel: ioc is null");
  }
  DeviceImpl* bound = ioc->device_.load(std::memory_order_acquire);
  if (bound != nullptr && bound != this) {
    return Status::Error(
        Errc::kInvalidArgument,
        "Cancel on \"" + path_ + "\": the context belongs to another device");
  }
  if (!ioc->cancellable_ && ioc->request_timeout_.count() == 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "Cancel on \"" + path_ +
                             "\": the context was not made cancellable "
                             "(IoContext::set_cancellable) before its Submit");
  }
  std::lock_guard lock(dl_mu_);
  ioc->cancel_requested_ = true;
  for (Io* io = dl_head_; io != nullptr;) {
    Io* const following = io->dl_next;
    if (io->ioc == ioc && !io->cancel_asked) {
      // As the deadline thread does: unlinked, so no deadline cancels it
      // twice; its completion unlinks nothing more.
      if (engine_->Cancel(&io->req).ok()) {
        UnlinkDeadlineLocked(io);
        io->cancel_asked = true;
        io->cancel_by_caller = true;
      }
    }
    io = following;
  }
  return {};
}

void DeviceImpl::UnlinkDeadlineLocked(Io* io) {
  if (!io->linked) return;
  if (io->dl_prev != nullptr) {
    io->dl_prev->dl_next = io->dl_next;
  } else {
    dl_head_ = io->dl_next;
  }
  if (io->dl_next != nullptr) io->dl_next->dl_prev = io->dl_prev;
  io->dl_prev = io->dl_next = nullptr;
  io->linked = false;
}

void DeviceImpl::DeadlineThreadMain() {
  struct Report {
    IoContext* ioc;
    std::string what;
  };
  std::vector<Report> reports;
  std::unique_lock lock(dl_mu_);
  while (!dl_stop_) {
    const Clock::time_point now = Clock::now();
    Clock::time_point next = now + options_.poll_interval;
    // Unlinked, and the context told once that the request timed out while
    // it keeps its buffers, `why` the engine did not stop it.
    const auto ReportPinned = [&](Io* io, const std::string& why) {
      UnlinkDeadlineLocked(io);
      if (io->reported.exchange(true, std::memory_order_acq_rel)) return;
      timed_out_.fetch_add(1, std::memory_order_relaxed);
      pinned_.fetch_add(1, std::memory_order_relaxed);
      reports.push_back(
          {io->ioc, Describe(*io) + ": still running at its deadline (" +
                        std::to_string(io->done) + " bytes done); " + why +
                        ", so its buffers stay pinned until it "
                        "completes"});
    };
    for (Io* io = dl_head_; io != nullptr;) {
      Io* const following = io->dl_next;
      if (io->deadline > now) {
        next = std::min(next, io->deadline);
        io = following;
        continue;
      }
      if (io->cancel_asked) {
        // Cancelled at its deadline and still running a poll interval
        // later: the engine took the cancel but could not stop the request
        // (io_uring cannot interrupt a worker that waits uninterruptibly, as
        // a buffered read does on a page another read holds), so the
        // context hears now, as if the engine could not cancel it.
        ReportPinned(io, "the engine took the cancel but has not stopped it");
        io = following;
        continue;
      }
      // Under dl_mu_: the completion path unlinks (under it) before it
      // touches the request again, so the request is not being re-prepared.
      const Status cancel = engine_->Cancel(&io->req);
      if (cancel.ok()) {
        // Its completion says -ECANCELED, or, if it has not come a poll
        // interval from now, the context is told the request timed out.
        // It stays linked for that.
        io->cancel_asked = true;
        io->deadline = now + options_.poll_interval;
        next = std::min(next, io->deadline);
      } else {
        ReportPinned(io,
                     "the engine cannot cancel it (" + cancel.ToString() + ")");
      }
      io = following;
    }
    if (!reports.empty()) {
      lock.unlock();
      for (Report& r : reports) {
        CompleteOnContext(r.ioc, Status::Error(Errc::kTimedOut, r.what), false,
                          {});
      }
      reports.clear();
      lock.lock();
      continue;
    }
    dl_cv_.wait_until(lock, next);
  }
}

// ------------------------------------------------------------------ discard

Status DeviceImpl::QueueDiscard(std::span<const Extent> ranges) {
  if (!info_.discard) {
    return Status::Error(Errc::kUnsupported,
                         "discard on \"" + path_ + "\": " + info_.discard_note);
  }
  for (const Extent& e : ranges) {
    if (!RangeOk(e.offset, e.length, true)) {
      return RangeError("discard", e.offset, e.length, true);
    }
    if (block_device_) {
      // BLKDISCARD takes whole logical blocks.
      const uint64_t a = std::max<uint64_t>(512, write_align_.offset);
      if (e.offset % a != 0 || e.length % a != 0) {
        return Status::Error(Errc::kInvalidArgument,
                             "discard of \"" + path_ + "\" at offset " +
                                 std::to_string(e.offset) + ", length " +
                                 std::to_string(e.length) +
                                 ": a block device discards whole blocks of " +
                                 std::to_string(a) + " bytes");
      }
    }
  }
  {
    std::lock_guard lock(disc_mu_);
    if (disc_stop_) {
      return Status::Error(Errc::kShutdown, "discard on \"" + path_ +
                                                "\": the device is "
                                                "closing");
    }
    disc_queue_.insert(disc_queue_.end(), ranges.begin(), ranges.end());
    ++disc_queued_;
  }
  disc_cv_.notify_all();
  return {};
}

Status DeviceImpl::DiscardDrain() {
  if (!disc_thread_.joinable()) return {};
  if (std::this_thread::get_id() == disc_thread_.get_id()) {
    return Status::Error(Errc::kInvalidArgument,
                         "DiscardDrain on \"" + path_ +
                             "\" from the discard callback: it would wait "
                             "for itself");
  }
  std::unique_lock lock(disc_mu_);
  const uint64_t target = disc_queued_;
  disc_cv_.wait(lock, [&] { return disc_done_ >= target; });
  return {};
}

Status DeviceImpl::DiscardOne(const Extent& e) {
  const std::string what = "\"" + path_ + "\" at offset " +
                           std::to_string(e.offset) + ", length " +
                           std::to_string(e.length);
  if (block_device_) {
    uint64_t range[2] = {e.offset, e.length};
    if (int r = sys::Ioctl(file_.fd(), BLKDISCARD, range); r < 0) {
      return Status::FromErrno(-r, "BLKDISCARD of " + what);
    }
    return {};
  }
  if (int r = sys::Fallocate(
          file_.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
          static_cast<off_t>(e.offset), static_cast<off_t>(e.length));
      r < 0) {
    return Status::FromErrno(-r, "fallocate(PUNCH_HOLE) of " + what);
  }
  return {};
}

void DeviceImpl::DiscardThreadMain() {
  std::vector<Extent> batch;
  std::unique_lock lock(disc_mu_);
  for (;;) {
    disc_cv_.wait(lock, [&] { return !disc_queue_.empty() || disc_stop_; });
    if (disc_queue_.empty()) return;  // stopping, nothing left
    batch.swap(disc_queue_);
    const uint64_t upto = disc_queued_;
    lock.unlock();
    DiscardResult result;
    for (const Extent& e : batch) {
      Status s = DiscardOne(e);
      if (s.ok()) {
        discarded_bytes_.fetch_add(e.length, std::memory_order_relaxed);
        result.discarded.push_back(e);
      } else {
        result.failed.emplace_back(e, std::move(s));
      }
    }
    batch.clear();
    if (options_.on_discard) options_.on_discard(result);
    lock.lock();
    disc_done_ = upto;
    disc_cv_.notify_all();
  }
}

}  // namespace aiokit::device_internal
