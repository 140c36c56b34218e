// Heap allocations counted by replacing the global operator new and delete:
// include in exactly one translation unit of a test binary (the replacement
// functions are defined here, not declared). Counting is on while
// g_counting is true, from any thread.

#ifndef AIOKIT_TESTS_ALLOC_COUNTER_H_
#define AIOKIT_TESTS_ALLOC_COUNTER_H_

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace aiokit::testing {
inline std::atomic<bool> g_counting{false};
inline std::atomic<uint64_t> g_allocations{0};

inline void* CountedAllocate(size_t n, size_t align) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  if (n == 0) n = 1;
  void* p = align <= alignof(std::max_align_t)
                ? std::malloc(n)
                : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace aiokit::testing

// Replacement functions may not be inline: defined here for the one
// translation unit that includes this header.
// NOLINTBEGIN(misc-definitions-in-headers)
void* operator new(size_t n) {
  return ::aiokit::testing::CountedAllocate(n, 0);
}
void* operator new[](size_t n) {
  return ::aiokit::testing::CountedAllocate(n, 0);
}
void* operator new(size_t n, std::align_val_t a) {
  return ::aiokit::testing::CountedAllocate(n, static_cast<size_t>(a));
}
void* operator new[](size_t n, std::align_val_t a) {
  return ::aiokit::testing::CountedAllocate(n, static_cast<size_t>(a));
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  try {
    return ::aiokit::testing::CountedAllocate(n, 0);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  try {
    return ::aiokit::testing::CountedAllocate(n, 0);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, size_t, std::align_val_t) noexcept {
  std::free(p);
}
// NOLINTEND(misc-definitions-in-headers)

#endif  // AIOKIT_TESTS_ALLOC_COUNTER_H_
