// `aiokit bench`'s report of a run: fio's normal text layout, or fio's JSON
// (with an "aiokit" object per job for what fio does not have); and the one
// error line a run ends with.

#ifndef AIOKIT_TOOLS_AIOKIT_REPORT_H_
#define AIOKIT_TOOLS_AIOKIT_REPORT_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "job.h"
#include "results.h"

namespace aiokit::tool {

using Json = nlohmann::ordered_json;

// One report entry: a clone, or a job's clones merged (group_reporting).
struct Entry {
  const JobOptions* job;
  CloneResult r;
  std::string shown;
  uint64_t size;
  unsigned clones = 1;
};

// The entries of a run: one per clone, or one per job with group_reporting.
std::vector<Entry> Entries(const BenchPlan& plan, const RunResult& res);

// Requests the run completed (reads, writes and syncs of every clone), which
// the CPU per I/O divides by.
uint64_t RunIos(const RunResult& res);

// One entry as fio's JSON job object. `run_ios` is RunIos(res).
// `bins`: clat's per-bucket counts in fio's buckets (fio's json+).
Json JobJson(const Entry& e, const RunResult& res, uint64_t run_ios,
             bool bins = false);

// fio's top-level JSON object: the version, the time, and `jobs`.
Json FioJson(Json jobs);

// The report of one run on `out`: fio's text layout, or fio's JSON with
// --output-format=json.
void PrintReport(const BenchPlan& plan, const RunResult& res,
                 std::ostream& out);

// A latency as the text report shows it ("850ns", "12.5us", "10.2ms").
std::string Ns(uint64_t ns);

// The first failure of a run, as the one error line; empty if it ran clean.
std::string Failure(const RunResult& res);

// Prints a usage error's line and returns the exit status for it.
int ExitUsage(std::ostream& err, const std::string& line);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_REPORT_H_
