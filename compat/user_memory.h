// Reading and writing memory whose address came from the program, without
// faulting: the kernel answers a bad pointer with EFAULT, and so must the
// drop-in, where a plain load would end the program with SIGSEGV.

#ifndef AIOKIT_COMPAT_USER_MEMORY_H_
#define AIOKIT_COMPAT_USER_MEMORY_H_

#include <sys/uio.h>

#include <cstddef>

namespace aiokit::compat {

// Copies n bytes from the program's address `from` to `to`.
// On success: true. On failure (some byte of `from` is not readable): false,
// and `to` holds an unspecified prefix of the bytes.
// Where process_vm_readv is refused here (a seccomp filter, an old kernel) it
// falls back to a plain copy, which cannot tell a bad pointer. Thread safety:
// safe to call from any thread.
bool CopyFromUser(void* to, const void* from, size_t n) noexcept;

// Copies n bytes from `from` to the program's address `to`.
// On success: true. On failure (some byte of `to` is not writable): false,
// and an unspecified prefix was written. Falls back as CopyFromUser does.
bool CopyToUser(void* to, const void* from, size_t n) noexcept;

// Copies `count` regions of the program's memory (`from[i]`, each into
// `to[i]`, of the same length) and returns how many leading regions were
// copied whole: `count` when every one is readable. Falls back as
// CopyFromUser does. REQUIRES: to[i].iov_len == from[i].iov_len.
size_t CopyRegionsFromUser(const iovec* to, const iovec* from,
                           size_t count) noexcept;

}  // namespace aiokit::compat

#endif  // AIOKIT_COMPAT_USER_MEMORY_H_
