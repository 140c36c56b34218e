// Where a clone's requests go and how long each is, by fio's rules, in one
// place for every clone driver: block sizes (bs, bsrange, bssplit), sequential
// offsets (with rw's offset modifier: holes, or backwards), random ones (the
// random map, norandommap, random_distribution, percentage_random,
// blockalign, rw_sequencer) and zones (zonemode=strided).

#ifndef AIOKIT_TOOLS_AIOKIT_PLACE_H_
#define AIOKIT_TOOLS_AIOKIT_PLACE_H_

#include <cstdint>
#include <vector>

#include "job.h"
#include "random.h"

namespace aiokit::tool {

// A request's place: `off` bytes into the region, `len` bytes long.
struct Place {
  uint64_t off = 0;
  uint64_t len = 0;
};

// The offsets of one clone. Not thread-safe: it belongs to its clone.
class Placer {
 public:
  Placer() = default;
  // For job `o` on a region of `region` bytes, its draws seeded by `seed`.
  // REQUIRES: `o` passed ValidateJob; region >= o.MaxBs().
  Placer(const JobOptions& o, uint64_t region, uint64_t seed);

  // The next request of direction `read` (false: a write). On return, off +
  // len <= region and len is one of the job's block sizes.
  Place Next(bool read);

  // How many times a sequential job reached the region's end (the place after
  // the last one would start over): the passes it completed.
  [[nodiscard]] uint64_t passes() const { return passes_; }

 private:
  // The distribution's rank in [0, n) (0 the most popular).
  uint64_t Rank(uint64_t n, bool read);
  // A bijection of [0, n) that scatters ranks over the region, so that
  // popular blocks are not all together (as fio hashes them).
  uint64_t Scatter(uint64_t rank, uint64_t n) const;
  // The next offset after the last request, in the window [lo, hi), for a
  // request of `len` bytes (holes or backwards by rw's modifier).
  uint64_t Sequential(uint64_t len, uint64_t lo, uint64_t hi) const;
  // zonemode=strided: moves to the next zone when this one had its bytes.
  void NextZoneIfDone();

  enum class Dist : uint8_t {
    kUniform,
    kZipf,
    kPareto,
    kNormal,
    kZoned,
    kZonedAbs
  };

  const JobOptions* o_ = nullptr;
  uint64_t region_ = 0;
  Rng rng_{1};
  // o_->Random() and o_->distribution, asked once (they compare strings).
  bool random_ = false;
  Dist dist_ = Dist::kUniform;
  Permutation perm_;   // the random map: each block once per pass
  bool map_ = false;   // whether random offsets come from perm_
  uint64_t left_ = 1;  // requests until the next new offset (rw=rand*:N)
  bool started_ = false;
  uint64_t last_off_ = 0, last_end_ = 0;
  // zonemode=strided: the zone's size, the current one's start and the
  // bytes done in it.
  uint64_t zone_range_ = 0, zone_ = 0, zone_bytes_ = 0;
  uint64_t passes_ = 0;
  // zipf and pareto: the rank's offset (fio's centre, or random), zipf's
  // constants for n = zipf_n_.
  uint64_t rank_off_ = 0;
  uint64_t zipf_n_ = 0;
  double zetan_ = 0, zeta2_ = 0, alpha_ = 0, eta_ = 0;
  uint64_t scatter_key_ = 0;
};

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_PLACE_H_
