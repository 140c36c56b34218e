// Starting the clones, the progress line, and collecting results (run.h).

#include "run.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "aiokit/request.h"
#include "clone.h"
#include "iolog.h"
#include "random.h"
#include "steady.h"
#include "target.h"
#include "units.h"

namespace aiokit::tool {
namespace {

double CpuSeconds(const timeval& tv) {
  return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
}

std::string JobSuffix(const BenchPlan& plan, const JobOptions& j) {
  return plan.jobs.size() > 1 || j.name != "aiokit" ? " (job " + j.name + ")"
                                                    : "";
}

// Runs `jobs` (of `plan`) together: RunOnce for one group.
// Pins the calling thread (clone `c` of `job`) to the job's CPUs, before the
// clone makes its engine, whose threads inherit the affinity; `cpus` is set
// to the CPUs the thread may then run on.
// On failure: a UsageError naming the option and the errno.
Status PinClone(const JobOptions& job, unsigned c, std::string* cpus,
                std::string* ioprio, std::string* mempolicy) {
  if (job.mempolicy_mode >= 0) {
    // numa_mem_policy: this thread's, before it allocates its buffers.
    std::array<unsigned long, 1024 / 64> mask{};
    for (const unsigned n : job.mempolicy_nodes)
      mask[n / 64] |= 1UL << (n % 64);
    const bool nodes = !job.mempolicy_nodes.empty();
    if (::syscall(SYS_set_mempolicy, job.mempolicy_mode,
                  nodes ? mask.data() : nullptr, nodes ? 1024 + 1 : 0) != 0) {
      const int e = errno;
      const char* name = strerrorname_np(e);
      return UsageError(job.mempolicy_option + " (job " + job.name +
                        ", clone " + std::to_string(c) +
                        "): set_mempolicy failed (" +
                        (name != nullptr ? name : std::to_string(e)) + ")");
    }
    // As the kernel has it: MODE:NODES.
    int mode = -1;
    mask.fill(0);
    if (::syscall(SYS_get_mempolicy, &mode, mask.data(), 1024 + 1, nullptr,
                  0) == 0) {
      static constexpr const char* kModes[] = {"default", "prefer", "bind",
                                               "interleave", "local"};
      std::vector<unsigned> got;
      for (unsigned n = 0; n < 1024; ++n) {
        if ((mask[n / 64] >> (n % 64) & 1) != 0) got.push_back(n);
      }
      const auto m = static_cast<unsigned>(mode);
      *mempolicy = std::string(m < 5 ? kModes[m] : "?") +
                   (got.empty() ? "" : ":" + FormatCpuList(got));
    }
  }
  if (!job.cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (job.cpus_split) {
      CPU_SET(job.cpus[c % job.cpus.size()], &set);
    } else {
      for (const unsigned cpu : job.cpus) CPU_SET(cpu, &set);
    }
    if (::sched_setaffinity(0, sizeof(set), &set) != 0) {
      const int e = errno;
      const char* name = strerrorname_np(e);
      return UsageError(job.cpus_option + " (job " + job.name + ", clone " +
                        std::to_string(c) + "): sched_setaffinity failed (" +
                        (name != nullptr ? name : std::to_string(e)) + ")");
    }
  }
  if (job.prio >= 0 || job.prioclass >= 0) {
    // fio: best-effort unless prioclass says; level 0 unless prio says (the
    // kernel ignores the level of the idle class).
    const auto cls = static_cast<IoPrioClass>(
        job.prioclass >= 0 ? job.prioclass
                           : static_cast<int>(IoPrioClass::kBestEffort));
    const auto level = static_cast<uint8_t>(job.prio >= 0 ? job.prio : 0);
    // ioprio_set(IOPRIO_WHO_PROCESS, 0: this thread); the engine's threads,
    // made after this, inherit it.
    if (::syscall(SYS_ioprio_set, 1, 0, IoPriority(cls, level)) != 0) {
      const int e = errno;
      const char* name = strerrorname_np(e);
      return UsageError("--prio/--prioclass (job " + job.name + ", clone " +
                        std::to_string(c) + "): ioprio_set failed (" +
                        (name != nullptr ? name : std::to_string(e)) +
                        (e == EPERM ? "; the realtime class needs "
                                      "CAP_SYS_ADMIN"
                                    : "") +
                        ")");
    }
  }
  // The thread's I/O priority as the kernel has it: class/level.
  const long got = ::syscall(SYS_ioprio_get, 1, 0);
  if (got >= 0) {
    static constexpr const char* kClasses[] = {"none", "rt", "be", "idle"};
    const auto cls = static_cast<unsigned>(got) >> 13U;
    *ioprio = std::string(cls < 4 ? kClasses[cls] : "?") + "/" +
              std::to_string(static_cast<unsigned>(got) & 0x1FFFU);
  }
  cpu_set_t now;
  CPU_ZERO(&now);
  if (::sched_getaffinity(0, sizeof(now), &now) == 0) {
    std::vector<unsigned> list;
    for (unsigned cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &now)) list.push_back(cpu);
    }
    *cpus = FormatCpuList(list);
  }
  return Status();
}

// Opens clone `c`'s file of job `j` (or, with nrfiles, its files) into `t`.
// On failure: a UsageError; what it created is in `t`, for RemoveCreated.
Status OpenClone(const JobOptions& j, unsigned c, size_t first_clone,
                 const std::string& suffix, Target& t) {
  const unsigned files = j.nrfiles;
  uint64_t smallest = UINT64_MAX;
  for (unsigned f = 0; f < files; ++f) {
    // offset_increment: a region of its own, the same file.
    JobOptions at = j;
    at.offset = j.offset + c * j.offset_increment;
    // nrfiles: fio divides the size among the files.
    if (files > 1) {
      at.size = std::max(j.size / files / j.MinBs() * j.MinBs(), j.MaxBs());
    }
    if (j.NamedFiles()) {
      Result<std::string> path = JobFilePath(j, c, f);
      if (!path.ok()) return path.status();
      at.filename = *path;
    } else if (!j.filename.empty() && !j.directory.empty() &&
               j.filename.front() != '/') {
      // fio: a named file goes in the first directory listed.
      at.filename =
          j.directory.substr(0, j.directory.find(':')) + "/" + j.filename;
    }
    if (j.filesize_min != 0) {
      // Each file's size, drawn in multiples of the smallest block size.
      const uint64_t unit = j.MinBs();
      Rng rng(j.randseed + first_clone + c + 1 + f * 0x9E3779B9ULL);
      at.size = j.filesize_min / unit * unit +
                rng.Below((j.filesize_max - j.filesize_min) / unit + 1) * unit;
      at.size = std::max(at.size, j.MaxBs());
      at.size_set = true;
    }
    Target one;
    Target& into = f == 0 ? t : one;
    Status bad = OpenTarget(at, suffix, into);
    std::string unlink_path;
    if (j.unlink && !into.block_device && !at.filename.empty()) {
      unlink_path = at.filename;
    }
    if (f == 0) {
      t.unlink_path = unlink_path;
    } else {
      // Owned by the clone's target from here, so that it is removed too.
      t.extra.push_back({std::move(one.file), one.remove_path, unlink_path});
      t.verify_layout = t.verify_layout && one.verify_layout;
    }
    if (!bad.ok()) return bad;
    smallest = std::min(smallest, into.size);
  }
  if (files == 1) return Status();
  // Every file holds the same part; roundrobin turns of whole blocks.
  const std::string_view type = std::string_view(j.file_service_type)
                                    .substr(0, j.file_service_type.find(':'));
  uint64_t blocks = 1;
  if (const size_t colon = j.file_service_type.find(':');
      colon != std::string::npos) {
    blocks = std::max<uint64_t>(
        1, std::strtoull(j.file_service_type.c_str() + colon + 1, nullptr, 10));
  }
  t.turn = type == "sequential" ? 0 : blocks * j.bs;
  t.file_size = t.turn != 0 ? smallest / t.turn * t.turn : smallest;
  if (t.file_size == 0) {
    return UsageError("--nrfiles=" + std::to_string(files) + suffix +
                      ": each file's " + std::to_string(smallest) +
                      " bytes are less than one turn of --file_service_type=" +
                      j.file_service_type + " (" + std::to_string(t.turn) +
                      " bytes)");
  }
  t.size = t.file_size * files;
  t.shown += " and " + std::to_string(files - 1) + " more";
  return Status();
}

// `first_clone` is the number of the group's first clone in the run (for
// the clones' random seeds).
RunOutcome RunGroup(const BenchPlan& plan,
                    const std::vector<const JobOptions*>& jobs,
                    size_t first_clone, std::ostream& err, bool tty) {
  Targets targets;
  std::vector<Target*> target_of;
  std::vector<unsigned> clone_no;  // per clone: its number within its job
  RunResult res;
  for (const JobOptions* jp : jobs) {
    const JobOptions& j = *jp;
    const std::string suffix = JobSuffix(plan, j);
    Target* shared = nullptr;
    for (unsigned c = 0; c < j.numjobs; ++c) {
      // A named file is shared by the clones; the default temporary file is
      // one per clone, as fio gives each clone a file of its own.
      if (shared == nullptr || j.filename.empty() || j.offset_increment != 0) {
        targets.all.push_back(std::make_unique<Target>());
        Target& t = *targets.all.back();
        if (Status bad = OpenClone(j, c, first_clone, suffix, t); !bad.ok()) {
          return bad;
        }
        shared = &t;
      }
      target_of.push_back(shared);
      res.job_of.push_back(&j);
      clone_no.push_back(c);
      res.shown.push_back(shared->shown);
      res.sizes.push_back(shared->size);
    }
  }
  const size_t n = target_of.size();
  RunShared shared;
  {
    std::random_device rd;
    shared.inject_seed =
        ((uint64_t{rd()} << 32) | rd()) & ((uint64_t{1} << 62) - 1);
    if (shared.inject_seed == 0) shared.inject_seed = 1;
  }
  std::vector<Progress> progress(n);
  std::vector<CloneResult> results(n);
  std::vector<std::thread> threads;
  shared.running = static_cast<unsigned>(n);
  for (const JobOptions* j : jobs) shared.running_of[j->name] += j->numjobs;
  // A different sequence each run only with randrepeat=0 (fio's default is
  // the same sequence every run; randseed picks it).
  std::random_device rd;
  const uint64_t run_seed = (uint64_t{rd()} << 32) | rd();
  for (size_t i = 0; i < n; ++i) {
    // std::thread reports that it could not start a thread only by throwing
    // std::system_error; it is caught here, at that one call, and becomes a
    // usage error like any other.
    try {
      threads.emplace_back([&, i] {
        const JobOptions& job = *res.job_of[i];
        std::string cpus, ioprio, mempolicy;
        if (Status bad = PinClone(job, clone_no[i], &cpus, &ioprio, &mempolicy);
            !bad.ok()) {
          // As a clone that cannot set up: the run does not start.
          std::lock_guard<std::mutex> lock(shared.mu);
          if (!shared.refused && shared.usage.ok()) shared.usage = bad;
          shared.abort = true;
          ++shared.ready;
          shared.cv.notify_all();
          return;
        }
        const uint64_t base = job.randseed_set ? job.randseed
                              : job.randrepeat ? 0x5EEDULL
                                               : run_seed;
        const uint64_t seed = base + (first_clone + i) * 0x9E3779B97F4A7C15ULL;
        // The driver --api names (job.cc accepts asio only when built in).
        auto* const run = job.api == "device" ? &RunDeviceClone
                          : job.api == "coro" ? &RunCoroClone
#if AIOKIT_TOOL_HAVE_ASIO
                          : job.api == "asio" ? &RunAsioClone
#endif
                                              : &RunClone;
        results[i] = run(job, static_cast<unsigned>(i), target_of[i], &shared,
                         &progress[i], seed);
        results[i].cpus = std::move(cpus);
        results[i].ioprio = std::move(ioprio);
        results[i].mempolicy = std::move(mempolicy);
      });
    } catch (const std::system_error& e) {
      // The clones started so far are told to leave, then joined.
      {
        std::lock_guard<std::mutex> lock(shared.mu);
        shared.abort = true;
        shared.cv.notify_all();
      }
      for (std::thread& t : threads) t.join();
      return UsageError("--numjobs: could not start clone " +
                        std::to_string(i) + " of " + std::to_string(n) + " (" +
                        e.what() + ")");
    }
  }
  rusage ru0;
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    shared.cv.wait(lock, [&] { return shared.ready == n; });
    if (!shared.abort) {
      shared.start = Clock::now();
      ::getrusage(RUSAGE_SELF, &ru0);
      shared.go = true;
    }
    shared.cv.notify_all();
  }
  // Ramp: the CPU that counts starts when measuring does.
  uint64_t ramp = 0;
  for (const JobOptions* j : jobs) ramp = std::max(ramp, j->ramp_time_us);
  uint64_t expect_us = 0;  // for the ETA: the longest runtime, if any
  for (const JobOptions* j : jobs) {
    if (j->runtime_us != 0) {
      expect_us = std::max(expect_us,
                           j->startdelay_us + j->ramp_time_us + j->runtime_us);
    }
  }
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    total_bytes += std::min(res.job_of[i]->IoBytes(res.sizes[i]),
                            UINT64_MAX - total_bytes);
  }
  // steadystate: a unit per job (group_reporting) or per clone, sampled
  // once a second.
  struct SteadyUnit {
    SteadyState ss;
    std::vector<size_t> clones;
    bool done = false;
  };
  std::vector<SteadyUnit> steady;
  for (size_t i = 0; i < n; ++i) {
    const JobOptions& j = *res.job_of[i];
    if (j.ss_metric.empty()) continue;
    if (plan.group_reporting && !steady.empty() &&
        res.job_of[steady.back().clones.front()] == &j) {
      steady.back().clones.push_back(i);
      continue;
    }
    const Clock::time_point from =
        shared.start + std::chrono::microseconds(j.startdelay_us +
                                                 j.ramp_time_us + j.ss_ramp_us);
    steady.push_back({SteadyState(j, from), {i}});
  }
  bool ramp_done = ramp == 0;
  bool printed = false;
  uint64_t last_ios = 0, last_bytes = 0;
  Clock::time_point last_t = shared.start;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(shared.mu);
      if (shared.abort) break;
      Clock::time_point until =
          Clock::now() + std::chrono::milliseconds(ramp_done ? 1000 : 50);
      for (const SteadyUnit& u : steady) {
        if (!u.done) until = std::min(until, u.ss.next());
      }
      const bool over = shared.cv.wait_until(
          lock, until, [&] { return shared.running == 0; });
      if (over) break;
    }
    const Clock::time_point now = Clock::now();
    for (SteadyUnit& u : steady) {
      if (u.done || now < u.ss.next()) continue;
      uint64_t ios = 0, bytes = 0;
      for (size_t i : u.clones) {
        ios += progress[i].ios.load(std::memory_order_relaxed);
        bytes += progress[i].bytes.load(std::memory_order_relaxed);
      }
      if (u.ss.Sample(now, ios, bytes)) {
        u.done = true;
        for (size_t i : u.clones) {
          progress[i].stop.store(true, std::memory_order_relaxed);
        }
      }
    }
    if (!ramp_done && now >= shared.start + std::chrono::microseconds(ramp)) {
      ::getrusage(RUSAGE_SELF, &ru0);
      ramp_done = true;
    }
    if (tty && ramp_done) {
      uint64_t ios = 0, bytes = 0;
      for (const Progress& p : progress) {
        ios += p.ios.load(std::memory_order_relaxed);
        bytes += p.bytes.load(std::memory_order_relaxed);
      }
      const double dt = std::chrono::duration<double>(now - last_t).count();
      const double el =
          std::chrono::duration<double>(now - shared.start).count();
      char line[160];
      std::string eta = "--";
      double left = -1;
      if (expect_us != 0) {
        left = static_cast<double>(expect_us) / 1e6 - el;
      } else if (bytes != 0 && el > 0) {
        // Jobs that end when --size is done: at the rate so far.
        left = static_cast<double>(total_bytes - std::min(bytes, total_bytes)) /
               (static_cast<double>(bytes) / el);
      }
      if (left >= 0) {
        char b[32];
        std::snprintf(b, sizeof(b), "%.0fs", left);
        eta = b;
      }
      std::snprintf(
          line, sizeof(line),
          "\r[%.0fs elapsed, eta %s] IOPS=%s, BW=%s/s\033[K", el, eta.c_str(),
          FormatCount(dt > 0 ? static_cast<double>(ios - last_ios) / dt : 0)
              .c_str(),
          FormatBytes(
              static_cast<uint64_t>(
                  dt > 0 ? static_cast<double>(bytes - last_bytes) / dt : 0))
              .c_str());
      err << line << std::flush;
      printed = true;
      last_ios = ios;
      last_bytes = bytes;
      last_t = now;
    }
  }
  for (std::thread& t : threads) t.join();
  for (const SteadyUnit& u : steady) {
    for (size_t i : u.clones) results[i].ss = u.ss.result();
  }
  if (printed) err << "\r\033[K" << std::flush;
  if (shared.refused) return *shared.refused;
  if (!shared.usage.ok()) return shared.usage;
  res.usr = CpuSeconds(shared.ru_end.ru_utime) - CpuSeconds(ru0.ru_utime);
  res.sys = CpuSeconds(shared.ru_end.ru_stime) - CpuSeconds(ru0.ru_stime);
  res.ctx = static_cast<uint64_t>((shared.ru_end.ru_nvcsw - ru0.ru_nvcsw) +
                                  (shared.ru_end.ru_nivcsw - ru0.ru_nivcsw));
  res.wall = std::chrono::duration<double>(shared.end - shared.start).count();
  res.start = shared.start;
  res.end = shared.end;
  res.clones = std::move(results);
  targets.Keep();
  return res;
}

}  // namespace

RunOutcome RunOnce(const BenchPlan& plan, std::ostream& err, bool tty) {
  for (const JobOptions& j : plan.jobs) {
    if (Status bad = ValidateJob(j, plan); !bad.ok()) return bad;
  }
  // The groups, split where a job waits for those before it (stonewall).
  std::vector<std::vector<const JobOptions*>> groups;
  for (const JobOptions& j : plan.jobs) {
    if (groups.empty() || j.stonewall) groups.emplace_back();
    groups.back().push_back(&j);
  }
  RunResult all;
  for (const std::vector<const JobOptions*>& group : groups) {
    RunOutcome got = RunGroup(plan, group, all.clones.size(), err, tty);
    auto* res = std::get_if<RunResult>(&got);
    if (res == nullptr) return got;
    if (&group == &groups.front()) all.start = res->start;
    all.end = res->end;
    const double began =
        std::chrono::duration<double>(res->start - all.start).count();
    const double ended =
        std::chrono::duration<double>(res->end - all.start).count();
    for (size_t i = 0; i < res->clones.size(); ++i) {
      res->clones[i].group_began = began;
      res->clones[i].group_ended = ended;
      all.clones.push_back(std::move(res->clones[i]));
      all.job_of.push_back(res->job_of[i]);
      all.shown.push_back(std::move(res->shown[i]));
      all.sizes.push_back(res->sizes[i]);
    }
    all.usr += res->usr;
    all.sys += res->sys;
    all.wall += res->wall;
    all.ctx += res->ctx;
  }
  std::vector<const IoLog*> logs;
  for (const CloneResult& c : all.clones) logs.push_back(&c.log);
  if (Status bad = WriteIoLogs(all.job_of, logs); !bad.ok()) {
    return UsageError(bad.ToString());
  }
  return all;
}

}  // namespace aiokit::tool
