// What `aiokit bench` measured: per direction, per clone and per run; the
// data the clones fill in and the report reads. Plain values.

#ifndef AIOKIT_TOOLS_AIOKIT_RESULTS_H_
#define AIOKIT_TOOLS_AIOKIT_RESULTS_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/fault.h"
#include "histogram.h"
#include "iolog.h"
#include "job.h"
#include "steady.h"

namespace aiokit::tool {

// Mismatch lines kept per clone (all are counted).
inline constexpr size_t kMaxVerifyLines = 10;

// What one direction (read, write or sync) did: counts and latencies.
struct DirStats {
  uint64_t ios = 0;
  uint64_t bytes = 0;
  uint64_t short_ios = 0;
  LatencyHistogram slat;  // submission call's start to its return
  LatencyHistogram clat;  // from there to the completion being reaped
  LatencyHistogram lat;   // the two together
  // Adds another clone's (group_reporting).
  void Merge(const DirStats& o);
};

// What one clone did, as the report shows it.
struct CloneResult {
  std::string job;
  // steadystate: what detection found (its job's, with group_reporting).
  std::optional<SteadyStateResult> ss;
  unsigned clone = 0;
  std::string engine;
  std::vector<EngineRefusal> passed_over;
  Capabilities caps;
  EngineStats es;
  DirStats read, write, sync;
  std::map<int, uint64_t> errors;  // errno -> completions
  std::string first_error;
  uint64_t submit_calls = 0, submitted = 0, reap_calls = 0, reaped = 0;
  uint64_t verify_checked = 0, verify_failed = 0;
  uint64_t verify_rounds = 0;  // verify_backlog: read-backs while running
  std::vector<std::string> verify_lines;
  // --inject: the spec with its seed, what was injected, and requests reaped
  // while not in flight (must stay 0).
  std::string inject;
  FaultStats faults;
  uint64_t reaped_twice = 0;
  // Requests handed to the engine that had not come back when the clone
  // shut its engine down (0 unless the run broke off on an error).
  uint64_t unfinished = 0;
  // Measured: from the end of ramp_time to the last completion.
  double seconds = 0;
  // When the clone's group started and ended its run, in seconds after the
  // first group started (groups: stonewall).
  double group_began = 0, group_ended = 0;
  std::string cpus;    // the CPUs the clone's thread could run on ("0-1")
  std::string ioprio;  // the clone thread's I/O priority ("be/4")
  // The clone thread's NUMA memory policy as the kernel has it ("bind:0"),
  // when the job sets numa_mem_policy.
  std::string mempolicy;
  uint64_t prio_ios = 0;  // requests given cmdprio's priority
  IoLog log;              // fio's logs, when the job asks for them
  // Adds another clone of the same job (group_reporting).
  void Merge(const CloneResult& o);
};

// What one run measured: every clone, and the process around them.
struct RunResult {
  std::vector<CloneResult> clones;
  std::vector<const JobOptions*> job_of;  // per clone
  double usr = 0, sys = 0;                // process CPU seconds, measured
  double wall = 0;                        // seconds from go to the last end
  uint64_t ctx = 0;
  // The clock when the (last) group's clones started and the last one ended.
  std::chrono::steady_clock::time_point start, end;
  std::vector<std::string> shown;  // per clone: the target as printed
  std::vector<uint64_t> sizes;     // per clone: the region's bytes
};

// An engine this machine refuses: a row of --compare, a usage error (exit
// status 2) otherwise.
struct EngineRefused {
  std::string engine;  // as asked ("default": $AIOKIT_ENGINE, else auto)
  std::string reason;
  // The error line without --compare.
  [[nodiscard]] std::string Line() const {
    return "--ioengine=" + engine + ": " + reason;
  }
};

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_RESULTS_H_
