// aiokit_faultfs: a FUSE file system for fault tests. Its files are the files
// of a backing directory, read and written through the kernel's real paths
// (page cache, O_DIRECT, a loop device on one of them), with faults that a
// test chooses by writing commands to the virtual file `/.faults`:
//
//   eio read|write OFF LEN         EIO for requests that touch [OFF, OFF+LEN)
//   eio_prob read|write|fsync P    EIO with probability P (seed: `seed N`)
//   short OFF LEN                  reads starting there return half
//   enospc_after N                 ENOSPC once N more bytes were written
//   delay_us N                     every read and write waits N us first
//   stall OFF LEN                  requests touching it wait for `release`
//   release                        lets stalled requests (and later ones) go
//   fsync_eio N                    the next N fsyncs fail with EIO
//   file NAME                      faults apply only to /NAME ("" for all)
//   clear                          no faults (the counts stay)
//   log PATH                       records every write and flush in PATH
//   log_stop                       ends the record (PATH is complete then)
//
// The write log (writelog.h reads it) is what dm-log-writes records below a
// file system: every write that succeeded, logged before its reply, so
// before the writer can know it completed; every fsync as a begin entry when
// it arrives and an end entry once the backing file's fsync succeeded (one
// that fails logs no end); punched or zeroed ranges and size changes. A
// crash image is then the file as of a flush's begin, for a flush that
// ended, plus any subset of the later writes.
//
// Reading `/.faults` gives the counts: "reads R writes W fsyncs F eio E
// enospc N short S stalled T delayed D". A command that does not parse makes
// the write fail with EINVAL.
//
// Usage: aiokit_faultfs BACKING_DIR MOUNTPOINT [fuse options, e.g. -f]

#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "writelog.h"

namespace {

constexpr const char* kControl = "/.faults";

struct Range {
  uint64_t off = 0, len = 0;
  bool Touches(uint64_t o, uint64_t n) const {
    return o < off + len && off < o + n;
  }
};

bool AnyTouches(const std::vector<Range>& rs, uint64_t o, uint64_t n) {
  for (const Range& r : rs) {
    if (r.Touches(o, n)) return true;
  }
  return false;
}

// The faults in force and what they did; every field under `mu`.
struct State {
  std::mutex mu;
  std::condition_variable released_cv;
  std::string backing;
  std::vector<Range> eio_read, eio_write, short_read, stall;
  double eio_read_p = 0, eio_write_p = 0, eio_fsync_p = 0;
  std::mt19937_64 rng{1};
  int64_t enospc_left = -1;  // bytes that may still be written; -1: any
  uint64_t delay_us = 0;
  bool released = false;
  unsigned fsync_eio = 0;
  std::string only;          // "/NAME" the faults apply to; "" for every file
  std::FILE* log = nullptr;  // the write log, when one is being recorded
  uint64_t flushes = 0;      // flush ids in the write log
  uint64_t reads = 0, writes = 0, fsyncs = 0, eio = 0, enospc = 0, shorts = 0,
           stalled = 0, delayed = 0;
};

State& S() {
  static State s;
  return s;
}

// Appends one entry to the write log, if one is being recorded. REQUIRES:
// S().mu held.
void LogEntry(writelog::Type type, const char* path, uint64_t off, uint64_t len,
              const char* data) {
  State& s = S();
  if (s.log == nullptr) return;
  const std::string bytes = writelog::Encode(
      type, path, off, len, type == writelog::Type::kWrite ? data : nullptr);
  if (std::fwrite(bytes.data(), 1, bytes.size(), s.log) != bytes.size()) {
    // A log with a hole is worse than none: stop and say so on stderr.
    std::fprintf(stderr, "aiokit_faultfs: write log: %s\n",
                 std::strerror(errno));
    std::fclose(s.log);
    s.log = nullptr;
  }
}

std::string Backing(const char* path) { return S().backing + path; }

bool Applies(const State& s, const char* path) {
  return s.only.empty() || s.only == path;
}

// Waits out delay_us and any stall on [off, off + len). REQUIRES: `lock`
// holds S().mu.
void Hold(std::unique_lock<std::mutex>& lock, const char* path, uint64_t off,
          uint64_t len) {
  State& s = S();
  if (!Applies(s, path)) return;
  if (s.delay_us != 0) {
    ++s.delayed;
    const auto d = std::chrono::microseconds(s.delay_us);
    lock.unlock();
    std::this_thread::sleep_for(d);
    lock.lock();
  }
  if (!s.released && AnyTouches(s.stall, off, len)) {
    ++s.stalled;
    // Until `release`, or until the file system is unmounted or told to
    // exit (libfuse waits for its workers, so a stall must not outlive it).
    fuse_session* se = fuse_get_session(fuse_get_context()->fuse);
    while (!s.released_cv.wait_for(lock, std::chrono::milliseconds(100),
                                   [&] { return s.released; })) {
      if (fuse_session_exited(se) != 0) break;
    }
  }
}

int Command(const std::string& line) {
  State& s = S();
  std::istringstream in(line);
  std::string verb;
  in >> verb;
  if (verb.empty()) return 0;
  const auto range = [&](std::vector<Range>* into) {
    Range r;
    if (!(in >> r.off >> r.len)) return -EINVAL;
    into->push_back(r);
    return 0;
  };
  if (verb == "eio") {
    std::string dir;
    in >> dir;
    if (dir == "read") return range(&s.eio_read);
    if (dir == "write") return range(&s.eio_write);
    return -EINVAL;
  }
  if (verb == "eio_prob") {
    std::string dir;
    double p = 0;
    if (!(in >> dir >> p) || p < 0 || p > 1) return -EINVAL;
    if (dir == "read") {
      s.eio_read_p = p;
    } else if (dir == "write") {
      s.eio_write_p = p;
    } else if (dir == "fsync") {
      s.eio_fsync_p = p;
    } else {
      return -EINVAL;
    }
    return 0;
  }
  if (verb == "seed") {
    uint64_t seed = 0;
    if (!(in >> seed)) return -EINVAL;
    s.rng.seed(seed);
    return 0;
  }
  if (verb == "short") return range(&s.short_read);
  if (verb == "stall") {
    s.released = false;
    return range(&s.stall);
  }
  if (verb == "release") {
    s.released = true;
    s.stall.clear();
    s.released_cv.notify_all();
    return 0;
  }
  if (verb == "enospc_after") {
    int64_t n = 0;
    if (!(in >> n) || n < 0) return -EINVAL;
    s.enospc_left = n;
    return 0;
  }
  if (verb == "delay_us") return (in >> s.delay_us) ? 0 : -EINVAL;
  if (verb == "fsync_eio") return (in >> s.fsync_eio) ? 0 : -EINVAL;
  if (verb == "file") {
    std::string name;
    in >> name;
    s.only = name.empty() ? "" : "/" + name;
    return 0;
  }
  if (verb == "log") {
    std::string path;
    if (!(in >> path)) return -EINVAL;
    if (s.log != nullptr) std::fclose(s.log);
    s.log = std::fopen(path.c_str(), "we");
    return s.log != nullptr ? 0 : -errno;
  }
  if (verb == "log_stop") {
    if (s.log == nullptr) return 0;
    const int r = std::fclose(s.log);
    s.log = nullptr;
    return r == 0 ? 0 : -EIO;
  }
  if (verb == "clear") {
    s.eio_read.clear();
    s.eio_write.clear();
    s.short_read.clear();
    s.eio_read_p = s.eio_write_p = s.eio_fsync_p = 0;
    s.enospc_left = -1;
    s.delay_us = 0;
    s.fsync_eio = 0;
    s.only.clear();
    s.released = true;
    s.stall.clear();
    s.released_cv.notify_all();
    return 0;
  }
  return -EINVAL;
}

std::string Counts() {
  State& s = S();
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "reads %llu writes %llu fsyncs %llu eio %llu enospc %llu "
                "short %llu stalled %llu delayed %llu\n",
                static_cast<unsigned long long>(s.reads),
                static_cast<unsigned long long>(s.writes),
                static_cast<unsigned long long>(s.fsyncs),
                static_cast<unsigned long long>(s.eio),
                static_cast<unsigned long long>(s.enospc),
                static_cast<unsigned long long>(s.shorts),
                static_cast<unsigned long long>(s.stalled),
                static_cast<unsigned long long>(s.delayed));
  return buf;
}

void* Init(fuse_conn_info* /*conn*/, fuse_config* cfg) {
  cfg->use_ino = 1;
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  cfg->negative_timeout = 0;
  return nullptr;
}

int GetAttr(const char* path, struct stat* st, fuse_file_info* /*fi*/) {
  if (std::strcmp(path, kControl) == 0) {
    std::memset(st, 0, sizeof(*st));
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    return 0;
  }
  return ::lstat(Backing(path).c_str(), st) == 0 ? 0 : -errno;
}

int ReadDir(const char* path, void* buf, fuse_fill_dir_t fill, off_t /*off*/,
            fuse_file_info* /*fi*/, fuse_readdir_flags /*flags*/) {
  DIR* d = ::opendir(Backing(path).c_str());
  if (d == nullptr) return -errno;
  while (const dirent* e = ::readdir(d)) {
    fill(buf, e->d_name, nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  }
  ::closedir(d);
  return 0;
}

int Open(const char* path, fuse_file_info* fi) {
  if (std::strcmp(path, kControl) == 0) {
    fi->direct_io = 1;  // no cache: every read asks for the counts
    fi->fh = UINT64_MAX;
    return 0;
  }
  const int fd = ::open(Backing(path).c_str(), fi->flags & ~O_DIRECT);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  // O_DIRECT opens skip the page cache here too: every request reaches us.
  if ((fi->flags & O_DIRECT) != 0) fi->direct_io = 1;
  return 0;
}

int Create(const char* path, mode_t mode, fuse_file_info* fi) {
  const int fd =
      ::open(Backing(path).c_str(), (fi->flags & ~O_DIRECT) | O_CREAT, mode);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  if ((fi->flags & O_DIRECT) != 0) fi->direct_io = 1;
  return 0;
}

int Release(const char* /*path*/, fuse_file_info* fi) {
  if (fi->fh != UINT64_MAX) ::close(static_cast<int>(fi->fh));
  return 0;
}

int Read(const char* path, char* buf, size_t size, off_t off,
         fuse_file_info* fi) {
  State& s = S();
  if (fi->fh == UINT64_MAX) {
    std::lock_guard<std::mutex> lock(s.mu);
    const std::string text = Counts();
    if (static_cast<size_t>(off) >= text.size()) return 0;
    const size_t n = std::min(size, text.size() - static_cast<size_t>(off));
    text.copy(buf, n, static_cast<size_t>(off));
    return static_cast<int>(n);
  }
  const auto o = static_cast<uint64_t>(off);
  size_t want = size;
  {
    std::unique_lock<std::mutex> lock(s.mu);
    ++s.reads;
    Hold(lock, path, o, size);
    if (Applies(s, path)) {
      const bool prob =
          s.eio_read_p > 0 &&
          std::uniform_real_distribution<double>(0, 1)(s.rng) < s.eio_read_p;
      if (prob || AnyTouches(s.eio_read, o, size)) {
        ++s.eio;
        return -EIO;
      }
      for (const Range& r : s.short_read) {
        if (o >= r.off && o < r.off + r.len && size > 1) {
          ++s.shorts;
          want = size / 2;
          break;
        }
      }
    }
  }
  const ssize_t n = ::pread(static_cast<int>(fi->fh), buf, want, off);
  return n < 0 ? -errno : static_cast<int>(n);
}

int Write(const char* path, const char* buf, size_t size, off_t off,
          fuse_file_info* fi) {
  State& s = S();
  if (fi->fh == UINT64_MAX) {
    std::lock_guard<std::mutex> lock(s.mu);
    std::istringstream lines(std::string(buf, size));
    for (std::string line; std::getline(lines, line);) {
      if (const int e = Command(line); e != 0) return e;
    }
    return static_cast<int>(size);
  }
  const auto o = static_cast<uint64_t>(off);
  {
    std::unique_lock<std::mutex> lock(s.mu);
    ++s.writes;
    Hold(lock, path, o, size);
    if (Applies(s, path)) {
      const bool prob =
          s.eio_write_p > 0 &&
          std::uniform_real_distribution<double>(0, 1)(s.rng) < s.eio_write_p;
      if (prob || AnyTouches(s.eio_write, o, size)) {
        ++s.eio;
        return -EIO;
      }
      if (s.enospc_left >= 0) {
        if (static_cast<uint64_t>(s.enospc_left) < size) {
          ++s.enospc;
          return -ENOSPC;
        }
        s.enospc_left -= static_cast<int64_t>(size);
      }
    }
  }
  const ssize_t n = ::pwrite(static_cast<int>(fi->fh), buf, size, off);
  if (n < 0) return -errno;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    LogEntry(writelog::Type::kWrite, path, o, static_cast<uint64_t>(n), buf);
  }
  return static_cast<int>(n);
}

int Fsync(const char* path, int datasync, fuse_file_info* fi) {
  State& s = S();
  if (fi->fh == UINT64_MAX) return 0;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    ++s.fsyncs;
    if (Applies(s, path) && s.fsync_eio != 0) {
      --s.fsync_eio;
      ++s.eio;
      return -EIO;
    }
    if (Applies(s, path) && s.eio_fsync_p > 0 &&
        std::uniform_real_distribution<double>(0, 1)(s.rng) < s.eio_fsync_p) {
      ++s.eio;
      return -EIO;
    }
    id = ++s.flushes;
    LogEntry(writelog::Type::kFlushBegin, path, id, 0, nullptr);
  }
  const int fd = static_cast<int>(fi->fh);
  const int r = datasync != 0 ? ::fdatasync(fd) : ::fsync(fd);
  if (r != 0) return -errno;
  std::lock_guard<std::mutex> lock(s.mu);
  LogEntry(writelog::Type::kFlushEnd, path, id, 0, nullptr);
  return 0;
}

int Truncate(const char* path, off_t size, fuse_file_info* fi) {
  if (std::strcmp(path, kControl) == 0) return 0;
  const int r = fi != nullptr && fi->fh != UINT64_MAX
                    ? ::ftruncate(static_cast<int>(fi->fh), size)
                    : ::truncate(Backing(path).c_str(), size);
  if (r != 0) return -errno;
  std::lock_guard<std::mutex> lock(S().mu);
  LogEntry(writelog::Type::kTruncate, path, 0, static_cast<uint64_t>(size),
           nullptr);
  return 0;
}

int Unlink(const char* path) {
  return ::unlink(Backing(path).c_str()) == 0 ? 0 : -errno;
}

int Fallocate(const char* path, int mode, off_t off, off_t len,
              fuse_file_info* fi) {
  if (fi == nullptr || fi->fh == UINT64_MAX) return -EOPNOTSUPP;
  if (::fallocate(static_cast<int>(fi->fh), mode, off, len) != 0) {
    return -errno;
  }
  const auto o = static_cast<uint64_t>(off), n = static_cast<uint64_t>(len);
  std::lock_guard<std::mutex> lock(S().mu);
  if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) != 0) {
    LogEntry(writelog::Type::kZero, path, o, n, nullptr);
  }
  if ((mode & FALLOC_FL_KEEP_SIZE) == 0) {
    LogEntry(writelog::Type::kExtend, path, 0, o + n, nullptr);
  }
  return 0;
}

int StatFs(const char* path, struct statvfs* st) {
  return ::statvfs(Backing(path).c_str(), st) == 0 ? 0 : -errno;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s BACKING_DIR MOUNTPOINT [fuse options]\n"
                 "faults: write commands to MOUNTPOINT/.faults (see the "
                 "source's first comment)\n",
                 argv[0]);
    return 2;
  }
  char* real = ::realpath(argv[1], nullptr);
  if (real == nullptr) {
    std::fprintf(stderr, "aiokit_faultfs: backing directory %s: %s\n", argv[1],
                 std::strerror(errno));
    return 2;
  }
  S().backing = real;
  std::free(real);
  fuse_operations ops{};
  ops.init = Init;
  ops.getattr = GetAttr;
  ops.readdir = ReadDir;
  ops.open = Open;
  ops.create = Create;
  ops.release = Release;
  ops.read = Read;
  ops.write = Write;
  ops.fsync = Fsync;
  ops.truncate = Truncate;
  ops.unlink = Unlink;
  ops.fallocate = Fallocate;
  ops.statfs = StatFs;
  // fuse_main takes the mount point and the options; the backing directory
  // is ours.
  std::vector<char*> args = {argv[0]};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  return fuse_main(static_cast<int>(args.size()), args.data(), &ops, nullptr);
}
