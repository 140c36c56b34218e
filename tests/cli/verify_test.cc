// Verify blocks: aiokit's xxh3 layout and fio's, each catching what it
// promises (tools/aiokit/verify.h). Compatibility with fio itself is checked
// by tests/cli/check_fio_verify.py against Debian's fio.

#include "verify.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aiokit::tool {
namespace {

VerifyFormat Format(std::string_view name) {
  VerifyFormat f;
  EXPECT_TRUE(ParseVerifyName(name, "--verify", &f).ok()) << name;
  return f;
}

const VerifyFormat kXxh3 = Format("xxh3");

TEST(VerifyBlockTest, AWrittenBlockChecks) {
  std::vector<char> b(4096);
  FillVerifyBlock(kXxh3, b.data(), b.size(), 81920, 7);
  EXPECT_EQ(CheckVerifyBlock(kXxh3, b.data(), b.size(), 81920, 7), "");
  EXPECT_EQ(CheckVerifyBlock(kXxh3, b.data(), b.size(), 81920, std::nullopt),
            "");
}

TEST(VerifyBlockTest, EveryFlippedBitIsCaught) {
  std::vector<char> b(512);
  FillVerifyBlock(kXxh3, b.data(), b.size(), 0, 1);
  for (size_t byte = 0; byte < b.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      b[byte] = static_cast<char>(b[byte] ^ (1 << bit));
      ASSERT_NE(CheckVerifyBlock(kXxh3, b.data(), b.size(), 0, 1), "")
          << "byte " << byte << " bit " << bit;
      b[byte] = static_cast<char>(b[byte] ^ (1 << bit));
    }
  }
}

TEST(VerifyBlockTest, MismatchesSayWhatWasExpectedAndFound) {
  std::vector<char> b(4096);
  FillVerifyBlock(kXxh3, b.data(), b.size(), 4096, 2);
  EXPECT_EQ(CheckVerifyBlock(kXxh3, b.data(), b.size(), 4096, 3),
            "offset 4096: expected generation 3, found generation 2 (a lost "
            "write)");
  EXPECT_EQ(CheckVerifyBlock(kXxh3, b.data(), b.size(), 8192, 2),
            "offset 8192: expected the block written for offset 8192, found "
            "the one written for offset 4096 (misplaced write)");
  std::vector<char> zero(4096, 0);
  EXPECT_NE(CheckVerifyBlock(kXxh3, zero.data(), zero.size(), 0, std::nullopt)
                .find("expected a verify header"),
            std::string::npos);
  b[1000] = static_cast<char>(b[1000] + 1);
  EXPECT_NE(CheckVerifyBlock(kXxh3, b.data(), b.size(), 4096, 2)
                .find("(torn or corrupted)"),
            std::string::npos);
  // The same place at another time differs in its payload, not only its
  // header.
  std::vector<char> a(4096), c(4096);
  FillVerifyBlock(kXxh3, a.data(), a.size(), 4096, 1);
  FillVerifyBlock(kXxh3, c.data(), c.size(), 4096, 2);
  EXPECT_NE(std::string(a.begin() + 32, a.end()),
            std::string(c.begin() + 32, c.end()));
}

// Every fio layout that sums its data: any flipped bit of the block, header
// or data, is caught.
TEST(VerifyBlockTest, FioLayoutsCatchEveryFlippedBit) {
  for (const char* name :
       {"md5", "crc64", "crc32c", "crc32c-intel", "sha256", "xxhash"}) {
    const VerifyFormat f = Format(name);
    std::vector<char> b(512);
    FillVerifyBlock(f, b.data(), b.size(), 1 << 20, 5);
    ASSERT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 1 << 20, 5), "") << name;
    for (size_t byte = 0; byte < b.size(); ++byte) {
      for (int bit = 0; bit < 8; ++bit) {
        b[byte] = static_cast<char>(b[byte] ^ (1 << bit));
        ASSERT_NE(CheckVerifyBlock(f, b.data(), b.size(), 1 << 20, 5), "")
            << name << " byte " << byte << " bit " << bit;
        b[byte] = static_cast<char>(b[byte] ^ (1 << bit));
      }
    }
  }
}

TEST(VerifyBlockTest, FioLayoutsKnowPlaceTimeAndType) {
  VerifyFormat f = Format("crc32c");
  f.interval = 1024;
  std::vector<char> b(4096);
  FillVerifyBlock(f, b.data(), b.size(), 8192, 3);
  EXPECT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 8192, 3), "");
  EXPECT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 8192, std::nullopt), "");
  EXPECT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 8192, 4),
            "offset 8192: expected generation 4, found generation 3 (a lost "
            "write)");
  EXPECT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 4096, 3),
            "offset 4096: expected the block written for offset 4096, found "
            "the one written for offset 8192 (misplaced write)");
  // Each interval has its own header: the third names its own offset.
  b[2048 + 1000] = static_cast<char>(b[2048 + 1000] + 1);
  EXPECT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 8192, 3),
            "offset 10240: the crc32c (5) checksum in the header does not "
            "match the block's 980 bytes of data (torn or corrupted)");
  const VerifyFormat md5 = Format("md5");
  std::vector<char> m(4096);
  FillVerifyBlock(md5, m.data(), m.size(), 0, 1);
  EXPECT_EQ(CheckVerifyBlock(f, m.data(), m.size(), 0, 1),
            "offset 0: expected verify type crc32c (5), found md5 (2) "
            "(written with another verify=)");
  std::vector<char> zero(4096, 0);
  EXPECT_NE(CheckVerifyBlock(md5, zero.data(), zero.size(), 0, std::nullopt)
                .find("expected fio's verify header (magic 0xacca)"),
            std::string::npos);
}

TEST(VerifyBlockTest, PatternsAreWrittenAndCheckedFromTheBlocksFirstByte) {
  VerifyFormat f = Format("pattern");
  Result<std::string> p = ParsePattern("\"ab\"0x01", "--verify_pattern");
  ASSERT_TRUE(p.ok());
  f.pattern = *p;
  std::vector<char> b(64);
  FillVerifyBlock(f, b.data(), b.size(), 0, 1);
  EXPECT_EQ(std::string(b.begin(), b.begin() + 7), std::string("ab\x01"
                                                               "ab\x01"
                                                               "a"));
  EXPECT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 0, std::nullopt), "");
  b[4] = 'x';
  EXPECT_EQ(CheckVerifyBlock(f, b.data(), b.size(), 0, std::nullopt),
            "offset 0: expected pattern byte 0x62 at byte 4 of the block, "
            "found 0x78");
  // With fio's header (verify_pattern alone), the pattern after it counts.
  VerifyFormat h;
  h.pattern = "\x11";
  h.UsePatternWithHeader();
  std::vector<char> c(512);
  FillVerifyBlock(h, c.data(), c.size(), 512, 2);
  EXPECT_EQ(CheckVerifyBlock(h, c.data(), c.size(), 512, 2), "");
  c[300] = 0;
  EXPECT_NE(CheckVerifyBlock(h, c.data(), c.size(), 512, 2), "");
}

TEST(VerifyBlockTest, PatternsParseAsFioParsesThem) {
  const auto parsed = [](std::string_view text) {
    Result<std::string> p = ParsePattern(text, "--verify_pattern");
    return p.ok() ? *p : p.status().context();
  };
  EXPECT_EQ(parsed("0xdeadbeef01"), "\xde\xad\xbe\xef\x01");
  EXPECT_EQ(parsed("0xabc"), "\x0a\xbc");
  EXPECT_EQ(parsed("70000"), std::string("\x70\x11\x01"));
  EXPECT_EQ(parsed("0"), std::string(1, '\0'));
  EXPECT_EQ(parsed("'x y'12"), "x y\x0c");
  EXPECT_EQ(parsed("4294967296"),
            "--verify_pattern=4294967296: a decimal number above 2^32-1 "
            "(write it in hex)");
  EXPECT_EQ(parsed("\"ab"),
            "--verify_pattern=\"ab: a string without its closing \"");
  EXPECT_EQ(parsed("0x"), "--verify_pattern=0x: 0x without hex digits");
  EXPECT_EQ(parsed("zz"),
            "--verify_pattern=zz: expected 0x... hex, a decimal number or a "
            "\"quoted string\" at \"zz\"");
}

TEST(VerifyBlockTest, NamesAreFiosOrRefusedWithTheList) {
  VerifyFormat f;
  EXPECT_EQ(ParseVerifyName("sha1", "--verify", &f).context(),
            "--verify=sha1: fio's verify type, which aiokit bench does not "
            "have (it has xxh3, meta, md5, crc64, crc32c, crc32c-intel, "
            "sha256, xxhash, pattern)");
  EXPECT_EQ(ParseVerifyName("bogus", "--verify", &f).context(),
            "--verify=bogus: expected one of xxh3, meta, md5, crc64, crc32c, "
            "crc32c-intel, sha256, xxhash, pattern (or none)");
  ASSERT_TRUE(ParseVerifyName("md5", "--verify", &f).ok());
  EXPECT_TRUE(f.enabled());
  EXPECT_EQ(f.HeaderBytes(), 56U);
  ASSERT_TRUE(ParseVerifyName("none", "--verify", &f).ok());
  EXPECT_FALSE(f.enabled());
}

}  // namespace
}  // namespace aiokit::tool
