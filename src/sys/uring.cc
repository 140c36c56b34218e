#include "sys/uring.h"

#include <cerrno>

namespace aiokit::sys {
namespace {

// Runs the register hook for `opcode`: 0 to proceed, or the -errno to return.
int RegisterFilter(unsigned opcode) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_uring_register != nullptr) [[unlikely]] {
    return h->io_uring_register(opcode);
  }
  return 0;
}

}  // namespace

int UringQueueInit(unsigned entries, struct io_uring* ring,
                   struct io_uring_params* params) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_uring_setup != nullptr) [[unlikely]] {
    if (int r = h->io_uring_setup(entries, params->flags); r < 0) return r;
  }
  // liburing returns -errno itself.
  const int r = io_uring_queue_init_params(entries, ring, params);
  if (r < 0) return r;
  if (h != nullptr && h->io_uring_features != nullptr) [[unlikely]] {
    params->features = h->io_uring_features(params->features);
    ring->features = params->features;
  }
  return 0;
}

int UringEnter(struct io_uring* ring, bool registered_ring, unsigned to_submit,
               unsigned min_complete, unsigned flags, void* arg,
               size_t argsz) noexcept {
  const FaultHooks* h = Hooks();
  if (h != nullptr && h->io_uring_enter != nullptr) [[unlikely]] {
    if (int r = h->io_uring_enter(&to_submit, min_complete, flags); r < 0) {
      return r;
    }
  }
  unsigned fd = static_cast<unsigned>(ring->ring_fd);
  if (registered_ring) {
    // io_uring_register_ring_fd stored the ring's index in enter_ring_fd.
    fd = static_cast<unsigned>(ring->enter_ring_fd);
    flags |= IORING_ENTER_REGISTERED_RING;
  }
  // io_uring_enter2 returns -errno (liburing's raw syscall wrapper).
  return io_uring_enter2(fd, to_submit, min_complete, flags,
                         static_cast<sigset_t*>(arg), argsz);
}

int UringRegisterBuffers(struct io_uring* ring, const struct iovec* iovecs,
                         unsigned n) noexcept {
  if (int r = RegisterFilter(IORING_REGISTER_BUFFERS); r < 0) return r;
  return io_uring_register_buffers(ring, iovecs, n);
}

int UringRegisterFiles(struct io_uring* ring, const int* fds,
                       unsigned n) noexcept {
  if (int r = RegisterFilter(IORING_REGISTER_FILES); r < 0) return r;
  return io_uring_register_files(ring, fds, n);
}

int UringRegisterEventfd(struct io_uring* ring, int fd) noexcept {
  if (int r = RegisterFilter(IORING_REGISTER_EVENTFD); r < 0) return r;
  return io_uring_register_eventfd(ring, fd);
}

int UringRegisterRingFd(struct io_uring* ring) noexcept {
  if (int r = RegisterFilter(IORING_REGISTER_RING_FDS); r < 0) return r;
  const int r = io_uring_register_ring_fd(ring);
  return r == 1 ? 0 : (r < 0 ? r : -EINVAL);
}

int UringRegisterSyncCancel(struct io_uring* ring,
                            struct io_uring_sync_cancel_reg* reg) noexcept {
  if (int r = RegisterFilter(IORING_REGISTER_SYNC_CANCEL); r < 0) return r;
  return io_uring_register_sync_cancel(ring, reg);
}

}  // namespace aiokit::sys
