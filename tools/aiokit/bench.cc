// `aiokit bench`'s entry point: one run and its report, or the --compare /
// --sweep table (bench.h).

#include "bench.h"

#include <ostream>
#include <string>
#include <variant>

#include "report.h"
#include "results.h"
#include "run.h"
#include "table.h"

namespace aiokit::tool {

int RunBench(const BenchPlan& plan, std::ostream& out, std::ostream& err,
             bool err_is_tty) {
  if (plan.compare || !plan.sweep.option.empty()) {
    return RunTable(plan, out, err, err_is_tty);
  }
  RunOutcome got = RunOnce(plan, err, err_is_tty);
  if (const auto* bad = std::get_if<Status>(&got)) {
    return ExitUsage(err, bad->context());
  }
  if (const auto* refused = std::get_if<EngineRefused>(&got)) {
    return ExitUsage(err, refused->Line());
  }
  const RunResult& res = std::get<RunResult>(got);
  PrintReport(plan, res, out);
  const std::string failure = Failure(res);
  if (!failure.empty()) {
    err << "aiokit bench: " << failure << "\n";
    return kExitIoError;
  }
  return kExitOk;
}

}  // namespace aiokit::tool
