#include "aiokit/status.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <string>

namespace aiokit {
namespace {

TEST(StatusTest, DefaultIsOkAndSaysSo) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(ToNegativeErrno(s), 0);
}

TEST(StatusTest, ErrnoStatusCarriesContextAndTheErrno) {
  Status s = Status::FromErrno(ENOENT, "open(\"/nope\", O_RDONLY)");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.Errno(), ENOENT);
  EXPECT_EQ(ToNegativeErrno(s), -ENOENT);
  const std::string text = s.ToString();
  EXPECT_NE(text.find("open(\"/nope\", O_RDONLY)"), std::string::npos) << text;
  EXPECT_NE(text.find("ENOENT (No such file or directory)"), std::string::npos)
      << text;
}

TEST(StatusTest, LibraryConditionsHaveTheirOwnCategory) {
  Status s = Status::Error(Errc::kQueueFull, "submit");
  EXPECT_TRUE(s.Is(Errc::kQueueFull));
  EXPECT_FALSE(s.Is(Errc::kTimedOut));
  EXPECT_EQ(s.Errno(), 0);
  EXPECT_STREQ(s.code().category().name(), "aiokit");
  EXPECT_EQ(s.ToString(), "submit: queue full");
  EXPECT_EQ(ToNegativeErrno(s), -EAGAIN);
  EXPECT_EQ(ToNegativeErrno(Status::Error(Errc::kMisaligned, "")), -EINVAL);
  EXPECT_EQ(ToNegativeErrno(Status::Error(Errc::kShutdown, "")), -ESHUTDOWN);
  EXPECT_EQ(ToNegativeErrno(Status::Error(Errc::kUnsupported, "")),
            -EOPNOTSUPP);
}

TEST(ResultTest, HoldsAValueOrAnError) {
  Result<int> v = 42;
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 42);
  EXPECT_TRUE(v.status().ok());
  Result<int> e = Status::Error(Errc::kInvalidArgument, "bad");
  ASSERT_FALSE(e.ok());
  EXPECT_TRUE(e.status().Is(Errc::kInvalidArgument));
  Result<std::unique_ptr<int>> moved = std::make_unique<int>(7);
  std::unique_ptr<int> p = std::move(moved).value();
  EXPECT_EQ(*p, 7);
}

// value() on an error is a programming error: it ends the process with the
// error's message, never throws (nothing in aiokit's API does).
TEST(ResultDeathTest, ValueOfAnErrorEndsTheProcessWithTheMessage) {
  Result<int> e = Status::Error(Errc::kInvalidArgument, "queue depth 0");
  EXPECT_DEATH((void)e.value(),
               "Result::value\\(\\) on an error: queue depth 0");
  EXPECT_DEATH((void)*e, "queue depth 0");
}

}  // namespace
}  // namespace aiokit
