// aiokit: Asio integration (header-only; standalone Asio 1.22 or later,
// Debian's libasio-dev).
//
// aiokit::asio::EngineIo puts an engine's completions on an
// asio::io_context: its NotifyFd is a posix::stream_descriptor the context
// waits on, and each operation is an Asio initiating function that takes any
// completion token (a callback, asio::use_awaitable, asio::use_future,
// asio::experimental::deferred, ...), with the completion signature
// void(std::error_code, std::size_t).
//
// Standalone Asio rather than Boost.Asio: Debian 12's Boost (1.74) has no
// cancellation slots and no deferred; libasio-dev (1.22) has both, and does
// not conflict with other packages as libboost1.81-dev does.
//
// Asio's conventions hold: the handler runs on its associated executor (the
// context's by default), its state is allocated with its associated
// allocator, and its associated cancellation slot cancels the request. As in
// aiokit/coro.h, the handler runs only after the request has really
// completed (cancelled or not), and the request keeps its aiokit::Buffer
// handles until then, so nothing the kernel may write is freed early:
// destroying the EngineIo cancels what it can, waits for the rest, and
// destroys those handlers without calling them (Asio's shutdown rule).
//
// Requests started before the context next runs the EngineIo's flush go to
// the engine in one Submit.
//
// Thread safety: an EngineIo is used from the thread running its context
// (or a strand of it); cancellation must be emitted there too.

#ifndef AIOKIT_ASIO_H_
#define AIOKIT_ASIO_H_

#include <unistd.h>

#include <asio/associated_allocator.hpp>
#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/recycling_allocator.hpp>
#include <asio/version.hpp>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "aiokit/status.h"

#if ASIO_VERSION < 102200
#error "aiokit/asio.h needs Asio 1.22 or later (cancellation slots)"
#endif

namespace aiokit::asio {

namespace net = ::asio;

class EngineIo;

namespace detail {

// One request and the handler waiting for it. Allocated with the handler's
// allocator; freed before the handler is called (Asio's rule, so that the
// handler may start another operation with the same memory).
struct OpBase {
  Request req;
  Buffer buffer;
  bool queued = false;
  size_t out_index = 0;  // its place in EngineIo's list of requests out
  // The engine returned it: hands the result to the handler, frees itself.
  void (*complete)(OpBase* self, int64_t rval, bool call) = nullptr;
};

}  // namespace detail

class EngineIo {
 public:
  using executor_type = net::io_context::executor_type;

  // The engine must have NotifyFd and no callbacks, and outlive this.
  // On failure: kInvalidArgument (no NotifyFd), or the dup error.
  static Result<std::unique_ptr<EngineIo>> Create(net::io_context& ctx,
                                                  Engine& engine) {
    Result<int> nfd = engine.NotifyFd();
    if (!nfd.ok()) {
      return Status::Error(
          Errc::kInvalidArgument,
          std::string("asio::EngineIo: the ") + engine.Name() +
              " engine has no NotifyFd: " + nfd.status().ToString());
    }
    // The descriptor Asio owns is a copy: the engine closes its own.
    const int fd = ::dup(*nfd);
    if (fd < 0) {
      return Status::FromErrno(errno, "asio::EngineIo: dup(NotifyFd)");
    }
    return std::unique_ptr<EngineIo>(new EngineIo(ctx, engine, fd));
  }

  // Cancels what is out, waits until the engine returned every request, and
  // destroys those handlers without calling them.
  ~EngineIo() {
    for (detail::OpBase* op : queued_) {
      op->queued = false;
      op->complete(op, -ECANCELED, false);
    }
    queued_.clear();
    for (detail::OpBase* op : out_) (void)engine_.Cancel(&op->req);
    std::vector<Request*> got(64);
    while (!out_.empty()) {
      Result<size_t> n = engine_.Reap(got, 1, std::chrono::seconds(1));
      if (!n.ok()) break;
      for (size_t i = 0; i < *n; ++i) {
        auto* op = static_cast<detail::OpBase*>(got[i]->priv);
        Forget(op);
        op->complete(op, got[i]->rval, false);
      }
    }
    std::error_code ignored;
    notify_.close(ignored);
  }
  EngineIo(const EngineIo&) = delete;
  EngineIo& operator=(const EngineIo&) = delete;

  executor_type get_executor() noexcept { return ctx_.get_executor(); }
  Engine& engine() noexcept { return engine_; }
  // Requests out (queued or in the engine).
  [[nodiscard]] size_t in_flight() const noexcept {
    return queued_.size() + out_.size();
  }
  [[nodiscard]] uint64_t submit_calls() const noexcept { return submits_; }

  // Initiating functions: the token's result, completed with (error_code,
  // bytes). An errno comes in std::system_category; ECANCELED
  // after a cancellation.
  template <typename Token>
  auto async_read(int fd, uint64_t offset, Buffer buffer, Token&& token) {
    return Start(
        std::forward<Token>(token),
        [fd, offset](detail::OpBase& op) {
          op.req.PrepRead(fd, op.buffer.data(), op.buffer.size(), offset);
        },
        std::move(buffer));
  }
  template <typename Token>
  auto async_write(int fd, uint64_t offset, Buffer buffer, Token&& token) {
    return Start(
        std::forward<Token>(token),
        [fd, offset](detail::OpBase& op) {
          op.req.PrepWrite(fd, op.buffer.data(), op.buffer.size(), offset);
        },
        std::move(buffer));
  }
  template <typename Token>
  auto async_fsync(int fd, Token&& token) {
    return Start(
        std::forward<Token>(token),
        [fd](detail::OpBase& op) { op.req.PrepFsync(fd); }, Buffer());
  }
  template <typename Token>
  auto async_fdatasync(int fd, Token&& token) {
    return Start(
        std::forward<Token>(token),
        [fd](detail::OpBase& op) { op.req.PrepFdatasync(fd); }, Buffer());
  }

 private:
  EngineIo(net::io_context& ctx, Engine& engine, int fd)
      : ctx_(ctx), engine_(engine), notify_(ctx, fd) {}

  template <typename Handler>
  struct Op final : detail::OpBase {
    // The handler's allocator; where it has none of its own (std::allocator),
    // Asio's recycling allocator, as Asio's own operations do (a thread's
    // last freed block is reused: no malloc per operation).
    using HandlerAlloc = net::associated_allocator_t<Handler>;
    using ProtoAlloc =
        std::conditional_t<std::is_same_v<HandlerAlloc, std::allocator<void>>,
                           net::recycling_allocator<void>, HandlerAlloc>;
    using Alloc =
        typename std::allocator_traits<ProtoAlloc>::template rebind_alloc<Op>;
    static Alloc AllocFor(const Handler& h) {
      if constexpr (std::is_same_v<HandlerAlloc, std::allocator<void>>) {
        (void)h;
        return Alloc();
      } else {
        return Alloc(net::get_associated_allocator(h));
      }
    }
    using WorkExecutor = net::associated_executor_t<Handler, executor_type>;

    using Slot = net::associated_cancellation_slot_t<Handler>;

    Op(Handler&& h, const executor_type& ex)
        : handler(std::move(h)),
          work(net::make_work_guard(net::get_associated_executor(handler, ex))),
          slot(net::get_associated_cancellation_slot(handler)) {}
    Handler handler;
    net::executor_work_guard<WorkExecutor> work;
    Slot slot;  // cleared when it completes: no signal reaches a freed op

    static void Complete(detail::OpBase* base, int64_t rval, bool call) {
      Op* self = static_cast<Op*>(base);
      if (self->slot.is_connected()) self->slot.clear();
      Handler h = std::move(self->handler);
      auto w = std::move(self->work);
      Alloc alloc = AllocFor(h);
      // Freed before the handler runs (Asio's rule).
      std::allocator_traits<Alloc>::destroy(alloc, self);
      std::allocator_traits<Alloc>::deallocate(alloc, self, 1);
      if (!call) return;  // shutting down: destroyed, not called
      const std::error_code ec =
          rval < 0
              ? std::error_code(static_cast<int>(-rval), std::system_category())
              : std::error_code();
      const std::size_t n = rval < 0 ? 0 : static_cast<std::size_t>(rval);
      auto ex = w.get_executor();
      net::dispatch(
          ex, [h = std::move(h), ec, n]() mutable { std::move(h)(ec, n); });
    }
  };

  template <typename Token, typename Prep>
  auto Start(Token&& token, Prep prep, Buffer buffer) {
    return net::async_initiate<Token, void(std::error_code, std::size_t)>(
        [this](auto handler, Prep&& p, Buffer&& b) {
          using H = std::decay_t<decltype(handler)>;
          using O = Op<H>;
          typename O::Alloc alloc = O::AllocFor(handler);
          O* op = std::allocator_traits<typename O::Alloc>::allocate(alloc, 1);
          std::allocator_traits<typename O::Alloc>::construct(
              alloc, op, std::move(handler), ctx_.get_executor());
          op->complete = &O::Complete;
          op->buffer = std::move(b);
          p(*op);
          op->req.priv = op;
          if (op->slot.is_connected()) {
            op->slot.assign([this, op](net::cancellation_type) { Cancel(op); });
          }
          Queue(op);
        },
        token, std::move(prep), std::move(buffer));
  }

  void Queue(detail::OpBase* op) {
    op->queued = true;
    queued_.push_back(op);
    if (!flush_posted_) {
      flush_posted_ = true;
      // Everything started before this runs goes in one Submit.
      net::post(ctx_, [this] { Flush(); });
    }
  }

  void Flush() {
    flush_posted_ = false;
    if (queued_.empty()) return;
    reqs_.clear();
    for (detail::OpBase* op : queued_) reqs_.push_back(&op->req);
    SubmitResult r = engine_.Submit(reqs_);
    ++submits_;
    for (size_t i = 0; i < r.accepted; ++i) {
      queued_[i]->queued = false;
      queued_[i]->out_index = out_.size();
      out_.push_back(queued_[i]);
    }
    if (!r.status.ok() && !r.status.Is(Errc::kQueueFull)) {
      const int64_t err = ToNegativeErrno(r.status);
      for (size_t i = r.accepted; i < queued_.size(); ++i) {
        queued_[i]->queued = false;
        queued_[i]->complete(queued_[i], err, true);
      }
      queued_.clear();
    } else {
      queued_.erase(queued_.begin(),
                    queued_.begin() + static_cast<std::ptrdiff_t>(r.accepted));
    }
    Arm();
    if (!queued_.empty() && !flush_posted_) {
      flush_posted_ = true;  // the queue was full: again after completions
      net::post(ctx_, [this] { Flush(); });
    }
  }

  // Waits for the NotifyFd while requests are out (which keeps the context
  // running).
  void Arm() {
    if (armed_ || out_.empty()) return;
    armed_ = true;
    notify_.async_wait(net::posix::stream_descriptor::wait_read,
                       [this](const std::error_code& ec) {
                         armed_ = false;
                         if (ec) return;  // closed
                         Collect();
                         Arm();
                       });
  }

  void Collect() {
    uint64_t count = 0;
    (void)!::read(notify_.native_handle(), &count, sizeof(count));
    for (;;) {
      got_.resize(64);
      Result<size_t> n = engine_.Poll(got_);
      if (!n.ok() || *n == 0) break;
      for (size_t i = 0; i < *n; ++i) {
        auto* op = static_cast<detail::OpBase*>(got_[i]->priv);
        Forget(op);
        op->complete(op, got_[i]->rval, true);
      }
    }
  }

  // Off the list of requests out (by its index: the last one takes its
  // place).
  void Forget(detail::OpBase* op) {
    detail::OpBase* last = out_.back();
    out_[op->out_index] = last;
    last->out_index = op->out_index;
    out_.pop_back();
  }

  // A cancellation signal (on the context's thread).
  void Cancel(detail::OpBase* op) {
    if (op->queued) {
      for (size_t i = 0; i < queued_.size(); ++i) {
        if (queued_[i] == op) {
          queued_.erase(queued_.begin() + static_cast<std::ptrdiff_t>(i));
          break;
        }
      }
      op->queued = false;
      op->complete(op, -ECANCELED, true);
      return;
    }
    (void)engine_.Cancel(&op->req);  // completes cancelled, or with its result
  }

  net::io_context& ctx_;
  Engine& engine_;
  net::posix::stream_descriptor notify_;
  std::vector<detail::OpBase*> queued_;
  std::vector<detail::OpBase*> out_;
  std::vector<Request*> reqs_;
  std::vector<Request*> got_;
  bool flush_posted_ = false;
  bool armed_ = false;
  uint64_t submits_ = 0;
};

}  // namespace aiokit::asio

#endif  // AIOKIT_ASIO_H_
