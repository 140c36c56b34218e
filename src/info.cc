#include "aiokit/info.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "engine/engines.h"
#include "sys/syscalls.h"
#include "util/strings.h"

namespace aiokit {
namespace {

constexpr EngineKind kPreference[] = {
    EngineKind::kIoUring, EngineKind::kLinuxAio, EngineKind::kThreads};

bool Built(EngineKind kind) {
  switch (kind) {
    case EngineKind::kLinuxAio:
    case EngineKind::kThreads:
      return true;
    case EngineKind::kIoUring:
      return AIOKIT_HAVE_IO_URING != 0;
    default:
      return false;
  }
}

// Polled I/O on `file`'s device: an IOPOLL ring reading its first block.
Feature ProbeIoPoll(const File& file) {
  Feature f;
  f.name = "IOPOLL";
  if (!Built(EngineKind::kIoUring)) {
    f.detail = "io_uring is not built";
    return f;
  }
  EngineOptions o;
  o.kind = EngineKind::kIoUring;
  o.queue_depth = 4;
  o.iopoll = true;
  o.notify_fd = false;
  o.single_thread = true;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  if (!e.ok()) {
    f.detail = e.status().ToString();
    return f;
  }
  const Alignment a = file.alignment();
  const size_t len = std::max<size_t>(a.offset, 4096);
  Result<AlignedBuffer> buf =
      AlignedBuffer::Allocate(len, std::max<size_t>(a.memory, 4096));
  if (!buf.ok()) {
    f.detail = buf.status().ToString();
    return f;
  }
  Request r;
  r.PrepRead(file, buf->data(), len, 0);
  Request* p = &r;
  SubmitResult sr = (*e)->Submit({&p, 1});
  if (sr.accepted != 1) {
    f.detail = sr.status.ToString();
    return f;
  }
  Request* done[1];
  Result<size_t> n = (*e)->GetNextCompleted(2000, done, 1);
  if (!n.ok() || *n != 1) {
    f.detail = n.ok() ? "no completion within 2 s" : n.status().ToString();
    return f;
  }
  if (r.rval >= 0) {
    f.available = true;
  } else if (r.rval == -EOPNOTSUPP) {
    f.detail = util::ErrnoText(EOPNOTSUPP) +
               ": the device has no poll queues (for NVMe: the "
               "nvme.poll_queues module parameter)";
  } else {
    f.detail = util::ErrnoText(static_cast<int>(-r.rval));
  }
  return f;
}

}  // namespace

SystemInfo ProbeSystem() {
  SystemInfo info;
  info.kernel = sys::KernelRelease();
  info.machine = sys::Machine();
  for (EngineKind kind : kPreference) {
    EngineProbe probe;
    probe.kind = kind;
    probe.built = Built(kind);
    EngineOptions o;
    o.kind = kind;
    o.queue_depth = 8;
    Result<std::unique_ptr<Engine>> e = MakeEngine(o);
    if (e.ok()) {
      probe.allowed = true;
      probe.caps = (*e)->GetCapabilities();
      if (info.auto_choice == EngineKind::kDefault) info.auto_choice = kind;
    } else {
      probe.reason = e.status();
    }
    info.engines.push_back(std::move(probe));
  }
#if AIOKIT_HAVE_IO_URING
  internal::ProbeIoUring(&info.io_uring);
#else
  info.io_uring.reason = Status::Error(
      Errc::kUnsupported, "io_uring is not built into this aiokit");
#endif
  info.io_uring_disabled =
      sys::ReadSmallFile("/proc/sys/kernel/io_uring_disabled");
  info.aio_max_nr = sys::ReadSmallFile("/proc/sys/fs/aio-max-nr");
  info.aio_nr = sys::ReadSmallFile("/proc/sys/fs/aio-nr");
  (void)sys::MemlockLimit(&info.memlock_soft, &info.memlock_hard);
  return info;
}

PathInfo ProbePath(const std::string& path) {
  PathInfo info;
  info.path = path;
  struct stat st;
  if (int r = sys::Stat(path.c_str(), &st); r < 0) {
    info.error = Status::FromErrno(-r, "stat(\"" + path + "\")");
    return info;
  }
  info.is_block_device = S_ISBLK(st.st_mode);
  Result<File> f = S_ISDIR(st.st_mode) ? File::CreateTemporary(path, O_DIRECT)
                                       : File::Open(path, O_RDONLY | O_DIRECT);
  if (!f.ok()) {
    info.direct_error = f.status();
    return info;
  }
  info.direct_ok = true;
  Result<DirectIoInfo> dio = DiscoverDirectIo(f->fd());
  if (dio.ok()) info.direct = *dio;
  if (S_ISDIR(st.st_mode)) {
    // Give the scratch file one block, so that the polled read reaches the
    // device.
    const size_t len = std::max<size_t>(f->alignment().offset, 4096);
    Result<AlignedBuffer> buf = AlignedBuffer::Allocate(
        len, std::max<size_t>(f->alignment().memory, 4096));
    if (buf.ok()) (void)sys::Pwrite(f->fd(), buf->data(), len, 0);
  }
  info.iopoll = ProbeIoPoll(*f);
  return info;
}

}  // namespace aiokit
