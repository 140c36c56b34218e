// `aiokit bench`: one fio-style job on one aiokit engine, reporting what fio
// reports (IOPS, bandwidth, completion latency percentiles, CPU), in fio's text
// or JSON layout.

#ifndef AIOKIT_TOOLS_AIOKIT_BENCH_H_
#define AIOKIT_TOOLS_AIOKIT_BENCH_H_

#include <cstdint>
#include <iosfwd>
#include <string>

namespace aiokit::tool {

// The job, with fio's option names. Defaults follow fio except where noted.
struct BenchOptions {
  std::string name = "aiokit";
  std::string filename;  // empty: an unnamed temporary file in $TMPDIR or
                         // /var/tmp, gone after the run
  uint64_t size = 128ULL << 20;
  bool size_set = false;  // --size given (otherwise a device or an existing
                          // file gives its own size)
  std::string rw = "randread";  // read, write, randread, randwrite
  uint64_t bs = 4096;
  unsigned iodepth = 32;    // fio: 1
  uint64_t runtime_us = 0;  // 0: until --size bytes are done
  bool time_based = false;
  int direct = 1;                  // fio: 0; storage engines run O_DIRECT
  std::string engine = "default";  // default: AIOKIT_ENGINE, else auto
  std::string output_format = "normal";
  // aiokit: EngineOptions::spin_before_wait in us (-1: the library's default),
  // and spinning the whole budget every time (adaptive_spin = false).
  int spin_us = -1;
  bool spin_always = false;
  // io_uring, with fio's names: registered buffers and files, a kernel thread
  // polling the submission queue (optionally on one CPU), polled completions.
  bool fixedbufs = false;
  bool registerfiles = false;
  bool sqthread_poll = false;
  int sqthread_poll_cpu = -1;
  bool hipri = false;
  // threads engine: the worker pool (0: the library's default) and per-fd
  // order (EngineOptions::threads_*).
  unsigned threads_min = 0;
  unsigned threads_max = 0;
  bool threads_ordered = false;
};

// Exit status of `aiokit bench`.
inline constexpr int kExitOk = 0;
inline constexpr int kExitIoError = 1;  // the job ran and an I/O failed
inline constexpr int kExitUsage =
    2;  // a bad option or combination; nothing was left behind

// Runs the job; prints the report on `out` and errors (one line each) on `err`.
int RunBench(const BenchOptions& options, std::ostream& out, std::ostream& err);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_BENCH_H_
