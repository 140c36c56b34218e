// Memory for I/O buffers: aligned, zeroed, and, when large, placed on
// transparent huge pages where the kernel allows.

#ifndef AIOKIT_UTIL_IO_MEMORY_H_
#define AIOKIT_UTIL_IO_MEMORY_H_

#include <cstddef>

namespace aiokit::internal {

// Allocations of at least this many bytes are aligned to and rounded up to
// kHugePage and asked to be backed by transparent huge pages: a request's
// buffer then reaches the device as a few physically contiguous segments
// instead of one per 4 KiB page, which each layer below (pinning, DMA
// mapping, a virtual disk's host) pays for per segment.
inline constexpr size_t kHugePage = size_t{2} << 20;
inline constexpr size_t kHugePageFrom = size_t{1} << 20;

// On success: `size` (> 0) zeroed bytes aligned to `alignment` (a power of
// two, at least alignof(max_align_t)), to be released with std::free; when
// size >= kHugePageFrom, kHugePage-aligned with the rest of its last huge
// page allocated too (at most kHugePage - 1 bytes more). On failure
// (overflow, or no memory): nullptr. Whether huge pages back it is up to the
// kernel (THP "never", or no contiguous memory: 4 KiB pages, same contract).
// Thread safety: any thread.
void* AllocateIoMemory(size_t size, size_t alignment) noexcept;

}  // namespace aiokit::internal

#endif  // AIOKIT_UTIL_IO_MEMORY_H_
