// An EngineWrapper that measures each request's latency (Submit to Reap) and
// passes everything else through: the few dozen lines a wrapper takes.
//
//   latency_wrapper [directory]      (default /var/tmp)

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "aiokit/aiokit.h"

namespace {

using Clock = std::chrono::steady_clock;

class LatencyEngine final : public aiokit::EngineWrapper {
 public:
  using EngineWrapper::EngineWrapper;

  aiokit::SubmitResult Submit(
      std::span<aiokit::Request* const> batch) override {
    const Clock::time_point now = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (aiokit::Request* r : batch) started_[r] = now;
    }
    aiokit::SubmitResult sr = EngineWrapper::Submit(batch);
    // Those not accepted are not timed.
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = sr.accepted; i < batch.size(); ++i)
      started_.erase(batch[i]);
    return sr;
  }

  aiokit::Result<size_t> Reap(std::span<aiokit::Request*> out, size_t min,
                              std::chrono::nanoseconds timeout) override {
    aiokit::Result<size_t> n = EngineWrapper::Reap(out, min, timeout);
    if (!n.ok()) return n;
    const Clock::time_point now = Clock::now();
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < *n; ++i) {
      auto it = started_.find(out[i]);
      if (it == started_.end()) continue;
      const auto us =
          std::chrono::duration<double, std::micro>(now - it->second);
      started_.erase(it);
      min_us_ = count_ == 0 ? us.count() : std::min(min_us_, us.count());
      max_us_ = std::max(max_us_, us.count());
      sum_us_ += us.count();
      ++count_;
    }
    return n;
  }

  void Print(const char* engine) {
    std::lock_guard<std::mutex> lock(mu_);
    std::printf(
        "%s: %zu requests, latency min %.1f us, avg %.1f us, max %.1f us\n",
        engine, count_, min_us_,
        count_ != 0 ? sum_us_ / static_cast<double>(count_) : 0.0, max_us_);
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

 private:
  std::mutex mu_;
  std::unordered_map<aiokit::Request*, Clock::time_point> started_;
  size_t count_ = 0;
  double min_us_ = 0, max_us_ = 0, sum_us_ = 0;
};

}  // namespace

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/var/tmp";
  auto file = aiokit::File::CreateTemporary(dir, 0);
  if (!file.ok()) {
    std::fprintf(stderr, "latency_wrapper: %s\n",
                 file.status().ToString().c_str());
    return 1;
  }
  constexpr size_t kReqs = 256, kLen = 4096;
  std::vector<char> data(kReqs * kLen);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  if (::pwrite(file->fd(), data.data(), data.size(), 0) !=
      static_cast<ssize_t>(data.size())) {
    std::perror("latency_wrapper: pwrite");
    return 1;
  }
  auto inner = aiokit::MakeEngine({});  // AIOKIT_ENGINE, else auto
  if (!inner.ok()) {
    std::fprintf(stderr, "latency_wrapper: %s\n",
                 inner.status().ToString().c_str());
    return 1;
  }
  const char* name = (*inner)->Name();
  LatencyEngine engine(std::move(*inner));

  std::vector<char> back(data.size());
  std::vector<aiokit::Request> reqs(kReqs);
  std::vector<aiokit::Request*> batch;
  for (size_t i = 0; i < kReqs; ++i) {
    reqs[i].PrepRead(file->fd(), back.data() + i * kLen, kLen, i * kLen);
    batch.push_back(&reqs[i]);
  }
  for (size_t first = 0; first < kReqs; first += 32) {
    aiokit::SubmitResult sr =
        engine.Submit(std::span<aiokit::Request* const>(&batch[first], 32));
    if (!sr.status.ok()) {
      std::fprintf(stderr, "latency_wrapper: %s\n",
                   sr.status.ToString().c_str());
      return 1;
    }
    aiokit::Request* done[32];
    for (size_t got = 0; got < 32;) {
      aiokit::Result<size_t> n =
          engine.Reap(done, 32 - got, std::chrono::seconds(10));
      if (!n.ok() || *n == 0) {
        std::fprintf(stderr, "latency_wrapper: reap: %s\n",
                     n.ok() ? "timed out" : n.status().ToString().c_str());
        return 1;
      }
      for (size_t i = 0; i < *n; ++i) {
        if (done[i]->rval != static_cast<int64_t>(kLen)) {
          std::fprintf(stderr, "latency_wrapper: %s\n",
                       aiokit::Describe(*done[i]).c_str());
          return 1;
        }
      }
      got += *n;
    }
  }
  if (back != data || engine.count() != kReqs) {
    std::fprintf(stderr, "latency_wrapper: data or count mismatch\n");
    return 1;
  }
  engine.Print(name);
  return 0;
}
