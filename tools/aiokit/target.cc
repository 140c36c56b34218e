// Target set-up for `aiokit bench` (target.h).

#include "target.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "random.h"
#include "verify.h"

namespace aiokit::tool {
namespace {

// Verify keeps one generation per block; this bounds its memory (256 MiB).
constexpr uint64_t kMaxVerifyBlocks = 32ULL << 20;

// Writes [from, to) of the file in 1 MiB chunks: a pattern, or verify blocks
// of `bs` bytes in the format `verify` when it is given.
Status LayOut(const File& f, uint64_t from, uint64_t to,
              const VerifyFormat* verify, uint64_t bs) {
  const size_t chunk = verify != nullptr
                           ? std::max<uint64_t>(bs, (1 << 20) / bs * bs)
                           : size_t{1} << 20;
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(chunk, 4096);
  if (!buf.ok()) return buf.status();
  Rng rng(from + 1);
  if (verify == nullptr) {
    for (size_t i = 0; i + 8 <= chunk; i += 8) {
      const uint64_t v = rng.Next();
      std::memcpy(buf->data() + i, &v, 8);
    }
  }
  for (uint64_t off = from; off < to;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, to - off));
    if (verify != nullptr) {
      for (size_t b = 0; b + bs <= n; b += bs) {
        FillVerifyBlock(*verify, buf->data() + b, bs, off + b, 0);
      }
    }
    const ssize_t w = ::pwrite(f.fd(), buf->data(), n, static_cast<off_t>(off));
    if (w < 0) {
      return Status::FromErrno(errno, "laying out \"" + f.path() +
                                          "\": pwrite(offset " +
                                          std::to_string(off) + ", length " +
                                          std::to_string(n) + ")");
    }
    if (w == 0) {
      return Status::FromErrno(ENOSPC, "laying out \"" + f.path() +
                                           "\": no progress at offset " +
                                           std::to_string(off));
    }
    off += static_cast<uint64_t>(w);
  }
  if (::fdatasync(f.fd()) != 0) {
    return Status::FromErrno(errno,
                             "laying out \"" + f.path() + "\": fdatasync");
  }
  return {};
}

std::string TempDir() {
  // Single-threaded here: nothing calls setenv concurrently.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/var/tmp";
}

// Preallocates [0, end) of a file this run created, as fallocate= says.
Status Preallocate(const File& f, const std::string& mode, uint64_t end) {
  const auto len = static_cast<off_t>(end);
  if (mode == "native" || mode == "keep") {
    const int flags = mode == "keep" ? FALLOC_FL_KEEP_SIZE : 0;
    if (::fallocate(f.fd(), flags, 0, len) != 0) {
      const int e = errno;
      // native: fio goes on without preallocation where it is unsupported.
      if (mode == "native" && (e == EOPNOTSUPP || e == ENOSYS)) return {};
      return Status::FromErrno(e, "fallocate(\"" + f.path() + "\", length " +
                                      std::to_string(end) + ")");
    }
  } else if (mode == "posix") {
    if (const int e = ::posix_fallocate(f.fd(), 0, len); e != 0) {
      return Status::FromErrno(e, "posix_fallocate(\"" + f.path() +
                                      "\", length " + std::to_string(end) +
                                      ")");
    }
  } else if (mode == "truncate") {
    if (::ftruncate(f.fd(), len) != 0) {
      return Status::FromErrno(errno, "ftruncate(\"" + f.path() + "\", " +
                                          std::to_string(end) + ")");
    }
  }
  return {};
}

}  // namespace

Result<std::string> JobFilePath(const JobOptions& o, unsigned clone,
                                unsigned filenum) {
  std::vector<std::string> dirs;
  for (size_t from = 0; from <= o.directory.size();) {
    const size_t colon =
        std::min(o.directory.find(':', from), o.directory.size());
    if (colon > from) dirs.push_back(o.directory.substr(from, colon - from));
    from = colon + 1;
  }
  std::string name = o.filename_format.empty() ? "$jobname.$jobnum.$filenum"
                                               : o.filename_format;
  const std::pair<const char*, std::string> keys[] = {
      {"$jobname", o.name},
      {"$jobnum", std::to_string(clone)},
      {"$filenum", std::to_string(filenum)}};
  for (const auto& [key, value] : keys) {
    for (size_t at = name.find(key); at != std::string::npos;
         at = name.find(key, at + value.size())) {
      name.replace(at, std::strlen(key), value);
    }
  }
  std::string path = name;
  if (!dirs.empty() && name.front() != '/') {
    path = dirs[clone % dirs.size()] + "/" + name;
  }
  // fio makes the directories a format's path names.
  const size_t slash = path.rfind('/');
  if (!o.filename_format.empty() && slash != std::string::npos && slash != 0) {
    std::error_code ec;
    std::filesystem::create_directories(path.substr(0, slash), ec);
    if (ec) {
      return UsageError("--filename_format=" + o.filename_format + ": " +
                        path.substr(0, slash) + ": " + ec.message());
    }
  }
  return path;
}

void RemoveCreated(Target& t) {
  if (!t.remove_path.empty()) {
    (void)t.file.Close();
    ::unlink(t.remove_path.c_str());
    t.remove_path.clear();
  }
  for (Target::Extra& e : t.extra) {
    if (!e.remove_path.empty()) {
      (void)e.file.Close();
      ::unlink(e.remove_path.c_str());
      e.remove_path.clear();
    }
  }
}

Targets::~Targets() {
  for (auto& t : all) RemoveCreated(*t);
}

void Targets::Keep() {
  for (auto& t : all) {
    t->remove_path.clear();
    if (!t->unlink_path.empty()) {
      (void)t->file.Close();
      ::unlink(t->unlink_path.c_str());  // best effort, as fio's unlink
      t->unlink_path.clear();
    }
    for (Target::Extra& e : t->extra) {
      e.remove_path.clear();
      if (!e.unlink_path.empty()) {
        (void)e.file.Close();
        ::unlink(e.unlink_path.c_str());
        e.unlink_path.clear();
      }
    }
  }
}

Status OpenTarget(const JobOptions& o, const std::string& job, Target& t) {
  const int direct = o.direct != 0 ? O_DIRECT : 0;
  const bool reads = o.Reads();
  bool fresh = false;
  if (o.filename.empty()) {
    const std::string dir = TempDir();
    Result<File> f = File::CreateTemporary(dir, direct);
    if (!f.ok()) {
      std::string line = "--filename (default: a temporary file in " + dir +
                         ")" + job + ": " + f.status().ToString();
      if (direct != 0) {
        line +=
            "; use --direct=0, or --filename on a file system with O_DIRECT";
      }
      return UsageError(line);
    }
    t.file = std::move(*f);
    t.shown = dir + "/(temporary file, removed after the run)";
    fresh = true;
  } else {
    struct stat st;
    const bool exists = ::stat(o.filename.c_str(), &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
      return UsageError("--filename=" + o.filename + job +
                        ": is a directory; name a file or a block device");
    }
    t.block_device = exists && S_ISBLK(st.st_mode);
    // A read job on a short file extends it, so the file is opened for
    // writing unless it is a device or already long enough.
    int flags = O_RDWR | direct;
    if (exists && reads && !o.Writes() &&
        (t.block_device || static_cast<uint64_t>(st.st_size) >=
                               o.offset + (o.size_set ? o.size : 0))) {
      flags = O_RDONLY | direct;
    }
    if (!exists) flags = O_RDWR | O_CREAT | O_EXCL | direct;
    Result<File> f = File::Open(o.filename, flags, 0644);
    if (!f.ok()) {
      return UsageError("--filename=" + o.filename + job + ": " +
                        f.status().ToString());
    }
    t.file = std::move(*f);
    t.shown = o.filename;
    if (!exists) {
      t.remove_path = o.filename;
      fresh = true;
    }
  }
  Result<uint64_t> have = t.file.Size();
  if (!have.ok()) {
    return UsageError("--filename=" + t.shown + job + ": " +
                      have.status().ToString());
  }
  t.offset = o.offset;
  if (t.block_device) {
    if (o.offset >= *have) {
      return UsageError("--offset=" + std::to_string(o.offset) + job +
                        ": at or past the end of " + t.shown + " (" +
                        std::to_string(*have) + " bytes)");
    }
    if (o.size_set && o.offset + o.size > *have) {
      return UsageError("--size=" + std::to_string(o.size) + job +
                        ": --offset + --size is past the end of " + t.shown +
                        " (" + std::to_string(*have) + " bytes)");
    }
    t.size = o.size_set ? o.size : *have - o.offset;
  } else if (o.size_set || fresh || *have <= o.offset) {
    t.size = o.size;
  } else {
    t.size = *have - o.offset;
  }
  const uint64_t unit = o.MinBs();
  if (t.size < o.MaxBs()) {
    return UsageError("--size" + job + ": " + t.shown + " gives the job " +
                      std::to_string(t.size) +
                      " bytes, less than the block size " +
                      std::to_string(o.MaxBs()));
  }
  t.size -= t.size % unit;
  const Alignment align = t.file.alignment();
  if (o.direct != 0 && align.known()) {
    const char* what = o.BsOption();
    if (unit % align.offset != 0) {
      return UsageError(std::string(what) + "=" + std::to_string(unit) + job +
                        ": with --direct=1 the block size must be a multiple "
                        "of " +
                        std::to_string(align.offset) +
                        ", the O_DIRECT alignment of " + t.shown);
    }
    if (o.offset % align.offset != 0) {
      return UsageError("--offset=" + std::to_string(o.offset) + job +
                        ": with --direct=1 it must be a multiple of " +
                        std::to_string(align.offset) +
                        ", the O_DIRECT alignment of " + t.shown);
    }
  }
  if (fresh && !t.block_device) {
    if (Status s = Preallocate(t.file, o.fallocate, t.offset + t.size);
        !s.ok()) {
      return UsageError("--fallocate=" + o.fallocate + job + ": " +
                        s.ToString());
    }
  }
  if (o.verify_only && fresh) {
    return UsageError("--verify_only" + job + ": " + t.shown +
                      " did not exist: nothing to verify (run the job "
                      "without --verify_only first)");
  }
  if (o.verify.enabled() && t.size / o.bs > kMaxVerifyBlocks) {
    return UsageError("--verify" + job + ": " + std::to_string(t.size / o.bs) +
                      " blocks to track, at most " +
                      std::to_string(kMaxVerifyBlocks) +
                      "; use a smaller --size or a larger --bs");
  }
  if (!t.block_device && reads) {
    Result<uint64_t> now = t.file.Size();
    const uint64_t end = t.offset + t.size;
    const uint64_t from = now.ok() ? std::min(*now, end) : 0;
    // With verify, the whole region starts as verify blocks (generation 0),
    // so that every read checks something; only the missing part otherwise.
    const bool verify = o.verify.enabled() && fresh;
    if (from < end || verify) {
      const uint64_t start = verify ? t.offset : from;
      if (Status s = LayOut(t.file, start - start % unit, end,
                            verify ? &o.verify : nullptr, o.bs);
          !s.ok()) {
        return UsageError("--size=" + std::to_string(t.size) + job + ": " +
                          s.ToString());
      }
      t.verify_layout = verify;
    }
  }
  if (o.invalidate != 0) {
    // Best effort, as fio: a file system may not drop what it keeps.
    (void)::posix_fadvise(t.file.fd(), static_cast<off_t>(t.offset),
                          static_cast<off_t>(t.size), POSIX_FADV_DONTNEED);
  }
  return {};
}

}  // namespace aiokit::tool
