#include "engine/core/blocking_io.h"

#include <unistd.h>

#include <cerrno>
#include <climits>

#include "sys/syscalls.h"

namespace aiokit::internal {

uint64_t MaxRwCount() noexcept {
  static const uint64_t max =
      static_cast<uint64_t>(INT_MAX) &
      ~(static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)) - 1);
  return max;
}

long ReadWrite(const Request& req, int flags, bool* stream) noexcept {
  const auto off = static_cast<off_t>(req.offset);
  const int n = static_cast<int>(req.iov.size());
  const bool read = req.op == Op::kRead || req.op == Op::kReadv;
  long r = read ? sys::Preadv2(req.fd, req.iov.data(), n, off, flags)
                : sys::Pwritev2(req.fd, req.iov.data(), n, off, flags);
  if (stream != nullptr) *stream = false;
  if (r == -ESPIPE) {
    // No offset on this file: -1 means its position.
    if (stream != nullptr) *stream = true;
    r = read ? sys::Preadv2(req.fd, req.iov.data(), n, -1, flags)
             : sys::Pwritev2(req.fd, req.iov.data(), n, -1, flags);
  }
  return r;
}

int64_t RunBlocking(const Request& req) noexcept {
  switch (req.op) {
    case Op::kRead:
    case Op::kReadv:
    case Op::kWrite:
    case Op::kWritev:
      return ReadWrite(req, static_cast<int>(req.rw_flags & ~rwf::kHipri));
    case Op::kFsync:
      return sys::Fsync(req.fd);
    case Op::kFdatasync:
      return sys::Fdatasync(req.fd);
    case Op::kNoop:
      return 0;
  }
  return -EINVAL;
}

}  // namespace aiokit::internal
