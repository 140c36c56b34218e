#include "engine/threads/threads_queue.h"

#include <bit>

#include "engine/common.h"
#include "engine/threads/threads_io.h"

namespace aiokit::internal {
namespace {

// A request without a priority is best-effort level 4, the kernel's default
// (IOPRIO_NORM). Validate has refused classes the kernel does not have.
uint8_t BucketOf(const Request& r) noexcept {
  if (!r.has_ioprio) return 8 + 4;
  const unsigned cls = r.ioprio >> 13U;
  const unsigned level = r.ioprio & 7U;
  switch (cls) {
    case 1:  // realtime
      return static_cast<uint8_t>(level);
    case 3:  // idle
      return static_cast<uint8_t>(16 + level);
    default:  // none (best effort at the level given), best effort
      return static_cast<uint8_t>(8 + level);
  }
}

// Unlinks `req` from the list head..tail; false when it is not there.
bool Unlink(Request*& head, Request*& tail, Request* req) noexcept {
  Request* prev = nullptr;
  for (Request* r = head; r != nullptr; prev = r, r = r->engine_next) {
    if (r != req) continue;
    if (prev != nullptr) {
      prev->engine_next = r->engine_next;
    } else {
      head = r->engine_next;
    }
    if (tail == r) tail = prev;
    r->engine_next = nullptr;
    return true;
  }
  return false;
}

}  // namespace

void RequestQueue::Enqueue(Request* req) {
  req->engine_next = nullptr;
  req->engine_mark = kQueued;
  req->engine_seq = ++next_ticket_;  // its place (RequeueFront)
  req->engine_bucket = BucketOf(*req);
  ++queued_;
  if (ordered_ && req->fd >= 0) {
    FdChain& c = chains_[req->fd];
    if (c.active) {
      // Waits behind the request of this fd that is queued or running.
      if (c.tail != nullptr) {
        c.tail->engine_next = req;
      } else {
        c.head = req;
      }
      c.tail = req;
      return;
    }
    c.active = true;
  }
  PutInBucket(req);
}

void RequestQueue::PutInBucket(Request* req) {
  const unsigned b = req->engine_bucket;
  if (bucket_tail_[b] != nullptr) {
    bucket_tail_[b]->engine_next = req;
  } else {
    bucket_head_[b] = req;
  }
  bucket_tail_[b] = req;
  nonempty_ |= 1U << b;
  PublishNonempty();
}

Request* RequestQueue::Dequeue() {
  if (nonempty_ == 0) return nullptr;
  const auto b = static_cast<unsigned>(std::countr_zero(nonempty_));
  Request* r = bucket_head_[b];
  // The submitter wrote it last: its lines on their way together, and the
  // next one's while this one runs (a batch takes it next).
  PrefetchLines(r, true);
  bucket_head_[b] = r->engine_next;
  if (bucket_head_[b] != nullptr) PrefetchLines(bucket_head_[b], false);
  if (bucket_head_[b] == nullptr) {
    bucket_tail_[b] = nullptr;
    nonempty_ &= ~(1U << b);
    PublishNonempty();
  }
  r->engine_next = nullptr;
  --queued_;
  return r;
}

void RequestQueue::RequeueFront(Request* req, bool would_block) {
  req->engine_mark = would_block ? kForWorker : kQueued;
  // Back in its place: before the first request queued after it (tickets
  // grow in submission order), so that requests taken and given back keep
  // their order, whoever gives them back and in what order.
  const unsigned b = req->engine_bucket;
  const uint64_t ticket = req->engine_seq;
  Request* prev = nullptr;
  Request* next = bucket_head_[b];
  while (next != nullptr && next->engine_seq < ticket) {
    prev = next;
    next = next->engine_next;
  }
  req->engine_next = next;
  if (prev != nullptr) {
    prev->engine_next = req;
  } else {
    bucket_head_[b] = req;
  }
  if (next == nullptr) bucket_tail_[b] = req;
  nonempty_ |= 1U << b;
  PublishNonempty();
  ++queued_;
}

bool RequestQueue::RunsWithoutBlocking(const Request& req) noexcept {
  return req.engine_mark != kForWorker && !req.has_ioprio &&
         TriesWithoutBlocking(req);
}

bool RequestQueue::HeadRunsWithoutBlocking() const noexcept {
  if (nonempty_ == 0) return false;
  return RunsWithoutBlocking(
      *bucket_head_[static_cast<unsigned>(std::countr_zero(nonempty_))]);
}

const Request* RequestQueue::FirstHelpable() const noexcept {
  if (nonempty_ == 0) return nullptr;
  const auto b = static_cast<unsigned>(std::countr_zero(nonempty_));
  const Request* r = bucket_head_[b];
  for (size_t skipped = 0; r != nullptr && r->engine_mark == kForWorker;
       r = r->engine_next) {
    if (++skipped > kHelpSkip) return nullptr;
  }
  return r != nullptr && RunsWithoutBlocking(*r) ? r : nullptr;
}

bool RequestQueue::HasHelpable() const noexcept {
  return FirstHelpable() != nullptr;
}

Request* RequestQueue::TakeHelpable() {
  const Request* found = FirstHelpable();
  if (found == nullptr) return nullptr;
  const auto b = static_cast<unsigned>(std::countr_zero(nonempty_));
  if (found == bucket_head_[b]) return Dequeue();
  auto* r = const_cast<Request*>(found);
  (void)Unlink(bucket_head_[b], bucket_tail_[b], r);
  --queued_;
  return r;
}

bool RequestQueue::Remove(Request* req) {
  const unsigned b = req->engine_bucket;
  if (b < kBuckets && Unlink(bucket_head_[b], bucket_tail_[b], req)) {
    if (bucket_head_[b] == nullptr) nonempty_ &= ~(1U << b);
    PublishNonempty();
    --queued_;
    if (ordered_ && req->fd >= 0) {
      // It held its fd's turn: pass it to the next of that fd.
      FdChain& c = chains_[req->fd];
      c.active = false;
      if (Request* next = c.head) {
        c.head = next->engine_next;
        if (c.head == nullptr) c.tail = nullptr;
        next->engine_next = nullptr;
        c.active = true;
        PutInBucket(next);
      }
    }
    return true;
  }
  if (ordered_ && req->fd >= 0) {
    auto it = chains_.find(req->fd);
    if (it != chains_.end() && Unlink(it->second.head, it->second.tail, req)) {
      --queued_;
      return true;
    }
  }
  return false;
}

Request* RequestQueue::NextOfFd(int fd) {
  auto it = chains_.find(fd);
  if (it == chains_.end()) return nullptr;
  FdChain& c = it->second;
  Request* next = c.head;
  if (next == nullptr) {
    chains_.erase(it);  // nothing of this fd is queued or running
    return nullptr;
  }
  c.head = next->engine_next;
  if (c.head == nullptr) c.tail = nullptr;
  next->engine_next = nullptr;
  --queued_;
  return next;
}

Request* RequestQueue::TakeAny() {
  if (Request* r = Dequeue()) return r;
  for (auto& [fd, c] : chains_) {
    if (Request* r = c.head) {
      c.head = r->engine_next;
      if (c.head == nullptr) c.tail = nullptr;
      r->engine_next = nullptr;
      --queued_;
      return r;
    }
  }
  return nullptr;
}

}  // namespace aiokit::internal
