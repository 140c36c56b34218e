// Choosing an engine: by options, by AIOKIT_ENGINE, and auto with the reasons
// for each engine passed over.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>
#include <string>
#include <vector>

#include "aiokit/engine.h"
#include "test_util.h"

namespace aiokit {
namespace {

// Sets AIOKIT_ENGINE for the life of the object (tests run one at a time in
// this binary).
class ScopedEnv {
 public:
  explicit ScopedEnv(const char* value) {
    if (const char* old = std::getenv("AIOKIT_ENGINE"))
      old_ = old;  // NOLINT(concurrency-mt-unsafe)
    if (value != nullptr) {
      ::setenv("AIOKIT_ENGINE", value, 1);  // NOLINT(concurrency-mt-unsafe)
    } else {
      ::unsetenv("AIOKIT_ENGINE");  // NOLINT(concurrency-mt-unsafe)
    }
  }
  ~ScopedEnv() {
    if (old_.empty()) {
      ::unsetenv("AIOKIT_ENGINE");  // NOLINT(concurrency-mt-unsafe)
    } else {
      ::setenv("AIOKIT_ENGINE", old_.c_str(),
               1);  // NOLINT(concurrency-mt-unsafe)
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string old_;
};

TEST(EngineKindTest, NamesRoundTrip) {
  for (EngineKind k : {EngineKind::kAuto, EngineKind::kLinuxAio,
                       EngineKind::kIoUring, EngineKind::kThreads}) {
    Result<EngineKind> parsed = ParseEngineKind(EngineKindName(k));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, k);
  }
  EXPECT_EQ(*ParseEngineKind("libaio"), EngineKind::kLinuxAio);
}

TEST(EngineKindTest, UnknownNameIsRefusedWithTheChoices) {
  Result<EngineKind> k = ParseEngineKind("spdk");
  ASSERT_FALSE(k.ok());
  EXPECT_TRUE(k.status().Is(Errc::kInvalidArgument));
  EXPECT_NE(k.status().ToString().find("linux-aio"), std::string::npos);
}

TEST(MakeEngineTest, EnvironmentChoosesWhereTheCallerDoesNot) {
  ScopedEnv env("linux-aio");
  Result<EngineKind> k = ResolveEngineKind({});
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(*k, EngineKind::kLinuxAio);
  // A caller's choice wins over the environment.
  EngineOptions o;
  o.kind = EngineKind::kThreads;
  EXPECT_EQ(*ResolveEngineKind(o), EngineKind::kThreads);
}

TEST(MakeEngineTest, UnsetEnvironmentMeansAuto) {
  ScopedEnv env(nullptr);
  EXPECT_EQ(*ResolveEngineKind({}), EngineKind::kAuto);
}

TEST(MakeEngineTest, BadEnvironmentValueIsAClearError) {
  ScopedEnv env("fastest");
  Result<std::unique_ptr<Engine>> e = MakeEngine({});
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().Is(Errc::kInvalidArgument));
  EXPECT_NE(e.status().ToString().find("AIOKIT_ENGINE=\"fastest\""),
            std::string::npos)
      << e.status().ToString();
}

TEST(MakeEngineTest, AnEngineNotBuiltSaysSo) {
#if AIOKIT_HAVE_IO_URING
  GTEST_SKIP() << "every engine is built here";
#else
  EngineOptions o;
  o.kind = EngineKind::kIoUring;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().Is(Errc::kUnsupported));
  EXPECT_NE(e.status().ToString().find("not built"), std::string::npos)
      << e.status().ToString();
#endif
}

TEST(MakeEngineTest, AutoPicksAnEngineAndSaysWhyOthersWerePassedOver) {
  ScopedEnv env("auto");
  std::vector<EngineRefusal> passed;
  Result<std::unique_ptr<Engine>> e = MakeEngine({}, &passed);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  for (const EngineRefusal& r : passed) {
    EXPECT_NE(r.kind, (*e)->kind());
    EXPECT_FALSE(r.reason.ok());
    EXPECT_FALSE(r.reason.ToString().empty());
  }
}

TEST(MakeEngineTest, AutoWithEveryEngineRefusedListsEveryReason) {
  testing::ScopedFaults faults;
  // As on a kernel built without CONFIG_AIO and CONFIG_IO_URING.
  faults.state().setup_errno = ENOSYS;
  faults.state().uring_setup_errno = ENOSYS;
  faults.state().threads_init_errno = EAGAIN;  // no thread can be created
  EngineOptions o;
  o.kind = EngineKind::kAuto;
  std::vector<EngineRefusal> passed;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o, &passed);
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().Is(Errc::kUnsupported));
  const std::string msg = e.status().ToString();
  EXPECT_NE(msg.find("CONFIG_AIO"), std::string::npos) << msg;
  EXPECT_NE(msg.find("io_uring"), std::string::npos) << msg;
  bool saw_aio = false;
  for (const EngineRefusal& r : passed) {
    if (r.kind == EngineKind::kLinuxAio) {
      saw_aio = true;
      EXPECT_EQ(r.reason.Errno(), ENOSYS);
    }
  }
  EXPECT_TRUE(saw_aio);
}

TEST(MakeEngineTest, AioMaxNrExhaustedNamesTheSysctlsAndTheirValues) {
  testing::ScopedFaults faults;
  faults.state().setup_errno = EAGAIN;
  EngineOptions o;
  o.kind = EngineKind::kLinuxAio;
  o.queue_depth = 64;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  ASSERT_FALSE(e.ok());
  const std::string msg = e.status().ToString();
  EXPECT_EQ(e.status().Errno(), EAGAIN);
  EXPECT_NE(msg.find("fs.aio-max-nr is " +
                     sys::ReadSmallFile("/proc/sys/fs/aio-max-nr")),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("fs.aio-nr"), std::string::npos) << msg;
  EXPECT_NE(msg.find("needs 65"), std::string::npos) << msg;
}

TEST(MakeEngineTest, SeccompRefusalIsNamed) {
  testing::ScopedFaults faults;
  faults.state().setup_errno = EPERM;
  EngineOptions o;
  o.kind = EngineKind::kLinuxAio;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().ToString().find("seccomp"), std::string::npos)
      << e.status().ToString();
}

#if AIOKIT_HAVE_IO_URING
// Each way io_uring can be refused: auto falls back to linux-aio and says why.
struct Refusal {
  const char* name;
  int setup_errno;
  unsigned hide_features;
  const char* io_uring_disabled;
  const char* expect;
};

class IoUringRefusalTest : public ::testing::TestWithParam<Refusal> {};

TEST_P(IoUringRefusalTest, AutoFallsBackToLinuxAioWithTheReason) {
  const Refusal& r = GetParam();
  testing::ScopedFaults faults;
  faults.state().uring_setup_errno = r.setup_errno;
  faults.state().uring_hide_features = r.hide_features;
  if (r.io_uring_disabled != nullptr) {
    faults.state().io_uring_disabled = r.io_uring_disabled;
  }
  EngineOptions o;
  o.kind = EngineKind::kAuto;
  std::vector<EngineRefusal> passed;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o, &passed);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ((*e)->kind(), EngineKind::kLinuxAio);
  ASSERT_EQ(passed.size(), 1U);
  EXPECT_EQ(passed[0].kind, EngineKind::kIoUring);
  const std::string why = passed[0].reason.ToString();
  EXPECT_NE(why.find(r.expect), std::string::npos) << why;
  // Asked for by name, the same refusal is an error, not a fallback.
  o.kind = EngineKind::kIoUring;
  Result<std::unique_ptr<Engine>> named = MakeEngine(o);
  ASSERT_FALSE(named.ok());
  EXPECT_NE(named.status().ToString().find(r.expect), std::string::npos)
      << named.status().ToString();
}

// Feature bits of <linux/io_uring.h>.
constexpr unsigned kFeatNodrop = 1U << 1;
constexpr unsigned kFeatExtArg = 1U << 8;

INSTANTIATE_TEST_SUITE_P(
    Reasons, IoUringRefusalTest,
    ::testing::Values(Refusal{"enosys", ENOSYS, 0, nullptr, "no io_uring"},
                      Refusal{"seccomp", EPERM, 0, "0", "seccomp"},
                      Refusal{"disabled_sysctl", EPERM, 0, "2",
                              "kernel.io_uring_disabled is 2"},
                      Refusal{"group_sysctl", EPERM, 0, "1",
                              "kernel.io_uring_group"},
                      Refusal{"memlock", ENOMEM, 0, nullptr, "RLIMIT_MEMLOCK"},
                      Refusal{"old_kernel_ext_arg", 0, kFeatExtArg, nullptr,
                              "IORING_FEAT_EXT_ARG"},
                      Refusal{"old_kernel_nodrop", 0, kFeatNodrop, nullptr,
                              "IORING_FEAT_NODROP"}),
    [](const ::testing::TestParamInfo<Refusal>& info) {
      return std::string(info.param.name);
    });

TEST(MakeEngineTest, WithoutFallbackAutoFailsWithTheFirstChoicesReason) {
  testing::ScopedFaults faults;
  faults.state().uring_setup_errno = EPERM;
  EngineOptions o;
  o.kind = EngineKind::kAuto;
  o.allow_fallback = false;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().Errno(), EPERM);
  EXPECT_NE(e.status().ToString().find("io_uring"), std::string::npos)
      << e.status().ToString();
  EXPECT_NE(e.status().ToString().find("without fallback"), std::string::npos)
      << e.status().ToString();
}

TEST(MakeEngineTest, FallbackCanBeForbiddenFromTheEnvironment) {
  testing::ScopedFaults faults;
  faults.state().uring_setup_errno = ENOSYS;
  ::setenv("AIOKIT_ENGINE_FALLBACK", "0", 1);
  EngineOptions o;
  o.kind = EngineKind::kAuto;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o);
  ::unsetenv("AIOKIT_ENGINE_FALLBACK");
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().ToString().find("AIOKIT_ENGINE_FALLBACK"),
            std::string::npos)
      << e.status().ToString();
}

TEST(MakeEngineTest, AutoPrefersIoUringWhenItWorks) {
  EngineOptions o;
  o.kind = EngineKind::kAuto;
  std::vector<EngineRefusal> passed;
  Result<std::unique_ptr<Engine>> e = MakeEngine(o, &passed);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  if ((*e)->kind() != EngineKind::kIoUring) {
    // A kernel or container without io_uring: then the reason is given.
    ASSERT_FALSE(passed.empty());
    GTEST_SKIP() << "io_uring refused here: " << passed[0].reason.ToString();
  }
  EXPECT_TRUE(passed.empty());
}
#endif  // AIOKIT_HAVE_IO_URING

}  // namespace
}  // namespace aiokit
