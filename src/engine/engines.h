// The engine factories, one per engine directory. Kernel types never leave
// those directories.

#ifndef AIOKIT_SRC_ENGINE_ENGINES_H_
#define AIOKIT_SRC_ENGINE_ENGINES_H_

#include <memory>

#include "aiokit/engine.h"
#include "aiokit/info.h"

namespace aiokit::internal {

// io_setup and friends; see src/engine/linux_aio/linux_aio_engine.cc.
Result<std::unique_ptr<Engine>> MakeLinuxAioEngine(
    const EngineOptions& options);

// Worker threads and a ring in the kernel's layout; see
// src/engine/threads/threads_engine.cc.
Result<std::unique_ptr<Engine>> MakeThreadsEngine(const EngineOptions& options);

// The I/O inside Submit; see src/engine/sync/sync_engine.cc.
Result<std::unique_ptr<Engine>> MakeSyncEngine(const EngineOptions& options);

#if AIOKIT_HAVE_IO_URING
// liburing; see src/engine/io_uring/io_uring_engine.cc.
Result<std::unique_ptr<Engine>> MakeIoUringEngine(const EngineOptions& options);
// What io_uring offers here; see src/engine/io_uring/io_uring_probe.cc.
void ProbeIoUring(IoUringProbe* out);
#endif

}  // namespace aiokit::internal

#endif  // AIOKIT_SRC_ENGINE_ENGINES_H_
