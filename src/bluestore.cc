#include "aiokit/bluestore.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

namespace aiokit::bluestore {

bufferptr::bufferptr(size_t len, size_t align) : len_(len) {
  if (len == 0) return;
  if (align < alignof(std::max_align_t)) align = alignof(std::max_align_t);
  const size_t rounded = (len + align - 1) & ~(align - 1);
  void* p = std::aligned_alloc(align, rounded);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
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

aio_queue_t::~aio_queue_t() {
  // BlueStore asserts that shutdown() was called; here the engine's destructor
  // waits for what is in flight instead.
  engine_.reset();
}

int aio_queue_t::init() {
  if (engine_ != nullptr) return 0;
  EngineOptions options;
  if (max_iodepth <= 0) {
    last_error_ =
        Status::Error(Errc::kInvalidArgument,
                      "aio_queue_t::init: max_iodepth " +
                          std::to_string(max_iodepth) + " must be at least 1");
    return -EINVAL;
  }
  options.queue_depth = static_cast<unsigned>(max_iodepth);
  // BlueStore's aio_queue_t has no eventfd; do not make the kernel signal one
  // per completion.
  options.notify_fd = false;
  Result<std::unique_ptr<Engine>> e = MakeEngine(options);
  if (!e.ok()) {
    last_error_ = e.status();
    return ToNegativeErrno(last_error_);
  }
  engine_ = std::move(*e);
  return 0;
}

void aio_queue_t::shutdown() {
  if (engine_ == nullptr) return;
  Status s = engine_->Shutdown(kForever);
  if (!s.ok()) last_error_ = s;
}

int aio_queue_t::submit_batch(aio_iter begin, aio_iter end, uint16_t aios_size,
                              void* priv, int* retries) {
  (void)aios_size;  // BlueStore sizes its iocb array with it; the engine needs
                    // no such hint
  if (engine_ == nullptr) {
    last_error_ = Status::Error(Errc::kShutdown,
                                "aio_queue_t::submit_batch before init()");
    return -EINVAL;
  }
  constexpr size_t kChunk = 64;
  Request* chunk[kChunk];
  size_t n = 0;
  int done = 0;
  // Submits the chunk; false when the engine took only part of it.
  auto flush = [&]() -> bool {
    if (n == 0) return true;
    SubmitResult r = engine_->Submit(std::span<Request* const>(chunk, n));
    if (retries != nullptr) *retries += static_cast<int>(r.retries);
    done += static_cast<int>(r.accepted);
    const bool all = r.accepted == n;
    n = 0;
    if (!all) last_error_ = r.status;
    return all;
  };
  for (aio_iter cur = begin; cur != end; ++cur) {
    cur->priv = priv;
    chunk[n++] = &*cur;
    if (n == kChunk && !flush()) break;
  }
  if (n != 0) (void)flush();
  if (done == 0 && !last_error_.ok() && begin != end)
    return ToNegativeErrno(last_error_);
  return done;
}

int aio_queue_t::get_next_completed(int timeout_ms, aio_t** paio, int max) {
  if (engine_ == nullptr) {
    last_error_ = Status::Error(
        Errc::kShutdown, "aio_queue_t::get_next_completed before init()");
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
      last_error_ = r.status();
      // A shut-down engine with nothing left behaves like an empty queue.
      if (r.status().Is(Errc::kShutdown)) return 0;
      return ToNegativeErrno(last_error_);
    }
    for (size_t i = 0; i < *r; ++i) paio[total++] = static_cast<aio_t*>(got[i]);
    if (*r < want) break;
    min = 0;
    timeout = std::chrono::nanoseconds(0);
  }
  return total;
}

}  // namespace aiokit::bluestore
