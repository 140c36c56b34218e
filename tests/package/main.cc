// Reads its own first bytes through an installed aiokit: proves the headers,
// the library and the package files work outside the source tree.
#include <aiokit/aiokit.h>
#include <fcntl.h>

#include <cstdio>
#include <vector>

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  (void)argc;
  aiokit::Result<aiokit::File> f = aiokit::File::Open(argv[0], O_RDONLY);
  if (!f.ok()) {
    std::fprintf(stderr, "%s\n", f.status().ToString().c_str());
    return 1;
  }
  aiokit::EngineOptions options;
  options.kind = aiokit::EngineKind::kLinuxAio;
  auto engine = aiokit::MakeEngine(options);
  if (!engine.ok()) {
    std::fprintf(stderr, "%s\n", engine.status().ToString().c_str());
    // An engine this machine refuses is not a packaging failure.
    return engine.status().Is(aiokit::Errc::kUnsupported) ? 77 : 1;
  }
  std::vector<char> buf(4);
  aiokit::Request r;
  r.PrepRead(*f, buf.data(), buf.size(), 0);
  aiokit::Request* p = &r;
  if (!(*engine)->Submit({&p, 1}).status.ok()) return 1;
  aiokit::Request* out[1];
  auto n = (*engine)->GetNextCompleted(5000, out, 1);
  if (!n.ok() || *n != 1 || r.rval != 4 || buf[0] != 0x7f || buf[1] != 'E')
    return 1;
  std::printf("aiokit %s: read ELF magic through %s\n", AIOKIT_VERSION_STRING,
              (*engine)->Name());
  return 0;
}
