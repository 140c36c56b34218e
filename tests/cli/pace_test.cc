// When `aiokit bench` issues requests (pace.h): fio's rate, rate_iops,
// rate_process, thinktime and rate_min, on a clock the test moves (no
// sleeping, no timing).

#include "pace.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "job.h"

namespace aiokit::tool {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using T = PaceClock::time_point;

JobOptions Job(const std::vector<std::string>& options) {
  BenchPlan plan;
  JobOptions j;
  j.bs = 4096;
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

const T kStart = T() + std::chrono::hours(1);

TEST(Pace, NothingSetIsNotPaced) {
  const JobOptions j = Job({"rw=randread"});
  EXPECT_FALSE(Pacer(j, 1).active());
}

TEST(Pace, LinearRateIopsSpacesEvenly) {
  const JobOptions j = Job({"rw=randread", "rate_iops=1000"});
  Pacer p(j, 1);
  ASSERT_TRUE(p.active());
  EXPECT_TRUE(p.quiesce());  // io_submit_mode=inline, fio's default
  p.Start(kStart);
  for (int i = 0; i < 10; ++i) {
    const Pacer::Turn t = p.Next(true, kStart, 0);
    EXPECT_TRUE(t.read);
    EXPECT_EQ(t.at, kStart + milliseconds(i)) << "request " << i;
    p.Issued(true, 4096, t.at);
  }
}

TEST(Pace, RateInBytesCountsBytes) {
  // 1 MiB/s: a 64k request moves the schedule 1/16 s.
  const JobOptions j = Job({"rw=read", "rate=1m", "bs=64k"});
  Pacer p(j, 1);
  p.Start(kStart);
  p.Issued(true, 65536, kStart);
  EXPECT_EQ(p.Next(true, kStart, 0).at, kStart + microseconds(62500));
}

TEST(Pace, BehindTheScheduleGoesAtOnce) {
  const JobOptions j = Job({"rw=randread", "rate_iops=1000"});
  Pacer p(j, 1);
  p.Start(kStart);
  const T late = kStart + milliseconds(50);
  for (int i = 0; i <= 50; ++i) {  // those due at 0, 1, ..., 50 ms
    const Pacer::Turn t = p.Next(true, late, 0);
    EXPECT_LE(t.at, late) << "request " << i << " should catch up";
    p.Issued(true, 4096, late);
  }
  EXPECT_GT(p.Next(true, late, 0).at, late);
}

TEST(Pace, MixedJobSwitchesToTheDirectionThatIsDue) {
  // Reads at 100/s, writes at 1000/s: a read drawn while reads are ahead
  // becomes a write that is due (fio's rate_ddir).
  const JobOptions j = Job({"rw=randrw", "rate_iops=100,1000"});
  Pacer p(j, 1);
  p.Start(kStart);
  p.Issued(true, 4096, kStart);
  const Pacer::Turn t = p.Next(true, kStart, 0);
  EXPECT_FALSE(t.read);
  EXPECT_EQ(t.at, kStart);
  p.Issued(false, 4096, kStart);
  // Both ahead: the one due first (writes at 1 ms, reads at 10 ms).
  const Pacer::Turn u = p.Next(true, kStart, 0);
  EXPECT_FALSE(u.read);
  EXPECT_EQ(u.at, kStart + milliseconds(1));
}

TEST(Pace, OnlyWritesCapped) {
  const JobOptions j = Job({"rw=randrw", "rate=,4k"});
  Pacer p(j, 1);
  p.Start(kStart);
  for (int i = 0; i < 5; ++i) p.Issued(true, 4096, kStart);
  EXPECT_EQ(p.Next(true, kStart, 0).at, kStart) << "reads are not capped";
  p.Issued(false, 4096, kStart);
  const Pacer::Turn t = p.Next(false, kStart, 0);
  EXPECT_TRUE(t.read) << "the capped write waits; an uncapped read goes";
}

TEST(Pace, PoissonGapsHaveTheMeanAndVary) {
  const JobOptions j =
      Job({"rw=randread", "rate_iops=1000", "rate_process=poisson"});
  Pacer p(j, 42);
  p.Start(kStart);
  T prev = kStart;
  double sum = 0, sum2 = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    p.Issued(true, 4096, prev);
    const T at = p.Next(true, kStart, 0).at;
    const double gap = std::chrono::duration<double>(at - prev).count();
    sum += gap;
    sum2 += gap * gap;
    prev = at;
  }
  const double mean = sum / n;
  const double sd = std::sqrt(sum2 / n - mean * mean);
  EXPECT_NEAR(mean, 0.001, 0.00005);  // 1 ms, within 5%
  EXPECT_NEAR(sd / mean, 1.0, 0.05);  // exponential: sd equals the mean
}

TEST(Pace, ThinktimeAfterEachCompletion) {
  const JobOptions j = Job({"rw=randread", "thinktime=500"});
  Pacer p(j, 1);
  p.Start(kStart);
  EXPECT_EQ(p.Next(true, kStart, 0).at, kStart);
  p.Issued(true, 4096, kStart);
  // One out: thinktime_blocks=1 allows no second before the think.
  EXPECT_EQ(p.Next(true, kStart, 1).at, T::max());
  const T done = kStart + microseconds(80);
  p.Completed(true, 4096, done, true);
  EXPECT_EQ(p.Next(true, done, 0).at, done + microseconds(500));
}

TEST(Pace, ThinktimeBlocksOnIssue) {
  const JobOptions j =
      Job({"rw=randread", "thinktime=1ms", "thinktime_blocks=3",
           "thinktime_blocks_type=issue"});
  Pacer p(j, 1);
  p.Start(kStart);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(p.Next(true, kStart, i).at, kStart) << "request " << i;
    p.Issued(true, 4096, kStart);
  }
  EXPECT_EQ(p.Next(true, kStart, 3).at, kStart + milliseconds(1));
}

TEST(Pace, ThinktimeIotime) {
  const JobOptions j = Job({"rw=randread", "thinktime=2ms",
                            "thinktime_blocks=1000000", "thinktime_iotime=1s"});
  Pacer p(j, 1);
  p.Start(kStart);
  p.Completed(true, 4096, kStart + milliseconds(999), true);
  EXPECT_LE(p.Next(true, kStart + milliseconds(999), 0).at,
            kStart + milliseconds(999));
  const T second = kStart + milliseconds(1000);
  p.Completed(true, 4096, second, true);
  EXPECT_EQ(p.Next(true, second, 0).at, second + milliseconds(2));
}

TEST(Pace, OffloadDoesNotQuiesce) {
  EXPECT_FALSE(
      Pacer(Job({"rate_iops=10", "io_submit_mode=offload"}), 1).quiesce());
}

TEST(Pace, RateMinFailsBelowOverACycle) {
  const JobOptions j = Job({"rw=randread", "rate_min=1m", "rate_cycle=500"});
  Pacer p(j, 1);
  p.Start(kStart);
  // 100 requests of 4k in the first 500 ms: 800 KiB/s, under 1 MiB/s.
  for (int i = 0; i < 100; ++i) {
    p.Completed(true, 4096, kStart + milliseconds(i), true);
  }
  EXPECT_EQ(p.CheckMinimum(kStart + milliseconds(400)), "");
  const std::string bad = p.CheckMinimum(kStart + milliseconds(500));
  EXPECT_NE(bad.find("rate_min=1048576 B/s (reads) not met"), std::string::npos)
      << bad;
  // The next cycle meets it: 200 requests in 500 ms.
  for (int i = 0; i < 200; ++i) {
    p.Completed(true, 4096, kStart + milliseconds(500 + i), true);
  }
  EXPECT_EQ(p.CheckMinimum(kStart + milliseconds(1000)), "");
}

TEST(Pace, RampIsNotChecked) {
  const JobOptions j = Job({"rw=randread", "rate_iops_min=1000"});
  Pacer p(j, 1);
  p.Start(kStart);
  p.Completed(true, 4096, kStart, false);
  EXPECT_EQ(p.CheckMinimum(kStart + std::chrono::seconds(5)), "");
}

TEST(Pace, RefusedWithTheirRule) {
  BenchPlan plan;
  JobOptions j;
  ASSERT_TRUE(ApplyOption(plan, j, "rate", "1m", true, "rate").ok());
  ASSERT_TRUE(ApplyOption(plan, j, "rate_min", "2m", true, "rate_min").ok());
  plan.jobs = {j};
  Status s = ValidateJob(j, plan);
  EXPECT_NE(s.context().find("above the rate cap"), std::string::npos)
      << s.context();
  JobOptions k;
  EXPECT_FALSE(ApplyOption(plan, k, "rate", "1m,2m,3m", true, "rate").ok());
  EXPECT_FALSE(
      ApplyOption(plan, k, "rate_process", "bursty", true, "rate_process")
          .ok());
  EXPECT_FALSE(
      ApplyOption(plan, k, "thinktime", "soon", true, "thinktime").ok());
  ASSERT_TRUE(ApplyOption(plan, k, "rate_iops", "10", true, "rate_iops").ok());
  ASSERT_TRUE(ApplyOption(plan, k, "api", "coro", true, "api").ok());
  plan.jobs = {k};
  // Pacing is one rule on every driver: the coroutine loop too.
  EXPECT_TRUE(ValidateJob(k, plan).ok()) << ValidateJob(k, plan).context();
}

}  // namespace
}  // namespace aiokit::tool
