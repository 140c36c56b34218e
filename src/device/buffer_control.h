// The shared state behind aiokit::Buffer handles: a reference count and what
// to do when it reaches zero (return a slot to its pool, free a heap block,
// drop a keepalive).

#ifndef AIOKIT_SRC_DEVICE_BUFFER_CONTROL_H_
#define AIOKIT_SRC_DEVICE_BUFFER_CONTROL_H_

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "aiokit/file.h"
#include "aiokit/status.h"

namespace aiokit::device_internal {

class BufferPool;

struct BufferControl {
  enum class Kind : uint8_t { kHeap, kWrapped, kPooled };

  std::atomic<uint32_t> refs{1};
  Kind kind = Kind::kHeap;
  int16_t index = -1;               // kPooled: the slot (and registered index)
  BufferPool* pool = nullptr;       // kPooled
  void* heap = nullptr;             // kHeap: freed with std::free
  std::shared_ptr<void> keepalive;  // kWrapped

  void Ref() noexcept {
    // Relaxed: a new handle is made from an existing one, which already keeps
    // the memory alive.
    refs.fetch_add(1, std::memory_order_relaxed);
  }
  // Drops one reference; the last one releases the memory.
  void Unref() noexcept;
};

// Buffers of one size carved from one region, each with its control block
// made once; a slot returns to the free list when its last handle goes. The
// pool frees itself once the device and every outstanding buffer let go of
// it, so a buffer may outlive its device.
class BufferPool {
 public:
  // On failure: ENOMEM, or kInvalidArgument for a count over 32767 (the
  // registered-buffer index is 16 bits).
  static Result<BufferPool*> Create(size_t count, size_t size,
                                    size_t alignment);
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A free slot with one reference, or null when none is free.
  BufferControl* Take() noexcept;
  char* data(int16_t index) noexcept {
    return region_.data() + static_cast<size_t>(index) * stride_;
  }
  [[nodiscard]] size_t buffer_size() const noexcept { return size_; }
  [[nodiscard]] std::span<const iovec> iovecs() const noexcept {
    return iovecs_;
  }
  // The device lets go; the pool is freed now or with its last buffer.
  void Release() noexcept { Unref(); }

 private:
  friend struct BufferControl;
  BufferPool() = default;
  ~BufferPool() = default;
  void Return(BufferControl* c) noexcept;
  void Unref() noexcept;

  AlignedBuffer region_;
  size_t size_ = 0;
  size_t stride_ = 0;
  std::vector<iovec> iovecs_;
  std::unique_ptr<BufferControl[]> controls_;
  std::mutex mu_;
  std::vector<int16_t> free_;  // guarded by mu_
  // One for the device, one per slot in use.
  std::atomic<uint64_t> refs_{1};
};

}  // namespace aiokit::device_internal

#endif  // AIOKIT_SRC_DEVICE_BUFFER_CONTROL_H_
