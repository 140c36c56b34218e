// Where `aiokit bench` puts requests (place.h): the offsets fio's options ask
// for, as exact sequences where fio's rule is exact and as counts where it
// draws at random.

#include "place.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "job.h"

namespace aiokit::tool {
namespace {

constexpr uint64_t kK = 1024;

// The job after `options` (fio's names, without "--"), parsed as the tool
// does.
JobOptions Job(const std::vector<std::string>& options) {
  BenchPlan plan;
  JobOptions j;
  j.bs = 4 * kK;
  for (const std::string& o : options) {
    const size_t eq = o.find('=');
    const std::string key = o.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : o.substr(eq + 1);
    Status s = ApplyOption(plan, j, key, value, eq != std::string::npos, key);
    EXPECT_TRUE(s.ok()) << o << ": " << s.context();
  }
  plan.jobs.push_back(j);
  Status v = ValidateJob(j, plan);
  EXPECT_TRUE(v.ok()) << v.context();
  return j;
}

// The block numbers (offset / 4k) of the next `n` places of a writer.
std::vector<uint64_t> Blocks(const JobOptions& j, uint64_t region, size_t n,
                             uint64_t seed = 7) {
  Placer p(j, region, seed);
  std::vector<uint64_t> out;
  for (size_t i = 0; i < n; ++i) {
    const Place at = p.Next(false);
    EXPECT_LE(at.off + at.len, region);
    out.push_back(at.off / (4 * kK));
  }
  return out;
}

using V = std::vector<uint64_t>;

TEST(Place, SequentialWrapsAtTheRegionsEnd) {
  EXPECT_EQ(Blocks(Job({"rw=write"}), 16 * kK, 6), (V{0, 1, 2, 3, 0, 1}));
}

TEST(Place, OffsetModifierLeavesHoles) {
  // rw=write:8k: 8k after each 4k request, around again at the end (fio's
  // write_iolog shows 0 3 6 9 12 15 0 3 for this job).
  EXPECT_EQ(Blocks(Job({"rw=write:8k"}), 64 * kK, 8),
            (V{0, 3, 6, 9, 12, 15, 0, 3}));
}

TEST(Place, NegativeOffsetModifierGoesBackwards) {
  EXPECT_EQ(Blocks(Job({"rw=read:-8k"}), 16 * kK, 6), (V{3, 2, 1, 0, 3, 2}));
}

TEST(Place, RandomModifierKeepsRunsInOrder) {
  // rw=randwrite:4: a new random offset every 4 requests, the next blocks in
  // between.
  const V b = Blocks(Job({"rw=randwrite:4"}), 1024 * kK, 12);
  for (size_t i = 0; i < b.size(); ++i) {
    if (i % 4 != 0) {
      EXPECT_EQ(b[i], b[i - 1] + 1) << "request " << i;
    }
  }
  EXPECT_FALSE(b[4] == b[3] + 1 && b[8] == b[7] + 1)
      << "no new random offset every 4 requests";
}

TEST(Place, IdenticalSequencerRepeatsTheOffset) {
  const V b =
      Blocks(Job({"rw=randwrite:3", "rw_sequencer=identical"}), 1024 * kK, 9);
  for (size_t i = 0; i < b.size(); ++i) {
    if (i % 3 != 0) {
      EXPECT_EQ(b[i], b[i - 1]) << "request " << i;
    }
  }
}

TEST(Place, PercentageRandomZeroIsSequential) {
  EXPECT_EQ(Blocks(Job({"rw=randwrite", "percentage_random=0"}), 16 * kK, 5),
            (V{0, 1, 2, 3, 0}));
}

TEST(Place, PercentageRandomMixes) {
  // Half random: about half the requests continue from the last one.
  const V b =
      Blocks(Job({"rw=randwrite", "percentage_random=50"}), 4096 * kK, 2000);
  size_t in_order = 0;
  for (size_t i = 1; i < b.size(); ++i) in_order += b[i] == b[i - 1] + 1;
  EXPECT_GT(in_order, 800U);
  EXPECT_LT(in_order, 1200U);
}

TEST(Place, StridedZonesAsFioDoes) {
  // zonesize 8k in zones of 16k, 4k skipped between them: fio's write_iolog
  // for this job shows blocks 0 1 5 6 10 11 15 (the last zone ends with the
  // file), and with loops=2 the same again.
  const JobOptions j = Job({"rw=write", "zonemode=strided", "zonesize=8k",
                            "zonerange=16k", "zoneskip=4k"});
  EXPECT_EQ(Blocks(j, 64 * kK, 10), (V{0, 1, 5, 6, 10, 11, 15, 0, 1, 5}));
  Placer p(j, 64 * kK, 1);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(p.passes(), 0U) << "request " << i;
    (void)p.Next(false);
  }
  EXPECT_EQ(p.passes(), 1U);
}

TEST(Place, APassEndsWhereTheRegionEnds) {
  const JobOptions holes = Job({"rw=write:8k"});
  EXPECT_TRUE(holes.PassLimited());
  Placer p(holes, 64 * kK, 1);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(p.passes(), 0U) << "request " << i;
    (void)p.Next(false);
  }
  EXPECT_EQ(p.passes(), 1U);
  EXPECT_FALSE(holes.WantsMore(64 * kK, 24 * kK, 6, p.passes()));
  EXPECT_TRUE(Job({"rw=write:8k", "loops=2"})
                  .WantsMore(64 * kK, 24 * kK, 6, p.passes()));
  EXPECT_FALSE(Job({"rw=write:8k", "io_size=1m"}).PassLimited());
  EXPECT_FALSE(Job({"rw=randwrite:8"}).PassLimited());
}

TEST(Place, RandomInAZoneStaysInIt) {
  const V b = Blocks(Job({"rw=randwrite", "zonemode=strided", "zonesize=64k",
                          "zonerange=128k"}),
                     1024 * kK, 64);
  for (size_t i = 0; i < b.size(); ++i) {
    const uint64_t zone = i / 16;  // 16 requests of 4k in each zone
    EXPECT_GE(b[i], zone * 32) << "request " << i;
    EXPECT_LT(b[i], zone * 32 + 32) << "request " << i;
  }
}

TEST(Place, BlockAlignLimitsOffsets) {
  for (const uint64_t b :
       Blocks(Job({"rw=randwrite", "blockalign=16k"}), 256 * kK, 200)) {
    EXPECT_EQ(b % 4, 0U);
  }
}

TEST(Place, RandomMapCoversEveryBlockOncePerPass) {
  const V b = Blocks(Job({"rw=randwrite"}), 256 * kK, 64);
  EXPECT_EQ(std::set<uint64_t>(b.begin(), b.end()).size(), 64U);
}

TEST(Place, ZonedSendsSharesToTheirZones) {
  // 80% of requests to the first 10% of the region, 20% to the rest.
  const V b =
      Blocks(Job({"rw=randwrite", "random_distribution=zoned:80/10:20/90"}),
             4000 * kK, 10000);
  const auto first = static_cast<size_t>(
      std::count_if(b.begin(), b.end(), [](uint64_t x) { return x < 100; }));
  EXPECT_GT(first, 7600U);
  EXPECT_LT(first, 8400U);
}

TEST(Place, ZonedAbsAndPerDirection) {
  // Reads in the first 64k, writes in the next 64k.
  JobOptions j =
      Job({"rw=randrw", "random_distribution=zoned_abs:100/64k,0/64k:100/64k"});
  Placer p(j, 1024 * kK, 3);
  for (int i = 0; i < 500; ++i) {
    EXPECT_LT(p.Next(true).off, 64 * kK);
    const uint64_t w = p.Next(false).off;
    EXPECT_GE(w, 64 * kK);
    EXPECT_LT(w, 128 * kK);
  }
}

// Distinct blocks among 4096 requests on 4096 blocks: fewer for a more
// skewed distribution (fio's figures for the same jobs, from its
// write_iolog: zipf:1.2 722, zipf:0.8 1757, pareto:0.2 1279).
size_t Distinct(const std::string& dist) {
  const V b = Blocks(Job({"rw=randwrite", "random_distribution=" + dist}),
                     4096 * 4 * kK, 4096);
  return std::set<uint64_t>(b.begin(), b.end()).size();
}

TEST(Place, SkewedDistributionsTouchFewerBlocks) {
  const size_t uniform = Distinct("random");
  const size_t zipf12 = Distinct("zipf:1.2");
  const size_t zipf08 = Distinct("zipf:0.8");
  const size_t pareto = Distinct("pareto:0.2");
  const size_t normal = Distinct("normal:5");
  EXPECT_EQ(uniform, 4096U);  // the random map: every block once
  EXPECT_GT(zipf12, 550U);
  EXPECT_LT(zipf12, 900U);
  EXPECT_GT(zipf08, 1450U);
  EXPECT_LT(zipf08, 2050U);
  EXPECT_GT(pareto, 1000U);
  EXPECT_LT(pareto, 1550U);
  EXPECT_LT(normal, 1200U);  // most within 2 deviations: 20% of the blocks
}

TEST(Place, CentreMovesTheHottestBlock) {
  // normal with no deviation: every request on the centre's rank (scattered
  // to one block).
  const V b = Blocks(Job({"rw=randwrite", "random_distribution=normal:0:0.25"}),
                     1024 * kK, 50);
  EXPECT_EQ(std::set<uint64_t>(b.begin(), b.end()).size(), 1U);
}

TEST(Place, VariableSizesFitTheRegion) {
  JobOptions j =
      Job({"rw=randwrite", "bsrange=4k-64k", "random_distribution=zipf:1.1"});
  Placer p(j, 256 * kK, 5);
  for (int i = 0; i < 2000; ++i) {
    const Place at = p.Next(false);
    EXPECT_LE(at.off + at.len, 256 * kK);
    EXPECT_EQ(at.off % (4 * kK), 0U);
  }
}

TEST(Place, OptionsRefusedWithTheirRule) {
  BenchPlan plan;
  JobOptions j;
  const auto refused = [&](const char* key, const char* value) {
    JobOptions copy = j;
    Status s = ApplyOption(plan, copy, key, value, true, key);
    return s.ok() ? std::string() : s.context();
  };
  EXPECT_NE(refused("rw", "randread:x"), "");
  EXPECT_NE(refused("rw", "read:zz"), "");
  EXPECT_NE(refused("random_distribution", "zipf:1"), "");
  EXPECT_NE(refused("random_distribution", "pareto:1.5"), "");
  EXPECT_NE(refused("random_distribution", "zoned:50/10:40/20"), "");
  EXPECT_NE(refused("random_distribution", "zoned:50/60:50/60"), "");
  EXPECT_NE(refused("random_distribution", "gamma:3"), "");
  EXPECT_NE(refused("percentage_random", "50,50,50"), "");
  EXPECT_NE(refused("rw_sequencer", "backwards"), "");
  EXPECT_NE(refused("random_generator", "mt19937"), "");
  EXPECT_NE(refused("zonemode", "zbd").find("zoned block devices"),
            std::string::npos);
  JobOptions zoned = j;
  ASSERT_TRUE(
      ApplyOption(plan, zoned, "zonesize", "64k", true, "zonesize").ok());
  plan.jobs = {zoned};
  EXPECT_FALSE(ValidateJob(zoned, plan).ok()) << "zonesize without zonemode";
}

}  // namespace
}  // namespace aiokit::tool
