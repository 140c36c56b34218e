// The report of a run, as text or JSON (report.h).

#include "report.h"

#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

#include "aiokit/engine.h"
#include "aiokit/version.h"
#include "bench.h"
#include "histogram.h"
#include "units.h"

namespace aiokit::tool {
namespace {

// fio's default percentile list.
constexpr double kPercentiles[] = {1,  5,  10, 20, 30,   40,   50,    60,   70,
                                   80, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};

std::string PercentKey(double p) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6f", p);
  return buf;
}

// `bins`: fio's json+ per-bucket counts, keyed by the bucket's value in ns.
Json LatJson(const LatencyHistogram& h, bool bins = false) {
  Json j;
  j["min"] = h.min();
  j["max"] = h.max();
  j["mean"] = h.mean();
  j["stddev"] = h.stddev();
  j["N"] = h.count();
  Json pct = Json::object();
  for (double p : kPercentiles) pct[PercentKey(p)] = h.Percentile(p);
  j["percentile"] = pct;
  if (bins && h.count() != 0) {
    const std::vector<uint64_t> counts = FioBuckets::From(h);
    Json b = Json::object();
    for (size_t i = 0; i < counts.size(); ++i) {
      if (counts[i] != 0) b[std::to_string(FioBuckets::Value(i))] = counts[i];
    }
    j["bins"] = b;
  }
  return j;
}

Json DirJson(const DirStats& d, double seconds, bool bins) {
  Json j;
  const double bw_bytes =
      seconds > 0 ? static_cast<double>(d.bytes) / seconds : 0;
  j["io_bytes"] = d.bytes;
  j["io_kbytes"] = d.bytes / 1024;
  j["bw_bytes"] = static_cast<uint64_t>(bw_bytes);
  j["bw"] = static_cast<uint64_t>(bw_bytes / 1024);  // KiB/s, as fio
  j["iops"] = seconds > 0 ? static_cast<double>(d.ios) / seconds : 0.0;
  j["runtime"] = static_cast<uint64_t>(seconds * 1000.0);
  j["total_ios"] = d.ios;
  j["short_ios"] = d.short_ios;
  j["slat_ns"] = LatJson(d.slat);
  j["clat_ns"] = LatJson(d.clat, bins);
  j["lat_ns"] = LatJson(d.lat);
  return j;
}

std::string ErrnoName(int e) {
  const char* n = strerrorname_np(e);
  return n != nullptr ? n : std::to_string(e);
}

uint64_t TotalIos(const CloneResult& r) {
  return r.read.ios + r.write.ios + r.sync.ios;
}

// The engine-side numbers every report carries.
Json AiokitJson(const Entry& e, const RunResult& res, uint64_t run_ios) {
  const CloneResult& r = e.r;
  Json ak;
  ak["engine"] = r.engine;
  ak["group_began_s"] = r.group_began;
  ak["group_ended_s"] = r.group_ended;
  ak["cpus"] = r.cpus;
  ak["ioprio"] = r.ioprio;
  if (!r.mempolicy.empty()) ak["mempolicy"] = r.mempolicy;
  if (r.prio_ios != 0) ak["cmdprio_ios"] = r.prio_ios;
  Json passed = Json::array();
  for (const EngineRefusal& p : r.passed_over) {
    passed.push_back(
        {{"engine", EngineKindName(p.kind)}, {"reason", p.reason.ToString()}});
  }
  ak["engines_passed_over"] = passed;
  const double cpu = res.usr + res.sys;
  ak["cpu_per_io_us"] =
      run_ios != 0 ? cpu * 1e6 / static_cast<double>(run_ios) : 0.0;
  ak["usr_per_io_us"] =
      run_ios != 0 ? res.usr * 1e6 / static_cast<double>(run_ios) : 0.0;
  ak["sys_per_io_us"] =
      run_ios != 0 ? res.sys * 1e6 / static_cast<double>(run_ios) : 0.0;
  ak["submit_calls"] = r.es.submit_calls;
  ak["wait_calls"] = r.es.wait_calls;
  ak["sleeps"] = r.es.sleeps;
  ak["ring_reaped"] = r.es.ring_reaped;
  // threads engine: O_DIRECT requests the kernel's AIO did, and those it gave
  // to workers.
  ak["kernel_aio"] = r.es.kernel_aio;
  ak["kernel_aio_fallbacks"] = r.es.kernel_aio_fallbacks;
  ak["avg_submit_batch"] = r.submit_calls != 0
                               ? static_cast<double>(r.submitted) /
                                     static_cast<double>(r.submit_calls)
                               : 0.0;
  ak["avg_reap_batch"] =
      r.reap_calls != 0
          ? static_cast<double>(r.reaped) / static_cast<double>(r.reap_calls)
          : 0.0;
  ak["eagain_retries"] = r.es.eagain_retries;
  // Every request of the run completes exactly once: submitted == completed,
  // none reaped twice, none unfinished (the verify pass is not counted).
  Json requests;
  requests["submitted"] = r.submitted;
  requests["completed"] = r.reaped;
  requests["reaped_twice"] = r.reaped_twice;
  requests["unfinished"] = r.unfinished;
  ak["requests"] = requests;
  Json features;
  features["user_space_reap"] = r.caps.user_space_reap;
  features["fixed_buffers"] = e.job->fixedbufs;
  features["fixed_files"] = e.job->registerfiles;
  features["sqpoll"] = r.caps.sqpoll;
  features["iopoll"] = r.caps.iopoll;
  features["single_issuer"] = r.caps.single_issuer;
  features["defer_taskrun"] = r.caps.defer_taskrun;
  features["coop_taskrun"] = r.caps.coop_taskrun;
  features["registered_ring_fd"] = r.caps.registered_ring_fd;
  features["fallbacks"] = r.caps.fallbacks;
  ak["engine_features"] = features;
  Json errs = Json::object();
  for (const auto& [err, count] : r.errors) errs[ErrnoName(err)] = count;
  ak["errors"] = errs;
  if (!r.first_error.empty()) ak["first_error"] = r.first_error;
  if (!r.inject.empty()) {
    Json f;
    f["spec"] = r.inject;
    f["submit_calls"] = r.faults.submit_calls;
    f["accepted"] = r.faults.accepted;
    f["completed"] = r.faults.completed;
    f["reaped_twice"] = r.reaped_twice;
    f["eagain"] = r.faults.eagain;
    f["partial"] = r.faults.partial;
    f["short"] = r.faults.short_io;
    f["eio"] = r.faults.eio;
    f["enospc"] = r.faults.enospc;
    f["delayed"] = r.faults.delayed;
    f["reordered"] = r.faults.reordered;
    f["stalls"] = r.faults.stalls;
    ak["inject"] = f;
  }
  if (e.job->verify.enabled()) {
    Json v;
    v["checked"] = r.verify_checked;
    v["failed"] = r.verify_failed;
    v["mismatches"] = r.verify_lines;
    if (e.job->verify_backlog != 0) v["backlog_rounds"] = r.verify_rounds;
    ak["verify"] = v;
  }
  return ak;
}

void PrintDir(std::ostream& out, const char* dir, const DirStats& d,
              double seconds) {
  if (d.ios == 0) return;
  const double iops = seconds > 0 ? static_cast<double>(d.ios) / seconds : 0;
  const double bw = seconds > 0 ? static_cast<double>(d.bytes) / seconds : 0;
  char line[256];
  std::snprintf(line, sizeof(line),
                "  %s: IOPS=%s, BW=%s/s (%.1fMB/s)(%s/%.0fmsec)\n", dir,
                FormatCount(iops).c_str(),
                FormatBytes(static_cast<uint64_t>(bw)).c_str(), bw / 1e6,
                FormatBytes(d.bytes).c_str(), seconds * 1000);
  out << line;
  const LatencyHistogram& c = d.clat;
  out << "    clat: min=" << Ns(c.min())
      << ", avg=" << Ns(static_cast<uint64_t>(c.mean()))
      << ", max=" << Ns(c.max()) << "\n";
  out << "     clat percentiles: p50=" << Ns(c.Percentile(50))
      << ", p90=" << Ns(c.Percentile(90)) << ", p99=" << Ns(c.Percentile(99))
      << ", p99.9=" << Ns(c.Percentile(99.9))
      << ", p99.99=" << Ns(c.Percentile(99.99)) << "\n";
  out << "     lat: min=" << Ns(d.lat.min())
      << ", avg=" << Ns(static_cast<uint64_t>(d.lat.mean()))
      << ", p50=" << Ns(d.lat.Percentile(50))
      << ", p99=" << Ns(d.lat.Percentile(99))
      << " (submission call included; slat p50=" << Ns(d.slat.Percentile(50))
      << ")\n";
  if (d.short_ios != 0) out << "    short: " << d.short_ios << "\n";
}

void PrintEntry(std::ostream& out, const Entry& e) {
  const JobOptions& o = *e.job;
  const CloneResult& r = e.r;
  out << o.name << ": (g=0): rw=" << o.rw;
  if (o.Reads() && o.Writes()) out << " (" << o.rwmixread << "% reads)";
  if (!o.bssplit_text.empty()) {
    out << ", bssplit=" << o.bssplit_text;
  } else if (o.bs_min != 0) {
    out << ", bs=" << o.bs_min << "B-" << o.bs_max << "B";
  } else {
    out << ", bs=" << o.bs << "B";
  }
  out << ", engine=" << r.engine << ", iodepth=" << o.iodepth
      << ", direct=" << o.direct;
  if (e.clones > 1) out << ", " << e.clones << " clones";
  if (o.numjobs > 1 && e.clones == 1) out << ", clone " << r.clone;
  out << "\n  file: " << e.shown << " (" << FormatBytes(e.size) << ")\n";
  PrintDir(out, "read", r.read, r.seconds);
  PrintDir(out, "write", r.write, r.seconds);
  if (r.sync.ios != 0) {
    out << "  sync (fsync every " << o.fsync << " writes): " << r.sync.ios
        << " calls, lat p50=" << Ns(r.sync.lat.Percentile(50))
        << ", p99=" << Ns(r.sync.lat.Percentile(99)) << "\n";
  }
  char line[256];
  std::snprintf(
      line, sizeof(line),
      "  batches: %.1f requests per submit, %.1f completions per reap; "
      "engine: %llu submit calls, %llu waits (%llu sleeps), %.0f%% of "
      "completions read from the ring without a syscall\n",
      r.submit_calls != 0 ? static_cast<double>(r.submitted) /
                                static_cast<double>(r.submit_calls)
                          : 0.0,
      r.reap_calls != 0
          ? static_cast<double>(r.reaped) / static_cast<double>(r.reap_calls)
          : 0.0,
      static_cast<unsigned long long>(r.es.submit_calls),
      static_cast<unsigned long long>(r.es.wait_calls),
      static_cast<unsigned long long>(r.es.sleeps),
      r.es.completed != 0 ? 100.0 * static_cast<double>(r.es.ring_reaped) /
                                static_cast<double>(r.es.completed)
                          : 0.0);
  out << line;
  if (!r.errors.empty()) {
    out << "  errors:";
    for (const auto& [err, count] : r.errors) {
      out << " " << ErrnoName(err) << "=" << count;
    }
    out << "\n";
  }
  if (!r.inject.empty()) {
    out << "  injected (" << r.inject << "): " << r.faults.eagain << " EAGAIN, "
        << r.faults.partial << " partial submits, " << r.faults.short_io
        << " short, " << r.faults.eio << " EIO, " << r.faults.enospc
        << " ENOSPC, " << r.faults.delayed << " delayed, " << r.faults.reordered
        << " reordered, " << r.faults.stalls << " stalls; " << r.faults.accepted
        << " accepted, " << r.faults.completed << " completed, "
        << r.reaped_twice << " twice\n";
  }
  if (r.ss) {
    char line[160];
    std::snprintf(line, sizeof(line),
                  "  steadystate (%s over %llu s): %s, criterion %f%s, mean "
                  "%.0f IOPS\n",
                  r.ss->ss.c_str(),
                  static_cast<unsigned long long>(r.ss->duration_s),
                  r.ss->attained ? "attained" : "not attained", r.ss->criterion,
                  o.ss_pct ? "%" : "", r.ss->iops_mean);
    out << line;
  }
  if (o.verify.enabled()) {
    out << "  verify (" << o.verify.name << "): " << r.verify_checked
        << " blocks checked, " << r.verify_failed << " failed\n";
    for (const std::string& l : r.verify_lines) {
      out << "    mismatch: " << l << "\n";
    }
  }
  for (const EngineRefusal& p : r.passed_over) {
    out << "  (passed over " << EngineKindName(p.kind) << ": "
        << p.reason.ToString() << ")\n";
  }
}

void PrintCpu(std::ostream& out, const RunResult& res) {
  const uint64_t ios = RunIos(res);
  char line[256];
  std::snprintf(
      line, sizeof(line),
      "cpu (the whole process): usr=%.2f%%, sys=%.2f%%, %.2fus per "
      "I/O (usr %.2f, sys %.2f), ctx=%llu\n",
      res.wall > 0 ? 100.0 * res.usr / res.wall : 0.0,
      res.wall > 0 ? 100.0 * res.sys / res.wall : 0.0,
      ios != 0 ? (res.usr + res.sys) * 1e6 / static_cast<double>(ios) : 0.0,
      ios != 0 ? res.usr * 1e6 / static_cast<double>(ios) : 0.0,
      ios != 0 ? res.sys * 1e6 / static_cast<double>(ios) : 0.0,
      static_cast<unsigned long long>(res.ctx));
  out << line;
}

}  // namespace

std::vector<Entry> Entries(const BenchPlan& plan, const RunResult& res) {
  std::vector<Entry> out;
  for (size_t i = 0; i < res.clones.size(); ++i) {
    const JobOptions* j = res.job_of[i];
    if (plan.group_reporting && !out.empty() && out.back().job == j) {
      out.back().r.Merge(res.clones[i]);
      ++out.back().clones;
      continue;
    }
    out.push_back(Entry{j, res.clones[i], res.shown[i], res.sizes[i], 1});
  }
  return out;
}

uint64_t RunIos(const RunResult& res) {
  uint64_t n = 0;
  for (const CloneResult& c : res.clones) n += TotalIos(c);
  return n;
}

Json JobJson(const Entry& e, const RunResult& res, uint64_t run_ios,
             bool bins) {
  const JobOptions& o = *e.job;
  const CloneResult& r = e.r;
  Json job;
  job["jobname"] = o.name;
  job["groupid"] = o.group;
  int error = 0;
  if (!r.errors.empty()) {
    error = r.errors.begin()->first;
  } else if (!r.first_error.empty()) {
    error = EIO;
  } else if (r.verify_failed != 0) {
    error = EILSEQ;
  }
  job["error"] = error;
  job["elapsed"] = static_cast<uint64_t>(std::llround(res.wall));
  Json jo;
  jo["name"] = o.name;
  jo["filename"] = e.shown;
  jo["rw"] = o.rw_modifier.empty() ? o.rw : o.rw + ":" + o.rw_modifier;
  if (o.seq_identical) jo["rw_sequencer"] = "identical";
  if (!o.distribution_text.empty()) {
    jo["random_distribution"] = o.distribution_text;
  }
  if (o.percentage_random_read != 100 || o.percentage_random_write != 100) {
    jo["percentage_random"] = std::to_string(o.percentage_random_read) + "," +
                              std::to_string(o.percentage_random_write);
  }
  if (o.blockalign_read != 0) {
    jo["blockalign"] = std::to_string(o.blockalign_read) + "," +
                       std::to_string(o.blockalign_write);
  }
  if (o.random_generator != "tausworthe") {
    jo["random_generator"] = o.random_generator;
  }
  const auto pair = [](const std::array<uint64_t, 2>& v) {
    return std::to_string(v[0]) + "," + std::to_string(v[1]);
  };
  if (!o.directory.empty()) jo["directory"] = o.directory;
  if (!o.filename_format.empty()) jo["filename_format"] = o.filename_format;
  if (o.filesize_min != 0) {
    jo["filesize"] = o.filesize_min == o.filesize_max
                         ? std::to_string(o.filesize_min)
                         : std::to_string(o.filesize_min) + "-" +
                               std::to_string(o.filesize_max);
  }
  if (o.unlink) jo["unlink"] = "1";
  if (o.fallocate != "native") jo["fallocate"] = o.fallocate;
  if (o.rate[0] != 0 || o.rate[1] != 0) jo["rate"] = pair(o.rate);
  if (o.rate_iops[0] != 0 || o.rate_iops[1] != 0) {
    jo["rate_iops"] = pair(o.rate_iops);
  }
  if (o.rate_min[0] != 0 || o.rate_min[1] != 0) {
    jo["rate_min"] = pair(o.rate_min);
  }
  if (o.rate_iops_min[0] != 0 || o.rate_iops_min[1] != 0) {
    jo["rate_iops_min"] = pair(o.rate_iops_min);
  }
  if (o.prio >= 0) jo["prio"] = std::to_string(o.prio);
  if (o.prioclass >= 0) jo["prioclass"] = std::to_string(o.prioclass);
  if (o.cmdprio_pct[0] != 0 || o.cmdprio_pct[1] != 0) {
    jo["cmdprio_percentage"] = std::to_string(o.cmdprio_pct[0]) + "," +
                               std::to_string(o.cmdprio_pct[1]);
  }
  if (o.rate_poisson) jo["rate_process"] = "poisson";
  if (o.submit_offload) jo["io_submit_mode"] = "offload";
  if (o.thinktime_us != 0) {
    jo["thinktime"] = std::to_string(o.thinktime_us);
    jo["thinktime_blocks"] = std::to_string(o.thinktime_blocks);
    if (o.thinktime_spin_us != 0) {
      jo["thinktime_spin"] = std::to_string(o.thinktime_spin_us);
    }
    if (o.thinktime_iotime_us != 0) {
      jo["thinktime_iotime"] = std::to_string(o.thinktime_iotime_us) + "us";
    }
    if (o.thinktime_on_issue) jo["thinktime_blocks_type"] = "issue";
  }
  if (o.zone_strided) {
    jo["zonemode"] = "strided";
    jo["zonesize"] = std::to_string(o.zonesize);
    jo["zonerange"] =
        std::to_string(o.zonerange != 0 ? o.zonerange : o.zonesize);
    if (o.zoneskip != 0) jo["zoneskip"] = std::to_string(o.zoneskip);
  }
  if (o.Reads() && o.Writes()) jo["rwmixread"] = std::to_string(o.rwmixread);
  if (!o.bssplit_text.empty()) {
    jo["bssplit"] = o.bssplit_text;
  } else if (o.bs_min != 0) {
    jo["bsrange"] = std::to_string(o.bs_min) + "-" + std::to_string(o.bs_max);
  } else {
    jo["bs"] = std::to_string(o.bs);
  }
  jo["iodepth"] = std::to_string(o.iodepth);
  jo["size"] = std::to_string(e.size);
  if (o.offset != 0) jo["offset"] = std::to_string(o.offset);
  jo["direct"] = std::to_string(o.direct);
  jo["ioengine"] = r.engine;
  if (o.numjobs != 1) jo["numjobs"] = std::to_string(o.numjobs);
  if (o.fsync != 0) jo["fsync"] = std::to_string(o.fsync);
  if (o.verify.enabled()) jo["verify"] = o.verify.name;
  if (o.runtime_us != 0) {
    jo["runtime"] = std::to_string(o.runtime_us / 1000) + "ms";
  }
  if (o.ramp_time_us != 0) {
    jo["ramp_time"] = std::to_string(o.ramp_time_us / 1000) + "ms";
  }
  if (o.time_based) jo["time_based"] = "1";
  if (!o.description.empty()) jo["description"] = o.description;
  if (o.offset_increment != 0) {
    jo["offset_increment"] = std::to_string(o.offset_increment);
  }
  if (o.io_size != 0) jo["io_size"] = std::to_string(o.io_size);
  if (o.loops != 1) jo["loops"] = std::to_string(o.loops);
  if (o.number_ios != 0) jo["number_ios"] = std::to_string(o.number_ios);
  if (!o.cpus.empty()) {
    jo["cpus_allowed"] = FormatCpuList(o.cpus);
    if (o.cpus_split) jo["cpus_allowed_policy"] = "split";
  }
  if (o.startdelay_us != 0) {
    jo["startdelay"] = std::to_string(o.startdelay_us / 1000) + "ms";
  }
  if (o.stonewall) jo["stonewall"] = "1";
  if (o.new_group) jo["new_group"] = "1";
  if (!o.wait_for.empty()) jo["wait_for"] = o.wait_for;
  if (o.exitall) jo["exitall"] = "1";
  job["job options"] = jo;
  job["read"] = DirJson(r.read, r.seconds, bins);
  job["write"] = DirJson(r.write, r.seconds, bins);
  job["trim"] = DirJson(DirStats{}, r.seconds, false);  // as fio: never
  Json sync;
  sync["total_ios"] = r.sync.ios;
  sync["lat_ns"] = LatJson(r.sync.lat);
  job["sync"] = sync;
  job["job_runtime"] = static_cast<uint64_t>(r.seconds * 1000);
  // CPU is the process's (engine threads included), as a share of the run.
  job["usr_cpu"] = res.wall > 0 ? 100.0 * res.usr / res.wall : 0.0;
  job["sys_cpu"] = res.wall > 0 ? 100.0 * res.sys / res.wall : 0.0;
  job["ctx"] = res.ctx;
  job["aiokit"] = AiokitJson(e, res, run_ios);
  if (r.ss) {
    // fio's "steadystate" object.
    const SteadyStateResult& s = *r.ss;
    Json ss;
    ss["ss"] = s.ss;
    ss["duration"] = s.duration_s;
    ss["attained"] = s.attained ? 1 : 0;
    char crit[48];
    std::snprintf(crit, sizeof(crit), "%f%s", s.criterion,
                  e.job->ss_pct ? "%" : "");
    ss["criterion"] = crit;
    ss["max_deviation"] = s.max_deviation;
    ss["slope"] = s.slope;
    Json data;
    data["bw_mean"] = static_cast<uint64_t>(s.bw_mean);
    data["iops_mean"] = static_cast<uint64_t>(s.iops_mean);
    data["iops"] = s.iops;
    data["bw"] = s.bw;
    ss["data"] = data;
    job["steadystate"] = ss;
  }
  return job;
}

Json FioJson(Json jobs) {
  Json root;
  root["fio version"] = std::string("aiokit-") + AIOKIT_VERSION_STRING;
  root["timestamp"] = static_cast<uint64_t>(std::time(nullptr));
  root["jobs"] = std::move(jobs);
  return root;
}

void PrintReport(const BenchPlan& plan, const RunResult& res,
                 std::ostream& out) {
  const std::vector<Entry> entries = Entries(plan, res);
  const uint64_t ios = RunIos(res);
  if (plan.JsonOutput()) {
    Json jobs = Json::array();
    for (const Entry& e : entries)
      jobs.push_back(JobJson(e, res, ios, plan.output_format == "json+"));
    out << FioJson(std::move(jobs)).dump(2) << "\n";
  } else {
    for (const Entry& e : entries) PrintEntry(out, e);
    PrintCpu(out, res);
  }
}

std::string Ns(uint64_t ns) {
  char buf[32];
  if (ns >= 10'000'000) {
    std::snprintf(buf, sizeof(buf), "%.1fms", static_cast<double>(ns) / 1e6);
  } else if (ns >= 10'000) {
    std::snprintf(buf, sizeof(buf), "%.1fus", static_cast<double>(ns) / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%lluns",
                  static_cast<unsigned long long>(ns));
  }
  return buf;
}

std::string Failure(const RunResult& res) {
  for (const CloneResult& c : res.clones) {
    if (!c.first_error.empty()) return "I/O error: " + c.first_error;
  }
  for (const CloneResult& c : res.clones) {
    if (c.verify_failed != 0) {
      return "verify failed: " + std::to_string(c.verify_failed) + " of " +
             std::to_string(c.verify_checked) + " blocks; first: " +
             (c.verify_lines.empty() ? std::string("?") : c.verify_lines[0]);
    }
  }
  return {};
}

int ExitUsage(std::ostream& err, const std::string& line) {
  err << "aiokit bench: " << line << "\n";
  return kExitUsage;
}

}  // namespace aiokit::tool
