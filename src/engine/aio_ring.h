// The kernel's AIO completion ring, as io_setup maps it into the process
// (fs/aio.c, struct aio_ring), and the user-space consumer that reads it
// without a system call.
//
// The context id that io_setup returns is the address of this ring. The
// producer (the kernel's aio_complete, or the threads engine's workers) writes
// an io_event at `tail`, then publishes the new tail; the consumer reads events
// from `head` up to `tail`, then publishes the new head, which the producer
// reads to know which slots it may reuse. One consumer at a time: the kernel's
// own io_getevents takes its ring_lock, and every aiokit caller of
// ConsumeAioRing holds its engine's reap lock.

#ifndef AIOKIT_SRC_ENGINE_AIO_RING_H_
#define AIOKIT_SRC_ENGINE_AIO_RING_H_

#include <linux/aio_abi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace aiokit::internal {

inline constexpr unsigned kAioRingMagic = 0xa10a10a1;
// No incompatible features have ever been defined; a ring that sets any is not
// ours to read.
inline constexpr unsigned kAioRingIncompatFeatures = 0;

// Layout of the kernel's struct aio_ring (not exported in any uapi header).
struct AioRing {
  unsigned id;    // the kernel's index of this context in the mm's table
  unsigned nr;    // number of io_event slots
  unsigned head;  // next slot the consumer reads; written by the consumer
  unsigned tail;  // next slot the producer writes; written by the producer
  unsigned magic;
  unsigned compat_features;
  unsigned incompat_features;
  unsigned header_length;  // sizeof(struct aio_ring)
  // struct io_event io_events[nr] follows.

  io_event* events() noexcept { return reinterpret_cast<io_event*>(this + 1); }
};
static_assert(sizeof(AioRing) == 32,
              "struct aio_ring is 32 bytes in every kernel");

// True when `ring` looks like a ring this code can consume: the magic is right,
// no incompatible features, the header is the size we know and the indices are
// in range.
inline bool AioRingUsable(const AioRing* ring) noexcept {
  return ring != nullptr && ring->magic == kAioRingMagic &&
         ring->incompat_features == kAioRingIncompatFeatures &&
         ring->header_length == sizeof(AioRing) && ring->nr != 0 &&
         ring->head < ring->nr && ring->tail < ring->nr;
}

// Calls on_event(const io_event&) for up to `max` events between head and tail,
// then publishes the new head. Returns how many events were consumed. REQUIRES:
// the caller is the ring's only consumer.
template <typename OnEvent>
inline size_t ConsumeAioRing(AioRing* ring, size_t max,
                             OnEvent&& on_event) noexcept {
  const unsigned nr = ring->nr;
  // Only consumers write head and we are the only consumer, so a relaxed load
  // sees our own last store.
  unsigned head =
      std::atomic_ref<unsigned>(ring->head).load(std::memory_order_relaxed);
  // Acquire pairs with the producer's publication of tail (the kernel's
  // smp_wmb() between writing the event and storing ring->tail in aio_complete;
  // a release store in the threads engine): every event before `tail` is fully
  // written when we read it.
  const unsigned tail =
      std::atomic_ref<unsigned>(ring->tail).load(std::memory_order_acquire);
  if (head >= nr || tail >= nr)
    return 0;  // not a state a sane producer leaves; read nothing
  io_event* events = ring->events();
  size_t n = 0;
  while (head != tail && n < max) {
    on_event(events[head]);
    if (++head == nr) head = 0;
    ++n;
  }
  if (n != 0) {
    // Release: our reads of the consumed slots happen before the producer can
    // see them free (it reads head when it refills its count of available
    // slots) and overwrite them.
    std::atomic_ref<unsigned>(ring->head)
        .store(head, std::memory_order_release);
  }
  return n;
}

// Events waiting between head and tail (a snapshot).
inline unsigned AioRingPending(const AioRing* ring) noexcept {
  const unsigned nr = ring->nr;
  // const_cast: atomic_ref needs a non-const object; the loads do not write.
  auto* r = const_cast<AioRing*>(ring);
  const unsigned head =
      std::atomic_ref<unsigned>(r->head).load(std::memory_order_relaxed);
  const unsigned tail =
      std::atomic_ref<unsigned>(r->tail).load(std::memory_order_acquire);
  return tail >= head ? tail - head : nr - head + tail;
}

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_AIO_RING_H_
