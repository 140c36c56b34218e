#include "aiokit/bluestore.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "util/io_memory.h"

namespace aiokit::bluestore {

bufferptr::bufferptr(size_t len, size_t align) : len_(len) {
  if (len == 0) return;
  if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
  void* p = internal::AllocateIoMemory(len, align);
  if (p == nullptr) throw std::bad_alloc();
  data_ = std::shared_ptr<char>(static_cast<char*>(p),
                                [](char* q) { std::free(q); });
}

namespace buffer {
bufferptr create_small_page_aligned(size_t len) { return bufferptr(len, 4096); }
bufferptr create_aligned(size_t len, size_t align) {
  return bufferptr(len, align);
}
bufferptr copy(const char* data, size_t len) {
  bufferptr p(len, 4096);
  if (len != 0) std::memcpy(p.c_str(), data, len);
  return p;
}
}  // namespace buffer

void bufferlist::append(bufferptr p) {
  len_ += p.length();
  bufs_.push_back(std::move(p));
}

void bufferlist::append(const char* data, size_t len) {
  append(buffer::copy(data, len));
}

void bufferlist::claim_append(bufferlist& other) {
  for (bufferptr& p : other.bufs_) bufs_.push_back(std::move(p));
  len_ += other.len_;
  other.clear();
}

void bufferlist::clear() noexcept {
  bufs_.clear();
  len_ = 0;
}

bool bufferlist::is_aligned(size_t align) const noexcept {
  return std::all_of(bufs_.begin(), bufs_.end(), [align](const bufferptr& p) {
    return reinterpret_cast<uintptr_t>(p.c_str()) % align == 0 &&
           p.length() % align == 0;
  });
}

void bufferlist::copy_out(size_t off, size_t len, char* dst) const {
  assert(off + len <= len_);
  for (const bufferptr& p : bufs_) {
    if (len == 0) break;
    if (off >= p.length()) {
      off -= p.length();
      continue;
    }
    const size_t n = std::min(len, p.length() - off);
    std::memcpy(dst, p.c_str() + off, n);
    dst += n;
    len -= n;
    off = 0;
  }
}

void aio_t::pwritev(uint64_t off, uint64_t len) {
  // The caller filled iov (BlueStore: bl.prepare_iov(&iov)); keep it,
  // re-prepare the rest.
  IovecVector keep = iov;
  PrepWritev(fd, keep.data(), keep.size(), off);
  length = len;  // Validate() refuses a length that differs from the iovecs,
                 // with -EINVAL
}

void aio_t::pread(uint64_t off, uint64_t len) {
  bufferptr p = buffer::create_small_page_aligned(len);
  PrepRead(fd, p.c_str(), len, off);
  bl.append(std::move(p));
}

aio_queue_t::aio_queue_t(unsigned depth)
    : max_iodepth(static_cast<int>(depth)) {}

void aio_queue_t::SetError(Status s) {
  std::lock_guard<std::mutex> lock(error_mu_);
  last_error_ = std::move(s);
}

Status aio_queue_t::last_error() const {
  std::lock_guard<std::mutex> lock(error_mu_);
  return last_error_;
}

aio_queue_t::~aio_queue_t() {
  // BlueStore asserts that shutdown() was called; here the engine's destructor
  // waits for what is in flight instead.
  engine_.reset();
}

int aio_queue_t::init() {
  if (engine_ != nullptr) return 0;
  EngineOptions options;
  if (max_iodepth <= 0) {
    SetError(Status::Error(Errc::kInvalidArgument,
                           "aio_queue_t::init: max_iodepth " +
                               std::to_string(max_iodepth) +
                               " must be at least 1"));
    return -EINVAL;
  }
  options.queue_depth = static_cast<unsigned>(max_iodepth);
  // BlueStore's aio_queue_t has no eventfd; do not make the kernel signal one
  // per completion.
  options.notify_fd = false;
  Result<std::unique_ptr<Engine>> e = MakeEngine(options);
  if (!e.ok()) {
    SetError(e.status());
    return ToNegativeErrno(last_error());
  }
  engine_ = std::move(*e);
  return 0;
}

void aio_queue_t::shutdown() {
  if (engine_ == nullptr) return;
  Status s = engine_->Shutdown(kForever);
  if (!s.ok()) SetError(s);
}

int aio_queue_t::submit_batch(aio_iter begin, aio_iter end, uint16_t aios_size,
                              void* priv, int* retries) {
  // BlueStore sizes its iocb array with aios_size; the engine needs no hint.
  (void)aios_size;
  if (engine_ == nullptr) {
    SetError(Status::Error(Errc::kShutdown,
                           "aio_queue_t::submit_batch before init()"));
    return -EINVAL;
  }
  // BlueStore's callers treat any count as "all submitted", so a batch is
  // taken whole unless that is impossible: when the engine's retry policy runs
  // out (kQueueFull) the rest is offered again, for up to kRounds policies
  // (about 35 s with BlueStore's numbers) before giving up.
  constexpr int kRounds = 4;
  constexpr size_t kChunk = 64;
  Request* chunk[kChunk];
  size_t n = 0;
  int done = 0;
  Status failed;
  // Submits the chunk; false when the engine would not take all of it.
  auto flush = [&]() -> bool {
    size_t off = 0;
    for (int round = 0; off < n && round < kRounds; ++round) {
      SubmitResult r =
          engine_->Submit(std::span<Request* const>(chunk + off, n - off));
      if (retries != nullptr) *retries += static_cast<int>(r.retries);
      done += static_cast<int>(r.accepted);
      off += r.accepted;
      if (off < n) failed = r.status;
      if (!r.status.Is(Errc::kQueueFull)) break;
    }
    const bool all = off == n;
    n = 0;
    return all;
  };
  for (aio_iter cur = begin; cur != end; ++cur) {
    cur->priv = priv;
    chunk[n++] = &*cur;
    if (n == kChunk && !flush()) break;
  }
  if (n != 0) (void)flush();
  if (!failed.ok()) SetError(failed);
  if (done == 0 && !failed.ok()) return ToNegativeErrno(failed);
  return done;
}

int aio_queue_t::get_next_completed(int timeout_ms, aio_t** paio, int max) {
  if (engine_ == nullptr) {
    SetError(Status::Error(Errc::kShutdown,
                           "aio_queue_t::get_next_completed before init()"));
    return -EINVAL;
  }
  if (max <= 0) return 0;
  constexpr size_t kChunk = 64;
  Request* got[kChunk];
  int total = 0;
  // The first pass waits for one completion; the following ones only collect
  // what is already there.
  std::chrono::nanoseconds timeout =
      timeout_ms < 0 ? kForever : std::chrono::milliseconds(timeout_ms);
  size_t min = 1;
  while (total < max) {
    const size_t want = std::min(kChunk, static_cast<size_t>(max - total));
    Result<size_t> r =
        engine_->Reap(std::span<Request*>(got, want), min, timeout);
    if (!r.ok()) {
      if (total != 0) break;
      SetError(r.status());
      // A shut-down engine with nothing left behaves like an empty queue.
      if (r.status().Is(Errc::kShutdown)) return 0;
      return ToNegativeErrno(last_error());
    }
    for (size_t i = 0; i < *r; ++i) paio[total++] = static_cast<aio_t*>(got[i]);
    if (*r < want) break;
    min = 0;
    timeout = std::chrono::nanoseconds(0);
  }
  return total;
}

}  // namespace aiokit::bluestore
