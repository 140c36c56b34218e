// Command-line numbers for the small bench programs (cpu_pingpong,
// handoff_floor).

#ifndef AIOKIT_BENCH_PARSE_COUNT_H_
#define AIOKIT_BENCH_PARSE_COUNT_H_

#include <cerrno>
#include <cstdlib>

namespace aiokit::bench {

// A whole decimal number in [0, LONG_MAX], or -1.
inline long ParseCount(const char* s) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < 0) return -1;
  return v;
}

}  // namespace aiokit::bench

#endif  // AIOKIT_BENCH_PARSE_COUNT_H_
