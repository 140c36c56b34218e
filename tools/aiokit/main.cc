// aiokit: the command-line tool.
//   aiokit bench [fio-style options] [jobfile...]  run jobs and report IOPS,
//                                                  bandwidth, latency and CPU
//   aiokit info [--filename=PATH]                  what this machine allows
//   aiokit version                                 print the version

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "aiokit/version.h"
#include "bench.h"
#include "info.h"

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  // `aiokit bench` parses its own options: fio's names, fio's job files, and
  // every unknown option refused by name.
  if (argc >= 2 && std::string(argv[1]) == "bench") {
    std::vector<std::string> args(argv + 2, argv + argc);
    aiokit::Result<aiokit::tool::BenchPlan> plan =
        aiokit::tool::ParseBenchArgs(args);
    if (!plan.ok()) {
      std::cerr << "aiokit bench: " << plan.status().context() << "\n";
      return aiokit::tool::kExitUsage;
    }
    if (plan->help) {
      std::cout << aiokit::tool::BenchHelp();
      return 0;
    }
    return aiokit::tool::RunBench(*plan, std::cout, std::cerr,
                                  ::isatty(STDERR_FILENO) != 0);
  }
  CLI::App app{"aiokit: asynchronous block and file I/O for storage engines"};
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       std::string("aiokit ") + AIOKIT_VERSION_STRING);

  aiokit::tool::InfoOptions io;
  CLI::App* info = app.add_subcommand(
      "info",
      "Which engines this kernel and process allow and why not, what io_uring "
      "offers, the limits, and whether O_DIRECT works at a path");
  info->add_option("--filename", io.filename,
                   "A file, block device or directory to probe for O_DIRECT");
  info->add_option("--output-format", io.output_format, "normal or json")
      ->capture_default_str();

  app.add_subcommand("bench",
                     "Run fio-style jobs on aiokit's engines and report IOPS, "
                     "bandwidth, latency, CPU (aiokit bench --help)");
  app.add_subcommand("version", "Print the version");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    // --help and --version exit 0; every bad option or value exits 2.
    return code == 0 ? 0 : aiokit::tool::kExitUsage;
  }
  if (app.got_subcommand("version")) {
    std::printf("aiokit %s\n", AIOKIT_VERSION_STRING);
    return 0;
  }
  if (app.got_subcommand("info")) {
    return aiokit::tool::RunInfo(io, std::cout, std::cerr);
  }
  return 0;
}
