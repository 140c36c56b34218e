// `aiokit bench` jobs: fio's option names and meanings, from the command line
// or from a job file in fio's ini format, parsed through one table so that an
// option is either understood or refused by name, never ignored.

#ifndef AIOKIT_TOOLS_AIOKIT_JOB_H_
#define AIOKIT_TOOLS_AIOKIT_JOB_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aiokit/status.h"
#include "verify.h"

namespace aiokit::tool {

// fio's cmdprio_bssplit entry: requests of `bs` bytes get a priority of
// their own `pct` percent of the time, of class `cls` and level `level` (-1:
// cmdprio_class's and cmdprio's).
struct CmdprioSplit {
  uint64_t bs = 0;
  unsigned pct = 0;
  int cls = -1, level = -1;
};

// One job. Defaults follow fio except where noted.
// JobOptions::continue_on_error bits.
inline constexpr unsigned kContinueRead = 1;
inline constexpr unsigned kContinueWrite = 2;

struct JobOptions {
  std::string name = "aiokit";
  std::string filename;  // empty: an unnamed temporary file in $TMPDIR or
                         // /var/tmp, one per clone, gone after the run
  // Named files (when filename is empty and directory or filename_format is
  // set): fio's way, one per clone, in `directory` (":"-separated: the clones
  // spread over them; with filename, the first prefixes a relative one),
  // named by filename_format ($jobname, $jobnum, $filenum; default
  // "$jobname.$jobnum.$filenum"), kept after the run unless `unlink`.
  // filesize_min..max: each file's size (drawn per file from a range), in
  // place of size. fallocate: how a file this run
  // creates is preallocated (none, native, posix, keep, truncate).
  // nrfiles: files per clone, the region (size) divided among them, their
  // blocks taken by file_service_type: roundrobin[:N] (N blocks of one file,
  // then the next; random[:N] the same) or sequential (one file after the
  // other). create_on_open is accepted.
  std::string directory;
  std::string filename_format;
  uint64_t filesize_min = 0, filesize_max = 0;
  bool unlink = false;
  bool create_on_open = false;
  std::string fallocate = "native";
  std::string file_service_type = "roundrobin";
  unsigned nrfiles = 1;
  [[nodiscard]] bool NamedFiles() const {
    return filename.empty() && (!directory.empty() || !filename_format.empty());
  }
  uint64_t size = 128ULL << 20;
  bool size_set = false;  // --size given (otherwise a device or an existing
                          // file gives its own size)
  uint64_t offset = 0;    // where the job's region starts
  // fio's offset_increment: clone c's region starts at offset + c * this.
  uint64_t offset_increment = 0;
  // How much a clone does (not time_based): io_size bytes (0: the region's
  // size), loops times, and at most number_ios requests (0: no limit).
  uint64_t io_size = 0;
  unsigned loops = 1;
  uint64_t number_ios = 0;
  uint64_t startdelay_us = 0;   // each clone starts this long after the run
  std::string rw = "randread";  // read write randread randwrite rw randrw
  unsigned rwmixread = 50;      // percent of reads in rw / randrw
  uint64_t bs = 4096;
  uint64_t bs_min = 0, bs_max = 0;  // --bsrange; 0: --bs for every request
  bool bs_unaligned = false;  // bsrange sizes need not be multiples of MIN
  // fio's bssplit: block sizes by share of requests, for reads and for
  // writes ({size, percent}, adding up to 100); bs_min and bs_max are then
  // the smallest and largest size, and offsets are drawn as with bsrange.
  // bssplit_text is the option as given.
  std::vector<std::pair<uint64_t, unsigned>> bssplit_read, bssplit_write;
  std::string bssplit_text;
  unsigned iodepth = 32;  // fio: 1
  // Requests per submission call: fio's meaning (0: iodepth). Unset: a
  // quarter of iodepth, at least 1 (fio's default is 1): a device starts on
  // the first requests while the rest are submitted, and the CPU-bound case
  // still saves system calls.
  unsigned iodepth_batch_submit = 0;
  bool iodepth_batch_submit_set = false;
  [[nodiscard]] unsigned SubmitBatch() const {
    if (!iodepth_batch_submit_set) return std::max(1U, iodepth / 4);
    return iodepth_batch_submit != 0 ? iodepth_batch_submit : iodepth;
  }
  unsigned iodepth_batch_complete_min = 1;
  unsigned iodepth_batch_complete_max = 0;  // 0: iodepth
  unsigned numjobs = 1;
  uint64_t runtime_us = 0;  // 0: until --size bytes are done
  bool time_based = false;
  uint64_t ramp_time_us = 0;
  int direct = 1;                  // fio: 0; storage engines run O_DIRECT
  unsigned fsync = 0;              // an fsync after every N writes (0: never)
  int invalidate = 1;              // drop the file's page cache before the job
  std::string engine = "default";  // default: AIOKIT_ENGINE, else auto
  // Verify: the layout (aiokit's xxh3 or one of fio's), verify_pattern and
  // verify_interval in it; verify_set: verify= given (verify_pattern alone
  // then means fio's pattern with a header). do_verify: read back after the
  // writes; verify_only: read and check what the writes would have written,
  // writing nothing; verify_fatal: stop at the first mismatch; verify_dump:
  // write a mismatching block (and the expected one, when known) to files in
  // the working directory; verify_backlog: read back every N blocks written
  // while the job runs. buffer_pattern: the write buffers' bytes when not
  // verifying.
  VerifyFormat verify;
  bool verify_set = false;
  bool do_verify = true;
  bool verify_only = false;
  bool verify_fatal = false;
  bool verify_dump = false;
  uint64_t verify_backlog = 0;
  std::string buffer_pattern;
  // A fault spec (aiokit/fault.h) for a fault-injecting wrapper around the
  // engine; "" for none. Injected errors are counted, not fatal.
  std::string inject;
  // fio's continue_on_error: the kinds of failed request (kContinueRead,
  // kContinueWrite; an fsync counts as a write, as in fio) that are counted
  // and the job goes on, instead of stopping it. A block whose write failed
  // holds unknown bytes and is not verified.
  unsigned continue_on_error = 0;
  // aiokit: EngineOptions::spin_before_wait in us (-1: the library's default),
  // and spinning the whole budget every time (adaptive_spin = false).
  int spin_us = -1;
  bool spin_always = false;
  // io_uring, with fio's names.
  bool fixedbufs = false;
  bool registerfiles = false;
  bool sqthread_poll = false;
  int sqthread_poll_cpu = -1;
  bool hipri = false;
  // threads engine (0: the library's default).
  unsigned threads_min = 0;
  unsigned threads_max = 0;
  bool threads_ordered = false;
  bool threads_kernel_aio = true;
  // What the job drives: "engine" (requests on the engine, fio's way),
  // "device" (the device layer, aiokit/device.h: one IoContext per request,
  // as a storage engine would) or "coro" (--iodepth coroutines on a loop,
  // aiokit/coro.h).
  std::string api = "engine";
  // fio's housekeeping: a free-text description (in the JSON job options);
  // stonewall (fio's wait_for_previous too): this job starts after every job
  // before it ended, in a new group; new_group: a new reporting group, run
  // beside the jobs before it.
  // Random offsets: fio's norandommap (uniform, blocks may repeat before
  // every block was done; default: each block once per pass), randrepeat
  // (the same sequence every run, fio's default) and randseed (which one).
  // rw's offset modifier as given ("" for none: rw=randread:8,
  // rw=write:4k, rw=read:-8k). A random rw takes a new random offset every
  // seq_nr requests, and between them rw_sequencer's choice: the next block
  // (sequential) or the same offset again (seq_identical). A sequential rw
  // adds seq_add bytes after each request: holes, or backwards if negative.
  std::string rw_modifier;
  uint64_t seq_nr = 1;
  int64_t seq_add = 0;
  bool seq_identical = false;
  // random_distribution: "random" (uniform), "zipf" (dist_value: theta),
  // "pareto" (dist_value: h), "normal" (dist_value: deviation in percent of
  // the region), "zoned" or "zoned_abs" (shares of requests by zone, for
  // reads and for writes); dist_center in [0, 1] or -1 for fio's default.
  // distribution_text is the option as given.
  struct DistZone {
    unsigned pct = 0;   // share of requests
    uint64_t size = 0;  // zoned: percent of the region; zoned_abs: bytes
  };
  std::string distribution = "random";
  std::string distribution_text;
  double dist_value = 0;
  double dist_center = -1;
  std::vector<DistZone> dist_zones_read, dist_zones_write;
  // percentage_random: the share of a random job's requests that take a new
  // random offset (the rest continue in order), for reads and for writes.
  unsigned percentage_random_read = 100, percentage_random_write = 100;
  // blockalign: random offsets are multiples of this (0: the smallest block
  // size), for reads and for writes; turns the random map off, as in fio.
  uint64_t blockalign_read = 0, blockalign_write = 0;
  std::string random_generator = "tausworthe";
  // zonemode=strided: zonesize bytes in a zone of zonerange bytes (default:
  // zonesize), then the next zone, zoneskip bytes after this one's end.
  bool zone_strided = false;
  uint64_t zonesize = 0, zonerange = 0, zoneskip = 0;
  // Pacing (pace.h), per direction ([0] reads, [1] writes; 0: none): fio's
  // rate (bytes/s), rate_iops, rate_min, rate_iops_min (checked over
  // rate_cycle_ms), rate_process=poisson, io_submit_mode=offload (the
  // schedule does not wait for requests in flight), and thinktime (after
  // thinktime_blocks completions, or issues with thinktime_on_issue, or
  // thinktime_iotime_us of I/O; thinktime_spin_us of it busy).
  std::array<uint64_t, 2> rate{}, rate_iops{}, rate_min{}, rate_iops_min{};
  bool rate_poisson = false;
  uint64_t rate_cycle_ms = 1000;
  bool submit_offload = false;
  uint64_t thinktime_us = 0, thinktime_spin_us = 0, thinktime_iotime_us = 0;
  uint64_t thinktime_blocks = 1;
  bool thinktime_on_issue = false;
  // After a think, the rate's schedule moves on by the think instead of
  // catching up.
  bool rate_ignore_thinktime = false;
  [[nodiscard]] bool Paced() const {
    return rate[0] != 0 || rate[1] != 0 || rate_iops[0] != 0 ||
           rate_iops[1] != 0 || thinktime_us != 0;
  }
  [[nodiscard]] bool HasMinimum() const {
    return rate_min[0] != 0 || rate_min[1] != 0 || rate_iops_min[0] != 0 ||
           rate_iops_min[1] != 0;
  }
  // fio's logs (iolog.h): write_lat_log, write_bw_log, write_iops_log with
  // their file prefix ("" for the job's name), log_avg_msec (0: a row per
  // request), log_max_value, log_offset, per_job_logs (the job number in
  // the file's name; 0: one file for every clone).
  // fio's steadystate: ss_metric is "" (off), iops, iops_slope, bw or
  // bw_slope; ss_limit (a percentage of the window's mean when ss_pct);
  // ss_dur_us the window (whole seconds), ss_ramp_us the wait before
  // sampling starts.
  std::string ss_metric;
  double ss_limit = 0;
  bool ss_pct = false;
  uint64_t ss_dur_us = 0, ss_ramp_us = 0;
  // How many requests a clone completes between updates of its progress
  // counters: every one when steadystate samples them.
  [[nodiscard]] uint64_t ProgressEvery() const {
    return ss_metric.empty() ? 64 : 1;
  }
  // write_hist_log: clat histograms in fio's buckets every log_hist_msec,
  // 2^log_hist_coarseness buckets to a column.
  std::string lat_log, bw_log, iops_log, hist_log;
  bool lat_log_set = false, bw_log_set = false, iops_log_set = false,
       hist_log_set = false;
  uint64_t log_hist_msec = 0;
  unsigned log_hist_coarseness = 0;
  uint64_t log_avg_msec = 0;
  bool log_max_value = false;
  bool log_offset = false;
  bool per_job_logs = true;
  // I/O priority (ioprio_set(2)): the clone's (fio's prio and prioclass; -1:
  // not set), and per request (cmdprio_percentage of the requests, per
  // direction, get class cmdprio_class, default realtime, and level
  // cmdprio, default 0).
  int prio = -1, prioclass = -1;
  std::array<unsigned, 2> cmdprio_pct{}, cmdprio_class{{1, 1}}, cmdprio{};
  std::array<std::vector<CmdprioSplit>, 2> cmdprio_bssplit;  // per direction
  bool norandommap = false;
  bool randrepeat = true;
  uint64_t randseed = 0;
  bool randseed_set = false;
  // CPU affinity (fio's cpus_allowed, cpumask, numa_cpu_nodes): the clones,
  // and the engine threads they start, run on these CPUs (empty: anywhere);
  // with cpus_split (cpus_allowed_policy=split) clone c on cpus[c % size]
  // alone. cpus_option names the option that set them, for messages.
  std::vector<unsigned> cpus;
  // numa_mem_policy: the set_mempolicy(2) mode (-1: not set) and its nodes.
  int mempolicy_mode = -1;
  std::vector<unsigned> mempolicy_nodes;
  std::string mempolicy_option;
  bool cpus_split = false;
  std::string cpus_option;
  // wait_for: this job starts when every clone of the job of that name (an
  // earlier one in the same run, uniquely named) ended; exitall: when this
  // job ends, every job of its group stops issuing.
  std::string wait_for;
  bool exitall = false;
  std::string description;
  bool stonewall = false;
  bool new_group = false;
  unsigned group = 0;  // the reporting group (fio's groupid), set by
                       // ParseBenchArgs from stonewall and new_group

  [[nodiscard]] bool Reads() const {
    return rw == "read" || rw == "randread" || rw == "rw" || rw == "randrw";
  }
  [[nodiscard]] bool Writes() const {
    return rw == "write" || rw == "randwrite" || rw == "rw" || rw == "randrw";
  }
  [[nodiscard]] bool Random() const {
    return rw == "randread" || rw == "randwrite" || rw == "randrw";
  }
  // The percentage of requests that read.
  [[nodiscard]] unsigned ReadPercent() const {
    if (!Writes()) return 100;
    if (!Reads()) return 0;
    return rwmixread;
  }
  // The bytes a clone whose region is `region` bytes moves when it is not
  // time_based: io_size (or the region) times loops, at most UINT64_MAX.
  [[nodiscard]] uint64_t IoBytes(uint64_t region) const {
    const uint64_t pass = io_size != 0 ? io_size : region;
    return loops != 0 && pass > UINT64_MAX / loops ? UINT64_MAX : pass * loops;
  }
  // Whether a pass of a sequential job ends where the region (or the last
  // zone) ends, as fio ends one with holes or zones, rather than after the
  // region's size in bytes: without io_size, not time_based.
  [[nodiscard]] bool PassLimited() const {
    return !time_based && io_size == 0 && !Random() &&
           (seq_add != 0 || zone_strided);
  }
  // Whether a clone whose region is `region` bytes and that issued `bytes` in
  // `ios` requests, over `passes` ends of the region (Placer::passes),
  // issues another.
  [[nodiscard]] bool WantsMore(uint64_t region, uint64_t bytes, uint64_t ios,
                               uint64_t passes) const {
    if (number_ios != 0 && ios >= number_ios) return false;
    if (time_based) return true;
    if (PassLimited()) return passes < loops;
    return bytes < IoBytes(region);
  }
  // The option that set variable block sizes, for messages.
  [[nodiscard]] const char* BsOption() const {
    return !bssplit_text.empty() ? "--bssplit"
           : bs_min != 0         ? "--bsrange"
                                 : "--bs";
  }
  // The size of a request in bssplit's shares, `pct` drawn uniformly from
  // [0, 100).
  // REQUIRES: the direction's split is not empty.
  [[nodiscard]] uint64_t SplitBs(bool read, unsigned pct) const {
    const auto& split = read ? bssplit_read : bssplit_write;
    unsigned below = 0;
    for (const auto& [size, share] : split) {
      below += share;
      if (pct < below) return size;
    }
    return split.back().first;
  }
  [[nodiscard]] uint64_t MaxBs() const { return bs_max != 0 ? bs_max : bs; }
  [[nodiscard]] uint64_t MinBs() const { return bs_min != 0 ? bs_min : bs; }
};

// A sweep: the same job once per value of one option.
struct Sweep {
  std::string option;               // "iodepth", "bs" or "numjobs"
  std::vector<std::string> values;  // as given, applied through the table
};

// Everything one `aiokit bench` command asks for.
struct BenchPlan {
  std::vector<JobOptions> jobs;          // run together, as fio runs a job file
  std::string output_format = "normal";  // normal, json or json+
  [[nodiscard]] bool JsonOutput() const {
    return output_format == "json" || output_format == "json+";
  }
  bool group_reporting = false;
  bool compare = false;  // every engine, one table
  Sweep sweep;           // option empty: no sweep
  bool progress = true;  // a live line on stderr when it is a terminal
  bool help = false;
};

// A bad option or combination (exit status 2), as a value: a Status with
// Errc::kInvalidArgument whose context is the one line to print after
// "aiokit bench: " (print context(), not ToString()).
[[nodiscard]] Status UsageError(std::string line);

// Sets one option (fio's name, without "--") on `job`, or on the plan for the
// options that belong to the whole run. `where` names the source in errors
// ("--bs" or "jobs.fio:7: bs").
// On failure: a UsageError, and `job` and `plan` are unchanged.
[[nodiscard]] Status ApplyOption(BenchPlan& plan, JobOptions& job,
                                 std::string_view key, std::string_view value,
                                 bool has_value, const std::string& where);

// Parses a job file's text (fio's ini format: [global] and [job] sections,
// `key=value` or a bare `key` for flags, a `;` or `#` ending the line as a
// comment, `${NAME}` from the environment and fio's keywords `$pagesize`,
// `$mb_memory` and `$ncpus` in values) into jobs, with `base` under [global].
// On success: at least one job. On failure: a UsageError naming file:line.
[[nodiscard]] Result<std::vector<JobOptions>> ParseJobFile(
    std::string_view text, const std::string& path, const JobOptions& base,
    BenchPlan& plan);

// Parses `aiokit bench`'s arguments (without "bench"): `--key=value`,
// `--key value`, `--flag`, and job files as positional arguments. Options
// before the first --name apply to every job (after a job file's own
// settings, so the command line wins); each --name starts a job of its own.
// Reads the job files named; creates no file.
// On success: a plan with at least one job, or with `help` set. On failure: a
// UsageError.
[[nodiscard]] Result<BenchPlan> ParseBenchArgs(
    const std::vector<std::string>& args);

// Checks what can be checked without a file (values, combinations).
// On failure: a UsageError.
[[nodiscard]] Status ValidateJob(const JobOptions& job, const BenchPlan& plan);

// The option list for --help.
std::string BenchHelp();

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_JOB_H_
