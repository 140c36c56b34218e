// aiokit: the command-line tool.
//   aiokit bench [fio-style options]   run one job and report IOPS, bandwidth,
//   latency and CPU aiokit version                     print the version

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "aiokit/version.h"
#include "bench.h"
#include "info.h"
#include "units.h"

namespace {

using aiokit::tool::BenchOptions;

// A CLI11 validator/transformer for fio-style sizes ("4k", "1m", "2g").
CLI::Validator SizeValidator(uint64_t* out) {
  return CLI::Validator(
      [out](std::string& text) -> std::string {
        std::optional<uint64_t> v = aiokit::tool::ParseSize(text);
        if (!v)
          return "'" + text + "' is not a size (examples: 4096, 4k, 1m, 2g)";
        *out = *v;
        return {};
      },
      "SIZE");
}

CLI::Validator DurationValidator(uint64_t* out) {
  return CLI::Validator(
      [out](std::string& text) -> std::string {
        std::optional<uint64_t> v = aiokit::tool::ParseDurationUs(text);
        if (!v)
          return "'" + text +
                 "' is not a duration (examples: 5, 5s, 500ms, 2m)";
        *out = *v;
        return {};
      },
      "TIME");
}

}  // namespace

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  CLI::App app{"aiokit: asynchronous block and file I/O for storage engines"};
  app.require_subcommand(1);
  app.set_version_flag("--version",
                       std::string("aiokit ") + AIOKIT_VERSION_STRING);

  BenchOptions b;
  std::string size_text, bs_text, runtime_text;
  CLI::App* bench =
      app.add_subcommand("bench",
                         "Run one fio-style job on an aiokit engine and report "
                         "IOPS, bandwidth, latency, CPU");
  bench->add_option("--name", b.name, "Job name")->capture_default_str();
  bench->add_option("--filename", b.filename,
                    "File or block device (default: a temporary file, removed "
                    "after the run)");
  bench
      ->add_option("--size", size_text,
                   "Bytes of the file to use (default 128m)")
      ->check(SizeValidator(&b.size));
  bench->add_option("--rw", b.rw, "read, write, randread or randwrite")
      ->capture_default_str();
  bench->add_option("--bs", bs_text, "Block size (default 4k)")
      ->check(SizeValidator(&b.bs));
  bench->add_option("--iodepth", b.iodepth, "Requests kept in flight")
      ->capture_default_str();
  bench
      ->add_option("--runtime", runtime_text,
                   "Stop after this long (default: when --size is done)")
      ->check(DurationValidator(&b.runtime_us));
  bench->add_flag("--time_based", b.time_based,
                  "Run for --runtime even when --size is done");
  bench->add_option("--direct", b.direct, "1: O_DIRECT (default), 0: buffered")
      ->capture_default_str();
  bench
      ->add_option("--engine,--ioengine", b.engine,
                   "auto, linux-aio, io_uring or threads (default: "
                   "$AIOKIT_ENGINE, else auto)")
      ->capture_default_str();
  bench->add_option("--spin_us", b.spin_us,
                    "aiokit: watch the completion ring up to this many "
                    "microseconds before sleeping (0: never; default: the "
                    "library's, 50)");
  bench->add_flag("--spin_always", b.spin_always,
                  "aiokit: spin every time (default: only while spinning "
                  "catches completions)");
  bench->add_flag("--fixedbufs", b.fixedbufs,
                  "io_uring: register the I/O buffers with the kernel");
  bench->add_flag("--registerfiles", b.registerfiles,
                  "io_uring: register the file with the kernel");
  bench->add_flag("--sqthread_poll", b.sqthread_poll,
                  "io_uring: a kernel thread polls the submission queue");
  bench->add_option("--sqthread_poll_cpu", b.sqthread_poll_cpu,
                    "io_uring: the CPU of that kernel thread");
  bench->add_flag("--hipri", b.hipri,
                  "io_uring: poll for completions (IORING_SETUP_IOPOLL)");
  bench->add_option("--threads_min", b.threads_min,
                    "threads engine: workers kept when idle");
  bench->add_option("--threads_max", b.threads_max,
                    "threads engine: most workers (default: 2 per CPU, at "
                    "least 4)");
  bench->add_flag("--threads_ordered", b.threads_ordered,
                  "threads engine: requests on one fd in submission order");
  bench->add_option("--output-format", b.output_format, "normal or json")
      ->capture_default_str();

  aiokit::tool::InfoOptions io;
  CLI::App* info = app.add_subcommand(
      "info",
      "Which engines this kernel and process allow and why not, what io_uring "
      "offers, the limits, and whether O_DIRECT works at a path");
  info->add_option("--filename", io.filename,
                   "A file, block device or directory to probe for O_DIRECT");
  info->add_option("--output-format", io.output_format, "normal or json")
      ->capture_default_str();

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
  b.size_set = !size_text.empty();
  return aiokit::tool::RunBench(b, std::cout, std::cerr);
}
