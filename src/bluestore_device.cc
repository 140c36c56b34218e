// BlueStore's KernelDevice and IOContext (aiokit/bluestore.h) over the device
// layer.

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "aiokit/bluestore.h"

namespace aiokit::bluestore {

void interval_set::insert(uint64_t start, uint64_t len) {
  if (len == 0) return;
  uint64_t end = start + len;
  // Merge with a range that starts before and reaches `start`.
  auto it = m_.upper_bound(start);
  if (it != m_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second >= start) {
      start = prev->first;
      end = std::max(end, prev->first + prev->second);
      it = m_.erase(prev);
    }
  }
  // And with those that start inside or right after.
  while (it != m_.end() && it->first <= end) {
    end = std::max(end, it->first + it->second);
    it = m_.erase(it);
  }
  m_.emplace(start, end - start);
}

uint64_t interval_set::size() const noexcept {
  uint64_t total = 0;
  for (const auto& [start, len] : m_) total += len;
  return total;
}

IOContext::IOContext(void* p, bool allow_eio)
    : priv(p),
      ioc_(
          [this](IoContext&) {
            KernelDevice* d = dev_.load(std::memory_order_acquire);
            if (priv != nullptr && d != nullptr && d->aio_cb_ != nullptr) {
              d->aio_cb_(d->aio_cb_priv_, priv);
            }
          },
          allow_eio) {}

void IOContext::aio_wait() { (void)ioc_.Wait(); }

int IOContext::get_return_value() const {
  const Status s = ioc_.status();
  if (!s.ok()) return ToNegativeErrno(s);
  if (!ioc_.eio_extents().empty()) return -EIO;
  return 0;
}

KernelDevice::KernelDevice(aio_callback_t aio_cb, void* aio_cb_priv,
                           aio_callback_t discard_cb, void* discard_cb_priv)
    : aio_cb_(aio_cb),
      aio_cb_priv_(aio_cb_priv),
      discard_cb_(discard_cb),
      discard_cb_priv_(discard_cb_priv) {}

KernelDevice::~KernelDevice() { close(); }

int KernelDevice::Fail(Status s) {
  const int r = ToNegativeErrno(s);
  std::lock_guard lock(error_mu_);
  last_error_ = std::move(s);
  return r;
}

Status KernelDevice::last_error() const {
  std::lock_guard lock(error_mu_);
  return last_error_;
}

int KernelDevice::open(const std::string& path) {
  if (direct_ != nullptr)
    return Fail(Status::Error(Errc::kInvalidArgument,
                              "KernelDevice::open(\"" + path +
                                  "\"): already open on \"" + path_ + "\""));
  DeviceOptions o;
  o.engine.queue_depth = 1024;  // BlueStore's bdev_aio_max_queue_depth
  o.completion_threads = 1;
  o.on_discard = [this](const DiscardResult& r) {
    // BlueStore releases every range it tried: a failed discard leaves the
    // space allocated on the device, not in use by BlueStore.
    interval_set released;
    for (const Extent& e : r.discarded) released.insert(e.offset, e.length);
    for (const auto& [e, why] : r.failed) {
      released.insert(e.offset, e.length);
      (void)Fail(why);
    }
    if (discard_cb_ != nullptr) discard_cb_(discard_cb_priv_, &released);
  };
  Result<std::unique_ptr<Device>> d = Device::Open(path, o);
  if (!d.ok()) return Fail(d.status());
  direct_ = std::move(*d);
  path_ = path;
  return 0;
}

void KernelDevice::close() {
  if (direct_ == nullptr) return;
  (void)direct_->DiscardDrain();
  if (Status s = direct_->Close(); !s.ok()) (void)Fail(s);
  std::lock_guard lock(buffered_mu_);
  if (buffered_ != nullptr) {
    if (Status s = buffered_->Close(); !s.ok()) (void)Fail(s);
    buffered_.reset();
  }
  direct_.reset();
}

uint64_t KernelDevice::get_size() const {
  return direct_ != nullptr ? direct_->Info().size : 0;
}

uint64_t KernelDevice::get_block_size() const {
  // bdev_block_size: 4096, or the device's write alignment when larger.
  return direct_ != nullptr
             ? std::max<uint64_t>(4096, direct_->Info().write_alignment)
             : 4096;
}

Device* KernelDevice::Buffered() {
  std::lock_guard lock(buffered_mu_);
  if (buffered_ == nullptr && direct_ != nullptr) {
    DeviceOptions o;
    o.direct = false;
    o.completion_threads = 1;
    o.write_hints = false;
    Result<std::unique_ptr<Device>> d = Device::Open(path_, o);
    if (!d.ok()) {
      (void)Fail(d.status());
      return nullptr;
    }
    buffered_ = std::move(*d);
  }
  return buffered_.get();
}

std::vector<Buffer> KernelDevice::Wrap(bufferlist& bl, size_t align) {
  std::vector<Buffer> out;
  if (!bl.is_aligned(align)) {
    // BlueStore rebuilds an unaligned list into aligned memory; so does this.
    bufferptr whole = buffer::create_aligned(bl.length(), align);
    bl.copy_out(0, bl.length(), whole.c_str());
    bufferlist rebuilt;
    rebuilt.append(std::move(whole));
    bl = std::move(rebuilt);
  }
  out.reserve(bl.get_num_buffers());
  for (const bufferptr& p : bl.buffers()) {
    if (p.length() != 0) {
      out.push_back(Buffer::Wrap(p.c_str(), p.length(), p.shared()));
    }
  }
  return out;
}

int KernelDevice::read(uint64_t off, uint64_t len, bufferlist* pbl,
                       IOContext* ioc, bool buffered) {
  (void)ioc;  // BlueStore reads synchronously; errors come back as -errno
  Device* d = buffered ? Buffered() : direct_.get();
  if (d == nullptr) {
    return Fail(Status::Error(Errc::kShutdown, "KernelDevice::read: not open"));
  }
  bufferptr p = buffer::create_small_page_aligned(len);
  if (Status s = d->ReadExactly(off, Buffer::Wrap(p.c_str(), len, p.shared()));
      !s.ok()) {
    return Fail(s);
  }
  pbl->append(std::move(p));
  return 0;
}

int KernelDevice::read_random(uint64_t off, uint64_t len, char* buf,
                              bool buffered) {
  Device* d = buffered ? Buffered() : direct_.get();
  if (d == nullptr) {
    return Fail(
        Status::Error(Errc::kShutdown, "KernelDevice::read_random: not open"));
  }
  Result<uint64_t> got = d->ReadUnaligned(off, len, buf);
  if (!got.ok()) return Fail(got.status());
  if (*got != len) {
    return Fail(Status::Error(
        Errc::kEndOfFile,
        "KernelDevice::read_random(\"" + path_ + "\", offset " +
            std::to_string(off) + ", length " + std::to_string(len) +
            "): end of the device after " + std::to_string(*got) + " bytes"));
  }
  return 0;
}

int KernelDevice::write(uint64_t off, bufferlist& bl, bool buffered,
                        int write_hint) {
  Device* d = buffered ? Buffered() : direct_.get();
  if (d == nullptr) {
    return Fail(
        Status::Error(Errc::kShutdown, "KernelDevice::write: not open"));
  }
  const std::vector<Buffer> bufs =
      Wrap(bl, std::max<size_t>(4096, d->Info().memory_alignment));
  WriteOptions w;
  if (write_hint > 0 && write_hint < WRITE_LIFE_MAX) {
    w.life = static_cast<WriteLife>(write_hint);
  }
  if (Status s = d->Write(off, bufs, w); !s.ok()) return Fail(s);
  return 0;
}

int KernelDevice::aio_read(uint64_t off, uint64_t len, bufferlist* pbl,
                           IOContext* ioc) {
  if (direct_ == nullptr) {
    return Fail(
        Status::Error(Errc::kShutdown, "KernelDevice::aio_read: not open"));
  }
  ioc->dev_.store(this, std::memory_order_release);
  bufferptr p = buffer::create_small_page_aligned(len);
  if (Status s = direct_->AioRead(off, Buffer::Wrap(p.c_str(), len, p.shared()),
                                  &ioc->ioc_);
      !s.ok()) {
    return Fail(s);
  }
  pbl->append(std::move(p));
  return 0;
}

int KernelDevice::aio_write(uint64_t off, bufferlist& bl, IOContext* ioc,
                            bool buffered, int write_hint) {
  if (buffered) return write(off, bl, true, write_hint);
  if (direct_ == nullptr) {
    return Fail(
        Status::Error(Errc::kShutdown, "KernelDevice::aio_write: not open"));
  }
  ioc->dev_.store(this, std::memory_order_release);
  const std::vector<Buffer> bufs =
      Wrap(bl, std::max<size_t>(4096, direct_->Info().memory_alignment));
  WriteOptions w;
  if (write_hint > 0 && write_hint < WRITE_LIFE_MAX) {
    w.life = static_cast<WriteLife>(write_hint);
  }
  if (Status s = direct_->AioWrite(off, bufs, &ioc->ioc_, w); !s.ok()) {
    return Fail(s);
  }
  return 0;
}

void KernelDevice::aio_submit(IOContext* ioc) {
  if (direct_ == nullptr || ioc->ioc_.pending() == 0) return;
  if (Status s = direct_->Submit(&ioc->ioc_); !s.ok()) (void)Fail(s);
}

int KernelDevice::flush() {
  if (direct_ == nullptr) return 0;
  if (Status s = direct_->Flush(); !s.ok()) return Fail(s);
  std::lock_guard lock(buffered_mu_);
  if (buffered_ != nullptr) {
    if (Status s = buffered_->Flush(); !s.ok()) return Fail(s);
  }
  return 0;
}

int KernelDevice::queue_discard(interval_set& to_release) {
  if (direct_ == nullptr) {
    return Fail(Status::Error(Errc::kShutdown,
                              "KernelDevice::queue_discard: not open"));
  }
  std::vector<Extent> ranges;
  ranges.reserve(to_release.num_intervals());
  for (const auto& [start, len] : to_release) ranges.push_back({start, len});
  if (Status s = direct_->QueueDiscard(ranges); !s.ok()) return Fail(s);
  return 0;
}

void KernelDevice::discard_drain() {
  if (direct_ != nullptr) (void)direct_->DiscardDrain();
}

}  // namespace aiokit::bluestore
