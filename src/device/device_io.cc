// The device layer's request path: queueing on an IoContext, pieces handed
// to the engine, and what each completion leads to (the rest of a short
// transfer, a retry, the next piece, or the end of the request and the news
// to its context).

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <string>
#include <thread>
#include <utility>

#include "device/device_impl.h"
#include "sys/syscalls.h"

namespace aiokit::device_internal {
namespace {

// The engine requests handed over in one Submit call.
constexpr size_t kSubmitBatch = 64;
// Submissions in a row the engine refused whole (kQueueFull after its own
// retry policy, or a wrapper's injected refusal) before the requests fail,
// sleeping 1, 2, 4, 8 and then 10 ms between them.
constexpr unsigned kMaxRefusals = 16;
std::chrono::milliseconds RefusalDelay(unsigned refusals) {
  return std::chrono::milliseconds(refusals < 4 ? 1U << refusals : 10U);
}

// The callback running on this thread (for ~IoContext called inside it).
struct CallbackFrame {
  IoContext* ioc = nullptr;
  bool destroyed = false;
};
thread_local CallbackFrame* tl_callback = nullptr;
// The device whose completions this thread is delivering.
thread_local const DeviceImpl* tl_delivering = nullptr;

}  // namespace

bool DeviceImpl::OnCompletionThread() const noexcept {
  return tl_delivering == this;
}

// True when the context's destructor runs inside its own callback (then it
// must not wait, and the callback's caller must not touch it afterwards).
bool DestroyedInsideOwnCallback(IoContext* ioc) noexcept {
  if (tl_callback == nullptr || tl_callback->ioc != ioc) return false;
  tl_callback->destroyed = true;
  return true;
}

std::string DeviceImpl::Describe(const Io& io) const {
  return std::string(io.op == Op::kRead ? "read" : "write") + " of \"" + path_ +
         "\" at offset " + std::to_string(io.offset) + ", length " +
         std::to_string(io.length);
}

Status DeviceImpl::RangeError(const char* what, uint64_t offset,
                              uint64_t length, bool write) const {
  const std::string asked = std::string(what) + " of \"" + path_ +
                            "\" at offset " + std::to_string(offset) +
                            ", length " + std::to_string(length);
  if (closing_.load(std::memory_order_acquire)) {
    return Status::Error(Errc::kShutdown, asked + ": the device is closing");
  }
  if (write && options_.read_only) {
    return Status::Error(Errc::kInvalidArgument,
                         asked + ": the device is open read-only");
  }
  if (length == 0) {
    return Status::Error(Errc::kInvalidArgument, asked + ": length is 0");
  }
  if (offset > static_cast<uint64_t>(INT64_MAX) ||
      length > static_cast<uint64_t>(INT64_MAX) - offset) {
    return Status::Error(Errc::kInvalidArgument,
                         asked + ": the range ends past 2^63 - 1");
  }
  return Status::Error(Errc::kInvalidArgument,
                       asked + ": beyond the end of the device (" +
                           std::to_string(info_.size) + " bytes)");
}

namespace {
Status Bind(DeviceImpl* device, std::atomic<DeviceImpl*>& slot) {
  // Relaxed: the pointer is compared only; a first use publishes nothing.
  if (slot.load(std::memory_order_relaxed) == device) [[likely]] {
    return {};
  }
  DeviceImpl* expected = nullptr;
  if (slot.compare_exchange_strong(expected, device,
                                   std::memory_order_acq_rel) ||
      expected == device) {
    return {};
  }
  return Status::Error(Errc::kInvalidArgument,
                       "an IoContext belongs to the device it was first used "
                       "with; use another context for this device");
}
}  // namespace

Status DeviceImpl::AioRead(uint64_t offset, Buffer&& buffer, IoContext* ioc,
                           uint64_t* got) {
  if (ioc == nullptr) {
    return Status::Error(Errc::kInvalidArgument, "AioRead: ioc is null");
  }
  if (!RangeOk(offset, buffer.size(), false)) [[unlikely]] {
    return RangeError("read", offset, buffer.size(), false);
  }
  if (Status s = Bind(this, ioc->device_); !s.ok()) return s;
  const auto addr = reinterpret_cast<uintptr_t>(buffer.data());
  if (read_align_.known() &&
      ((addr & memory_mask_) | ((offset | buffer.size()) & read_mask_)) != 0) {
    if (Status s = read_align_.Check(buffer.data(), offset, buffer.size());
        !s.ok()) {
      return {s.code(), "read of \"" + path_ + "\": " + s.context()};
    }
  }
  Io* io = TakeIo();
  if (io == nullptr) {
    return Status::FromErrno(ENOMEM, "read of \"" + path_ + "\": a request");
  }
  io->kind = Io::Kind::kData;
  io->op = Op::kRead;
  io->offset = offset;
  io->length = buffer.size();
  io->done = 0;
  io->got = got;
  io->write = {};
  io->iov.push_back(iovec{buffer.data(), buffer.size()});
  io->buffers.push_back(std::move(buffer));
  return Queue(io, ioc);
}

Status DeviceImpl::AioRead(uint64_t offset, std::span<const Buffer> buffers,
                           IoContext* ioc, uint64_t* got) {
  if (ioc == nullptr) {
    return Status::Error(Errc::kInvalidArgument, "AioRead: ioc is null");
  }
  if (buffers.size() == 1) return AioRead(offset, Buffer(buffers[0]), ioc, got);
  uint64_t total = 0;
  for (const Buffer& b : buffers) {
    if (b.empty()) {
      return Status::Error(Errc::kInvalidArgument,
                           "read of \"" + path_ + "\" at offset " +
                               std::to_string(offset) +
                               ": an empty buffer in the list");
    }
    total += b.size();
  }
  if (buffers.empty() || !RangeOk(offset, total, false)) [[unlikely]] {
    return RangeError("read", offset, total, false);
  }
  if (Status s = Bind(this, ioc->device_); !s.ok()) return s;
  auto asked = [&] {
    return "read of \"" + path_ + "\" at offset " + std::to_string(offset) +
           ", length " + std::to_string(total);
  };
  if (read_align_.known()) {
    // Each buffer's address and length; the offset once (the buffers
    // follow each other in the file).
    for (const Buffer& b : buffers) {
      const auto addr = reinterpret_cast<uintptr_t>(b.data());
      if (((addr & memory_mask_) | ((offset | b.size()) & read_mask_)) == 0) {
        continue;
      }
      if (Status s = read_align_.Check(b.data(), offset, b.size()); !s.ok()) {
        return {s.code(), asked() + ": " + s.context()};
      }
    }
  }
  Io* io = TakeIo();
  if (io == nullptr) return Status::FromErrno(ENOMEM, asked() + ": a request");
  io->kind = Io::Kind::kData;
  io->op = Op::kRead;
  io->offset = offset;
  io->length = total;
  io->done = 0;
  io->got = got;
  io->write = {};
  for (const Buffer& b : buffers) {
    io->iov.push_back(iovec{b.data(), b.size()});
    io->buffers.push_back(b);
  }
  return Queue(io, ioc);
}

Status DeviceImpl::AioWrite(uint64_t offset, std::span<const Buffer> buffers,
                            IoContext* ioc, WriteOptions options) {
  if (ioc == nullptr) {
    return Status::Error(Errc::kInvalidArgument, "AioWrite: ioc is null");
  }
  uint64_t total = 0;
  for (const Buffer& b : buffers) {
    if (b.empty()) {
      return Status::Error(Errc::kInvalidArgument,
                           "write of \"" + path_ + "\" at offset " +
                               std::to_string(offset) +
                               ": an empty buffer in the list");
    }
    total += b.size();
  }
  if (!RangeOk(offset, total, true)) [[unlikely]] {
    return RangeError("write", offset, total, true);
  }
  if (Status s = Bind(this, ioc->device_); !s.ok()) return s;
  auto asked = [&] {
    return "write of \"" + path_ + "\" at offset " + std::to_string(offset) +
           ", length " + std::to_string(total);
  };
  if (write_align_.known()) {
    for (const Buffer& b : buffers) {
      const auto addr = reinterpret_cast<uintptr_t>(b.data());
      if (((addr & memory_mask_) | ((offset | b.size()) & write_mask_)) == 0) {
        continue;
      }
      if (Status s = write_align_.Check(b.data(), offset, b.size()); !s.ok()) {
        return {s.code(), asked() + ": " + s.context()};
      }
    }
  }
  if (options.atomic) {
    if (info_.atomic_write_max == 0) {
      return Status::Error(
          Errc::kUnsupported,
          asked() + ": atomic write refused: " + info_.atomic_write_note);
    }
    const bool pow2 = total != 0 && (total & (total - 1)) == 0;
    if (buffers.size() != 1 || !pow2 || total < info_.atomic_write_min ||
        total > info_.atomic_write_max || offset % total != 0) {
      return Status::Error(
          Errc::kInvalidArgument,
          asked() + ": an atomic write must be one buffer whose length is a " +
              "power of two from " + std::to_string(info_.atomic_write_min) +
              " to " + std::to_string(info_.atomic_write_max) +
              " bytes, at an offset aligned to its length");
    }
  }
  Io* io = TakeIo();
  if (io == nullptr) return Status::FromErrno(ENOMEM, asked() + ": a request");
  io->kind = Io::Kind::kData;
  io->op = Op::kWrite;
  io->offset = offset;
  io->length = total;
  io->done = 0;
  io->got = nullptr;
  io->write = options;
  for (const Buffer& b : buffers) {
    io->iov.push_back(iovec{b.data(), b.size()});
    io->buffers.push_back(b);
  }
  return Queue(io, ioc);
}

Status DeviceImpl::Queue(Io* io, IoContext* ioc) {
  io->ioc = ioc;
  io->retries = 0;
  io->split = false;
  io->reported.store(false, std::memory_order_relaxed);
  io->next = nullptr;
  if (ioc->pending_tail_ == nullptr) {
    ioc->pending_head_ = io;
  } else {
    ioc->pending_tail_->next = io;
  }
  ioc->pending_tail_ = io;
  // One queueing thread at a time writes it (the contract); others read.
  ioc->pending_.store(ioc->pending_.load(std::memory_order_relaxed) + 1,
                      std::memory_order_relaxed);
  return {};
}

void DeviceImpl::DropPending(IoContext* ioc) {
  Io* io = ioc->pending_head_;
  ioc->pending_head_ = ioc->pending_tail_ = nullptr;
  ioc->pending_.store(0, std::memory_order_relaxed);
  while (io != nullptr) {
    Io* next = io->next;
    ReleaseIo(io);
    io = next;
  }
}

Status DeviceImpl::Submit(std::span<IoContext* const> iocs,
                          ThenFlush then_flush) {
  if (closing_.load(std::memory_order_acquire)) {
    return Status::Error(Errc::kShutdown,
                         "Submit on \"" + path_ + "\": the device is closing");
  }
  const bool flush = then_flush == ThenFlush::kYes;
  size_t total = 0;
  for (IoContext* ioc : iocs) {
    if (ioc == nullptr) {
      return Status::Error(Errc::kInvalidArgument, "Submit: ioc is null");
    }
    if (Status s = Bind(this, ioc->device_); !s.ok()) return s;
    if (ioc->request_timeout_.count() > 0 && options_.engine.single_thread &&
        options_.completion_threads == 0) {
      // The deadline thread would cancel on a ring promised to one thread.
      return Status::Error(Errc::kInvalidArgument,
                           "Submit on \"" + path_ +
                               "\": request deadlines need an engine not "
                               "promised to one thread "
                               "(EngineOptions::single_thread)");
    }
    total += ioc->pending_.load(std::memory_order_relaxed);
  }
  if (total == 0 && !flush) {
    return Status::Error(Errc::kInvalidArgument,
                         "Submit on \"" + path_ +
                             "\": nothing is queued on the context" +
                             (iocs.size() == 1 ? "" : "s"));
  }
  Io* batch[kSubmitBatch];
  size_t k = 0;
  for (IoContext* ioc : iocs) {
    const size_t n = ioc->pending_.load(std::memory_order_relaxed);
    if (n == 0 && !flush) continue;
    Io* io = ioc->pending_head_;
    ioc->pending_head_ = ioc->pending_tail_ = nullptr;
    ioc->pending_.store(0, std::memory_order_relaxed);
    // Raised before anything is handed over, so the group cannot complete
    // before its last request was submitted. (Relaxed: what the requests
    // carry reaches the completer through the engine's own hand-over.)
    if (flush && n != 0) {
      ioc->flush_after_.store(true, std::memory_order_relaxed);
    }
    // The count first, then the submission number (release, paired with
    // GroupDone's acquire): a group's holder that sees the new number sees
    // the new count, and the flag.
    ioc->running_.fetch_add(device_internal::kSubmitOne + (n == 0 ? 1 : n),
                            std::memory_order_release);
    if (n == 0) {
      RequestFlush(ioc);
      continue;
    }
    in_flight_.fetch_add(n, std::memory_order_relaxed);
    const bool timed = ioc->request_timeout_.count() > 0;
    // Linked where Cancel or the deadline thread finds them.
    const bool tracked = timed || ioc->cancellable_;
    const Clock::time_point deadline =
        timed ? Clock::now() + ioc->request_timeout_ : Clock::time_point::max();
    if (timed) EnsureDeadlineThread();
    if (tracked) {
      std::lock_guard lock(dl_mu_);
      ioc->cancel_requested_ = false;  // a cancel stopped the earlier ones
    }
    while (io != nullptr) {
      // Read `next` before anything is handed over: a request may complete,
      // and its Io be reused, as soon as the engine has it.
      Io* next = io->next;
      io->next = nullptr;
      PreparePiece(io);
      if (tracked) {
        io->has_deadline = true;
        io->deadline = deadline;
        // Refused only by a Cancel racing this Submit: the first piece runs.
        (void)LinkDeadline(io);
      }
      batch[k++] = io;
      if (k == kSubmitBatch) {
        SubmitToEngine(batch, k);
        k = 0;
      }
      io = next;
    }
  }
  if (k != 0) SubmitToEngine(batch, k);
  return {};
}

void DeviceImpl::PreparePiece(Io* io) {
  Request& req = io->req;
  if (io->done == 0 && io->iov.size() == 1 && io->length <= info_.max_transfer)
      [[likely]] {
    // The whole request in one piece: one buffer, from its start.
    void* base = io->iov[0].iov_base;
    if (io->op == Op::kRead) {
      req.PrepRead(file_.fd(), base, io->length, io->offset);
    } else {
      req.PrepWrite(file_.fd(), base, io->length, io->offset);
      if (io->write.atomic) req.SetRwFlags(rwf::kAtomic);
    }
    // O_DIRECT's alignment (known only then), which the device checked: the
    // engine knows the request waits for the device (the threads engine
    // gives such requests to the kernel's AIO).
    req.SetAlignment(io->op == Op::kRead ? read_align_ : write_align_);
    if (registered_) {
      const int16_t index = io->buffers[0].registered_index();
      if (index >= 0) req.SetFixedBuffer(index);
    }
    req.priv = io;
    return;
  }
  const uint64_t pos = io->done;
  const uint64_t remaining = io->length - pos;
  size_t i = 0;
  uint64_t skip = pos;
  while (skip >= io->iov[i].iov_len) {
    skip -= io->iov[i].iov_len;
    ++i;
  }
  const int fd = file_.fd();
  const uint64_t off = io->offset + pos;
  const uint64_t first_len = io->iov[i].iov_len - skip;
  char* first = static_cast<char*>(io->iov[i].iov_base) + skip;
  if (first_len >= remaining || i + 1 == io->iov.size() ||
      first_len >= info_.max_transfer) {
    const uint64_t len = std::min({first_len, remaining, info_.max_transfer});
    if (io->op == Op::kRead) {
      req.PrepRead(fd, first, len, off);
    } else {
      req.PrepWrite(fd, first, len, off);
    }
    if (registered_) {
      const int16_t index = io->buffers[i].registered_index();
      if (index >= 0) req.SetFixedBuffer(index);
    }
  } else {
    const size_t n = std::min<size_t>(io->iov.size() - i, IOV_MAX);
    if (io->op == Op::kRead) {
      req.PrepReadv(fd, &io->iov[i], n, off);
    } else {
      req.PrepWritev(fd, &io->iov[i], n, off);
    }
    req.iov[0].iov_base = first;
    req.iov[0].iov_len = first_len;
    // Cut at the maximum transfer (aligned, so an O_DIRECT cut stays legal)
    // and drop the iovecs past it.
    uint64_t total = 0;
    size_t used = 0;
    while (used < req.iov.size() && total < info_.max_transfer) {
      const uint64_t room = info_.max_transfer - total;
      if (req.iov[used].iov_len > room) req.iov[used].iov_len = room;
      total += req.iov[used].iov_len;
      ++used;
    }
    if (used < req.iov.size()) {
      // Rebuild from the trimmed copy (PrepReadv copies the array).
      IovecVector trimmed;
      trimmed.assign(req.iov.data(), used);
      if (io->op == Op::kRead) {
        req.PrepReadv(fd, trimmed.data(), used, off);
      } else {
        req.PrepWritev(fd, trimmed.data(), used, off);
      }
    } else {
      req.length = total;
    }
  }
  if (pos == 0 && req.length < io->length && !io->split) {
    io->split = true;
    split_.fetch_add(1, std::memory_order_relaxed);
  }
  if (io->op == Op::kWrite && io->write.atomic) req.SetRwFlags(rwf::kAtomic);
  req.SetAlignment(io->op == Op::kRead ? read_align_ : write_align_);
  req.priv = io;
}

void DeviceImpl::SubmitToEngine(Io* const* ios, size_t n) {
  Request* reqs[kSubmitBatch];
  size_t start = 0;
  while (start < n) {
    // A run of requests the inode's write hint fits: the kernel keeps one
    // hint per inode, so it changes between runs of different lifetimes.
    size_t end = start;
    if (info_.write_hints) {
      std::lock_guard lock(hint_mu_);
      const Io* first = ios[start];
      if (first->op == Op::kWrite && first->write.life != inode_hint_) {
        if (sys::SetRwHint(file_.fd(),
                           static_cast<uint64_t>(first->write.life)) == 0) {
          inode_hint_ = first->write.life;
        }
      }
      while (end < n && (ios[end]->op != Op::kWrite ||
                         ios[end]->write.life == inode_hint_)) {
        reqs[end - start] = &ios[end]->req;
        ++end;
      }
      if (end == start) {  // the hint could not be set: unhinted
        reqs[0] = &ios[start]->req;
        end = start + 1;
      }
    } else {
      for (; end < n; ++end) reqs[end - start] = &ios[end]->req;
    }
    size_t off = 0;
    const size_t count = end - start;
    unsigned refusals = 0;
    while (off < count) {
      SubmitResult r =
          engine_->Submit(std::span<Request* const>(reqs + off, count - off));
      requests_.fetch_add(r.accepted, std::memory_order_relaxed);
      off += r.accepted;
      if (r.status.ok()) break;
      if (r.accepted != 0) refusals = 0;
      if (r.status.Is(Errc::kQueueFull) && refusals < kMaxRefusals) {
        std::this_thread::sleep_for(RefusalDelay(refusals));
        ++refusals;
        continue;
      }
      // What the engine would not take completes with why.
      for (size_t i = off; i < count; ++i) {
        Io* io = ios[start + i];
        FinishIo(io,
                 {r.status.code(),
                  Describe(*io) +
                      ": the engine did not take it: " + r.status.ToString()},
                 false);
      }
      break;
    }
    start = end;
  }
}

// ---------------------------------------------------------------- completion

void DeviceImpl::Process(Request* req) {
  Io* io = static_cast<Io*>(req->priv);
  if (io->kind == Io::Kind::kFlush) {
    FlushDone(req->rval);
    return;
  }
  ProcessData(io);
}

void DeviceImpl::ProcessData(Io* io) {
  bool cancel_asked = false;
  bool by_caller = false;
  if (io->has_deadline) {
    std::lock_guard lock(dl_mu_);
    UnlinkDeadlineLocked(io);
    cancel_asked = io->cancel_asked;
    by_caller = io->cancel_by_caller;
    io->cancel_asked = false;
    io->cancel_by_caller = false;
  }
  if (io->has_deadline && io->reported.load(std::memory_order_acquire)) {
    // Its deadline told the context already; the request is done with the
    // buffers only now. Unpinned once they are back (release: pairs with
    // the acquire in Stats, so a caller who sees the count drop can take
    // the buffer from the pool again).
    ReleaseIo(io);
    pinned_.fetch_sub(1, std::memory_order_release);
    if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard lock(idle_mu_);
      idle_cv_.notify_all();
    }
    return;
  }
  const Request& req = io->req;
  int64_t r = req.rval;
  const uint64_t piece = req.length;
  auto resubmit = [&] {
    resubmitted_.fetch_add(1, std::memory_order_relaxed);
    NextPiece(io);
  };
  if ((r == -EINTR || r == -EAGAIN) && io->retries < kMaxRetries &&
      !cancel_asked) {
    ++io->retries;
    resubmit();
    return;
  }
  if (by_caller && (r == -ECANCELED || r == -EINTR || r == -EAGAIN)) {
    cancelled_.fetch_add(1, std::memory_order_relaxed);
    FinishIo(
        io,
        Status::FromErrno(ECANCELED, Describe(*io) + ": cancelled after " +
                                         std::to_string(io->done) + " bytes"),
        false);
    return;
  }
  if (r == -ECANCELED && cancel_asked) {
    timed_out_.fetch_add(1, std::memory_order_relaxed);
    FinishIo(
        io,
        Status::Error(Errc::kTimedOut,
                      Describe(*io) + ": cancelled at its deadline after " +
                          std::to_string(io->done) + " bytes"),
        false);
    return;
  }
  if (r < 0) {
    std::string ctx = Describe(*io);
    if (io->done != 0) ctx += " (after " + std::to_string(io->done) + " bytes)";
    FinishIo(io, Status::FromErrno(static_cast<int>(-r), std::move(ctx)),
             r == -EIO);
    return;
  }
  if (static_cast<uint64_t>(r) > piece) r = static_cast<int64_t>(piece);
  const auto got = static_cast<uint64_t>(r);
  if (io->op == Op::kRead) {
    const uint64_t before = io->done;
    io->done += got;
    if (io->done >= io->length) {
      io->done = io->length;
      FinishIo(io, {}, false);
      return;
    }
    if (got < piece && read_align_.known()) {
      // Restart at the alignment: an O_DIRECT read must start on it.
      io->done -= io->done % read_align_.offset;
    }
    if (io->done > before) {
      io->retries = 0;
      if (got < piece) {
        resubmit();
      } else {
        NextPiece(io);
      }
      return;
    }
    // No progress: the end of the file, or a transfer cut short (a signal,
    // a fault). The file's size tells which.
    const uint64_t pos = io->offset + before;
    uint64_t size = info_.size;
    if (!block_device_) {
      Result<uint64_t> now = file_.Size();
      size = now.ok() ? *now : 0;
    }
    if (size <= pos + got) {
      io->done = before + (size > pos ? std::min(got, size - pos) : 0);
      if (io->got != nullptr) {
        FinishIo(io, {}, false);
      } else {
        FinishIo(io,
                 Status::Error(Errc::kEndOfFile,
                               Describe(*io) + ": end of file after " +
                                   std::to_string(io->done) +
                                   " bytes (the file has " +
                                   std::to_string(size) + ")"),
                 false);
      }
      return;
    }
    if (++io->retries > kMaxRetries) {
      FinishIo(io,
               Status::FromErrno(EIO, Describe(*io) + ": " +
                                          std::to_string(kMaxRetries) +
                                          " reads in a row made no progress "
                                          "before the end of the file (after " +
                                          std::to_string(io->done) + " bytes)"),
               false);
      return;
    }
    resubmit();
    return;
  }
  // A write.
  const uint64_t before = io->done;
  io->done += got;
  if (got < piece && write_align_.known()) {
    // Restart at the alignment: the bytes past it are written again.
    io->done -= io->done % write_align_.offset;
  }
  if (io->done >= io->length) {
    io->done = io->length;
    FinishIo(io, {}, false);
    return;
  }
  if (io->done == before) {
    // Nothing usable was written (0, or less than the alignment).
    if (++io->retries > kMaxRetries) {
      FinishIo(io,
               Status::FromErrno(EIO, Describe(*io) + ": " +
                                          std::to_string(kMaxRetries) +
                                          " writes in a row made no progress "
                                          "(after " +
                                          std::to_string(io->done) + " bytes)"),
               false);
      return;
    }
    resubmit();
    return;
  }
  io->retries = 0;
  if (got < piece) {
    resubmit();
  } else {
    NextPiece(io);
  }
}

void DeviceImpl::NextPiece(Io* io) {
  PreparePiece(io);
  if (io->has_deadline && !LinkDeadline(io)) {
    cancelled_.fetch_add(1, std::memory_order_relaxed);
    FinishIo(
        io,
        Status::FromErrno(ECANCELED, Describe(*io) + ": cancelled after " +
                                         std::to_string(io->done) + " bytes"),
        false);
    return;
  }
  Io* one[1] = {io};
  SubmitToEngine(one, 1);
}

void DeviceImpl::FinishIo(Io* io, const Status& error, bool is_eio) {
  if (io->has_deadline) {
    std::lock_guard lock(dl_mu_);
    UnlinkDeadlineLocked(io);
  }
  if (io->op == Op::kRead) {
    reads_.fetch_add(1, std::memory_order_relaxed);
  } else {
    writes_.fetch_add(1, std::memory_order_relaxed);
    // Counted before the context hears of it, so that a Flush called after
    // the group completed sees this write (acquire in RequestFlush).
    write_gen_.fetch_add(1, std::memory_order_release);
  }
  if (io->got != nullptr) *io->got = io->done;
  IoContext* ioc = io->ioc;
  const Extent extent{io->offset, io->length};
  // Only a deadline races for the news; without one it is this thread's.
  const bool report = !io->has_deadline ||
                      !io->reported.exchange(true, std::memory_order_acq_rel);
  ReleaseIo(io);
  // After the buffers are back (release: pairs with the acquire in Stats).
  if (!report) pinned_.fetch_sub(1, std::memory_order_release);
  if (report) CompleteOnContext(ioc, error, is_eio, extent);
  if (in_flight_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    std::lock_guard lock(idle_mu_);
    idle_cv_.notify_all();
  }
}

void DeviceImpl::CompleteOnContext(IoContext* ioc, const Status& error,
                                   bool is_eio, Extent extent) {
  if (!error.ok()) {
    std::lock_guard lock(ioc->mu_);
    if (is_eio && ioc->allow_eio_) {
      ioc->eio_.push_back(extent);
    } else if (ioc->status_.ok()) {
      ioc->status_ = error;
      ioc->failed_.store(true, std::memory_order_release);
    }
  }
  // Not the group's last request: one decrement and nothing else. The last
  // one (running reads 1) leaves the count at 1 until the group is done, so
  // that nobody sees zero before the flush or the callback.
  uint64_t cur = ioc->running_.load(std::memory_order_acquire);
  while ((cur & device_internal::kRunningMask) > 1) {
    // acq_rel: this request's effects (status, data) happen before the
    // last completer's, which publishes them to the waiters.
    if (ioc->running_.compare_exchange_weak(cur, cur - 1,
                                            std::memory_order_acq_rel)) {
      return;
    }
  }
  GroupDone(ioc);
}

void DeviceImpl::GroupDone(IoContext* ioc) {
  // The caller holds the group's last count (the "token"): no other
  // completion lowers the count from 1, so zero is reached only here.
  constexpr uint64_t kMask = device_internal::kRunningMask;
  for (;;) {
    if (ioc->flush_after_.exchange(false, std::memory_order_acq_rel) &&
        ioc->ok()) {
      RequestFlush(ioc);  // the token passes to the flush
      return;
    }
    // The Submit generation before the callback (acquire, paired with
    // Submit's release).
    const uint64_t seen = ioc->running_.load(std::memory_order_acquire) >> 32;
    if (ioc->on_done_) {
      CallbackFrame frame{ioc, false};
      CallbackFrame* const outer = tl_callback;
      tl_callback = &frame;
      ioc->on_done_(*ioc);
      tl_callback = outer;
      if (frame.destroyed) return;
    }
    uint64_t cur = ioc->running_.load(std::memory_order_acquire);
    bool again = false;
    for (;;) {
      if ((cur & kMask) == 1 && (cur >> 32) != seen) {
        // Submitted during (or since) the callback, and those requests are
        // all done (only this token counts): the group completed while this
        // one held the token, and its completion is this thread's to
        // deliver.
        again = true;
        break;
      }
      // seq_cst: the writing half of the parking handshakes (Wait counts
      // itself in parked_ or reap_waiters_, then reads the count; this side
      // writes the count, then reads theirs). After it the context is not
      // touched again: a waiter that sees zero may destroy it. A Submit in
      // between changes the generation, so the exchange fails even when the
      // count came back to 1.
      if (ioc->running_.compare_exchange_weak(cur, cur - 1,
                                              std::memory_order_seq_cst)) {
        break;
      }
    }
    if (again) continue;
    if ((cur & kMask) == 1) {
      if (parked_.load(std::memory_order_seq_cst) != 0) {
        Park& park = ParkOf(ioc);
        std::lock_guard lock(park.mu);
        park.cv.notify_all();
      }
      WakeReapWaiters();
    }
    return;
  }
}

void DeviceImpl::WakeReapWaiters() {
  // seq_cst pairs with Wait: a follower raises reap_waiters_ and then reads
  // the context's counts; this side wrote the counts and now reads
  // reap_waiters_. One of the two sees the other's write.
  if (reap_waiters_.load(std::memory_order_seq_cst) == 0) return;
  std::lock_guard lock(reap_mu_);
  reap_cv_.notify_all();
}

void DeviceImpl::CompletionThreadMain() {
  tl_delivering = this;
  const size_t max = std::min<size_t>(options_.reap_max, 256);
  Request* out[256];
  for (;;) {
    Result<size_t> r =
        engine_->Reap(std::span<Request*>(out, max), 1, options_.poll_interval);
    if (!r.ok()) {
      if (r.status().Is(Errc::kShutdown)) return;
      // An error of the wait itself: nothing was reaped; try again shortly.
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    for (size_t i = 0; i < *r; ++i) Process(out[i]);
  }
}

Result<size_t> DeviceImpl::Reap(std::chrono::nanoseconds timeout, bool wait) {
  if (OnCompletionThread()) {
    return Status::Error(Errc::kInvalidArgument,
                         "Device::Poll/Run on \"" + path_ +
                             "\" from a completion callback of the same "
                             "device");
  }
  const DeviceImpl* const outer = tl_delivering;
  tl_delivering = this;
  const size_t max = std::min<size_t>(options_.reap_max, 256);
  Request* out[256];
  Result<size_t> r =
      engine_->Reap(std::span<Request*>(out, max), wait ? 1 : 0, timeout);
  if (r.ok()) {
    for (size_t i = 0; i < *r; ++i) Process(out[i]);
  }
  tl_delivering = outer;
  return r;
}

}  // namespace aiokit::device_internal
