#include "util/strings.h"

#include <fcntl.h>

#include <cstdio>
#include <cstring>

namespace aiokit::util {

std::string ErrnoText(int err) {
  // strerrorname_np / strerrordesc_np (glibc 2.32) are thread-safe, unlike
  // strerror.
  const char* name = strerrorname_np(err);
  const char* desc = strerrordesc_np(err);
  std::string out = name != nullptr ? name : "errno " + std::to_string(err);
  if (desc != nullptr) {
    out += " (";
    out += desc;
    out += ")";
  }
  return out;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string OpenFlagsText(int flags) {
  std::string out;
  switch (flags & O_ACCMODE) {
    case O_RDONLY:
      out = "O_RDONLY";
      break;
    case O_WRONLY:
      out = "O_WRONLY";
      break;
    default:
      out = "O_RDWR";
      break;
  }
  struct Named {
    int bit;
    const char* name;
  };
  static constexpr Named kFlags[] = {
      {O_DIRECT, "O_DIRECT"},    {O_CREAT, "O_CREAT"},   {O_TRUNC, "O_TRUNC"},
      {O_EXCL, "O_EXCL"},        {O_APPEND, "O_APPEND"}, {O_DSYNC, "O_DSYNC"},
      {O_NONBLOCK, "O_NONBLOCK"}};
  for (const Named& f : kFlags) {
    if ((flags & f.bit) == f.bit) {
      out += "|";
      out += f.name;
    }
  }
  // O_SYNC contains O_DSYNC's bit; name it when the whole of it is set.
  if ((flags & O_SYNC) == O_SYNC) out += "|O_SYNC";
  return out;
}

}  // namespace aiokit::util
