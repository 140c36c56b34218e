// The write log aiokit_faultfs records (`log PATH`), and the crash images a
// power cut could leave, built from it as dm-log-writes' replay tools and
// CrashMonkey build theirs.
//
// An entry is a 32-byte little-endian header (u32 magic "AKWL", u8 type,
// three zero bytes, u32 path length, u32 zero, u64 offset, u64 length), the
// file's path in the file system ("/name"), and for a write its bytes:
//   kWrite       `length` bytes at `offset` reached the file
//   kFlushBegin  an fsync of the file arrived (offset: the flush's id)
//   kFlushEnd    that fsync succeeded (offset: the same id)
//   kZero        a punched or zeroed range
//   kTruncate    the file's size became `length`
//   kExtend      the file grew to at least `length` (fallocate)
// A write is logged before the writer is told it completed, so everything
// logged before a flush's begin entry was complete when the flush arrived:
// once the flush ends, that is on stable storage. What is logged after it
// may or may not be.
//
// Thread safety: plain values; CrashWalk is used by one thread.

#ifndef AIOKIT_TESTS_FAULTFS_WRITELOG_H_
#define AIOKIT_TESTS_FAULTFS_WRITELOG_H_

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace writelog {

enum class Type : uint8_t {
  kWrite = 1,
  kFlushBegin = 2,
  kFlushEnd = 3,
  kZero = 4,
  kTruncate = 5,
  kExtend = 6,
};

inline constexpr uint32_t kMagic = 0x4c574b41;  // "AKWL"
inline constexpr size_t kHeader = 32;

struct Entry {
  Type type = Type::kWrite;
  std::string path;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::string data;  // a write's bytes
};

namespace internal {
inline void Put(std::string* out, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i)
    out->push_back(static_cast<char>(v >> (8 * i)));
}
inline uint64_t Get(const unsigned char* p, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}
}  // namespace internal

// One entry's bytes; `data` (length bytes) only for kWrite.
inline std::string Encode(Type type, const char* path, uint64_t offset,
                          uint64_t length, const char* data) {
  std::string out;
  const size_t path_len = std::strlen(path);
  out.reserve(kHeader + path_len + (data != nullptr ? length : 0));
  internal::Put(&out, kMagic, 4);
  internal::Put(&out, static_cast<uint8_t>(type), 4);
  internal::Put(&out, path_len, 4);
  internal::Put(&out, 0, 4);
  internal::Put(&out, offset, 8);
  internal::Put(&out, length, 8);
  out.append(path, path_len);
  if (type == Type::kWrite && data != nullptr) out.append(data, length);
  return out;
}

// Reads every entry of the log at `file`. On failure (unreadable, a bad
// magic or type, an entry cut short) returns false with what and where in
// *error.
inline bool Load(const std::string& file, std::vector<Entry>* out,
                 std::string* error) {
  std::FILE* f = std::fopen(file.c_str(), "rbe");
  if (f == nullptr) {
    *error = file + ": " + std::strerror(errno);
    return false;
  }
  std::string bytes;
  char chunk[1 << 16];
  for (size_t n; (n = std::fread(chunk, 1, sizeof(chunk), f)) != 0;) {
    bytes.append(chunk, n);
  }
  const bool read_error = std::ferror(f) != 0;
  std::fclose(f);
  if (read_error) {
    *error = file + ": read error";
    return false;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t at = 0;
  while (at < bytes.size()) {
    const std::string where = file + " at byte " + std::to_string(at) +
                              " (entry " + std::to_string(out->size()) + ")";
    if (bytes.size() - at < kHeader) {
      *error = where + ": header cut short";
      return false;
    }
    const unsigned char* h = p + at;
    const auto type = internal::Get(h + 4, 1);
    if (internal::Get(h, 4) != kMagic || type < 1 || type > 6) {
      *error = where + ": not an entry (bad magic or type)";
      return false;
    }
    Entry e;
    e.type = static_cast<Type>(type);
    const uint64_t path_len = internal::Get(h + 8, 4);
    e.offset = internal::Get(h + 16, 8);
    e.length = internal::Get(h + 24, 8);
    const uint64_t data_len = e.type == Type::kWrite ? e.length : 0;
    if (bytes.size() - at - kHeader < path_len + data_len) {
      *error = where + ": cut short";
      return false;
    }
    e.path.assign(bytes, at + kHeader, path_len);
    e.data.assign(bytes, at + kHeader + path_len, data_len);
    at += kHeader + path_len + data_len;
    out->push_back(std::move(e));
  }
  return true;
}

// Applies one entry to an image of its file (a write, zeroing or size
// change; flush entries change nothing).
inline void Apply(const Entry& e, std::string* image) {
  switch (e.type) {
    case Type::kWrite:
      if (image->size() < e.offset + e.length)
        image->resize(e.offset + e.length);
      image->replace(e.offset, e.length, e.data);
      break;
    case Type::kZero:
      if (e.offset < image->size()) {
        const uint64_t n =
            std::min<uint64_t>(e.length, image->size() - e.offset);
        std::fill_n(image->begin() + static_cast<std::ptrdiff_t>(e.offset), n,
                    '\0');
      }
      break;
    case Type::kTruncate:
      image->resize(e.length);
      break;
    case Type::kExtend:
      if (image->size() < e.length) image->resize(e.length);
      break;
    case Type::kFlushBegin:
    case Type::kFlushEnd:
      break;
  }
}

// Walks the crash points of one file of a log, in order: just before each of
// the file's flush end entries, and the end of the log. At each point the
// durable image is the file as of the latest begin entry of a flush that
// ended before the point (on top of `base`, what the file held when the log
// began); the file's entries logged after that and before the point are in
// flight, and a crash image is the durable one with any subset of them
// applied in log order.
class CrashWalk {
 public:
  CrashWalk(const std::vector<Entry>* log, std::string file, std::string base)
      : log_(log), file_(std::move(file)), durable_(std::move(base)) {}

  // Moves to the next crash point. Returns false past the last one.
  bool Next() {
    if (point_ > log_->size()) return false;
    if (started_) {
      // Past the flush end the last point stood before: what that flush
      // covered becomes durable.
      if (point_ == log_->size()) {
        point_ = log_->size() + 1;
        return false;
      }
      const Entry& end = (*log_)[point_];
      const auto begin = begins_.find(end.offset);
      if (begin != begins_.end() && begin->second > durable_upto_) {
        for (size_t i = durable_upto_; i < begin->second; ++i) {
          const Entry& e = (*log_)[i];
          if (e.path != file_ || e.type == Type::kFlushBegin ||
              e.type == Type::kFlushEnd) {
            continue;
          }
          Apply(e, &durable_);
          changed_.emplace_back(e.offset, e.length);
        }
        durable_upto_ = begin->second;
      }
      ++point_;
    }
    started_ = true;
    // On to the next flush end of the file, noting the begins on the way.
    while (point_ < log_->size()) {
      const Entry& e = (*log_)[point_];
      if (e.path == file_ && e.type == Type::kFlushBegin) {
        begins_[e.offset] = point_;
      }
      if (e.path == file_ && e.type == Type::kFlushEnd) break;
      ++point_;
    }
    in_flight_.clear();
    for (size_t i = durable_upto_; i < point_; ++i) {
      const Entry& e = (*log_)[i];
      if (e.path == file_ && e.type != Type::kFlushBegin &&
          e.type != Type::kFlushEnd) {
        in_flight_.push_back(&e);
      }
    }
    return true;
  }

  // The log index of the point: entries before it happened, none after.
  size_t point() const { return point_; }
  const std::string& durable() const { return durable_; }
  const std::vector<const Entry*>& in_flight() const { return in_flight_; }
  // The ranges the durable image changed in since the caller last cleared
  // them (offset, length), for a caller that keeps state derived from it.
  std::vector<std::pair<uint64_t, uint64_t>>* changed() { return &changed_; }

  // The crash image with the in-flight entries `take` chooses.
  std::string Image(const std::vector<bool>& take) const {
    std::string image = durable_;
    for (size_t i = 0; i < in_flight_.size(); ++i) {
      if (take[i]) Apply(*in_flight_[i], &image);
    }
    return image;
  }

 private:
  const std::vector<Entry>* log_;
  std::string file_;
  std::string durable_;
  size_t durable_upto_ = 0;  // entries before this index are durable
  size_t point_ = 0;
  bool started_ = false;
  std::map<uint64_t, size_t> begins_;  // flush id -> index of its begin
  std::vector<const Entry*> in_flight_;
  std::vector<std::pair<uint64_t, uint64_t>> changed_;
};

// The subsets of `n` in-flight entries a crash test tries at one point:
// every one of the 2^n when n <= `every_upto`; otherwise none, all, and
// `random` drawn from `rng` (each entry in with probability one half).
template <typename Rng>
std::vector<std::vector<bool>> Subsets(size_t n, unsigned random, Rng& rng,
                                       size_t every_upto = 6) {
  std::vector<std::vector<bool>> out;
  if (n <= every_upto) {
    for (uint64_t bits = 0; bits < (uint64_t{1} << n); ++bits) {
      std::vector<bool> take(n);
      for (size_t i = 0; i < n; ++i) take[i] = ((bits >> i) & 1) != 0;
      out.push_back(std::move(take));
    }
    return out;
  }
  out.emplace_back(n, false);
  out.emplace_back(n, true);
  for (unsigned r = 0; r < random; ++r) {
    std::vector<bool> take(n);
    for (size_t i = 0; i < n; ++i) take[i] = (rng() & 1) != 0;
    out.push_back(std::move(take));
  }
  return out;
}

}  // namespace writelog

#endif  // AIOKIT_TESTS_FAULTFS_WRITELOG_H_
