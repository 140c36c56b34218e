// Conformance, O_DIRECT and alignment: direct and polled I/O, and misaligned
// requests refused before submission or explained after the kernel refuses
// them.

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/request.h"
#include "conformance/conformance.h"
#include "sys/syscalls.h"
#include "test_util.h"

namespace aiokit::conformance {
namespace {

using testing::ExpectExactlyOnce;
using testing::FirstMismatch;
using testing::ReapAll;
using testing::ScopedFaults;

TEST_P(ConformanceTest, DirectWriteThenReadBackByteForByte) {
  File f = DirectFile(0, 0);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  ASSERT_TRUE(f.direct());
  ASSERT_TRUE(f.alignment().known());
  const size_t len = 16 * kBlock;
  Result<AlignedBuffer> out =
      AlignedBuffer::Allocate(len, f.alignment().memory);
  Result<AlignedBuffer> in = AlignedBuffer::Allocate(len, f.alignment().memory);
  ASSERT_TRUE(out.ok() && in.ok());
  testing::FillPattern(out->data(), len, 5);
  Request w;
  w.PrepWrite(f, out->data(), len, 8 * kBlock);
  RunOne(w);
  ASSERT_EQ(w.rval, static_cast<int64_t>(len)) << Describe(w);
  Request r;
  r.PrepRead(f, in->data(), len, 8 * kBlock);
  RunOne(r);
  ASSERT_EQ(r.rval, static_cast<int64_t>(len)) << Describe(r);
  EXPECT_EQ(std::memcmp(in->data(), out->data(), len), 0);
}

TEST_P(ConformanceTest, HipriDirectReadCompletes) {
  File f = DirectFile(64 * 1024, 8);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  Result<AlignedBuffer> buf =
      AlignedBuffer::Allocate(kBlock, f.alignment().memory);
  ASSERT_TRUE(buf.ok());
  Request r;
  r.PrepRead(f, buf->data(), kBlock, kBlock);
  r.SetRwFlags(rwf::kHipri);
  RunOne(r);
  // No variant here polls (IOPOLL): kernel AIO clears RWF_HIPRI, and the
  // other engines drop it likewise, so the read simply completes.
  ASSERT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  EXPECT_EQ(FirstMismatch(buf->data(), kBlock, 8, kBlock), -1);
}

TEST_P(ConformanceTest, PolledIoOnADeviceWithoutPollQueuesFailsWithEopnotsupp) {
  if (GetParam() != "io_uring") {
    GTEST_SKIP() << "IOPOLL is io_uring's, tried once";
  }
  EngineOptions o;
  o.iopoll = true;
  AIOKIT_MAKE_ENGINE_OR_SKIP(e, GetParam(), o);
  if (!e->GetCapabilities().iopoll) {
    GTEST_SKIP() << "this kernel refuses IORING_SETUP_IOPOLL";
  }
  File f = DirectFile(16 * kBlock, 39);
  if (!direct_skip_.empty()) GTEST_SKIP() << direct_skip_;
  // Whether the device polls: its queue's io_poll in sysfs (a partition's is
  // its disk's).
  struct stat st;
  ASSERT_EQ(::fstat(f.fd(), &st), 0);
  const std::string dev = "/sys/dev/block/" + std::to_string(major(st.st_dev)) +
                          ":" + std::to_string(minor(st.st_dev));
  std::string polls = sys::ReadSmallFile((dev + "/queue/io_poll").c_str());
  if (polls.empty()) {
    polls = sys::ReadSmallFile((dev + "/../queue/io_poll").c_str());
  }
  if (polls.empty()) {
    GTEST_SKIP() << testing::TestDir() << " is not on a block device";
  }
  Result<AlignedBuffer> buf =
      AlignedBuffer::Allocate(kBlock, f.alignment().memory);
  ASSERT_TRUE(buf.ok());
  Request r;
  r.PrepRead(f, buf->data(), kBlock, kBlock);
  Request* p = &r;
  SubmitResult sr = e->Submit({&p, 1});
  ASSERT_EQ(sr.accepted, 1U) << sr.status.ToString();
  ExpectExactlyOnce(ReapAll(*e, 1), {&r});
  if (polls == "1") {
    EXPECT_EQ(r.rval, static_cast<int64_t>(kBlock)) << Describe(r);
  } else {
    EXPECT_EQ(r.rval, -EOPNOTSUPP) << Describe(r);
  }
}

TEST_P(ConformanceTest, MisalignedDirectRequestIsRefusedBeforeSubmission) {
  File f = DirectFile(16 * kBlock, 28);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  const Alignment a = f.alignment();
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(4 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  ScopedFaults faults;  // counts io_submit calls
  Request addr, off, len;
  addr.PrepRead(f, buf->data() + 1, a.offset, 0);
  off.PrepRead(f, buf->data(), a.offset, 1);
  len.PrepRead(f, buf->data(), a.offset + 1, 0);
  SubmitAll({&addr, &off, &len});
  ExpectExactlyOnce(ReapAll(*engine_, 3), {&addr, &off, &len});
  EXPECT_EQ(faults.state().submit_calls.load(), 0)
      << "a misaligned request reached the kernel";
  for (Request* r : {&addr, &off, &len}) {
    EXPECT_EQ(r->rval, -EINVAL) << Describe(*r);
    EXPECT_EQ(r->origin, Origin::kRefused);
    const std::string d = Describe(*r);
    EXPECT_NE(d.find("O_DIRECT"), std::string::npos) << d;
    EXPECT_NE(d.find("address"), std::string::npos) << d;
    EXPECT_NE(d.find(std::to_string(a.offset) + " bytes"), std::string::npos)
        << d;
  }
  EXPECT_NE(Describe(addr).find("buffer address is not"), std::string::npos)
      << Describe(addr);
  EXPECT_NE(Describe(off).find("offset is not"), std::string::npos)
      << Describe(off);
  EXPECT_NE(Describe(len).find("length is not"), std::string::npos)
      << Describe(len);
  // And Validate says the same before any submission.
  Request again;
  again.PrepRead(f, buf->data() + 1, a.offset, 0);
  Status v = again.Validate();
  EXPECT_TRUE(v.Is(Errc::kMisaligned)) << v.ToString();
}

TEST_P(ConformanceTest,
       MisalignedDirectRequestOnARawFdIsExplainedAfterTheKernelRefusesIt) {
  File f = DirectFile(16 * kBlock, 29);
  if (!direct_skip_.empty()) {
    GTEST_SKIP() << direct_skip_;
  }
  Result<AlignedBuffer> buf = AlignedBuffer::Allocate(4 * kBlock, 4096);
  ASSERT_TRUE(buf.ok());
  // A misaligned offset (kernels since 6.x accept some misaligned memory, but
  // never a misaligned offset) on a raw fd, so that the library does not know
  // the alignment and the kernel answers.
  Request r;
  r.PrepRead(f.fd(), buf->data(), f.alignment().offset, 1);
  RunOne(r);
  EXPECT_EQ(r.rval, -EINVAL) << Describe(r);
  EXPECT_EQ(r.origin, Origin::kEngine) << Describe(r);
  EXPECT_NE(Describe(r).find("offset is not"), std::string::npos)
      << Describe(r);
}

}  // namespace
}  // namespace aiokit::conformance
