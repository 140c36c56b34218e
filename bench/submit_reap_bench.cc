// The cost of submitting and reaping one request, per request, on the linux-aio
// engine, beside the same work done with raw io_submit/io_getevents system
// calls: the difference is what aiokit adds.
//
// The file is in /dev/shm and read buffered, so the kernel does the 512-byte
// copy inside io_submit and the numbers show software cost, not a device.

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "aiokit/aiokit.h"

namespace {

constexpr size_t kLen = 512;

struct Fixture {
  aiokit::File file;
  std::vector<char> bufs;
  bool ok = false;
  explicit Fixture(size_t n) : bufs(n * kLen) {
    auto f = aiokit::File::CreateTemporary("/dev/shm", 0);
    if (!f.ok()) return;
    file = std::move(*f);
    std::vector<char> data(1 << 20, 'x');
    ok = ::pwrite(file.fd(), data.data(), data.size(), 0) ==
         static_cast<ssize_t>(data.size());
  }
};

void BM_EngineSubmitReap(benchmark::State& state) {
  const auto batch = static_cast<size_t>(state.range(0));
  Fixture fx(batch);
  aiokit::EngineOptions o;
  o.kind = aiokit::EngineKind::kLinuxAio;
  o.queue_depth = static_cast<unsigned>(batch);
  o.notify_fd = false;
  auto engine = aiokit::MakeEngine(o);
  if (!fx.ok || !engine.ok()) {
    state.SkipWithError("no file in /dev/shm or no linux-aio");
    return;
  }
  std::vector<aiokit::Request> reqs(batch);
  std::vector<aiokit::Request*> ptrs(batch), out(batch);
  for (size_t i = 0; i < batch; ++i) ptrs[i] = &reqs[i];
  uint64_t off = 0;
  for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
    for (size_t i = 0; i < batch; ++i) {
      reqs[i].PrepRead(fx.file.fd(), fx.bufs.data() + i * kLen, kLen, off);
      off = (off + kLen) & ((1 << 20) - 1);
    }
    aiokit::SubmitResult sr = (*engine)->Submit(ptrs);
    size_t got = 0;
    while (got < sr.accepted) {
      auto r = (*engine)->Reap({out.data(), batch}, 1, aiokit::kForever);
      if (!r.ok()) break;
      got += *r;
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
}
BENCHMARK(BM_EngineSubmitReap)->Arg(1)->Arg(8)->Arg(32);

void BM_RawSyscalls(benchmark::State& state) {
  const auto batch = static_cast<size_t>(state.range(0));
  Fixture fx(batch);
  aio_context_t ctx = 0;
  if (!fx.ok || syscall(SYS_io_setup, batch, &ctx) != 0) {
    state.SkipWithError("no file in /dev/shm or no io_setup");
    return;
  }
  std::vector<iocb> cbs(batch);
  std::vector<iocb*> ptrs(batch);
  std::vector<io_event> events(batch);
  for (size_t i = 0; i < batch; ++i) ptrs[i] = &cbs[i];
  uint64_t off = 0;
  for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
    for (size_t i = 0; i < batch; ++i) {
      std::memset(&cbs[i], 0, sizeof(iocb));
      cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
      cbs[i].aio_fildes = static_cast<uint32_t>(fx.file.fd());
      cbs[i].aio_buf = reinterpret_cast<uint64_t>(fx.bufs.data() + i * kLen);
      cbs[i].aio_nbytes = kLen;
      cbs[i].aio_offset = static_cast<int64_t>(off);
      off = (off + kLen) & ((1 << 20) - 1);
    }
    const long n = syscall(SYS_io_submit, ctx, batch, ptrs.data());
    long got = 0;
    while (got < n) {
      const long r =
          syscall(SYS_io_getevents, ctx, 1, batch, events.data(), nullptr);
      if (r <= 0) break;
      got += r;
    }
    benchmark::DoNotOptimize(events.data());
  }
  syscall(SYS_io_destroy, ctx);
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
}
BENCHMARK(BM_RawSyscalls)->Arg(1)->Arg(8)->Arg(32);

void BM_EngineNoop(benchmark::State& state) {
  const auto batch = static_cast<size_t>(state.range(0));
  aiokit::EngineOptions o;
  o.kind = aiokit::EngineKind::kLinuxAio;
  o.queue_depth = static_cast<unsigned>(batch);
  o.notify_fd = false;
  auto engine = aiokit::MakeEngine(o);
  if (!engine.ok()) {
    state.SkipWithError("no linux-aio");
    return;
  }
  std::vector<aiokit::Request> reqs(batch);
  std::vector<aiokit::Request*> ptrs(batch), out(batch);
  for (size_t i = 0; i < batch; ++i) ptrs[i] = &reqs[i];
  for (auto _ : state) {  // NOLINT(clang-analyzer-deadcode.DeadStores)
    for (auto& r : reqs) r.PrepNoop();
    aiokit::SubmitResult sr = (*engine)->Submit(ptrs);
    size_t got = 0;
    while (got < sr.accepted) {
      auto r = (*engine)->Reap({out.data(), batch}, 1, aiokit::kForever);
      if (!r.ok()) break;
      got += *r;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch));
}
BENCHMARK(BM_EngineNoop)->Arg(1)->Arg(32);

}  // namespace

BENCHMARK_MAIN();
