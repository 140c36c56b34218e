// DeviceIo: coroutine operations on the device layer. Each operation is a
// group of one request on a pooled IoContext whose callback posts the
// coroutine's resumption to the loop (from a device completion thread, or
// from the loop's own reaping when the device has none).

#include <cerrno>
#include <chrono>
#include <string>
#include <utility>

#include "aiokit/coro.h"
#include "sys/syscalls.h"

namespace aiokit::coro {

namespace detail {

DeviceSlot::DeviceSlot() : ioc([this](IoContext&) { io->Done(this); }) {}

bool DeviceOp::await_suspend(std::coroutine_handle<> h) {
  waiter_ = h;
  DeviceSlot* s = io_->Take();
  {
    std::lock_guard lock(s->mu);
    s->op = this;
  }
  slot_ = s;
  started_ = s;
  Device& d = io_->device_;
  // Cancellable only when something may cancel it: a cancellable context
  // costs a lock per request in the device.
  const bool cancellable =
      kind_ != Kind::kFlush &&
      (opts_.timeout.count() > 0 || opts_.stop.stop_possible());
  s->ioc.set_cancellable(cancellable);
  // A completion from now on posts finish_, which runs on this (the loop's)
  // thread after this returns, and disarms what is armed below.
  if (Armed()) {
    finish_.op = this;
    finish_.fn = [](RemoteCall* c) {
      DeviceOp* op = static_cast<Call*>(c)->op;
      op->loop_->RemoveTimer(&op->deadline_);
      (void)op->loop_->CancelCall(&op->cancel_);
      if (op->opts_.executor != nullptr) {
        op->opts_.executor->Post(op->waiter_);
      } else {
        op->scheduled_ = true;
        op->loop_->Schedule(op->waiter_);
      }
    };
    cancel_.op = this;
    cancel_.fn = [](RemoteCall* c) {
      DeviceOp* op = static_cast<Call*>(c)->op;
      if (op->io_ != nullptr) op->io_->Cancel(op);
    };
  }
  Status st;
  switch (kind_) {
    case Kind::kRead:
      asked_ = buffer_.size();
      st = d.AioRead(offset_, std::move(buffer_), &s->ioc, &s->got);
      break;
    case Kind::kReadv:
      for (const Buffer& b : buffers_) asked_ += b.size();
      st = d.AioRead(offset_, buffers_, &s->ioc, &s->got);
      buffers_ = {};
      break;
    case Kind::kWrite:
      asked_ = buffer_.size();
      st = d.AioWrite(offset_, buffer_, &s->ioc, write_);
      buffer_ = Buffer();
      break;
    case Kind::kWritev:
      for (const Buffer& b : buffers_) asked_ += b.size();
      st = d.AioWrite(offset_, buffers_, &s->ioc, write_);
      buffers_ = {};
      break;
    case Kind::kFlush:
      st = d.Submit(&s->ioc, ThenFlush::kYes);
      break;
  }
  if (st.ok() && kind_ != Kind::kFlush) st = d.Submit(&s->ioc);
  if (st.ok()) {
    if (cancellable && opts_.timeout.count() > 0) {
      deadline_.op = this;
      deadline_.due = std::chrono::steady_clock::now() + opts_.timeout;
      deadline_.fire = [](TimerNode* t) {
        DeviceOp* op = static_cast<Deadline*>(t)->op;
        op->timed_out_ = true;
        if (op->io_ != nullptr) op->io_->Cancel(op);
      };
      loop_->AddTimer(&deadline_);
    }
    // Last: with stop already requested the callback runs here, and posts.
    if (cancellable && opts_.stop.stop_possible()) {
      stop_cb_.emplace(opts_.stop, OnStop{this});
    }
    return true;
  }
  // Refused: nothing runs. A request queued and then not submitted stays on
  // the context, so that slot is not reused.
  status_ = std::move(st);
  {
    std::lock_guard lock(s->mu);
    s->op = nullptr;
  }
  slot_ = nullptr;
  started_ = nullptr;
  io_->Release(s, /*reusable=*/s->ioc.pending() == 0);
  return false;
}

void DeviceOp::OnStop::operator()() const noexcept {
  // Any thread: the loop's thread does the cancelling.
  op->loop_->PostCall(&op->cancel_);
}

Result<size_t> DeviceOp::await_resume() {
  posted_ = false;
  scheduled_ = false;
  stop_cb_.reset();
  if (!status_.ok()) {
    if (timed_out_ && status_.Errno() == ECANCELED) {
      return Status::Error(
          Errc::kTimedOut,
          status_.context() + " (its deadline of " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::microseconds>(
                      opts_.timeout)
                      .count()) +
              " us passed)");
    }
    return status_;
  }
  const bool read = kind_ == Kind::kRead || kind_ == Kind::kReadv;
  return static_cast<size_t>(read ? got_ : asked_);
}

DeviceOp::~DeviceOp() {
  // The stop callback first: its destructor waits for one running on
  // another thread, which may be posting cancel_.
  stop_cb_.reset();
  (void)loop_->CancelCall(&cancel_);
  loop_->RemoveTimer(&deadline_);
  if (started_ == nullptr) return;
  bool posted = false;
  {
    std::lock_guard lock(started_->mu);
    if (started_->op == this) {
      started_->op = nullptr;  // detached: the group completes into the pool
      return;
    }
    posted = posted_;
  }
  // Completed, and destroyed before it resumed: no resumption of a frame
  // that is gone (posted to the loop, or scheduled by finish_).
  if (posted) {
    (void)loop_->CancelCall(&finish_);
    loop_->Unschedule(waiter_);
  }
}

}  // namespace detail

using detail::DeviceOp;
using detail::DeviceSlot;

Result<std::unique_ptr<DeviceIo>> DeviceIo::Create(Loop& loop, Device& device) {
  int nfd = -1;
  if (device.Info().completion_threads == 0) {
    Result<int> fd = device.NotifyFd();
    if (!fd.ok()) {
      return Status::Error(Errc::kInvalidArgument,
                           "DeviceIo: a device without completion threads "
                           "needs its engine's NotifyFd: " +
                               fd.status().ToString());
    }
    nfd = *fd;
  }
  std::unique_ptr<DeviceIo> io(new DeviceIo(loop, device, nfd));
  if (nfd >= 0) {
    if (Status s = loop.AddSource(io.get(), nfd); !s.ok()) return s;
  }
  return io;
}

DeviceIo::~DeviceIo() {
  std::vector<DeviceSlot*> all;
  {
    std::lock_guard lock(pool_mu_);
    for (auto& chunk : slots_) {
      for (size_t i = 0; i < kSlotChunk; ++i) all.push_back(&chunk[i]);
    }
  }
  for (DeviceSlot* s : all) {
    bool waited_for = false;
    {
      std::lock_guard lock(s->mu);
      if (s->op != nullptr) {
        s->op->io_ = nullptr;
        s->op->started_ = nullptr;
        s->op = nullptr;
        waited_for = true;
      }
    }
    // Its coroutine will not resume: stopped where it can be (refused, and
    // harmless, for a context that was not made cancellable).
    if (waited_for) (void)device_.Cancel(&s->ioc);
    (void)s->ioc.Wait();  // its group, to the end
  }
  if (notify_fd_ >= 0) loop_.RemoveSource(this, notify_fd_);
}

DeviceSlot* DeviceIo::Take() {
  std::lock_guard lock(pool_mu_);
  ++out_;
  if (free_ == nullptr) {
    // A chunk at a time: a completion thread returns a slot just after it
    // posted the resumption, so a coroutine may start its next operation
    // first; the pool then needs the queue depth plus one per completion
    // thread, and grows to it at once instead of one slot at a time.
    auto chunk = std::make_unique<DeviceSlot[]>(kSlotChunk);
    for (size_t i = 0; i < kSlotChunk; ++i) {
      chunk[i].io = this;
      chunk[i].next_free = free_;
      free_ = &chunk[i];
    }
    slots_.push_back(std::move(chunk));
  }
  DeviceSlot* s = free_;
  free_ = s->next_free;
  return s;
}

void DeviceIo::Release(DeviceSlot* s, bool reusable) {
  std::lock_guard lock(pool_mu_);
  --out_;
  if (!reusable) return;  // kept aside: its context holds an unsent request
  s->got = 0;
  s->next_free = free_;
  free_ = s;
}

void DeviceIo::Done(DeviceSlot* s) {
  {
    std::lock_guard lock(s->mu);
    DeviceOp* op = s->op;
    {
      // Counted out before the resumption is posted: a coroutine that has
      // resumed sees its group gone from in_flight(). The slot itself goes
      // back to the free list below, once its context was reset.
      std::lock_guard pool_lock(pool_mu_);
      --out_;
      if (op == nullptr) ++quarantined_;
    }
    if (op != nullptr) {
      op->status_ = s->ioc.status();
      op->got_ = s->got;
      op->slot_ = nullptr;
      op->posted_ = true;
      s->op = nullptr;
      // Posted under the slot's lock: a frame destroyed meanwhile finds it
      // posted and takes the resumption back (DeviceOp's destructor).
      if (op->Armed()) {
        loop_.PostCall(&op->finish_);
      } else {
        loop_.Post(op->waiter_);
      }
    }
  }
  s->ioc.Reset();
  std::lock_guard lock(pool_mu_);
  s->got = 0;
  s->next_free = free_;
  free_ = s;
}

void DeviceIo::Cancel(DeviceOp* op) {
  DeviceSlot* s = op->started_;
  if (s == nullptr) return;
  // Under the slot's lock: the slot is still this op's (not completed,
  // released and taken by another) while the device is asked.
  std::lock_guard lock(s->mu);
  if (s->op == op) (void)device_.Cancel(&s->ioc);
}

size_t DeviceIo::in_flight() const noexcept {
  std::lock_guard lock(pool_mu_);
  return out_;
}

uint64_t DeviceIo::quarantined() const noexcept {
  std::lock_guard lock(pool_mu_);
  return quarantined_;
}

size_t DeviceIo::Collect() {
  uint64_t n = 0;
  (void)sys::EventfdRead(notify_fd_, &n);
  size_t found = 0;
  for (;;) {
    Result<size_t> got = device_.Poll();
    if (!got.ok() || *got == 0) break;
    found += *got;
  }
  return found;
}

}  // namespace aiokit::coro
