// Running one request to completion on the calling thread with the ordinary
// system calls (preadv2, pwritev2, fsync, fdatasync): the sync engine's whole
// I/O, and the threads engine's workers once a request may block.

#ifndef AIOKIT_SRC_ENGINE_CORE_BLOCKING_IO_H_
#define AIOKIT_SRC_ENGINE_CORE_BLOCKING_IO_H_

#include <cstdint>

#include "aiokit/request.h"

namespace aiokit::internal {

// The most the kernel moves in one read or write (MAX_RW_COUNT: INT_MAX
// rounded down to a page); it returns that count for a longer request.
uint64_t MaxRwCount() noexcept;

// preadv2 or pwritev2 of `req` (a read, write, readv or writev) with `flags`
// (RWF_*): bytes or -errno. On a pipe, FIFO or socket (ESPIPE) it uses the
// file position instead of the offset, as kernel AIO and io_uring do for such
// files, and sets *stream.
long ReadWrite(const Request& req, int flags, bool* stream = nullptr) noexcept;

// Does the whole of `req` here, blocking: bytes (perhaps short) or -errno, as
// the kernel's AIO would complete it. RWF_HIPRI (polled completion, which a
// thread does not do) is ignored, as kernel AIO ignores it. The I/O priority
// is the caller's business (the thread's own).
int64_t RunBlocking(const Request& req) noexcept;

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_CORE_BLOCKING_IO_H_
