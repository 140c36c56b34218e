// Small string helpers for messages: errno names, hex addresses, flag lists,
// sizes.

#ifndef AIOKIT_SRC_UTIL_STRINGS_H_
#define AIOKIT_SRC_UTIL_STRINGS_H_

#include <cstdint>
#include <string>

namespace aiokit::util {

// "EINVAL (Invalid argument)" for a positive errno.
std::string ErrnoText(int err);
// "0x7f12a000".
std::string Hex(uint64_t v);
// The O_* access mode and the flags that matter for I/O, e.g.
// "O_RDWR|O_DIRECT|O_CREAT".
std::string OpenFlagsText(int flags);

}  // namespace aiokit::util

#endif  // AIOKIT_SRC_UTIL_STRINGS_H_
