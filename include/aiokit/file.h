// aiokit: files, their O_DIRECT alignment, and aligned buffers.
//
// O_DIRECT moves data between the device and the caller's memory with no page
// cache in between, so the buffer address, the file offset and the length must
// each be a multiple of what the file system and the device accept. Those
// requirements are properties of the file, discovered when it is opened
// (statx's STATX_DIOALIGN, else the block device's logical block size, else
// 512), and carried by `File` as an `Alignment`, so that a misaligned request
// is refused before submission with an error that says which rule it broke,
// instead of an EINVAL from deep inside the kernel.
//
// Thread safety: `Alignment` is a value. A `File` or `AlignedBuffer` may be
// read from several threads; Close() and moves need external synchronisation.

#ifndef AIOKIT_FILE_H_
#define AIOKIT_FILE_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aiokit/status.h"

namespace aiokit {

// What an O_DIRECT transfer on a file must respect. 0 means "not known":
// nothing is checked.
struct Alignment {
  uint32_t memory = 0;  // the buffer address must be a multiple of this
  uint32_t offset =
      0;  // the file offset and the length must be multiples of this

  [[nodiscard]] bool known() const noexcept {
    return memory != 0 && offset != 0;
  }
  // OK when (addr, off, len) respects this alignment (always OK when !known()).
  // Otherwise Errc::kMisaligned with a message naming the address, offset,
  // length and the rule broken.
  [[nodiscard]] Status Check(const void* addr, uint64_t off,
                             uint64_t len) const;
};

// Where an Alignment came from, for `aiokit info` and error messages.
enum class AlignmentSource : uint8_t {
  kStatx,        // statx(STATX_DIOALIGN): the file system's own answer
  kBlockDevice,  // the logical block size of the device (BLKSSZGET or sysfs)
  kDefault,      // neither was available: 512, the historical sector size
};

struct DirectIoInfo {
  // False when the file system says the file cannot be used with O_DIRECT
  // (statx reported offset alignment 0).
  bool supported = false;
  Alignment alignment;
  AlignmentSource source = AlignmentSource::kDefault;
};

// Discovers what O_DIRECT requires of `fd` (which need not be open with
// O_DIRECT). Fails only when fd itself is unusable (fstat fails).
Result<DirectIoInfo> DiscoverDirectIo(int fd);

// An owned file descriptor with its path, open flags and O_DIRECT alignment.
// Move-only; the destructor closes the descriptor and ignores the error (use
// Close() to see it).
class File {
 public:
  // Opens `path` with `flags` (O_CLOEXEC is added) and `mode` for O_CREAT. With
  // O_DIRECT the alignment is discovered; an open refused because the file
  // system lacks O_DIRECT says so.
  static Result<File> Open(const std::string& path, int flags,
                           mode_t mode = 0644);
  // Creates an unnamed file in directory `dir` (O_TMPFILE, else a named file
  // unlinked at once), so that it disappears with its last descriptor even if
  // the process dies. `flags` as for Open (O_RDWR implied).
  static Result<File> CreateTemporary(const std::string& dir, int flags);

  File() = default;
  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] int flags() const noexcept { return flags_; }
  [[nodiscard]] bool direct() const noexcept;
  // The alignment O_DIRECT transfers on this file need; unknown (all 0) for a
  // buffered file.
  [[nodiscard]] Alignment alignment() const noexcept { return alignment_; }
  [[nodiscard]] AlignmentSource alignment_source() const noexcept {
    return alignment_source_;
  }

  // The size in bytes (fstat), or the device size for a block device.
  [[nodiscard]] Result<uint64_t> Size() const;
  // Closes the descriptor; further use is an error. Safe to call twice.
  Status Close();

 private:
  File(int fd, std::string path, int flags) noexcept;

  int fd_ = -1;
  int flags_ = 0;
  std::string path_;
  Alignment alignment_;
  AlignmentSource alignment_source_ = AlignmentSource::kDefault;
};

// What AlignedBuffer and BufferPool align to when the caller's alignment is 0
// ("not known": a buffered file), so that the buffer also suits O_DIRECT on
// most devices.
inline constexpr size_t kDefaultBufferAlignment = 4096;

// A heap buffer whose address is a multiple of `alignment`, zero-filled.
// One of 1 MiB or more is aligned to 2 MiB and asks the kernel for
// transparent huge pages (madvise MADV_HUGEPAGE; granted where THP is not
// "never"), so that a request's buffer reaches the device in a few physically
// contiguous segments rather than one per 4 KiB page; it then occupies up to
// 2 MiB - 1 bytes more. BufferPool, the device layer's Buffer and the
// BlueStore bufferptr allocate the same way. Move-only.
class AlignedBuffer {
 public:
  // On success: a buffer of `size` bytes (size 0 gives an empty one) aligned
  //   to `alignment`, or to kDefaultBufferAlignment when alignment is 0 (as
  //   File::alignment().memory is for a buffered file).
  // On failure: kInvalidArgument when alignment is not a power of two; ENOMEM.
  static Result<AlignedBuffer> Allocate(size_t size, size_t alignment = 4096);

  AlignedBuffer() = default;
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer();

  [[nodiscard]] char* data() noexcept { return data_; }
  [[nodiscard]] const char* data() const noexcept { return data_; }
  [[nodiscard]] size_t size() const noexcept { return size_; }

 private:
  AlignedBuffer(char* data, size_t size) noexcept : data_(data), size_(size) {}
  char* data_ = nullptr;
  size_t size_ = 0;
};

// `count` buffers of `size` bytes, each aligned to `alignment`, carved from one
// allocation: what O_DIRECT needs, in the shape io_uring's fixed buffers take
// (Engine::RegisterBuffers(pool.iovecs()), then Request::buf_index = i).
// Move-only.
class BufferPool {
 public:
  // On failure: kInvalidArgument when count or size is 0 or alignment is not
  // a power of two (0 means kDefaultBufferAlignment); ENOMEM.
  static Result<BufferPool> Create(size_t count, size_t size,
                                   size_t alignment = 4096);

  BufferPool() = default;

  [[nodiscard]] char* buffer(size_t i) noexcept {
    return storage_.data() + i * stride_;
  }
  [[nodiscard]] size_t count() const noexcept { return iovecs_.size(); }
  [[nodiscard]] size_t buffer_size() const noexcept { return size_; }
  [[nodiscard]] std::span<const iovec> iovecs() const noexcept {
    return iovecs_;
  }

 private:
  AlignedBuffer storage_;
  std::vector<iovec> iovecs_;
  size_t size_ = 0;
  size_t stride_ = 0;
};

}  // namespace aiokit

#endif  // AIOKIT_FILE_H_
