#include "units.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <limits>
#include <system_error>

namespace aiokit::tool {
namespace {

// Splits "123abc" into 123 and "abc"; nullopt when there is no leading number
// or it overflows.
std::optional<std::pair<uint64_t, std::string>> SplitNumber(
    std::string_view text) {
  uint64_t v = 0;
  size_t i = 0;
  for (; i < text.size() &&
         std::isdigit(static_cast<unsigned char>(text[i])) != 0;
       ++i) {
    const uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10)
      return std::nullopt;
    v = v * 10 + d;
  }
  if (i == 0) return std::nullopt;
  std::string suffix;
  for (; i < text.size(); ++i) {
    suffix +=
        static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  }
  return std::make_pair(v, suffix);
}

std::optional<uint64_t> Scale(uint64_t v, uint64_t mult) {
  if (mult != 0 && v > std::numeric_limits<uint64_t>::max() / mult)
    return std::nullopt;
  return v * mult;
}

}  // namespace

std::optional<uint64_t> ParseSize(std::string_view text) {
  auto split = SplitNumber(text);
  if (!split) return std::nullopt;
  const auto& [v, suffix] = *split;
  if (suffix.empty() || suffix == "b") return v;
  static constexpr struct {
    const char* names[3];
    unsigned shift;
  } kUnits[] = {{{"k", "kb", "kib"}, 10},
                {{"m", "mb", "mib"}, 20},
                {{"g", "gb", "gib"}, 30},
                {{"t", "tb", "tib"}, 40}};
  for (const auto& u : kUnits) {
    for (const char* n : u.names) {
      if (suffix == n) return Scale(v, uint64_t{1} << u.shift);
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> ParseDurationUs(std::string_view text) {
  auto split = SplitNumber(text);
  if (!split) return std::nullopt;
  const auto& [v, suffix] = *split;
  if (suffix.empty() || suffix == "s") return Scale(v, 1000000);
  if (suffix == "ms" || suffix == "msec") return Scale(v, 1000);
  if (suffix == "us" || suffix == "usec") return v;
  if (suffix == "m" || suffix == "min") return Scale(v, 60000000);
  if (suffix == "h") return Scale(v, 3600000000ULL);
  return std::nullopt;
}

std::string FormatBytes(uint64_t bytes) {
  static constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  auto v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kNames)) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0 || v == static_cast<double>(static_cast<uint64_t>(v))) {
    std::snprintf(buf, sizeof(buf), "%.0f%s", v, kNames[u]);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f%s", v, kNames[u]);
  }
  return buf;
}

std::optional<std::vector<unsigned>> ParseCpuList(std::string_view text) {
  constexpr unsigned kMax = 65535;
  std::vector<unsigned> out;
  auto number = [](std::string_view t) -> std::optional<unsigned> {
    unsigned v = 0;
    const char* end = t.data() + t.size();
    auto [p, ec] = std::from_chars(t.data(), end, v);
    if (t.empty() || ec != std::errc() || p != end || v > kMax) {
      return std::nullopt;
    }
    return v;
  };
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{}
                                           : text.substr(comma + 1);
    if (comma != std::string_view::npos && text.empty()) return std::nullopt;
    const size_t dash = item.find('-');
    const std::optional<unsigned> lo = number(item.substr(0, dash));
    const std::optional<unsigned> hi =
        dash == std::string_view::npos ? lo : number(item.substr(dash + 1));
    if (!lo || !hi || *hi < *lo) return std::nullopt;
    for (unsigned c = *lo; c <= *hi; ++c) out.push_back(c);
  }
  if (out.empty()) return std::nullopt;
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string FormatCpuList(const std::vector<unsigned>& cpus) {
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j != i) out += "-" + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

std::string FormatCount(double v) {
  char buf[32];
  if (v >= 10e6) {
    std::snprintf(buf, sizeof(buf), "%.0fM", v / 1e6);
  } else if (v >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.2fM", v / 1e6);
  } else if (v >= 10e3) {
    std::snprintf(buf, sizeof(buf), "%.0fk", v / 1e3);
  } else if (v >= 1e3) {
    std::snprintf(buf, sizeof(buf), "%.2fk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  }
  return buf;
}

}  // namespace aiokit::tool
