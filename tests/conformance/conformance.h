// The conformance suite: what every engine must do, run on each engine and
// variant by name (testing::AllEngines(), instantiated in conformance.cc).
// One fixture, ConformanceTest, and one file per area beside this header:
// io_test.cc (every op, flags, priority, buffered waits, fixed buffers),
// notify_test.cc (request eventfd, NotifyFd), reap_test.cc (waiting, reaping
// beside other threads), cancel_shutdown_test.cc, limits_test.cc (queue
// depths, bad input, the kernel's limits), direct_test.cc (O_DIRECT and
// alignment) and faults_test.cc (partial submission and EAGAIN injected under
// the syscall layer). All of them build into one executable,
// conformance_test.

#ifndef AIOKIT_TESTS_CONFORMANCE_CONFORMANCE_H_
#define AIOKIT_TESTS_CONFORMANCE_CONFORMANCE_H_

#include <fcntl.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "engines.h"
#include "test_util.h"

// Not in an anonymous namespace: the test files share this one fixture type
// (gtest refuses one suite name for two types).
namespace aiokit::conformance {

inline constexpr size_t kBlock = 4096;

// The engine GetParam() names, made in SetUp with default options (the test
// skips where this machine refuses it), and helpers to drive it.
class ConformanceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    AIOKIT_MAKE_ENGINE_OR_SKIP(e, GetParam(), EngineOptions{});
    engine_ = std::move(e);
  }

  // Another engine of the kind under test, with `options`; nullptr, with the
  // reason as a failure, when it cannot be made (SetUp made one, so this
  // machine does not refuse the engine).
  std::unique_ptr<Engine> Make(EngineOptions options = {}) {
    Result<std::unique_ptr<Engine>> e =
        testing::MakeNamedEngine(GetParam(), options);
    if (!e.ok()) {
      ADD_FAILURE() << GetParam() << ": " << e.status().ToString();
      return nullptr;
    }
    return std::move(*e);
  }

  // An O_DIRECT scratch file, or a skip when the test directory's file system
  // refuses O_DIRECT.
  File DirectFile(size_t size, uint64_t seed) {
    Result<File> probe = File::CreateTemporary(testing::TestDir(), O_DIRECT);
    if (!probe.ok()) {
      direct_skip_ = probe.status().ToString();
      return File();
    }
    return testing::ScratchFile(size, seed, O_DIRECT);
  }

  void SubmitAll(const std::vector<Request*>& reqs) {
    SubmitResult r = engine_->Submit(reqs);
    ASSERT_EQ(r.accepted, reqs.size()) << r.status.ToString();
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  }

  // Submits one request and reaps it.
  void RunOne(Request& req) {
    SubmitAll({&req});
    testing::Reaped got = testing::ReapAll(*engine_, 1);
    ASSERT_EQ(got.order.size(), 1U) << got.error.ToString();
    ASSERT_EQ(got.order[0], &req);
  }

  std::unique_ptr<Engine> engine_;
  std::string direct_skip_;
};

}  // namespace aiokit::conformance

#endif  // AIOKIT_TESTS_CONFORMANCE_CONFORMANCE_H_
