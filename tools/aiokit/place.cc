#include "place.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numbers>

namespace aiokit::tool {
namespace {

// fio sums zipf's zeta over at most this many terms (its ZIPF_MAX_GEN): the
// tail adds little, and the sum is made once per clone.
constexpr uint64_t kZetaTerms = 10'000'000;

// Uniform in [0, 1).
double Unit(Rng& rng) {
  return static_cast<double>(rng.Next() >> 11) * 0x1p-53;
}

}  // namespace

Placer::Placer(const JobOptions& o, uint64_t region, uint64_t seed)
    : o_(&o), region_(region), rng_(seed), random_(o.Random()) {
  dist_ = o.distribution == "zipf"        ? Dist::kZipf
          : o.distribution == "pareto"    ? Dist::kPareto
          : o.distribution == "normal"    ? Dist::kNormal
          : o.distribution == "zoned"     ? Dist::kZoned
          : o.distribution == "zoned_abs" ? Dist::kZonedAbs
                                          : Dist::kUniform;
  map_ = random_ && !o.norandommap && o.bs_min == 0 &&
         dist_ == Dist::kUniform && o.blockalign_read == 0 &&
         o.blockalign_write == 0 && !o.zone_strided;
  if (map_) perm_ = Permutation(region / o.bs, rng_);
  left_ = o.seq_nr;
  zone_range_ = o.zonerange != 0 ? o.zonerange : o.zonesize;
  scatter_key_ = rng_.Next();
  rank_off_ = rng_.Next();
  if (dist_ == Dist::kZipf) {
    const uint64_t n = (region - o.MinBs()) / o.MinBs() + 1;
    const double theta = o.dist_value;
    zipf_n_ = n;
    zetan_ = 0;
    for (uint64_t i = 1; i <= std::min(n, kZetaTerms); ++i) {
      zetan_ += std::pow(1.0 / static_cast<double>(i), theta);
    }
    zeta2_ = 1.0 + std::pow(0.5, theta);
    alpha_ = 1.0 / (1.0 - theta);
    eta_ = (1.0 - std::pow(2.0 / static_cast<double>(n), 1.0 - theta)) /
           (1.0 - zeta2_ / zetan_);
  }
}

uint64_t Placer::Rank(uint64_t n, bool read) {
  const JobOptions& o = *o_;
  if (dist_ == Dist::kZoned || dist_ == Dist::kZonedAbs) {
    // A zone by its share of requests, then a place in it at random.
    const auto& zones = read ? o.dist_zones_read : o.dist_zones_write;
    const auto pct = static_cast<unsigned>(rng_.Below(100));
    uint64_t start = 0;  // in places
    unsigned below = 0;
    for (const JobOptions::DistZone& z : zones) {
      const uint64_t places =
          dist_ == Dist::kZoned
              ? static_cast<uint64_t>(static_cast<unsigned __int128>(n) *
                                      z.size / 100)
              : z.size / o.MinBs();
      below += z.pct;
      if (pct < below) {
        const uint64_t from = std::min(start, n - 1);
        const uint64_t count =
            std::max<uint64_t>(1, std::min(places, n - from));
        return from + rng_.Below(count);
      }
      start += places;
    }
    return rng_.Below(n);
  }
  uint64_t v = 0;
  if (dist_ == Dist::kZipf) {
    // Gray et al.'s method, as fio draws it: rank 0 is the most popular.
    const double u = Unit(rng_);
    const double uz = u * zetan_;
    if (uz < 1.0) {
      v = 0;
    } else if (uz < zeta2_) {
      v = 1;
    } else {
      const double x = static_cast<double>(zipf_n_) *
                       std::pow(eta_ * u - eta_ + 1.0, alpha_);
      // Rounding can reach n (or, in theory, not be a number): the last.
      v = x >= 0 && x < static_cast<double>(n) ? static_cast<uint64_t>(x)
                                               : n - 1;
    }
  } else if (dist_ == Dist::kPareto) {
    // fio's power: log(h) / log(1 - h).
    const double h = o.dist_value;
    v = static_cast<uint64_t>(
        static_cast<double>(n - 1) *
        std::pow(Unit(rng_), std::log(h) / std::log(1.0 - h)));
  } else if (dist_ == Dist::kNormal) {
    // A deviation of dist_value percent of the places (Box-Muller), around
    // the centre (default: the middle).
    const double centre = o.dist_center >= 0 ? o.dist_center : 0.5;
    const double sd = o.dist_value / 100.0 * static_cast<double>(n);
    const double g = std::sqrt(-2.0 * std::log(1.0 - Unit(rng_))) *
                     std::cos(2.0 * std::numbers::pi * Unit(rng_));
    const double x = centre * static_cast<double>(n) + sd * g;
    const double wrapped =
        std::fmod(std::fmod(x, static_cast<double>(n)) + static_cast<double>(n),
                  static_cast<double>(n));
    return Scatter(std::min(static_cast<uint64_t>(wrapped), n - 1), n);
  } else {
    return rng_.Below(n);
  }
  // zipf and pareto: ranks shifted by the centre (fio: random by default).
  const uint64_t off =
      o.dist_center >= 0
          ? static_cast<uint64_t>(o.dist_center * static_cast<double>(n))
          : rank_off_;
  return Scatter((v % n + off % n) % n, n);
}

uint64_t Placer::Scatter(uint64_t rank, uint64_t n) const {
  // Bijections of [0, mask] (odd multiplies, a keyed xor, an xor-shift),
  // walked until the value falls in [0, n): a bijection of [0, n).
  const uint64_t mask = std::bit_ceil(std::max<uint64_t>(n, 2)) - 1;
  const unsigned shift =
      std::max(1U, static_cast<unsigned>(std::bit_width(mask)) / 2);
  uint64_t y = rank;
  do {
    y = ((y * 0x9E3779B97F4A7C15ULL) ^ scatter_key_) & mask;
    y ^= y >> shift;
    y = (y * 0xBF58476D1CE4E5B9ULL) & mask;
  } while (y >= n);
  return y;
}

uint64_t Placer::Sequential(uint64_t len, uint64_t lo, uint64_t hi) const {
  // A random job's runs between new offsets go forward without holes.
  const int64_t add = random_ ? 0 : o_->seq_add;
  const bool forward = static_cast<int64_t>(len) + add > 0;
  const auto start = static_cast<int64_t>(forward ? lo : hi - len);
  int64_t pos = start;
  if (started_ && last_end_ >= lo && last_end_ <= hi) {
    pos = static_cast<int64_t>(last_end_) + add;
  }
  if (pos < static_cast<int64_t>(lo) ||
      pos + static_cast<int64_t>(len) > static_cast<int64_t>(hi)) {
    pos = start;  // the end of the window: around again
  }
  return static_cast<uint64_t>(pos);
}

void Placer::NextZoneIfDone() {
  if (zone_bytes_ < o_->zonesize) return;
  zone_bytes_ = 0;
  zone_ += zone_range_ + o_->zoneskip;
  if (zone_ >= region_) zone_ = 0;
  started_ = false;  // a sequential job starts at the zone's start
}

Place Placer::Next(bool read) {
  const JobOptions& o = *o_;
  uint64_t len = o.bs;
  if (!o.bssplit_text.empty()) {
    len = o.SplitBs(read, static_cast<unsigned>(rng_.Below(100)));
  } else if (o.bs_min != 0 && o.bs_unaligned) {
    len = o.MinBs() + rng_.Below(o.MaxBs() - o.MinBs() + 1);
  } else if (o.bs_min != 0) {
    len = o.MinBs() * (1 + rng_.Below(o.MaxBs() / o.MinBs()));
  }
  uint64_t lo = 0, hi = region_;
  if (o.zone_strided) {
    NextZoneIfDone();
    lo = zone_;
    hi = std::min(region_, zone_ + zone_range_);
    if (hi - lo < len) lo = hi - len;  // the region's last, short zone
  }
  // rw=rand*:N: a new offset every N requests, rw_sequencer's between.
  bool fresh = true;
  if (random_ && o.seq_nr > 1) {
    fresh = !started_ || --left_ == 0;
    if (fresh) left_ = o.seq_nr;
  }
  // In order: a sequential job, a random one between new offsets, or (by
  // percentage_random) a new offset that continues in order.
  const unsigned pct =
      read ? o.percentage_random_read : o.percentage_random_write;
  const bool identical = random_ && !fresh && o.seq_identical;
  const bool in_order = !random_ || (!fresh && !o.seq_identical) ||
                        (fresh && pct < 100 && rng_.Below(100) >= pct);
  uint64_t off = 0;
  if (identical) {
    off = std::min(last_off_, hi - len);
  } else if (in_order) {
    off = Sequential(len, lo, hi);
  } else if (map_) {
    off = perm_.Next() * o.bs;
  } else {
    const uint64_t align = (read ? o.blockalign_read : o.blockalign_write) != 0
                               ? (read ? o.blockalign_read : o.blockalign_write)
                               : o.MinBs();
    if (dist_ == Dist::kUniform) {
      off = lo + rng_.Below((hi - lo - len) / align + 1) * align;
    } else {
      // Distributions span the region (not with zones); ranks are places of
      // the smallest block size, aligned down to blockalign.
      const uint64_t unit = o.MinBs();
      off = Rank((region_ - unit) / unit + 1, read) * unit;
      off -= off % align;
      if (off + len > region_) off = (region_ - len) / align * align;
    }
  }
  last_off_ = off;
  last_end_ = off + len;
  started_ = true;
  zone_bytes_ += len;
  if (!random_) {
    // Whether the next place starts over: out of the region at the next
    // step, or past the last zone. The next pass starts at the beginning.
    const auto next = static_cast<int64_t>(last_end_) + o.seq_add;
    const bool out = next < 0 || next + static_cast<int64_t>(len) >
                                     static_cast<int64_t>(region_);
    const bool last_zone = o.zone_strided && zone_bytes_ >= o.zonesize &&
                           zone_ + zone_range_ + o.zoneskip >= region_;
    if (out || last_zone) {
      ++passes_;
      if (o.zone_strided) {
        zone_ = 0;
        zone_bytes_ = 0;
        started_ = false;
      }
    }
  }
  return {off, len};
}

}  // namespace aiokit::tool
