// libFuzzer target: `aiokit bench`'s option and job-file parser
// (tools/aiokit/job.cc). The first byte picks the mode:
//  - even: the rest is a command line, split into arguments at NUL and
//    newline bytes, for ParseBenchArgs;
//  - odd: the rest is a job file's text for ParseJobFile.
// Then ValidateJob on every job of the plan.
//
// Checked: the parser returns a plan (at least one job) or a UsageError (a
// Status of Errc::kInvalidArgument) with one non-empty line; so does
// ValidateJob; a job that validates has a region [offset, offset + size)
// within the largest file offset; no exception escapes (errors are values),
// nothing crashes or aborts, no ASan or UBSan report, and it creates no file
// (the parser must not open targets): the target's private temporary
// directory holds only the job file the target wrote there.
//
// A job file named on a command line is read by the parser. Such names are
// made to resolve in the private directory: "job.fio" (a fixed job file
// written at start-up) exists, other plain names do not, and a name with a
// '/' (which could reach a FIFO or /dev/zero) is replaced by "job.fio".

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// Relative to this file, so that clang-tidy finds it with the compile
// commands of a build without the fuzz targets.
#include "../tools/aiokit/job.h"

namespace {

constexpr const char* kJobFile = "job.fio";
// A job file like the ones tests/cli uses.
constexpr const char* kJobText =
    "; two jobs\n[global]\nsize=4m\n# a comment\nioengine=libaio\n"
    "iodepth=4\n\n[reader]\nrw=randread\nbs=4k\n\n[writer]\nrw=write\n"
    "bs=8k\nfsync=16\n";

std::string dir;  // the private directory

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_bench_options: %s\n", what.c_str());
  std::abort();
}

void RemoveDir() {
  (void)::unlink((dir + "/" + kJobFile).c_str());
  (void)::rmdir(dir.c_str());
}

// The names in the private directory other than ".", ".." and the job file.
std::string Strangers() {
  std::string out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) Fail("opendir " + dir);
  // Single-threaded: readdir's static buffer is ours.
  while (const dirent* e = ::readdir(d)) {  // NOLINT(concurrency-mt-unsafe)
    const std::string_view name = e->d_name;
    if (name != "." && name != ".." && name != kJobFile) {
      out += " " + std::string(name);
    }
  }
  ::closedir(d);
  return out;
}

std::vector<std::string> SplitArgs(std::string_view text) {
  std::vector<std::string> args;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '\0' || text[i] == '\n') {
      std::string a(text.substr(start, i - start));
      // A job file: only names in the private directory.
      if (!a.empty() && a.front() != '-') {
        std::string path = dir;
        path += '/';
        path += a.find('/') != std::string::npos ? kJobFile : a;
        a = std::move(path);
      }
      args.push_back(std::move(a));
      start = i + 1;
    }
  }
  return args;
}

void CheckUsageError(const aiokit::Status& s) {
  if (!s.Is(aiokit::Errc::kInvalidArgument)) {
    Fail("an error that is not a UsageError: " + s.ToString());
  }
  const std::string& line = s.context();
  if (line.empty()) Fail("UsageError with an empty line");
  if (line.find('\n') != std::string::npos) {
    Fail("UsageError of more than one line: " + line);
  }
}

// The plan the input parses to, or its UsageError.
aiokit::Result<aiokit::tool::BenchPlan> Parse(std::string_view text,
                                              bool job_file) {
  if (!job_file) return aiokit::tool::ParseBenchArgs(SplitArgs(text));
  aiokit::tool::BenchPlan plan;
  aiokit::Result<std::vector<aiokit::tool::JobOptions>> jobs =
      aiokit::tool::ParseJobFile(text, "fuzz.fio", aiokit::tool::JobOptions{},
                                 plan);
  if (!jobs.ok()) return jobs.status();
  plan.jobs = std::move(*jobs);
  return plan;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // Single-threaded here: nothing calls setenv concurrently.
  const char* tmp = std::getenv("TMPDIR");  // NOLINT(concurrency-mt-unsafe)
  std::string tmpl =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") +
      "/aiokit-fuzz-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) Fail("mkdtemp " + tmpl);
  dir = tmpl;
  std::ofstream(dir + "/" + kJobFile) << kJobText;
  (void)std::atexit(RemoveDir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1,
                              size - 1);
  const bool job_file = (data[0] & 1) != 0;
  // Errors are values: any exception (std::bad_alloc included) is a finding.
  try {
    const aiokit::Result<aiokit::tool::BenchPlan> plan = Parse(text, job_file);
    if (!plan.ok()) {
      CheckUsageError(plan.status());
    } else if (!plan->help) {
      if (plan->jobs.empty()) Fail("a plan without jobs");
      for (const aiokit::tool::JobOptions& j : plan->jobs) {
        if (aiokit::Status bad = aiokit::tool::ValidateJob(j, *plan);
            !bad.ok()) {
          CheckUsageError(bad);
          continue;
        }
        // What validates is a region pread and pwrite can address (off_t).
        constexpr uint64_t kMaxOff = std::numeric_limits<int64_t>::max();
        if (j.size > kMaxOff || j.offset > kMaxOff - j.size) {
          Fail("a job that validates with --offset=" +
               std::to_string(j.offset) + " --size=" + std::to_string(j.size) +
               ": past the largest file offset");
        }
      }
    }
  } catch (const std::exception& e) {
    Fail(std::string("an exception: ") + e.what());
  }
  if (std::string s = Strangers(); !s.empty()) {
    Fail("the parser created files:" + s);
  }
  return 0;
}
