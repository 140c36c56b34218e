#include "engine/threads/threads_io.h"

#include <algorithm>
#include <cstdint>

#include "engine/core/blocking_io.h"
#include "sys/syscalls.h"

namespace aiokit::internal {

bool IsShort(const Request& req, long r) noexcept {
  return r > 0 && static_cast<uint64_t>(r) < std::min(req.length, MaxRwCount());
}

long FinishShort(const Request& req, long done, bool stream) noexcept {
  const bool read = req.op == Op::kRead || req.op == Op::kReadv;
  if (read && stream) return done;
  // From where it stopped, up to MAX_RW_COUNT in all (the kernel's one call
  // would have stopped there too).
  IovecVector rest;
  auto skip = static_cast<uint64_t>(done);
  uint64_t room = MaxRwCount() - static_cast<uint64_t>(done);
  for (const iovec& v : req.iov) {
    if (skip >= v.iov_len) {
      skip -= v.iov_len;
      continue;
    }
    if (room == 0) break;
    const uint64_t take = std::min<uint64_t>(v.iov_len - skip, room);
    rest.push_back({static_cast<char*>(v.iov_base) + skip, take});
    room -= take;
    skip = 0;
  }
  const int n = static_cast<int>(rest.size());
  const auto off =
      stream ? off_t{-1}
             : static_cast<off_t>(req.offset + static_cast<uint64_t>(done));
  const int flags = static_cast<int>(req.rw_flags & ~rwf::kHipri);
  const long r = read ? sys::Preadv2(req.fd, rest.data(), n, off, flags)
                      : sys::Pwritev2(req.fd, rest.data(), n, off, flags);
  // The part done stands even if the rest fails: a short transfer.
  return r > 0 ? done + r : done;
}

}  // namespace aiokit::internal
