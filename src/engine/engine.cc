// Engine selection (MakeEngine) and the engine-independent helpers of the
// Engine interface.

#include "aiokit/engine.h"

#include <cstdlib>
#include <string>

#include "engine/engines.h"

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
  return Status::Error(Errc::kInvalidArgument,
                       "unknown engine \"" + std::string(name) +
                           "\": expected auto, linux-aio, io_uring or threads");
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

Result<std::unique_ptr<Engine>> MakeOne(EngineKind kind,
                                        const EngineOptions& options) {
  switch (kind) {
    case EngineKind::kLinuxAio:
      return internal::MakeLinuxAioEngine(options);
    case EngineKind::kIoUring:
    case EngineKind::kThreads:
      return Status::Error(
          Errc::kUnsupported,
          std::string("engine ") + EngineKindName(kind) +
              " is not built into this aiokit (this version has linux-aio)");
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
    Result<std::unique_ptr<Engine>> e = MakeOne(k, options);
    if (e.ok()) return e;
    // A caller error (queue depth 0) is the same on every engine: report it as
    // such.
    if (e.status().Is(Errc::kInvalidArgument)) return e.status();
    if (passed_over != nullptr) passed_over->push_back({k, e.status()});
    if (!reasons.empty()) reasons += "; ";
    reasons += e.status().ToString();
  }
  return Status::Error(Errc::kUnsupported,
                       "no engine can run here: " + reasons);
}

Result<size_t> Engine::GetNextCompleted(int timeout_ms, Request** out,
                                        size_t max) {
  const std::chrono::nanoseconds timeout =
      timeout_ms < 0 ? kForever : std::chrono::milliseconds(timeout_ms);
  return Reap(std::span<Request*>(out, max), 1, timeout);
}

}  // namespace aiokit
