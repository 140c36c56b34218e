// aiokit: Ceph BlueStore's aio interface (os/bluestore/aio.h), on every aiokit
// engine.
//
// Code written against BlueStore's aio.h ports by changing a namespace: `aio_t`
// wraps a request (its first member is the kernel's iocb), `aio_queue_t`
// submits batches of them and reaps completions. The engine is the one
// AIOKIT_ENGINE names (auto when unset), so the same code runs on linux-aio,
// io_uring or threads.
//
// Differences from BlueStore, all in the direction of not losing data:
//  - init() returns -errno and keeps the message in last_error() (BlueStore
//  logs and returns).
//  - submit_batch() never asserts: a request the kernel refuses completes with
//  its -errno through
//    get_next_completed(); when EAGAIN outlasts the retry policy it returns how
//    many it submitted (the rest are still the caller's), or -EAGAIN if none.
//  - shutdown() waits for requests in flight instead of abandoning them to
//  io_destroy; their rval is set.
//  - bufferlist/bufferptr are a small aligned-buffer list, not Ceph's; aio_t
//  has no boost intrusive hook.
//
// Thread safety: as aiokit::Engine (submit_batch from several threads, one
// reaper at a time).

#ifndef AIOKIT_BLUESTORE_H_
#define AIOKIT_BLUESTORE_H_

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "aiokit/status.h"

namespace aiokit::bluestore {

// A reference-counted, aligned byte buffer (the part of Ceph's bufferptr that
// aio uses).
class bufferptr {
 public:
  bufferptr() = default;
  // A zero-filled buffer of `len` bytes aligned to `align` (a power of two).
  // Out of memory throws std::bad_alloc, as operator new does.
  explicit bufferptr(size_t len, size_t align = 4096);

  [[nodiscard]] char* c_str() const noexcept { return data_.get(); }
  [[nodiscard]] size_t length() const noexcept { return len_; }
  // The shared memory (an aiokit addition: a request holds it while it runs).
  [[nodiscard]] const std::shared_ptr<char>& shared() const noexcept {
    return data_;
  }

 private:
  std::shared_ptr<char> data_;
  size_t len_ = 0;
};

namespace buffer {
// A page-aligned buffer of len bytes (Ceph's
// buffer::create_small_page_aligned).
bufferptr create_small_page_aligned(size_t len);
// A buffer of len bytes aligned to align.
bufferptr create_aligned(size_t len, size_t align);
// A page-aligned copy of [data, data + len).
bufferptr copy(const char* data, size_t len);
}  // namespace buffer

// A list of buffers, kept alive for as long as the list (an aio_t's `bl` holds
// write data until the write completes, and receives the buffer of a pread).
class bufferlist {
 public:
  void append(bufferptr p);
  // Copies into a new page-aligned buffer.
  void append(const char* data, size_t len);
  // Moves other's buffers to the end of this list.
  void claim_append(bufferlist& other);
  void clear() noexcept;

  [[nodiscard]] size_t length() const noexcept { return len_; }
  [[nodiscard]] unsigned get_num_buffers() const noexcept {
    return static_cast<unsigned>(bufs_.size());
  }
  [[nodiscard]] const std::vector<bufferptr>& buffers() const noexcept {
    return bufs_;
  }
  // True when every buffer's address and length are multiples of align.
  [[nodiscard]] bool is_aligned(size_t align) const noexcept;
  // Copies len bytes starting at off into dst. REQUIRES: off + len <= length().
  void copy_out(size_t off, size_t len, char* dst) const;

  // Fills *piov with one iovec per buffer (Ceph's prepare_iov). VectorT:
  // IovecVector or std::vector<iovec>.
  template <typename VectorT>
  void prepare_iov(VectorT* piov) const {
    piov->clear();
    for (const bufferptr& p : bufs_)
      piov->push_back(iovec{p.c_str(), p.length()});
  }

 private:
  std::vector<bufferptr> bufs_;
  size_t len_ = 0;
};

// BlueStore's aio_t: an aiokit::Request (iocb first, priv, fd, iov, offset,
// length, rval) plus `bl`.
struct aio_t : public Request {
  // Write payload (kept stable until completion) or the buffer a pread fills.
  bufferlist bl;

  aio_t(void* p, int f) {
    priv = p;
    fd = f;
  }

  // Prepares a vectored write of `iov` (filled by the caller, e.g.
  // bl.prepare_iov(&iov)) at offset. REQUIRES: len > 0 and len == the sum of
  // iov (otherwise the request completes with -EINVAL).
  void pwritev(uint64_t offset, uint64_t len);
  // Prepares a read of len bytes at offset into a new page-aligned buffer
  // appended to bl.
  void pread(uint64_t offset, uint64_t len);
  // rval: bytes transferred or -errno, -1000 until completed (BlueStore's int).
  [[nodiscard]] int get_return_value() const noexcept {
    return static_cast<int>(rval);
  }
};

struct aio_queue_t {
  using aio_iter = std::list<aio_t>::iterator;

  int max_iodepth;

  explicit aio_queue_t(unsigned max_iodepth);
  ~aio_queue_t();
  aio_queue_t(const aio_queue_t&) = delete;
  aio_queue_t& operator=(const aio_queue_t&) = delete;

  // Creates the engine (AIOKIT_ENGINE, else auto) with queue depth max_iodepth.
  // 0 or -errno; the reason is in last_error().
  int init();
  // Waits for requests in flight (their rval is set), then releases the
  // engine's kernel resources.
  void shutdown();

  // Submits [begin, end) in order, setting each aio's priv to `priv`
  // (BlueStore's IOContext), retrying EAGAIN with BlueStore's policy (16
  // retries from 125 us, doubling; the rest of a batch is offered again for up
  // to four such rounds), adding the retries to *retries (may be null).
  // Returns how many were submitted: each comes back from get_next_completed
  // exactly once. Fewer than the batch only when the engine could take no more
  // (the others are not submitted; last_error() says why); -errno when none
  // were.
  int submit_batch(aio_iter begin, aio_iter end, uint16_t aios_size, void* priv,
                   int* retries);

  // Waits up to timeout_ms (negative: no limit) for at least one completion and
  // stores up to max of them in paio. Returns how many (0 on timeout) or
  // -errno.
  int get_next_completed(int timeout_ms, aio_t** paio, int max);

  // ---- aiokit additions ----
  // The engine (null before init()).
  [[nodiscard]] Engine* engine() const noexcept { return engine_.get(); }
  // Why the last failing call failed (safe from any thread).
  [[nodiscard]] Status last_error() const;

 private:
  void SetError(Status s);

  std::unique_ptr<Engine> engine_;
  mutable std::mutex error_mu_;
  Status last_error_;  // guarded by error_mu_
};

// ---- The device: BlueStore's KernelDevice and IOContext (os/bluestore/
// BlockDevice.h), over aiokit::Device. Differences, all towards not losing
// data: errors are returned (-errno, the message in last_error()) where
// BlueStore aborts (EIO without allow_eio, a failed fdatasync, a refused
// submission); a failed flush stays failed until the device is reopened;
// requests are split, resubmitted and retried by the layer below.

// Ceph's write lifetime hints, for write_hint.
enum {
  WRITE_LIFE_NOT_SET = 0,
  WRITE_LIFE_NONE = 1,
  WRITE_LIFE_SHORT = 2,
  WRITE_LIFE_MEDIUM = 3,
  WRITE_LIFE_LONG = 4,
  WRITE_LIFE_EXTREME = 5,
  WRITE_LIFE_MAX = 6,
};

// Disjoint byte ranges (the part of Ceph's interval_set<uint64_t> that
// discard uses): start -> length, adjacent and overlapping ranges merged.
class interval_set {
 public:
  using map_type = std::map<uint64_t, uint64_t>;
  void insert(uint64_t start, uint64_t len);
  void clear() noexcept { m_.clear(); }
  [[nodiscard]] bool empty() const noexcept { return m_.empty(); }
  [[nodiscard]] size_t num_intervals() const noexcept { return m_.size(); }
  // Bytes covered.
  [[nodiscard]] uint64_t size() const noexcept;
  [[nodiscard]] map_type::const_iterator begin() const noexcept {
    return m_.begin();
  }
  [[nodiscard]] map_type::const_iterator end() const noexcept {
    return m_.end();
  }

 private:
  map_type m_;
};

class KernelDevice;

// BlueStore's IOContext: a group of aios (one transaction). With a priv, the
// device's aio callback gets it once the group completes; without, the
// caller waits with aio_wait().
class IOContext {
 public:
  explicit IOContext(void* priv = nullptr, bool allow_eio = false);
  IOContext(const IOContext&) = delete;
  IOContext& operator=(const IOContext&) = delete;

  void* const priv;

  [[nodiscard]] bool has_pending_aios() const noexcept {
    return ioc_.pending() != 0;
  }
  [[nodiscard]] uint64_t num_pending() const noexcept { return ioc_.pending(); }
  [[nodiscard]] uint64_t num_running() const noexcept { return ioc_.running(); }
  // Waits until nothing of the group runs (BlueStore's aio_wait).
  void aio_wait();
  // 0, or the first error as -errno (-EIO when allow_eio and a request met
  // EIO); the message is in context().status().
  [[nodiscard]] int get_return_value() const;
  [[nodiscard]] IoContext& context() noexcept { return ioc_; }

 private:
  friend class KernelDevice;
  std::atomic<KernelDevice*> dev_{nullptr};
  IoContext ioc_;
};

class KernelDevice {
 public:
  // BlueStore's callbacks: aio_cb(aio_cb_priv, ioc->priv) when a group with a
  // priv completes (on the device's completion thread); discard_cb(
  // discard_cb_priv, interval_set*) with the ranges a discard pass released.
  using aio_callback_t = void (*)(void* handle, void* aio);
  KernelDevice(aio_callback_t aio_cb, void* aio_cb_priv,
               aio_callback_t discard_cb = nullptr,
               void* discard_cb_priv = nullptr);
  // Closes (waits for what is in flight).
  ~KernelDevice();
  KernelDevice(const KernelDevice&) = delete;
  KernelDevice& operator=(const KernelDevice&) = delete;

  // O_DIRECT, one completion thread (BlueStore's aio thread), the engine
  // AIOKIT_ENGINE names (auto when unset). 0 or -errno.
  int open(const std::string& path);
  void close();
  [[nodiscard]] uint64_t get_size() const;
  [[nodiscard]] uint64_t get_block_size() const;

  // Synchronous; `buffered` goes through the page cache (a second, buffered
  // descriptor opened on first use). 0 or -errno.
  int read(uint64_t off, uint64_t len, bufferlist* pbl, IOContext* ioc,
           bool buffered);
  int read_random(uint64_t off, uint64_t len, char* buf, bool buffered);
  int write(uint64_t off, bufferlist& bl, bool buffered,
            int write_hint = WRITE_LIFE_NOT_SET);
  // Queued on ioc until aio_submit. A buffered write is written at once, as
  // BlueStore does. 0 or -errno.
  int aio_read(uint64_t off, uint64_t len, bufferlist* pbl, IOContext* ioc);
  int aio_write(uint64_t off, bufferlist& bl, IOContext* ioc, bool buffered,
                int write_hint = WRITE_LIFE_NOT_SET);
  void aio_submit(IOContext* ioc);
  int flush();
  // 0, or -EOPNOTSUPP where the device cannot discard (last_error() says
  // why).
  int queue_discard(interval_set& to_release);
  void discard_drain();

  // ---- aiokit additions ----
  [[nodiscard]] Device* device() noexcept { return direct_.get(); }
  [[nodiscard]] Status last_error() const;

 private:
  friend class IOContext;  // calls aio_cb_
  int Fail(Status s);
  Device* Buffered();
  static std::vector<Buffer> Wrap(bufferlist& bl, size_t align);

  aio_callback_t aio_cb_;
  void* aio_cb_priv_;
  aio_callback_t discard_cb_;
  void* discard_cb_priv_;
  std::string path_;
  std::unique_ptr<Device> direct_;
  std::mutex buffered_mu_;
  std::unique_ptr<Device> buffered_;  // guarded by buffered_mu_ until made
  mutable std::mutex error_mu_;
  Status last_error_;  // guarded by error_mu_
};

}  // namespace aiokit::bluestore

#endif  // AIOKIT_BLUESTORE_H_
