// DeviceIo: coroutine operations on the device layer. Each operation is a
// group of one request on a pooled IoContext whose callback posts the
// coroutine's resumption to the loop (from a device completion thread, or
// from the loop's own reaping when the device has none).

#include <string>
#include <utility>

#include "aiokit/coro.h"
#include "sys/syscalls.h"

namespace aiokit::coro {

namespace detail {

DeviceSlot::DeviceSlot(DeviceIo* owner)
    : io(owner), ioc([this](IoContext&) { io->Done(this); }) {}

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
  Status st;
  switch (kind_) {
    case Kind::kRead:
      asked_ = buffer_.size();
      st = d.AioRead(offset_, std::move(buffer_), &s->ioc, &s->got);
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
  if (st.ok()) return true;
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

Result<size_t> DeviceOp::await_resume() {
  posted_ = false;
  if (!status_.ok()) return status_;
  return static_cast<size_t>(kind_ == Kind::kRead ? got_ : asked_);
}

DeviceOp::~DeviceOp() {
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
  // Completed and posted, and destroyed before it resumed.
  if (posted) loop_->Unschedule(waiter_);
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
    for (auto& s : slots_) all.push_back(s.get());
  }
  for (DeviceSlot* s : all) {
    {
      std::lock_guard lock(s->mu);
      if (s->op != nullptr) {
        s->op->io_ = nullptr;
        s->op->started_ = nullptr;
        s->op = nullptr;
      }
    }
    (void)s->ioc.Wait();  // its group, to the end
  }
  if (notify_fd_ >= 0) loop_.RemoveSource(this, notify_fd_);
}

DeviceSlot* DeviceIo::Take() {
  std::lock_guard lock(pool_mu_);
  ++out_;
  if (free_ == nullptr) {
    slots_.push_back(std::make_unique<DeviceSlot>(this));
    return slots_.back().get();
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
  bool detached = false;
  {
    std::lock_guard lock(s->mu);
    DeviceOp* op = s->op;
    if (op == nullptr) {
      detached = true;
    } else {
      op->status_ = s->ioc.status();
      op->got_ = s->got;
      op->slot_ = nullptr;
      op->posted_ = true;
      s->op = nullptr;
      // Posted under the slot's lock: a frame destroyed meanwhile finds it
      // posted and takes the resumption back (DeviceOp's destructor).
      loop_.Post(op->waiter_);
    }
  }
  s->ioc.Reset();
  {
    std::lock_guard lock(pool_mu_);
    if (detached) ++quarantined_;
  }
  Release(s, true);
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
