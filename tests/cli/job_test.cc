// `aiokit bench` options and job files, and the verify block format.

#include "job.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "verify.h"

namespace aiokit::tool {
namespace {

// The parse's usage line, or "(accepted)".
std::string UsageLine(const std::vector<std::string>& args) {
  Result<BenchPlan> p = ParseBenchArgs(args);
  return p.ok() ? "(accepted)" : p.status().context();
}

// The usage line of the parse or the first job that does not validate, or
// "(accepted)".
std::string ValidateLine(const std::vector<std::string>& args) {
  Result<BenchPlan> p = ParseBenchArgs(args);
  if (!p.ok()) return "parse: " + p.status().context();
  for (const JobOptions& j : p->jobs) {
    if (Status bad = ValidateJob(j, *p); !bad.ok()) return bad.context();
  }
  return "(accepted)";
}

// The plan of arguments that parse.
BenchPlan Parsed(const std::vector<std::string>& args) {
  Result<BenchPlan> p = ParseBenchArgs(args);
  EXPECT_TRUE(p.ok()) << p.status().context();
  return p.ok() ? std::move(*p) : BenchPlan{};
}

TEST(BenchArgsTest, FioNamesValuesAndFlags) {
  BenchPlan p = Parsed({"--rw=randrw", "--rwmixwrite=30", "--bs", "8k",
                        "--iodepth=4", "--time_based", "--runtime=2s",
                        "--ioengine=libaio", "--buffered=1", "--fsync=8",
                        "--offset=1m", "--ramp_time=100ms", "--verify=xxh3",
                        "--iodepth_batch=2", "--iodepth_batch_complete=3"});
  ASSERT_EQ(p.jobs.size(), 1U);
  const JobOptions& j = p.jobs[0];
  EXPECT_EQ(j.rw, "randrw");
  EXPECT_EQ(j.rwmixread, 70U);
  EXPECT_EQ(j.ReadPercent(), 70U);
  EXPECT_EQ(j.bs, 8192U);
  EXPECT_EQ(j.iodepth, 4U);
  EXPECT_TRUE(j.time_based);
  EXPECT_EQ(j.runtime_us, 2000000U);
  EXPECT_EQ(j.engine, "linux-aio");
  EXPECT_EQ(j.direct, 0);
  EXPECT_EQ(j.fsync, 8U);
  EXPECT_EQ(j.offset, 1U << 20);
  EXPECT_EQ(j.ramp_time_us, 100000U);
  EXPECT_EQ(j.verify.name, "xxh3");
  EXPECT_EQ(j.iodepth_batch_submit, 2U);
  EXPECT_EQ(j.iodepth_batch_complete_min, 3U);
  EXPECT_FALSE(Parsed({"--time_based=0"}).jobs.at(0).time_based);
}

// fio's continue_on_error: the kinds of failed request the job goes on past.
TEST(BenchArgsTest, ContinueOnErrorNamesTheKindsOfErrorAJobGoesOnPast) {
  const auto kinds = [](const std::string& v) {
    return Parsed({"--continue_on_error=" + v}).jobs.at(0).continue_on_error;
  };
  EXPECT_EQ(Parsed({}).jobs.at(0).continue_on_error, 0U);
  EXPECT_EQ(kinds("none"), 0U);
  EXPECT_EQ(kinds("verify"), 0U);  // verify failures never stop a job here
  EXPECT_EQ(kinds("read"), kContinueRead);
  EXPECT_EQ(kinds("write"), kContinueWrite);
  EXPECT_EQ(kinds("io"), kContinueRead | kContinueWrite);
  EXPECT_EQ(kinds("all"), kContinueRead | kContinueWrite);
  EXPECT_EQ(kinds("1"), kContinueRead | kContinueWrite);
  EXPECT_EQ(UsageLine({"--continue_on_error=sometimes"}),
            "--continue_on_error=sometimes: none, read, write, io, verify or "
            "all");
  EXPECT_EQ(ValidateLine({"--continue_on_error=io", "--api=coro"}),
            "--continue_on_error: not with --api=coro (it measures plain "
            "reads and writes)");
}

TEST(BenchArgsTest, EachNameStartsAJobAndGlobalsComeFirst) {
  BenchPlan p =
      Parsed({"--bs=8k", "--name=a", "--rw=write", "--name=b", "--bs=16k"});
  ASSERT_EQ(p.jobs.size(), 2U);
  EXPECT_EQ(p.jobs[0].name, "a");
  EXPECT_EQ(p.jobs[0].rw, "write");
  EXPECT_EQ(p.jobs[0].bs, 8192U);
  EXPECT_EQ(p.jobs[1].name, "b");
  EXPECT_EQ(p.jobs[1].rw, "randread");
  EXPECT_EQ(p.jobs[1].bs, 16384U);
}

TEST(BenchArgsTest, BadInputNamesTheOptionAndTheRule) {
  EXPECT_EQ(UsageLine({"--no_such_option"}),
            "--no_such_option: not an option aiokit bench knows (aiokit bench "
            "--help lists them)");
  EXPECT_EQ(UsageLine({"--rw=trim"}),
            "--rw=trim: unknown; expected read, write, randread, randwrite, "
            "rw or randrw (then :N, fio's offset modifier)");
  EXPECT_EQ(UsageLine({"--rwmixread=101"}),
            "--rwmixread=101: must be 0 to 100");
  EXPECT_EQ(UsageLine({"--bs=4x"}),
            "--bs=4x: not a size (examples: 4096, 4k, 1m, 2g)");
  EXPECT_EQ(UsageLine({"--bsrange=16k-4k"}),
            "--bsrange=16k-4k: MIN must be at least 1 byte and at most MAX");
  EXPECT_EQ(UsageLine({"--iodepth"}), "--iodepth: needs a value (N)");
  EXPECT_EQ(UsageLine({"--time_based=yes"}),
            "--time_based=yes: a flag takes 1 or 0 (or nothing)");
  EXPECT_EQ(UsageLine({"--ioengine=mmap"}),
            "--ioengine=mmap: unknown engine; expected auto, linux-aio (fio: "
            "libaio), io_uring, threads (fio: posixaio) or sync (fio: sync, "
            "psync, pvsync, pvsync2)");
  EXPECT_EQ(UsageLine({"--ioengine=psync"}), "(accepted)");
  EXPECT_EQ(UsageLine({"--sweep=size=1m,2m"}),
            "--sweep=size=1m,2m: only iodepth, bs or numjobs can be swept");
  EXPECT_EQ(UsageLine({"--sweep=iodepth=1,0"}),
            "--sweep (iodepth)=0: must be 1 to 65536");
  EXPECT_EQ(UsageLine({"-x"}), "-x: options are written --name=value");
  EXPECT_NE(UsageLine({"/nonexistent/job.fio"}).find("cannot read"),
            std::string::npos);
}

TEST(BenchArgsTest, UsageErrorsAreInvalidArgumentWithTheLineAsContext) {
  Result<BenchPlan> p = ParseBenchArgs({"--iodepth=0"});
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().Is(Errc::kInvalidArgument));
  EXPECT_EQ(p.status().context(), "--iodepth=0: must be 1 to 65536");
}

TEST(BenchArgsTest, CombinationsAreRefusedBeforeAnythingRuns) {
  const auto line = ValidateLine;
  EXPECT_EQ(line({"--time_based"}), "--time_based: needs --runtime");
  EXPECT_EQ(line({"--iodepth=4", "--iodepth_batch_submit=8"}),
            "--iodepth_batch_submit=8: larger than --iodepth=4");
  EXPECT_EQ(line({"--iodepth_batch_complete_min=8",
                  "--iodepth_batch_complete_max=4"}),
            "--iodepth_batch_complete_min=8: larger than "
            "--iodepth_batch_complete_max (4)");
  EXPECT_EQ(line({"--fsync=4"}), "--fsync=4: --rw=randread does not write");
  EXPECT_EQ(
      line({"--verify=xxh3", "--bsrange=4k-8k"}),
      "--verify=xxh3: not with --bsrange (every block must have one size)");
  EXPECT_EQ(line({"--bsrange=4k-10k"}),
            "--bsrange=4096-10240: MAX must be a multiple of MIN");
  EXPECT_EQ(line({"--size=4k", "--bs=8k"}),
            "--size=4096: smaller than the block size (8192)");
  EXPECT_EQ(line({"--compare", "--engine=threads"}),
            "--compare: runs every engine; drop --engine=threads");
  EXPECT_EQ(
      line({"--verify=xxh3", "--rw=randwrite", "--numjobs=2",
            "--filename=/tmp/x"}),
      "--verify=xxh3 with --numjobs=2 on one --filename: the clones would "
      "overwrite each other's blocks (unless --offset_increment is at "
      "least --size)");
  EXPECT_EQ(line({"--verify=xxh3", "--rw=randwrite", "--numjobs=2",
                  "--filename=/tmp/x", "--size=1m", "--offset_increment=1m"}),
            "(accepted)");
  EXPECT_EQ(
      line({"--verify=xxh3", "--rw=randwrite", "--numjobs=2",
            "--filename=/tmp/x", "--size=1m", "--offset_increment=4k"}),
      "--verify=xxh3 with --numjobs=2 on one --filename: the clones would "
      "overwrite each other's blocks (unless --offset_increment is at "
      "least --size)");
  EXPECT_EQ(line({"--numjobs=3", "--size=1m",
                  "--offset_increment=4611686018427387904"}),
            "--offset_increment=4611686018427387904: with 3 clones, past the "
            "largest file offset (8 EiB)");
  EXPECT_EQ(line({"--rw=randrw", "--bsrange=4k-16k", "--fsync=2"}),
            "(accepted)");
}

TEST(BenchArgsTest, CpuAffinityInFiosThreeForms) {
  using V = std::vector<unsigned>;
  EXPECT_EQ(Parsed({"--cpus_allowed=0,5,8-9"}).jobs[0].cpus, V({0, 5, 8, 9}));
  EXPECT_EQ(Parsed({"--cpumask=34"}).jobs[0].cpus, V({1, 5}));
  EXPECT_EQ(Parsed({"--cpumask=0x22"}).jobs[0].cpus, V({1, 5}));
  const BenchPlan split =
      Parsed({"--cpus_allowed=0", "--cpus_allowed_policy=split"});
  EXPECT_TRUE(split.jobs[0].cpus_split);
  EXPECT_EQ(split.jobs[0].cpus_option, "--cpus_allowed=0");
  EXPECT_EQ(UsageLine({"--cpus_allowed=1-"}),
            "--cpus_allowed=1-: not a CPU list (examples: 0, 0,5, 8-15)");
  EXPECT_EQ(UsageLine({"--cpumask=0xg"}),
            "--cpumask=0xg: not a CPU mask (a number with a bit per CPU)");
  EXPECT_EQ(UsageLine({"--cpus_allowed_policy=each"}),
            "--cpus_allowed_policy=each: expected shared or split");
  EXPECT_EQ(
      ValidateLine({"--cpus_allowed=65535"})
          .rfind("--cpus_allowed=65535: CPU 65535 is not available here (this "
                 "process may run on ",
                 0),
      0U);
}

TEST(BenchArgsTest, BsSplitSharesAndTheirBlanks) {
  using Split = std::vector<std::pair<uint64_t, unsigned>>;
  const JobOptions j = Parsed({"--bssplit=4k/50:1k/:32k/"}).jobs[0];
  EXPECT_EQ(j.bssplit_read, Split({{4096, 50}, {1024, 25}, {32768, 25}}));
  EXPECT_EQ(j.bssplit_write, j.bssplit_read);
  EXPECT_EQ(j.bs_min, 1024U);
  EXPECT_EQ(j.bs_max, 32768U);
  EXPECT_EQ(j.SplitBs(true, 0), 4096U);
  EXPECT_EQ(j.SplitBs(true, 49), 4096U);
  EXPECT_EQ(j.SplitBs(true, 50), 1024U);
  EXPECT_EQ(j.SplitBs(true, 75), 32768U);
  EXPECT_EQ(j.SplitBs(true, 99), 32768U);
  // Three blanks share 100 unevenly: the first takes what does not divide.
  EXPECT_EQ(Parsed({"--bssplit=4k/:8k/:16k/"}).jobs[0].bssplit_read,
            Split({{4096, 34}, {8192, 33}, {16384, 33}}));
  const JobOptions rw = Parsed({"--bssplit=4k/100,8k/10:16k/90"}).jobs[0];
  EXPECT_EQ(rw.bssplit_read, Split({{4096, 100}}));
  EXPECT_EQ(rw.bssplit_write, Split({{8192, 10}, {16384, 90}}));
  EXPECT_EQ(rw.SplitBs(false, 9), 8192U);
  // The last of bsrange and bssplit counts.
  EXPECT_TRUE(Parsed({"--bssplit=4k/100", "--bsrange=4k-8k"})
                  .jobs[0]
                  .bssplit_text.empty());
  EXPECT_EQ(
      ValidateLine(
          {"--bssplit=4k/50:8k/50", "--verify=xxh3", "--rw=randwrite"}),
      "--verify=xxh3: not with --bssplit (every block must have one size)");
  // Every driver takes its sizes from the shared Placer.
  EXPECT_EQ(ValidateLine({"--bssplit=4k/100", "--api=device"}), "(accepted)");
}

TEST(BenchArgsTest, WaitForNamesOneEarlierJob) {
  const BenchPlan p =
      Parsed({"--name=a", "--name=b", "--wait_for=a", "--exitall"});
  EXPECT_EQ(p.jobs[1].wait_for, "a");
  EXPECT_TRUE(p.jobs[1].exitall);
  EXPECT_FALSE(p.jobs[0].exitall);
  EXPECT_EQ(UsageLine({"--name=b", "--wait_for=a", "--name=a"}),
            "--wait_for=a (job b): no job of that name before this one");
  EXPECT_EQ(UsageLine({"--name=b", "--wait_for=b"}),
            "--wait_for=b (job b): no job of that name before this one");
  EXPECT_EQ(UsageLine({"--name=a", "--name=a", "--name=b", "--wait_for=a"}),
            "--wait_for=a (job b): 2 jobs have that name; the one waited for "
            "must be unique");
  EXPECT_EQ(UsageLine({"--wait_for="}), "--wait_for=: needs a job name");
}

TEST(BenchArgsTest, HowMuchAJobDoes) {
  const BenchPlan p = Parsed({"--loops=3", "--io_limit=1m", "--number_ios=7",
                              "--startdelay=250ms", "--offset_increment=8k"});
  const JobOptions& j = p.jobs[0];
  EXPECT_EQ(j.loops, 3U);
  EXPECT_EQ(j.io_size, 1U << 20);
  EXPECT_EQ(j.number_ios, 7U);
  EXPECT_EQ(j.startdelay_us, 250000U);
  EXPECT_EQ(j.offset_increment, 8192U);
  EXPECT_EQ(j.IoBytes(64 << 20), 3U << 20);  // io_size replaces the region
  EXPECT_TRUE(j.WantsMore(64 << 20, 0, 6, 0));
  EXPECT_FALSE(j.WantsMore(64 << 20, 0, 7, 0));  // number_ios ends it first

  JobOptions plain;
  EXPECT_EQ(plain.IoBytes(1 << 20), 1U << 20);
  EXPECT_TRUE(plain.WantsMore(1 << 20, (1 << 20) - 1, 1U << 30, 0));
  EXPECT_FALSE(plain.WantsMore(1 << 20, 1 << 20, 1, 0));
  plain.time_based = true;
  EXPECT_TRUE(plain.WantsMore(1 << 20, uint64_t{1} << 40, 1U << 30, 0));
  JobOptions huge;
  huge.loops = 1U << 30;
  huge.io_size = uint64_t{1} << 62;
  EXPECT_EQ(huge.IoBytes(0), UINT64_MAX);  // saturated, not wrapped

  EXPECT_EQ(UsageLine({"--loops=0"}), "--loops=0: must be 1 to 1073741824");
  EXPECT_EQ(UsageLine({"--io_size=0"}), "--io_size=0: must be more than 0");
  EXPECT_EQ(UsageLine({"--startdelay=soon"}),
            "--startdelay=soon: not a duration (examples: 5, 5s, 500ms, 2m)");
}

// Found by fuzz/fuzz_bench_options' off_t invariant: offset + size wrapped
// past 2^64 (or ended past 2^63 - 1) and was accepted, which defeated the
// bench's checks against the file's or device's size.
TEST(BenchArgsTest, ARegionPastTheLargestFileOffsetIsRefused) {
  const auto line = ValidateLine;
  EXPECT_EQ(line({"--offset=8388607t", "--size=2t"}),
            "--offset=9223370937343148032: with --size=2199023255552, past "
            "the largest file offset (8 EiB)");
  EXPECT_EQ(line({"--offset=4k", "--size=16777215t"}),
            "--offset=4096: with --size=18446742974197923840, past the "
            "largest file offset (8 EiB)");
  EXPECT_EQ(line({"--offset=8388606t", "--size=1t"}), "(accepted)");
}

TEST(JobFileTest, GlobalSectionsJobsCommentsAndFlags) {
  BenchPlan plan;
  const Result<std::vector<JobOptions>> parsed = ParseJobFile(
      "; comment\n# another\n[global]\nsize = 8m\ndirect=0\n\n[one]\n"
      "rw=write\ntime_based\nruntime=1\n[global]\nbs=8k\n[two]\n"
      "group_reporting\n",
      "f.fio", JobOptions{}, plan);
  ASSERT_TRUE(parsed.ok()) << parsed.status().context();
  const std::vector<JobOptions>& jobs = *parsed;
  ASSERT_EQ(jobs.size(), 2U);
  EXPECT_EQ(jobs[0].name, "one");
  EXPECT_EQ(jobs[0].size, 8U << 20);
  EXPECT_EQ(jobs[0].direct, 0);
  EXPECT_EQ(jobs[0].rw, "write");
  EXPECT_TRUE(jobs[0].time_based);
  EXPECT_EQ(jobs[0].bs, 4096U);  // [global] after [one] does not reach back
  EXPECT_EQ(jobs[1].name, "two");
  EXPECT_EQ(jobs[1].bs, 8192U);
  EXPECT_FALSE(jobs[1].time_based);
  EXPECT_TRUE(plan.group_reporting);
}

TEST(JobFileTest, ErrorsNameFileAndLine) {
  auto line = [](const char* text) -> std::string {
    BenchPlan plan;
    Result<std::vector<JobOptions>> jobs =
        ParseJobFile(text, "j.fio", JobOptions{}, plan);
    return jobs.ok() ? "(accepted)" : jobs.status().context();
  };
  EXPECT_EQ(line("rw=read\n"), "j.fio:1: an option before any [section]");
  EXPECT_EQ(line("[a]\nrw=read\nfoo=1\n"),
            "j.fio:3: foo: not an option aiokit bench knows (aiokit bench "
            "--help lists them)");
  EXPECT_EQ(line("[a]\nbs=12q\n"),
            "j.fio:2: bs=12q: not a size (examples: 4096, 4k, 1m, 2g)");
  EXPECT_EQ(line("[a\n"), "j.fio:1: a section is [name]");
  EXPECT_EQ(line("[global]\nbs=4k\n"), "j.fio: no job sections");
  EXPECT_EQ(line("[a]\niodepth\n"), "j.fio:2: iodepth: needs a value (N)");
}

// The jobs of a job file's text, or the usage line that refused it.
Result<std::vector<JobOptions>> JobsOf(const char* text) {
  BenchPlan plan;
  return ParseJobFile(text, "j.fio", JobOptions{}, plan);
}

TEST(JobFileTest, ACommentEndsTheLineWhereverItStarts) {
  const Result<std::vector<JobOptions>> jobs = JobsOf(
      "[global]   ; the defaults\nruntime=3600  # one hour\n"
      "[a] # the job\nnumjobs=4 ; four threads\nbs=8k#no space\n"
      "time_based ;flag\n");
  ASSERT_TRUE(jobs.ok()) << jobs.status().context();
  ASSERT_EQ(jobs->size(), 1U);
  const JobOptions& j = jobs->front();
  EXPECT_EQ(j.name, "a");
  EXPECT_EQ(j.runtime_us, 3600ULL * 1000 * 1000);
  EXPECT_EQ(j.numjobs, 4U);
  EXPECT_EQ(j.bs, 8192U);
  EXPECT_TRUE(j.time_based);
}

TEST(JobFileTest, EnvironmentVariablesAndFiosKeywordsExpand) {
  ASSERT_EQ(::setenv("AIOKIT_TEST_BS", "16k", 1), 0);
  ASSERT_EQ(::setenv("AIOKIT_TEST_EMPTY", "", 1), 0);
  ASSERT_EQ(::unsetenv("AIOKIT_TEST_UNSET"), 0);
  const Result<std::vector<JobOptions>> jobs = JobsOf(
      "[a]\nbs=${AIOKIT_TEST_BS}\nsize=${AIOKIT_TEST_EMPTY}2m\n"
      "description=${AIOKIT_TEST_BS} on $ncpus CPUs\n[b]\nbs=$pagesize\n");
  ASSERT_TRUE(jobs.ok()) << jobs.status().context();
  ASSERT_EQ(jobs->size(), 2U);
  EXPECT_EQ((*jobs)[0].bs, 16384U);
  EXPECT_EQ((*jobs)[0].size, 2U << 20);
  EXPECT_EQ(
      (*jobs)[0].description,
      "16k on " + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " CPUs");
  EXPECT_EQ((*jobs)[1].bs, static_cast<uint64_t>(::sysconf(_SC_PAGESIZE)));

  auto line = [](const char* text) {
    const Result<std::vector<JobOptions>> got = JobsOf(text);
    return got.ok() ? std::string("(accepted)") : got.status().context();
  };
  EXPECT_EQ(line("[a]\nbs=${AIOKIT_TEST_UNSET}\n"),
            "j.fio:2: bs=${AIOKIT_TEST_UNSET}: ${AIOKIT_TEST_UNSET} is not set "
            "in the environment (fio would use an empty string)");
  EXPECT_EQ(line("[a]\nbs=${AIOKIT_TEST_BS\n"),
            "j.fio:2: bs=${AIOKIT_TEST_BS: a ${ without its }");
  // Any other $word is left as it is (fio's rule): here, not a size.
  EXPECT_EQ(line("[a]\nsize=$mb_memoryy\n"),
            "j.fio:2: size=$mb_memoryy: not a size (examples: 4096, 4k, 1m, "
            "2g)");
  EXPECT_EQ(JobsOf("[a]\nfilename=/tmp/a$b\n")->front().filename, "/tmp/a$b");
}

TEST(JobFileTest, StonewallAndNewGroupMakeFiosGroups) {
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/groups.fio";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(
        "[global]\nsize=1m\n[w]\nrw=write\n[w2]\nrw=write\n"
        "[r]\nstonewall\nrw=read\n[r2]\nnew_group\nrw=read\n"
        "[r3]\nwait_for_previous=1\ndescription=last\n",
        f);
    ASSERT_EQ(std::fclose(f), 0);
  }
  const BenchPlan plan = Parsed({path});
  ASSERT_EQ(plan.jobs.size(), 5U);
  const std::vector<unsigned> groups = {0, 0, 1, 2, 3};
  for (size_t i = 0; i < groups.size(); ++i) {
    EXPECT_EQ(plan.jobs[i].group, groups[i]) << plan.jobs[i].name;
  }
  EXPECT_FALSE(plan.jobs[1].stonewall);
  EXPECT_TRUE(plan.jobs[2].stonewall);
  EXPECT_FALSE(plan.jobs[3].stonewall);
  EXPECT_TRUE(plan.jobs[3].new_group);
  EXPECT_TRUE(plan.jobs[4].stonewall);
  EXPECT_EQ(plan.jobs[4].description, "last");
  std::remove(path.c_str());
}

TEST(BenchArgsTest, FiosOptionsAiokitLacksAreRefusedWithWhatFioDoes) {
  EXPECT_EQ(UsageLine({"--rwmixcycle=500"}),
            "--rwmixcycle: fio's option (it alternated reads and writes on "
            "this period in old versions; fio 3.33 refuses it too), which "
            "aiokit bench does not have");
  BenchPlan plan;
  const Result<std::vector<JobOptions>> jobs =
      ParseJobFile("[a]\nrwmixcycle=100\n", "v.fio", JobOptions{}, plan);
  ASSERT_FALSE(jobs.ok());
  EXPECT_EQ(jobs.status().context(),
            "v.fio:2: rwmixcycle: fio's option (it alternated reads and "
            "writes on this period in old versions; fio 3.33 refuses it "
            "too), which aiokit bench does not have");
}

TEST(BenchArgsTest, RandomSequencesRepeatUnlessAskedNotTo) {
  const BenchPlan d = Parsed({});
  EXPECT_TRUE(d.jobs[0].randrepeat);
  EXPECT_FALSE(d.jobs[0].randseed_set);
  EXPECT_FALSE(d.jobs[0].norandommap);
  const BenchPlan p =
      Parsed({"--randrepeat=0", "--randseed=42", "--norandommap"});
  EXPECT_FALSE(p.jobs[0].randrepeat);
  EXPECT_TRUE(p.jobs[0].randseed_set);
  EXPECT_EQ(p.jobs[0].randseed, 42U);
  EXPECT_TRUE(p.jobs[0].norandommap);
  EXPECT_EQ(UsageLine({"--randseed=-1"}), "--randseed=-1: not a whole number");
}

TEST(BenchArgsTest, FiosSynchronousAndPosixEnginesMapToAiokits) {
  EXPECT_EQ(Parsed({"--ioengine=pvsync"}).jobs[0].engine, "sync");
  EXPECT_EQ(Parsed({"--ioengine=pvsync2"}).jobs[0].engine, "sync");
  EXPECT_EQ(Parsed({"--ioengine=psync"}).jobs[0].engine, "sync");
  EXPECT_EQ(Parsed({"--ioengine=posixaio"}).jobs[0].engine, "threads");
  EXPECT_EQ(UsageLine({"--ioengine=libaio", "--userspace_reap"}), "(accepted)");
  EXPECT_EQ(UsageLine({"--userspace_reap=0"}),
            "--userspace_reap=0: aiokit's linux-aio engine always reaps in "
            "user space (io_getevents only to wait)");
  EXPECT_EQ(UsageLine({"--per_job_logs=0"}), "(accepted)");
}

}  // namespace
}  // namespace aiokit::tool
