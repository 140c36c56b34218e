// Writes 1024 bytes of '@' to a file with O_DIRECT, reads them back and checks
// them: the classic first native-AIO program, on aiokit.
//
//   odirect_write_read [directory]      (default /var/tmp; the file is unnamed
//   and vanishes at exit)
//
// O_DIRECT needs the buffer, the offset and the length aligned as the file
// system says (aiokit discovers it when the file is opened). 1024 bytes works
// where the alignment is 512 or 1024; where it is larger, the write covers one
// aligned block that starts with the 1024 '@'.

#include <fcntl.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "aiokit/aiokit.h"

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "odirect_write_read: %s\n", what.c_str());
  return 1;
}

// Submits one request and waits for it.
aiokit::Status RunOne(aiokit::Engine& engine, aiokit::Request& req) {
  aiokit::Request* batch[] = {&req};
  aiokit::SubmitResult sr = engine.Submit(batch);
  if (sr.accepted != 1) return sr.status;
  aiokit::Request* done[1];
  aiokit::Result<size_t> n = engine.GetNextCompleted(10000, done, 1);
  if (!n.ok()) return n.status();
  if (*n != 1)
    return aiokit::Status::Error(aiokit::Errc::kTimedOut,
                                 "no completion in 10 s");
  return {};
}

}  // namespace

// Out of memory (std::bad_alloc) ends the program, as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "/var/tmp";
  aiokit::Result<aiokit::File> file =
      aiokit::File::CreateTemporary(dir, O_DIRECT);
  if (!file.ok()) {
    // Some file systems (tmpfs on old kernels, overlayfs) refuse O_DIRECT:
    // nothing to show there.
    std::fprintf(stderr, "odirect_write_read: skipped: %s\n",
                 file.status().ToString().c_str());
    return 77;
  }
  const aiokit::Alignment align = file->alignment();
  const size_t kBytes = 1024;
  const size_t len = (kBytes + align.offset - 1) / align.offset * align.offset;

  aiokit::Result<aiokit::AlignedBuffer> wbuf =
      aiokit::AlignedBuffer::Allocate(len, align.memory);
  aiokit::Result<aiokit::AlignedBuffer> rbuf =
      aiokit::AlignedBuffer::Allocate(len, align.memory);
  if (!wbuf.ok() || !rbuf.ok()) return Fail("cannot allocate aligned buffers");
  std::memset(wbuf->data(), '@', kBytes);

  auto engine = aiokit::MakeEngine({});  // AIOKIT_ENGINE, else auto
  if (!engine.ok()) return Fail(engine.status().ToString());

  aiokit::Request write;
  write.PrepWrite(*file, wbuf->data(), len, 0);
  if (aiokit::Status s = RunOne(**engine, write); !s.ok())
    return Fail(s.ToString());
  if (write.rval != static_cast<int64_t>(len))
    return Fail(aiokit::Describe(write));

  aiokit::Request read;
  read.PrepRead(*file, rbuf->data(), len, 0);
  if (aiokit::Status s = RunOne(**engine, read); !s.ok())
    return Fail(s.ToString());
  if (read.rval != static_cast<int64_t>(len))
    return Fail(aiokit::Describe(read));

  for (size_t i = 0; i < kBytes; ++i) {
    if (rbuf->data()[i] != '@')
      return Fail("byte " + std::to_string(i) + " is not '@'");
  }
  std::printf(
      "wrote and read back %zu bytes of '@' with O_DIRECT (alignment: memory "
      "%u, offset %u; "
      "%zu bytes transferred) on %s\n",
      kBytes, align.memory, align.offset, len, (*engine)->Name());
  return 0;
}
