#include "aiokit/request.h"

#include <fcntl.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "sys/syscalls.h"
#include "util/strings.h"

namespace aiokit {

// ---- IovecVector ----

IovecVector::IovecVector(const IovecVector& other) {
  assign(other.data(), other.size());
}

IovecVector& IovecVector::operator=(const IovecVector& other) {
  if (this != &other) assign(other.data(), other.size());
  return *this;
}

IovecVector::IovecVector(IovecVector&& other) noexcept
    : heap_(other.heap_), size_(other.size_), capacity_(other.capacity_) {
  if (heap_ == nullptr) std::memcpy(inline_, other.inline_, sizeof(inline_));
  other.heap_ = nullptr;
  other.size_ = 0;
  other.capacity_ = 0;
}

IovecVector& IovecVector::operator=(IovecVector&& other) noexcept {
  if (this != &other) {
    delete[] heap_;
    heap_ = other.heap_;
    size_ = other.size_;
    capacity_ = other.capacity_;
    if (heap_ == nullptr) std::memcpy(inline_, other.inline_, sizeof(inline_));
    other.heap_ = nullptr;
    other.size_ = 0;
    other.capacity_ = 0;
  }
  return *this;
}

void IovecVector::reserve(size_t n) {
  if (n <= capacity()) return;
  const size_t cap = std::max(n, capacity() * 2);
  auto* grown = new iovec[cap];
  std::memcpy(grown, data(), size_ * sizeof(iovec));
  delete[] heap_;
  heap_ = grown;
  capacity_ = static_cast<uint32_t>(cap);
}

void IovecVector::push_back(const iovec& v) {
  if (size_ == capacity()) reserve(size_ + 1);
  data()[size_++] = v;
}

void IovecVector::assign(const iovec* v, size_t n) {
  size_ = 0;
  reserve(n);
  if (n != 0) std::memcpy(data(), v, n * sizeof(iovec));
  size_ = static_cast<uint32_t>(n);
}

uint64_t IovecVector::total_bytes() const noexcept {
  uint64_t total = 0;
  for (const iovec& v : *this) total += v.iov_len;
  return total;
}

// ---- Request ----

const char* OpName(Op op) noexcept {
  switch (op) {
    case Op::kNoop:
      return "noop";
    case Op::kRead:
      return "read";
    case Op::kWrite:
      return "write";
    case Op::kReadv:
      return "readv";
    case Op::kWritev:
      return "writev";
    case Op::kFsync:
      return "fsync";
    case Op::kFdatasync:
      return "fdatasync";
  }
  return "unknown-op";
}

const char* OriginName(Origin origin) noexcept {
  switch (origin) {
    case Origin::kNone:
      return "none";
    case Origin::kEngine:
      return "engine";
    case Origin::kLocal:
      return "local";
    case Origin::kRefused:
      return "refused";
    case Origin::kCancelled:
      return "cancelled";
  }
  return "unknown-origin";
}

Request::Request(const Request& other)
    : priv(other.priv),
      fd(other.fd),
      iov(other.iov),
      offset(other.offset),
      length(other.length),
      op(other.op),
      rw_flags(other.rw_flags),
      ioprio(other.ioprio),
      has_ioprio(other.has_ioprio),
      resfd(other.resfd),
      align(other.align),
      buf_index(other.buf_index) {
  iocb.aio_data = other.iocb.aio_data;
  FillIocb();
}

Request& Request::operator=(const Request& other) {
  if (this == &other) return *this;
  priv = other.priv;
  fd = other.fd;
  iov = other.iov;
  offset = other.offset;
  length = other.length;
  rval = kNotCompleted;
  op = other.op;
  origin = Origin::kNone;
  rw_flags = other.rw_flags;
  ioprio = other.ioprio;
  has_ioprio = other.has_ioprio;
  resfd = other.resfd;
  align = other.align;
  buf_index = other.buf_index;
  engine_state.store(request_state::kIdle, std::memory_order_relaxed);
  engine_next = nullptr;
  iocb.aio_data = other.iocb.aio_data;
  FillIocb();
  return *this;
}

void Request::SetRwFlags(uint32_t flags) noexcept {
  rw_flags = flags;
  iocb.aio_rw_flags = static_cast<__kernel_rwf_t>(flags);
}

void Request::SetIoPriority(uint16_t prio) noexcept {
  ioprio = prio;
  has_ioprio = true;
  iocb.aio_flags |= IOCB_FLAG_IOPRIO;
  iocb.aio_reqprio = static_cast<int16_t>(prio);
}

void Request::SetEventFd(int efd) noexcept {
  resfd = efd;
  if (efd >= 0) {
    iocb.aio_flags |= IOCB_FLAG_RESFD;
    iocb.aio_resfd = static_cast<uint32_t>(efd);
  } else {
    iocb.aio_flags &= ~static_cast<uint32_t>(IOCB_FLAG_RESFD);
    iocb.aio_resfd = 0;
  }
}

// Inline: on every Prep*, and used only in this file.
inline void Request::Reset(Op new_op, int new_fd, uint64_t off) noexcept {
  op = new_op;
  fd = new_fd;
  offset = off;
  length = 0;
  iov.clear();
  rval = kNotCompleted;
  origin = Origin::kNone;
  rw_flags = 0;
  ioprio = 0;
  has_ioprio = false;
  resfd = -1;
  align = {};
  buf_index = -1;
  engine_state.store(request_state::kIdle, std::memory_order_relaxed);
  engine_next = nullptr;
  iocb.aio_data = 0;  // as io_prep_* clear it; FillIocb writes the rest
}

// PrepRead and PrepWrite, the most common requests: the iocb written directly,
// as FillIocb would write it for a request just Reset (no priority, no
// eventfd, no flags).
void Request::PrepOneBuffer(Op new_op, int f, void* buf, size_t len,
                            uint64_t off) noexcept {
  Reset(new_op, f, off);
  iov.assign_one(buf, len);
  length = len;
  iocb = {};
  iocb.aio_lio_opcode = new_op == Op::kRead ? uint16_t{IOCB_CMD_PREAD}
                                            : uint16_t{IOCB_CMD_PWRITE};
  iocb.aio_fildes = static_cast<uint32_t>(f);
  iocb.aio_buf = reinterpret_cast<uint64_t>(buf);
  iocb.aio_nbytes = len;
  iocb.aio_offset = static_cast<int64_t>(off);
}

void Request::PrepRead(int f, void* buf, size_t len, uint64_t off) {
  PrepOneBuffer(Op::kRead, f, buf, len, off);
}

void Request::PrepWrite(int f, const void* buf, size_t len, uint64_t off) {
  // iovec has a non-const base; the kernel only reads it for a write.
  PrepOneBuffer(Op::kWrite, f, const_cast<void*>(buf), len, off);
}

void Request::PrepReadv(int f, const iovec* iovs, size_t n, uint64_t off) {
  Reset(Op::kReadv, f, off);
  iov.assign(iovs, n);
  length = iov.total_bytes();
  FillIocb();
}

void Request::PrepWritev(int f, const iovec* iovs, size_t n, uint64_t off) {
  Reset(Op::kWritev, f, off);
  iov.assign(iovs, n);
  length = iov.total_bytes();
  FillIocb();
}

void Request::PrepFsync(int f) {
  Reset(Op::kFsync, f, 0);
  FillIocb();
}
void Request::PrepFdatasync(int f) {
  Reset(Op::kFdatasync, f, 0);
  FillIocb();
}
void Request::PrepNoop() {
  Reset(Op::kNoop, -1, 0);
  FillIocb();
}

void Request::PrepRead(const File& f, void* buf, size_t len, uint64_t off) {
  PrepRead(f.fd(), buf, len, off);
  align = f.alignment();
}
void Request::PrepWrite(const File& f, const void* buf, size_t len,
                        uint64_t off) {
  PrepWrite(f.fd(), buf, len, off);
  align = f.alignment();
}
void Request::PrepReadv(const File& f, const iovec* iovs, size_t n,
                        uint64_t off) {
  PrepReadv(f.fd(), iovs, n, off);
  align = f.alignment();
}
void Request::PrepWritev(const File& f, const iovec* iovs, size_t n,
                         uint64_t off) {
  PrepWritev(f.fd(), iovs, n, off);
  align = f.alignment();
}

namespace {

std::string Context(const Request& r) {
  std::string out = OpName(r.op);
  if (r.op == Op::kNoop) return out;
  out += " fd=" + std::to_string(r.fd);
  if (r.op == Op::kFsync || r.op == Op::kFdatasync) return out;
  // The offset is what the caller passed, shown signed so that a negative one
  // reads as such.
  out += " offset=" + std::to_string(static_cast<int64_t>(r.offset));
  out += " length=" + std::to_string(r.length);
  if (r.op == Op::kRead || r.op == Op::kWrite) {
    if (!r.iov.empty())
      out +=
          " buf=" + util::Hex(reinterpret_cast<uintptr_t>(r.iov[0].iov_base));
  } else {
    out += " iovecs=" + std::to_string(r.iov.size());
  }
  if (r.rw_flags != 0) out += " rw_flags=" + util::Hex(r.rw_flags);
  if (r.has_ioprio) out += " ioprio=" + util::Hex(r.ioprio);
  return out;
}

// Which buffer breaks `a`, as a Status (OK when none).
Status CheckBuffers(const Request& r, const Alignment& a) {
  if (r.op == Op::kRead || r.op == Op::kWrite) {
    return a.Check(r.iov.empty() ? nullptr : r.iov[0].iov_base, r.offset,
                   r.length);
  }
  if (r.op == Op::kReadv || r.op == Op::kWritev) {
    // Each segment's address and length must be aligned, and so must the
    // offset.
    if (Status s = a.Check(nullptr, r.offset, 0); !s.ok()) return s;
    for (const iovec& v : r.iov) {
      if (Status s = a.Check(v.iov_base, r.offset, v.iov_len); !s.ok())
        return s;
    }
  }
  return {};
}

}  // namespace

Status Request::Validate() const {
  switch (op) {
    case Op::kNoop:
      return {};
    case Op::kFsync:
    case Op::kFdatasync:
      if (rw_flags != 0) {
        // The kernel refuses them on an AIO fsync; every engine does the same.
        return Status::Error(
            Errc::kInvalidArgument,
            Context(*this) + ": RWF_* flags apply to reads and writes only");
      }
      return {};
    case Op::kRead:
    case Op::kWrite:
      if (iov.size() != 1 || iov[0].iov_len != length) {
        return Status::Error(
            Errc::kInvalidArgument,
            Context(*this) +
                ": iov must hold exactly the one buffer of "
                "`length` bytes (use Prep" +
                (op == Op::kRead ? std::string("Read") : "Write") + ")");
      }
      if (length > static_cast<uint64_t>(SSIZE_MAX)) {
        // Kernel AIO's answer at io_submit; io_uring's 32-bit length would
        // wrap it and preadv2 says EINVAL too, so every engine refuses it here.
        return Status::Error(
            Errc::kInvalidArgument,
            Context(*this) + ": the length is above SSIZE_MAX");
      }
      break;
    case Op::kReadv:
    case Op::kWritev:
      if (iov.total_bytes() != length) {
        return Status::Error(
            Errc::kInvalidArgument,
            Context(*this) + ": length differs from the sum of the iovecs (" +
                std::to_string(iov.total_bytes()) + ")");
      }
      break;
    default:
      return Status::Error(
          Errc::kInvalidArgument,
          "request with unknown op " + std::to_string(static_cast<int>(op)));
  }
  if (offset > static_cast<uint64_t>(INT64_MAX)) {
    // The kernel's answer for AIO; io_uring would read -1 as "the file
    // position", so every engine refuses it here alike.
    return Status::Error(Errc::kInvalidArgument,
                         Context(*this) + ": the offset is negative");
  }
  if ((rw_flags & ~rwf::kAll) != 0) {
    return Status::Error(Errc::kInvalidArgument,
                         Context(*this) + ": unknown RWF_* bits " +
                             util::Hex(rw_flags & ~rwf::kAll));
  }
  if (has_ioprio && (ioprio >> 13U) > 3) {
    // The kernel's answer at submission for a class it does not have; the
    // threads and sync engines could not apply it either.
    return Status::Error(
        Errc::kInvalidArgument,
        Context(*this) + ": I/O priority class " +
            std::to_string(ioprio >> 13U) +
            " does not exist (0 none, 1 realtime, 2 best-effort, 3 idle)");
  }
  if (Status s = CheckBuffers(*this, align); !s.ok()) {
    return {s.code(), Context(*this) + ": " + s.context()};
  }
  return {};
}

std::string DescribeAsked(const Request& req) { return Context(req); }

std::string Describe(const Request& req) {
  std::string out = Context(req);
  switch (req.engine_state.load(std::memory_order_relaxed)) {
    case request_state::kIdle:
      if (req.rval == kNotCompleted) return out + ": not submitted";
      break;
    case request_state::kInFlight:
      return out + ": in flight";
    default:
      break;
  }
  if (req.rval >= 0) {
    out += ": " + std::to_string(req.rval) + " bytes";
    if ((req.op != Op::kNoop && req.op != Op::kFsync &&
         req.op != Op::kFdatasync) &&
        static_cast<uint64_t>(req.rval) < req.length) {
      out += " (short: " + std::to_string(req.length) + " asked)";
    }
    return out;
  }
  const int err = static_cast<int>(-req.rval);
  out += ": " + util::ErrnoText(err);
  if (req.origin == Origin::kRefused) out += ", refused at submission";
  if (req.origin == Origin::kCancelled) out += ", taken back before it started";
  if (err == EINVAL && req.op != Op::kNoop) {
    // Explain an EINVAL by the O_DIRECT rules: the alignment the request
    // carried, else the one the file has now (this runs on the error path
    // only).
    Alignment a = req.align;
    if (!a.known()) {
      const int fl = sys::Fcntl(req.fd, F_GETFL);
      if (fl >= 0 && (fl & O_DIRECT) != 0) {
        Result<DirectIoInfo> info = DiscoverDirectIo(req.fd);
        if (info.ok() && info->supported) a = info->alignment;
      }
    }
    if (Status s = CheckBuffers(req, a); !s.ok()) out += ": " + s.context();
  }
  return out;
}

}  // namespace aiokit
