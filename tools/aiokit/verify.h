// `--verify=xxh3`: every block written carries a 32-byte header (a magic, its
// own offset, a generation, an xxh3 checksum of the whole block) and a
// pattern derived from offset and generation, so that a read proves the block
// is the one written at that place and time, whole.

#ifndef AIOKIT_TOOLS_AIOKIT_VERIFY_H_
#define AIOKIT_TOOLS_AIOKIT_VERIFY_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace aiokit::tool {

inline constexpr size_t kVerifyHeaderBytes = 32;
inline constexpr uint64_t kVerifyMagic = 0x594652564B4F4941ULL;  // "AIOKVRFY"

// Fills `block` (len >= kVerifyHeaderBytes) for `offset` and `generation`.
void FillVerifyBlock(char* block, size_t len, uint64_t offset,
                     uint64_t generation);

// Checks a block read at `offset`. `generation` is the one expected, or
// nullopt when any generation will do (a block from an earlier run). Returns
// an empty string when the block is right, otherwise what was expected and
// what was found ("offset 4096: expected generation 3, found generation 2").
std::string CheckVerifyBlock(const char* block, size_t len, uint64_t offset,
                             std::optional<uint64_t> generation);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_VERIFY_H_
