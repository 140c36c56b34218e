// `aiokit bench --compare` and `--sweep`: the job once per engine and/or once
// per value of the swept option, and one table of what each run measured
// (text, or JSON with every run's jobs, the data for scripts/plot-bench.py).

#ifndef AIOKIT_TOOLS_AIOKIT_TABLE_H_
#define AIOKIT_TOOLS_AIOKIT_TABLE_H_

#include <iosfwd>

#include "job.h"

namespace aiokit::tool {

// Runs the rows one after another and prints the table on `out`; errors (one
// line) and, when `tty`, which row is running on `err`. Every combination is
// checked before the first run. With --compare an engine this machine refuses
// is a row that says why; otherwise it ends the command, as a bad option does.
// Returns the exit status (bench.h): the first I/O failure or verify mismatch
// of any row makes it kExitIoError, after the whole table.
// REQUIRES: plan.compare, or a sweep (plan.sweep.option not empty).
int RunTable(const BenchPlan& plan, std::ostream& out, std::ostream& err,
             bool tty);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_TABLE_H_
