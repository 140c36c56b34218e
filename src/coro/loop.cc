// The coroutine loop: a run queue, a timer heap, epoll for fd readiness and
// for the engines' NotifyFd, and calls posted from other threads.

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "aiokit/coro.h"
#include "sys/syscalls.h"

namespace aiokit::coro {
namespace {

using Clock = std::chrono::steady_clock;

// epoll's data for the wake eventfd; a Source's is its address, an
// FdAwaitable's its address with bit 0 set (both are at least 8-aligned).
constexpr uint64_t kWakeTag = 0;
constexpr uint64_t kFdTag = 1;

int EpollMs(std::chrono::nanoseconds ns) {
  if (ns < std::chrono::nanoseconds::zero()) return -1;
  // Rounded up: waking before a timer is due only costs another turn.
  const auto ms =
      (ns + std::chrono::nanoseconds(999999)) / std::chrono::milliseconds(1);
  return static_cast<int>(std::min<int64_t>(ms, 1 << 30));
}

}  // namespace

void detail::PromiseBase::Finished(PromiseBase& p) noexcept {
  Loop* loop = p.spawned_on;
  if (p.spawn_prev != nullptr) {
    p.spawn_prev->spawn_next = p.spawn_next;
  } else {
    loop->spawned_ = p.spawn_next;
  }
  if (p.spawn_next != nullptr) p.spawn_next->spawn_prev = p.spawn_prev;
  p.spawned_on = nullptr;
}

Result<std::unique_ptr<Loop>> Loop::Create() {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return Status::FromErrno(errno, "Loop: epoll_create1");
  const int wake = sys::Eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake < 0) {
    ::close(ep);
    return Status::FromErrno(-wake, "Loop: eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  if (::epoll_ctl(ep, EPOLL_CTL_ADD, wake, &ev) != 0) {
    const int err = errno;
    ::close(wake);
    ::close(ep);
    return Status::FromErrno(err, "Loop: epoll_ctl(ADD, the wake eventfd)");
  }
  std::unique_ptr<Loop> loop(new Loop(ep, wake));
  // Room up front for the coroutines ready or posted at once: a loop that
  // never has more than this many allocates nothing for them after Create
  // (otherwise a queue grows, once, at the first turn with more than before).
  constexpr size_t kQueueRoom = 64;
  loop->ready_.reserve(kQueueRoom);
  loop->running_.reserve(kQueueRoom);
  loop->posted_.reserve(kQueueRoom);
  loop->posted_run_.reserve(kQueueRoom);
  return loop;
}

Loop::~Loop() {
  // Spawned coroutines still suspended are destroyed: an operation among
  // them detaches its request (the EngineIos are gone already, and detached
  // theirs first).
  while (spawned_ != nullptr) {
    detail::PromiseBase* p = spawned_;
    spawned_ = p->spawn_next;
    p->spawned_on = nullptr;
    p->self.destroy();
  }
  (void)sys::Close(wakefd_);
  (void)sys::Close(epfd_);
}

void Loop::Spawn(Task<void> task) {
  auto h = task.Release();
  if (!h) return;
  detail::PromiseBase& p = h.promise();
  p.spawned_on = this;
  p.self = h;
  p.spawn_prev = nullptr;
  p.spawn_next = spawned_;
  if (spawned_ != nullptr) spawned_->spawn_prev = &p;
  spawned_ = &p;
  Schedule(h);
}

void Loop::Schedule(std::coroutine_handle<> h) { ready_.push_back(h); }

void Loop::Post(std::coroutine_handle<> h) {
  {
    std::lock_guard lock(post_mu_);
    posted_.push_back(h);
  }
  Wake();
}

void Loop::PostCall(detail::RemoteCall* c) {
  {
    std::lock_guard lock(post_mu_);
    if (c->queued) return;
    c->queued = true;
    c->next = calls_;
    calls_ = c;
  }
  Wake();
}

bool Loop::CancelCall(detail::RemoteCall* c) {
  std::lock_guard lock(post_mu_);
  if (!c->queued) return false;
  for (detail::RemoteCall** link = &calls_; *link != nullptr;
       link = &(*link)->next) {
    if (*link == c) {
      *link = c->next;
      break;
    }
  }
  c->queued = false;
  return true;
}

void Loop::Wake() {
  // Release pairs with the acquire in DrainPosted: what was posted is seen.
  post_pending_.store(true, std::memory_order_release);
  std::lock_guard lock(post_mu_);
  // One write until the loop drains it; under the lock, so that the eventfd
  // and woken_ agree when DrainPosted reads both.
  if (woken_) return;
  woken_ = true;
  (void)sys::EventfdWrite(wakefd_, 1);
}

void Loop::DrainPosted() {
  if (!post_pending_.exchange(false, std::memory_order_acquire)) return;
  detail::RemoteCall* calls = nullptr;
  {
    std::lock_guard lock(post_mu_);
    // The eventfd is read with the lists taken: a post after this section
    // finds woken_ false and writes it again.
    if (woken_) {
      uint64_t n = 0;
      (void)sys::EventfdRead(wakefd_, &n);
      woken_ = false;
    }
    posted_run_.swap(posted_);
    calls = std::exchange(calls_, nullptr);
    for (detail::RemoteCall* c = calls; c != nullptr; c = c->next) {
      c->queued = false;
    }
  }
  for (std::coroutine_handle<> h : posted_run_) ready_.push_back(h);
  posted_run_.clear();
  // A call's owner cancels it under post_mu_ before it goes; one already
  // taken off the list here runs now (the owner is on this thread, and
  // cannot be gone until this turn ends).
  while (calls != nullptr) {
    detail::RemoteCall* next = calls->next;
    calls->fn(calls);
    calls = next;
  }
}

size_t Loop::RunReady() {
  size_t n = 0;
  while (!ready_.empty()) {
    running_.swap(ready_);
    // By index: Unschedule may blank entries past it while it runs.
    for (running_pos_ = 0; running_pos_ < running_.size();) {
      std::coroutine_handle<> h = running_[running_pos_++];
      h.resume();
      ++n;
    }
    running_.clear();
    running_pos_ = 0;
  }
  return n;
}

void Loop::Unschedule(std::coroutine_handle<> h) {
  for (std::coroutine_handle<>& x : ready_) {
    if (x == h) x = std::noop_coroutine();
  }
  for (size_t i = running_pos_; i < running_.size(); ++i) {
    if (running_[i] == h) running_[i] = std::noop_coroutine();
  }
  std::lock_guard lock(post_mu_);
  for (std::coroutine_handle<>& x : posted_) {
    if (x == h) x = std::noop_coroutine();
  }
}

// ---- Timers: a binary heap by due time. ----

void Loop::HeapSwap(size_t a, size_t b) {
  std::swap(heap_[a], heap_[b]);
  heap_[a]->heap_index = a;
  heap_[b]->heap_index = b;
}

void Loop::HeapUp(size_t i) {
  while (i > 0) {
    const size_t parent = (i - 1) / 2;
    if (heap_[parent]->due <= heap_[i]->due) break;
    HeapSwap(i, parent);
    i = parent;
  }
}

void Loop::HeapDown(size_t i) {
  for (;;) {
    const size_t l = 2 * i + 1;
    const size_t r = l + 1;
    size_t m = i;
    if (l < heap_.size() && heap_[l]->due < heap_[m]->due) m = l;
    if (r < heap_.size() && heap_[r]->due < heap_[m]->due) m = r;
    if (m == i) return;
    HeapSwap(i, m);
    i = m;
  }
}

void Loop::AddTimer(detail::TimerNode* t) {
  if (t->heap_index != SIZE_MAX) RemoveTimer(t);
  t->heap_index = heap_.size();
  heap_.push_back(t);
  HeapUp(t->heap_index);
}

void Loop::RemoveTimer(detail::TimerNode* t) {
  const size_t i = t->heap_index;
  if (i == SIZE_MAX) return;
  const size_t last = heap_.size() - 1;
  if (i != last) HeapSwap(i, last);
  heap_.pop_back();
  t->heap_index = SIZE_MAX;
  if (i < heap_.size()) {
    HeapUp(i);
    HeapDown(i);
  }
}

size_t Loop::FireTimers() {
  size_t n = 0;
  const Clock::time_point now = Clock::now();
  while (!heap_.empty() && heap_[0]->due <= now) {
    detail::TimerNode* t = heap_[0];
    RemoveTimer(t);
    t->fire(t);
    ++n;
  }
  return n;
}

// ---- Sources (the engines) ----

Status Loop::AddSource(Source* s, int notify_fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = reinterpret_cast<uint64_t>(s);
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, notify_fd, &ev) != 0) {
    return Status::FromErrno(errno, "Loop: epoll_ctl(ADD, NotifyFd " +
                                        std::to_string(notify_fd) + ")");
  }
  s->prev_ = nullptr;
  s->next_ = sources_;
  if (sources_ != nullptr) sources_->prev_ = s;
  sources_ = s;
  return {};
}

void Loop::RemoveSource(Source* s, int notify_fd) {
  (void)::epoll_ctl(epfd_, EPOLL_CTL_DEL, notify_fd, nullptr);
  if (s->prev_ != nullptr) {
    s->prev_->next_ = s->next_;
  } else {
    sources_ = s->next_;
  }
  if (s->next_ != nullptr) s->next_->prev_ = s->prev_;
  s->prev_ = s->next_ = nullptr;
}

// ---- One turn ----

Result<size_t> Loop::RunOnce(std::chrono::nanoseconds timeout) {
  size_t resumed = 0;
  DrainPosted();
  (void)FireTimers();
  resumed += RunReady();
  size_t found = 0;
  for (Source* s = sources_; s != nullptr; s = s->next_) {
    s->SubmitQueued();
    found += s->Collect();
  }
  // Anything resumed or found: back to the caller, who may be waiting for
  // exactly that (Run checks its task between turns); no blocking.
  if (resumed != 0 || found != 0 || !ready_.empty()) {
    resumed += RunReady();
    for (Source* s = sources_; s != nullptr; s = s->next_) s->SubmitQueued();
    return resumed;
  }
  std::chrono::nanoseconds wait = timeout;
  if (!heap_.empty()) {
    const auto until = std::chrono::duration_cast<std::chrono::nanoseconds>(
        heap_[0]->due - Clock::now());
    const auto due = std::max(until, std::chrono::nanoseconds::zero());
    if (wait < std::chrono::nanoseconds::zero() || due < wait) wait = due;
  }
  epoll_event events[64];
  int n = ::epoll_wait(epfd_, events, 64, EpollMs(wait));
  if (n < 0) {
    if (errno != EINTR) return Status::FromErrno(errno, "Loop: epoll_wait");
    n = 0;
  }
  for (int i = 0; i < n; ++i) {
    const uint64_t tag = events[i].data.u64;
    if (tag == kWakeTag) continue;  // DrainPosted reads it
    if ((tag & kFdTag) != 0) {
      auto* fa = reinterpret_cast<FdAwaitable*>(tag & ~kFdTag);
      fa->got_ = events[i].events;
      Schedule(fa->h_);
    }
    // A Source's NotifyFd: Collect below reads it.
  }
  DrainPosted();
  (void)FireTimers();
  for (Source* s = sources_; s != nullptr; s = s->next_) (void)s->Collect();
  resumed += RunReady();
  for (Source* s = sources_; s != nullptr; s = s->next_) s->SubmitQueued();
  return resumed;
}

// ---- Sleep ----

Loop::SleepAwaitable Loop::Sleep(std::chrono::nanoseconds d,
                                 std::stop_token stop) {
  return {this, d, std::move(stop)};
}

void Loop::SleepAwaitable::await_suspend(std::coroutine_handle<> h) {
  h_ = h;
  node_.self = this;
  node_.due = Clock::now() + d_;
  node_.fire = [](detail::TimerNode* t) {
    static_cast<Node*>(t)->self->Fire(false);
  };
  loop_->AddTimer(&node_);
  call_.self = this;
  call_.fn = [](detail::RemoteCall* c) {
    static_cast<Call*>(c)->self->Fire(true);
  };
  // Constructed last: when stop was already requested it runs at once.
  if (stop_.stop_possible()) cb_.emplace(stop_, OnStop{this});
}

void Loop::SleepAwaitable::OnStop::operator()() const noexcept {
  self->loop_->PostCall(&self->call_);
}

void Loop::SleepAwaitable::Fire(bool early) {
  if (fired_) return;
  fired_ = true;
  stopped_early_ = early;
  loop_->RemoveTimer(&node_);
  loop_->Schedule(h_);
}

Loop::SleepAwaitable::~SleepAwaitable() {
  // The stop callback first: its destructor waits for one running on another
  // thread, which may be posting call_.
  cb_.reset();
  (void)loop_->CancelCall(&call_);
  loop_->RemoveTimer(&node_);
}

// ---- Fd readiness ----

Loop::FdAwaitable Loop::Readable(int fd) { return {this, fd, EPOLLIN}; }
Loop::FdAwaitable Loop::Writable(int fd) { return {this, fd, EPOLLOUT}; }

bool Loop::FdAwaitable::await_suspend(std::coroutine_handle<> h) {
  h_ = h;
  epoll_event ev{};
  ev.events = events_ | EPOLLONESHOT;
  ev.data.u64 = reinterpret_cast<uint64_t>(this) | kFdTag;
  if (::epoll_ctl(loop_->epfd_, EPOLL_CTL_ADD, fd_, &ev) != 0) {
    error_ = Status::FromErrno(
        errno, "Loop: epoll_ctl(ADD, fd " + std::to_string(fd_) + ")");
    return false;
  }
  registered_ = true;
  return true;
}

Result<uint32_t> Loop::FdAwaitable::await_resume() {
  if (!error_.ok()) return error_;
  return got_;
}

Loop::FdAwaitable::~FdAwaitable() {
  if (registered_) (void)::epoll_ctl(loop_->epfd_, EPOLL_CTL_DEL, fd_, nullptr);
}

// ---- WhenAll of void tasks ----

namespace detail {
Task<void> WhenAllChildVoid(Task<void> t, AllLatch* latch) {
  co_await std::move(t);
  co_await LatchArrive{latch};
}
}  // namespace detail

Task<void> WhenAll(std::vector<Task<void>> tasks) {
  detail::AllLatch latch;
  std::vector<Task<void>> children;
  children.reserve(tasks.size());
  for (Task<void>& t : tasks) {
    children.push_back(detail::WhenAllChildVoid(std::move(t), &latch));
  }
  co_await detail::AllAwaiter{&latch, &children};
}

}  // namespace aiokit::coro
