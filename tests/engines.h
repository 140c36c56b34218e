// The engines aiokit's suites run on, by name, and the one way a test makes
// one: AIOKIT_MAKE_ENGINE_OR_SKIP (as liburing's test/helpers.h gives its
// tests one way to set up a ring or skip).
//
// A test parameter names an engine, optionally with a variant of its options:
// "linux-aio/nospin". A new engine or variant joins every suite that runs on
// AllEngines() by being added there.

#ifndef AIOKIT_TESTS_ENGINES_H_
#define AIOKIT_TESTS_ENGINES_H_

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/status.h"
#include "delivery.h"

namespace aiokit::testing {

// Splits "linux-aio/nospin+callback" into the engine name, its variant and
// the delivery mode (delivery.h).
inline std::string EngineName(const std::string& param) {
  return param.substr(0, param.find_first_of("/+"));
}
inline std::string EngineVariant(const std::string& param) {
  const std::string p = WithoutDelivery(param);
  const size_t slash = p.find('/');
  return slash == std::string::npos ? "" : p.substr(slash + 1);
}

// Every engine, each with its default options and then with each variant
// (the sync engine has none):
// linux-aio's sleep-only wait path ("nospin"); io_uring promised one thread
// ("single": SINGLE_ISSUER, registered ring fd; "defer": DEFER_TASKRUN too),
// with a kernel thread polling its submission queue ("sqpoll") and with
// COOP_TASKRUN for any thread ("coop", the libaio drop-in's setting); the
// threads engine keeping each fd's requests in order ("ordered").
// io_uring is listed also where it is not built: making it then fails with
// kUnsupported, and the test says so as it skips.
inline const std::vector<std::string>& AllEngines() {
  static const std::vector<std::string> kAll = {
      "linux-aio",       "linux-aio/nospin",
      "io_uring",        "io_uring/single",
      "io_uring/defer",  "io_uring/sqpoll",
      "io_uring/coop",   "threads",
      "threads/ordered", "sync",
  };
  return kAll;
}

// Each plain engine in each delivery mode that is not Reap (delivery.h):
// "linux-aio+callback", "linux-aio+thread", ...
inline std::vector<std::string> DeliveryEngines() {
  std::vector<std::string> out;
  for (const std::string& p : AllEngines()) {
    if (EngineVariant(p).empty()) {
      out.push_back(p + "+callback");
      out.push_back(p + "+thread");
    }
  }
  return out;
}

// The entries of AllEngines() for which keep(param) is true, in its order.
template <typename Keep>
std::vector<std::string> EnginesWhere(Keep keep) {
  std::vector<std::string> out;
  for (const std::string& p : AllEngines()) {
    if (keep(p)) out.push_back(p);
  }
  return out;
}

// Each engine once, with its default options: "linux-aio", "io_uring",
// "threads".
inline std::vector<std::string> PlainEngines() {
  return EnginesWhere(
      [](const std::string& p) { return EngineVariant(p).empty(); });
}

// True for a variant that promises the engine one thread ("single",
// "defer"): a test that calls the engine from several threads skips it.
inline bool OneThreadPromised(const std::string& param) {
  const std::string v = EngineVariant(param);
  return v == "single" || v == "defer";
}

// Makes the engine a test parameter names, with the parameter's variant
// applied to `options`: "/nospin" never spins before sleeping, "/single"
// promises one thread (io_uring: SINGLE_ISSUER), "/defer" adds
// DEFER_TASKRUN, "/coop" sets COOP_TASKRUN, "/ordered" keeps each fd's
// requests in order (threads), "/sqpoll" has a kernel thread poll the
// submission queue.
inline Result<std::unique_ptr<Engine>> MakeNamedEngine(
    const std::string& param, EngineOptions options = {}) {
  Result<EngineKind> kind = ParseEngineKind(EngineName(param));
  if (!kind.ok()) return kind.status();
  options.kind = *kind;
  const std::string variant = EngineVariant(param);
  if (variant == "nospin") {
    options.spin_before_wait = std::chrono::microseconds(0);
  } else if (variant == "single") {
    options.single_thread = true;
  } else if (variant == "defer") {
    options.single_thread = true;
    options.defer_taskrun = true;
  } else if (variant == "coop") {
    options.coop_taskrun = true;
  } else if (variant == "ordered") {
    options.threads_ordered_per_fd = true;
  } else if (variant == "sqpoll") {
    options.sqpoll = true;
    options.sqpoll_idle = std::chrono::milliseconds(10);
  } else if (!variant.empty()) {
    // Not the default engine under a misspelt name.
    return Status::Error(Errc::kInvalidArgument,
                         "test parameter \"" + param + "\": no variant \"" +
                             variant +
                             "\" (nospin, single, defer, coop, ordered, "
                             "sqpoll)");
  }
  return MakeDelivering(DeliveryMode(param), options);
}

// True when `s` (from making an engine) says this machine or process refuses
// that engine: not built or not offered (kUnsupported), a kernel without it
// (ENOSYS), a seccomp filter, container policy or kernel.io_uring_disabled
// (EPERM), a security module (EACCES). A test skips.
inline bool EngineRefusedHere(const Status& s) {
  return s.Is(Errc::kUnsupported) ||
         s.code() == std::errc::operation_not_permitted ||
         s.code() == std::errc::permission_denied ||
         s.code() == std::errc::function_not_supported;
}

// A test parameter as a gtest name: '-', '/' and '+' become '_'.
inline std::string ParamName(std::string name) {
  for (char& c : name) {
    if (c == '-' || c == '/' || c == '+') c = '_';
  }
  return name;
}

// The name generator for a suite whose parameter is an engine name.
inline std::string EngineParamName(
    const ::testing::TestParamInfo<std::string>& info) {
  return ParamName(info.param);
}

}  // namespace aiokit::testing

// Declares `std::unique_ptr<aiokit::Engine> var` holding the engine that
// `param` names, made with `options` (MakeNamedEngine). When this machine
// refuses that engine (EngineRefusedHere) the test is skipped with the
// reason; any other error, or no engine, fails it. Either way the enclosing
// function returns, so use it in a test body, SetUp or another function
// returning void whose caller returns when IsSkipped() or HasFatalFailure().
#define AIOKIT_MAKE_ENGINE_OR_SKIP(var, param, options)                       \
  std::unique_ptr<::aiokit::Engine> var;                                      \
  if (::aiokit::Result<std::unique_ptr<::aiokit::Engine>> var##_made =        \
          ::aiokit::testing::MakeNamedEngine(param, options);                 \
      var##_made.ok()) {                                                      \
    (var) = std::move(*var##_made);                                           \
  } else if (::aiokit::testing::EngineRefusedHere(var##_made.status())) {     \
    GTEST_SKIP() << (param)                                                   \
                 << " refused here: " << var##_made.status().ToString();      \
  } else {                                                                    \
    FAIL() << "making " << (param) << ": " << var##_made.status().ToString(); \
  }                                                                           \
  ASSERT_NE(var, nullptr) << "making " << (param) << ": no engine, no error"

#endif  // AIOKIT_TESTS_ENGINES_H_
