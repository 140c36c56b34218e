#include "util/io_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace aiokit::internal {

void* AllocateIoMemory(size_t size, size_t alignment) noexcept {
  const bool huge = size >= kHugePageFrom;
  if (huge) alignment = std::max(alignment, kHugePage);
  if (size > SIZE_MAX - (alignment - 1)) return nullptr;
  const size_t rounded = (size + alignment - 1) & ~(alignment - 1);
  void* p = std::aligned_alloc(alignment, rounded);
  if (p == nullptr) return nullptr;
  if (huge) {
    // Before the first touch, so that the zeroing below faults in huge
    // pages. Its failure is not checked: it is a hint (EINVAL where the
    // kernel has no THP), and the memory works the same on 4 KiB pages.
    (void)::madvise(p, rounded, MADV_HUGEPAGE);
  }
  std::memset(p, 0, rounded);
  return p;
}

}  // namespace aiokit::internal
