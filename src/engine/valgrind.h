// What memcheck (valgrind) cannot see for itself: memory the kernel maps or
// writes on the side of kernel AIO, told through its client requests.
//
// Valgrind's io_setup wrapper maps a ring of the nr_events asked for, but the
// kernel's holds twice as many (at least 4 per CPU before doubling), rounded up
// to whole pages; and valgrind marks a read's buffer written only when its
// event comes back through io_getevents, never when it is reaped from the
// ring. Its io_destroy wrapper unmaps the ring with the kernel's size (it reads
// ring->nr), and so do we, just before.
//
// Without <valgrind/memcheck.h> at build time (AIOKIT_HAVE_VALGRIND 0) these
// compile to nothing; outside valgrind a client request is a few no-op
// instructions. Thread safety: any thread, no shared state.

#ifndef AIOKIT_SRC_ENGINE_VALGRIND_H_
#define AIOKIT_SRC_ENGINE_VALGRIND_H_

#include <linux/aio_abi.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "engine/aio_ring.h"

#if AIOKIT_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#endif

namespace aiokit::internal {

// The bytes of `ring` that ConsumeAioRing reads: the header and ring->nr
// events (the kernel sizes nr to fill the pages it mapped).
inline size_t AioRingBytes(const AioRing* ring) noexcept {
  return sizeof(AioRing) + size_t{ring->nr} * sizeof(io_event);
}

// After io_setup: the whole ring the kernel mapped at `ring` is addressable
// and defined, not only the part valgrind assumed. Does nothing for a ring
// whose layout is not the kernel's (AioRingUsable), which nobody reads.
inline void VgAioRingMapped(const AioRing* ring) noexcept {
#if AIOKIT_HAVE_VALGRIND
  if (AioRingUsable(ring)) {
    (void)VALGRIND_MAKE_MEM_DEFINED(ring, AioRingBytes(ring));
  }
#else
  (void)ring;
#endif
}

// Before io_destroy: the ring is about to be unmapped. Before, not after: once
// unmapped, another thread's io_setup or mmap may get the same addresses.
inline void VgAioRingUnmapping(const AioRing* ring) noexcept {
#if AIOKIT_HAVE_VALGRIND
  if (AioRingUsable(ring)) {
    (void)VALGRIND_MAKE_MEM_NOACCESS(ring, AioRingBytes(ring));
  }
#else
  (void)ring;
#endif
}

// A completion of `cb` with result `res`: a read's first `res` bytes were
// written by the kernel (what valgrind's io_getevents wrapper says, for events
// reaped from the ring too). REQUIRES: cb's buffers (and iovec array) are
// still the caller's, as until the request is handed back.
inline void VgAioCompleted(const iocb& cb, int64_t res) noexcept {
#if AIOKIT_HAVE_VALGRIND
  if (res <= 0 || (cb.aio_lio_opcode != IOCB_CMD_PREAD &&
                   cb.aio_lio_opcode != IOCB_CMD_PREADV)) {
    return;
  }
  if (RUNNING_ON_VALGRIND == 0) return;  // not worth walking the iovecs
  auto left = static_cast<uint64_t>(res);
  if (cb.aio_lio_opcode == IOCB_CMD_PREAD) {
    (void)VALGRIND_MAKE_MEM_DEFINED(cb.aio_buf, left);
    return;
  }
  const auto* iov = reinterpret_cast<const iovec*>(cb.aio_buf);
  for (uint64_t i = 0; i < cb.aio_nbytes && left != 0; ++i) {
    const uint64_t n = iov[i].iov_len < left ? iov[i].iov_len : left;
    (void)VALGRIND_MAKE_MEM_DEFINED(iov[i].iov_base, n);
    left -= n;
  }
#else
  (void)cb;
  (void)res;
#endif
}

// True when the process runs under valgrind.
inline bool RunningOnValgrind() noexcept {
#if AIOKIT_HAVE_VALGRIND
  return RUNNING_ON_VALGRIND != 0;
#else
  return false;
#endif
}

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_VALGRIND_H_
