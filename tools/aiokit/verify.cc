#include "verify.h"

#include <xxhash.h>

#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace aiokit::tool {
namespace {

struct Header {
  uint64_t magic;
  uint64_t offset;
  uint64_t generation;
  uint64_t checksum;  // xxh3-64 of the block with this field zero
};
static_assert(sizeof(Header) == kVerifyHeaderBytes);

uint64_t Checksum(const char* block, size_t len) {
  // The header without its checksum seeds the hash of the payload: every byte
  // of the block counts, without copying it to zero the field.
  const XXH64_hash_t head = XXH3_64bits(block, offsetof(Header, checksum));
  return XXH3_64bits_withSeed(block + kVerifyHeaderBytes,
                              len - kVerifyHeaderBytes, head);
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "0x%016" PRIx64, v);
  return buf;
}

}  // namespace

void FillVerifyBlock(char* block, size_t len, uint64_t offset,
                     uint64_t generation) {
  Header h{kVerifyMagic, offset, generation, 0};
  std::memcpy(block, &h, sizeof(h));
  // A splitmix64 stream seeded by place and time: a block written elsewhere
  // or earlier differs in its payload as well as its header.
  uint64_t s = offset * 0x9E3779B97F4A7C15ULL ^ (generation + 1) * 0xBF58476D;
  size_t i = kVerifyHeaderBytes;
  for (; i + 8 <= len; i += 8) {
    s += 0x9E3779B97F4A7C15ULL;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::memcpy(block + i, &z, 8);
  }
  for (; i < len; ++i) block[i] = static_cast<char>(i);
  h.checksum = Checksum(block, len);
  std::memcpy(block + offsetof(Header, checksum), &h.checksum,
              sizeof(h.checksum));
}

std::string CheckVerifyBlock(const char* block, size_t len, uint64_t offset,
                             std::optional<uint64_t> generation) {
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
    return at + "expected generation " + std::to_string(*generation) +
           ", found generation " + std::to_string(h.generation) +
           (h.generation < *generation ? " (a lost write)"
                                       : " (a write from the future?)");
  }
  return {};
}

}  // namespace aiokit::tool
