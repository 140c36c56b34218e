// `aiokit bench`: fio-style jobs on aiokit's engines, reporting what fio
// reports (IOPS, bandwidth, latency percentiles, CPU) in fio's text or JSON
// layout, plus what fio does not: every engine side by side (--compare) and
// one run per value of an option (--sweep).

#ifndef AIOKIT_TOOLS_AIOKIT_BENCH_H_
#define AIOKIT_TOOLS_AIOKIT_BENCH_H_

#include <iosfwd>

#include "job.h"

namespace aiokit::tool {

// Exit status of `aiokit bench`.
inline constexpr int kExitOk = 0;
// An I/O failed or a block did not verify.
inline constexpr int kExitIoError = 1;
// A bad option or combination; nothing was left behind.
inline constexpr int kExitUsage = 2;

// Runs the plan; prints the report on `out`, errors (one line each) and the
// live progress line (when `err` is a terminal) on `err`. Returns the exit
// status.
int RunBench(const BenchPlan& plan, std::ostream& out, std::ostream& err,
             bool err_is_tty);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_BENCH_H_
