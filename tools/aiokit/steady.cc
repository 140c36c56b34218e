#include "steady.h"

#include <cmath>
#include <cstdio>

namespace aiokit::tool {

SteadyVerdict JudgeSteadyState(const std::vector<double>& samples,
                               bool slope_metric, double limit, bool pct) {
  const auto n = static_cast<double>(samples.size());
  double sum = 0;
  for (double v : samples) sum += v;
  const double mean = sum / n;
  double max_dev = 0;
  for (double v : samples) max_dev = std::max(max_dev, std::fabs(v - mean));
  // Least squares over x = 0, 1, ... (one sample a second).
  const double xmean = (n - 1) / 2;
  double sxy = 0, sxx = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    const double dx = static_cast<double>(i) - xmean;
    sxy += dx * (samples[i] - mean);
    sxx += dx * dx;
  }
  const double slope = sxx > 0 ? sxy / sxx : 0;
  const double raw = slope_metric ? std::fabs(slope) : max_dev;
  const double criterion =
      pct ? (mean > 0 ? 100.0 * raw / mean : INFINITY) : raw;
  return {criterion <= limit, criterion, max_dev, slope, mean};
}

SteadyState::SteadyState(const JobOptions& o, Clock::time_point from)
    : o_(o), next_(from) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s:%f%s", o.ss_metric.c_str(), o.ss_limit,
                o.ss_pct ? "%" : "");
  r_.ss = buf;
  r_.duration_s = o.ss_dur_us / 1'000'000;
}

bool SteadyState::Sample(Clock::time_point now, uint64_t ios, uint64_t bytes) {
  next_ = now + std::chrono::seconds(1);
  if (!started_) {
    started_ = true;
    last_ = now;
    last_ios_ = ios;
    last_bytes_ = bytes;
    return false;
  }
  const double dt = std::chrono::duration<double>(now - last_).count();
  if (dt <= 0) return false;
  // Counts go back at the end of a ramp (measuring restarts): a new base.
  if (ios < last_ios_ || bytes < last_bytes_) {
    last_ = now;
    last_ios_ = ios;
    last_bytes_ = bytes;
    return false;
  }
  iops_.push_back(std::round(static_cast<double>(ios - last_ios_) / dt));
  bw_.push_back(std::round(static_cast<double>(bytes - last_bytes_) / dt));
  last_ = now;
  last_ios_ = ios;
  last_bytes_ = bytes;
  const size_t want = r_.duration_s;
  while (iops_.size() > want) {
    iops_.pop_front();
    bw_.pop_front();
  }
  r_.iops.assign(iops_.begin(), iops_.end());
  r_.bw.assign(bw_.begin(), bw_.end());
  double is = 0, bs = 0;
  for (double v : iops_) is += v;
  for (double v : bw_) bs += v;
  r_.iops_mean = is / static_cast<double>(iops_.size());
  r_.bw_mean = bs / static_cast<double>(bw_.size());
  if (iops_.size() < want) return false;
  const bool iops = o_.ss_metric.rfind("iops", 0) == 0;
  const bool slope = o_.ss_metric.find("_slope") != std::string::npos;
  const std::vector<double> window(iops ? iops_.begin() : bw_.begin(),
                                   iops ? iops_.end() : bw_.end());
  const SteadyVerdict v =
      JudgeSteadyState(window, slope, o_.ss_limit, o_.ss_pct);
  r_.criterion = v.criterion;
  r_.max_deviation = v.max_deviation;
  r_.slope = v.slope;
  r_.attained = v.attained;
  return v.attained;
}

}  // namespace aiokit::tool
