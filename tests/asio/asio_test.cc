// aiokit on an Asio io_context (aiokit/asio.h), on every engine, with each
// kind of completion token: a callback, use_awaitable, use_future and
// deferred; cancellation through a cancellation slot; destruction with a
// request in flight.

// Asio 1.22 turns co_await on for clang only with <experimental/coroutine>,
// which clang 14 with libstdc++ (clang-tidy here) lacks; C++20's <coroutine>
// works there, so say so before any Asio header.
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#define ASIO_HAS_STD_COROUTINE 1
#endif

#include "aiokit/asio.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>
#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace aiokit::testing {
namespace {

constexpr size_t kBlock = 4096;

class AsioTest : public ::testing::TestWithParam<std::string> {
 protected:
  void Make() {
    AIOKIT_MAKE_ENGINE_OR_SKIP(engine, GetParam(), EngineOptions{});
    engine_ = std::move(engine);
    Result<std::unique_ptr<aiokit::asio::EngineIo>> io =
        aiokit::asio::EngineIo::Create(ctx_, *engine_);
    ASSERT_TRUE(io.ok()) << io.status().ToString();
    io_ = std::move(*io);
  }
  ::asio::io_context ctx_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<aiokit::asio::EngineIo> io_;
};

TEST_P(AsioTest, ACallbackGetsTheBytes) {
  Make();
  if (io_ == nullptr) return;
  File f = ScratchFile(4 * kBlock, 5);
  Buffer b = *Buffer::Allocate(kBlock);
  std::error_code got_ec = make_error_code(std::errc::io_error);
  size_t got_n = 0;
  int calls = 0;
  io_->async_read(f.fd(), kBlock, b, [&](std::error_code ec, size_t n) {
    got_ec = ec;
    got_n = n;
    ++calls;
  });
  ctx_.run();
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(got_ec) << got_ec.message();
  EXPECT_EQ(got_n, kBlock);
  EXPECT_EQ(FirstMismatch(b.data(), kBlock, 5, kBlock), -1);
  // An error is an error_code in the system category.
  io_->async_read(1 << 30, 0, b,
                  [&](std::error_code ec, size_t) { got_ec = ec; });
  ctx_.restart();
  ctx_.run();
  EXPECT_EQ(got_ec, std::error_code(EBADF, std::system_category()));
}

::asio::awaitable<std::string> CopyBlocks(aiokit::asio::EngineIo& io, int src,
                                          int dst, int blocks) {
  std::vector<Buffer> bufs;
  bufs.reserve(static_cast<size_t>(blocks));
  for (int i = 0; i < blocks; ++i) bufs.push_back(*Buffer::Allocate(kBlock));
  for (int i = 0; i < blocks; ++i) {
    const size_t n =
        co_await io.async_read(src, i * kBlock, bufs[i], ::asio::use_awaitable);
    if (n != kBlock) co_return "short read";
    const size_t w = co_await io.async_write(dst, i * kBlock, bufs[i],
                                             ::asio::use_awaitable);
    if (w != kBlock) co_return "short write";
  }
  (void)co_await io.async_fdatasync(dst, ::asio::use_awaitable);
  co_return "";
}

TEST_P(AsioTest, AsiosOwnCoroutinesWithUseAwaitable) {
  Make();
  if (io_ == nullptr) return;
  File src = ScratchFile(32 * kBlock, 6);
  File dst = ScratchFile(0, 0);
  std::vector<std::string> results(8, "not run");
  for (int c = 0; c < 8; ++c) {
    ::asio::co_spawn(ctx_, CopyBlocks(*io_, src.fd(), dst.fd(), 32),
                     [&results, c](const std::exception_ptr& e, std::string r) {
                       results[c] = e ? "exception" : std::move(r);
                     });
  }
  ctx_.run();
  for (int c = 0; c < 8; ++c) EXPECT_EQ(results[c], "") << c;
  std::vector<char> back(32 * kBlock);
  ASSERT_EQ(::pread(dst.fd(), back.data(), back.size(), 0),
            static_cast<ssize_t>(back.size()));
  EXPECT_EQ(FirstMismatch(back.data(), back.size(), 6), -1);
  // The coroutines' requests went in batches.
  EXPECT_LT(io_->submit_calls(), 8U * 32 * 2 + 8);
}

TEST_P(AsioTest, UseFutureFromAnotherThread) {
  Make();
  if (io_ == nullptr) return;
  File f = ScratchFile(kBlock, 7);
  auto guard = ::asio::make_work_guard(ctx_);
  std::thread runner([&] { ctx_.run(); });
  Buffer b = *Buffer::Allocate(kBlock);
  // Started on the context's thread, as the EngineIo requires.
  std::promise<std::future<size_t>> started;
  ::asio::post(ctx_, [&] {
    started.set_value(io_->async_read(f.fd(), 0, b, ::asio::use_future));
  });
  std::future<size_t> done = started.get_future().get();
  EXPECT_EQ(done.get(), kBlock);
  EXPECT_EQ(FirstMismatch(b.data(), kBlock, 7), -1);
  guard.reset();
  runner.join();
}

TEST_P(AsioTest, DeferredStartsWhenInvoked) {
  Make();
  if (io_ == nullptr) return;
  File f = ScratchFile(kBlock, 8);
  Buffer b = *Buffer::Allocate(kBlock);
  auto op = io_->async_read(f.fd(), 0, b, ::asio::experimental::deferred);
  EXPECT_EQ(io_->in_flight(), 0U) << "a deferred operation has not started";
  size_t got = 0;
  std::move(op)([&](std::error_code ec, size_t n) {
    EXPECT_FALSE(ec);
    got = n;
  });
  EXPECT_EQ(io_->in_flight(), 1U);
  ctx_.run();
  EXPECT_EQ(got, kBlock);
}

TEST_P(AsioTest, ACancellationSlotCancelsAndTheHandlerRunsOnce) {
  Make();
  if (io_ == nullptr) return;
  if (!engine_->GetCapabilities().async_buffered_io) {
    GTEST_SKIP() << GetParam() << ": a pipe read blocks inside Submit here";
  }
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  ::asio::cancellation_signal signal;
  std::error_code got_ec;
  size_t got_n = 0;
  int calls = 0;
  Buffer b = *Buffer::Allocate(kBlock);
  io_->async_read(p[0], 0, b,
                  ::asio::bind_cancellation_slot(
                      signal.slot(), [&](std::error_code ec, size_t n) {
                        got_ec = ec;
                        got_n = n;
                        ++calls;
                      }));
  // Cancelled on the context's thread once the request is out; an engine
  // that cannot stop a started pipe read gets the byte written later.
  ::asio::steady_timer t(ctx_, std::chrono::milliseconds(30));
  t.async_wait([&](std::error_code) {
    signal.emit(::asio::cancellation_type::terminal);
  });
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    (void)!::write(p[1], "x", 1);
  });
  ctx_.run();
  writer.join();
  EXPECT_EQ(calls, 1);
  if (got_ec) {
    EXPECT_EQ(got_ec, std::error_code(ECANCELED, std::system_category()));
  } else {
    EXPECT_EQ(got_n, 1U);
  }
  io_.reset();
  ::close(p[0]);
  ::close(p[1]);
}

TEST_P(AsioTest, DestroyingTheEngineIoWithARequestOutDestroysTheHandler) {
  Make();
  if (io_ == nullptr) return;
  if (!engine_->GetCapabilities().async_buffered_io) {
    GTEST_SKIP() << GetParam() << ": a pipe read blocks inside Submit here";
  }
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  int calls = 0;
  // A handler whose destruction is seen: it owns a shared_ptr.
  auto alive = std::make_shared<int>(1);
  std::weak_ptr<int> watch = alive;
  Buffer b = *Buffer::Allocate(kBlock);
  io_->async_read(
      p[0], 0, b,
      [&calls, keep = std::move(alive)](std::error_code, size_t) { ++calls; });
  ctx_.poll();  // the request goes out
  EXPECT_EQ(io_->in_flight(), 1U);
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    (void)!::write(p[1], "y", 1);
  });
  io_.reset();  // cancels, or waits for the byte
  writer.join();
  EXPECT_EQ(calls, 0);
  EXPECT_TRUE(watch.expired()) << "the handler was destroyed";
  EXPECT_EQ(b.use_count(), 1U) << "the request let the buffer go";
  ::close(p[0]);
  ::close(p[1]);
}

INSTANTIATE_TEST_SUITE_P(Engines, AsioTest, ::testing::ValuesIn(PlainEngines()),
                         EngineParamName);

}  // namespace
}  // namespace aiokit::testing
