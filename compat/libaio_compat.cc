// The libaio drop-in: libaio.so.1's symbols, with its symbol versions, on any
// aiokit engine.
//
// AIOKIT_ENGINE (read at each io_setup) picks what a new context runs on:
//  - linux-aio: the kernel's own context; every call passes straight through
//    (as libaio itself does), so programs that reap the kernel's ring in user
//    space keep working.
//  - io_uring, threads: an aiokit engine behind a context of our own. The
//    io_context_t handed out points at a ring in the kernel's aio_ring layout,
//    which the engine's completion callback fills as the kernel's aio_complete
//    fills its own: the event, then the tail, then the request's eventfd. A
//    program may reap it in user space (moving the head) or call io_getevents,
//    which reads the same ring. io_uring has no threads of its own: the
//    thread in io_getevents reaps the engine into the ring, and once a
//    request with an eventfd is submitted (its program may wait on that and
//    never call io_getevents) a publisher thread of the context does.
//  - auto (the default): io_uring, else the kernel's AIO, else threads.
// Calls on a context we did not make go to the kernel, which answers for
// contexts it made and refuses the rest (EINVAL), exactly as it would.
//
// Every call returns what the kernel's would: a count, or -errno (libaio's
// convention, not errno). Where the kernel refuses an iocb at io_submit (bad
// fd, wrong open mode, reserved fields, unknown opcode, negative offset, bad
// eventfd) so do we, before the engine sees it; what the kernel reports in
// the completion (a misaligned O_DIRECT read, say) comes in the completion.

#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/request.h"
#include "engine/aio_ring.h"
#include "engine/common.h"
#include "engine/core/core_state.h"
#include "engine/valgrind.h"
#include "imports.h"
#include "sys/syscalls.h"
#include "user_memory.h"

// libaio's handle: a pointer to the context's ring.
struct io_context;
using io_context_t = io_context*;
using io_callback_t = void (*)(io_context_t ctx, struct iocb* iocb, long res,
                               long res2);

namespace aiokit::compat {
namespace {

using std::chrono::nanoseconds;

// The bytes of an io_context_t, which the program's *ctxp holds.
constexpr size_t kHandleBytes = sizeof(void*);
static_assert(std::is_pointer_v<io_context_t>);
// The kernel refuses io_setup beyond this many events (fs/aio.c).
constexpr unsigned kMaxEvents = 0x10000000U / sizeof(io_event);
// The engines' largest queue (io_uring's SQ).
constexpr unsigned kMaxEngineDepth = 32768;

struct FreeDeleter {
  void operator()(void* p) const noexcept { std::free(p); }
};

// One context of ours.
struct Context {
  // What the io_context_t points at: a ring in the kernel's aio_ring layout
  // that the program may reap from in user space, written by OnComplete (the
  // engine's completion callback) as the kernel's aio_complete writes its own.
  // Declared before the engine, so that it outlives the engine's threads.
  std::unique_ptr<void, FreeDeleter> ring_mem;
  internal::AioRing* ring = nullptr;
  unsigned ring_nr = 0;  // slots in `ring`

  unsigned nr = 0;  // requests the context holds (>= maxevents asked for)
  // Both locks are held for a few instructions by the program's threads and
  // the engine's workers at once: adaptive (spin, then sleep), as the
  // engine's own (see internal::AdaptiveMutex).
  internal::AdaptiveMutex mu;  // the pool
  std::vector<Request> reqs;
  std::vector<Request*> free_reqs;
  // Per request (by index): the caller's iocb, its aio_data and its eventfd
  // (IOCB_FLAG_RESFD: a descriptor of our own for it, taken at submission as
  // the kernel takes a reference, or -1). The eventfd is ours to signal, not
  // the engine's: only once the event is in the ring.
  std::vector<struct iocb*> user_iocb;
  std::vector<uint64_t> user_data;
  std::vector<int> user_resfd;
  // io_cancel holds a request here (a count) while it asks the engine, so
  // that the request is not freed and reused for another iocb meanwhile; a
  // completion that comes then leaves the freeing to io_cancel.
  std::vector<uint8_t> pinned;
  std::vector<uint8_t> free_deferred;

  // Under mu: the request goes back to the pool, unless io_cancel holds it.
  void Release(Request* r) {
    const size_t k = IndexOf(r);
    user_iocb[k] = nullptr;
    if (pinned[k] != 0) {
      free_deferred[k] = 1;
    } else {
      free_reqs.push_back(r);
    }
  }

  // Producers (OnComplete) and io_getevents under ring_mu.
  internal::AdaptiveMutex ring_mu;
  std::condition_variable_any ring_cv;
  unsigned ring_waiters = 0;
  bool dead = false;  // io_destroy was called: waiters return
  std::atomic<unsigned> in_flight{0};
  // io_uring with COOP_TASKRUN: a submitting thread's completions run when it
  // enters the kernel, so a thread waiting for them must not spin in user
  // space only.
  bool enter_kernel_to_complete = false;
  // io_uring has no thread of its own that completes requests: the thread in
  // io_getevents reaps the engine itself (its callback fills the ring), until
  // a request with an eventfd is submitted. A program that waits on an
  // eventfd may never call io_getevents, so from then on a publisher thread
  // reaps the engine into the ring and io_getevents only reads the ring.
  bool caller_reaps = false;
  std::atomic<bool> publishing{false};
  std::mutex publisher_mu;  // starting and stopping the publisher
  std::thread publisher;

  // Starts the publisher (once). Thread safety: any thread.
  void StartPublisher() {
    std::lock_guard<std::mutex> lock(publisher_mu);
    if (publishing.load(std::memory_order_relaxed) || dead_publisher) return;
    // With every signal blocked, so that the process's signals keep going to
    // the program's own threads (the thread inherits the mask).
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      publisher = std::thread([this] {
        for (;;) {
          Result<size_t> r =
              engine->Reap(std::span<Request*>(), 1, std::chrono::seconds(1));
          if (r.ok()) continue;
          if (r.status().Is(Errc::kShutdown)) return;
          // An error of the wait itself: try again in a moment, not at once.
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      });
    } catch (const std::system_error&) {
      // No thread to be had (RLIMIT_NPROC): io_getevents goes on reaping.
      (void)pthread_sigmask(SIG_SETMASK, &old, nullptr);
      return;
    }
    (void)pthread_sigmask(SIG_SETMASK, &old, nullptr);
    // Release: a reader that sees it also sees the thread started (pairs
    // with the acquire load in GeteventsRing).
    publishing.store(true, std::memory_order_release);
  }
  // After the engine's Shutdown: the publisher's Reap says kShutdown.
  void StopPublisher() {
    std::lock_guard<std::mutex> lock(publisher_mu);
    dead_publisher = true;
    if (publisher.joinable()) publisher.join();
  }
  bool dead_publisher = false;  // under publisher_mu

  std::unique_ptr<Engine> engine;

  ~Context() {
    if (engine) (void)engine->Shutdown(kForever);
    StopPublisher();
    engine.reset();  // first: its workers call OnComplete
  }

  size_t IndexOf(const Request* r) const {
    return static_cast<size_t>(r - reqs.data());
  }
  unsigned RingOccupancy() const noexcept {
    const unsigned head =
        std::atomic_ref<unsigned>(ring->head).load(std::memory_order_acquire);
    const unsigned tail =
        std::atomic_ref<unsigned>(ring->tail).load(std::memory_order_acquire);
    return tail >= head ? tail - head : tail + ring_nr - head;
  }
};

// Our contexts by handle. Most programs have none (the kernel's AIO), and
// then no call takes the lock.
struct Registry {
  std::shared_mutex mu;
  std::unordered_map<uintptr_t, std::shared_ptr<Context>> map;
  std::atomic<size_t> count{0};
};

Registry& Contexts() {
  static auto* r = new Registry;  // never destroyed: calls may come late
  return *r;
}

std::shared_ptr<Context> Find(io_context_t ctx) {
  Registry& r = Contexts();
  if (r.count.load(std::memory_order_acquire) == 0) return nullptr;
  std::shared_lock<std::shared_mutex> lock(r.mu);
  auto it = r.map.find(reinterpret_cast<uintptr_t>(ctx));
  return it == r.map.end() ? nullptr : it->second;
}

aio_context_t Kernel(io_context_t ctx) {
  return reinterpret_cast<aio_context_t>(ctx);
}

// The engine AIOKIT_ENGINE names for a new context.
Result<EngineKind> WantedKind() {
  EngineOptions o;
  return ResolveEngineKind(o);
}

// Whether this process can be given an engine context: only if it reaps
// through libaio. A program that takes io_setup and io_submit from libaio but
// reaps with syscall(SYS_io_getevents) reaches the kernel, which knows only
// its own contexts (EINVAL). Such a program imports none of libaio's reaping
// calls; AIOKIT_COMPAT_FORCE=1 gives it the engine anyway (for one that finds
// io_getevents with dlsym).
bool ReapsThroughLibaio() {
  // Read at io_setup, on the program's thread; nothing here calls setenv.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  const char* force = std::getenv("AIOKIT_COMPAT_FORCE");
  if (force != nullptr && std::string_view(force) == "1") return true;
  for (const char* name :
       {"io_getevents", "io_pgetevents", "io_queue_run", "io_queue_wait"}) {
    if (ProcessImports(name)) return true;
  }
  return false;
}

void OnComplete(void* arg, Request* r);

long MakeOurs(EngineKind kind, unsigned nr, io_context_t* ctxp) {
  auto c = std::make_shared<Context>();
  EngineOptions o;
  o.kind = kind;
  o.queue_depth = std::min(nr, kMaxEngineDepth);
  o.notify_fd = false;
  o.allow_fallback = false;
  // No task-work interrupt per completion (see EngineOptions::coop_taskrun):
  // at 0.45x the kernel's AIO through fio without it, at par with it.
  // AIOKIT_COMPAT_COOP_TASKRUN=0 for a program whose submitting thread
  // computes for long while another waits for its completions.
  // Single-threaded here (io_setup): nothing calls setenv concurrently.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  const char* coop = std::getenv("AIOKIT_COMPAT_COOP_TASKRUN");
  o.coop_taskrun = coop == nullptr || std::string_view(coop) != "0";
  c->enter_kernel_to_complete = kind == EngineKind::kIoUring && o.coop_taskrun;
  c->caller_reaps = kind == EngineKind::kIoUring;
  c->nr = o.queue_depth;
  // Room for every request's event, and the one empty slot that tells a full
  // ring from an empty one.
  c->ring_nr = c->nr + 1;
  const size_t bytes =
      sizeof(internal::AioRing) + size_t{c->ring_nr} * sizeof(io_event);
  c->ring_mem.reset(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
  if (!c->ring_mem) return -ENOMEM;
  std::memset(c->ring_mem.get(), 0, bytes);
  c->ring = static_cast<internal::AioRing*>(c->ring_mem.get());
  c->ring->nr = c->ring_nr;
  c->ring->magic = internal::kAioRingMagic;
  c->ring->header_length = sizeof(internal::AioRing);
  o.on_complete = &OnComplete;
  o.on_complete_arg = c.get();
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  if (!e.ok()) {
    // The kernel's answer when a context cannot be had for resources.
    const int err = e.status().Errno();
    return err == EINVAL || err == ENOMEM ? -err : -EAGAIN;
  }
  c->engine = std::move(*e);
  c->reqs = std::vector<Request>(c->nr);
  c->free_reqs.reserve(c->nr);
  for (size_t i = c->nr; i-- > 0;) c->free_reqs.push_back(&c->reqs[i]);
  c->user_iocb.assign(c->nr, nullptr);
  c->user_data.assign(c->nr, 0);
  c->user_resfd.assign(c->nr, -1);
  c->pinned.assign(c->nr, 0);
  c->free_deferred.assign(c->nr, 0);
  Registry& r = Contexts();
  {
    std::unique_lock<std::shared_mutex> lock(r.mu);
    r.map.emplace(reinterpret_cast<uintptr_t>(c->ring), c);
    r.count.fetch_add(1, std::memory_order_release);
  }
  *ctxp = reinterpret_cast<io_context_t>(c->ring);
  return 0;
}

// What io_submit must know about a descriptor: whether it is open and its
// access mode, asked once per descriptor number (fcntl), not per iocb: a
// system call per request cost 15-20% of the IOPS through fio (fio submits one
// iocb per io_submit). A request is never refused on what was remembered (the
// number may be another file's by now): the cache is asked again first. The
// price: a request on a descriptor closed after its first use here is not
// refused at io_submit but fails in its completion (EBADF), after which the
// number is asked about again. Eventfds (IOCB_FLAG_RESFD) are looked at
// every time.
class FdFacts {
 public:
  // O_RDONLY, O_WRONLY or O_RDWR; -1 if fd is not open.
  int AccessMode(int fd) {
    if (fd >= 0 && fd < kCached) {
      const int8_t m = mode_[fd].load(std::memory_order_relaxed);
      if (m != 0) return m - 1;
    }
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    const int mode = flags & O_ACCMODE;
    if (fd >= 0 && fd < kCached) {
      mode_[fd].store(static_cast<int8_t>(mode + 1), std::memory_order_relaxed);
    }
    return mode;
  }
  // Asked every time: the engine signals the eventfd by number, so a stale
  // "yes" would write into whatever file took that number.
  static bool IsEventfd(int fd) {
    char path[64];
    char link[64] = {};
    std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    const ssize_t n = ::readlink(path, link, sizeof(link) - 1);
    return n >= 0 && std::string_view(link, static_cast<size_t>(n)) ==
                         "anon_inode:[eventfd]";
  }
  // Forgets what was cached about fd (it failed with EBADF, or the cache
  // would refuse a request on it).
  void Forget(int fd) {
    if (fd >= 0 && fd < kCached) {
      mode_[fd].store(0, std::memory_order_relaxed);
    }
  }

 private:
  static constexpr int kCached = 1 << 16;
  std::atomic<int8_t> mode_[kCached] = {};  // access mode + 1; 0 unknown
};

FdFacts& Facts() {
  static auto* f = new FdFacts;  // never destroyed: calls may come late
  return *f;
}

// The kernel's ioprio_check_cap for a read's or write's IOCB_FLAG_IOPRIO, as
// far as it holds on every kernel and for every caller: a class the kernel
// does not have, or a level with IOPRIO_CLASS_NONE, is EINVAL at io_submit.
// (A realtime class without CAP_SYS_NICE fails with EPERM in the completion
// here, where the kernel refuses it at io_submit.)
long CheckIoprio(const struct iocb* cb) {
  if ((cb->aio_flags & IOCB_FLAG_IOPRIO) == 0) return 0;
  const auto prio = static_cast<uint16_t>(cb->aio_reqprio);
  const unsigned cls = prio >> 13U;
  if (cls > 3 || (cls == 0 && (prio & 7U) != 0)) return -EINVAL;
  return 0;
}

// The kernel's checks at io_submit, in its order, for one iocb (a copy of the
// program's); 0 if it would be accepted. A vectored request's iovec array is
// copied into `*iov` here, as the kernel copies it.
long CheckIocb(const struct iocb* cb, std::vector<iovec>* iov) {
  if (cb->aio_reserved2 != 0) return -EINVAL;
  if (static_cast<int64_t>(cb->aio_nbytes) < 0) return -EINVAL;
  const int fd = static_cast<int>(cb->aio_fildes);
  const unsigned op = cb->aio_lio_opcode;
  const bool reads = op == IOCB_CMD_PREAD || op == IOCB_CMD_PREADV;
  const bool writes = op == IOCB_CMD_PWRITE || op == IOCB_CMD_PWRITEV;
  int mode = Facts().AccessMode(fd);
  if (mode < 0 || (reads && mode == O_WRONLY) || (writes && mode == O_RDONLY)) {
    // Never refuse on what was remembered: the number may be another file's
    // by now. Ask again.
    Facts().Forget(fd);
    mode = Facts().AccessMode(fd);
  }
  if (mode < 0) return -EBADF;
  if ((cb->aio_flags & IOCB_FLAG_RESFD) != 0) {
    const int resfd = static_cast<int>(cb->aio_resfd);
    if (::fcntl(resfd, F_GETFD) < 0) return -EBADF;
    // An eventfd is the only thing the kernel signals.
    if (!FdFacts::IsEventfd(resfd)) return -EINVAL;
  }
  switch (cb->aio_lio_opcode) {
    case IOCB_CMD_PREAD:
    case IOCB_CMD_PREADV:
      if (long err = CheckIoprio(cb); err != 0) return err;
      if (mode == O_WRONLY) return -EBADF;
      break;
    case IOCB_CMD_PWRITE:
    case IOCB_CMD_PWRITEV:
      if (long err = CheckIoprio(cb); err != 0) return err;
      if (mode == O_RDONLY) return -EBADF;
      break;
    case IOCB_CMD_FSYNC:
    case IOCB_CMD_FDSYNC:
      if (cb->aio_buf != 0 || cb->aio_offset != 0 || cb->aio_nbytes != 0 ||
          cb->aio_rw_flags != 0) {
        return -EINVAL;
      }
      // The kernel refuses a file without an fsync operation here: pipes and
      // sockets among them. (Character devices vary by driver and are let
      // through: their fsync fails in the completion if it fails.)
      if (struct stat st{}; ::fstat(fd, &st) == 0 &&
                            (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
        return -EINVAL;
      }
      return 0;
    default:
      // NOOP was never implemented by the kernel; POLL is not offered here.
      return -EINVAL;
  }
  if ((cb->aio_rw_flags & ~rwf::kAll) != 0) return -EOPNOTSUPP;
  if (cb->aio_lio_opcode == IOCB_CMD_PREADV ||
      cb->aio_lio_opcode == IOCB_CMD_PWRITEV) {
    if (cb->aio_nbytes > IOV_MAX) return -EINVAL;
    // The kernel copies the iovec array here (before it looks at the
    // offset): EFAULT for one it cannot read.
    if (cb->aio_buf == 0 && cb->aio_nbytes != 0) return -EFAULT;
    iov->resize(cb->aio_nbytes);
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the ABI carries addresses
    if (!CopyFromUser(iov->data(), reinterpret_cast<const void*>(cb->aio_buf),
                      cb->aio_nbytes * sizeof(iovec))) {
      return -EFAULT;
    }
  }
  if (cb->aio_offset < 0) return -EINVAL;
  return 0;
}

// Describes the caller's iocb to the engine; `iov` is the vectored request's
// iovec array as CheckIocb copied it.
void Prepare(Request* r, const struct iocb* cb, const std::vector<iovec>& iov) {
  const int fd = static_cast<int>(cb->aio_fildes);
  // NOLINTNEXTLINE(performance-no-int-to-ptr): the ABI carries addresses
  void* buf = reinterpret_cast<void*>(cb->aio_buf);
  switch (cb->aio_lio_opcode) {
    case IOCB_CMD_PREAD:
      r->PrepRead(fd, buf, cb->aio_nbytes,
                  static_cast<uint64_t>(cb->aio_offset));
      break;
    case IOCB_CMD_PWRITE:
      r->PrepWrite(fd, buf, cb->aio_nbytes,
                   static_cast<uint64_t>(cb->aio_offset));
      break;
    case IOCB_CMD_PREADV:
      r->PrepReadv(fd, iov.data(), iov.size(),
                   static_cast<uint64_t>(cb->aio_offset));
      break;
    case IOCB_CMD_PWRITEV:
      r->PrepWritev(fd, iov.data(), iov.size(),
                    static_cast<uint64_t>(cb->aio_offset));
      break;
    case IOCB_CMD_FSYNC:
      r->PrepFsync(fd);
      break;
    default:
      r->PrepFdatasync(fd);
      break;
  }
  r->rw_flags = cb->aio_rw_flags;
  if ((cb->aio_flags & IOCB_FLAG_IOPRIO) != 0) {
    r->ioprio = cb->aio_reqprio;
    r->has_ioprio = true;
  }
}

long SubmitOurs(Context& c, long nr, struct iocb** iocbs) {
  if (nr < 0) return -EINVAL;
  if (nr == 0) return 0;
  if (iocbs == nullptr) return -EFAULT;
  nr = std::min<long>(nr, c.nr);
  // The program's array and iocbs, copied as the kernel copies them: one that
  // cannot be read is EFAULT (for the call, if it is the first).
  const auto count = static_cast<size_t>(nr);
  thread_local std::vector<struct iocb*> ptrs;
  thread_local std::vector<struct iocb> copies;
  thread_local std::vector<iovec> to, from, iov;
  ptrs.resize(count);
  size_t readable = count;
  if (!CopyFromUser(ptrs.data(), iocbs, count * sizeof(struct iocb*))) {
    readable = 0;
    while (readable < count && CopyFromUser(&ptrs[readable], iocbs + readable,
                                            sizeof(struct iocb*))) {
      ++readable;
    }
  }
  // A null pointer ends the copy (the kernel faults on it).
  readable = static_cast<size_t>(
      std::find(ptrs.begin(), ptrs.begin() + static_cast<long>(readable),
                nullptr) -
      ptrs.begin());
  copies.resize(readable);
  to.resize(readable);
  from.resize(readable);
  for (size_t i = 0; i < readable; ++i) {
    to[i] = {&copies[i], sizeof(struct iocb)};
    from[i] = {ptrs[i], sizeof(struct iocb)};
  }
  const size_t copied = CopyRegionsFromUser(to.data(), from.data(), readable);
  thread_local std::vector<Request*> batch;
  batch.clear();
  long first_error = 0;
  bool saw_resfd = false;
  // Events not yet reaped hold ring slots, as in the kernel; a ring full of
  // them refuses more (EAGAIN). The slots are reserved under ring_mu, where
  // OnComplete moves a request from in flight to the ring, so that submitters
  // racing each other or a completion cannot overfill it.
  long room = nr;
  {
    std::lock_guard<internal::AdaptiveMutex> lock(c.ring_mu);
    room = std::clamp<long>(
        static_cast<long>(c.ring_nr) - 1 -
            static_cast<long>(c.RingOccupancy()) -
            static_cast<long>(c.in_flight.load(std::memory_order_relaxed)),
        0, nr);
    c.in_flight.fetch_add(static_cast<unsigned>(room),
                          std::memory_order_relaxed);
  }
  {
    std::lock_guard<internal::AdaptiveMutex> lock(c.mu);
    for (long i = 0; i < nr; ++i) {
      if (static_cast<size_t>(i) >= copied) {
        first_error = -EFAULT;
        break;
      }
      const struct iocb* cb = &copies[i];
      if (long err = CheckIocb(cb, &iov); err != 0) {
        first_error = err;
        break;
      }
      if (c.free_reqs.empty() || i >= room) {
        first_error = -EAGAIN;
        break;
      }
      Request* r = c.free_reqs.back();
      c.free_reqs.pop_back();
      Prepare(r, cb, iov);
      const size_t k = c.IndexOf(r);
      c.user_iocb[k] = ptrs[i];
      c.user_data[k] = cb->aio_data;
      c.user_resfd[k] =
          (cb->aio_flags & IOCB_FLAG_RESFD) != 0
              ? internal::HoldEventfd(static_cast<int>(cb->aio_resfd))
              : -1;
      saw_resfd |= c.user_resfd[k] >= 0;
      batch.push_back(r);
    }
  }
  if (static_cast<size_t>(room) > batch.size()) {
    // Reserved and not used.
    c.in_flight.fetch_sub(
        static_cast<unsigned>(room) - static_cast<unsigned>(batch.size()),
        std::memory_order_relaxed);
  }
  size_t accepted = 0;
  while (accepted < batch.size()) {
    SubmitResult sr = c.engine->Submit(std::span<Request* const>(
        batch.data() + accepted, batch.size() - accepted));
    accepted += sr.accepted;
    if (!sr.status.ok()) {
      // A full engine: the kernel's answer is EAGAIN for the rest.
      first_error = sr.status.Is(Errc::kQueueFull) ? -EAGAIN : -EINVAL;
      if (sr.status.Is(Errc::kShutdown)) first_error = -EINVAL;
      break;
    }
  }
  if (accepted < batch.size()) {
    c.in_flight.fetch_sub(static_cast<unsigned>(batch.size() - accepted),
                          std::memory_order_relaxed);
    std::lock_guard<internal::AdaptiveMutex> lock(c.mu);
    for (size_t i = accepted; i < batch.size(); ++i) {
      const size_t k = c.IndexOf(batch[i]);
      c.user_iocb[k] = nullptr;
      if (c.user_resfd[k] >= 0) (void)::close(c.user_resfd[k]);
      c.user_resfd[k] = -1;
      c.free_reqs.push_back(batch[i]);
    }
  }
  if (saw_resfd && c.caller_reaps &&
      !c.publishing.load(std::memory_order_relaxed)) {
    c.StartPublisher();
  }
  if (accepted == 0 && first_error != 0) return first_error;
  return static_cast<long>(accepted);
}

nanoseconds TimeoutOf(const timespec* ts) {
  if (ts == nullptr) return kForever;
  return std::chrono::seconds(ts->tv_sec) + nanoseconds(ts->tv_nsec);
}

// The engine's completion callback: the event goes to the context's ring (the
// kernel's aio_complete: the event, then the tail with release, then the
// eventfd), the request back to the pool, and a sleeping io_getevents is
// woken.
void OnComplete(void* arg, Request* r) {
  auto* c = static_cast<Context*>(arg);
  const size_t k = c->IndexOf(r);
  io_event ev{};
  ev.res = r->rval;
  ev.res2 = 0;
  if (r->rval == -EBADF) Facts().Forget(r->fd);
  int held = -1;
  {
    // The request goes back to the pool at once (its event is copied out):
    // one lock of the pool per completion. A submission that takes it now
    // still counts this event as in flight (room is never overstated).
    std::lock_guard<aiokit::internal::AdaptiveMutex> lock(c->mu);
    ev.obj = reinterpret_cast<uint64_t>(c->user_iocb[k]);
    ev.data = c->user_data[k];
    // Ours since submission: the program may have closed its descriptor.
    held = c->user_resfd[k];
    c->user_resfd[k] = -1;
    c->Release(r);
  }
  {
    std::lock_guard<aiokit::internal::AdaptiveMutex> lock(c->ring_mu);
    const unsigned tail = std::atomic_ref<unsigned>(c->ring->tail)
                              .load(std::memory_order_relaxed);
    c->ring->events()[tail] = ev;
    std::atomic_ref<unsigned>(c->ring->tail)
        .store(tail + 1 == c->ring_nr ? 0 : tail + 1,
               std::memory_order_release);
    // The ring holds it now; it no longer counts as in flight.
    c->in_flight.fetch_sub(1, std::memory_order_acq_rel);
    if (c->ring_waiters != 0) c->ring_cv.notify_all();
  }
  // After the event is reapable, as the kernel signals it.
  internal::SignalHeldEventfd(held);
}

// io_getevents on one of our contexts: the kernel's read_events, from the
// ring.
long GeteventsRing(Context& c, long min_nr, long nr, io_event* events,
                   const timespec* timeout) {
  const auto want = static_cast<size_t>(nr);
  const auto need = static_cast<size_t>(min_nr);
  const bool forever = timeout == nullptr;
  const auto deadline =
      forever ? std::chrono::steady_clock::time_point::max()
              : std::chrono::steady_clock::now() + TimeoutOf(timeout);
  // Events are taken from the ring into `taken`, then copied to the
  // program's array, which may be a bad pointer: then they go back.
  thread_local std::vector<io_event> taken;
  if (taken.size() < c.ring_nr) taken.resize(c.ring_nr);
  // io_uring before a publisher: this thread moves what has completed into
  // the ring first (a poll), and below waits in the engine, not on ring_cv.
  const bool reap_here =
      c.caller_reaps && !c.publishing.load(std::memory_order_acquire);
  if (reap_here) {
    (void)c.engine->Reap(std::span<Request*>(), 0, nanoseconds(0));
  }
  std::unique_lock<internal::AdaptiveMutex> lock(c.ring_mu);
  size_t n = 0;
  for (;;) {
    const unsigned head_before =
        std::atomic_ref<unsigned>(c.ring->head).load(std::memory_order_relaxed);
    size_t got = 0;
    // At most what `taken` holds, whatever the header (which the program
    // can write) says.
    (void)internal::ConsumeAioRing(
        c.ring, std::min(want - n, taken.size()),
        [&](const io_event& ev) { taken[got++] = ev; });
    // A null array is EFAULT only once there is an event to write to it, as
    // in the kernel (an empty ring still answers 0 or waits).
    if (got != 0 &&
        (events == nullptr ||
         !CopyToUser(events + n, taken.data(), got * sizeof(io_event)))) {
      // The kernel's answer for an event array it cannot write; the events
      // stay in the ring (ring_mu held: no producer wrote since). Release, as
      // ConsumeAioRing's own store of head: pairs with the acquire load in
      // RingOccupancy.
      std::atomic_ref<unsigned>(c.ring->head)
          .store(head_before, std::memory_order_release);
      return n != 0 ? static_cast<long>(n) : -EFAULT;
    }
    n += got;
    if (n >= need || n == want) break;
    if (c.dead) return n != 0 ? static_cast<long>(n) : -EINVAL;
    if (!forever && std::chrono::steady_clock::now() >= deadline) break;
    if (reap_here) {
      // Wait in the engine, even with nothing in flight (another thread may
      // submit): its callback (OnComplete, which takes ring_mu) puts what this
      // thread reaps into the ring. In slices, so that events a publisher
      // started meanwhile put in the ring, and io_destroy, are seen.
      lock.unlock();
      nanoseconds left = std::chrono::milliseconds(10);
      if (!forever) {
        left = std::min(left, std::chrono::duration_cast<nanoseconds>(
                                  deadline - std::chrono::steady_clock::now()));
      }
      (void)c.engine->Reap(std::span<Request*>(), need - n,
                           std::max(left, nanoseconds(0)));
      lock.lock();
      continue;
    }
    // Rather than sleep, do a queued read or write here (as the engine's own
    // Reap does): its event lands in the ring (OnComplete takes ring_mu).
    lock.unlock();
    bool helped = c.engine->RunQueuedOnce();
    if (!helped && c.in_flight.load(std::memory_order_relaxed) != 0) {
      // A completion is usually microseconds away: watch the ring a little
      // before a sleep and a wake-up (tens of microseconds on a VM).
      const auto spin_until =
          std::chrono::steady_clock::now() + std::chrono::microseconds(30);
      while (c.RingOccupancy() == 0 &&
             std::chrono::steady_clock::now() < spin_until) {
        helped = c.engine->RunQueuedOnce();
        if (helped) break;
        // io_uring with COOP_TASKRUN completes this thread's requests only
        // when it enters the kernel (the task work of their completions is
        // its own): spinning in user space would hold them back.
        if (c.enter_kernel_to_complete) (void)::sched_yield();
      }
    }
    lock.lock();
    // Events that came while the lock was free found no waiter to wake.
    if (helped || c.RingOccupancy() != 0) continue;
    ++c.ring_waiters;
    if (forever) {
      c.ring_cv.wait(lock);
    } else {
      (void)c.ring_cv.wait_until(lock, deadline);
    }
    --c.ring_waiters;
  }
  return static_cast<long>(n);
}

long GeteventsOurs(Context& c, long min_nr, long nr, io_event* events,
                   const timespec* user_timeout) {
  // The kernel copies the timeout before anything else.
  timespec ts{};
  const timespec* timeout = nullptr;
  if (user_timeout != nullptr) {
    if (!CopyFromUser(&ts, user_timeout, sizeof(ts))) return -EFAULT;
    timeout = &ts;
  }
  if (min_nr > nr || min_nr < 0) {
    // libaio answers a poll (zero timeout) of an empty kernel ring in user
    // space, before the kernel could check the arguments: 0. So do we when
    // nothing is in flight (with requests in flight either answer is one the
    // kernel could give).
    if (timeout != nullptr && timeout->tv_sec == 0 && timeout->tv_nsec == 0) {
      std::lock_guard<internal::AdaptiveMutex> lock(c.mu);
      if (c.free_reqs.size() == c.nr && c.RingOccupancy() == 0) {
        return 0;
      }
    }
    return -EINVAL;
  }
  if (timeout != nullptr && (timeout->tv_sec < 0 || timeout->tv_nsec < 0 ||
                             timeout->tv_nsec >= 1000000000L)) {
    return -EINVAL;
  }
  if (nr == 0) {
    // io_queue_wait's way to sleep: nothing can be returned.
    return 0;
  }
  // The kernel completes buffered I/O inside io_submit, and programs that
  // reap with min_nr 0 and a timeout right after submitting count on finding
  // the event. So: with min_nr 0 and a finite non-zero timeout, an empty ring
  // and requests in flight, wait (up to the timeout) for one of them. A zero
  // timeout, or nothing in flight, still returns at once.
  if (min_nr == 0 && timeout != nullptr &&
      (timeout->tv_sec != 0 || timeout->tv_nsec != 0) &&
      c.in_flight.load(std::memory_order_relaxed) != 0) {
    std::lock_guard<internal::AdaptiveMutex> lock(c.ring_mu);
    if (c.RingOccupancy() == 0) min_nr = 1;
  }
  return GeteventsRing(c, min_nr, nr, events, timeout);
}

// The kernel's struct __aio_sigset.
struct AioSigset {
  const sigset_t* sigmask;
  size_t sigsetsize;
};

// io_setup once the arguments are read: a new context in *ctxp (ours).
// Whether a new context of `kind` is to be one of ours. No: linux-aio, or a
// program that cannot be served by an engine (it is told, once, when it
// named one).
bool WantsEngine(EngineKind kind) {
  if (kind == EngineKind::kLinuxAio) return false;
  if (ReapsThroughLibaio()) return true;
  if (kind == EngineKind::kIoUring || kind == EngineKind::kThreads) {
    // Once per process: the program asked for an engine it cannot use.
    static std::atomic<bool> told{false};
    if (!told.exchange(true)) {
      std::fprintf(stderr,
                   "aiokit libaio: AIOKIT_ENGINE=%s refused: this program "
                   "does not call io_getevents through libaio (it reaps "
                   "with the raw system call, which answers only the "
                   "kernel's contexts), so its contexts are the kernel's; "
                   "set AIOKIT_ENGINE=linux-aio, or AIOKIT_COMPAT_FORCE=1 "
                   "if it finds io_getevents with dlsym\n",
                   EngineKindName(kind));
    }
  }
  return false;
}

// The kernel's io_setup, as libaio calls it: the kernel reads and writes
// *ctxp itself (EFAULT for a bad one).
long KernelSetup(unsigned nr, io_context_t* ctxp) {
  const long r = sys::real::IoSetup(nr, reinterpret_cast<aio_context_t*>(ctxp));
  if (r == 0) {
    // Programs reaping in user space read the whole ring; valgrind's
    // io_destroy wrapper forgets all of it (it reads ring->nr).
    internal::VgAioRingMapped(
        reinterpret_cast<const internal::AioRing*>(*ctxp));
  }
  return r;
}

// io_setup for an engine kind (io_uring, threads or auto), once the
// arguments are read: a new context in *ctxp (ours).
int Setup(EngineKind kind, unsigned nr, io_context_t* ctxp) {
  switch (kind) {
    case EngineKind::kIoUring:
    case EngineKind::kThreads:
      return static_cast<int>(MakeOurs(kind, nr, ctxp));
    default: {
      // auto: io_uring, else the kernel's AIO, else threads.
      if (MakeOurs(EngineKind::kIoUring, nr, ctxp) == 0) return 0;
      const long k = KernelSetup(nr, ctxp);
      if (k == 0 || k == -EINVAL) return static_cast<int>(k);
      return static_cast<int>(MakeOurs(EngineKind::kThreads, nr, ctxp));
    }
  }
}

}  // namespace
}  // namespace aiokit::compat

using aiokit::compat::Context;
using aiokit::compat::Find;
using aiokit::compat::Kernel;

// NOLINTBEGIN(readability-identifier-naming): libaio's names
extern "C" {

__attribute__((visibility("default"))) int io_destroy(io_context_t ctx);

__attribute__((visibility("default"))) int io_setup(int maxevents,
                                                    io_context_t* ctxp) {
  using namespace aiokit;
  Result<EngineKind> kind = compat::WantedKind();
  if (!kind.ok()) return -EINVAL;
  if (!compat::WantsEngine(*kind)) {
    return static_cast<int>(
        compat::KernelSetup(static_cast<unsigned>(maxevents), ctxp));
  }
  // The engine contexts' calls copy the program's memory on every request:
  // through the fault catcher's windows.
  compat::InstallFaultCatcher();
  // The kernel reads *ctxp first, and writes the new context there last.
  io_context_t current = nullptr;
  if (ctxp == nullptr ||
      !compat::CopyFromUser(&current, ctxp, compat::kHandleBytes)) {
    return -EFAULT;
  }
  if (current != nullptr || maxevents <= 0 ||
      static_cast<unsigned>(maxevents) > compat::kMaxEvents) {
    return -EINVAL;
  }
  io_context_t made = nullptr;
  const int r = compat::Setup(*kind, static_cast<unsigned>(maxevents), &made);
  if (r != 0) return r;
  if (!compat::CopyToUser(ctxp, &made, compat::kHandleBytes)) {
    (void)io_destroy(made);
    return -EFAULT;
  }
  return 0;
}

__attribute__((visibility("default"))) int io_destroy(io_context_t ctx) {
  std::shared_ptr<Context> c = Find(ctx);
  if (!c) return static_cast<int>(aiokit::sys::real::IoDestroy(Kernel(ctx)));
  auto& r = aiokit::compat::Contexts();
  {
    std::unique_lock<std::shared_mutex> lock(r.mu);
    if (r.map.erase(reinterpret_cast<uintptr_t>(ctx)) == 0) return -EINVAL;
    r.count.fetch_sub(1, std::memory_order_release);
  }
  // As the kernel: wait for what is in flight; unreaped events are dropped,
  // and a thread waiting in io_getevents returns.
  (void)c->engine->Shutdown(aiokit::kForever);
  c->StopPublisher();
  // What completed and nobody reaped goes through OnComplete (which closes
  // the eventfds held for it) into the ring that is about to go.
  for (;;) {
    aiokit::Result<size_t> n = c->engine->Reap(std::span<aiokit::Request*>(), 0,
                                               std::chrono::nanoseconds(0));
    if (!n.ok() || *n == 0) break;
  }
  {
    std::lock_guard<aiokit::internal::AdaptiveMutex> lock(c->ring_mu);
    c->dead = true;
    c->ring_cv.notify_all();
  }
  return 0;
}

__attribute__((visibility("default"))) int io_submit(io_context_t ctx, long nr,
                                                     struct iocb** iocbs) {
  std::shared_ptr<Context> c = Find(ctx);
  if (!c) {
    return static_cast<int>(
        aiokit::sys::real::IoSubmit(Kernel(ctx), nr, iocbs));
  }
  return static_cast<int>(aiokit::compat::SubmitOurs(*c, nr, iocbs));
}

__attribute__((visibility("default"))) int aiokit_io_getevents_0_4(
    io_context_t ctx, long min_nr, long nr, struct io_event* events,
    struct timespec* timeout) {
  std::shared_ptr<Context> c = Find(ctx);
  if (!c) {
    // libaio answers a poll (zero timeout) of an empty kernel ring in user
    // space, before the kernel could refuse bad arguments: 0. Valid arguments
    // get the same answer from the kernel, which also checks the pointers;
    // bad ones are looked at here, through copies (the handle and the
    // timeout may be bad pointers too).
    if (min_nr > nr || min_nr < 0 || nr < 0) {
      using aiokit::internal::AioRing;
      AioRing ring{};
      timespec ts{};
      if (ctx != nullptr && timeout != nullptr &&
          aiokit::compat::CopyFromUser(&ts, timeout, sizeof(ts)) &&
          ts.tv_sec == 0 && ts.tv_nsec == 0 &&
          aiokit::compat::CopyFromUser(&ring, ctx, sizeof(ring)) &&
          aiokit::internal::AioRingUsable(&ring) && ring.head == ring.tail) {
        return 0;
      }
    }
    return static_cast<int>(aiokit::sys::real::IoGetevents(
        Kernel(ctx), min_nr, nr, events, timeout));
  }
  return static_cast<int>(
      aiokit::compat::GeteventsOurs(*c, min_nr, nr, events, timeout));
}

// libaio 0.1: no min_nr (one event is waited for).
__attribute__((visibility("default"))) int aiokit_io_getevents_0_1(
    io_context_t ctx, long nr, struct io_event* events,
    const struct timespec* timeout) {
  // Never written through: the timeout is only read (through a copy).
  return aiokit_io_getevents_0_4(ctx, 1, nr, events,
                                 const_cast<struct timespec*>(timeout));
}

__attribute__((visibility("default"))) int io_pgetevents(
    io_context_t ctx, long min_nr, long nr, struct io_event* events,
    struct timespec* timeout, sigset_t* sigmask) {
  std::shared_ptr<Context> c = Find(ctx);
  if (!c) {
    aiokit::compat::AioSigset s{sigmask, _NSIG / 8};
    return static_cast<int>(aiokit::sys::real::IoPgetevents(
        Kernel(ctx), min_nr, nr, events, timeout,
        sigmask != nullptr ? &s : nullptr));
  }
  // The mask holds for the wait, as the kernel's does (not atomically with
  // the wait's start: a signal that arrives in between is taken before it).
  sigset_t mask;
  sigset_t old;
  if (sigmask != nullptr) {
    if (!aiokit::compat::CopyFromUser(&mask, sigmask, _NSIG / 8)) {
      return -EFAULT;
    }
    if (::pthread_sigmask(SIG_SETMASK, &mask, &old) != 0) return -EINVAL;
  }
  const long r = aiokit::compat::GeteventsOurs(*c, min_nr, nr, events, timeout);
  if (sigmask != nullptr) (void)::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return static_cast<int>(r);
}

__attribute__((visibility("default"))) int aiokit_io_cancel_0_4(
    io_context_t ctx, struct iocb* iocb, struct io_event* result) {
  std::shared_ptr<Context> c = Find(ctx);
  if (!c) {
    return static_cast<int>(
        aiokit::sys::real::IoCancel(Kernel(ctx), iocb, result));
  }
  struct iocb copy {};
  if (iocb == nullptr ||
      !aiokit::compat::CopyFromUser(&copy, iocb, sizeof(copy))) {
    return -EFAULT;
  }
  if (copy.aio_key != 0) return -EINVAL;  // the kernel's KIOCB_KEY
  aiokit::Request* req = nullptr;
  {
    std::lock_guard<aiokit::internal::AdaptiveMutex> lock(c->mu);
    for (size_t k = 0; k < c->nr; ++k) {
      if (c->user_iocb[k] == iocb) {
        req = &c->reqs[k];
        ++c->pinned[k];
        break;
      }
    }
  }
  if (req == nullptr) return -EINVAL;
  aiokit::Status s = c->engine->Cancel(req);
  {
    std::lock_guard<aiokit::internal::AdaptiveMutex> lock(c->mu);
    const size_t k = c->IndexOf(req);
    if (--c->pinned[k] == 0 && c->free_deferred[k] != 0) {
      c->free_deferred[k] = 0;
      c->free_reqs.push_back(req);
    }
  }
  // Cancelled: the event (-ECANCELED) comes through io_getevents, and the
  // kernel says so with EINPROGRESS. Not cancellable: EINVAL, as the kernel
  // says for every regular file.
  return s.ok() ? -EINPROGRESS : -EINVAL;
}

// libaio 0.1: the event was returned through a local.
__attribute__((visibility("default"))) int aiokit_io_cancel_0_1(
    io_context_t ctx, struct iocb* iocb) {
  struct io_event ev;
  return aiokit_io_cancel_0_4(ctx, iocb, &ev);
}

__attribute__((visibility("default"))) int io_queue_init(int maxevents,
                                                         io_context_t* ctxp) {
  if (ctxp == nullptr) return -EFAULT;
  if (maxevents < 0) return -EINVAL;
  // *ctxp is written here: through a window when the context will be ours.
  if (aiokit::Result<aiokit::EngineKind> kind = aiokit::compat::WantedKind();
      kind.ok() && aiokit::compat::WantsEngine(*kind)) {
    aiokit::compat::InstallFaultCatcher();
  }
  io_context_t none = nullptr;
  if (!aiokit::compat::CopyToUser(ctxp, &none, aiokit::compat::kHandleBytes))
    return -EFAULT;
  return io_setup(maxevents, ctxp);
}

__attribute__((visibility("default"))) int io_queue_release(io_context_t ctx) {
  return io_destroy(ctx);
}

// Reaps without waiting and calls each iocb's callback (io_set_callback stores
// it in aio_data); returns the last io_getevents result (0, or -errno).
__attribute__((visibility("default"))) int io_queue_run(io_context_t ctx) {
  struct timespec zero = {0, 0};
  struct io_event ev;
  int r;
  while ((r = aiokit_io_getevents_0_4(ctx, 0, 1, &ev, &zero)) == 1) {
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the ABI carries addresses
    auto cb = reinterpret_cast<io_callback_t>(ev.data);
    // NOLINTNEXTLINE(performance-no-int-to-ptr)
    auto* iocb = reinterpret_cast<struct iocb*>(ev.obj);
    cb(ctx, iocb, static_cast<long>(ev.res), static_cast<long>(ev.res2));
  }
  return r;
}

__attribute__((visibility("default"))) int aiokit_io_queue_wait_0_4(
    io_context_t ctx, struct timespec* timeout) {
  return aiokit_io_getevents_0_4(ctx, 0, 0, nullptr, timeout);
}

__attribute__((visibility("default"))) int aiokit_io_queue_wait_0_1(
    io_context_t ctx, const struct timespec* timeout) {
  return aiokit_io_getevents_0_4(ctx, 0, 0, nullptr,
                                 const_cast<struct timespec*>(timeout));
}

}  // extern "C"
// NOLINTEND(readability-identifier-naming)

// The versioned names (see libaio.map): @@ is the default a new link binds to,
// @ the old binding kept for programs linked against libaio 0.1.
__asm__(".symver aiokit_io_getevents_0_4, io_getevents@@LIBAIO_0.4");
__asm__(".symver aiokit_io_getevents_0_1, io_getevents@LIBAIO_0.1");
__asm__(".symver aiokit_io_cancel_0_4, io_cancel@@LIBAIO_0.4");
__asm__(".symver aiokit_io_cancel_0_1, io_cancel@LIBAIO_0.1");
__asm__(".symver aiokit_io_queue_wait_0_4, io_queue_wait@@LIBAIO_0.4");
__asm__(".symver aiokit_io_queue_wait_0_1, io_queue_wait@LIBAIO_0.1");
