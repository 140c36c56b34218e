// aiokit_crashimg: the crash images a power cut could leave of one file,
// from a write log aiokit_faultfs recorded (writelog.h says what a crash
// image is).
//
// Usage: aiokit_crashimg LOG FILE OUTDIR [--base=IMAGE] [--random=N]
//                        [--seed=S] [--limit=M]
// FILE is the file's path in the fault file system ("/name"). At each crash
// point (before each of the file's flush ends, and the end of the log) the
// images of the writes in flight, all 2^W subsets of them when there are
// W <= 6, else none, all and N random ones (default 2), are written to
// OUTDIR/crash-POINT-K.img, at most M in all (default: no limit). --base is
// the file as it was when the log began (default: empty). Prints "P points,
// I images, W writes in flight at most".
// Exit 0, 1 on an unreadable log or an image not written, 2 on bad usage.

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "writelog.h"

namespace {

int Fail(int code, const std::string& why) {
  std::fprintf(stderr, "aiokit_crashimg: %s\n", why.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string base_path;
  unsigned long random = 2, seed = 1, limit = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const std::string v = a.substr(a.find('=') + 1);
    unsigned long* num = nullptr;
    if (a.rfind("--base=", 0) == 0) {
      base_path = v;
    } else if (a.rfind("--random=", 0) == 0) {
      num = &random;
    } else if (a.rfind("--seed=", 0) == 0) {
      num = &seed;
    } else if (a.rfind("--limit=", 0) == 0) {
      num = &limit;
    } else if (a.rfind("--", 0) == 0) {
      return Fail(2, "unknown option " + a);
    } else {
      pos.push_back(a);
    }
    if (num != nullptr) {
      char* end = nullptr;
      *num = std::strtoul(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || v[0] == '-') {
        return Fail(2, a + ": not a whole number");
      }
    }
  }
  if (pos.size() != 3) {
    return Fail(2,
                "usage: aiokit_crashimg LOG FILE OUTDIR [--base=IMAGE] "
                "[--random=N] [--seed=S] [--limit=M]");
  }
  std::vector<writelog::Entry> log;
  std::string error;
  if (!writelog::Load(pos[0], &log, &error)) return Fail(1, error);
  std::string base;
  if (!base_path.empty()) {
    std::ifstream in(base_path, std::ios::binary);
    if (!in) return Fail(1, base_path + ": " + std::strerror(errno));
    std::stringstream bytes;
    bytes << in.rdbuf();
    base = bytes.str();
  }
  writelog::CrashWalk walk(&log, pos[1], std::move(base));
  std::mt19937_64 rng(seed);
  unsigned long points = 0, images = 0;
  size_t most = 0;
  while (walk.Next() && (limit == 0 || images < limit)) {
    ++points;
    most = std::max(most, walk.in_flight().size());
    const auto subsets = writelog::Subsets(walk.in_flight().size(),
                                           static_cast<unsigned>(random), rng);
    for (size_t k = 0; k < subsets.size(); ++k) {
      if (limit != 0 && images == limit) break;
      const std::string out = pos[2] + "/crash-" +
                              std::to_string(walk.point()) + "-" +
                              std::to_string(k) + ".img";
      const std::string image = walk.Image(subsets[k]);
      std::ofstream f(out, std::ios::binary | std::ios::trunc);
      f.write(image.data(), static_cast<std::streamsize>(image.size()));
      f.close();
      if (!f) return Fail(1, out + ": not written");
      ++images;
    }
  }
  std::printf("%lu points, %lu images, %zu writes in flight at most\n", points,
              images, most);
  return 0;
}
