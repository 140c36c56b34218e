// `aiokit info`: which engines this kernel and process allow and why not, what
// io_uring offers, the AIO and locked-memory limits, and for a path whether
// O_DIRECT (and polled I/O) works there.

#ifndef AIOKIT_TOOLS_AIOKIT_INFO_H_
#define AIOKIT_TOOLS_AIOKIT_INFO_H_

#include <iosfwd>
#include <string>

namespace aiokit::tool {

struct InfoOptions {
  std::string filename;  // a file, block device or directory to probe
  std::string output_format = "normal";
};

// 0, or 2 for a bad option or a path that cannot be probed.
int RunInfo(const InfoOptions& options, std::ostream& out, std::ostream& err);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_INFO_H_
