// Verify blocks: every block written carries what a later read needs to prove
// it is the block written at that place and time, whole.
//
// Two families of layouts:
//  - `xxh3`, aiokit's own: a 32-byte header (a magic, the block's offset, a
//    generation, an xxh3 checksum of the whole block) and a payload derived
//    from offset and generation.
//  - fio's layouts (`md5`, `crc64`, `crc32c`, `crc32c-intel`, `sha256`,
//    `xxhash`, `meta`, `pattern`), byte for byte as fio 3.33 writes them, so
//    that a file written by one tool verifies with the other: per verify
//    interval a 40-byte header (magic 0xacca, type, length, seed, offset,
//    time, thread, numberio, crc32c of the header), the type's checksum of
//    the rest, then the payload. aiokit writes the block's generation as the
//    seed (and its low 16 bits as numberio) and zero times.

#ifndef AIOKIT_TOOLS_AIOKIT_VERIFY_H_
#define AIOKIT_TOOLS_AIOKIT_VERIFY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "aiokit/status.h"

namespace aiokit::tool {

inline constexpr size_t kVerifyHeaderBytes = 32;
inline constexpr uint64_t kVerifyMagic = 0x594652564B4F4941ULL;  // "AIOKVRFY"

// How blocks are laid out and checked.
struct VerifyFormat {
  // The name as given (fio's or aiokit's); "" for no verify.
  std::string name;
  // fio's verify_type written in the header (0: aiokit's own xxh3 layout).
  uint16_t fio_type = 0;
  // verify_pattern's bytes: the payload, checked by the meta and pattern
  // types. Empty: a payload derived from offset and generation.
  std::string pattern;
  // verify_interval: one header per this many bytes of a block (0: the
  // block).
  uint32_t interval = 0;
  // The header's thread field (fio's job number).
  uint16_t thread = 1;

  bool enabled() const { return !name.empty(); }
  // verify_pattern without verify=: fio's pattern type with a header.
  void UsePatternWithHeader();
  bool fio() const { return fio_type != 0; }
  // fio's verify=pattern: the pattern alone, no header (offsets and
  // generations cannot be checked).
  bool headerless() const;
  // The bytes at the start of every interval the layout owns (header and
  // checksum); the block must be at least this long.
  size_t HeaderBytes() const;
};

// Parses verify=NAME. On success the format has its name and type; on failure
// the error says which names exist. REQUIRES: `where` names the option.
Status ParseVerifyName(std::string_view name, const std::string& where,
                       VerifyFormat* out);

// Parses fio's pattern syntax (verify_pattern, buffer_pattern): hex numbers
// (0x..., bytes in the order written), decimal numbers (up to 32 bits, least
// significant byte first, as few bytes as hold the value), and quoted
// strings, one after another. On failure the error names the bad part.
Result<std::string> ParsePattern(std::string_view text,
                                 const std::string& where);

// Fills `block` (len >= f.HeaderBytes(), a multiple of the interval) for
// `offset` and `generation`. The result depends only on the arguments.
void FillVerifyBlock(const VerifyFormat& f, char* block, size_t len,
                     uint64_t offset, uint64_t generation);

// Checks a block read at `offset`. `generation` is the one expected, or
// nullopt when any generation will do (a block from an earlier run, or one
// fio wrote). Returns an empty string when the block is right, otherwise what
// was expected and what was found ("offset 4096: expected generation 3, found
// generation 2").
std::string CheckVerifyBlock(const VerifyFormat& f, const char* block,
                             size_t len, uint64_t offset,
                             std::optional<uint64_t> generation);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_VERIFY_H_
