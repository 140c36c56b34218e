#include "iolog.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <set>
#include <utility>
#include <vector>

#include "histogram.h"

namespace aiokit::tool {

const char* IoLog::Name(Kind k) {
  static constexpr const char* kNames[] = {"slat", "clat", "lat",
                                           "bw",   "iops", "clat_hist"};
  return kNames[k];
}

bool IoLog::Wants(Kind k) const {
  if (o_ == nullptr) return false;
  switch (k) {
    case kSlat:
    case kClat:
    case kLat:
      return o_->lat_log_set;
    case kBw:
      return o_->bw_log_set;
    case kIops:
      return o_->iops_log_set;
    case kHist:
      return o_->hist_log_set;
    default:
      return false;
  }
}

void IoLog::Start(const JobOptions& o, TimePoint t0) {
  if (!o.lat_log_set && !o.bw_log_set && !o.iops_log_set && !o.hist_log_set) {
    return;
  }
  o_ = &o;
  t0_ = t0;
  window_end_ms_ = o.log_avg_msec;
  if (o.hist_log_set) {
    for (auto& h : hist_) h.assign(FioBuckets::kCount, 0);
  }
}

void IoLog::FlushHist(uint8_t dir, uint64_t ms, uint32_t bs) {
  HistRow row{ms, bs, dir, {}};
  std::vector<uint64_t>& h = hist_[dir];
  for (size_t i = 0; i < h.size(); ++i) {
    if (h[i] != 0) {
      row.counts.emplace_back(static_cast<uint32_t>(i), h[i]);
      h[i] = 0;
    }
  }
  hist_rows_.push_back(std::move(row));
  hist_last_ms_[dir] = ms;
}

void IoLog::Record(TimePoint now, bool read, uint64_t bytes, uint64_t offset,
                   uint64_t slat_ns, uint64_t clat_ns, uint64_t lat_ns,
                   bool prio) {
  const auto p = static_cast<uint8_t>(prio ? 1 : 0);
  if (o_ == nullptr) return;
  const auto ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now - t0_).count());
  const auto dir = static_cast<uint8_t>(read ? 0 : 1);
  const auto bs = static_cast<uint32_t>(bytes);
  const uint64_t lats[3] = {slat_ns, clat_ns, lat_ns};
  if (o_->hist_log_set) {
    // As fio: the completion counts, then a row if the period has passed
    // since the direction's last one.
    ++hist_[dir][FioBuckets::Index(clat_ns)];
    hist_bs_[dir] = bs;
    if (ms - hist_last_ms_[dir] >= o_->log_hist_msec) FlushHist(dir, ms, bs);
  }
  if (!o_->lat_log_set && !o_->bw_log_set && !o_->iops_log_set) return;
  if (o_->log_avg_msec == 0) {
    // Every request: its latencies, its own bandwidth in KiB/s (its bytes
    // over its latency, as fio computes it) and an IOPS of 1.
    for (int k = kSlat; k <= kLat; ++k) {
      if (Wants(static_cast<Kind>(k)) && lats[k] != UINT64_MAX) {
        rows_[k].push_back({ms, lats[k], offset, bs, dir, p});
      }
    }
    if (Wants(kBw)) {
      const uint64_t kib_s =
          lat_ns == 0 ? 0 : bytes * 1'000'000'000ULL / 1024 / lat_ns;
      rows_[kBw].push_back({ms, kib_s, offset, bs, dir, p});
    }
    if (Wants(kIops)) rows_[kIops].push_back({ms, 1, offset, bs, dir, p});
    return;
  }
  while (ms >= window_end_ms_) {
    Flush(window_end_ms_, o_->log_avg_msec);
    window_end_ms_ += o_->log_avg_msec;
  }
  Window& w = win_[dir];
  for (int k = 0; k < 3; ++k) {
    if (lats[k] == UINT64_MAX) continue;
    w.sum[k] += lats[k];
    w.max[k] = std::max(w.max[k], lats[k]);
    ++w.count[k];
  }
  w.bytes += bytes;
  ++w.ios;
}

void IoLog::Flush(uint64_t end_ms, uint64_t span_ms) {
  // One row per direction the job moves, at the window's end; averages (or
  // maxima with log_max_value); block size and offset 0, as fio writes them.
  for (uint8_t d = 0; d < 2; ++d) {
    if (d == 0 ? !o_->Reads() : !o_->Writes()) continue;
    Window& w = win_[d];
    for (int k = kSlat; k <= kLat; ++k) {
      if (Wants(static_cast<Kind>(k)) && w.count[k] != 0) {
        const uint64_t v = o_->log_max_value ? w.max[k] : w.sum[k] / w.count[k];
        rows_[k].push_back({end_ms, v, 0, 0, d});
      }
    }
    if (span_ms != 0) {
      if (Wants(kBw)) {
        rows_[kBw].push_back(
            {end_ms, w.bytes * 1000 / 1024 / span_ms, 0, 0, d});
      }
      if (Wants(kIops)) {
        rows_[kIops].push_back({end_ms, w.ios * 1000 / span_ms, 0, 0, d});
      }
    }
    w = Window{};
  }
}

void IoLog::Finish(TimePoint end) {
  if (o_ == nullptr) return;
  const auto ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(end - t0_).count());
  if (o_->hist_log_set) {
    // The last, partial period (fio drops it): every completion is in a row.
    for (uint8_t d = 0; d < 2; ++d) {
      if (std::any_of(hist_[d].begin(), hist_[d].end(),
                      [](uint64_t n) { return n != 0; })) {
        FlushHist(d, std::max(ms, hist_last_ms_[d]), hist_bs_[d]);
      }
    }
  }
  if (o_->log_avg_msec == 0) return;
  while (ms >= window_end_ms_) {
    Flush(window_end_ms_, o_->log_avg_msec);
    window_end_ms_ += o_->log_avg_msec;
  }
  // The partial window, if anything completed in it.
  const uint64_t began = window_end_ms_ - o_->log_avg_msec;
  if (win_[0].ios != 0 || win_[1].ios != 0) Flush(ms, ms - began);
}

std::string IoLog::Text(Kind k) const {
  std::string out;
  if (!Wants(k)) return out;
  if (k == kHist) {
    // "ms, direction, block size, " then one column per 2^coarseness of
    // fio's buckets.
    const unsigned c = o_->log_hist_coarseness;
    const size_t columns = FioBuckets::kCount >> c;
    std::vector<uint64_t> cols(columns);
    for (const HistRow& r : hist_rows_) {
      std::fill(cols.begin(), cols.end(), 0);
      for (const auto& [i, n] : r.counts) cols[i >> c] += n;
      out += std::to_string(r.ms) + ", " + std::to_string(r.dir) + ", " +
             std::to_string(r.bs);
      for (uint64_t n : cols) out += ", " + std::to_string(n);
      out += "\n";
    }
    return out;
  }
  char line[128];
  for (const Row& r : rows_[k]) {
    if (o_->log_offset) {
      std::snprintf(line, sizeof(line), "%llu, %llu, %u, %u, %llu, %u\n",
                    static_cast<unsigned long long>(r.ms),
                    static_cast<unsigned long long>(r.value), r.dir, r.bs,
                    static_cast<unsigned long long>(r.offset), r.prio);
    } else {
      std::snprintf(line, sizeof(line), "%llu, %llu, %u, %u, %u\n",
                    static_cast<unsigned long long>(r.ms),
                    static_cast<unsigned long long>(r.value), r.dir, r.bs,
                    r.prio);
    }
    out += line;
  }
  return out;
}

Status WriteIoLogs(const std::vector<const JobOptions*>& jobs,
                   const std::vector<const IoLog*>& logs) {
  std::set<std::string> started;  // shared files (per_job_logs=0) begun
  for (size_t i = 0; i < logs.size(); ++i) {
    const JobOptions& o = *jobs[i];
    for (int k = 0; k < IoLog::kKinds; ++k) {
      const auto kind = static_cast<IoLog::Kind>(k);
      const std::string& prefix = kind <= IoLog::kLat    ? o.lat_log
                                  : kind == IoLog::kBw   ? o.bw_log
                                  : kind == IoLog::kIops ? o.iops_log
                                                         : o.hist_log;
      const bool set = kind <= IoLog::kLat    ? o.lat_log_set
                       : kind == IoLog::kBw   ? o.bw_log_set
                       : kind == IoLog::kIops ? o.iops_log_set
                                              : o.hist_log_set;
      if (!set) continue;
      std::string path =
          (prefix.empty() ? o.name : prefix) + "_" + IoLog::Name(kind);
      if (o.per_job_logs) path += "." + std::to_string(i + 1);
      path += ".log";
      const bool append = !o.per_job_logs && !started.insert(path).second;
      std::ofstream f(path, append ? std::ios::app : std::ios::trunc);
      f << logs[i]->Text(kind);
      f.close();
      if (!f) {
        return Status::FromErrno(errno != 0 ? errno : EIO,
                                 "writing the log \"" + path + "\"");
      }
    }
  }
  return {};
}

}  // namespace aiokit::tool
