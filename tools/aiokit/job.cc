#include "job.h"

#include <linux/mempolicy.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>

#include "aiokit/engine.h"
#include "aiokit/fault.h"
#include "units.h"

namespace aiokit::tool {
namespace {

// Sets one option from its value, or returns the UsageError that refuses it.
using Setter = std::function<Status(BenchPlan&, JobOptions&, std::string_view,
                                    const std::string& where)>;

enum class Arg { kFlag, kValue };

struct Option {
  std::vector<std::string> names;  // the first is the one --help shows
  Arg arg;
  const char* metavar;
  const char* help;
  Setter set;
};

// "WHERE=VALUE: RULE".
Status Bad(const std::string& where, std::string_view value,
           const std::string& rule) {
  return UsageError(where + "=" + std::string(value) + ": " + rule);
}

// Stores a parsed value in `field`, or returns why it did not parse (and
// leaves `field` alone).
template <typename T>
Status Set(T& field, Result<T> parsed) {
  if (!parsed.ok()) return parsed.status();
  field = std::move(*parsed);
  return {};
}

template <typename T>
Result<T> Integer(std::string_view v, const std::string& where, T lo, T hi) {
  T out{};
  const char* end = v.data() + v.size();
  auto [p, ec] = std::from_chars(v.data(), end, out);
  if (ec != std::errc() || p != end || v.empty()) {
    return Bad(where, v, "not a whole number");
  }
  if (out < lo || out > hi) {
    return Bad(where, v,
               "must be " + std::to_string(lo) + " to " + std::to_string(hi));
  }
  return out;
}

Result<uint64_t> Size(std::string_view v, const std::string& where) {
  std::optional<uint64_t> s = ParseSize(v);
  if (!s) return Bad(where, v, "not a size (examples: 4096, 4k, 1m, 2g)");
  return *s;
}

Result<uint64_t> Duration(std::string_view v, const std::string& where) {
  std::optional<uint64_t> d = ParseDurationUs(v);
  if (!d) return Bad(where, v, "not a duration (examples: 5, 5s, 500ms, 2m)");
  return *d;
}

Result<bool> Flag(std::string_view v, const std::string& where) {
  if (v.empty() || v == "1" || v == "true") return true;
  if (v == "0" || v == "false") return false;
  return Bad(where, v, "a flag takes 1 or 0 (or nothing)");
}

// fio's ioengine names for the engines aiokit has, and aiokit's own.
Result<std::string> EngineName(std::string_view v, const std::string& where) {
  if (v == "libaio") return std::string("linux-aio");
  // fio's psync (pread/pwrite), sync (read/write), pvsync (preadv/pwritev)
  // and pvsync2 (preadv2/pwritev2): one request at a time, inside the
  // submitting call.
  if (v == "psync" || v == "sync" || v == "pvsync" || v == "pvsync2") {
    return std::string("sync");
  }
  // glibc's POSIX AIO runs each request on a user-space thread (aio(7)), as
  // the threads engine does.
  if (v == "posixaio") return std::string("threads");
  if (v == "default" || v == "auto" || v == "linux-aio" || v == "io_uring" ||
      v == "threads") {
    return std::string(v);
  }
  return Bad(
      where, v,
      "unknown engine; expected auto, linux-aio (fio: libaio), io_uring, "
      "threads (fio: posixaio) or sync (fio: sync, psync, pvsync, pvsync2)");
}

// The CPUs of NUMA nodes `v` ("0,2-3" or "all"), from sysfs.
// On failure: a UsageError naming the node this machine does not have.
Result<std::vector<unsigned>> NodeCpus(std::string_view v,
                                       const std::string& where) {
  const std::string root = "/sys/devices/system/node";
  std::vector<unsigned> nodes;
  if (v == "all") {
    std::ifstream online(root + "/online");
    std::string text;
    if (!std::getline(online, text)) {
      return Bad(where, v, "this kernel shows no NUMA nodes (" + root + ")");
    }
    std::optional<std::vector<unsigned>> all = ParseCpuList(text);
    if (!all) return Bad(where, v, "cannot read " + root + "/online");
    nodes = std::move(*all);
  } else {
    std::optional<std::vector<unsigned>> asked = ParseCpuList(v);
    if (!asked) return Bad(where, v, "not a node list (examples: 0, 0-1, all)");
    nodes = std::move(*asked);
  }
  std::vector<unsigned> cpus;
  for (const unsigned n : nodes) {
    std::ifstream list(root + "/node" + std::to_string(n) + "/cpulist");
    std::string text;
    if (!std::getline(list, text)) {
      return Bad(where, v,
                 "this machine has no NUMA node " + std::to_string(n));
    }
    if (text.empty()) continue;  // a node with memory and no CPU
    std::optional<std::vector<unsigned>> got = ParseCpuList(text);
    if (!got)
      return Bad(where, v,
                 "cannot parse node " + std::to_string(n) + "'s cpulist \"" +
                     text + "\"");
    cpus.insert(cpus.end(), got->begin(), got->end());
  }
  if (cpus.empty()) return Bad(where, v, "these nodes have no CPU");
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

// fio's numa_mem_policy MODE[:NODES] into the job: set_mempolicy(2)'s mode
// and nodes that this machine has.
Status SetMemPolicy(JobOptions& j, std::string_view v, const std::string& w) {
  static constexpr std::pair<const char*, int> kModes[] = {
      {"default", MPOL_DEFAULT},
      {"prefer", MPOL_PREFERRED},
      {"bind", MPOL_BIND},
      {"interleave", MPOL_INTERLEAVE},
      {"local", MPOL_LOCAL}};
  const size_t colon = v.find(':');
  const std::string_view mode = v.substr(0, colon);
  int m = -1;
  for (const auto& [name, value] : kModes) {
    if (mode == name) m = value;
  }
  if (m < 0) {
    return Bad(w, v, "expected default, prefer, bind, interleave or local");
  }
  std::vector<unsigned> nodes;
  if (colon != std::string_view::npos) {
    const std::string_view list = v.substr(colon + 1);
    const std::string root = "/sys/devices/system/node";
    std::string text(list);
    if (list == "all") {
      std::ifstream online(root + "/online");
      if (!std::getline(online, text)) {
        return Bad(w, v, "this kernel shows no NUMA nodes (" + root + ")");
      }
    }
    std::optional<std::vector<unsigned>> got = ParseCpuList(text);
    if (!got || got->empty()) {
      return Bad(w, v, "not a node list (examples: 0, 0-1, all)");
    }
    for (const unsigned n : *got) {
      struct stat st;
      const std::string dir = root + "/node" + std::to_string(n);
      if (n >= 1024 || ::stat(dir.c_str(), &st) != 0) {
        return Bad(w, v, "this machine has no NUMA node " + std::to_string(n));
      }
    }
    nodes = std::move(*got);
  }
  const bool needs =
      m == MPOL_PREFERRED || m == MPOL_BIND || m == MPOL_INTERLEAVE;
  if (needs && nodes.empty()) {
    return Bad(w, v, std::string(mode) + " needs :NODES");
  }
  if (!needs && !nodes.empty()) {
    return Bad(w, v, std::string(mode) + " takes no nodes");
  }
  if (m == MPOL_PREFERRED && nodes.size() != 1) {
    return Bad(w, v, "prefer takes one node");
  }
  j.mempolicy_mode = m;
  j.mempolicy_nodes = std::move(nodes);
  j.mempolicy_option = w + "=" + std::string(v);
  return Status();
}

// One direction's bssplit ("4k/10:64k/50:32k/" ) into {size, percent}.
Result<std::vector<std::pair<uint64_t, unsigned>>> ParseOneSplit(
    std::string_view text, std::string_view whole, const std::string& where) {
  std::vector<std::pair<uint64_t, unsigned>> out;
  std::vector<size_t> blank;
  unsigned given = 0;
  while (!text.empty()) {
    const size_t colon = text.find(':');
    const std::string_view item = text.substr(0, colon);
    text = colon == std::string_view::npos ? std::string_view{}
                                           : text.substr(colon + 1);
    const size_t slash = item.find('/');
    std::optional<uint64_t> size = ParseSize(item.substr(0, slash));
    if (!size || *size == 0 || *size > (64ULL << 20)) {
      return Bad(where, whole,
                 "\"" + std::string(item) +
                     "\": a block size of 1 byte to 64MiB, then /PERCENT");
    }
    unsigned pct = 0;
    const std::string_view p =
        slash == std::string_view::npos ? "" : item.substr(slash + 1);
    if (p.empty()) {
      blank.push_back(out.size());
    } else {
      auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), pct);
      if (ec != std::errc() || end != p.data() + p.size() || pct > 100) {
        return Bad(where, whole,
                   "\"" + std::string(item) + "\": a share of 0 to 100");
      }
      given += pct;
    }
    out.emplace_back(*size, pct);
  }
  if (out.empty()) return Bad(where, whole, "no block sizes");
  if (given > 100) {
    return Bad(where, whole,
               "the shares add up to " + std::to_string(given) + ", over 100");
  }
  if (!blank.empty()) {
    // The rest, evenly; what does not divide goes to the first blank.
    const unsigned rest = 100 - given;
    const auto count = static_cast<unsigned>(blank.size());
    for (const size_t b : blank) out[b].second = rest / count;
    out[blank.front()].second += rest % count;
  } else if (given != 100) {
    return Bad(where, whole,
               "the shares add up to " + std::to_string(given) + ", not 100");
  }
  return out;
}

// bssplit: one split for both directions, or "reads,writes".
Status ParseBsSplit(JobOptions& j, std::string_view v, const std::string& w) {
  const size_t comma = v.find(',');
  Result<std::vector<std::pair<uint64_t, unsigned>>> reads =
      ParseOneSplit(v.substr(0, comma), v, w);
  if (!reads.ok()) return reads.status();
  Result<std::vector<std::pair<uint64_t, unsigned>>> writes =
      comma == std::string_view::npos
          ? reads
          : ParseOneSplit(v.substr(comma + 1), v, w);
  if (!writes.ok()) return writes.status();
  uint64_t lo = UINT64_MAX, hi = 0;
  for (const auto* split : {&*reads, &*writes}) {
    for (const auto& entry : *split) {
      lo = std::min(lo, entry.first);
      hi = std::max(hi, entry.first);
    }
  }
  for (const auto* split : {&*reads, &*writes}) {
    for (const auto& entry : *split) {
      if (entry.first % lo != 0) {
        return Bad(w, v,
                   std::to_string(entry.first) +
                       " is not a multiple of the smallest size, " +
                       std::to_string(lo) +
                       " (offsets are drawn in its multiples)");
      }
    }
  }
  j.bssplit_read = std::move(*reads);
  j.bssplit_write = std::move(*writes);
  j.bssplit_text = std::string(v);
  j.bs_min = lo;
  j.bs_max = hi;
  return Status();
}

// rw=KIND[:MODIFIER]: a random kind takes a count of requests, a sequential
// one a size in bytes (negative: backwards).
Status ParseRw(JobOptions& j, std::string_view v, const std::string& w) {
  const size_t colon = v.find(':');
  const std::string_view kind = v.substr(0, colon);
  if (kind != "read" && kind != "write" && kind != "randread" &&
      kind != "randwrite" && kind != "rw" && kind != "randrw" &&
      kind != "readwrite") {
    return Bad(w, v,
               "unknown; expected read, write, randread, randwrite, rw or "
               "randrw (then :N, fio's offset modifier)");
  }
  JobOptions next = j;
  next.rw = kind == "readwrite" ? "rw" : std::string(kind);
  next.rw_modifier.clear();
  next.seq_nr = 1;
  next.seq_add = 0;
  if (colon != std::string_view::npos) {
    const std::string_view mod = v.substr(colon + 1);
    if (next.Random()) {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(mod.data(), mod.data() + mod.size(), n);
      if (ec != std::errc() || end != mod.data() + mod.size() || n == 0) {
        return Bad(w, v,
                   "a random rw's modifier is a count of requests (rw=" +
                       next.rw + ":8: a new random offset every 8)");
      }
      next.seq_nr = n;
    } else {
      const bool back = !mod.empty() && mod.front() == '-';
      std::optional<uint64_t> size = ParseSize(back ? mod.substr(1) : mod);
      if (!size || *size > (uint64_t{1} << 62)) {
        return Bad(w, v,
                   "a sequential rw's modifier is a size added after each "
                   "request (rw=write:4k: 4k holes; rw=read:-8k: backwards)");
      }
      next.seq_add =
          back ? -static_cast<int64_t>(*size) : static_cast<int64_t>(*size);
    }
    next.rw_modifier = std::string(mod);
  }
  j = std::move(next);
  return Status();
}

// One direction of a zoned distribution: PCT/RANGE:... (RANGE a percent of
// the region for zoned, a size for zoned_abs), the shares adding up to 100.
Result<std::vector<JobOptions::DistZone>> ParseDistZones(
    std::string_view text, bool absolute, std::string_view whole,
    const std::string& where) {
  std::vector<JobOptions::DistZone> out;
  unsigned shares = 0;
  uint64_t range = 0;
  while (!text.empty()) {
    const size_t colon = text.find(':');
    const std::string_view item = text.substr(0, colon);
    text = colon == std::string_view::npos ? std::string_view{}
                                           : text.substr(colon + 1);
    const size_t slash = item.find('/');
    JobOptions::DistZone z;
    const std::string_view p = item.substr(0, slash);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), z.pct);
    const std::string_view r = slash == std::string_view::npos
                                   ? std::string_view{}
                                   : item.substr(slash + 1);
    std::optional<uint64_t> size;
    if (absolute) {
      size = ParseSize(r);
    } else {
      uint64_t pct = 0;
      auto [rend, rec] = std::from_chars(r.data(), r.data() + r.size(), pct);
      if (rec == std::errc() && rend == r.data() + r.size() && !r.empty() &&
          pct <= 100) {
        size = pct;
      }
    }
    if (ec != std::errc() || end != p.data() + p.size() || p.empty() ||
        z.pct > 100 || !size || *size == 0) {
      return Bad(where, whole,
                 "\"" + std::string(item) + "\": expected SHARE/" +
                     (absolute ? "SIZE" : "PERCENT") +
                     " (a share of requests, 0 to 100, then the zone's " +
                     (absolute ? "size" : "percent of the region") + ")");
    }
    z.size = *size;
    shares += z.pct;
    range += z.size;
    out.push_back(z);
  }
  if (out.empty()) return Bad(where, whole, "no zones");
  if (shares != 100) {
    return Bad(where, whole,
               "the shares add up to " + std::to_string(shares) + ", not 100");
  }
  if (!absolute && range > 100) {
    return Bad(where, whole,
               "the zones add up to " + std::to_string(range) +
                   "% of the region, over 100");
  }
  return out;
}

// random_distribution=KIND[:VALUE[:CENTRE]] or zoned[_abs]:ZONES[,ZONES].
Status ParseDistribution(JobOptions& j, std::string_view v,
                         const std::string& w) {
  const size_t sep = v.find_first_of(":=");
  const std::string_view kind = v.substr(0, sep);
  const std::string_view rest =
      sep == std::string_view::npos ? std::string_view{} : v.substr(sep + 1);
  JobOptions next = j;
  next.distribution = std::string(kind);
  next.dist_value = 0;
  next.dist_center = -1;
  next.dist_zones_read.clear();
  next.dist_zones_write.clear();
  if (kind == "random") {
    if (!rest.empty()) return Bad(w, v, "random (uniform) takes no value");
  } else if (kind == "zoned" || kind == "zoned_abs") {
    const bool absolute = kind == "zoned_abs";
    const size_t comma = rest.find(',');
    auto reads = ParseDistZones(rest.substr(0, comma), absolute, v, w);
    if (!reads.ok()) return reads.status();
    auto writes = comma == std::string_view::npos
                      ? reads
                      : ParseDistZones(rest.substr(comma + 1), absolute, v, w);
    if (!writes.ok()) return writes.status();
    next.dist_zones_read = std::move(*reads);
    next.dist_zones_write = std::move(*writes);
  } else if (kind == "zipf" || kind == "pareto" || kind == "normal") {
    const size_t colon = rest.find(':');
    const std::string value(rest.substr(0, colon));
    char* end = nullptr;
    errno = 0;
    const double x = std::strtod(value.c_str(), &end);
    if (value.empty() || end != value.c_str() + value.size() || errno != 0 ||
        !std::isfinite(x)) {
      return Bad(w, v,
                 std::string(kind) + " needs a number: " +
                     (kind == "zipf"     ? "zipf:THETA (not 1)"
                      : kind == "pareto" ? "pareto:H (0 to 1)"
                                         : "normal:DEVIATION (percent)") +
                     ", then :CENTRE (0 to 1) if wanted");
    }
    if ((kind == "zipf" && (x <= 0 || x == 1.0)) ||
        (kind == "pareto" && (x <= 0 || x >= 1)) ||
        (kind == "normal" && (x < 0 || x > 100))) {
      return Bad(w, v,
                 kind == "zipf"     ? "zipf's theta must be above 0 and not 1"
                 : kind == "pareto" ? "pareto's h must be between 0 and 1"
                                    : "normal's deviation is a percent, 0 to "
                                      "100");
    }
    next.dist_value = x;
    if (colon != std::string_view::npos) {
      const std::string c(rest.substr(colon + 1));
      const double centre = std::strtod(c.c_str(), &end);
      if (c.empty() || end != c.c_str() + c.size() || !(centre >= 0) ||
          centre > 1) {
        return Bad(w, v, "the centre is a fraction of the region, 0 to 1");
      }
      next.dist_center = centre;
    }
  } else {
    return Bad(w, v,
               "unknown; expected random, zipf:THETA, pareto:H, normal:DEV, "
               "zoned:PCT/PCT:... or zoned_abs:PCT/SIZE:...");
  }
  next.distribution_text = kind == "random" ? "" : std::string(v);
  j = std::move(next);
  return Status();
}

// VALUE[,VALUE]: one for reads and writes, or reads then writes (fio's third,
// for trims, is refused: aiokit issues none).
Result<std::pair<std::string_view, std::string_view>> PerDirection(
    std::string_view v, const std::string& w) {
  const size_t comma = v.find(',');
  if (comma == std::string_view::npos) return std::pair{v, v};
  const std::string_view writes = v.substr(comma + 1);
  if (writes.find(',') != std::string_view::npos) {
    return Bad(w, v,
               "READS,WRITES at most (a third value is fio's for trims, "
               "which aiokit bench does not issue)");
  }
  return std::pair{v.substr(0, comma), writes};
}

// VALUE[,VALUE] of a rate: one for both directions, or reads then writes,
// either blank for none (rate=,500k: writes only). `parse` reads one value.
Status SetRatePair(
    std::array<uint64_t, 2>& field, std::string_view v, const std::string& w,
    const std::function<Result<uint64_t>(std::string_view)>& parse) {
  auto dirs = PerDirection(v, w);
  if (!dirs.ok()) return dirs.status();
  std::array<uint64_t, 2> out{};
  const std::string_view parts[2] = {dirs->first, dirs->second};
  for (int d = 0; d < 2; ++d) {
    if (parts[d].empty()) continue;
    Result<uint64_t> x = parse(parts[d]);
    if (!x.ok()) return x.status();
    out[d] = *x;
  }
  field = out;
  return Status();
}

// VALUE[,VALUE] of whole numbers in [lo, hi]: one for both directions, or
// reads then writes.
Status SetPair(std::array<unsigned, 2>& field, std::string_view v,
               const std::string& w, unsigned lo, unsigned hi) {
  auto dirs = PerDirection(v, w);
  if (!dirs.ok()) return dirs.status();
  Result<unsigned> r = Integer<unsigned>(dirs->first, w, lo, hi);
  if (!r.ok()) return r.status();
  Result<unsigned> wr = Integer<unsigned>(dirs->second, w, lo, hi);
  if (!wr.ok()) return wr.status();
  field = {*r, *wr};
  return Status();
}

// fio's cmdprio_bssplit for one direction: SIZE/PCT[/CLASS/LEVEL]:...
Result<std::vector<CmdprioSplit>> CmdprioSplits(std::string_view v,
                                                const std::string& w) {
  std::vector<CmdprioSplit> out;
  while (!v.empty()) {
    const size_t colon = v.find(':');
    const std::string_view e = v.substr(0, colon);
    v = colon == std::string_view::npos ? std::string_view()
                                        : v.substr(colon + 1);
    std::vector<std::string_view> f;
    for (size_t from = 0;;) {
      const size_t slash = e.find('/', from);
      f.push_back(e.substr(from, slash - from));
      if (slash == std::string_view::npos) break;
      from = slash + 1;
    }
    if (f.size() != 2 && f.size() != 4) {
      return Bad(w, e, "expected SIZE/PERCENT or SIZE/PERCENT/CLASS/LEVEL");
    }
    CmdprioSplit s;
    Result<uint64_t> bs = Size(f[0], w);
    if (!bs.ok()) return bs.status();
    Result<unsigned> pct = Integer<unsigned>(f[1], w, 0, 100);
    if (!pct.ok()) return pct.status();
    s.bs = *bs;
    s.pct = *pct;
    if (f.size() == 4) {
      Result<unsigned> cls = Integer<unsigned>(f[2], w, 1, 3);
      if (!cls.ok()) return cls.status();
      Result<unsigned> level = Integer<unsigned>(f[3], w, 0, 7);
      if (!level.ok()) return level.status();
      s.cls = static_cast<int>(*cls);
      s.level = static_cast<int>(*level);
    }
    out.push_back(s);
  }
  return out;
}

// fio's thinktime values: microseconds without a unit.
Result<uint64_t> DurationUsDefault(std::string_view v,
                                   const std::string& where) {
  if (!v.empty() && std::all_of(v.begin(), v.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0;
      })) {
    return Integer<uint64_t>(v, where, 0, uint64_t{1} << 40);
  }
  std::optional<uint64_t> d = ParseDurationUs(v);
  if (!d) {
    return Bad(where, v,
               "not a duration (examples: 100 for microseconds, 5ms, 1s)");
  }
  return *d;
}

const std::vector<Option>& Table() {
  static const std::vector<Option> table = {
      {{"name"},
       Arg::kValue,
       "NAME",
       "Job name; on the command line, starts "
       "a job of its own",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v.empty()) return Bad(w, v, "a job needs a name");
         j.name = std::string(v);
         return Status();
       }},
      {{"filename"},
       Arg::kValue,
       "PATH",
       "File or block device (default: a temporary file per clone, removed "
       "after the run; or named files with --directory, --filename_format); "
       "a colon in the path is written \\:",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         // fio reads "a:b" as two files; "\:" is a colon in a name.
         std::string path;
         for (size_t i = 0; i < v.size(); ++i) {
           if (v[i] == '\\' && i + 1 < v.size() && v[i + 1] == ':') {
             path += ':';
             ++i;
           } else if (v[i] == ':') {
             return Bad(w, v,
                        "fio's list of files (a:b), which aiokit bench does "
                        "not have: one file per job (write a colon in a "
                        "name as \\:)");
           } else {
             path += v[i];
           }
         }
         j.filename = std::move(path);
         return Status();
       }},
      {{"directory"},
       Arg::kValue,
       "DIR[:DIR...]",
       "Named files, one per clone, in this directory (several: the clones "
       "spread over them), kept after the run (fio's default place is the "
       "current directory; aiokit's, without this, a temporary file)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v.empty() || v.front() == ':' || v.back() == ':' ||
             v.find("::") != std::string_view::npos) {
           return Bad(w, v, "expected DIR or DIR:DIR...");
         }
         j.directory = std::string(v);
         return Status();
       }},
      {{"filename_format"},
       Arg::kValue,
       "FORMAT",
       "Names of the named files: $jobname, $jobnum (the clone), $filenum "
       "(default $jobname.$jobnum.$filenum); directories in it are created",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         for (size_t at = v.find('$'); at != std::string_view::npos;
              at = v.find('$', at + 1)) {
           const std::string_view rest = v.substr(at);
           if (rest.rfind("$jobname", 0) != 0 &&
               rest.rfind("$jobnum", 0) != 0 &&
               rest.rfind("$filenum", 0) != 0) {
             return Bad(w, v,
                        "knows $jobname, $jobnum and $filenum (fio's "
                        "$clientuid is for its client/server mode)");
           }
         }
         if (v.empty()) return Bad(w, v, "an empty name");
         j.filename_format = std::string(v);
         return Status();
       }},
      {{"filesize"},
       Arg::kValue,
       "SIZE[-SIZE]",
       "Each file's size (a range: drawn per file), in place of --size; a "
       "clone does one pass of its file (as fio 3.33 does; its HOWTO says "
       "--size would become the default --io_size)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         const size_t dash = v.find('-');
         Result<uint64_t> lo = Size(v.substr(0, dash), w);
         if (!lo.ok()) return lo.status();
         Result<uint64_t> hi =
             dash == std::string_view::npos ? lo : Size(v.substr(dash + 1), w);
         if (!hi.ok()) return hi.status();
         if (*lo == 0 || *lo > *hi) {
           return Bad(w, v, "at least 1 byte, and MIN at most MAX");
         }
         j.filesize_min = *lo;
         j.filesize_max = *hi;
         return Status();
       }},
      {{"nrfiles"},
       Arg::kValue,
       "N",
       "Files per clone (default 1): --size is divided among them and "
       "--file_service_type says how requests move between them",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.nrfiles, Integer<unsigned>(v, w, 1, 4096));
       }},
      {{"file_service_type"},
       Arg::kValue,
       "TYPE",
       "How requests move between a clone's --nrfiles files: roundrobin[:N] "
       "(N blocks on a file, then the next; default), random[:N] (the same "
       "here), sequential (each file whole, in turn); fio's zipf, pareto, "
       "normal, gauss only with one file",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         const std::string_view type = v.substr(0, v.find(':'));
         if (type != "random" && type != "roundrobin" && type != "sequential" &&
             type != "zipf" && type != "pareto" && type != "normal" &&
             type != "gauss") {
           return Bad(w, v,
                      "expected random, roundrobin, sequential, zipf, "
                      "pareto, normal or gauss (then :N)");
         }
         j.file_service_type = std::string(v);
         return Status();
       }},
      {{"unlink"},
       Arg::kValue,
       "0|1",
       "Remove the job's regular files after the run (default 0: kept, as "
       "fio)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.unlink, Flag(v, w));
       }},
      {{"create_on_open"},
       Arg::kValue,
       "0|1",
       "Accepted: aiokit bench creates and opens every file before the "
       "clones start, outside the measured time, either way",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.create_on_open, Flag(v, w));
       }},
      {{"fallocate"},
       Arg::kValue,
       "MODE",
       "How a file this run creates is preallocated: native (default, as "
       "fio: fallocate(2), nothing where unsupported), posix "
       "(posix_fallocate), keep (FALLOC_FL_KEEP_SIZE), truncate "
       "(ftruncate), none; 0 and 1 are none and posix",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         std::string mode(v);
         if (mode == "0") mode = "none";
         if (mode == "1") mode = "posix";
         if (mode != "none" && mode != "native" && mode != "posix" &&
             mode != "keep" && mode != "truncate") {
           return Bad(w, v,
                      "expected none, native, posix, keep, truncate, 0 or 1");
         }
         j.fallocate = std::move(mode);
         return Status();
       }},
      {{"size"},
       Arg::kValue,
       "SIZE",
       "Bytes of the file the job uses (default 128m, or the size of an "
       "existing file or device)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<uint64_t> size = Size(v, w);
         if (!size.ok()) return size.status();
         if (*size == 0) return Bad(w, v, "must be at least one block");
         j.size = *size;
         j.size_set = true;
         return Status();
       }},
      {{"offset"},
       Arg::kValue,
       "SIZE",
       "Where in the file the job's region "
       "starts (default 0)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.offset, Size(v, w));
       }},
      {{"rw", "readwrite"},
       Arg::kValue,
       "RW[:N]",
       "read, write, randread (default), randwrite, rw or randrw; :N is "
       "fio's offset modifier (random: a new offset every N requests; "
       "sequential: N bytes added after each, negative for backwards)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return ParseRw(j, v, w);
       }},
      {{"rw_sequencer"},
       Arg::kValue,
       "sequential|identical",
       "Between a random rw's new offsets (rw=randread:N): the next block "
       "(sequential, the default) or the same offset again (identical)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v != "sequential" && v != "identical") {
           return Bad(w, v, "expected sequential or identical");
         }
         j.seq_identical = v == "identical";
         return Status();
       }},
      {{"random_distribution"},
       Arg::kValue,
       "DIST",
       "Random offsets: random (uniform, default), zipf:THETA[:CENTRE], "
       "pareto:H[:CENTRE], normal:DEV%[:CENTRE], zoned:PCT/RANGE%:... or "
       "zoned_abs:PCT/SIZE:... (after a comma, the writes' zones); all but "
       "random turn the random map off",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return ParseDistribution(j, v, w);
       }},
      {{"percentage_random"},
       Arg::kValue,
       "PCT[,PCT]",
       "Share of a random job's requests that take a random offset, the rest "
       "continuing in order (default 100; after a comma, the writes')",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         auto dirs = PerDirection(v, w);
         if (!dirs.ok()) return dirs.status();
         Result<unsigned> r = Integer<unsigned>(dirs->first, w, 0, 100);
         if (!r.ok()) return r.status();
         Result<unsigned> wr = Integer<unsigned>(dirs->second, w, 0, 100);
         if (!wr.ok()) return wr.status();
         j.percentage_random_read = *r;
         j.percentage_random_write = *wr;
         return Status();
       }},
      {{"blockalign", "ba"},
       Arg::kValue,
       "SIZE[,SIZE]",
       "Random offsets are multiples of this (default: the block size); "
       "turns the random map off (after a comma, the writes')",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         auto dirs = PerDirection(v, w);
         if (!dirs.ok()) return dirs.status();
         Result<uint64_t> r = Size(dirs->first, w);
         if (!r.ok()) return r.status();
         Result<uint64_t> wr = Size(dirs->second, w);
         if (!wr.ok()) return wr.status();
         if (*r == 0 || *wr == 0) return Bad(w, v, "at least 1 byte");
         j.blockalign_read = *r;
         j.blockalign_write = *wr;
         return Status();
       }},
      {{"rate"},
       Arg::kValue,
       "BYTES[,BYTES]",
       "Cap each clone's bandwidth in bytes per second (1m: 1 MiB/s); after "
       "a comma, the writes' (rate=,500k: writes only)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetRatePair(j.rate, v, w,
                            [&](std::string_view x) { return Size(x, w); });
       }},
      {{"rate_iops"},
       Arg::kValue,
       "N[,N]",
       "Cap each clone's requests per second (of the smallest block size, "
       "as fio counts them); after a comma, the writes'",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetRatePair(j.rate_iops, v, w, [&](std::string_view x) {
           return Integer<uint64_t>(x, w, 0, uint64_t{1} << 40);
         });
       }},
      {{"rate_min"},
       Arg::kValue,
       "BYTES[,BYTES]",
       "The job fails when a clone moves less than this per second, "
       "averaged over --rate_cycle",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetRatePair(j.rate_min, v, w,
                            [&](std::string_view x) { return Size(x, w); });
       }},
      {{"rate_iops_min"},
       Arg::kValue,
       "N[,N]",
       "The job fails when a clone completes fewer requests per second, "
       "averaged over --rate_cycle",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetRatePair(j.rate_iops_min, v, w, [&](std::string_view x) {
           return Integer<uint64_t>(x, w, 0, uint64_t{1} << 40);
         });
       }},
      {{"rate_cycle"},
       Arg::kValue,
       "MS",
       "The window of --rate_min and --rate_iops_min in milliseconds "
       "(default 1000)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.rate_cycle_ms,
                    Integer<uint64_t>(v, w, 1, uint64_t{1} << 32));
       }},
      {{"rate_process"},
       Arg::kValue,
       "linear|poisson",
       "How --rate spaces requests: evenly (linear, default) or as a Poisson "
       "process of the same mean (exponential gaps)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v != "linear" && v != "poisson") {
           return Bad(w, v, "expected linear or poisson");
         }
         j.rate_poisson = v == "poisson";
         return Status();
       }},
      {{"io_submit_mode"},
       Arg::kValue,
       "inline|offload",
       "inline (default, as fio): before waiting for --rate or --thinktime, "
       "the requests in flight complete; offload: the schedule goes on "
       "beside them (fixed-rate submission)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v != "inline" && v != "offload") {
           return Bad(w, v, "expected inline or offload");
         }
         j.submit_offload = v == "offload";
         return Status();
       }},
      {{"thinktime"},
       Arg::kValue,
       "TIME",
       "Pause this long after each --thinktime_blocks requests (a bare "
       "number is microseconds, as fio)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.thinktime_us, DurationUsDefault(v, w));
       }},
      {{"thinktime_spin"},
       Arg::kValue,
       "TIME",
       "Of each --thinktime, this much busy on the CPU, the rest waiting",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.thinktime_spin_us, DurationUsDefault(v, w));
       }},
      {{"thinktime_blocks"},
       Arg::kValue,
       "N",
       "Think after this many requests (default 1); at most this many are "
       "out before a think",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.thinktime_blocks,
                    Integer<uint64_t>(v, w, 1, uint64_t{1} << 32));
       }},
      {{"thinktime_blocks_type"},
       Arg::kValue,
       "complete|issue",
       "Count --thinktime_blocks at completion (default) or at issue",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v != "complete" && v != "issue") {
           return Bad(w, v, "expected complete or issue");
         }
         j.thinktime_on_issue = v == "issue";
         return Status();
       }},
      {{"thinktime_iotime"},
       Arg::kValue,
       "TIME",
       "Think also after this long of I/O (a bare number is seconds, as fio)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.thinktime_iotime_us, Duration(v, w));
       }},
      {{"prio"},
       Arg::kValue,
       "0-7",
       "The clone's I/O priority level, 0 highest (ioprio_set; class "
       "best-effort unless --prioclass)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.prio, Integer<int>(v, w, 0, 7));
       }},
      {{"prioclass"},
       Arg::kValue,
       "1-3",
       "The clone's I/O priority class: 1 realtime, 2 best-effort, 3 idle "
       "(ionice(1))",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.prioclass, Integer<int>(v, w, 1, 3));
       }},
      {{"cmdprio_percentage"},
       Arg::kValue,
       "PCT[,PCT]",
       "This share of requests carry an I/O priority of their own "
       "(--cmdprio_class, --cmdprio; --api=engine); after a comma, the "
       "writes'",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetPair(j.cmdprio_pct, v, w, 0, 100);
       }},
      {{"cmdprio_class"},
       Arg::kValue,
       "1-3[,1-3]",
       "The class of --cmdprio_percentage's requests (default 1, realtime)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetPair(j.cmdprio_class, v, w, 1, 3);
       }},
      {{"cmdprio"},
       Arg::kValue,
       "0-7[,0-7]",
       "The level of --cmdprio_percentage's requests (default 0, highest)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetPair(j.cmdprio, v, w, 0, 7);
       }},
      {{"cmdprio_bssplit"},
       Arg::kValue,
       "SIZE/PCT[/CLASS/LEVEL]:...[,...]",
       "Per block size, the share of requests with a priority of their own "
       "(the class and level of the entry, else --cmdprio_class and "
       "--cmdprio); after a comma, the writes'; not with "
       "--cmdprio_percentage",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         auto dirs = PerDirection(v, w);
         if (!dirs.ok()) return dirs.status();
         auto r = CmdprioSplits(dirs->first, w);
         if (!r.ok()) return r.status();
         auto wr = CmdprioSplits(dirs->second, w);
         if (!wr.ok()) return wr.status();
         j.cmdprio_bssplit = {std::move(*r), std::move(*wr)};
         return Status();
       }},
      {{"bs_unaligned", "blocksize_unaligned"},
       Arg::kFlag,
       "",
       "With --bsrange, any size in the range, not only multiples of MIN "
       "(needs --direct=0)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.bs_unaligned, Flag(v, w));
       }},
      {{"rate_ignore_thinktime"},
       Arg::kFlag,
       "",
       "After a --thinktime, go on at the rate instead of catching up on the "
       "schedule (what the think missed is skipped)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.rate_ignore_thinktime, Flag(v, w));
       }},
      {{"random_generator"},
       Arg::kValue,
       "tausworthe|lfsr|tausworthe64",
       "Accepted for fio's job files: aiokit draws with one generator, and "
       "its random map gives each block once per pass as lfsr does",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v != "tausworthe" && v != "lfsr" && v != "tausworthe64") {
           return Bad(w, v, "expected tausworthe, lfsr or tausworthe64");
         }
         j.random_generator = std::string(v);
         return Status();
       }},
      {{"zonemode"},
       Arg::kValue,
       "none|strided",
       "strided: --zonesize bytes in each zone of --zonerange bytes, then "
       "the next zone (--zoneskip further); zbd needs a zoned block device",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v == "zbd") {
           return Bad(w, v,
                      "fio's mode for zoned block devices (sequential-write "
                      "zones); aiokit bench does not have it");
         }
         if (v != "none" && v != "strided") {
           return Bad(w, v, "expected none or strided");
         }
         j.zone_strided = v == "strided";
         return Status();
       }},
      {{"zonesize"},
       Arg::kValue,
       "SIZE",
       "zonemode=strided: bytes done in a zone before the next",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.zonesize, Size(v, w));
       }},
      {{"zonerange"},
       Arg::kValue,
       "SIZE",
       "zonemode=strided: the size of a zone (default: --zonesize)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.zonerange, Size(v, w));
       }},
      {{"zoneskip"},
       Arg::kValue,
       "SIZE",
       "zonemode=strided: bytes skipped after a zone's end",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.zoneskip, Size(v, w));
       }},
      {{"rwmixread"},
       Arg::kValue,
       "PCT",
       "Percent of reads in rw and randrw (default 50)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.rwmixread, Integer<unsigned>(v, w, 0, 100));
       }},
      {{"rwmixwrite"},
       Arg::kValue,
       "PCT",
       "Percent of writes in rw and randrw (100 - rwmixread)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<unsigned> pct = Integer<unsigned>(v, w, 0, 100);
         if (!pct.ok()) return pct.status();
         j.rwmixread = 100 - *pct;
         return Status();
       }},
      {{"bs", "blocksize"},
       Arg::kValue,
       "SIZE",
       "Block size (default 4k)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<uint64_t> bs = Size(v, w);
         if (!bs.ok()) return bs.status();
         if (*bs == 0) {
           return Bad(w, v, "the block size must be at least 1 byte");
         }
         if (*bs > (64ULL << 20)) return Bad(w, v, "at most 64MiB per request");
         j.bs = *bs;
         return Status();
       }},
      {{"bsrange", "blocksize_range"},
       Arg::kValue,
       "MIN-MAX",
       "Block sizes drawn at random from MIN to MAX, in multiples of MIN",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         const size_t dash = v.find('-');
         if (dash == std::string_view::npos) {
           return Bad(w, v, "expected MIN-MAX");
         }
         const Result<uint64_t> lo = Size(v.substr(0, dash), w);
         if (!lo.ok()) return lo.status();
         const Result<uint64_t> hi = Size(v.substr(dash + 1), w);
         if (!hi.ok()) return hi.status();
         if (*lo == 0 || *lo > *hi) {
           return Bad(w, v, "MIN must be at least 1 byte and at most MAX");
         }
         if (*hi > (64ULL << 20)) return Bad(w, v, "at most 64MiB per request");
         j.bs_min = *lo;
         j.bs_max = *hi;
         j.bssplit_read.clear();  // the last of bsrange and bssplit counts
         j.bssplit_write.clear();
         j.bssplit_text.clear();
         return Status();
       }},
      {{"bssplit"},
       Arg::kValue,
       "BS/PCT:...[,BS/PCT:...]",
       "Block sizes by share of requests (4k/10:64k/50:32k/40; a blank share "
       "takes an even part of the rest; after a comma, the writes' split); "
       "each size a multiple of the smallest",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return ParseBsSplit(j, v, w);
       }},
      {{"iodepth"},
       Arg::kValue,
       "N",
       "Requests kept in flight (default 32; fio: 1)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.iodepth, Integer<unsigned>(v, w, 1, 65536));
       }},
      {{"iodepth_batch_submit", "iodepth_batch"},
       Arg::kValue,
       "N",
       "Requests handed to the engine per submission call (0: iodepth; "
       "default: a quarter of iodepth, at least 1; fio's default is 1)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Status bad =
             Set(j.iodepth_batch_submit, Integer<unsigned>(v, w, 0, 65536));
         if (bad.ok()) j.iodepth_batch_submit_set = true;
         return bad;
       }},
      {{"iodepth_batch_complete_min", "iodepth_batch_complete"},
       Arg::kValue,
       "N",
       "Completions each reap waits for (default 1; 0: do not wait)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.iodepth_batch_complete_min,
                    Integer<unsigned>(v, w, 0, 65536));
       }},
      {{"iodepth_batch_complete_max"},
       Arg::kValue,
       "N",
       "Completions each reap takes at most (default: iodepth)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.iodepth_batch_complete_max,
                    Integer<unsigned>(v, w, 0, 65536));
       }},
      {{"numjobs"},
       Arg::kValue,
       "N",
       "Clones of the job, each a thread with its own engine (default 1)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.numjobs, Integer<unsigned>(v, w, 1, 256));
       }},
      {{"runtime", "timeout"},
       Arg::kValue,
       "TIME",
       "Stop after this long (default: when --size is done)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.runtime_us, Duration(v, w));
       }},
      {{"time_based"},
       Arg::kFlag,
       "",
       "Run for --runtime even when --size is done",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.time_based, Flag(v, w));
       }},
      {{"ramp_time"},
       Arg::kValue,
       "TIME",
       "Run this long before measuring (not counted in --runtime)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.ramp_time_us, Duration(v, w));
       }},
      {{"direct"},
       Arg::kValue,
       "0|1",
       "1: O_DIRECT (default; fio: 0)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.direct, Integer<int>(v, w, 0, 1));
       }},
      {{"buffered"},
       Arg::kValue,
       "0|1",
       "The opposite of --direct",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<int> direct = Integer<int>(v, w, 0, 1);
         if (!direct.ok()) return direct.status();
         j.direct = 1 - *direct;
         return Status();
       }},
      {{"fsync"},
       Arg::kValue,
       "N",
       "An fsync after every N writes (default 0: never)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.fsync, Integer<unsigned>(v, w, 0, 1U << 30));
       }},
      {{"invalidate"},
       Arg::kValue,
       "0|1",
       "Drop the file's cached pages before the job (default 1)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.invalidate, Integer<int>(v, w, 0, 1));
       }},
      {{"ioengine", "engine"},
       Arg::kValue,
       "ENGINE",
       "auto, linux-aio (or fio's libaio), io_uring, threads or sync (fio's "
       "psync: the I/O inside Submit) (default: $AIOKIT_ENGINE, else auto)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.engine, EngineName(v, w));
       }},
      {{"verify"},
       Arg::kValue,
       "TYPE",
       "Write blocks that carry their offset and a checksum, then read them "
       "back and check (read jobs check what an earlier verify run wrote): "
       "xxh3 (aiokit's layout, with a generation per block) or fio's md5, "
       "crc64, crc32c, crc32c-intel, sha256, xxhash, meta, pattern (fio's "
       "layouts byte for byte: files verify with either tool)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         j.verify_set = true;
         return ParseVerifyName(v, w, &j.verify);
       }},
      {{"verify_pattern"},
       Arg::kValue,
       "PATTERN",
       "Fill verify blocks with this pattern (fio's syntax: 0xhex, decimal, "
       "\"string\", one after another) and check it; alone, it means fio's "
       "pattern with a header",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (Status s = Set(j.verify.pattern, ParsePattern(v, w)); !s.ok()) {
           return s;
         }
         if (!j.verify_set) j.verify.UsePatternWithHeader();
         return Status();
       }},
      {{"verify_interval"},
       Arg::kValue,
       "SIZE",
       "One fio verify header per this many bytes of a block (default: the "
       "block)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<uint64_t> n = Size(v, w);
         if (!n.ok()) return n.status();
         if (*n == 0 || *n > (uint64_t{1} << 30)) {
           return Bad(w, v, "expected 1 byte to 1 GiB");
         }
         j.verify.interval = static_cast<uint32_t>(*n);
         return Status();
       }},
      {{"do_verify"},
       Arg::kFlag,
       "",
       "With --verify, read back and check after the writes (default 1)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.do_verify, Flag(v, w));
       }},
      {{"verify_only"},
       Arg::kFlag,
       "",
       "Write nothing: read and check every block the job's writes cover, as "
       "an earlier run (of aiokit or fio) wrote them",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.verify_only, Flag(v, w));
       }},
      {{"verify_fatal"},
       Arg::kFlag,
       "",
       "Stop checking at the first block that fails",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.verify_fatal, Flag(v, w));
       }},
      {{"continue_on_error"},
       Arg::kValue,
       "KIND",
       "Count failed requests of this kind and go on instead of stopping: "
       "none, read, write (fsyncs too), io (both), verify (verify failures: "
       "always counted, only --verify_fatal stops) or all (fio's option)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v == "none" || v == "0" || v == "verify") {
           j.continue_on_error = 0;
         } else if (v == "read") {
           j.continue_on_error = kContinueRead;
         } else if (v == "write") {
           j.continue_on_error = kContinueWrite;
         } else if (v == "io" || v == "all" || v == "1") {
           j.continue_on_error = kContinueRead | kContinueWrite;
         } else {
           return Bad(w, v, "none, read, write, io, verify or all");
         }
         return Status();
       }},
      {{"verify_dump"},
       Arg::kFlag,
       "",
       "Write each failing block to FILE.OFFSET.received in the working "
       "directory (and FILE.OFFSET.expected when this run wrote it)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.verify_dump, Flag(v, w));
       }},
      {{"verify_backlog"},
       Arg::kValue,
       "N",
       "Read back and check the written blocks after every N writes, while "
       "the job runs (default 0: at the end)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.verify_backlog,
                    Integer<uint64_t>(v, w, 0, uint64_t{1} << 32));
       }},
      {{"experimental_verify"},
       Arg::kFlag,
       "",
       "Accepted: fio's way of finding what to read back; aiokit tracks "
       "every written block either way",
       [](BenchPlan&, JobOptions&, std::string_view v, const std::string& w) {
         return Flag(v, w).status();
       }},
      {{"buffer_pattern"},
       Arg::kValue,
       "PATTERN",
       "Fill write buffers with this pattern (fio's syntax, as "
       "--verify_pattern) instead of random bytes",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.buffer_pattern, ParsePattern(v, w));
       }},
      {{"inject"},
       Arg::kValue,
       "SPEC",
       "Inject faults through a wrapper around the engine, e.g. "
       "eagain=0.01,partial=0.05,short=0.01,eio=0.001,enospc=0.001,"
       "delay=0.01:200us,reorder=0.01:1ms,stall=0.001:2ms,seed=N (each a "
       "probability in [0, 1)); errors are then counted, not fatal, and the "
       "run checks that every request completed exactly once",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<FaultSpec> spec = ParseFaultSpec(v);
         if (!spec.ok()) return Bad(w, v, spec.status().context());
         j.inject = std::string(v);
         return Status();
       }},
      {{"thread"},
       Arg::kFlag,
       "",
       "Accepted for fio job files: every aiokit job is a thread",
       [](BenchPlan&, JobOptions&, std::string_view v, const std::string& w) {
         return Flag(v, w).status();
       }},
      {{"group_reporting"},
       Arg::kFlag,
       "",
       "Report the clones of a job (--numjobs) as one",
       [](BenchPlan& p, JobOptions&, std::string_view v, const std::string& w) {
         return Set(p.group_reporting, Flag(v, w));
       }},
      {{"offset_increment"},
       Arg::kValue,
       "SIZE",
       "Clone c's region starts at --offset + c x this (fio's thread number)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.offset_increment, Size(v, w));
       }},
      {{"io_size", "io_limit"},
       Arg::kValue,
       "SIZE",
       "Bytes each clone moves (default: its region's size; more wraps "
       "around the region)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<uint64_t> n = Size(v, w);
         if (n.ok() && *n == 0) return Bad(w, v, "must be more than 0");
         return Set(j.io_size, std::move(n));
       }},
      {{"loops"},
       Arg::kValue,
       "N",
       "Do the job's I/O (--size or --io_size) N times (default 1)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.loops, Integer<unsigned>(v, w, 1, 1U << 30));
       }},
      {{"number_ios"},
       Arg::kValue,
       "N",
       "Each clone stops after N requests, if nothing ended it before",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.number_ios,
                    Integer<uint64_t>(v, w, 0, uint64_t{1} << 62));
       }},
      {{"startdelay"},
       Arg::kValue,
       "TIME",
       "Each clone starts this long after the run (its runtime and ramp "
       "count from then)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.startdelay_us, Duration(v, w));
       }},
      {{"norandommap"},
       Arg::kFlag,
       "",
       "Random offsets drawn uniformly, a block possibly again before every "
       "block was done (default: each block once per pass, fio's random map)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.norandommap, Flag(v, w));
       }},
      {{"randrepeat"},
       Arg::kValue,
       "0|1",
       "1 (default, as fio): the same random sequence every run; 0: a new "
       "one each run",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.randrepeat, Flag(v, w));
       }},
      {{"randseed"},
       Arg::kValue,
       "N",
       "Seed of the random sequence (offsets, read/write mix, data)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<uint64_t> n =
             Integer<uint64_t>(v, w, 0, std::numeric_limits<uint64_t>::max());
         if (!n.ok()) return n.status();
         j.randseed = *n;
         j.randseed_set = true;
         return Status();
       }},
      {{"cpus_allowed"},
       Arg::kValue,
       "LIST",
       "Run the job's clones (and their engines' threads) on these CPUs: "
       "0,5,8-15",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         std::optional<std::vector<unsigned>> cpus = ParseCpuList(v);
         if (!cpus) return Bad(w, v, "not a CPU list (examples: 0, 0,5, 8-15)");
         j.cpus = std::move(*cpus);
         j.cpus_option = w + "=" + std::string(v);
         return Status();
       }},
      {{"cpumask"},
       Arg::kValue,
       "MASK",
       "cpus_allowed as a bit mask: bit c allows CPU c (34 or 0x22: CPUs 1 "
       "and 5)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         const bool hex = v.size() > 2 && v[0] == '0' && (v[1] | 0x20) == 'x';
         uint64_t mask = 0;
         const std::string_view digits = hex ? v.substr(2) : v;
         const char* end = digits.data() + digits.size();
         auto [p, ec] =
             std::from_chars(digits.data(), end, mask, hex ? 16 : 10);
         if (digits.empty() || ec != std::errc() || p != end || mask == 0) {
           return Bad(w, v, "not a CPU mask (a number with a bit per CPU)");
         }
         j.cpus.clear();
         for (unsigned c = 0; c < 64; ++c) {
           if ((mask >> c) & 1) j.cpus.push_back(c);
         }
         j.cpus_option = w + "=" + std::string(v);
         return Status();
       }},
      {{"numa_cpu_nodes"},
       Arg::kValue,
       "LIST|all",
       "cpus_allowed as the CPUs of these NUMA nodes "
       "(/sys/devices/system/node)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<std::vector<unsigned>> cpus = NodeCpus(v, w);
         if (!cpus.ok()) return cpus.status();
         j.cpus = std::move(*cpus);
         j.cpus_option = w + "=" + std::string(v);
         return Status();
       }},
      {{"numa_mem_policy"},
       Arg::kValue,
       "MODE[:NODES]",
       "The clone's NUMA memory policy (set_mempolicy): default, local, "
       "prefer:NODE, bind:NODES or interleave:NODES (a list or all); its "
       "buffers are allocated under it",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return SetMemPolicy(j, v, w);
       }},
      {{"cpus_allowed_policy"},
       Arg::kValue,
       "shared|split",
       "shared (default): every clone on all the CPUs; split: clone c on the "
       "c-th CPU alone, round robin",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v != "shared" && v != "split") {
           return Bad(w, v, "expected shared or split");
         }
         j.cpus_split = v == "split";
         return Status();
       }},
      {{"stonewall", "wait_for_previous"},
       Arg::kFlag,
       "",
       "Start this job when every job before it has ended (a new group, "
       "reported on its own)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.stonewall, Flag(v, w));
       }},
      {{"wait_for"},
       Arg::kValue,
       "NAME",
       "Start this job when every clone of job NAME (defined before it, its "
       "name unique) has ended; it runs in the same group",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v.empty()) return Bad(w, v, "needs a job name");
         j.wait_for = std::string(v);
         return Status();
       }},
      {{"exitall"},
       Arg::kFlag,
       "",
       "When this job ends, every job of its group stops (what they did so "
       "far is reported)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.exitall, Flag(v, w));
       }},
      {{"new_group"},
       Arg::kFlag,
       "",
       "Start a new reporting group (groupid) with this job; it runs beside "
       "the jobs before it",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.new_group, Flag(v, w));
       }},
      {{"description"},
       Arg::kValue,
       "TEXT",
       "Free text about the job, kept in the JSON job options",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string&) {
         j.description = std::string(v);
         return Status();
       }},
      {{"per_job_logs"},
       Arg::kFlag,
       "",
       "Logs carry the job number in their names (default 1; 0: the clones "
       "of a job share one file)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.per_job_logs, Flag(v, w));
       }},
      {{"write_lat_log"},
       Arg::kFlag,
       "",
       "=PREFIX: latency logs PREFIX_slat.N.log, _clat, _lat in fio's format "
       "(no PREFIX: the job's name; slat only on --api=engine|device)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string&) {
         j.lat_log = std::string(v);
         j.lat_log_set = true;
         return Status();
       }},
      {{"write_bw_log"},
       Arg::kFlag,
       "",
       "=PREFIX: a bandwidth log PREFIX_bw.N.log (KiB/s), fio's format",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string&) {
         j.bw_log = std::string(v);
         j.bw_log_set = true;
         return Status();
       }},
      {{"write_iops_log"},
       Arg::kFlag,
       "",
       "=PREFIX: an IOPS log PREFIX_iops.N.log, fio's format",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string&) {
         j.iops_log = std::string(v);
         j.iops_log_set = true;
         return Status();
       }},
      {{"steadystate", "ss"},
       Arg::kValue,
       "METRIC:LIMIT",
       "End the job when its last --ss_dur seconds are steady: iops or bw "
       "(every second's value within LIMIT of the mean), iops_slope or "
       "bw_slope (the least squares slope under LIMIT); LIMIT a number (bw "
       "in B/s) or a percentage of the mean",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         const size_t colon = v.find(':');
         const std::string_view metric = v.substr(0, colon);
         if (metric != "iops" && metric != "iops_slope" && metric != "bw" &&
             metric != "bw_slope") {
           return Bad(w, v,
                      "expected iops, iops_slope, bw or bw_slope, then "
                      ":LIMIT");
         }
         if (colon == std::string_view::npos) {
           return Bad(w, v, "needs :LIMIT (e.g. iops:2%)");
         }
         std::string limit(v.substr(colon + 1));
         const bool pct = !limit.empty() && limit.back() == '%';
         if (pct) limit.pop_back();
         char* end = nullptr;
         const double x = std::strtod(limit.c_str(), &end);
         if (limit.empty() || end != limit.c_str() + limit.size() ||
             !(x >= 0) || x > 1e18) {
           return Bad(w, v, "the limit is not a non-negative number");
         }
         j.ss_metric = std::string(metric);
         j.ss_limit = x;
         j.ss_pct = pct;
         return Status();
       }},
      {{"steadystate_duration", "ss_dur"},
       Arg::kValue,
       "TIME",
       "The window --steadystate judges, in whole seconds (no unit: "
       "seconds)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         Result<uint64_t> d = Duration(v, w);
         if (!d.ok()) return d.status();
         if (*d % 1'000'000 != 0 || *d > 3600ULL * 1'000'000) {
           return Bad(w, v, "expected whole seconds (one sample a second)");
         }
         j.ss_dur_us = *d;
         return Status();
       }},
      {{"steadystate_ramp_time", "ss_ramp"},
       Arg::kValue,
       "TIME",
       "Wait this long after the job's ramp before --steadystate samples",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.ss_ramp_us, Duration(v, w));
       }},
      {{"write_hist_log"},
       Arg::kFlag,
       "",
       "=PREFIX: completion latency histograms PREFIX_clat_hist.N.log every "
       "--log_hist_msec, in fio's format and buckets",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string&) {
         j.hist_log = std::string(v);
         j.hist_log_set = true;
         return Status();
       }},
      {{"log_hist_msec"},
       Arg::kValue,
       "MS",
       "The period of --write_hist_log's rows (one per direction)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.log_hist_msec,
                    Integer<uint64_t>(v, w, 0, uint64_t{1} << 32));
       }},
      {{"log_hist_coarseness"},
       Arg::kValue,
       "0-6",
       "Each step halves --write_hist_log's columns (adjacent buckets summed)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.log_hist_coarseness, Integer<unsigned>(v, w, 0, 6));
       }},
      {{"log_avg_msec"},
       Arg::kValue,
       "MS",
       "Logs average over windows of this many ms (default 0: a row per "
       "request)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.log_avg_msec,
                    Integer<uint64_t>(v, w, 0, uint64_t{1} << 32));
       }},
      {{"log_max_value"},
       Arg::kFlag,
       "",
       "With --log_avg_msec, latency logs keep each window's maximum, not "
       "its average",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.log_max_value, Flag(v, w));
       }},
      {{"log_offset"},
       Arg::kFlag,
       "",
       "Logs carry each request's offset (a column before the priority)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.log_offset, Flag(v, w));
       }},
      {{"userspace_reap"},
       Arg::kFlag,
       "",
       "linux-aio: reap completions from the ring in user space, which aiokit "
       "always does (0 is refused)",
       [](BenchPlan&, JobOptions&, std::string_view v, const std::string& w) {
         Result<bool> on = Flag(v, w);
         if (!on.ok()) return on.status();
         if (!*on) {
           return Bad(w, v,
                      "aiokit's linux-aio engine always reaps in user space "
                      "(io_getevents only to wait)");
         }
         return Status();
       }},
      {{"spin_us"},
       Arg::kValue,
       "US",
       "aiokit: watch the completion ring up to this many microseconds "
       "before sleeping (0: never; default: the library's, 50)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.spin_us, Integer<int>(v, w, 0, 1000000));
       }},
      {{"spin_always"},
       Arg::kFlag,
       "",
       "aiokit: spin every time (default: only while spinning catches "
       "completions)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.spin_always, Flag(v, w));
       }},
      {{"fixedbufs"},
       Arg::kFlag,
       "",
       "io_uring: register the I/O buffers with the kernel",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.fixedbufs, Flag(v, w));
       }},
      {{"registerfiles"},
       Arg::kFlag,
       "",
       "io_uring: register the file with the kernel",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.registerfiles, Flag(v, w));
       }},
      {{"sqthread_poll"},
       Arg::kFlag,
       "",
       "io_uring: a kernel thread polls the submission queue",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.sqthread_poll, Flag(v, w));
       }},
      {{"sqthread_poll_cpu"},
       Arg::kValue,
       "CPU",
       "io_uring: the CPU of that kernel thread",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.sqthread_poll_cpu, Integer<int>(v, w, 0, 65535));
       }},
      {{"hipri"},
       Arg::kFlag,
       "",
       "io_uring: poll for completions (IORING_SETUP_IOPOLL)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.hipri, Flag(v, w));
       }},
      {{"threads_min"},
       Arg::kValue,
       "N",
       "threads engine: workers kept when idle",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.threads_min, Integer<unsigned>(v, w, 0, 4096));
       }},
      {{"threads_max"},
       Arg::kValue,
       "N",
       "threads engine: most workers (default: 2 per CPU, at least 4)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.threads_max, Integer<unsigned>(v, w, 0, 4096));
       }},
      {{"api"},
       Arg::kValue,
       "engine|device|coro|asio",
       "aiokit: drive the engine directly (default), the device layer "
       "(aiokit/device.h: a group per request, resubmission, the same "
       "engine underneath), --iodepth coroutines on a loop "
       "(aiokit/coro.h, one request in flight each), or --iodepth of "
       "Asio's coroutines on an io_context (aiokit/asio.h)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         if (v != "engine" && v != "device" && v != "coro" && v != "asio") {
           return Bad(w, v, "expected engine, device, coro or asio");
         }
         if (v == "asio" && AIOKIT_TOOL_HAVE_ASIO == 0) {
           return Bad(w, v,
                      "this aiokit was built without standalone Asio "
                      "(Debian: libasio-dev)");
         }
         j.api = std::string(v);
         return Status();
       }},
      {{"threads_ordered"},
       Arg::kFlag,
       "",
       "threads engine: requests on one fd in submission order",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.threads_ordered, Flag(v, w));
       }},
      {{"threads_kernel_aio"},
       Arg::kValue,
       "0|1",
       "threads engine: O_DIRECT reads and writes through the kernel's AIO "
       "where it allows (1, the default), or on workers (0)",
       [](BenchPlan&, JobOptions& j, std::string_view v, const std::string& w) {
         return Set(j.threads_kernel_aio, Flag(v, w));
       }},
      {{"output-format", "output_format"},
       Arg::kValue,
       "FORMAT",
       "normal (default), json, or json+ (fio's: json with clat's "
       "per-bucket counts in fio's buckets)",
       [](BenchPlan& p, JobOptions&, std::string_view v, const std::string& w) {
         if (v != "normal" && v != "json" && v != "json+") {
           return Bad(w, v, "expected normal, json or json+");
         }
         p.output_format = std::string(v);
         return Status();
       }},
      {{"compare"},
       Arg::kFlag,
       "",
       "aiokit: run the job on every engine and print one table (engines "
       "this machine refuses are listed with the reason)",
       [](BenchPlan& p, JobOptions&, std::string_view v, const std::string& w) {
         return Set(p.compare, Flag(v, w));
       }},
      {{"sweep"},
       Arg::kValue,
       "OPT=V1,V2,...",
       "aiokit: one run per value of iodepth, bs or numjobs, and a table "
       "(with --output-format=json, the data for scripts/plot-bench.py)",
       [](BenchPlan& p, JobOptions&, std::string_view v, const std::string& w) {
         const size_t eq = v.find('=');
         if (eq == std::string_view::npos || eq + 1 == v.size()) {
           return Bad(w, v,
                      "expected OPTION=V1,V2,... (iodepth, bs or numjobs)");
         }
         Sweep s;
         s.option = std::string(v.substr(0, eq));
         if (s.option != "iodepth" && s.option != "bs" &&
             s.option != "numjobs") {
           return Bad(w, v, "only iodepth, bs or numjobs can be swept");
         }
         std::string_view rest = v.substr(eq + 1);
         while (!rest.empty()) {
           const size_t comma = rest.find(',');
           std::string_view one = rest.substr(0, comma);
           if (one.empty()) return Bad(w, v, "an empty value in the list");
           // Checked now, applied per run.
           BenchPlan scratch_plan;
           JobOptions scratch;
           if (Status bad = ApplyOption(scratch_plan, scratch, s.option, one,
                                        true, w + " (" + s.option + ")");
               !bad.ok()) {
             return bad;
           }
           s.values.emplace_back(one);
           if (comma == std::string_view::npos) break;
           rest = rest.substr(comma + 1);
         }
         if (s.values.size() > 64) return Bad(w, v, "at most 64 values");
         p.sweep = std::move(s);
         return Status();
       }},
  };
  return table;
}

const Option* Find(std::string_view key) {
  for (const Option& o : Table()) {
    for (const std::string& n : o.names) {
      if (n == key) return &o;
    }
  }
  return nullptr;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// One option as given: replayed onto jobs in the order the rules above say.
struct Assignment {
  std::string key;
  std::string value;
  bool has_value;
  std::string where;
};

Status Replay(BenchPlan& plan, JobOptions& job,
              const std::vector<Assignment>& list) {
  for (const Assignment& a : list) {
    if (Status bad =
            ApplyOption(plan, job, a.key, a.value, a.has_value, a.where);
        !bad.ok()) {
      return bad;
    }
  }
  return {};
}

// A job file line without its comment: fio ends a line at its first ';' or
// '#', wherever it is ("runtime=60  # a minute").
std::string_view WithoutComment(std::string_view line) {
  return Trim(line.substr(0, line.find_first_of(";#")));
}

// fio's reserved keywords in a job file's values: the page size, the memory
// in MiB and the online CPUs.
std::optional<std::string> Keyword(std::string_view name) {
  if (name == "pagesize") {
    const long v = ::sysconf(_SC_PAGESIZE);
    return v > 0 ? std::to_string(v) : std::string("4096");
  }
  if (name == "mb_memory") {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return std::nullopt;
    return std::to_string(
        static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) >> 20);
  }
  if (name == "ncpus") {
    const long v = ::sysconf(_SC_NPROCESSORS_ONLN);
    return v > 0 ? std::to_string(v) : std::string("1");
  }
  return std::nullopt;
}

// A job file value with fio's substitutions made: ${NAME} from the
// environment, and $pagesize, $mb_memory, $ncpus. fio substitutes an empty
// string for an unset variable; aiokit refuses it by name instead, since a
// job silently run with fio's default is a measurement of the wrong thing.
// On failure: a UsageError naming `where` and the variable.
Result<std::string> Expand(std::string_view value, const std::string& where) {
  std::string out;
  size_t i = 0;
  while (i < value.size()) {
    const size_t dollar = value.find('$', i);
    if (dollar == std::string_view::npos) break;
    out += value.substr(i, dollar - i);
    if (dollar + 1 < value.size() && value[dollar + 1] == '{') {
      const size_t close = value.find('}', dollar + 2);
      if (close == std::string_view::npos) {
        return Bad(where, value, "a ${ without its }");
      }
      const std::string name(value.substr(dollar + 2, close - dollar - 2));
      // NOLINTNEXTLINE(concurrency-mt-unsafe): no thread sets the environment
      const char* env = name.empty() ? nullptr : std::getenv(name.c_str());
      if (env == nullptr) {
        return Bad(where, value,
                   "${" + name +
                       "} is not set in the environment (fio would use an "
                       "empty string)");
      }
      out += env;
      i = close + 1;
      continue;
    }
    size_t end = dollar + 1;
    while (end < value.size() &&
           (std::isalnum(static_cast<unsigned char>(value[end])) != 0 ||
            value[end] == '_')) {
      ++end;
    }
    const std::optional<std::string> word =
        Keyword(value.substr(dollar + 1, end - dollar - 1));
    // Any other $word stays as it is, as fio leaves it (filename_format's
    // $jobname, a path with a $ in it).
    out += word ? *word : std::string(value.substr(dollar, end - dollar));
    i = end;
  }
  if (i < value.size()) out += value.substr(i);
  return out;
}

// fio's options that aiokit bench does not have, each with what fio does
// with it, so that a job file written for fio is refused with the reason.
const std::vector<std::pair<const char*, const char*>>& FioOnlyOptions() {
  static const std::vector<std::pair<const char*, const char*>> table = {
      {"rwmixcycle",
       "alternated reads and writes on this period in old versions; fio "
       "3.33 refuses it too"},
  };
  return table;
}

// The refusal of an option `key` that is not in the table.
Status UnknownOption(const std::string& where, std::string_view key) {
  for (const auto& [name, what] : FioOnlyOptions()) {
    if (key == name) {
      return UsageError(where + ": fio's option (it " + what +
                        "), which aiokit bench does not have");
    }
  }
  return UsageError(where +
                    ": not an option aiokit bench knows (aiokit bench --help "
                    "lists them)");
}

}  // namespace

Status UsageError(std::string line) {
  return Status::Error(Errc::kInvalidArgument, std::move(line));
}

Status ApplyOption(BenchPlan& plan, JobOptions& job, std::string_view key,
                   std::string_view value, bool has_value,
                   const std::string& where) {
  const Option* o = Find(key);
  if (o == nullptr) return UnknownOption(where, key);
  if (o->arg == Arg::kValue && !has_value) {
    return UsageError(where + ": needs a value (" + o->metavar + ")");
  }
  return o->set(plan, job, value, where);
}

Result<std::vector<JobOptions>> ParseJobFile(std::string_view text,
                                             const std::string& path,
                                             const JobOptions& base,
                                             BenchPlan& plan) {
  std::vector<JobOptions> jobs;
  JobOptions global = base;
  JobOptions* current = nullptr;
  size_t line_no = 0;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = WithoutComment(text.substr(0, nl));
    text =
        nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    const std::string at = path + ":" + std::to_string(line_no);
    if (line.empty()) continue;
    if (line.front() == '[') {
      if (line.back() != ']' || line.size() < 3) {
        return UsageError(at + ": a section is [name]");
      }
      const std::string name(Trim(line.substr(1, line.size() - 2)));
      if (name == "global") {
        current = &global;
      } else {
        jobs.push_back(global);
        jobs.back().name = name;
        current = &jobs.back();
      }
      continue;
    }
    if (current == nullptr) {
      return UsageError(at + ": an option before any [section]");
    }
    const size_t eq = line.find('=');
    const std::string key(Trim(line.substr(0, eq)));
    const std::string_view value = eq == std::string_view::npos
                                       ? std::string_view{}
                                       : Trim(line.substr(eq + 1));
    std::string where = at;
    where += ": ";
    where += key;
    Result<std::string> expanded = Expand(value, where);
    if (!expanded.ok()) return expanded.status();
    if (Status bad = ApplyOption(plan, *current, key, *expanded,
                                 eq != std::string_view::npos, where);
        !bad.ok()) {
      return bad;
    }
  }
  if (jobs.empty()) return UsageError(path + ": no job sections");
  return jobs;
}

Result<BenchPlan> ParseBenchArgs(const std::vector<std::string>& args) {
  BenchPlan plan;
  std::vector<Assignment> global;
  std::vector<std::vector<Assignment>> named;  // one per --name
  std::vector<std::string> files;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      plan.help = true;
      return plan;
    }
    if (a.rfind("--", 0) != 0) {
      if (!a.empty() && a.front() == '-') {
        return UsageError(a + ": options are written --name=value");
      }
      files.push_back(a);
      continue;
    }
    const size_t eq = a.find('=');
    Assignment as;
    as.key = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
    as.where = "--" + as.key;
    as.has_value = eq != std::string::npos;
    if (as.has_value) as.value = a.substr(eq + 1);
    const Option* o = Find(as.key);
    if (o == nullptr) return UnknownOption(as.where, as.key);
    if (o->arg == Arg::kValue && !as.has_value) {
      if (i + 1 == args.size()) {
        return UsageError(as.where + ": needs a value (" + o->metavar + ")");
      }
      as.value = args[++i];
      as.has_value = true;
    }
    if (as.key == "name") named.emplace_back();
    if (named.empty()) {
      global.push_back(std::move(as));
    } else {
      named.back().push_back(std::move(as));
    }
  }
  JobOptions base;
  for (const std::string& path : files) {
    std::ifstream in(path);
    if (!in) {
      const int e = errno;
      const char* name = strerrorname_np(e);
      return UsageError(path + ": cannot read this job file (" +
                        (name != nullptr ? name : std::to_string(e)) + ")");
    }
    std::stringstream ss;
    ss << in.rdbuf();
    Result<std::vector<JobOptions>> jobs =
        ParseJobFile(ss.str(), path, base, plan);
    if (!jobs.ok()) return jobs.status();
    for (JobOptions& j : *jobs) {
      // The command line wins.
      if (Status bad = Replay(plan, j, global); !bad.ok()) return bad;
      plan.jobs.push_back(std::move(j));
    }
  }
  for (const std::vector<Assignment>& list : named) {
    JobOptions j = base;
    if (Status bad = Replay(plan, j, global); !bad.ok()) return bad;
    if (Status bad = Replay(plan, j, list); !bad.ok()) return bad;
    plan.jobs.push_back(std::move(j));
  }
  if (plan.jobs.empty()) {
    JobOptions j = base;
    if (Status bad = Replay(plan, j, global); !bad.ok()) return bad;
    plan.jobs.push_back(std::move(j));
  }
  // wait_for names a job before this one, and only one.
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    const JobOptions& j = plan.jobs[i];
    if (j.wait_for.empty()) continue;
    size_t before = 0, named = 0;
    for (size_t k = 0; k < plan.jobs.size(); ++k) {
      if (plan.jobs[k].name != j.wait_for) continue;
      ++named;
      if (k < i) ++before;
    }
    const std::string where =
        "--wait_for=" + j.wait_for + " (job " + j.name + ")";
    if (before == 0) {
      return UsageError(where + ": no job of that name before this one");
    }
    if (named > 1) {
      return UsageError(where + ": " + std::to_string(named) +
                        " jobs have that name; the one waited for must be "
                        "unique");
    }
  }
  // fio's reporting groups: a stonewall or new_group job starts the next.
  unsigned group = 0;
  for (size_t i = 0; i < plan.jobs.size(); ++i) {
    JobOptions& j = plan.jobs[i];
    if (i != 0 && (j.stonewall || j.new_group)) ++group;
    j.group = group;
  }
  return plan;
}

Status ValidateJob(const JobOptions& j, const BenchPlan& plan) {
  const std::string job = plan.jobs.size() > 1 ? " (job " + j.name + ")" : "";
  if (j.time_based && j.runtime_us == 0) {
    return UsageError("--time_based" + job + ": needs --runtime");
  }
  if (!j.ss_metric.empty() && j.ss_dur_us == 0) {
    return UsageError("--steadystate" + job +
                      ": needs --ss_dur (the window it judges; fio ignores "
                      "steadystate without it)");
  }
  if (j.hist_log_set && j.log_hist_msec == 0) {
    return UsageError("--write_hist_log" + job +
                      ": needs --log_hist_msec (the period of its rows; fio "
                      "writes no histogram without it)");
  }
  const unsigned depth = j.iodepth;
  if (j.iodepth_batch_submit > depth) {
    return UsageError(
        "--iodepth_batch_submit=" + std::to_string(j.iodepth_batch_submit) +
        job + ": larger than --iodepth=" + std::to_string(depth));
  }
  const unsigned cmax =
      j.iodepth_batch_complete_max != 0 ? j.iodepth_batch_complete_max : depth;
  if (cmax > depth) {
    return UsageError("--iodepth_batch_complete_max=" + std::to_string(cmax) +
                      job + ": larger than --iodepth=" + std::to_string(depth));
  }
  if (j.iodepth_batch_complete_min > cmax) {
    return UsageError("--iodepth_batch_complete_min=" +
                      std::to_string(j.iodepth_batch_complete_min) + job +
                      ": larger than --iodepth_batch_complete_max (" +
                      std::to_string(cmax) + ")");
  }
  if (j.fixedbufs && depth > 16384) {
    return UsageError("--fixedbufs" + job +
                      ": at most 16384 registered buffers (one per request of "
                      "--iodepth=" +
                      std::to_string(depth) + ")");
  }
  if (j.nrfiles > 1) {
    // Requests map onto the files in whole blocks: every place a request
    // can start must be a block's.
    const std::string nr = "--nrfiles=" + std::to_string(j.nrfiles) + job;
    const std::string_view type = std::string_view(j.file_service_type)
                                      .substr(0, j.file_service_type.find(':'));
    const char* bad =
        j.bs_min != 0 ? "--bsrange or --bssplit (one block size)"
        : j.api == "device"
            ? "--api=device (the device layer drives one file per clone)"
        : !j.filename.empty()
            ? "--filename (fio's names: --directory or --filename_format)"
        : j.zone_strided ? "--zonemode=strided"
        : (j.seq_add % static_cast<int64_t>(j.bs)) != 0
            ? "an offset modifier that is not a multiple of --bs"
        : j.blockalign_read % j.bs != 0 || j.blockalign_write % j.bs != 0
            ? "a --blockalign that is not a multiple of --bs"
        : type != "roundrobin" && type != "random" && type != "sequential"
            ? "this --file_service_type (roundrobin, random or sequential)"
            : nullptr;
    if (bad != nullptr) return UsageError(nr + ": not with " + bad);
  }
  if (j.bs_unaligned && j.direct != 0 && j.MinBs() != j.MaxBs()) {
    return UsageError("--bs_unaligned" + job +
                      ": needs --direct=0 (O_DIRECT takes sizes that are "
                      "multiples of the device's block)");
  }
  if ((j.cmdprio_pct[0] != 0 || j.cmdprio_pct[1] != 0) &&
      (!j.cmdprio_bssplit[0].empty() || !j.cmdprio_bssplit[1].empty())) {
    return UsageError("--cmdprio_bssplit" + job +
                      ": not with --cmdprio_percentage (fio's rule: one or "
                      "the other)");
  }
  if (j.bs_min != 0 && j.bssplit_text.empty() && j.MinBs() != j.MaxBs() &&
      j.MaxBs() % j.MinBs() != 0 && !j.bs_unaligned) {
    // Sizes are drawn in multiples of MIN; MAX must be one of them.
    return UsageError("--bsrange=" + std::to_string(j.bs_min) + "-" +
                      std::to_string(j.bs_max) + job +
                      ": MAX must be a multiple of MIN");
  }
  if (j.size_set && j.size < j.MaxBs()) {
    return UsageError("--size=" + std::to_string(j.size) + job +
                      ": smaller than the block size (" +
                      std::to_string(j.MaxBs()) + ")");
  }
  // pread and pwrite take a signed offset: the region must end by 2^63 - 1
  // (and offset + size must not wrap, which would defeat the checks against
  // the file's or device's size).
  constexpr uint64_t kMaxOffset = std::numeric_limits<int64_t>::max();
  if (j.size > kMaxOffset || j.offset > kMaxOffset - j.size) {
    return UsageError("--offset=" + std::to_string(j.offset) + job +
                      ": with --size=" + std::to_string(j.size) +
                      ", past the largest file offset (8 EiB)");
  }
  if (j.offset_increment != 0 && j.numjobs > 1) {
    // The last clone's region: offset + (numjobs - 1) x offset_increment.
    const uint64_t clones = j.numjobs - 1;
    if (j.offset_increment > (kMaxOffset - j.offset - j.size) / clones) {
      return UsageError(
          "--offset_increment=" + std::to_string(j.offset_increment) + job +
          ": with " + std::to_string(j.numjobs) +
          " clones, past the largest file offset (8 EiB)");
    }
  }
  if (!j.cpus.empty()) {
    // Only CPUs this process may run on (sched_getaffinity): a CPU that is
    // offline, absent or outside its cpuset is refused by number.
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
      std::vector<unsigned> have;
      for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
        if (CPU_ISSET(c, &allowed)) have.push_back(c);
      }
      for (const unsigned c : j.cpus) {
        if (c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed)) {
          return UsageError(j.cpus_option + job + ": CPU " + std::to_string(c) +
                            " is not available here (this process may run "
                            "on " +
                            FormatCpuList(have) + ")");
        }
      }
    }
  }
  if (!j.zone_strided && (j.zonesize != 0 || j.zonerange != 0)) {
    return UsageError("--zonesize" + job +
                      ": needs --zonemode=strided (fio refuses it with "
                      "zonemode=none too)");
  }
  if (j.zone_strided) {
    if (j.zonesize == 0) {
      return UsageError("--zonemode=strided" + job + ": needs --zonesize");
    }
    const uint64_t range = j.zonerange != 0 ? j.zonerange : j.zonesize;
    if (range < j.MaxBs()) {
      return UsageError("--zonerange=" + std::to_string(range) + job +
                        ": smaller than the block size (" +
                        std::to_string(j.MaxBs()) + ")");
    }
    if (j.distribution != "random") {
      return UsageError("--random_distribution=" + j.distribution_text + job +
                        ": not with --zonemode=strided (offsets are drawn "
                        "in the zone)");
    }
  }
  if (j.verify.enabled()) {
    // Verify tracks blocks of --bs: every offset must be one's start.
    const auto misaligned = [&](uint64_t v) { return v % j.bs != 0; };
    const char* bad =
        j.seq_add < 0 ? (misaligned(static_cast<uint64_t>(-j.seq_add))
                             ? "--rw's offset modifier"
                             : nullptr)
        : misaligned(static_cast<uint64_t>(j.seq_add))
            ? "--rw's offset modifier"
        : misaligned(j.blockalign_read) || misaligned(j.blockalign_write)
            ? "--blockalign"
        : j.zone_strided && (misaligned(j.zonerange) ||
                             misaligned(j.zoneskip) || misaligned(j.zonesize))
            ? "--zonerange, --zonesize or --zoneskip"
            : nullptr;
    if (bad != nullptr) {
      return UsageError("--verify=" + j.verify.name + job + ": " + bad +
                        " must be a multiple of --bs=" + std::to_string(j.bs) +
                        " (verify checks whole blocks)");
    }
  }
  for (int d = 0; d < 2; ++d) {
    const char* dir = d == 0 ? "reads" : "writes";
    const uint64_t cap =
        j.rate[d] != 0 ? j.rate[d] : j.rate_iops[d] * j.MinBs();
    if (j.rate_min[d] != 0 && cap != 0 && j.rate_min[d] > cap) {
      return UsageError("--rate_min=" + std::to_string(j.rate_min[d]) + job +
                        ": above the rate cap of the " + dir + " (" +
                        std::to_string(cap) + " B/s)");
    }
    if (j.rate_iops_min[d] != 0 && j.rate_iops[d] != 0 &&
        j.rate_iops_min[d] > j.rate_iops[d]) {
      return UsageError(
          "--rate_iops_min=" + std::to_string(j.rate_iops_min[d]) + job +
          ": above --rate_iops of the " + dir + " (" +
          std::to_string(j.rate_iops[d]) + ")");
    }
  }
  if (j.fsync != 0 && !j.Writes()) {
    return UsageError("--fsync=" + std::to_string(j.fsync) + job +
                      ": --rw=" + j.rw + " does not write");
  }
  const std::string verify = "--verify=" + j.verify.name + job;
  if (j.verify.enabled()) {
    if (j.bs_min != 0) {
      return UsageError(verify + ": not with " + j.BsOption() +
                        " (every block must have one size)");
    }
    if (j.verify.headerless() && j.verify.pattern.empty()) {
      return UsageError(verify +
                        ": needs --verify_pattern (the bytes to "
                        "write and check)");
    }
    const uint64_t interval = j.verify.interval != 0 ? j.verify.interval : j.bs;
    if (j.bs % interval != 0) {
      return UsageError(verify +
                        ": --verify_interval=" + std::to_string(interval) +
                        " must divide --bs=" + std::to_string(j.bs));
    }
    if (!j.verify.headerless() && interval < j.verify.HeaderBytes()) {
      return UsageError(verify + ": " +
                        (j.verify.interval != 0
                             ? "--verify_interval=" + std::to_string(interval)
                             : "--bs=" + std::to_string(j.bs)) +
                        " is smaller than the " +
                        std::to_string(j.verify.HeaderBytes()) +
                        "-byte verify header");
    }
    if (j.verify_only && !j.Writes()) {
      return UsageError(verify + ": --verify_only with --rw=" + j.rw +
                        ": it checks what the job's writes would have "
                        "written, and this job does not write");
    }
    if (j.verify_only && (j.norandommap || j.time_based)) {
      return UsageError(
          verify + ": --verify_only with " +
          (j.norandommap ? "--norandommap" : "--time_based") +
          ": which blocks an earlier run wrote is not known (aiokit checks "
          "every block of the region)");
    }
    if (j.verify_backlog != 0 && !j.Writes()) {
      return UsageError(verify + ": --verify_backlog with --rw=" + j.rw +
                        ": the job does not write");
    }
    // Clones with regions apart (--offset_increment of at least --size)
    // verify their own blocks.
    const bool apart = j.size_set && j.offset_increment >= j.size;
    if (j.numjobs > 1 && !j.filename.empty() && j.Writes() && !apart) {
      return UsageError(verify + " with --numjobs=" +
                        std::to_string(j.numjobs) + " on one --filename: the " +
                        "clones would overwrite each other's blocks (unless " +
                        "--offset_increment is at least --size)");
    }
  }
  if (j.api != "engine") {
    const char* refused =
        j.verify.enabled() ? "--verify"
        : !j.cmdprio_bssplit[0].empty() || !j.cmdprio_bssplit[1].empty()
            ? "--cmdprio_bssplit"
        : j.cmdprio_pct[0] != 0 || j.cmdprio_pct[1] != 0
            ? "--cmdprio_percentage"
        : !j.inject.empty()        ? "--inject"
        : j.continue_on_error != 0 ? "--continue_on_error"
        : j.fsync != 0             ? "--fsync"
        : j.registerfiles          ? "--registerfiles"
        : j.sqthread_poll          ? "--sqthread_poll"
        : j.hipri                  ? "--hipri"
                                   : nullptr;
    if (refused != nullptr) {
      return UsageError(std::string(refused) + job + ": not with --api=" +
                        j.api + " (it measures plain reads and writes)");
    }
  }
  if (plan.compare && j.engine != "default") {
    return UsageError("--compare" + job +
                      ": runs every engine; drop --engine=" + j.engine);
  }
  if (plan.compare &&
      (j.fixedbufs || j.registerfiles || j.sqthread_poll || j.hipri)) {
    return UsageError("--compare" + job +
                      ": io_uring-only options (--fixedbufs, --registerfiles, "
                      "--sqthread_poll, --hipri) would be refused by the other "
                      "engines");
  }
  if (j.engine != "default") {
    Result<EngineKind> kind = ParseEngineKind(j.engine);
    if (!kind.ok()) {
      return UsageError("--ioengine=" + j.engine + job + ": " +
                        kind.status().context());
    }
  }
  return {};
}

std::string BenchHelp() {
  std::string s =
      "Usage: aiokit bench [--option=value ...] [jobfile ...]\n"
      "Runs fio-style jobs on aiokit's engines and reports IOPS, bandwidth,\n"
      "latency percentiles and CPU per I/O. Options use fio's names and\n"
      "meanings; a job file is fio's ini format ([global], [job] sections).\n"
      "Options before the first --name apply to every job and override job\n"
      "files; each --name starts a job. Jobs run together. An option aiokit\n"
      "does not support is refused by name.\n\nOptions:\n";
  for (const Option& o : Table()) {
    std::string head = "  --" + o.names[0];
    if (o.arg == Arg::kValue) head += std::string("=") + o.metavar;
    for (size_t i = 1; i < o.names.size(); ++i) head += ", --" + o.names[i];
    s += head + "\n      " + o.help + "\n";
  }
  s += "  --help\n      This list\n";
  return s;
}

}  // namespace aiokit::tool
