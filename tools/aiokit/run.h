// One run of `aiokit bench`: the jobs of a plan, one thread per clone, each
// group of jobs started at once; the live progress line while they run; then
// their results and the process's CPU time over the measured phase.

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

// Runs the plan's jobs: validates them, then, group after group (a job with
// `stonewall` starts a group that waits for the jobs before it to end), opens
// the group's targets, starts its clones together and, when `tty`, shows the
// progress line on `err` until they end (and clears it).
// On success: the RunResult of every group, clones in job order, whose job_of
// points into `plan`; its CPU times and wall time add up the groups'. On
// failure: the first group that could not start says why; the groups before
// it ran, and nothing is reported.
[[nodiscard]] RunOutcome RunOnce(const BenchPlan& plan, std::ostream& err,
                                 bool tty);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_RUN_H_
