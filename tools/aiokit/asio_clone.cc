// A clone of an `aiokit bench --api=asio` job: --iodepth workers on an
// asio::io_context, each a chain of completion handlers with one request in
// flight at a time through aiokit/asio.h, on the clone's thread.

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aiokit/asio.h"
#include "clone.h"
#include "loop_clone.h"

namespace aiokit::tool {
namespace {

class AsioClone final : public LoopClone {
 public:
  using LoopClone::LoopClone;

 private:
  bool MakeLoop(const std::string& job) override {
    Result<std::unique_ptr<aiokit::asio::EngineIo>> io =
        aiokit::asio::EngineIo::Create(ctx_, *engine_);
    if (!io.ok()) {
      Fail(std::nullopt,
           UsageError("--api=asio" + job + ": " + io.status().ToString()));
      return false;
    }
    io_ = std::move(*io);
    return true;
  }

  // One worker: a chain of completion handlers (Asio's plain style), one
  // request in flight at a time.
  struct Worker {
    size_t index = 0;  // its buffer's
    bool read = false;
    uint64_t len = 0;
    uint64_t at = 0;
    int fd = -1;
    Clock::time_point start;
    std::unique_ptr<::asio::steady_timer> timer;
  };

  void StartNext(Worker* w) {
    const Clock::time_point now = Clock::now();
    const Step step = Plan(now);
    if (step.what == Step::kStop) return;
    if (step.what == Step::kWait) {
      // Pacing: the worker's timer, then it asks again.
      w->timer->expires_at(step.at);
      w->timer->async_wait([this, w](std::error_code) { StartNext(w); });
      return;
    }
    if (!Next(&w->read, &w->fd, &w->at, &w->len)) return;
    w->start = Clock::now();
    auto done = [this, w](std::error_code ec, size_t n) {
      Account(
          w->read, w->start, Clock::now(),
          ec ? Status::FromErrno(ec.value(), "--api=asio request") : Status(),
          n, w->len, w->at);
      StartNext(w);
    };
    Buffer b = WorkerBuffer(w->index, w->len);
    if (w->read) {
      io_->async_read(w->fd, w->at, std::move(b), std::move(done));
    } else {
      io_->async_write(w->fd, w->at, std::move(b), std::move(done));
    }
  }

  void RunWorkers() override {
    workers_.reserve(o_.iodepth);
    for (size_t i = 0; i < o_.iodepth; ++i) {
      workers_.push_back(Worker{i,
                                false,
                                0,
                                0,
                                -1,
                                {},
                                std::make_unique<::asio::steady_timer>(ctx_)});
    }
    for (Worker& w : workers_) StartNext(&w);
    ctx_.run();
  }

  uint64_t SubmitCalls() override { return io_->submit_calls(); }

  void TearDown() override { io_.reset(); }

  ::asio::io_context ctx_{1};
  std::vector<Worker> workers_;
  std::unique_ptr<aiokit::asio::EngineIo> io_;
};

}  // namespace

CloneResult RunAsioClone(const JobOptions& o, unsigned index, Target* target,
                         RunShared* shared, Progress* progress, uint64_t seed) {
  AsioClone c(o, index, target, shared, progress, seed);
  return c.Run();
}

}  // namespace aiokit::tool
