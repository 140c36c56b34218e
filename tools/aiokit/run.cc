// Starting the clones, the progress line, and collecting results (run.h).

#include "run.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <ostream>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "clone.h"
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

}  // namespace

RunOutcome RunOnce(const BenchPlan& plan, std::ostream& err, bool tty) {
  for (const JobOptions& j : plan.jobs) {
    if (Status bad = ValidateJob(j, plan); !bad.ok()) return bad;
  }
  Targets targets;
  std::vector<Target*> target_of;
  RunResult res;
  for (const JobOptions& j : plan.jobs) {
    const std::string suffix = JobSuffix(plan, j);
    Target* shared = nullptr;
    for (unsigned c = 0; c < j.numjobs; ++c) {
      // A named file is shared by the clones; the default temporary file is
      // one per clone, as fio gives each clone a file of its own.
      if (shared == nullptr || j.filename.empty()) {
        targets.all.push_back(std::make_unique<Target>());
        if (Status bad = OpenTarget(j, suffix, *targets.all.back());
            !bad.ok()) {
          return bad;
        }
        shared = targets.all.back().get();
      }
      target_of.push_back(shared);
      res.job_of.push_back(&j);
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
  const auto seed_base = static_cast<uint64_t>(::getpid()) * 7919 + 17;
  for (size_t i = 0; i < n; ++i) {
    // std::thread reports that it could not start a thread only by throwing
    // std::system_error; it is caught here, at that one call, and becomes a
    // usage error like any other.
    try {
      threads.emplace_back([&, i] {
        const JobOptions& job = *res.job_of[i];
        const uint64_t seed = seed_base + i * 0x9E3779B97F4A7C15ULL;
        results[i] =
            job.api == "device"
                ? RunDeviceClone(job, static_cast<unsigned>(i), target_of[i],
                                 &shared, &progress[i], seed)
                : RunClone(job, static_cast<unsigned>(i), target_of[i], &shared,
                           &progress[i], seed);
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
  for (const JobOptions& j : plan.jobs) ramp = std::max(ramp, j.ramp_time_us);
  uint64_t expect_us = 0;  // for the ETA: the longest runtime, if any
  for (const JobOptions& j : plan.jobs) {
    expect_us = std::max(expect_us, j.ramp_time_us + j.runtime_us);
  }
  uint64_t total_bytes = 0;
  for (const uint64_t size : res.sizes) total_bytes += size;
  bool ramp_done = ramp == 0;
  bool printed = false;
  uint64_t last_ios = 0, last_bytes = 0;
  Clock::time_point last_t = shared.start;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(shared.mu);
      if (shared.abort) break;
      const bool over = shared.cv.wait_for(
          lock, std::chrono::milliseconds(ramp_done ? 1000 : 50),
          [&] { return shared.running == 0; });
      if (over) break;
    }
    const Clock::time_point now = Clock::now();
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
  if (printed) err << "\r\033[K" << std::flush;
  if (shared.refused) return *shared.refused;
  if (!shared.usage.ok()) return shared.usage;
  res.usr = CpuSeconds(shared.ru_end.ru_utime) - CpuSeconds(ru0.ru_utime);
  res.sys = CpuSeconds(shared.ru_end.ru_stime) - CpuSeconds(ru0.ru_stime);
  res.ctx = static_cast<uint64_t>((shared.ru_end.ru_nvcsw - ru0.ru_nvcsw) +
                                  (shared.ru_end.ru_nivcsw - ru0.ru_nivcsw));
  res.wall = std::chrono::duration<double>(shared.end - shared.start).count();
  res.clones = std::move(results);
  targets.Keep();
  return res;
}

}  // namespace aiokit::tool
