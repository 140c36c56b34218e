// Helpers for the device layer's tests: the engines and reaping modes every
// device test runs on, files filled with a pattern, and a loop device for the
// block-device cases.

#ifndef AIOKIT_TESTS_DEVICE_DEVICE_UTIL_H_
#define AIOKIT_TESTS_DEVICE_DEVICE_UTIL_H_

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "test_util.h"

namespace aiokit::testing {

// "engine/mode": each plain engine with the caller reaping ("caller"), one
// completion thread ("thread") and two ("two").
inline std::vector<std::string> DeviceParams() {
  std::vector<std::string> out;
  for (const char* e : {"linux-aio", "io_uring", "threads", "sync"}) {
    for (const char* m : {"caller", "thread", "two"}) {
      out.push_back(std::string(e) + "/" + m);
    }
  }
  return out;
}

// The options a parameter names, with a short poll interval so that a test's
// waits notice a release promptly.
inline DeviceOptions DeviceOptionsFor(const std::string& param) {
  DeviceOptions o;
  const size_t slash = param.find('/');
  Result<EngineKind> kind = ParseEngineKind(param.substr(0, slash));
  o.engine.kind = kind.ok() ? *kind : EngineKind::kAuto;
  o.engine.queue_depth = 64;
  const std::string mode = param.substr(slash + 1);
  o.completion_threads = mode == "caller" ? 0 : (mode == "thread" ? 1 : 2);
  o.poll_interval = std::chrono::milliseconds(20);
  return o;
}

// A named file under TestDir() holding `size` bytes of pattern `seed`,
// removed when the object goes.
class PatternFile {
 public:
  PatternFile(size_t size, uint64_t seed) {
    std::string templ = TestDir() + "/aiokit-device-XXXXXX";
    const int fd = ::mkostemp(templ.data(), O_CLOEXEC);
    if (fd < 0) {
      ADD_FAILURE() << "mkostemp in " << TestDir();
      return;
    }
    path_ = templ;
    std::string data(size, '\0');
    FillPattern(data.data(), size, seed);
    if (size != 0) {
      EXPECT_EQ(::pwrite(fd, data.data(), size, 0), static_cast<ssize_t>(size));
    }
    EXPECT_EQ(::fsync(fd), 0);
    ::close(fd);
  }
  ~PatternFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  PatternFile(const PatternFile&) = delete;
  PatternFile& operator=(const PatternFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// True when a Device::Open error means this machine refuses the engine or
// O_DIRECT on the test directory: the test skips.
inline bool DeviceRefusedHere(const Status& s) {
  return EngineRefusedHere(s) ||
         s.context().find("refuses O_DIRECT") != std::string::npos;
}

// A loop device over a file (root only), detached when the object goes.
class LoopDevice {
 public:
  // Empty path() with the reason in why() when it cannot be made here.
  explicit LoopDevice(const std::string& backing) {
    if (::geteuid() != 0) {
      why_ = "loop devices need root";
      return;
    }
    const std::string cmd = "losetup -f --show '" + backing + "' 2>/dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (p == nullptr) {
      why_ = "popen(losetup) failed";
      return;
    }
    char line[256] = {};
    if (std::fgets(line, sizeof(line), p) != nullptr) {
      path_ = line;
      while (!path_.empty() && (path_.back() == '\n' || path_.back() == ' ')) {
        path_.pop_back();
      }
    }
    if (::pclose(p) != 0 || path_.rfind("/dev/loop", 0) != 0) {
      why_ = "losetup -f --show could not attach a loop device here";
      path_.clear();
    }
  }
  ~LoopDevice() {
    if (path_.empty()) return;
    const std::string cmd = "losetup -d " + path_ + " 2>/dev/null";
    (void)!std::system(cmd.c_str());  // NOLINT(concurrency-mt-unsafe)
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  const std::string& path() const { return path_; }
  const std::string& why() const { return why_; }

 private:
  std::string path_;
  std::string why_;
};

}  // namespace aiokit::testing

// Declares `std::unique_ptr<aiokit::Device> var` opened on `path` with
// `options`; skips the test when this machine refuses the engine or
// O_DIRECT, fails it on any other error.
#define AIOKIT_OPEN_DEVICE_OR_SKIP(var, path, options)                      \
  std::unique_ptr<::aiokit::Device> var;                                    \
  if (::aiokit::Result<std::unique_ptr<::aiokit::Device>> var##_opened =    \
          ::aiokit::Device::Open(path, options);                            \
      var##_opened.ok()) {                                                  \
    (var) = std::move(*var##_opened);                                       \
  } else if (::aiokit::testing::DeviceRefusedHere(var##_opened.status())) { \
    GTEST_SKIP() << "refused here: " << var##_opened.status().ToString();   \
  } else {                                                                  \
    FAIL() << "Device::Open(" << (path)                                     \
           << "): " << var##_opened.status().ToString();                    \
  }                                                                         \
  ASSERT_NE(var, nullptr)

#endif  // AIOKIT_TESTS_DEVICE_DEVICE_UTIL_H_
