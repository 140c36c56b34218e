// The threads engine's I/O attempts: a plain buffered read or write is first
// tried with RWF_NOWAIT, so that what the page cache can serve never waits for
// a worker that may block; what would block, or moved only part, is finished
// by a thread that may wait.

#ifndef AIOKIT_SRC_ENGINE_THREADS_THREADS_IO_H_
#define AIOKIT_SRC_ENGINE_THREADS_THREADS_IO_H_

#include <cerrno>

#include "aiokit/request.h"

namespace aiokit::internal {

// Only plain buffered reads and writes are tried without blocking: the
// caller's own RWF flags (NOWAIT among them) must mean what the caller meant,
// and an O_DIRECT transfer (its alignment known) waits for the device whatever
// the flags.
inline bool TriesWithoutBlocking(const Request& req) noexcept {
  return req.rw_flags == 0 && !req.align.known() &&
         (req.op == Op::kRead || req.op == Op::kReadv || req.op == Op::kWrite ||
          req.op == Op::kWritev);
}

// A try with RWF_NOWAIT that returned `r` did nothing and would have blocked:
// EAGAIN (not in the page cache, an empty pipe, space to allocate) or
// EOPNOTSUPP (the file cannot say).
inline bool WouldBlock(long r) noexcept {
  return r == -EAGAIN || r == -EOPNOTSUPP;
}

// A transfer that moved some bytes but fewer than asked (up to the kernel's
// MAX_RW_COUNT, which is the most one call moves).
bool IsShort(const Request& req, long r) noexcept;

// A transfer tried without blocking moved `done` bytes of the request (0 <
// done < length): does the rest, waiting this time, and returns the total.
// What was moved is kept: a stream cannot give it back, and a file opened
// O_APPEND would get it twice. A read from a stream ends at `done` (a pipe
// returns what it has, as the kernel's would).
long FinishShort(const Request& req, long done, bool stream) noexcept;

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_THREADS_THREADS_IO_H_
