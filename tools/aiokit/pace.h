// When a clone may issue its next request, by fio's rules, for every clone
// driver: rate and rate_iops per direction (rate_process linear: an even
// schedule from the clone's start that catches up when behind; poisson:
// exponential gaps of the same mean), thinktime (after thinktime_blocks
// completions or issues, or thinktime_iotime of I/O; thinktime_spin of it
// busy), and rate_min / rate_iops_min (the job fails below them, averaged
// over rate_cycle).

#ifndef AIOKIT_TOOLS_AIOKIT_PACE_H_
#define AIOKIT_TOOLS_AIOKIT_PACE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "job.h"
#include "random.h"

namespace aiokit::tool {

using PaceClock = std::chrono::steady_clock;

// One clone's schedule. Not thread-safe: it belongs to its clone.
class Pacer {
 public:
  Pacer() = default;
  // For job `o`; poisson's gaps drawn from `seed`.
  // REQUIRES: `o` passed ValidateJob and outlives the Pacer.
  Pacer(const JobOptions& o, uint64_t seed);

  // Whether the job paces at all (drivers skip the clock otherwise).
  [[nodiscard]] bool active() const { return active_; }
  // Whether the driver must let every request in flight complete before it
  // waits for the schedule (fio's io_submit_mode=inline does; offload
  // does not).
  [[nodiscard]] bool quiesce() const { return quiesce_; }

  // The schedule starts at `start` (the clone's start).
  void Start(PaceClock::time_point start);

  // The next request's direction and the earliest time it may go. `want` is
  // the read/write mix's draw: it goes when due; when it is ahead of its rate
  // and the other direction of a mixed job is due, the other goes (fio's
  // rule); when both are ahead, the one due first. `at` is max() while the
  // request must wait for a completion (thinktime_blocks requests are out).
  struct Turn {
    bool read = true;
    PaceClock::time_point at;
  };
  [[nodiscard]] Turn Next(bool want_read, PaceClock::time_point now,
                          size_t in_flight) const;

  // A request of `len` bytes in direction `read` was issued at `now`.
  void Issued(bool read, uint64_t len, PaceClock::time_point now);
  // A request completed at `now`: counts toward thinktime_blocks and
  // thinktime_iotime, and for rate_min the `len` bytes moved (`measuring`:
  // after the ramp).
  void Completed(bool read, uint64_t len, PaceClock::time_point now,
                 bool measuring);
  // Spends thinktime_spin busy, if a think began; returns at once otherwise.
  void Spin();

  // rate_min, rate_iops_min: at the end of each rate_cycle, the job's rate
  // over it. On failure: the line saying which minimum was missed and by how
  // much ("" while every minimum is met).
  [[nodiscard]] std::string CheckMinimum(PaceClock::time_point now);

 private:
  void Think(PaceClock::time_point now);
  // The time the next request in direction d may go (rate only).
  [[nodiscard]] PaceClock::time_point Due(int d) const;

  const JobOptions* o_ = nullptr;
  bool active_ = false;
  bool quiesce_ = false;
  bool mixed_ = false;  // the job reads and writes
  Rng rng_{1};
  PaceClock::time_point start_;
  // Per direction (0 read, 1 write): the rate in bytes per second (from
  // rate, or rate_iops times the smallest block size), the bytes issued,
  // poisson's next time.
  double bps_[2] = {0, 0};
  double iops_[2] = {0, 0};
  uint64_t issued_bytes_[2] = {0, 0};
  PaceClock::time_point poisson_next_[2];
  // thinktime: requests counted toward the next think, when the think ends,
  // when its busy part ends, when the current stretch of I/O began.
  uint64_t think_count_ = 0;
  PaceClock::time_point think_until_, spin_until_, io_began_;
  bool spinning_ = false;
  // rate_min: the current cycle's start and what completed in it.
  PaceClock::time_point cycle_began_;
  bool cycle_started_ = false;
  uint64_t cycle_bytes_[2] = {0, 0};
  uint64_t cycle_ios_[2] = {0, 0};
};

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_PACE_H_
