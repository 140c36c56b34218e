// A clone of an `aiokit bench --api=coro` job: --iodepth coroutines on one
// loop (aiokit/coro.h), each with one request in flight at a time through an
// EngineIo, on the clone's thread. What differs from the engine clone is the
// coroutine machinery's cost: the frames, the loop's turns, the batching of
// what the coroutines start in one turn into one Submit.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aiokit/coro.h"
#include "clone.h"
#include "loop_clone.h"

namespace aiokit::tool {
namespace {

using coro::EngineIo;
using coro::Loop;
using coro::Task;

class CoroClone final : public LoopClone {
 public:
  using LoopClone::LoopClone;

 private:
  bool MakeLoop(const std::string& job) override {
    Result<std::unique_ptr<Loop>> loop = Loop::Create();
    if (!loop.ok()) {
      Fail(std::nullopt,
           UsageError("--api=coro" + job + ": " + loop.status().ToString()));
      return false;
    }
    loop_ = std::move(*loop);
    Result<std::unique_ptr<EngineIo>> io = EngineIo::Create(*loop_, *engine_);
    if (!io.ok()) {
      Fail(std::nullopt,
           UsageError("--api=coro" + job + ": " + io.status().ToString()));
      return false;
    }
    io_ = std::move(*io);
    return true;
  }

  Task<void> Worker(size_t i) {
    bool read = false;
    int fd = -1;
    uint64_t at = 0, len = 0;
    for (;;) {
      const Clock::time_point now = Clock::now();
      const Step step = Plan(now);
      if (step.what == Step::kStop) break;
      if (step.what == Step::kWait) {
        co_await loop_->Sleep(step.at - now);
        continue;
      }
      if (!Next(&read, &fd, &at, &len)) break;
      const Buffer b = WorkerBuffer(i, len);
      const Clock::time_point start = Clock::now();
      Result<size_t> got =
          read ? co_await io_->Read(fd, at, b) : co_await io_->Write(fd, at, b);
      Account(read, start, Clock::now(), got.status(), got.ok() ? *got : 0, len,
              at);
    }
  }

  void RunWorkers() override {
    std::vector<Task<void>> workers;
    workers.reserve(o_.iodepth);
    for (size_t i = 0; i < o_.iodepth; ++i) workers.push_back(Worker(i));
    loop_->Run(coro::WhenAll(std::move(workers)));
  }

  uint64_t SubmitCalls() override { return io_->submit_calls(); }

  void TearDown() override {
    io_.reset();
    loop_.reset();
  }

  std::unique_ptr<Loop> loop_;
  std::unique_ptr<EngineIo> io_;
};

}  // namespace

CloneResult RunCoroClone(const JobOptions& o, unsigned index, Target* target,
                         RunShared* shared, Progress* progress, uint64_t seed) {
  CoroClone c(o, index, target, shared, progress, seed);
  return c.Run();
}

}  // namespace aiokit::tool
