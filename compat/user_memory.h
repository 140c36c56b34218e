// Reading and writing memory whose address came from the program, without
// faulting: the kernel answers a bad pointer with EFAULT, and so must the
// drop-in, where a plain load would end the program with SIGSEGV.
//
// Once InstallFaultCatcher has run (each engine context's io_setup does it),
// a copy is a plain one inside a window that a SIGSEGV or SIGBUS handler of
// ours ends early (siglongjmp): no system call, so the hot path pays nothing;
// a fault outside a window goes on to the handler that was there before ours
// (or the default action). Before that (a process with only the kernel's
// contexts, whose calls pass through and whose pointers the kernel checks),
// and with AIOKIT_COMPAT_CHECK_POINTERS=0, copies are plain ones that cannot
// tell a bad pointer, as the system's libaio makes them.

#ifndef AIOKIT_COMPAT_USER_MEMORY_H_
#define AIOKIT_COMPAT_USER_MEMORY_H_

#include <sys/uio.h>

#include <cstddef>

namespace aiokit::compat {

// Installs the fault catcher, or installs it again over a handler the
// program put in its place since (each engine context's io_setup calls it);
// the handler found there gets the faults outside a window. A program that
// installs its own SIGSEGV handler after its last io_setup turns the windows
// off: a bad pointer then crashes, as with the system's libaio. One installed
// between two io_setups that hands the faults it does not handle to the
// handler it replaced (ours) loops, since ours hands them back to it. Thread
// safety: safe to call from any thread.
void InstallFaultCatcher() noexcept;

// Copies n bytes from the program's address `from` to `to`.
// On success: true. On failure (some byte of `from` is not readable): false,
// and `to` holds an unspecified prefix of the bytes. Thread safety: safe to
// call from any thread.
bool CopyFromUser(void* to, const void* from, size_t n) noexcept;

// Copies n bytes from `from` to the program's address `to`.
// On success: true. On failure (some byte of `to` is not writable): false,
// and an unspecified prefix was written.
bool CopyToUser(void* to, const void* from, size_t n) noexcept;

// Copies `count` regions of the program's memory (`from[i]`, each into
// `to[i]`, of the same length) and returns how many leading regions were
// copied whole: `count` when every one is readable.
// REQUIRES: to[i].iov_len == from[i].iov_len.
size_t CopyRegionsFromUser(const iovec* to, const iovec* from,
                           size_t count) noexcept;

}  // namespace aiokit::compat

#endif  // AIOKIT_COMPAT_USER_MEMORY_H_
