#include "aiokit/file.h"

#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include "sys/syscalls.h"
#include "util/io_memory.h"
#include "util/strings.h"

namespace aiokit {
namespace {

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The logical block size of the device holding st_dev, from sysfs; 0 if unknown
// (tmpfs, overlay, ...).
uint32_t LogicalBlockSizeFromSysfs(dev_t dev) {
  const std::string base = "/sys/dev/block/" + std::to_string(major(dev)) +
                           ":" + std::to_string(minor(dev));
  // A whole disk has queue/ itself; a partition's queue/ is its parent's.
  for (const char* rel :
       {"/queue/logical_block_size", "/../queue/logical_block_size"}) {
    const std::string text = sys::ReadSmallFile((base + rel).c_str());
    if (text.empty()) continue;
    char* end = nullptr;
    const unsigned long v = std::strtoul(text.c_str(), &end, 10);
    if (end != text.c_str() && IsPowerOfTwo(v) && v <= (1UL << 20)) {
      return static_cast<uint32_t>(v);
    }
  }
  return 0;
}

}  // namespace

Status Alignment::Check(const void* addr, uint64_t off, uint64_t len) const {
  if (!known()) return {};
  const auto a = reinterpret_cast<uintptr_t>(addr);
  const char* broken = nullptr;
  if (a % memory != 0) {
    broken = "buffer address";
  } else if (off % offset != 0) {
    broken = "offset";
  } else if (len % offset != 0) {
    broken = "length";
  }
  if (broken == nullptr) return {};
  std::string msg =
      "O_DIRECT needs the buffer address aligned to " + std::to_string(memory) +
      " bytes and the offset and length to " + std::to_string(offset) +
      " bytes; the " + broken + " is not (address " + util::Hex(a) +
      ", offset " + std::to_string(off) + ", length " + std::to_string(len) +
      ")";
  return Status::Error(Errc::kMisaligned, std::move(msg));
}

Result<DirectIoInfo> DiscoverDirectIo(int fd) {
  DirectIoInfo info;
  struct statx stx;
  std::memset(&stx, 0, sizeof(stx));
  if (sys::Statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_DIOALIGN, &stx) ==
          0 &&
      (stx.stx_mask & STATX_DIOALIGN) != 0) {
    // The file system answered. Offset alignment 0 means it does not do
    // O_DIRECT on this file.
    info.source = AlignmentSource::kStatx;
    info.supported = stx.stx_dio_offset_align != 0;
    info.alignment = {stx.stx_dio_mem_align, stx.stx_dio_offset_align};
    if (info.supported) return info;
    info.alignment = {};
    return info;
  }
  struct stat st;
  if (int r = sys::Fstat(fd, &st); r < 0) {
    return Status::FromErrno(-r, "fstat(fd " + std::to_string(fd) +
                                     ") while discovering O_DIRECT alignment");
  }
  info.supported = true;
  if (S_ISBLK(st.st_mode)) {
    int lbs = 0;
    if (sys::Ioctl(fd, BLKSSZGET, &lbs) == 0 &&
        IsPowerOfTwo(static_cast<uint64_t>(lbs))) {
      info.source = AlignmentSource::kBlockDevice;
      info.alignment = {static_cast<uint32_t>(lbs), static_cast<uint32_t>(lbs)};
      return info;
    }
  } else if (uint32_t lbs = LogicalBlockSizeFromSysfs(st.st_dev); lbs != 0) {
    info.source = AlignmentSource::kBlockDevice;
    info.alignment = {lbs, lbs};
    return info;
  }
  info.source = AlignmentSource::kDefault;
  info.alignment = {512, 512};
  return info;
}

File::File(int fd, std::string path, int flags) noexcept
    : fd_(fd), flags_(flags), path_(std::move(path)) {}

File::File(File&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      flags_(other.flags_),
      path_(std::move(other.path_)),
      alignment_(other.alignment_),
      alignment_source_(other.alignment_source_) {}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    (void)Close();
    fd_ = std::exchange(other.fd_, -1);
    flags_ = other.flags_;
    path_ = std::move(other.path_);
    alignment_ = other.alignment_;
    alignment_source_ = other.alignment_source_;
  }
  return *this;
}

File::~File() { (void)Close(); }

bool File::direct() const noexcept { return (flags_ & O_DIRECT) != 0; }

Status File::Close() {
  if (fd_ < 0) return {};
  const int fd = std::exchange(fd_, -1);
  if (int r = sys::Close(fd); r < 0) {
    return Status::FromErrno(
        -r, "close(\"" + path_ + "\", fd " + std::to_string(fd) + ")");
  }
  return {};
}

Result<uint64_t> File::Size() const {
  struct stat st;
  if (int r = sys::Fstat(fd_, &st); r < 0) {
    return Status::FromErrno(-r, "fstat(\"" + path_ + "\")");
  }
  if (S_ISBLK(st.st_mode)) {
    uint64_t bytes = 0;
    if (int r = sys::Ioctl(fd_, BLKGETSIZE64, &bytes); r < 0) {
      return Status::FromErrno(-r, "ioctl(\"" + path_ + "\", BLKGETSIZE64)");
    }
    return bytes;
  }
  return static_cast<uint64_t>(st.st_size);
}

namespace {

// Fills in the O_DIRECT alignment of a freshly opened file; an error closes
// nothing (the File does).
Status AdoptAlignment(File& f, int flags, Alignment* out,
                      AlignmentSource* source) {
  if ((flags & O_DIRECT) == 0) return {};
  Result<DirectIoInfo> info = DiscoverDirectIo(f.fd());
  if (!info.ok()) return info.status();
  if (!info->supported) {
    return Status::Error(
        Errc::kUnsupported,
        "\"" + f.path() +
            "\": the file system reports that it cannot do "
            "O_DIRECT on this file (statx STATX_DIOALIGN offset alignment 0)");
  }
  *out = info->alignment;
  *source = info->source;
  return {};
}

}  // namespace

Result<File> File::Open(const std::string& path, int flags, mode_t mode) {
  const int fd = sys::Open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) {
    std::string ctx =
        "open(\"" + path + "\", " + util::OpenFlagsText(flags) + ")";
    if (fd == -EINVAL && (flags & O_DIRECT) != 0) {
      ctx += ": the file system refuses O_DIRECT";
    }
    return Status::FromErrno(-fd, std::move(ctx));
  }
  File f(fd, path, flags);
  if (Status s = AdoptAlignment(f, flags, &f.alignment_, &f.alignment_source_);
      !s.ok()) {
    return s;
  }
  return f;
}

Result<File> File::CreateTemporary(const std::string& dir, int flags) {
  flags = (flags & ~O_ACCMODE) | O_RDWR;
  int fd = sys::Open(dir.c_str(), flags | O_TMPFILE | O_CLOEXEC, 0600);
  std::string shown = dir + "/(unnamed temporary file)";
  if (fd < 0 && fd != -EINVAL && fd != -EISDIR && fd != -EOPNOTSUPP) {
    std::string ctx =
        "open(\"" + dir + "\", O_TMPFILE|" + util::OpenFlagsText(flags) + ")";
    return Status::FromErrno(-fd, std::move(ctx));
  }
  if (fd < 0) {
    // No O_TMPFILE here (or with these flags): a named file, unlinked as soon
    // as it is open.
    std::string templ = dir + "/aiokit-XXXXXX";
    fd = sys::Mkostemp(templ.data(),
                       (flags & ~(O_ACCMODE | O_CREAT | O_EXCL)) | O_CLOEXEC);
    if (fd < 0) {
      return Status::FromErrno(-fd, "mkostemp(\"" + templ + "\", " +
                                        util::OpenFlagsText(flags) + ")");
    }
    (void)sys::Unlink(templ.c_str());
  }
  File f(fd, std::move(shown), flags);
  if (Status s = AdoptAlignment(f, flags, &f.alignment_, &f.alignment_source_);
      !s.ok()) {
    return s;
  }
  return f;
}

Result<AlignedBuffer> AlignedBuffer::Allocate(size_t size, size_t alignment) {
  // 0 is what a buffered file's Alignment says: nothing is required.
  if (alignment == 0) alignment = kDefaultBufferAlignment;
  if (!IsPowerOfTwo(alignment)) {
    return Status::Error(Errc::kInvalidArgument,
                         "AlignedBuffer::Allocate(size " +
                             std::to_string(size) + ", alignment " +
                             std::to_string(alignment) +
                             "): alignment must be a power of two");
  }
  if (size == 0) return AlignedBuffer();
  if (alignment < alignof(std::max_align_t))
    alignment = alignof(std::max_align_t);
  if (size > SIZE_MAX - (alignment - 1)) {
    return Status::FromErrno(ENOMEM, "AlignedBuffer::Allocate(size " +
                                         std::to_string(size) +
                                         "): size overflows");
  }
  void* p = internal::AllocateIoMemory(size, alignment);
  if (p == nullptr) {
    return Status::FromErrno(ENOMEM, "AlignedBuffer::Allocate(size " +
                                         std::to_string(size) + ", alignment " +
                                         std::to_string(alignment) + ")");
  }
  return AlignedBuffer(static_cast<char*>(p), size);
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

Result<BufferPool> BufferPool::Create(size_t count, size_t size,
                                      size_t alignment) {
  if (count == 0 || size == 0) {
    return Status::Error(Errc::kInvalidArgument,
                         "BufferPool::Create(count " + std::to_string(count) +
                             ", size " + std::to_string(size) +
                             "): count and size must be at least 1");
  }
  if (alignment == 0) alignment = kDefaultBufferAlignment;
  if (!IsPowerOfTwo(alignment)) {
    return Status::Error(Errc::kInvalidArgument,
                         "BufferPool::Create(alignment " +
                             std::to_string(alignment) +
                             "): alignment must be a power of two");
  }
  const size_t stride = (size + alignment - 1) & ~(alignment - 1);
  if (stride < size || (count != 0 && stride > SIZE_MAX / count)) {
    return Status::FromErrno(
        ENOMEM, "BufferPool::Create(count " + std::to_string(count) +
                    ", size " + std::to_string(size) + "): size overflows");
  }
  Result<AlignedBuffer> storage =
      AlignedBuffer::Allocate(stride * count, alignment);
  if (!storage.ok()) return storage.status();
  BufferPool pool;
  pool.storage_ = std::move(*storage);
  pool.size_ = size;
  pool.stride_ = stride;
  pool.iovecs_.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    pool.iovecs_.push_back(iovec{pool.storage_.data() + i * stride, size});
  }
  return pool;
}

}  // namespace aiokit
