// The record format of the append-only log in device_append_log.cc, and its
// recovery: what a storage engine reads back after a crash to learn which
// records are on the log.
//
// Record `seq` fills slot `seq` (bytes [seq * kRecord, (seq + 1) * kRecord))
// of the log: a magic, its sequence number, a checksum (FNV-1a 64 of the
// whole slot with the checksum field zero) and a payload made from the
// sequence number. A slot holds a record when all three agree, so a slot
// never written (zeros), half written or holding another slot's bytes is
// not one. Writers append concurrently and a record is acknowledged once a
// flush covers it, so the log may have holes: recovery scans every slot
// rather than stopping at the first empty one.
//
// Thread safety: pure functions.

#ifndef AIOKIT_EXAMPLES_DEVICE_APPEND_LOG_H_
#define AIOKIT_EXAMPLES_DEVICE_APPEND_LOG_H_

#include <cstdint>
#include <cstring>
#include <optional>

namespace append_log {

inline constexpr size_t kRecord = 4096;
inline constexpr uint64_t kMagic = 0x4b4c4f474b4f4941;  // "AIOKGOLK"
inline constexpr size_t kChecksumAt = 16;

inline uint64_t Checksum(const char* slot) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < kRecord; ++i) {
    const bool field = i >= kChecksumAt && i < kChecksumAt + 8;
    h ^= field ? 0 : static_cast<unsigned char>(slot[i]);
    h *= 0x100000001b3ULL;
  }
  return h;
}

// Fills `slot` (kRecord bytes) with record `seq`.
inline void FillRecord(char* slot, uint64_t seq) {
  std::memcpy(slot, &kMagic, 8);
  std::memcpy(slot + 8, &seq, 8);
  for (size_t i = 24; i < kRecord; ++i) {
    slot[i] = static_cast<char>(seq * 131 + i * 7);
  }
  const uint64_t zero = 0;
  std::memcpy(slot + kChecksumAt, &zero, 8);
  const uint64_t sum = Checksum(slot);
  std::memcpy(slot + kChecksumAt, &sum, 8);
}

// The record slot `index` holds, if it holds one.
inline std::optional<uint64_t> ParseSlot(const char* slot, uint64_t index) {
  uint64_t magic = 0, seq = 0, sum = 0;
  std::memcpy(&magic, slot, 8);
  std::memcpy(&seq, slot + 8, 8);
  std::memcpy(&sum, slot + kChecksumAt, 8);
  if (magic != kMagic || seq != index || sum != Checksum(slot)) {
    return std::nullopt;
  }
  return seq;
}

}  // namespace append_log

#endif  // AIOKIT_EXAMPLES_DEVICE_APPEND_LOG_H_
