// fio's steadystate for `aiokit bench`: once a second after ss_ramp, a job's
// IOPS and bandwidth are sampled; when the last ss_dur seconds of one of them
// meet the criterion (every sample within a limit of their mean, or the least
// squares slope under a limit), the job stops, as fio's does.

#ifndef AIOKIT_TOOLS_AIOKIT_STEADY_H_
#define AIOKIT_TOOLS_AIOKIT_STEADY_H_

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "job.h"

namespace aiokit::tool {

// What a job's steady-state detection found (fio's JSON "steadystate").
struct SteadyStateResult {
  std::string ss;  // fio's spelling of the criterion: "iops:2.000000%"
  uint64_t duration_s = 0;
  bool attained = false;
  double criterion = 0;      // the last judged value (in % with a % limit)
  double max_deviation = 0;  // of the last window, from its mean
  double slope = 0;          // per second, of the last window
  double iops_mean = 0, bw_mean = 0;
  std::vector<uint64_t> iops, bw;  // the last window's samples (bw in B/s)
};

// The verdict on one window of samples, as fio's steadystate.c judges it.
// REQUIRES: samples is not empty.
struct SteadyVerdict {
  bool attained;
  double criterion, max_deviation, slope, mean;
};
SteadyVerdict JudgeSteadyState(const std::vector<double>& samples,
                               bool slope_metric, double limit, bool pct);

// One job's (or, without group_reporting, one clone's) detection.
class SteadyState {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts sampling `from` (the start of the run plus the job's startdelay,
  // ramp_time and ss_ramp). REQUIRES: o.ss_metric is set; `o` outlives this.
  SteadyState(const JobOptions& o, Clock::time_point from);

  // When the next sample is due.
  [[nodiscard]] Clock::time_point next() const { return next_; }
  // A sample of the unit's measured requests and bytes so far, at `now`
  // (at or after next()). Returns true once the criterion is met.
  bool Sample(Clock::time_point now, uint64_t ios, uint64_t bytes);

  [[nodiscard]] const SteadyStateResult& result() const { return r_; }

 private:
  const JobOptions& o_;
  Clock::time_point next_;
  bool started_ = false;
  Clock::time_point last_;
  uint64_t last_ios_ = 0, last_bytes_ = 0;
  std::deque<double> iops_, bw_;
  SteadyStateResult r_;
};

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_STEADY_H_
