// aiokit: asynchronous block and file I/O for storage engines on Linux.
//
// The whole public API; include the narrower headers to depend on less:
// - status.h: errors as values (Status, Result<T>, Errc);
// - file.h: files, O_DIRECT alignment discovery, aligned buffers;
// - request.h: one request (BlueStore's aio_t): the kernel iocb first, fd,
//   iovecs, result;
// - engine.h: the engine interface (BlueStore's aio_queue_t) and MakeEngine;
// - coro.h: C++20 coroutines on an epoll loop, over an engine or a device;
// - device.h: the device layer (BlueStore's KernelDevice and IOContext):
//   groups, flush, discard, deadlines, buffers;
// - fault.h: an engine wrapper that injects faults, for tests;
// - info.h: what this machine and kernel offer;
// - bluestore.h: BlueStore's aio_t / aio_queue_t, on every engine.

#ifndef AIOKIT_AIOKIT_H_
#define AIOKIT_AIOKIT_H_

#include "aiokit/coro.h"
#include "aiokit/device.h"
#include "aiokit/engine.h"
#include "aiokit/engine_wrapper.h"
#include "aiokit/fault.h"
#include "aiokit/file.h"
#include "aiokit/info.h"
#include "aiokit/request.h"
#include "aiokit/status.h"
#include "aiokit/version.h"

#endif  // AIOKIT_AIOKIT_H_
