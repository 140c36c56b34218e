#include "verify.h"

#include <isa-l/crc.h>
#include <isa-l/crc64.h>
#include <nettle/md5.h>
#include <nettle/sha2.h>
#include <xxhash.h>

#include <cctype>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <vector>

#include "job.h"

namespace aiokit::tool {
namespace {

// aiokit's own layout.
struct Header {
  uint64_t magic;
  uint64_t offset;
  uint64_t generation;
  uint64_t checksum;  // xxh3-64 of the block with this field zero
};
static_assert(sizeof(Header) == kVerifyHeaderBytes);

// fio's header (verify.h of fio 3.33), in host byte order as fio writes it.
struct FioHeader {
  uint16_t magic;
  uint16_t type;
  uint32_t len;   // the verify interval
  uint64_t seed;  // fio: the payload's random seed; aiokit: the generation
  uint64_t offset;
  uint32_t time_sec;
  uint32_t time_nsec;
  uint16_t thread;
  uint16_t numberio;
  uint32_t crc32;  // fio's crc32c of the fields before it
};
static_assert(sizeof(FioHeader) == 40);
constexpr uint16_t kFioMagic = 0xacca;

// fio's verify types (their numbers are on disk).
constexpr uint16_t kFioMeta = 1, kFioMd5 = 2, kFioCrc64 = 3, kFioCrc32c = 5,
                   kFioSha256 = 9, kFioXxhash = 15, kFioPattern = 17,
                   kFioPatternNoHeader = 18;

struct TypeInfo {
  const char* name;
  uint16_t type;
  size_t sum_bytes;  // the checksum after the header
};
constexpr TypeInfo kTypes[] = {
    {"xxh3", 0, 0},
    {"meta", kFioMeta, 0},
    {"md5", kFioMd5, 16},
    {"crc64", kFioCrc64, 8},
    {"crc32c", kFioCrc32c, 4},
    {"crc32c-intel", kFioCrc32c, 4},  // fio writes crc32c's type for it
    {"sha256", kFioSha256, 64},
    {"xxhash", kFioXxhash, 4},
    {"pattern", kFioPatternNoHeader, 0},
};

const TypeInfo* TypeByNumber(uint16_t type) {
  for (const TypeInfo& t : kTypes) {
    if (t.type == type) return &t;
  }
  return nullptr;
}

std::string TypeName(uint16_t type) {
  if (type == kFioPattern) return "pattern (with fio's header)";
  const TypeInfo* t = TypeByNumber(type);
  return (t != nullptr ? std::string(t->name) : "fio type") + " (" +
         std::to_string(type) + ")";
}

size_t SumBytes(uint16_t type) {
  const TypeInfo* t = TypeByNumber(type);
  return t != nullptr ? t->sum_bytes : 0;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016" PRIx64, v);
  return buf;
}

// A block of another generation than the one last written there.
std::string WrongGeneration(uint64_t want, uint64_t found) {
  return "expected generation " + std::to_string(want) + ", found generation " +
         std::to_string(found) +
         (found < want ? " (a lost write)" : " (a write from the future?)");
}

const unsigned char* U(const char* p) {
  return reinterpret_cast<const unsigned char*>(p);
}

// fio's crc32c: the Castagnoli polynomial from all ones, without the final
// inversion of the standard CRC-32C.
uint32_t FioCrc32c(const char* p, size_t len) {
  return crc32_iscsi(const_cast<unsigned char*>(U(p)), static_cast<int>(len),
                     0xFFFFFFFFU);
}

// fio's crc64: the reflected Jones polynomial from zero, no final inversion
// (ISA-L inverts on the way in and out).
uint64_t FioCrc64(const char* p, size_t len) {
  return ~crc64_jones_refl(~uint64_t{0}, U(p), len);
}

// fio's sha256 field: its SHA-256 appends the message length in host (little
// endian) order, and what it stores is its working block after the last
// transform, whose first 8 bytes hold the low byte of each state word.
void FioSha256(const char* p, size_t len, unsigned char out[64]) {
  sha256_ctx ctx;
  sha256_init(&ctx);
  sha256_update(&ctx, len, U(p));
  const size_t index = len % 64;
  const size_t pad = index < 56 ? 56 - index : 120 - index;
  static const unsigned char kPad[128] = {0x80};
  sha256_update(&ctx, pad, kPad);
  const uint64_t bits = static_cast<uint64_t>(len) * 8;
  unsigned char le[8];
  std::memcpy(le, &bits, 8);  // host order, as fio
  sha256_update(&ctx, 8, le);
  // The last block as fio's buffer holds it.
  std::memset(out, 0, 64);
  if (index < 56) {
    std::memcpy(out, p + len - index, index);
    out[index] = 0x80;
  }
  std::memcpy(out + 56, le, 8);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(ctx.state[i]);
}

// The checksum of `type` over [p, p + len) into `out` (SumBytes(type) bytes).
void Sum(uint16_t type, const char* p, size_t len, unsigned char* out) {
  switch (type) {
    case kFioMd5: {
      md5_ctx ctx;
      md5_init(&ctx);
      md5_update(&ctx, len, U(p));
      md5_digest(&ctx, MD5_DIGEST_SIZE, out);
      break;
    }
    case kFioCrc64: {
      const uint64_t v = FioCrc64(p, len);
      std::memcpy(out, &v, 8);
      break;
    }
    case kFioCrc32c: {
      const uint32_t v = FioCrc32c(p, len);
      std::memcpy(out, &v, 4);
      break;
    }
    case kFioSha256:
      FioSha256(p, len, out);
      break;
    case kFioXxhash: {
      const uint32_t v = XXH32(p, len, 1);
      std::memcpy(out, &v, 4);
      break;
    }
    default:
      break;
  }
}

uint64_t Checksum(const char* block, size_t len) {
  // The header without its checksum seeds the hash of the payload: every byte
  // of the block counts, without copying it to zero the field.
  const XXH64_hash_t head = XXH3_64bits(block, offsetof(Header, checksum));
  return XXH3_64bits_withSeed(block + kVerifyHeaderBytes,
                              len - kVerifyHeaderBytes, head);
}

// A splitmix64 stream seeded by place and time over [from, len): a block
// written elsewhere or earlier differs in its payload as well as its header.
void FillPayload(char* block, size_t from, size_t len, uint64_t offset,
                 uint64_t generation) {
  uint64_t s = offset * 0x9E3779B97F4A7C15ULL ^ (generation + 1) * 0xBF58476D;
  size_t i = from;
  for (; i + 8 <= len; i += 8) {
    s += 0x9E3779B97F4A7C15ULL;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::memcpy(block + i, &z, 8);
  }
  for (; i < len; ++i) block[i] = static_cast<char>(i);
}

// The pattern over the whole block, its phase continuous from the block's
// first byte (as fio fills its buffers).
void FillPattern(const std::string& pattern, char* block, size_t len) {
  const size_t n = pattern.size();
  for (size_t i = 0; i < len; i += n) {
    std::memcpy(block + i, pattern.data(), std::min(n, len - i));
  }
}

// Where [from, to) of the block departs from the pattern; empty if nowhere.
std::string CheckPattern(const std::string& pattern, const char* block,
                         size_t from, size_t to, const std::string& at) {
  const size_t n = pattern.size();
  for (size_t i = from; i < to; ++i) {
    if (block[i] != pattern[i % n]) {
      char buf[96];
      std::snprintf(buf, sizeof(buf),
                    "expected pattern byte 0x%02x at byte %zu of the block, "
                    "found 0x%02x",
                    static_cast<unsigned char>(pattern[i % n]), i,
                    static_cast<unsigned char>(block[i]));
      return at + buf;
    }
  }
  return {};
}

void FillFio(const VerifyFormat& f, char* block, size_t len, uint64_t offset,
             uint64_t generation) {
  if (f.pattern.empty()) {
    FillPayload(block, 0, len, offset, generation);
  } else {
    FillPattern(f.pattern, block, len);
  }
  if (f.headerless()) return;
  const size_t interval = f.interval != 0 ? f.interval : len;
  const size_t sum = SumBytes(f.fio_type);
  for (size_t at = 0; at + interval <= len; at += interval) {
    FioHeader h{};
    h.magic = kFioMagic;
    h.type = f.fio_type;
    h.len = static_cast<uint32_t>(interval);
    h.seed = generation;
    h.offset = offset + at;
    h.thread = f.thread;
    h.numberio = static_cast<uint16_t>(generation);
    h.crc32 = FioCrc32c(reinterpret_cast<const char*>(&h),
                        offsetof(FioHeader, crc32));
    std::memcpy(block + at, &h, sizeof(h));
    if (sum != 0) {
      const size_t data = sizeof(FioHeader) + sum;
      Sum(f.fio_type, block + at + data, interval - data,
          reinterpret_cast<unsigned char*>(block + at + sizeof(FioHeader)));
    }
  }
}

std::string CheckFio(const VerifyFormat& f, const char* block, size_t len,
                     uint64_t offset, std::optional<uint64_t> generation) {
  const size_t interval = f.interval != 0 ? f.interval : len;
  const size_t sum = SumBytes(f.fio_type);
  for (size_t at = 0; at + interval <= len; at += interval) {
    const std::string where = "offset " + std::to_string(offset + at) + ": ";
    if (f.headerless()) {
      std::string bad =
          CheckPattern(f.pattern, block, at, at + interval, where);
      if (!bad.empty()) return bad;
      continue;
    }
    FioHeader h;
    std::memcpy(&h, block + at, sizeof(h));
    if (h.magic != kFioMagic) {
      char buf[16];
      std::snprintf(buf, sizeof(buf), "0x%04x", h.magic);
      return where + "expected fio's verify header (magic 0xacca), found " +
             buf +
             " (the block was never written by a verify job, or was "
             "overwritten)";
    }
    const uint32_t hcrc = FioCrc32c(block + at, offsetof(FioHeader, crc32));
    if (hcrc != h.crc32) {
      return where + "expected header crc32c " + Hex(h.crc32) + ", found " +
             Hex(hcrc) + " (a torn or corrupted header)";
    }
    if (h.type != f.fio_type) {
      return where + "expected verify type " + TypeName(f.fio_type) +
             ", found " + TypeName(h.type) + " (written with another verify=)";
    }
    if (h.len != interval) {
      return where + "expected a verify interval of " +
             std::to_string(interval) + " bytes, found " +
             std::to_string(h.len) +
             " (written with another block size or verify_interval)";
    }
    if (h.offset != offset + at) {
      return where + "expected the block written for offset " +
             std::to_string(offset + at) +
             ", found the one written for offset " + std::to_string(h.offset) +
             " (misplaced write)";
    }
    if (sum != 0) {
      unsigned char want[64];
      const size_t data = sizeof(FioHeader) + sum;
      Sum(f.fio_type, block + at + data, interval - data, want);
      if (std::memcmp(want, block + at + sizeof(FioHeader), sum) != 0) {
        return where + "the " + TypeName(f.fio_type) +
               " checksum in the header does not match the block's " +
               std::to_string(interval - data) +
               " bytes of data (torn or corrupted)";
      }
    }
    if (!f.pattern.empty() &&
        (f.fio_type == kFioMeta || f.fio_type == kFioPattern)) {
      std::string bad = CheckPattern(f.pattern, block, at + sizeof(FioHeader),
                                     at + interval, where);
      if (!bad.empty()) return bad;
    }
    if (generation && h.seed != *generation) {
      return where + WrongGeneration(*generation, h.seed);
    }
  }
  return {};
}

}  // namespace

void VerifyFormat::UsePatternWithHeader() {
  name = "pattern";
  fio_type = kFioPattern;
}

bool VerifyFormat::headerless() const {
  return fio_type == kFioPatternNoHeader;
}

size_t VerifyFormat::HeaderBytes() const {
  if (!fio()) return kVerifyHeaderBytes;
  if (headerless()) return pattern.size();
  return sizeof(FioHeader) + SumBytes(fio_type);
}

Status ParseVerifyName(std::string_view name, const std::string& where,
                       VerifyFormat* out) {
  if (name == "0" || name == "none") {
    out->name.clear();
    out->fio_type = 0;
    return {};
  }
  for (const TypeInfo& t : kTypes) {
    if (name == t.name) {
      out->name = t.name;
      out->fio_type = t.type;
      return {};
    }
  }
  std::string names;
  for (const TypeInfo& t : kTypes) names += std::string(", ") + t.name;
  static const char* const kFioOnly[] = {
      "crc32",    "crc16",    "crc7",     "sha1",     "sha512",
      "sha3-224", "sha3-256", "sha3-384", "sha3-512", "null"};
  for (const char* f : kFioOnly) {
    if (name == f) {
      return UsageError(where + "=" + std::string(name) +
                        ": fio's verify type, which aiokit bench does not "
                        "have (it has " +
                        names.substr(2) + ")");
    }
  }
  return UsageError(where + "=" + std::string(name) + ": expected one of " +
                    names.substr(2) + " (or none)");
}

Result<std::string> ParsePattern(std::string_view text,
                                 const std::string& where) {
  std::string out;
  const std::string whole = where + "=" + std::string(text) + ": ";
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (std::isspace(static_cast<unsigned char>(c)) != 0) {
      ++i;
    } else if (c == '"' || c == '\'') {
      const size_t close = text.find(c, i + 1);
      if (close == std::string_view::npos) {
        return UsageError(whole + "a string without its closing " +
                          std::string(1, c));
      }
      out += text.substr(i + 1, close - i - 1);
      i = close + 1;
    } else if (c == '0' && i + 1 < text.size() &&
               (text[i + 1] == 'x' || text[i + 1] == 'X')) {
      size_t end = i + 2;
      while (end < text.size() &&
             std::isxdigit(static_cast<unsigned char>(text[end])) != 0) {
        ++end;
      }
      std::string digits(text.substr(i + 2, end - i - 2));
      if (digits.empty()) {
        return UsageError(whole + "0x without hex digits");
      }
      if (digits.size() % 2 != 0) digits.insert(0, "0");  // 0xabc: 0a bc
      for (size_t d = 0; d < digits.size(); d += 2) {
        out += static_cast<char>(std::stoi(digits.substr(d, 2), nullptr, 16));
      }
      i = end;
    } else if (std::isdigit(static_cast<unsigned char>(c)) != 0) {
      size_t end = i;
      uint64_t v = 0;
      while (end < text.size() &&
             std::isdigit(static_cast<unsigned char>(text[end])) != 0) {
        v = v * 10 + static_cast<uint64_t>(text[end] - '0');
        if (v > UINT32_MAX) {
          return UsageError(whole +
                            "a decimal number above 2^32-1 (write it in hex)");
        }
        ++end;
      }
      // Least significant byte first, as few bytes as hold it (fio's rule).
      do {
        out += static_cast<char>(v & 0xff);
        v >>= 8;
      } while (v != 0);
      i = end;
    } else if (c == '%') {
      return UsageError(whole +
                        "fio's %o (the block's offset in the pattern) is not "
                        "supported");
    } else {
      return UsageError(whole +
                        "expected 0x... hex, a decimal number or a "
                        "\"quoted string\" at \"" +
                        std::string(text.substr(i)) + "\"");
    }
  }
  if (out.empty()) return UsageError(whole + "an empty pattern");
  return out;
}

void FillVerifyBlock(const VerifyFormat& f, char* block, size_t len,
                     uint64_t offset, uint64_t generation) {
  if (f.fio()) {
    FillFio(f, block, len, offset, generation);
    return;
  }
  Header h{kVerifyMagic, offset, generation, 0};
  std::memcpy(block, &h, sizeof(h));
  FillPayload(block, kVerifyHeaderBytes, len, offset, generation);
  h.checksum = Checksum(block, len);
  std::memcpy(block + offsetof(Header, checksum), &h.checksum,
              sizeof(h.checksum));
}

std::string CheckVerifyBlock(const VerifyFormat& f, const char* block,
                             size_t len, uint64_t offset,
                             std::optional<uint64_t> generation) {
  if (f.fio()) return CheckFio(f, block, len, offset, generation);
  Header h;
  std::memcpy(&h, block, sizeof(h));
  const std::string at = "offset " + std::to_string(offset) + ": ";
  if (h.magic != kVerifyMagic) {
    return at + "expected a verify header (magic " + Hex(kVerifyMagic) +
           "), found " + Hex(h.magic) +
           " (the block was never written by a verify job, or was overwritten)";
  }
  if (h.offset != offset) {
    return at + "expected the block written for offset " +
           std::to_string(offset) + ", found the one written for offset " +
           std::to_string(h.offset) + " (misplaced write)";
  }
  const uint64_t sum = Checksum(block, len);
  if (sum != h.checksum) {
    return at + "expected checksum " + Hex(h.checksum) + " (in the header), " +
           "found " + Hex(sum) + " over the block's " + std::to_string(len) +
           " bytes (torn or corrupted)";
  }
  if (generation && h.generation != *generation) {
    return at + WrongGeneration(*generation, h.generation);
  }
  return {};
}

}  // namespace aiokit::tool
