// One clone of an `aiokit bench` job: a thread with an engine of its own that
// keeps --iodepth requests in flight on its target, measures them, checks
// what --verify wrote, and reports what it did.

#ifndef AIOKIT_TOOLS_AIOKIT_CLONE_H_
#define AIOKIT_TOOLS_AIOKIT_CLONE_H_

#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "aiokit/status.h"
#include "job.h"
#include "results.h"
#include "target.h"

namespace aiokit::tool {

using Clock = std::chrono::steady_clock;

// What the clones and the run share, under `mu`: each clone sets up (its
// engine, buffers and registrations) and counts itself `ready`; the run then
// sets `go` (or, when a clone failed, the clones leave on `abort`); each clone
// counts itself out of `running` when its measured phase ends.
struct RunShared {
  std::mutex mu;
  std::condition_variable cv;
  unsigned ready = 0;  // clones that set up (or failed to)
  bool go = false;     // start the clock
  bool abort = false;  // a clone could not set up: everyone leaves
  // Why the run cannot start (the first clone's reason): an engine refused, or
  // a usage error.
  std::optional<EngineRefused> refused;
  Status usage;
  Clock::time_point start;  // when the clones start
  unsigned running = 0;     // clones still in their measured phase
  // The process's CPU time and the clock when the last of them ends it.
  rusage ru_end{};
  Clock::time_point end;
  uint64_t inject_seed = 0;  // --inject without a seed: this run's
  // Per job name: its clones still in their measured phase (wait_for).
  std::map<std::string, unsigned> running_of;
  // A job with exitall ended: every clone stops issuing. Relaxed: a stop
  // request, publishing nothing (the results are read after join).
  std::atomic<bool> exit_all{false};
};

// Blocks a clone of `o` until its I/O may start: startdelay after the run's
// go and, with wait_for, until every clone of the job waited for ended its
// measured phase. Returns the time it starts (its runtime and ramp count from
// there).
Clock::time_point WaitToStart(const JobOptions& o, RunShared* shared);

// A clone of `o` ends its measured phase: counted out of `running` (the last
// takes the process's CPU time and the clock, and wakes the run's loop) and
// of its job's count (waking jobs that wait for it); with exitall, every
// clone is asked to stop.
void EndMeasured(const JobOptions& o, RunShared* shared);

// A clone's I/O so far, for the progress line. Relaxed: the counts are only
// shown, and nothing else is published through them.
struct Progress {
  std::atomic<uint64_t> ios{0};
  std::atomic<uint64_t> bytes{0};
  // Set by the run's loop when steadystate is attained: the clone stops
  // issuing. Relaxed, as exit_all.
  std::atomic<bool> stop{false};
};

// Whether a clone should stop issuing: a job with exitall ended, or its
// steadystate was attained.
inline bool StopAsked(const RunShared& shared, const Progress& progress) {
  return shared.exit_all.load(std::memory_order_relaxed) ||
         progress.stop.load(std::memory_order_relaxed);
}

// Runs clone `index` of job `o` on `target` (on the calling thread, which is
// the clone's): sets up, waits for the run's go, runs the job, verifies what
// it wrote, and returns what it did. An I/O error or a verify mismatch is in
// the result (first_error, verify_failed). A clone that cannot set up records
// why in `shared` (refused or usage) and sets abort; every clone then returns
// early.
// REQUIRES: `o`, `target`, `shared` and `progress` outlive the call.
CloneResult RunClone(const JobOptions& o, unsigned index, Target* target,
                     RunShared* shared, Progress* progress, uint64_t seed);
// The same, with --iodepth coroutines on a loop (--api=coro; coro_clone.cc).
CloneResult RunCoroClone(const JobOptions& o, unsigned index, Target* target,
                         RunShared* shared, Progress* progress, uint64_t seed);
// The same, with --iodepth of Asio's coroutines on an io_context (--api=asio;
// asio_clone.cc, built with standalone Asio only).
CloneResult RunAsioClone(const JobOptions& o, unsigned index, Target* target,
                         RunShared* shared, Progress* progress, uint64_t seed);
// The same, through the device layer (--api=device; device_clone.cc).
CloneResult RunDeviceClone(const JobOptions& o, unsigned index, Target* target,
                           RunShared* shared, Progress* progress,
                           uint64_t seed);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_CLONE_H_
