#include "aiokit/request.h"

#include <gtest/gtest.h>
#include <linux/aio_abi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace aiokit {
namespace {

TEST(IovecVectorTest, FourInlineThenGrowsOnTheHeap) {
  IovecVector v;
  char b[8];
  for (int i = 0; i < 4; ++i) v.emplace_back(b + i, 1);
  EXPECT_TRUE(v.is_inline());
  EXPECT_EQ(v.capacity(), 4U);
  v.emplace_back(b + 4, 2);
  EXPECT_FALSE(v.is_inline());
  ASSERT_EQ(v.size(), 5U);
  EXPECT_EQ(v[4].iov_base, b + 4);
  EXPECT_EQ(v[0].iov_base, b);
  EXPECT_EQ(v.total_bytes(), 6U);
}

TEST(IovecVectorTest, CopyAndMoveKeepTheElements) {
  char b[16];
  for (size_t n : {size_t{2}, size_t{7}}) {
    IovecVector v;
    for (size_t i = 0; i < n; ++i) v.emplace_back(b + i, i + 1);
    IovecVector copy = v;
    ASSERT_EQ(copy.size(), n);
    EXPECT_NE(copy.data(), v.data());
    IovecVector moved = std::move(v);
    ASSERT_EQ(moved.size(), n);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_EQ(moved[i].iov_base, b + i);
      EXPECT_EQ(copy[i].iov_len, i + 1);
    }
    // A moved-from vector is empty.
    // NOLINTNEXTLINE(bugprone-use-after-move,clang-analyzer-cplusplus.Move)
    EXPECT_EQ(v.size(), 0U);
    IovecVector assigned;
    assigned = copy;
    EXPECT_EQ(assigned.total_bytes(), copy.total_bytes());
  }
}

TEST(RequestTest, PrepFillsTheDescriptionAndResetsTheResult) {
  char buf[512];
  Request r;
  r.rval = 7;
  r.PrepRead(3, buf, sizeof(buf), 4096);
  EXPECT_EQ(r.op, Op::kRead);
  EXPECT_EQ(r.fd, 3);
  EXPECT_EQ(r.offset, 4096U);
  EXPECT_EQ(r.length, 512U);
  ASSERT_EQ(r.iov.size(), 1U);
  EXPECT_EQ(r.iov[0].iov_base, buf);
  EXPECT_EQ(r.rval, kNotCompleted);
  EXPECT_EQ(r.get_return_value(), -1000);
  EXPECT_FALSE(r.in_flight());
  EXPECT_FALSE(r.completed());
  EXPECT_TRUE(r.Validate().ok());
}

TEST(RequestTest, TheIocbIsTheFirstMember) {
  Request r;
  EXPECT_EQ(static_cast<void*>(&r), static_cast<void*>(&r.iocb));
}

TEST(RequestTest, ValidateRefusesInconsistentRequests) {
  char buf[64];
  Request r;
  r.PrepRead(3, buf, sizeof(buf), 0);
  r.length = 32;  // no longer the buffer's length
  EXPECT_TRUE(r.Validate().Is(Errc::kInvalidArgument));
  iovec v[2] = {{buf, 16}, {buf + 16, 16}};
  Request w;
  w.PrepWritev(3, v, 2, 0);
  EXPECT_TRUE(w.Validate().ok());
  w.length = 33;
  EXPECT_TRUE(w.Validate().Is(Errc::kInvalidArgument));
  Request f;
  f.PrepRead(3, buf, 16, 0);
  f.SetRwFlags(0x8000);
  EXPECT_TRUE(f.Validate().Is(Errc::kInvalidArgument));
}

TEST(RequestTest, AlignmentIsCheckedWhenKnown) {
  alignas(4096) static char buf[8192];
  Request r;
  r.PrepRead(3, buf, 4096, 4096);
  r.SetAlignment({512, 4096});
  EXPECT_TRUE(r.Validate().ok());
  r.PrepRead(3, buf + 512, 4096, 4096);
  r.SetAlignment({512, 4096});
  EXPECT_TRUE(r.Validate().ok());  // memory alignment is 512
  r.PrepRead(3, buf + 100, 4096, 4096);
  r.SetAlignment({512, 4096});
  Status s = r.Validate();
  ASSERT_TRUE(s.Is(Errc::kMisaligned));
  EXPECT_NE(s.ToString().find("buffer address is not"), std::string::npos)
      << s.ToString();
  EXPECT_NE(s.ToString().find("read fd=3 offset=4096 length=4096"),
            std::string::npos)
      << s.ToString();
  iovec v[2] = {{buf, 4096}, {buf + 4096, 100}};
  Request rv;
  rv.PrepReadv(3, v, 2, 0);
  rv.SetAlignment({512, 512});
  EXPECT_TRUE(rv.Validate().Is(Errc::kMisaligned));
}

TEST(RequestTest, DescribeSaysWhatWasAskedAndWhatHappened) {
  char buf[16] = {};
  Request r;
  r.PrepWrite(9, buf, sizeof(buf), 100);
  EXPECT_NE(Describe(r).find("write fd=9 offset=100 length=16"),
            std::string::npos);
  EXPECT_NE(Describe(r).find("not submitted"), std::string::npos);
  r.engine_state = 2;
  r.rval = -ENOSPC;
  EXPECT_NE(Describe(r).find("ENOSPC"), std::string::npos) << Describe(r);
  r.rval = 16;
  EXPECT_NE(Describe(r).find("16 bytes"), std::string::npos) << Describe(r);
  Request f;
  f.PrepFsync(4);
  EXPECT_EQ(Describe(f), "fsync fd=4: not submitted");
}

TEST(RequestTest, CopyIsIdle) {
  char buf[16];
  Request r;
  r.PrepRead(1, buf, 16, 0);
  r.engine_state = 1;
  Request copy;
  copy = r;
  EXPECT_FALSE(copy.in_flight());
  EXPECT_EQ(copy.length, 16U);
}

// Regression: a copy of a completed request kept its rval and origin, though
// request.h says the copy is idle. Now it reads as never submitted, and its
// iocb describes it (its own iovec array, not the original's).
TEST(RequestTest, ACopyOfACompletedRequestIsIdleWithItsOwnIocb) {
  char a[16];
  char b[16];
  const iovec v[2] = {{a, 16}, {b, 16}};
  Request r;
  r.PrepReadv(3, v, 2, 4096);
  r.iocb.aio_data = 77;
  r.rval = 32;
  r.origin = Origin::kEngine;
  r.engine_state = request_state::kCompleted;
  auto check = [&](const Request& copy) {
    EXPECT_FALSE(copy.in_flight());
    EXPECT_FALSE(copy.completed());
    EXPECT_EQ(copy.rval, kNotCompleted);
    EXPECT_EQ(copy.origin, Origin::kNone);
    EXPECT_EQ(copy.length, 32U);
    EXPECT_EQ(copy.iocb.aio_lio_opcode, IOCB_CMD_PREADV);
    EXPECT_EQ(copy.iocb.aio_buf, reinterpret_cast<uint64_t>(copy.iov.data()));
    EXPECT_NE(copy.iocb.aio_buf, r.iocb.aio_buf);
    EXPECT_EQ(copy.iocb.aio_nbytes, 2U);
    EXPECT_EQ(copy.iocb.aio_offset, 4096);
    EXPECT_EQ(copy.iocb.aio_data, 77U);
    EXPECT_NE(Describe(copy).find("not submitted"), std::string::npos)
        << Describe(copy);
  };
  const Request constructed(r);
  check(constructed);
  Request assigned;
  assigned = r;
  check(assigned);
}

// PrepRead and PrepWrite write the iocb by a path of their own: it must be
// byte for byte what the general one (FillIocb, as a copy runs it) writes, and
// leave nothing of an earlier request's options.
TEST(RequestTest, PrepReadAndPrepWriteBuildTheIocbTheGeneralPathBuilds) {
  char buf[512] = {};
  for (const bool write : {false, true}) {
    Request r;
    r.PrepReadv(3, nullptr, 0, 4096);
    r.SetEventFd(11);
    r.SetIoPriority(IoPriority(IoPrioClass::kIdle, 0));
    r.SetRwFlags(rwf::kDsync);
    r.iocb.aio_data = 7;
    if (write) {
      r.PrepWrite(9, buf, sizeof(buf), 8192);
    } else {
      r.PrepRead(9, buf, sizeof(buf), 8192);
    }
    const Request copy(r);
    EXPECT_EQ(std::memcmp(&copy.iocb, &r.iocb, sizeof(r.iocb)), 0)
        << (write ? "PrepWrite" : "PrepRead");
    EXPECT_EQ(r.iocb.aio_flags, 0U);
    EXPECT_EQ(r.iocb.aio_rw_flags, 0);
    EXPECT_EQ(r.iocb.aio_data, 0U);
    EXPECT_EQ(r.iov.size(), 1U);
  }
}

// Prep* build the iocb as libaio's io_prep_* do, and clear aio_data; Set*
// add the eventfd and priority flags.
TEST(RequestTest, PrepAndSetFillTheIocbAsLibaioDoes) {
  char buf[512] = {};
  Request r;
  r.iocb.aio_data = 5;
  r.PrepWrite(9, buf, sizeof(buf), 8192);
  EXPECT_EQ(r.iocb.aio_lio_opcode, IOCB_CMD_PWRITE);
  EXPECT_EQ(r.iocb.aio_fildes, 9U);
  EXPECT_EQ(r.iocb.aio_buf, reinterpret_cast<uint64_t>(buf));
  EXPECT_EQ(r.iocb.aio_nbytes, sizeof(buf));
  EXPECT_EQ(r.iocb.aio_offset, 8192);
  EXPECT_EQ(r.iocb.aio_data, 0U);
  EXPECT_EQ(r.iocb.aio_flags, 0U);
  r.SetEventFd(11);
  r.SetIoPriority(IoPriority(IoPrioClass::kIdle, 0));
  r.SetRwFlags(rwf::kDsync);
  EXPECT_EQ(r.iocb.aio_flags,
            static_cast<uint32_t>(IOCB_FLAG_RESFD | IOCB_FLAG_IOPRIO));
  EXPECT_EQ(r.iocb.aio_resfd, 11U);
  EXPECT_EQ(r.iocb.aio_reqprio, static_cast<int16_t>(3 << 13));
  EXPECT_EQ(r.iocb.aio_rw_flags, static_cast<int>(rwf::kDsync));
  r.SetEventFd(-1);
  EXPECT_EQ(r.iocb.aio_flags, static_cast<uint32_t>(IOCB_FLAG_IOPRIO));
  r.PrepFdatasync(9);
  EXPECT_EQ(r.iocb.aio_lio_opcode, IOCB_CMD_FDSYNC);
  EXPECT_EQ(r.iocb.aio_buf, 0U);
  EXPECT_EQ(r.iocb.aio_flags, 0U);
}

TEST(IoPriorityTest, EncodesClassAndLevelAsTheKernelDoes) {
  EXPECT_EQ(IoPriority(IoPrioClass::kBestEffort, 4), (2 << 13) | 4);
  EXPECT_EQ(IoPriority(IoPrioClass::kIdle, 0), 3 << 13);
}

}  // namespace
}  // namespace aiokit
