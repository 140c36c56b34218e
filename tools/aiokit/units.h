// Parsing and printing of sizes and durations the way fio writes them.

#ifndef AIOKIT_TOOLS_AIOKIT_UNITS_H_
#define AIOKIT_TOOLS_AIOKIT_UNITS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aiokit::tool {

// "4096", "4k", "4K", "4KiB", "1m", "2g", "1t" (powers of 1024, as fio's
// default kb_base=1024). nullopt for anything else, including overflow and
// negative numbers.
std::optional<uint64_t> ParseSize(std::string_view text);
// "5" (seconds), "5s", "500ms", "2m", "1h", "250us": a duration in
// microseconds. nullopt if malformed.
std::optional<uint64_t> ParseDurationUs(std::string_view text);

// A CPU or node list as the kernel and fio write them: "0,5,8-15". Sorted,
// without repeats; nullopt if malformed, empty, or a number is 65536 or more.
std::optional<std::vector<unsigned>> ParseCpuList(std::string_view text);
// The list back in that form ("0-3,5").
std::string FormatCpuList(const std::vector<unsigned>& cpus);

// "4096B", "64KiB", "1.5MiB", ...
std::string FormatBytes(uint64_t bytes);
// fio's short counts: "183k", "1.2M".
std::string FormatCount(double v);

}  // namespace aiokit::tool

#endif  // AIOKIT_TOOLS_AIOKIT_UNITS_H_
