// fio's per-job logs for `aiokit bench` (write_lat_log, write_bw_log,
// write_iops_log): one clone's rows in fio's format ("time ms, value,
// direction, block size[, offset], priority"), per request or averaged over
// log_avg_msec windows, so that fio's plotting tools read them.

#ifndef AIOKIT_TOOLS_AIOKIT_IOLOG_H_
#define AIOKIT_TOOLS_AIOKIT_IOLOG_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "aiokit/status.h"
#include "job.h"

namespace aiokit::tool {

// One clone's logs, filled on its thread and written after the run.
class IoLog {
 public:
  enum Kind : uint8_t { kSlat, kClat, kLat, kBw, kIops, kHist, kKinds };
  using TimePoint = std::chrono::steady_clock::time_point;

  // Logs what `o` asks for, with times in ms after `t0` (the end of the
  // ramp). REQUIRES: `o` outlives the log.
  void Start(const JobOptions& o, TimePoint t0);
  [[nodiscard]] bool enabled() const { return o_ != nullptr; }

  // A measured request of `bytes` at `offset` completed at `now`; slat_ns is
  // UINT64_MAX when the driver does not measure it (then no slat row).
  // `prio`: the request carried a priority of its own (fio's "command
  // priority" column: 1).
  void Record(TimePoint now, bool read, uint64_t bytes, uint64_t offset,
              uint64_t slat_ns, uint64_t clat_ns, uint64_t lat_ns,
              bool prio = false);
  // The clone ended at `end`: the last, partial window is written.
  void Finish(TimePoint end);

  // The text of one log (empty when the job does not ask for it).
  [[nodiscard]] std::string Text(Kind k) const;
  // fio's file name suffix of a log: "slat", "clat", "lat", "bw", "iops",
  // "clat_hist".
  static const char* Name(Kind k);

 private:
  struct Row {
    uint64_t ms;
    uint64_t value;
    uint64_t offset;
    uint32_t bs;
    uint8_t dir;
    uint8_t prio = 0;
  };
  struct Window {
    std::array<uint64_t, 3> sum{}, max{}, count{};  // slat, clat, lat
    uint64_t bytes = 0, ios = 0;
  };
  // A histogram row: the window's counts in fio's buckets, sparse.
  struct HistRow {
    uint64_t ms;
    uint32_t bs;
    uint8_t dir;
    std::vector<std::pair<uint32_t, uint64_t>> counts;  // bucket, count
  };
  [[nodiscard]] bool Wants(Kind k) const;
  void Flush(uint64_t end_ms, uint64_t span_ms);
  void FlushHist(uint8_t dir, uint64_t ms, uint32_t bs);

  const JobOptions* o_ = nullptr;
  TimePoint t0_;
  uint64_t window_end_ms_ = 0;
  std::array<Window, 2> win_{};  // per direction
  std::array<std::vector<Row>, kKinds> rows_;
  // write_hist_log: per direction, the counts since the last row and when
  // that row was written.
  std::array<std::vector<uint64_t>, 2> hist_;
  std::array<uint64_t, 2> hist_last_ms_{};
  std::array<uint32_t, 2> hist_bs_{};
  std::vector<HistRow> hist_rows_;
};

// Writes the logs of the clones of a run: clone i of the run (its job
// `jobs[i]`) is fio's job number i + 1. With per_job_logs=0 the clones of a
// prefix share one file.
// On failure: a Status naming the file that could not be written.
[[nodiscard]] Status WriteIoLogs(const std::vector<const JobOptions*>& jobs,
                                 const std::vector<const IoLog*>& logs);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_IOLOG_H_
