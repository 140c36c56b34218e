// Conformance, notification: a request's own eventfd, and the engine's
// NotifyFd.

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <memory>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "conformance/conformance.h"
#include "test_util.h"

namespace aiokit::conformance {
namespace {

using testing::ExpectExactlyOnce;
using testing::Pointers;
using testing::ReapAll;
using testing::ScratchFile;

TEST_P(ConformanceTest, RequestEventfdIsSignalledOnCompletion) {
  File f = ScratchFile(8192, 10);
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  ASSERT_GE(efd, 0);
  std::vector<char> buf(4096);
  Request r, n;
  r.PrepRead(f.fd(), buf.data(), buf.size(), 0);
  r.SetEventFd(efd);
  n.PrepNoop();
  n.SetEventFd(efd);
  SubmitAll({&r, &n});
  ExpectExactlyOnce(ReapAll(*engine_, 2), {&r, &n});
  // One count per request; an engine may post the count just after the
  // completion (io_uring's linked write), so read until both arrive.
  uint64_t total = 0;
  pollfd p{efd, POLLIN, 0};
  while (total < 2 && ::poll(&p, 1, 5000) == 1) {
    uint64_t count = 0;
    ASSERT_EQ(::read(efd, &count, sizeof(count)),
              static_cast<ssize_t>(sizeof(count)));
    total += count;
  }
  EXPECT_EQ(total, 2U);
  EXPECT_EQ(::poll(&p, 1, 20), 0) << "signalled more than once per request";
  ::close(efd);
}

TEST_P(ConformanceTest, NotifyFdBecomesReadableWhenCompletionsAreReady) {
  Result<int> nfd = engine_->NotifyFd();
  ASSERT_TRUE(nfd.ok()) << nfd.status().ToString();
  pollfd p{*nfd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 0), 0) << "readable before anything was submitted";
  File f = ScratchFile(64 * 1024, 11);
  std::vector<std::vector<char>> bufs(8, std::vector<char>(4096));
  std::vector<Request> reqs(8);
  for (size_t i = 0; i < reqs.size(); ++i)
    reqs[i].PrepRead(f.fd(), bufs[i].data(), 4096, i * 4096);
  reqs[3].PrepNoop();  // completed by the engine itself: must signal too
  SubmitAll(Pointers(reqs));
  // Each time the eventfd says so, collect what is ready without waiting; every
  // completion must be signalled (the counter may count one per completion or
  // one per batch of them).
  testing::Reaped got;
  std::vector<Request*> out(reqs.size());
  while (got.order.size() < reqs.size()) {
    ASSERT_EQ(::poll(&p, 1, 10000), 1) << "no signal with " << got.order.size()
                                       << " of " << reqs.size() << " reaped";
    uint64_t v = 0;
    ASSERT_EQ(::read(*nfd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
    EXPECT_GE(v, 1U);
    Result<size_t> n = engine_->Poll(out);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    for (size_t i = 0; i < *n; ++i) {
      got.order.push_back(out[i]);
      ++got.times[out[i]];
    }
  }
  ExpectExactlyOnce(got, Pointers(reqs));
  // A signal may trail its completion (the completion was reaped in the same
  // Poll as an earlier one): then it is a spurious wake-up and Poll finds
  // nothing, never a completion left behind.
  if (::poll(&p, 1, 0) == 1) {
    uint64_t v = 0;
    ASSERT_EQ(::read(*nfd, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
    Result<size_t> n = engine_->Poll(out);
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 0U);
  }
}

TEST_P(ConformanceTest, NotifyFdCanBeTurnedOff) {
  EngineOptions o;
  o.notify_fd = false;
  std::unique_ptr<Engine> e = Make(o);
  ASSERT_NE(e, nullptr);
  Result<int> nfd = e->NotifyFd();
  ASSERT_FALSE(nfd.ok());
  EXPECT_TRUE(nfd.status().Is(Errc::kUnsupported)) << nfd.status().ToString();
  EXPECT_FALSE(e->GetCapabilities().notify_fd);
}

}  // namespace
}  // namespace aiokit::conformance
