// One run of `aiokit bench`: every job of a plan together, one thread per
// clone, started at once; the live progress line while they run; then their
// results and the process's CPU time over the measured phase.

#ifndef AIOKIT_TOOLS_AIOKIT_RUN_H_
#define AIOKIT_TOOLS_AIOKIT_RUN_H_

#include <iosfwd>
#include <variant>

#include "aiokit/status.h"
#include "job.h"
#include "results.h"

namespace aiokit::tool {

// What one run gives: what it measured (failed I/O and verify mismatches
// included), or why it did not start: a usage error (a bad option or
// combination that only the files or the engines revealed) or an engine this
// machine refuses. Files the run created are removed when it did not start.
using RunOutcome = std::variant<RunResult, Status, EngineRefused>;

// Runs every job of the plan together: validates them, opens their targets,
// starts the clones and, when `tty`, shows the progress line on `err` until
// they end (and clears it).
// On success: the RunResult, whose job_of points into `plan`.
[[nodiscard]] RunOutcome RunOnce(const BenchPlan& plan, std::ostream& err,
                                 bool tty);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_RUN_H_
