#include "pace.h"

#include <algorithm>
#include <cmath>

namespace aiokit::tool {
namespace {

PaceClock::duration Seconds(double s) {
  return std::chrono::duration_cast<PaceClock::duration>(
      std::chrono::duration<double>(s));
}

}  // namespace

Pacer::Pacer(const JobOptions& o, uint64_t seed) : o_(&o), rng_(seed) {
  const auto unit = static_cast<double>(o.MinBs());
  for (int d = 0; d < 2; ++d) {
    // fio: rate_iops counts requests of the smallest block size.
    if (o.rate[d] != 0) {
      bps_[d] = static_cast<double>(o.rate[d]);
      iops_[d] = bps_[d] / unit;
    } else if (o.rate_iops[d] != 0) {
      iops_[d] = static_cast<double>(o.rate_iops[d]);
      bps_[d] = iops_[d] * unit;
    }
  }
  active_ = bps_[0] != 0 || bps_[1] != 0 || o.thinktime_us != 0;
  quiesce_ = active_ && !o.submit_offload;
  const unsigned pct = o.ReadPercent();
  mixed_ = pct != 0 && pct != 100;
}

void Pacer::Start(PaceClock::time_point start) {
  start_ = start;
  poisson_next_[0] = poisson_next_[1] = start;
  think_until_ = spin_until_ = io_began_ = start;
}

PaceClock::time_point Pacer::Due(int d) const {
  if (bps_[d] == 0) return PaceClock::time_point::min();
  if (o_->rate_poisson) return poisson_next_[d];
  // Linear: the schedule from the start; behind it, the request goes at once.
  return start_ + Seconds(static_cast<double>(issued_bytes_[d]) / bps_[d]);
}

Pacer::Turn Pacer::Next(bool want_read, PaceClock::time_point now,
                        size_t in_flight) const {
  const int d = want_read ? 0 : 1;
  Turn t{want_read, Due(d)};
  if (t.at > now && mixed_) {
    const PaceClock::time_point other = Due(1 - d);
    if (other < t.at) t = Turn{!want_read, other};
  }
  t.at = std::max(t.at, think_until_);
  // A think after thinktime_blocks completions: no more than that many
  // requests out before it (fio: it caps the depth).
  if (o_->thinktime_us != 0 && !o_->thinktime_on_issue &&
      in_flight + think_count_ >= o_->thinktime_blocks) {
    t.at = PaceClock::time_point::max();
  }
  return t;
}

void Pacer::Issued(bool read, uint64_t len, PaceClock::time_point now) {
  const int d = read ? 0 : 1;
  issued_bytes_[d] += len;
  if (o_->rate_poisson && iops_[d] != 0) {
    // Exponential gaps of mean 1 / iops: a Poisson process of arrivals.
    const double u = static_cast<double>(rng_.Next() >> 11) * 0x1p-53;
    poisson_next_[d] += Seconds(-std::log1p(-u) / iops_[d]);
  }
  if (o_->thinktime_us != 0 && o_->thinktime_on_issue &&
      ++think_count_ >= o_->thinktime_blocks) {
    Think(now);
  }
}

void Pacer::Completed(bool read, uint64_t len, PaceClock::time_point now,
                      bool measuring) {
  if (o_->thinktime_us != 0) {
    const bool blocks =
        !o_->thinktime_on_issue && ++think_count_ >= o_->thinktime_blocks;
    const bool iotime =
        o_->thinktime_iotime_us != 0 &&
        now - io_began_ >= std::chrono::microseconds(o_->thinktime_iotime_us);
    if (blocks || iotime) Think(now);
  }
  const int d = read ? 0 : 1;
  if (measuring &&
      (o_->rate_min[d] != 0 || o_->rate_iops_min[d] != 0 ||
       o_->rate_min[1 - d] != 0 || o_->rate_iops_min[1 - d] != 0)) {
    if (!cycle_started_) {
      cycle_started_ = true;
      cycle_began_ = now;
    }
    cycle_bytes_[d] += len;
    ++cycle_ios_[d];
  }
}

void Pacer::Think(PaceClock::time_point now) {
  think_count_ = 0;
  think_until_ = now + std::chrono::microseconds(o_->thinktime_us);
  spin_until_ = now + std::chrono::microseconds(
                          std::min(o_->thinktime_spin_us, o_->thinktime_us));
  spinning_ = o_->thinktime_spin_us != 0;
  io_began_ = think_until_;
  if (o_->rate_ignore_thinktime) {
    // The schedule moves on by the think: what it missed is skipped.
    const auto think = std::chrono::microseconds(o_->thinktime_us);
    start_ += think;
    poisson_next_[0] += think;
    poisson_next_[1] += think;
  }
}

void Pacer::Spin() {
  if (!spinning_) return;
  spinning_ = false;
  // thinktime_spin: the application "works" on the CPU; the rest of the
  // think is spent waiting.
  while (PaceClock::now() < spin_until_) {
  }
}

std::string Pacer::CheckMinimum(PaceClock::time_point now) {
  if (!cycle_started_) return "";
  const auto cycle = std::chrono::milliseconds(o_->rate_cycle_ms);
  if (now - cycle_began_ < cycle) return "";
  const double secs = std::chrono::duration<double>(now - cycle_began_).count();
  std::string bad;
  for (int d = 0; d < 2 && bad.empty(); ++d) {
    // fio checks the directions the job moves.
    if (d == 0 ? !o_->Reads() : !o_->Writes()) continue;
    const char* dir = d == 0 ? "reads" : "writes";
    const auto bps =
        static_cast<uint64_t>(static_cast<double>(cycle_bytes_[d]) / secs);
    const auto iops =
        static_cast<uint64_t>(static_cast<double>(cycle_ios_[d]) / secs);
    if (o_->rate_min[d] != 0 && bps < o_->rate_min[d]) {
      bad = "rate_min=" + std::to_string(o_->rate_min[d]) + " B/s (" + dir +
            ") not met: " + std::to_string(bps) + " B/s over " +
            std::to_string(static_cast<uint64_t>(secs * 1000)) + " ms";
    } else if (o_->rate_iops_min[d] != 0 && iops < o_->rate_iops_min[d]) {
      bad = "rate_iops_min=" + std::to_string(o_->rate_iops_min[d]) + " (" +
            dir + ") not met: " + std::to_string(iops) + " IOPS over " +
            std::to_string(static_cast<uint64_t>(secs * 1000)) + " ms";
    }
  }
  cycle_began_ = now;
  cycle_bytes_[0] = cycle_bytes_[1] = 0;
  cycle_ios_[0] = cycle_ios_[1] = 0;
  return bad;
}

}  // namespace aiokit::tool
