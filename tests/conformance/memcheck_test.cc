// Conformance: what the kernel maps and writes out of valgrind's sight. These
// can fail only under valgrind memcheck (scripts/test.sh runs them there);
// natively they check ordinary reads, or skip.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "conformance/conformance.h"

#if AIOKIT_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#endif

namespace aiokit::conformance {
namespace {

using testing::ExpectExactlyOnce;
using testing::FirstMismatch;
using testing::Pointers;
using testing::ReapAll;
using testing::ScratchFile;

// Pins memcheck's "Invalid read" in LinuxAioEngine::OnEvent: valgrind's
// io_setup wrapper maps the events asked for, the kernel at least twice as
// many, and as the ring wraps events land in every slot. Each round is a new
// engine, most likely where the last one's ring was.
TEST_P(ConformanceTest, EventsInEveryRingSlotAreReapedByEnginesMadeAgain) {
  File f = ScratchFile(64 * 1024, 41);
  constexpr size_t kBatch = 64;
  constexpr size_t kLen = 512;
  for (int round = 0; round < 3; ++round) {
    EngineOptions o;
    o.queue_depth = 127;  // kernel AIO: 128 events asked, 256 or more mapped
    std::unique_ptr<Engine> e = Make(o);
    ASSERT_NE(e, nullptr);
    const size_t total = 2 * size_t{e->GetCapabilities().ring_entries} + 1;
    std::vector<Request> reqs(kBatch);
    std::vector<char> buf(kBatch * kLen);
    for (size_t done = 0; done < total; done += kBatch) {
      for (size_t i = 0; i < kBatch; ++i) {
        reqs[i].PrepRead(f.fd(), buf.data() + i * kLen, kLen,
                         ((done + i) % 128) * kLen);
      }
      SubmitResult sr = e->Submit(Pointers(reqs));
      ASSERT_EQ(sr.accepted, kBatch) << sr.status.ToString();
      ExpectExactlyOnce(ReapAll(*e, kBatch), Pointers(reqs));
      for (size_t i = 0; i < kBatch; ++i) {
        ASSERT_EQ(reqs[i].rval, static_cast<int64_t>(kLen))
            << Describe(reqs[i]);
        ASSERT_EQ(FirstMismatch(buf.data() + i * kLen, kLen, 41,
                                ((done + i) % 128) * kLen),
                  -1);
      }
    }
  }
}

// What memcheck believes of [p, p + n), asked without making it report.
enum class Memcheck { kNotRunning, kUnaddressable, kUndefined, kDefined };
std::ostream& operator<<(std::ostream& os, Memcheck m) {
  switch (m) {
    case Memcheck::kNotRunning:
      return os << "not running under memcheck";
    case Memcheck::kUnaddressable:
      return os << "unaddressable";
    case Memcheck::kUndefined:
      return os << "addressable, partly undefined";
    case Memcheck::kDefined:
      return os << "addressable and defined";
  }
  return os;
}
Memcheck MemcheckState(const void* p, size_t n) {
#if AIOKIT_HAVE_VALGRIND
  if (RUNNING_ON_VALGRIND == 0) return Memcheck::kNotRunning;
  // Static: an allocation here could take the addresses of a ring just freed.
  static unsigned char vbits[1 << 20];
  if (n > sizeof(vbits)) return Memcheck::kNotRunning;
  // 3: some byte is unaddressable; 1: vbits has a set bit per undefined bit.
  const unsigned r = VALGRIND_GET_VBITS(p, vbits, n);
  if (r == 3) return Memcheck::kUnaddressable;
  if (r != 1) return Memcheck::kNotRunning;  // another valgrind tool
  return std::all_of(vbits, vbits + n, [](unsigned char v) { return v == 0; })
             ? Memcheck::kDefined
             : Memcheck::kUndefined;
#else
  (void)p;
  (void)n;
  return Memcheck::kNotRunning;
#endif
}

// The kernel AIO rings mapped into this process ("/[aio]" in its maps).
std::vector<std::pair<uintptr_t, uintptr_t>> KernelAioRings() {
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("/[aio]") == std::string::npos) continue;
    char* dash = nullptr;  // "begin-end perms ..." in hex
    const uintptr_t begin = std::strtoull(line.c_str(), &dash, 16);
    if (*dash != '-') continue;
    out.emplace_back(begin, std::strtoull(dash + 1, nullptr, 16));
  }
  return out;
}

// Memcheck believes in a kernel ring exactly while it is mapped: all of it
// addressable and defined while its engine lives, none of it once the engine
// is gone, round after round at the same addresses.
TEST_P(ConformanceTest, MemcheckSeesAKernelRingWhileItsEngineLivesAndNotAfter) {
  if (MemcheckState(this, 1) == Memcheck::kNotRunning) {
    GTEST_SKIP() << "only memcheck keeps this state (and only a build with "
                    "<valgrind/memcheck.h> asks it)";
  }
  for (int round = 0; round < 3; ++round) {
    const auto before = KernelAioRings();
    EngineOptions o;
    o.queue_depth = 127;
    std::unique_ptr<Engine> e = Make(o);
    ASSERT_NE(e, nullptr);
    // One O_DIRECT read first: the threads engine maps its kernel ring at
    // its first O_DIRECT request (threads_kernel_aio).
    if (File f = DirectFile(kBlock, 43); f.fd() >= 0) {
      Result<AlignedBuffer> buf = AlignedBuffer::Allocate(kBlock, 4096);
      ASSERT_TRUE(buf.ok());
      Request r;
      r.PrepRead(f, buf->data(), kBlock, 0);
      Request* one[] = {&r};
      ASSERT_EQ(e->Submit(one).accepted, 1U);
      ExpectExactlyOnce(ReapAll(*e, 1), {&r});
      EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
    }
    std::vector<std::pair<uintptr_t, uintptr_t>> fresh;
    for (const auto& m : KernelAioRings()) {
      if (std::find(before.begin(), before.end(), m) == before.end()) {
        fresh.push_back(m);
      }
    }
    if (fresh.empty()) GTEST_SKIP() << e->Name() << " maps no kernel AIO ring";
    ASSERT_EQ(fresh.size(), 1U);
    const auto* ring = reinterpret_cast<const char*>(fresh[0].first);
    const size_t bytes = fresh[0].second - fresh[0].first;
    EXPECT_GT(bytes, size_t{4096} * 2) << "not larger than valgrind assumes";
    EXPECT_EQ(MemcheckState(ring, bytes), Memcheck::kDefined) << round;
    e.reset();
    EXPECT_EQ(MemcheckState(ring, bytes), Memcheck::kUnaddressable) << round;
  }
}

// Pins memcheck's "Conditional jump or move depends on uninitialised value(s)"
// on data read into fresh memory: valgrind marks a read's buffer written only
// when its event comes back through io_getevents, not from the ring.
TEST_P(ConformanceTest, ReadsIntoFreshMemoryLeaveTheDataDefined) {
  File f = ScratchFile(kBlock + kBlock / 2, 42);  // the readv is cut short
  auto a = std::make_unique_for_overwrite<char[]>(kBlock);
  auto b = std::make_unique_for_overwrite<char[]>(kBlock / 2);
  auto c = std::make_unique_for_overwrite<char[]>(kBlock);
  Request r;
  Request rv;
  r.PrepRead(f.fd(), a.get(), kBlock, 0);
  const iovec v[2] = {{b.get(), kBlock / 2}, {c.get(), kBlock}};
  rv.PrepReadv(f.fd(), v, 2, kBlock / 2);
  SubmitAll({&r, &rv});
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&r, &rv});
  ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  ASSERT_EQ(rv.rval, static_cast<int64_t>(kBlock)) << Describe(rv);
  // These branch on every byte: memcheck reports any it believes unwritten.
  EXPECT_EQ(FirstMismatch(a.get(), kBlock, 42), -1);
  EXPECT_EQ(FirstMismatch(b.get(), kBlock / 2, 42, kBlock / 2), -1);
  EXPECT_EQ(FirstMismatch(c.get(), kBlock / 2, 42, kBlock), -1);
  // What the kernel did not write stays undefined: memcheck still sees a use.
  EXPECT_NE(MemcheckState(c.get() + kBlock / 2, kBlock / 2),
            Memcheck::kDefined);
}

}  // namespace
}  // namespace aiokit::conformance
