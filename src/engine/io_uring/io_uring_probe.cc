// What io_uring offers on this kernel, for aiokit info: reported features,
// accepted setup flags, registrations, supported opcodes. Each probe sets up a
// small ring of its own and tears it down.

#include <fcntl.h>
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "aiokit/info.h"
#include "engine/engines.h"
#include "sys/uring.h"
#include "util/strings.h"

namespace aiokit::internal {
namespace {

// IORING_FEAT_* bit names, in bit order (kernel 6.18; later bits print as
// numbers).
constexpr const char* kFeatureNames[] = {
    "SINGLE_MMAP",     "NODROP",         "SUBMIT_STABLE",   "RW_CUR_POS",
    "CUR_PERSONALITY", "FAST_POLL",      "POLL_32BITS",     "SQPOLL_NONFIXED",
    "EXT_ARG",         "NATIVE_WORKERS", "RSRC_TAGS",       "CQE_SKIP",
    "LINKED_FILE",     "REG_REG_RING",   "RECVSEND_BUNDLE", "MIN_TIMEOUT",
    "RW_ATTR",         "NO_IOWAIT"};

// IORING_OP_* names, in opcode order.
constexpr const char* kOpNames[] = {"NOP",
                                    "READV",
                                    "WRITEV",
                                    "FSYNC",
                                    "READ_FIXED",
                                    "WRITE_FIXED",
                                    "POLL_ADD",
                                    "POLL_REMOVE",
                                    "SYNC_FILE_RANGE",
                                    "SENDMSG",
                                    "RECVMSG",
                                    "TIMEOUT",
                                    "TIMEOUT_REMOVE",
                                    "ACCEPT",
                                    "ASYNC_CANCEL",
                                    "LINK_TIMEOUT",
                                    "CONNECT",
                                    "FALLOCATE",
                                    "OPENAT",
                                    "CLOSE",
                                    "FILES_UPDATE",
                                    "STATX",
                                    "READ",
                                    "WRITE",
                                    "FADVISE",
                                    "MADVISE",
                                    "SEND",
                                    "RECV",
                                    "OPENAT2",
                                    "EPOLL_CTL",
                                    "SPLICE",
                                    "PROVIDE_BUFFERS",
                                    "REMOVE_BUFFERS",
                                    "TEE",
                                    "SHUTDOWN",
                                    "RENAMEAT",
                                    "UNLINKAT",
                                    "MKDIRAT",
                                    "SYMLINKAT",
                                    "LINKAT",
                                    "MSG_RING",
                                    "FSETXATTR",
                                    "SETXATTR",
                                    "FGETXATTR",
                                    "GETXATTR",
                                    "SOCKET",
                                    "URING_CMD",
                                    "SEND_ZC",
                                    "SENDMSG_ZC",
                                    "READ_MULTISHOT",
                                    "WAITID",
                                    "FUTEX_WAIT",
                                    "FUTEX_WAKE",
                                    "FUTEX_WAITV",
                                    "FIXED_FD_INSTALL",
                                    "FTRUNCATE",
                                    "BIND",
                                    "LISTEN",
                                    "RECV_ZC",
                                    "EPOLL_WAIT",
                                    "READV_FIXED",
                                    "WRITEV_FIXED",
                                    "PIPE"};

Feature TrySetup(const char* name, unsigned flags) {
  Feature f;
  f.name = name;
  struct io_uring ring;
  struct io_uring_params p;
  std::memset(&p, 0, sizeof(p));
  p.flags = flags;
  if (flags & IORING_SETUP_SQPOLL) p.sq_thread_idle = 10;
  const int r = sys::UringQueueInit(4, &ring, &p);
  if (r == 0) {
    f.available = true;
    io_uring_queue_exit(&ring);
  } else {
    f.detail = util::ErrnoText(-r);
  }
  return f;
}

Feature FromResult(const char* name, int r) {
  Feature f;
  f.name = name;
  f.available = r >= 0;
  if (r < 0) f.detail = util::ErrnoText(-r);
  return f;
}

}  // namespace

void ProbeIoUring(IoUringProbe* out) {
  struct io_uring ring;
  struct io_uring_params p;
  std::memset(&p, 0, sizeof(p));
  const int r = sys::UringQueueInit(8, &ring, &p);
  if (r < 0) {
    out->available = false;
    out->reason = Status::FromErrno(-r, "io_uring_setup(8)");
    return;
  }
  out->available = true;
  for (unsigned bit = 0; bit < 32; ++bit) {
    if ((p.features & (1U << bit)) == 0) continue;
    out->features.push_back(bit < std::size(kFeatureNames)
                                ? kFeatureNames[bit]
                                : "bit " + std::to_string(bit));
  }
  if (struct io_uring_probe* probe = io_uring_get_probe_ring(&ring)) {
    for (int op = 0; op <= probe->last_op; ++op) {
      if ((probe->ops[op].flags & IO_URING_OP_SUPPORTED) == 0) continue;
      out->opcodes.push_back(static_cast<size_t>(op) < std::size(kOpNames)
                                 ? kOpNames[op]
                                 : "op " + std::to_string(op));
    }
    io_uring_free_probe(probe);
  }

  // Registrations on this ring.
  void* page = std::aligned_alloc(4096, 4096);
  if (page != nullptr) {
    struct iovec iov = {page, 4096};
    const int rb = sys::UringRegisterBuffers(&ring, &iov, 1);
    Feature fb = FromResult("buffers", rb);
    if (rb == -ENOMEM) fb.detail += " (RLIMIT_MEMLOCK too low)";
    out->registration.push_back(fb);
    if (rb >= 0) (void)io_uring_unregister_buffers(&ring);
    std::free(page);
  }
  int fds[2] = {-1, -1};
  if (sys::Pipe2(fds, O_CLOEXEC) == 0) {
    const int rf = sys::UringRegisterFiles(&ring, fds, 2);
    out->registration.push_back(FromResult("files", rf));
    if (rf >= 0) (void)io_uring_unregister_files(&ring);
    sys::Close(fds[0]);
    sys::Close(fds[1]);
  }
  out->registration.push_back(
      FromResult("ring fd", sys::UringRegisterRingFd(&ring)));
  const int efd = sys::Eventfd(0, EFD_CLOEXEC);
  if (efd >= 0) {
    out->registration.push_back(
        FromResult("eventfd", sys::UringRegisterEventfd(&ring, efd)));
    sys::Close(efd);
  }
  io_uring_queue_exit(&ring);

  out->setup.push_back(TrySetup("SQPOLL", IORING_SETUP_SQPOLL));
  out->setup.push_back(TrySetup("IOPOLL", IORING_SETUP_IOPOLL));
  out->setup.push_back(TrySetup("SINGLE_ISSUER", IORING_SETUP_SINGLE_ISSUER));
  out->setup.push_back(
      TrySetup("DEFER_TASKRUN",
               IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN));
  out->setup.push_back(TrySetup("COOP_TASKRUN", IORING_SETUP_COOP_TASKRUN));
  out->setup.push_back(TrySetup(
      "TASKRUN_FLAG", IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG));
  out->setup.push_back(TrySetup("SUBMIT_ALL", IORING_SETUP_SUBMIT_ALL));
}

}  // namespace aiokit::internal
