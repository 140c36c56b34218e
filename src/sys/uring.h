// The io_uring calls aiokit makes, through liburing, with the fault hooks of
// sys/syscalls.h in front of them. Only the io_uring engine and its tests
// include this header (it pulls in <liburing.h>).

#ifndef AIOKIT_SRC_SYS_URING_H_
#define AIOKIT_SRC_SYS_URING_H_

#include <liburing.h>

#include "sys/syscalls.h"

namespace aiokit::sys {

// io_uring_queue_init_params: 0 or -errno. On success params->features has
// passed through the io_uring_features hook.
int UringQueueInit(unsigned entries, struct io_uring* ring,
                   struct io_uring_params* params) noexcept;

// io_uring_enter2 on the ring (by its registered index when registered_ring):
// the number of SQEs consumed, or -errno. `arg`/`argsz` as for
// IORING_ENTER_EXT_ARG. Not retried on EINTR: the caller owns the deadline.
int UringEnter(struct io_uring* ring, bool registered_ring, unsigned to_submit,
               unsigned min_complete, unsigned flags, void* arg,
               size_t argsz) noexcept;

// io_uring_register_* wrappers: 0 (or a count) or -errno.
int UringRegisterBuffers(struct io_uring* ring, const struct iovec* iovecs,
                         unsigned n) noexcept;
int UringRegisterFiles(struct io_uring* ring, const int* fds,
                       unsigned n) noexcept;
int UringRegisterEventfd(struct io_uring* ring, int fd) noexcept;
int UringRegisterRingFd(struct io_uring* ring) noexcept;
int UringRegisterSyncCancel(struct io_uring* ring,
                            struct io_uring_sync_cancel_reg* reg) noexcept;

}  // namespace aiokit::sys

#endif  // AIOKIT_SRC_SYS_URING_H_
