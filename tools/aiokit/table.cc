// --compare and --sweep: one run per row, one table (table.h).

#include "table.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bench.h"
#include "histogram.h"
#include "report.h"
#include "results.h"
#include "run.h"
#include "units.h"

namespace aiokit::tool {
namespace {

struct Row {
  std::string engine;               // as asked
  std::string value;                // the swept value, if any
  std::unique_ptr<BenchPlan> plan;  // what ran (run's jobs point into it)
  std::optional<RunResult> run;
  std::string refused;  // why the engine could not run here
};

struct RowFigures {
  double iops = 0, mib_s = 0, cpu_per_io_us = 0;
  uint64_t p50 = 0, p99 = 0;
};

RowFigures Figures(const RunResult& res) {
  RowFigures f;
  LatencyHistogram clat;
  uint64_t bytes = 0;
  double seconds = 0;
  for (const CloneResult& c : res.clones) {
    clat.Merge(c.read.clat);
    clat.Merge(c.write.clat);
    bytes += c.read.bytes + c.write.bytes;
    seconds = std::max(seconds, c.seconds);
  }
  const uint64_t ios = RunIos(res);
  if (seconds > 0) {
    f.iops = static_cast<double>(ios) / seconds;
    f.mib_s = static_cast<double>(bytes) / seconds / (1 << 20);
  }
  f.p50 = clat.Percentile(50);
  f.p99 = clat.Percentile(99);
  f.cpu_per_io_us =
      ios != 0 ? (res.usr + res.sys) * 1e6 / static_cast<double>(ios) : 0;
  return f;
}

// The plan of one row: `engine` (empty: as asked) and the swept value.
// On failure: a UsageError (values are checked when parsed; kept for safety).
Result<BenchPlan> WithValue(const BenchPlan& plan, const std::string& engine,
                            const std::string& value) {
  BenchPlan p = plan;
  p.compare = false;
  p.sweep = Sweep{};
  for (JobOptions& j : p.jobs) {
    if (!engine.empty()) j.engine = engine;
    if (!plan.sweep.option.empty()) {
      if (Status bad = ApplyOption(p, j, plan.sweep.option, value, true,
                                   "--sweep " + plan.sweep.option);
          !bad.ok()) {
        return bad;
      }
    }
  }
  return p;
}

}  // namespace

int RunTable(const BenchPlan& plan, std::ostream& out, std::ostream& err,
             bool tty) {
  // Every combination is checked before the first run.
  for (const JobOptions& j : plan.jobs) {
    if (Status bad = ValidateJob(j, plan); !bad.ok()) {
      return ExitUsage(err, bad.context());
    }
  }
  std::vector<std::string> engines;
  if (plan.compare) {
    // sync last: the baseline, one request at a time in the caller's thread.
    engines = {"linux-aio", "io_uring", "threads", "sync"};
  } else {
    engines = {""};
  }
  std::vector<std::string> values = plan.sweep.values;
  if (values.empty()) values = {""};
  std::vector<Row> rows;
  std::string failure;
  for (const std::string& engine : engines) {
    for (const std::string& value : values) {
      Result<BenchPlan> with = WithValue(plan, engine, value);
      if (!with.ok()) return ExitUsage(err, with.status().context());
      Row row{engine,
              value,
              std::make_unique<BenchPlan>(std::move(*with)),
              std::nullopt,
              {}};
      const BenchPlan& p = *row.plan;
      if (tty) {
        err << "\r" << (engine.empty() ? "" : engine + " ")
            << (value.empty() ? "" : plan.sweep.option + "=" + value)
            << "...\033[K" << std::flush;
      }
      RunOutcome got = RunOnce(p, err, tty);
      if (auto* res = std::get_if<RunResult>(&got)) {
        row.run = std::move(*res);
        if (failure.empty()) failure = Failure(*row.run);
      } else if (const auto* refused = std::get_if<EngineRefused>(&got)) {
        if (!plan.compare) return ExitUsage(err, refused->Line());
        row.refused = refused->reason;
      } else {
        return ExitUsage(err, std::get<Status>(got).context());
      }
      rows.push_back(std::move(row));
    }
  }
  if (tty) err << "\r\033[K" << std::flush;
  const std::string& swept = plan.sweep.option;
  if (plan.JsonOutput()) {
    Json jobs = Json::array();
    Json table = Json::array();
    for (const Row& row : rows) {
      Json t;
      t["engine"] = row.engine.empty() ? Json(nullptr) : Json(row.engine);
      if (!swept.empty()) t[swept] = row.value;
      if (!row.run) {
        t["refused"] = row.refused;
        table.push_back(t);
        continue;
      }
      const RunResult& res = *row.run;
      if (row.engine.empty() && !res.clones.empty()) {
        t["engine"] = res.clones[0].engine;
      }
      const RowFigures f = Figures(res);
      t["iops"] = f.iops;
      t["mib_s"] = f.mib_s;
      t["clat_p50_ns"] = f.p50;
      t["clat_p99_ns"] = f.p99;
      t["cpu_per_io_us"] = f.cpu_per_io_us;
      table.push_back(t);
      for (const Entry& e : Entries(*row.plan, res)) {
        Json j = JobJson(e, res, RunIos(res));
        if (!swept.empty()) {
          j["aiokit"]["sweep"] = {{"option", swept}, {"value", row.value}};
        }
        jobs.push_back(std::move(j));
      }
    }
    Json root = FioJson(std::move(jobs));
    root["aiokit_table"] = table;
    out << root.dump(2) << "\n";
  } else {
    char line[256];
    std::snprintf(line, sizeof(line), "%-10s %-8s %10s %10s %10s %10s %10s\n",
                  "engine", swept.empty() ? "" : swept.c_str(), "IOPS", "MiB/s",
                  "clat p50", "clat p99", "CPU/IO");
    out << line;
    for (const Row& row : rows) {
      std::string name = row.engine;
      if (name.empty() && row.run && !row.run->clones.empty()) {
        name = row.run->clones[0].engine;
      }
      if (!row.run) {
        out << name << "  refused: " << row.refused << "\n";
        continue;
      }
      const RowFigures f = Figures(*row.run);
      std::snprintf(line, sizeof(line),
                    "%-10s %-8s %10s %10.1f %10s %10s %8.2fus\n", name.c_str(),
                    row.value.c_str(), FormatCount(f.iops).c_str(), f.mib_s,
                    Ns(f.p50).c_str(), Ns(f.p99).c_str(), f.cpu_per_io_us);
      out << line;
    }
  }
  if (!failure.empty()) {
    err << "aiokit bench: " << failure << "\n";
    return kExitIoError;
  }
  return kExitOk;
}

}  // namespace aiokit::tool
