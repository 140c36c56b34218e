#include "aiokit/status.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "util/strings.h"

namespace aiokit {

namespace internal {
void DieOnResultValue(const Status& status) noexcept {
  std::fprintf(stderr, "aiokit: Result::value() on an error: %s\n",
               status.ToString().c_str());
  std::abort();
}
}  // namespace internal

namespace {

class AiokitCategory final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "aiokit"; }
  [[nodiscard]] std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::kOk:
        return "OK";
      case Errc::kInvalidArgument:
        return "invalid argument";
      case Errc::kUnsupported:
        return "not supported here";
      case Errc::kMisaligned:
        return "misaligned O_DIRECT request";
      case Errc::kQueueFull:
        return "queue full";
      case Errc::kTimedOut:
        return "timed out";
      case Errc::kShutdown:
        return "engine shut down";
      case Errc::kNotCancellable:
        return "request cannot be cancelled";
      case Errc::kEndOfFile:
        return "end of file";
    }
    return "unknown aiokit error " + std::to_string(ev);
  }
};

}  // namespace

const std::error_category& ErrorCategory() noexcept {
  static const AiokitCategory category;
  return category;
}

std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), ErrorCategory()};
}

Status Status::FromErrno(int err, std::string context) {
  return {std::error_code(err, std::system_category()), std::move(context)};
}

int Status::Errno() const noexcept {
  return code_.category() == std::system_category() ? code_.value() : 0;
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string out = message_;
  if (!out.empty()) out += ": ";
  if (code_.category() == std::system_category()) {
    out += util::ErrnoText(code_.value());  // "ENOENT (No such file ...)"
  } else {
    out += code_.message();
  }
  return out;
}

int ToNegativeErrno(const Status& status) noexcept {
  if (status.ok()) return 0;
  if (int e = status.Errno(); e != 0) return -e;
  if (status.code().category() != ErrorCategory()) return -EIO;
  switch (static_cast<Errc>(status.code().value())) {
    case Errc::kOk:
      return 0;
    case Errc::kInvalidArgument:
    case Errc::kMisaligned:
      return -EINVAL;
    case Errc::kUnsupported:
      return -EOPNOTSUPP;
    case Errc::kQueueFull:
      return -EAGAIN;
    case Errc::kTimedOut:
      return -ETIMEDOUT;
    case Errc::kShutdown:
      return -ESHUTDOWN;
    case Errc::kNotCancellable:
      return -EBUSY;
    case Errc::kEndOfFile:
      return -ENODATA;
  }
  return -EIO;
}

}  // namespace aiokit
