// Engine selection (MakeEngine) and the engine-independent helpers of the
// Engine interface.

#include "aiokit/engine.h"

#include <cstdlib>
#include <string>

#include "engine/engines.h"
#include "engine/valgrind.h"

namespace aiokit {

const char* EngineKindName(EngineKind kind) noexcept {
  switch (kind) {
    case EngineKind::kDefault:
      return "default";
    case EngineKind::kAuto:
      return "auto";
    case EngineKind::kLinuxAio:
      return "linux-aio";
    case EngineKind::kIoUring:
      return "io_uring";
    case EngineKind::kThreads:
      return "threads";
    case EngineKind::kSync:
      return "sync";
  }
  return "unknown";
}

Result<EngineKind> ParseEngineKind(std::string_view name) {
  if (name == "auto") return EngineKind::kAuto;
  if (name == "default") return EngineKind::kDefault;
  if (name == "linux-aio" || name == "linux_aio" || name == "libaio" ||
      name == "aio") {
    return EngineKind::kLinuxAio;
  }
  if (name == "io_uring" || name == "io-uring" || name == "uring")
    return EngineKind::kIoUring;
  if (name == "threads" || name == "thread") return EngineKind::kThreads;
  if (name == "sync" || name == "psync") return EngineKind::kSync;
  return Status::Error(
      Errc::kInvalidArgument,
      "unknown engine \"" + std::string(name) +
          "\": expected auto, linux-aio, io_uring, threads or sync");
}

Result<EngineKind> ResolveEngineKind(const EngineOptions& options) {
  if (options.kind != EngineKind::kDefault) return options.kind;
  // getenv is read once per engine creation, never concurrently with setenv in
  // aiokit itself.
  const char* env =
      std::getenv("AIOKIT_ENGINE");  // NOLINT(concurrency-mt-unsafe)
  if (env == nullptr || *env == '\0') return EngineKind::kAuto;
  Result<EngineKind> kind = ParseEngineKind(env);
  if (!kind.ok()) {
    return Status::Error(Errc::kInvalidArgument,
                         "AIOKIT_ENGINE=\"" + std::string(env) +
                             "\": " + kind.status().context());
  }
  if (*kind == EngineKind::kDefault) return EngineKind::kAuto;
  return *kind;
}

namespace {

// EngineOptions::allow_fallback, unless AIOKIT_ENGINE_FALLBACK=0 forbids it.
bool AllowFallback(const EngineOptions& options) {
  // Read once per engine creation; aiokit never calls setenv.
  const char* env =
      std::getenv("AIOKIT_ENGINE_FALLBACK");  // NOLINT(concurrency-mt-unsafe)
  if (env != nullptr && std::string_view(env) == "0") return false;
  return options.allow_fallback;
}

Result<std::unique_ptr<Engine>> MakeOne(EngineKind kind,
                                        const EngineOptions& options) {
  switch (kind) {
    case EngineKind::kLinuxAio:
      return internal::MakeLinuxAioEngine(options);
    case EngineKind::kIoUring:
#if AIOKIT_HAVE_IO_URING
      return internal::MakeIoUringEngine(options);
#else
      return Status::Error(Errc::kUnsupported,
                           "engine io_uring is not built into this aiokit "
                           "(liburing-dev was missing when it was configured)");
#endif
    case EngineKind::kThreads:
      return internal::MakeThreadsEngine(options);
    case EngineKind::kSync:
      return internal::MakeSyncEngine(options);
    case EngineKind::kDefault:
    case EngineKind::kAuto:
      break;
  }
  return Status::Error(Errc::kInvalidArgument,
                       "MakeOne: not a concrete engine kind");
}

}  // namespace

Result<std::unique_ptr<Engine>> MakeEngine(
    const EngineOptions& options, std::vector<EngineRefusal>* passed_over) {
  Result<EngineKind> resolved = ResolveEngineKind(options);
  if (!resolved.ok()) return resolved.status();
  if (*resolved != EngineKind::kAuto) {
    return MakeOne(*resolved, options);
  }
  // auto: the first engine this kernel and process allow, in order of
  // preference.
  std::string reasons;
  for (EngineKind k :
       {EngineKind::kIoUring, EngineKind::kLinuxAio, EngineKind::kThreads}) {
    if (k == EngineKind::kIoUring && internal::RunningOnValgrind()) {
      // Valgrind (3.19) holds its one lock through io_uring_enter, which it
      // does not know may block: a thread waiting there stops every other.
      Status why = Status::Error(
          Errc::kUnsupported,
          "io_uring: passed over under valgrind, which runs one thread at a "
          "time and cannot let others run while one waits in io_uring_enter "
          "(ask for AIOKIT_ENGINE=io_uring to use it anyway)");
      if (passed_over != nullptr) passed_over->push_back({k, why});
      if (!reasons.empty()) reasons += "; ";
      reasons += why.ToString();
      continue;
    }
    Result<std::unique_ptr<Engine>> e = MakeOne(k, options);
    if (e.ok()) return e;
    // A caller error (queue depth 0) is the same on every engine: report it as
    // such.
    if (e.status().Is(Errc::kInvalidArgument)) return e.status();
    if (passed_over != nullptr) passed_over->push_back({k, e.status()});
    if (!AllowFallback(options)) {
      return Status(e.status().code(),
                    "auto without fallback (EngineOptions::allow_fallback "
                    "false or AIOKIT_ENGINE_FALLBACK=0): the first choice, " +
                        std::string(EngineKindName(k)) +
                        ", was refused: " + e.status().context());
    }
    if (!reasons.empty()) reasons += "; ";
    reasons += e.status().ToString();
  }
  return Status::Error(Errc::kUnsupported,
                       "no engine can run here: " + reasons);
}

Status Engine::RegisterBuffers(std::span<const iovec> buffers) {
  return Status::Error(Errc::kUnsupported,
                       std::string(Name()) + ": RegisterBuffers(" +
                           std::to_string(buffers.size()) +
                           " buffers): this engine has no fixed buffers; "
                           "requests ignore buf_index");
}

Status Engine::RegisterFiles(std::span<const int> fds) {
  return Status::Error(Errc::kUnsupported,
                       std::string(Name()) + ": RegisterFiles(" +
                           std::to_string(fds.size()) +
                           " files): this engine has no fixed files");
}

Result<size_t> Engine::GetNextCompleted(int timeout_ms, Request** out,
                                        size_t max) {
  const std::chrono::nanoseconds timeout =
      timeout_ms < 0 ? kForever : std::chrono::milliseconds(timeout_ms);
  return Reap(std::span<Request*>(out, max), 1, timeout);
}

}  // namespace aiokit
