// EngineIo: coroutine operations on one engine, their slots, batching,
// cancellation, deadlines and the quarantine.

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "aiokit/coro.h"
#include "sys/syscalls.h"

namespace aiokit::coro {

using detail::Slot;

Result<std::unique_ptr<EngineIo>> EngineIo::Create(Loop& loop, Engine& engine) {
  Result<int> nfd = engine.NotifyFd();
  if (!nfd.ok()) {
    return Status::Error(Errc::kInvalidArgument,
                         std::string("EngineIo: the ") + engine.Name() +
                             " engine has no NotifyFd (make it with "
                             "EngineOptions::notify_fd): " +
                             nfd.status().ToString());
  }
  std::unique_ptr<EngineIo> io(new EngineIo(loop, engine, *nfd));
  if (Status s = loop.AddSource(io.get(), *nfd); !s.ok()) return s;
  return io;
}

EngineIo::~EngineIo() {
  // Every slot still out: its waiting operation (if any) is let go, so that
  // a coroutine destroyed later does not reach this object; what is queued
  // is dropped without I/O; what the engine holds is cancelled where it can
  // be and reaped.
  for (Request* r : queued_) {
    Slot* s = static_cast<Slot*>(r->priv);
    s->queued = false;
    if (s->op != nullptr) {
      s->op->slot_ = nullptr;
      s->op->io_ = nullptr;
      s->op = nullptr;
    }
    --in_flight_;
    Release(s);
  }
  queued_.clear();
  // The rest are in the engine: detach their operations and cancel them.
  for (auto& chunk : chunks_) {
    for (size_t i = 0; i < 64; ++i) {
      Slot& s = chunk[i];
      if (s.op != nullptr) {
        s.op->slot_ = nullptr;
        s.op->io_ = nullptr;
        s.op = nullptr;
      }
      if (s.req.in_flight()) (void)engine_.Cancel(&s.req);
    }
  }
  while (in_flight_ != 0) {
    Result<size_t> got = engine_.Reap(reaped_, 1, std::chrono::seconds(1));
    if (!got.ok()) break;  // shut down: nothing more can come
    for (size_t i = 0; i < *got; ++i) {
      Slot* s = static_cast<Slot*>(reaped_[i]->priv);
      --in_flight_;
      ++quarantined_;
      Release(s);
    }
  }
  loop_.RemoveSource(this, notify_fd_);
}

Slot* EngineIo::Take() {
  if (free_ == nullptr) {
    // 64 slots at a time; the pool never shrinks, so steady state reuses.
    auto chunk = std::make_unique<Slot[]>(64);
    for (size_t i = 0; i < 64; ++i) {
      chunk[i].req.priv = &chunk[i];
      chunk[i].keep.reserve(4);
      chunk[i].next_free = free_;
      free_ = &chunk[i];
    }
    chunks_.push_back(std::move(chunk));
    if (reaped_.size() < chunks_.size() * 64)
      reaped_.resize(chunks_.size() * 64);
  }
  Slot* s = free_;
  free_ = s->next_free;
  return s;
}

void EngineIo::Release(Slot* s) {
  s->keep.clear();  // drops the buffer references
  s->op = nullptr;
  s->queued = false;
  s->next_free = free_;
  free_ = s;
}

void EngineIo::Unqueue(Slot* s) {
  auto it = std::find(queued_.begin(), queued_.end(), &s->req);
  if (it != queued_.end()) queued_.erase(it);
  s->queued = false;
}

void EngineIo::SubmitQueued() {
  if (queued_.empty()) return;
  SubmitResult r = engine_.Submit(queued_);
  ++submits_;
  for (size_t i = 0; i < r.accepted; ++i) {
    static_cast<Slot*>(queued_[i]->priv)->queued = false;
  }
  if (!r.status.ok() && !r.status.Is(Errc::kQueueFull)) {
    // Nothing more will be taken (shut down, a broken ring): the rest
    // complete with the reason, as the engine would have completed them.
    const int64_t err = ToNegativeErrno(r.status);
    for (size_t i = r.accepted; i < queued_.size(); ++i) {
      Slot* s = static_cast<Slot*>(queued_[i]->priv);
      s->queued = false;
      s->req.rval = err;
      Complete(s);
    }
    queued_.clear();
    return;
  }
  // kQueueFull: the rest wait for the next turn, after completions made room.
  queued_.erase(queued_.begin(),
                queued_.begin() + static_cast<std::ptrdiff_t>(r.accepted));
}

size_t EngineIo::Collect() {
  uint64_t count = 0;
  // Read before polling: a completion signalled after this read wakes the
  // loop again.
  (void)sys::EventfdRead(notify_fd_, &count);
  size_t found = 0;
  for (;;) {
    Result<size_t> got = engine_.Poll(reaped_);
    if (!got.ok() || *got == 0) break;
    for (size_t i = 0; i < *got; ++i) {
      --in_flight_;
      Complete(static_cast<Slot*>(reaped_[i]->priv));
    }
    found += *got;
  }
  return found;
}

void EngineIo::Complete(Slot* s) {
  Op* op = s->op;
  if (op == nullptr) {
    ++quarantined_;  // its operation is gone: only the memory is let go
    Release(s);
    return;
  }
  op->rval_ = s->req.rval;
  op->slot_ = nullptr;
  op->io_ = nullptr;  // done with this EngineIo, which may go first
  Release(s);
  loop_.RemoveTimer(&op->deadline_);
  // A stop request posted and not yet run is taken back; the stop callback
  // itself is disarmed when the operation is destroyed, after it resumes.
  (void)loop_.CancelCall(&op->cancel_);
  if (op->opts_.executor != nullptr) {
    op->opts_.executor->Post(op->waiter_);
  } else {
    op->scheduled_ = true;
    loop_.Schedule(op->waiter_);
  }
}

void EngineIo::Cancel(Op* op) {
  Slot* s = op->slot_;
  if (s == nullptr) return;  // completed already
  if (s->queued) {
    // Never handed over: it completes cancelled without I/O.
    Unqueue(s);
    --in_flight_;
    s->req.rval = -ECANCELED;
    Complete(s);
    return;
  }
  // The engine completes it, cancelled or with its result.
  (void)engine_.Cancel(&s->req);
}

void EngineIo::Detach(Op* op) {
  Slot* s = op->slot_;
  op->slot_ = nullptr;
  if (s == nullptr) return;
  s->op = nullptr;
  if (s->queued) {
    Unqueue(s);
    --in_flight_;
    Release(s);
    return;
  }
  (void)engine_.Cancel(&s->req);  // best effort; it completes detached
}

// ---------------------------------------------------------------- the op

namespace detail {

void Op::await_suspend(std::coroutine_handle<> h) {
  waiter_ = h;
  EngineIo* io = io_;
  Slot* s = io->Take();
  s->op = this;
  slot_ = s;
  Request& r = s->req;
  switch (kind_) {
    case OpKind::kRead:
    case OpKind::kWrite:
      asked_ = buffer_.size();
      if (kind_ == OpKind::kRead) {
        r.PrepRead(fd_, buffer_.data(), buffer_.size(), offset_);
      } else {
        r.PrepWrite(fd_, buffer_.data(), buffer_.size(), offset_);
      }
      s->keep.push_back(std::move(buffer_));
      break;
    case OpKind::kReadv:
    case OpKind::kWritev:
      s->iov.clear();
      for (const Buffer& b : buffers_) {
        s->iov.push_back(iovec{b.data(), b.size()});
        s->keep.push_back(b);
        asked_ += b.size();
      }
      if (kind_ == OpKind::kReadv) {
        r.PrepReadv(fd_, s->iov.data(), s->iov.size(), offset_);
      } else {
        r.PrepWritev(fd_, s->iov.data(), s->iov.size(), offset_);
      }
      buffers_ = {};
      break;
    case OpKind::kFsync:
      r.PrepFsync(fd_);
      break;
    case OpKind::kFdatasync:
      r.PrepFdatasync(fd_);
      break;
  }
  r.priv = s;
  s->queued = true;
  io->queued_.push_back(&r);
  ++io->in_flight_;
  cancel_.op = this;
  cancel_.fn = [](RemoteCall* c) {
    Op* op = static_cast<Call*>(c)->op;
    if (op->io_ != nullptr) op->io_->Cancel(op);
  };
  if (opts_.timeout.count() > 0) {
    deadline_.op = this;
    deadline_.due = std::chrono::steady_clock::now() + opts_.timeout;
    deadline_.fire = [](TimerNode* t) {
      Op* op = static_cast<Deadline*>(t)->op;
      op->timed_out_ = true;
      if (op->io_ != nullptr) op->io_->Cancel(op);
    };
    io->loop_.AddTimer(&deadline_);
  }
  // Last: with stop already requested the callback runs here, and posts.
  if (opts_.stop.stop_possible()) stop_cb_.emplace(opts_.stop, OnStop{this});
}

void Op::OnStop::operator()() const noexcept {
  // Any thread: the loop does the cancelling (and finds out whether there is
  // still something to cancel).
  op->loop_->PostCall(&op->cancel_);
}

Result<size_t> Op::await_resume() {
  scheduled_ = false;
  stop_cb_.reset();
  if (rval_ >= 0) return static_cast<size_t>(rval_);
  const char* what = kind_ == OpKind::kRead     ? "read"
                     : kind_ == OpKind::kWrite  ? "write"
                     : kind_ == OpKind::kReadv  ? "readv"
                     : kind_ == OpKind::kWritev ? "writev"
                     : kind_ == OpKind::kFsync  ? "fsync"
                                                : "fdatasync";
  std::string ctx = std::string(what) + " fd=" + std::to_string(fd_);
  if (kind_ != OpKind::kFsync && kind_ != OpKind::kFdatasync) {
    ctx += " offset=" + std::to_string(offset_) +
           " length=" + std::to_string(asked_);
  }
  if (timed_out_ && rval_ == -ECANCELED) {
    return Status::Error(
        Errc::kTimedOut,
        ctx + ": the deadline of " +
            std::to_string(
                std::chrono::duration_cast<std::chrono::microseconds>(
                    opts_.timeout)
                    .count()) +
            " us passed; cancelled after 0 bytes");
  }
  return Status::FromErrno(static_cast<int>(-rval_), std::move(ctx));
}

Op::~Op() {
  // The stop callback first: its destructor waits for one running on
  // another thread, which may be posting cancel_.
  stop_cb_.reset();
  (void)loop_->CancelCall(&cancel_);
  loop_->RemoveTimer(&deadline_);
  // Completed, and destroyed before it resumed: no resumption of a frame
  // that is gone.
  if (scheduled_) loop_->Unschedule(waiter_);
  // Destroyed while suspended, its request still out (and its EngineIo
  // still there): the request is detached.
  if (slot_ != nullptr && io_ != nullptr) io_->Detach(this);
}

}  // namespace detail
}  // namespace aiokit::coro
