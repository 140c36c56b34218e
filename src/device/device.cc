// Device: opening and probing (alignment per direction, size, discard, write
// hints, atomic writes, the engine, the buffer pool), the public forwarding,
// and Info().

#include "aiokit/device.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>

#include "device/device_impl.h"
#include "sys/syscalls.h"
#include "util/strings.h"

namespace aiokit {
namespace device_internal {
namespace {

// /sys/dev/block/MAJ:MIN/queue/<name> of a block device (or of the disk a
// partition is on), as a number; -1 when unreadable.
long long QueueAttribute(dev_t rdev, const char* name) {
  const std::string base = "/sys/dev/block/" + std::to_string(major(rdev)) +
                           ":" + std::to_string(minor(rdev));
  for (const char* rel : {"/queue/", "/../queue/"}) {
    const std::string text = sys::ReadSmallFile((base + rel + name).c_str());
    if (text.empty()) continue;
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (end != text.c_str()) return v;
  }
  return -1;
}

}  // namespace

DeviceImpl::DeviceImpl(std::string path, const DeviceOptions& options)
    : path_(std::move(path)), options_(options) {
  flush_io_.kind = Io::Kind::kFlush;
  flush_io_.req.priv = &flush_io_;
}

Status DeviceImpl::Open() {
  const DeviceOptions& o = options_;
  if (o.engine.on_complete != nullptr || o.engine.completion_thread) {
    return Status::Error(Errc::kInvalidArgument,
                         "Device::Open(\"" + path_ +
                             "\"): DeviceOptions::engine must not set "
                             "on_complete or completion_thread (the device "
                             "reaps its engine itself)");
  }
  if (o.reap_max == 0) {
    return Status::Error(
        Errc::kInvalidArgument,
        "Device::Open(\"" + path_ + "\"): reap_max must be at least 1");
  }
  int flags = o.read_only ? O_RDONLY : O_RDWR;
  if (o.direct) flags |= O_DIRECT;
  if (o.create && !o.read_only) flags |= O_CREAT;
  Result<File> f = File::Open(path_, flags);
  if (!f.ok()) return f.status();
  file_ = std::move(*f);
  struct stat st;
  if (int r = sys::Fstat(file_.fd(), &st); r < 0) {
    return Status::FromErrno(-r, "fstat(\"" + path_ + "\")");
  }
  block_device_ = S_ISBLK(st.st_mode);
  if (!block_device_ && !S_ISREG(st.st_mode)) {
    return Status::Error(Errc::kInvalidArgument,
                         "Device::Open(\"" + path_ +
                             "\"): neither a block device nor a regular file");
  }
  info_.path = path_;
  info_.block_device = block_device_;
  info_.direct = o.direct;
  info_.read_only = o.read_only;
  info_.max_transfer = kMaxTransfer;
  Result<uint64_t> size = file_.Size();
  if (!size.ok()) return size.status();
  info_.size = *size;

  // Alignment per direction: statx (with STATX_DIO_READ_ALIGN where the
  // kernel has it), else what File found (the logical block size).
  if (o.direct) {
    const Alignment a = file_.alignment();
    read_align_ = a;
    write_align_ = a;
    info_.alignment_source = file_.alignment_source();
    sys::StatxLimits lim;
    if (sys::StatxLimitsOf(file_.fd(), &lim) == 0 &&
        lim.dio_read_offset_align != 0 &&
        lim.dio_read_offset_align <= a.offset) {
      read_align_.offset = lim.dio_read_offset_align;
    }
    info_.memory_alignment = a.memory;
    info_.read_alignment = read_align_.offset;
    info_.write_alignment = write_align_.offset;
    // Powers of two (statx and the block layer give nothing else); any
    // other value makes the quick test fail always, so the full check
    // decides.
    auto mask = [](uint32_t v) -> uint64_t {
      if (v <= 1) return 0;
      return (v & (v - 1)) == 0 ? v - 1 : ~uint64_t{0};
    };
    memory_mask_ = mask(a.memory);
    read_mask_ = mask(read_align_.offset);
    write_mask_ = mask(write_align_.offset);
    // The largest transfer must stay aligned.
    info_.max_transfer = kMaxTransfer - (kMaxTransfer % write_align_.offset);
  }

  if (Status s = ProbeDiscard(); !s.ok()) return s;
  if (Status s = ProbeWriteHints(); !s.ok()) return s;
  if (Status s = ProbeAtomicWrites(); !s.ok()) return s;
  if (Status s = MakeEngine(); !s.ok()) return s;
  if (Status s = SetUpBufferPool(); !s.ok()) return s;
  const unsigned initial =
      o.requests != 0 ? o.requests : 4 * std::max(1U, o.engine.queue_depth);
  if (Status s = GrowPool(initial); !s.ok()) return s;

  info_.completion_threads = o.completion_threads;
  try {
    for (unsigned i = 0; i < o.completion_threads; ++i) {
      completion_threads_.emplace_back([this] { CompletionThreadMain(); });
    }
    if (info_.discard) {
      disc_thread_ = std::thread([this] { DiscardThreadMain(); });
    }
  } catch (const std::system_error& e) {
    return Status::FromErrno(
        e.code().value(),
        "Device::Open(\"" + path_ + "\"): starting the device's threads");
  }
  return {};
}

Status DeviceImpl::ProbeDiscard() {
  if (options_.read_only) {
    info_.discard_note = "opened read-only";
    return {};
  }
  if (block_device_) {
    struct stat st;
    if (int r = sys::Fstat(file_.fd(), &st); r < 0) {
      return Status::FromErrno(-r, "fstat(\"" + path_ + "\")");
    }
    const long long max = QueueAttribute(st.st_rdev, "discard_max_bytes");
    if (max > 0) {
      info_.discard = true;
      info_.discard_note = "BLKDISCARD (the device takes up to " +
                           std::to_string(max) + " bytes per discard)";
    } else {
      info_.discard_note =
          max == 0 ? "the device does not discard (queue/discard_max_bytes "
                     "is 0)"
                   : "the device's queue/discard_max_bytes is unreadable";
    }
    return {};
  }
  // A hole punched past the end of the file changes nothing and says
  // whether the file system punches holes at all.
  const uint64_t past = (info_.size + 4095) & ~uint64_t{4095};
  const int r =
      sys::Fallocate(file_.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                     static_cast<off_t>(past), 4096);
  if (r == 0) {
    info_.discard = true;
    info_.discard_note =
        "fallocate(PUNCH_HOLE|KEEP_SIZE): holes read back "
        "as zeros";
  } else {
    info_.discard_note =
        "fallocate(PUNCH_HOLE) on this file system: " + util::ErrnoText(-r);
  }
  return {};
}

Status DeviceImpl::ProbeWriteHints() {
  if (!options_.write_hints) {
    info_.write_hints_note = "turned off (DeviceOptions::write_hints)";
    return {};
  }
  if (options_.read_only) {
    info_.write_hints_note = "opened read-only";
    return {};
  }
  // Setting the hint the inode has already (read back) tells whether the
  // kernel takes hints here without changing anything.
  uint64_t current = 0;
  int r = sys::GetRwHint(file_.fd(), &current);
  if (r == 0) r = sys::SetRwHint(file_.fd(), current);
  if (r < 0) {
    info_.write_hints_note =
        "fcntl(F_SET_RW_HINT): " + util::ErrnoText(-r) + "; writes go unhinted";
    return {};
  }
  inode_hint_ = current < kWriteLifeCount ? static_cast<WriteLife>(current)
                                          : WriteLife::kNotSet;
  info_.write_hints = true;
  info_.write_hints_note =
      "F_SET_RW_HINT: the kernel keeps one hint per inode (F_SET_FILE_RW_HINT, "
      "per open file, was removed in Linux 5.17), so the device sets it when "
      "a write's lifetime differs from the last one; writes of different "
      "lifetimes in flight at once carry the one set last";
  return {};
}

Status DeviceImpl::ProbeAtomicWrites() {
  sys::StatxLimits lim;
  const int r = sys::StatxLimitsOf(file_.fd(), &lim);
  if (r < 0) {
    info_.atomic_write_note = "statx: " + util::ErrnoText(-r);
    return {};
  }
  if ((lim.mask & sys::kStatxWriteAtomic) == 0) {
    info_.atomic_write_note =
        "statx does not report STATX_WRITE_ATOMIC here (Linux 6.11+)";
    return {};
  }
  if (lim.atomic_write_unit_max == 0) {
    info_.atomic_write_note =
        "statx reports no atomic write unit for this file (the file system "
        "or the device cannot write atomically)";
    return {};
  }
  if (!options_.direct) {
    info_.atomic_write_note =
        "RWF_ATOMIC needs O_DIRECT; the device is buffered";
    return {};
  }
  info_.atomic_write_min = lim.atomic_write_unit_min;
  info_.atomic_write_max = lim.atomic_write_unit_max;
  info_.atomic_write_note =
      "RWF_ATOMIC: powers of two from " +
      std::to_string(lim.atomic_write_unit_min) + " to " +
      std::to_string(lim.atomic_write_unit_max) +
      " bytes, aligned to their length, " +
      std::to_string(std::max(1U, lim.atomic_write_segments_max)) +
      " buffer(s)";
  return {};
}

Status DeviceImpl::MakeEngine() {
  EngineOptions eo = options_.engine;
  eo.on_complete = nullptr;
  eo.completion_thread = false;
  // With completion threads, several threads enter the engine: a ring
  // promised to one thread would refuse them.
  if (options_.completion_threads != 0) {
    eo.single_thread = false;
    eo.defer_taskrun = false;
  }
  Result<std::unique_ptr<Engine>> e =
      aiokit::MakeEngine(eo, &info_.engines_passed_over);
  if (!e.ok()) {
    return {e.status().code(),
            "Device::Open(\"" + path_ +
                "\"): making the engine: " + e.status().context()};
  }
  engine_ = std::move(*e);
  if (options_.wrap_engine) {
    Result<std::unique_ptr<Engine>> w =
        options_.wrap_engine(std::move(engine_));
    if (!w.ok()) return w.status();
    engine_ = std::move(*w);
    if (engine_ == nullptr) {
      return Status::Error(
          Errc::kInvalidArgument,
          "Device::Open(\"" + path_ + "\"): wrap_engine returned no engine");
    }
  }
  info_.engine = engine_->kind();
  return {};
}

Status DeviceImpl::SetUpBufferPool() {
  if (options_.buffer_count == 0 || options_.buffer_size == 0) {
    info_.buffers_note = "no buffer pool (DeviceOptions::buffer_count)";
    return {};
  }
  const size_t align = std::max<size_t>(
      kDefaultBufferAlignment, options_.direct ? info_.memory_alignment : 1);
  Result<BufferPool*> pool =
      BufferPool::Create(options_.buffer_count, options_.buffer_size, align);
  if (!pool.ok()) return pool.status();
  buffer_pool_ = *pool;
  const Status reg = engine_->RegisterBuffers(buffer_pool_->iovecs());
  if (reg.ok()) {
    registered_ = true;
    info_.registered_buffers = true;
    info_.buffers_note = std::to_string(options_.buffer_count) + " x " +
                         std::to_string(options_.buffer_size) +
                         " bytes, registered with the engine (fixed buffers)";
  } else {
    info_.buffers_note = std::to_string(options_.buffer_count) + " x " +
                         std::to_string(options_.buffer_size) +
                         " bytes, not registered: " + reg.ToString();
  }
  return {};
}

Status DeviceImpl::GrowPool(size_t n) {
  if (n == 0) return {};
  std::unique_ptr<Io[]> chunk(new (std::nothrow) Io[n]);
  if (chunk == nullptr) {
    return Status::FromErrno(ENOMEM, "Device(\"" + path_ + "\"): " +
                                         std::to_string(n) + " requests");
  }
  for (size_t i = 0; i < n; ++i) {
    chunk[i].req.priv = &chunk[i];
    chunk[i].buffers.reserve(4);
    chunk[i].iov.reserve(4);
    chunk[i].next = i + 1 < n ? &chunk[i + 1] : free_;
  }
  free_ = &chunk[0];
  chunks_.push_back(std::move(chunk));
  pool_size_ += n;
  pool_requests_.store(pool_size_, std::memory_order_relaxed);
  return {};
}

Io* DeviceImpl::TakeIo() {
  std::lock_guard<PoolLock> lock(pool_mu_);
  if (free_ == nullptr) {
    // A burst beyond the pool: grow by half (never in steady state).
    if (!GrowPool(std::max<size_t>(pool_size_ / 2, 64)).ok()) return nullptr;
  }
  Io* io = free_;
  free_ = io->next;
  io->next = nullptr;
  return io;
}

void DeviceImpl::ReleaseIo(Io* io) {
  io->buffers.clear();  // drops the references; keeps the capacity
  io->iov.clear();
  io->ioc = nullptr;
  io->got = nullptr;
  io->has_deadline = false;
  io->cancel_asked = false;
  io->cancel_by_caller = false;
  std::lock_guard<PoolLock> lock(pool_mu_);
  io->next = free_;
  free_ = io;
}

Result<uint64_t> DeviceImpl::Size() const { return file_.Size(); }

Result<Buffer> DeviceImpl::AllocateBuffer(size_t length) {
  if (buffer_pool_ != nullptr && length != 0 &&
      length <= buffer_pool_->buffer_size()) {
    if (BufferControl* c = buffer_pool_->Take(); c != nullptr) {
      return Buffer(c, buffer_pool_->data(c->index), length);
    }
  }
  return Buffer::Allocate(length, std::max<size_t>(kDefaultBufferAlignment,
                                                   info_.memory_alignment));
}

DeviceStats DeviceImpl::Stats() const noexcept {
  DeviceStats s;
  s.reads = reads_.load(std::memory_order_relaxed);
  s.writes = writes_.load(std::memory_order_relaxed);
  s.requests = requests_.load(std::memory_order_relaxed);
  s.resubmitted = resubmitted_.load(std::memory_order_relaxed);
  s.split = split_.load(std::memory_order_relaxed);
  s.fdatasyncs = fdatasyncs_.load(std::memory_order_relaxed);
  s.flushes_skipped = flushes_skipped_.load(std::memory_order_relaxed);
  s.timed_out = timed_out_.load(std::memory_order_relaxed);
  // Acquire pairs with the release decrements in device_io.cc: what a
  // request unpinned (its buffers) is back when the count shows it.
  s.pinned = pinned_.load(std::memory_order_acquire);
  s.cancelled = cancelled_.load(std::memory_order_relaxed);
  s.pool_requests = pool_requests_.load(std::memory_order_relaxed);
  s.discarded_bytes = discarded_bytes_.load(std::memory_order_relaxed);
  s.flush_waiters = flush_waiting_.load(std::memory_order_relaxed);
  return s;
}

Status DeviceImpl::Preallocate(uint64_t offset, uint64_t length) {
  const std::string what = "fallocate(\"" + path_ + "\", offset " +
                           std::to_string(offset) + ", length " +
                           std::to_string(length) + ")";
  if (block_device_) {
    return Status::Error(Errc::kUnsupported,
                         what + ": a block device has no space to reserve");
  }
  if (options_.read_only) {
    return Status::Error(Errc::kInvalidArgument,
                         what + ": the device is open read-only");
  }
  if (length == 0) {
    return Status::Error(Errc::kInvalidArgument, what + ": length is 0");
  }
  const int r = sys::Fallocate(file_.fd(), 0, static_cast<off_t>(offset),
                               static_cast<off_t>(length));
  if (r == -EOPNOTSUPP) {
    return Status::Error(Errc::kUnsupported,
                         what + ": the file system does not preallocate (" +
                             util::ErrnoText(EOPNOTSUPP) + ")");
  }
  if (r < 0) return Status::FromErrno(-r, what);
  return {};
}

}  // namespace device_internal

// ---- Public forwarding ----

const char* WriteLifeName(WriteLife life) noexcept {
  switch (life) {
    case WriteLife::kNotSet:
      return "not-set";
    case WriteLife::kNone:
      return "none";
    case WriteLife::kShort:
      return "short";
    case WriteLife::kMedium:
      return "medium";
    case WriteLife::kLong:
      return "long";
    case WriteLife::kExtreme:
      return "extreme";
  }
  return "unknown";
}

std::string DeviceInfo::ToString() const {
  std::string out;
  auto line = [&out](const std::string& name, const std::string& value) {
    out += name + ": " + value + "\n";
  };
  line("path", path + (block_device ? " (block device)" : " (file)"));
  line("size", std::to_string(size) + " bytes");
  line("O_DIRECT", direct ? "yes" : "no");
  if (direct) {
    line("alignment", "memory " + std::to_string(memory_alignment) + ", read " +
                          std::to_string(read_alignment) + ", write " +
                          std::to_string(write_alignment));
  }
  std::string engine_text = EngineKindName(engine);
  for (const EngineRefusal& r : engines_passed_over) {
    engine_text += std::string("; passed over ") + EngineKindName(r.kind) +
                   ": " + r.reason.ToString();
  }
  line("engine", engine_text);
  line("completion threads", std::to_string(completion_threads));
  line("max transfer", std::to_string(max_transfer) + " bytes");
  line("discard", std::string(discard ? "yes: " : "no: ") + discard_note);
  line("write hints",
       std::string(write_hints ? "yes: " : "no: ") + write_hints_note);
  line("atomic writes", atomic_write_note);
  line("buffers", buffers_note);
  return out;
}

Device::Device(std::unique_ptr<device_internal::DeviceImpl> impl)
    : impl_(std::move(impl)) {}

Result<std::unique_ptr<Device>> Device::Open(const std::string& path,
                                             const DeviceOptions& options) {
  auto impl = std::make_unique<device_internal::DeviceImpl>(path, options);
  if (Status s = impl->Open(); !s.ok()) return s;
  return std::unique_ptr<Device>(new Device(std::move(impl)));
}

Device::~Device() = default;

const DeviceInfo& Device::Info() const noexcept { return impl_->info(); }
DeviceStats Device::Stats() const noexcept { return impl_->Stats(); }
Engine& Device::engine() noexcept { return impl_->engine(); }
int Device::fd() const noexcept { return impl_->fd(); }
Result<uint64_t> Device::Size() const { return impl_->Size(); }
Result<Buffer> Device::AllocateBuffer(size_t length) {
  return impl_->AllocateBuffer(length);
}
Status Device::AioRead(uint64_t offset, Buffer buffer, IoContext* ioc,
                       uint64_t* got) {
  return impl_->AioRead(offset, std::move(buffer), ioc, got);
}
Status Device::AioRead(uint64_t offset, std::span<const Buffer> buffers,
                       IoContext* ioc, uint64_t* got) {
  return impl_->AioRead(offset, buffers, ioc, got);
}
Status Device::AioWrite(uint64_t offset, std::span<const Buffer> buffers,
                        IoContext* ioc, WriteOptions options) {
  return impl_->AioWrite(offset, buffers, ioc, options);
}
Status Device::Submit(IoContext* ioc, ThenFlush then_flush) {
  return impl_->Submit(ioc, then_flush);
}
Status Device::Submit(std::span<IoContext* const> iocs, ThenFlush then_flush) {
  return impl_->Submit(iocs, then_flush);
}
Status Device::Cancel(IoContext* ioc) { return impl_->Cancel(ioc); }
Result<uint64_t> Device::Read(uint64_t offset, Buffer buffer) {
  return impl_->Read(offset, std::move(buffer), /*exactly=*/false);
}
Status Device::ReadExactly(uint64_t offset, Buffer buffer) {
  Result<uint64_t> r = impl_->Read(offset, std::move(buffer), true);
  return r.ok() ? Status() : r.status();
}
Status Device::Write(uint64_t offset, std::span<const Buffer> buffers,
                     WriteOptions options) {
  return impl_->Write(offset, buffers, options);
}
Result<uint64_t> Device::ReadUnaligned(uint64_t offset, size_t length,
                                       char* dst) {
  return impl_->ReadUnaligned(offset, length, dst);
}
Status Device::Flush() { return impl_->Flush(); }
Status Device::Preallocate(uint64_t offset, uint64_t length) {
  return impl_->Preallocate(offset, length);
}
Status Device::QueueDiscard(std::span<const Extent> ranges) {
  return impl_->QueueDiscard(ranges);
}
Status Device::DiscardDrain() { return impl_->DiscardDrain(); }
Result<size_t> Device::Poll() {
  return impl_->Reap(std::chrono::nanoseconds(0), false);
}
Result<size_t> Device::Run(std::chrono::nanoseconds timeout) {
  return impl_->Reap(timeout, true);
}
Result<int> Device::NotifyFd() { return impl_->NotifyFd(); }
Status Device::Close() { return impl_->Close(); }

}  // namespace aiokit
