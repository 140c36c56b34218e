// Copies a file with Asio's own coroutines (asio::awaitable) on aiokit
// (aiokit/asio.h): 8 coroutines each copy every 8th block, read and write
// through the engine; the copy is compared with the source.
//
// Usage: asio_copy [DIR] [--engine=E]
// Exit 0 when the copy matches, 77 when the engine is refused here.

// Asio 1.22 turns co_await on for clang only with <experimental/coroutine>,
// which clang 14 with libstdc++ (clang-tidy here) lacks; C++20's <coroutine>
// works there, so say so before any Asio header.
#if defined(__clang__) && !defined(ASIO_HAS_CO_AWAIT)
#define ASIO_HAS_CO_AWAIT 1
#define ASIO_HAS_STD_COROUTINE 1
#endif

#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "aiokit/asio.h"
#include "aiokit/engine.h"
#include "aiokit/file.h"

namespace {

constexpr size_t kBlock = size_t{64} * 1024;
constexpr size_t kBlocks = 64;
constexpr size_t kWorkers = 8;

// Copies blocks w, w + kWorkers, ... of src to dst; "" or what went wrong.
asio::awaitable<std::string> CopyEvery(aiokit::asio::EngineIo& io, int src,
                                       int dst, size_t w) {
  aiokit::Result<aiokit::Buffer> b = aiokit::Buffer::Allocate(kBlock);
  if (!b.ok()) co_return b.status().ToString();
  for (size_t i = w; i < kBlocks; i += kWorkers) {
    const size_t n =
        co_await io.async_read(src, i * kBlock, *b, asio::use_awaitable);
    if (n != kBlock) co_return "short read of block " + std::to_string(i);
    const size_t m =
        co_await io.async_write(dst, i * kBlock, *b, asio::use_awaitable);
    if (m != kBlock) co_return "short write of block " + std::to_string(i);
  }
  co_return "";
}

}  // namespace

// Out of memory (std::bad_alloc, from Asio's allocations) ends the program,
// as it should.
// NOLINTNEXTLINE(bugprone-exception-escape)
int main(int argc, char** argv) {
  std::string dir = "/var/tmp";
  aiokit::EngineOptions eo;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--engine=", 0) == 0) {
      aiokit::Result<aiokit::EngineKind> k =
          aiokit::ParseEngineKind(a.substr(9));
      if (!k.ok()) {
        std::fprintf(stderr, "%s\n", k.status().ToString().c_str());
        return 2;
      }
      eo.kind = *k;
    } else {
      dir = a;
    }
  }
  aiokit::Result<aiokit::File> src = aiokit::File::CreateTemporary(dir, 0);
  aiokit::Result<aiokit::File> dst = aiokit::File::CreateTemporary(dir, 0);
  if (!src.ok() || !dst.ok()) {
    std::fprintf(stderr, "temporary files in %s: %s\n", dir.c_str(),
                 (src.ok() ? dst : src).status().ToString().c_str());
    return 1;
  }
  std::vector<char> data(kBlock * kBlocks);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = static_cast<char>((i * 131) ^ (i >> 16));
  }
  if (::pwrite(src->fd(), data.data(), data.size(), 0) !=
      static_cast<ssize_t>(data.size())) {
    std::perror("pwrite");
    return 1;
  }
  aiokit::Result<std::unique_ptr<aiokit::Engine>> engine =
      aiokit::MakeEngine(eo);
  if (!engine.ok()) {
    std::fprintf(stderr, "skipped: %s\n", engine.status().ToString().c_str());
    return 77;
  }
  asio::io_context ctx;
  aiokit::Result<std::unique_ptr<aiokit::asio::EngineIo>> io =
      aiokit::asio::EngineIo::Create(ctx, **engine);
  if (!io.ok()) {
    std::fprintf(stderr, "%s\n", io.status().ToString().c_str());
    return 1;
  }
  std::vector<std::string> results(kWorkers, "did not finish");
  for (size_t w = 0; w < kWorkers; ++w) {
    asio::co_spawn(ctx, CopyEvery(**io, src->fd(), dst->fd(), w),
                   [&results, w](const std::exception_ptr& e, std::string r) {
                     results[w] = e ? "exception" : std::move(r);
                   });
  }
  ctx.run();
  int rc = 0;
  for (size_t w = 0; w < kWorkers; ++w) {
    if (!results[w].empty()) {
      std::fprintf(stderr, "worker %zu: %s\n", w, results[w].c_str());
      rc = 1;
    }
  }
  std::vector<char> back(data.size());
  if (::pread(dst->fd(), back.data(), back.size(), 0) !=
          static_cast<ssize_t>(back.size()) ||
      std::memcmp(back.data(), data.data(), data.size()) != 0) {
    std::fprintf(stderr, "the copy differs from the source\n");
    rc = 1;
  }
  std::printf(
      "asio_copy engine=%s: %zu blocks of %zu KiB by %zu coroutines, "
      "%llu submissions: %s\n",
      (*engine)->Name(), kBlocks, kBlock / 1024, kWorkers,
      static_cast<unsigned long long>((*io)->submit_calls()),
      rc == 0 ? "ok" : "FAILED");
  return rc;
}
