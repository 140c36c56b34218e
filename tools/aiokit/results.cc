// Merging results for group_reporting (results.h).

#include "results.h"

#include <algorithm>

namespace aiokit::tool {

void DirStats::Merge(const DirStats& o) {
  ios += o.ios;
  bytes += o.bytes;
  short_ios += o.short_ios;
  slat.Merge(o.slat);
  clat.Merge(o.clat);
  lat.Merge(o.lat);
}

void CloneResult::Merge(const CloneResult& o) {
  read.Merge(o.read);
  write.Merge(o.write);
  sync.Merge(o.sync);
  for (const auto& [e, n] : o.errors) errors[e] += n;
  if (first_error.empty()) first_error = o.first_error;
  submit_calls += o.submit_calls;
  submitted += o.submitted;
  reap_calls += o.reap_calls;
  reaped += o.reaped;
  verify_checked += o.verify_checked;
  verify_failed += o.verify_failed;
  verify_rounds += o.verify_rounds;
  if (!ss) ss = o.ss;
  if (inject.empty()) inject = o.inject;
  faults.submit_calls += o.faults.submit_calls;
  faults.accepted += o.faults.accepted;
  faults.completed += o.faults.completed;
  faults.eagain += o.faults.eagain;
  faults.partial += o.faults.partial;
  faults.short_io += o.faults.short_io;
  faults.eio += o.faults.eio;
  faults.enospc += o.faults.enospc;
  faults.delayed += o.faults.delayed;
  faults.reordered += o.faults.reordered;
  faults.stalls += o.faults.stalls;
  reaped_twice += o.reaped_twice;
  unfinished += o.unfinished;
  prio_ios += o.prio_ios;
  for (const std::string& l : o.verify_lines) {
    if (verify_lines.size() < kMaxVerifyLines) verify_lines.push_back(l);
  }
  seconds = std::max(seconds, o.seconds);
  es.submit_calls += o.es.submit_calls;
  es.submitted += o.es.submitted;
  es.wait_calls += o.es.wait_calls;
  es.sleeps += o.es.sleeps;
  es.completed += o.es.completed;
  es.ring_reaped += o.es.ring_reaped;
  es.kernel_aio += o.es.kernel_aio;
  es.kernel_aio_fallbacks += o.es.kernel_aio_fallbacks;
  es.eagain_retries += o.es.eagain_retries;
}

}  // namespace aiokit::tool
