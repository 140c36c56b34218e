#include "engine/core/core_state.h"

#include "sys/syscalls.h"

namespace aiokit::internal {

int HoldEventfd(int fd) noexcept {
  if (fd < 0) return -1;
  const int held = sys::DupCloexec(fd);
  return held >= 0 ? held : -1;
}

void SignalHeldEventfd(int held) noexcept {
  if (held < 0) return;
  (void)sys::EventfdWrite(held, 1);
  (void)sys::Close(held);
}

void CoreState::Deliver(Request* req, int64_t res, Origin origin) {
  req->rval = res;
  req->origin = origin;
  const int held = HoldEventfd(req->resfd);
  SyncHanded(*req);
  req->engine_state.store(request_state::kCompleted, std::memory_order_relaxed);
  counters_.completed.fetch_add(1, std::memory_order_relaxed);
  TsanRelease(req);
  // From here on the request is the caller's.
  options_.on_complete(options_.on_complete_arg, req);
  delivered_.fetch_add(1, std::memory_order_seq_cst);
  if (notify_fd_ >= 0) (void)sys::EventfdWrite(notify_fd_, 1);
  SignalHeldEventfd(held);
}

void CoreState::Hand(Request* req) {
  SyncHanded(*req);
  req->engine_state.store(request_state::kCompleted, std::memory_order_relaxed);
  counters_.completed.fetch_add(1, std::memory_order_relaxed);
  options_.on_complete(options_.on_complete_arg, req);
  delivered_.fetch_add(1, std::memory_order_seq_cst);
}

}  // namespace aiokit::internal
