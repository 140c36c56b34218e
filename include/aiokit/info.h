// aiokit: what this kernel and this process allow, before deploying.
//
// ProbeSystem() answers: which engines are built, which this kernel, container
// and process allow, and why not; what io_uring offers here (features, setup
// flags, registered resources, opcodes); the kernel AIO limits; the locked
// memory limit. ProbePath() answers, for one file or directory: does O_DIRECT
// work there, with which alignment, and does polled I/O (io_uring IOPOLL).
// `aiokit info` prints both.
//
// Each probe makes real calls (io_uring_setup, io_setup, ...) and releases what
// it creates. Thread safety: the functions may be called from any thread.

#ifndef AIOKIT_INFO_H_
#define AIOKIT_INFO_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "aiokit/engine.h"
#include "aiokit/file.h"
#include "aiokit/status.h"

namespace aiokit {

// One engine: built into this aiokit, allowed here, and if not, why.
struct EngineProbe {
  EngineKind kind = EngineKind::kDefault;
  bool built = false;
  bool allowed = false;
  Status reason;      // why not allowed (not built, refused, ...)
  Capabilities caps;  // with default options, when allowed
};

// A named yes/no with the reason when no ("SQPOLL", true, "").
struct Feature {
  std::string name;
  bool available = false;
  std::string detail;  // the errno or condition when not available
};

struct IoUringProbe {
  bool available = false;
  Status reason;                      // when not available
  std::vector<std::string> features;  // IORING_FEAT_* the kernel reports
  std::vector<Feature> setup;         // SQPOLL, IOPOLL, SINGLE_ISSUER, ...
  std::vector<Feature> registration;  // buffers, files, ring fd, eventfd
  std::vector<std::string> opcodes;   // supported IORING_OP_* names
};

struct SystemInfo {
  std::string kernel;                // uname release
  std::string machine;               // uname machine
  std::vector<EngineProbe> engines;  // in auto's order of preference
  EngineKind auto_choice = EngineKind::kDefault;  // what auto picks here
  IoUringProbe io_uring;
  std::string io_uring_disabled;  // kernel.io_uring_disabled ("" if absent)
  std::string aio_max_nr;         // fs.aio-max-nr
  std::string aio_nr;             // fs.aio-nr
  uint64_t memlock_soft = 0;      // RLIMIT_MEMLOCK, bytes (UINT64_MAX: none)
  uint64_t memlock_hard = 0;
};

SystemInfo ProbeSystem();

struct PathInfo {
  std::string path;
  Status error;  // the path cannot be probed at all
  bool is_block_device = false;
  bool direct_ok =
      false;            // O_DIRECT open works (for a directory: a file in it)
  Status direct_error;  // why not
  DirectIoInfo direct;  // alignment, when direct_ok
  Feature iopoll;       // io_uring polled I/O on this file's device
};

PathInfo ProbePath(const std::string& path);

}  // namespace aiokit

#endif  // AIOKIT_INFO_H_
