#include "aiokit/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "test_util.h"

namespace aiokit {
namespace {

size_t CountEntries(const std::string& dir, const std::string& prefix) {
  size_t n = 0;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = ::readdir(d)) {
    if (std::string(e->d_name).rfind(prefix, 0) == 0) ++n;
  }
  ::closedir(d);
  return n;
}

TEST(AlignmentTest, UnknownAlignmentChecksNothing) {
  EXPECT_TRUE(Alignment{}.Check(reinterpret_cast<void*>(1), 1, 1).ok());
}

TEST(AlignmentTest, NamesTheRuleAndTheValues) {
  Alignment a{512, 4096};
  EXPECT_TRUE(a.Check(reinterpret_cast<void*>(0x1000), 8192, 4096).ok());
  Status s = a.Check(reinterpret_cast<void*>(0x1000), 100, 4096);
  ASSERT_TRUE(s.Is(Errc::kMisaligned));
  EXPECT_NE(s.context().find("offset is not"), std::string::npos)
      << s.ToString();
  EXPECT_NE(s.context().find("offset 100"), std::string::npos) << s.ToString();
  EXPECT_NE(s.context().find("4096 bytes"), std::string::npos) << s.ToString();
  EXPECT_NE(s.context().find("address 0x1000"), std::string::npos)
      << s.ToString();
}

TEST(FileTest, OpenMissingFileSaysWhichPath) {
  Result<File> f = File::Open("/nonexistent/aiokit-test", O_RDONLY);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().Errno(), ENOENT);
  EXPECT_NE(f.status().ToString().find("/nonexistent/aiokit-test"),
            std::string::npos);
  EXPECT_NE(f.status().ToString().find("O_RDONLY"), std::string::npos);
}

TEST(FileTest, ODirectOnAFileSystemWithoutItSaysSo) {
  // procfs has no O_DIRECT on any kernel: open(2) answers EINVAL.
  Result<File> f = File::Open("/proc/self/status", O_RDONLY | O_DIRECT);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().Errno(), EINVAL) << f.status().ToString();
  EXPECT_NE(f.status().ToString().find("the file system refuses O_DIRECT"),
            std::string::npos)
      << f.status().ToString();
  EXPECT_NE(f.status().ToString().find("/proc/self/status"), std::string::npos);
}

TEST(FileTest, DirectFileKnowsItsAlignment) {
  Result<File> f = File::CreateTemporary(testing::TestDir(), O_DIRECT);
  if (!f.ok()) {
    GTEST_SKIP() << "no O_DIRECT in " << testing::TestDir() << ": "
                 << f.status().ToString();
  }
  EXPECT_TRUE(f->direct());
  const Alignment a = f->alignment();
  ASSERT_TRUE(a.known());
  EXPECT_EQ(a.memory & (a.memory - 1), 0U);
  EXPECT_EQ(a.offset & (a.offset - 1), 0U);
  EXPECT_LE(a.offset, 65536U);
  Result<DirectIoInfo> info = DiscoverDirectIo(f->fd());
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->supported);
  EXPECT_EQ(info->alignment.offset, a.offset);
}

TEST(FileTest, BufferedFileHasNoAlignmentToCheck) {
  Result<File> f = File::CreateTemporary(testing::TestDir(), 0);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_FALSE(f->direct());
  EXPECT_FALSE(f->alignment().known());
}

TEST(FileTest, TemporaryFileLeavesNothingBehind) {
  const std::string dir = testing::TestDir();
  const size_t before = CountEntries(dir, "aiokit-");
  {
    Result<File> f = File::CreateTemporary(dir, 0);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_EQ(::pwrite(f->fd(), "x", 1, 4095), 1);
    Result<uint64_t> size = f->Size();
    ASSERT_TRUE(size.ok());
    EXPECT_EQ(*size, 4096U);
    EXPECT_EQ(CountEntries(dir, "aiokit-"), before);
  }
  EXPECT_EQ(CountEntries(dir, "aiokit-"), before);
}

TEST(FileTest, CloseTwiceIsHarmlessAndMoveTransfersOwnership) {
  Result<File> f = File::CreateTemporary(testing::TestDir(), 0);
  ASSERT_TRUE(f.ok());
  File g = std::move(*f);
  EXPECT_GE(g.fd(), 0);
  EXPECT_EQ(f->fd(), -1);  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(g.Close().ok());
  EXPECT_TRUE(g.Close().ok());
  EXPECT_EQ(g.fd(), -1);
}

TEST(AlignedBufferTest, IsAlignedAndZeroed) {
  Result<AlignedBuffer> b = AlignedBuffer::Allocate(10000, 4096);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % 4096, 0U);
  EXPECT_EQ(b->size(), 10000U);
  for (size_t i = 0; i < b->size(); ++i) ASSERT_EQ(b->data()[i], 0);
}

// The THP mode the kernel offers ("always", "madvise", "never"), or "" when
// it has none.
std::string ThpMode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  if (!std::getline(in, line)) return "";
  const size_t open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close == std::string::npos) return "";
  return line.substr(open + 1, close - open - 1);
}

// Kilobytes of anonymous huge pages /proc/self/smaps shows for the mapping
// that holds `p` (-1 when none holds it).
long AnonHugeKbAt(const void* p) {
  std::ifstream in("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  const std::string key = "AnonHugePages:";
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    // A mapping's first line: "lo-hi perms offset dev inode [path]".
    char* end = nullptr;
    const unsigned long lo = std::strtoul(line.c_str(), &end, 16);
    if (end != line.c_str() && *end == '-') {
      const unsigned long hi = std::strtoul(end + 1, &end, 16);
      if (*end == ' ') {
        inside = lo <= at && at < hi;
        continue;
      }
    }
    if (inside && line.rfind(key, 0) == 0) {
      return std::strtol(line.c_str() + key.size(), nullptr, 10);
    }
  }
  return -1;
}

// A buffer of 1 MiB or more is huge-page aligned and asks for transparent
// huge pages: a request's buffer then reaches the device in a few physically
// contiguous segments.
TEST(AlignedBufferTest, ALargeBufferLiesOnHugePagesWhereTheKernelAllows) {
  Result<AlignedBuffer> b = AlignedBuffer::Allocate(4 << 20, 4096);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % (2 << 20), 0U);
  for (size_t i = 0; i < b->size(); i += 512) ASSERT_EQ(b->data()[i], 0);
  Result<BufferPool> pool = BufferPool::Create(8, 128 << 10);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(pool->buffer(0)) % (2 << 20), 0U);
  Result<AlignedBuffer> small = AlignedBuffer::Allocate(64 << 10, 4096);
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->size(), size_t{64} << 10);
  const std::string mode = ThpMode();
  if (mode != "always" && mode != "madvise") {
    GTEST_SKIP() << "transparent huge pages are \"" << mode
                 << "\" here: the buffers are on 4 KiB pages";
  }
  EXPECT_GE(AnonHugeKbAt(b->data()), 2048)
      << "THP is \"" << mode << "\" and no huge page backs a 4 MiB buffer";
}

TEST(AlignedBufferTest, RefusesAnAlignmentThatIsNotAPowerOfTwo) {
  Result<AlignedBuffer> b = AlignedBuffer::Allocate(4096, 3000);
  ASSERT_FALSE(b.ok());
  EXPECT_TRUE(b.status().Is(Errc::kInvalidArgument));
  EXPECT_NE(b.status().ToString().find("power of two"), std::string::npos);
}

// README's pattern: a buffer aligned as the file says, for a buffered file
// whose alignment is 0 ("not known, nothing is checked").
TEST(AlignedBufferTest, AlignmentZeroOfABufferedFileGivesAUsableBuffer) {
  Result<File> f = File::CreateTemporary(testing::TestDir(), 0);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->alignment().memory, 0U);
  Result<AlignedBuffer> b =
      AlignedBuffer::Allocate(4096, f->alignment().memory);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data()) % kDefaultBufferAlignment,
            0U);
  Result<BufferPool> pool = BufferPool::Create(2, 4096, 0);
  ASSERT_TRUE(pool.ok()) << pool.status().ToString();
  EXPECT_EQ(
      reinterpret_cast<uintptr_t>(pool->buffer(1)) % kDefaultBufferAlignment,
      0U);
}

}  // namespace
}  // namespace aiokit
