// aiokit: errors as values.
//
// Every fallible call in aiokit returns a `Status` or a `Result<T>`; nothing in
// the public API throws and nothing aborts on an I/O error. A Status is a
// `std::error_code` plus the context it was created in (what was asked: op, fd
// or path, offset, length; and which rule it broke), so a message shown to a
// user says what happened without a debugger.
//
// Codes come from two categories:
//  - std::system_category(): an errno the kernel (or libc) returned, unchanged;
//  - aiokit::ErrorCategory(): a condition the library itself detected, listed
//  in `Errc` below.
//
// Per-request results are not Statuses: a completed request carries bytes
// transferred or -errno in `Request::rval` (see request.h), and
// `Describe(request)` turns that into a message with context.
//
// Thread safety: Status and Result are values; distinct objects may be used
// from distinct threads.

#ifndef AIOKIT_STATUS_H_
#define AIOKIT_STATUS_H_

#include <cassert>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace aiokit {

// The closed set of conditions aiokit reports in its own category. Each says
// when it is used.
enum class Errc {
  kOk = 0,
  // The caller broke a documented precondition: queue depth 0, a request
  // submitted while it is still in flight, min > max in a reap, an unknown
  // engine name.
  kInvalidArgument = 1,
  // The engine or feature is not built into this aiokit, or this kernel or
  // process refuses it.
  kUnsupported = 2,
  // An O_DIRECT request whose buffer address, offset or length breaks the
  // file's alignment. The request is refused before it reaches the kernel and
  // completes with -EINVAL.
  kMisaligned = 3,
  // Submission found no room after the EAGAIN retry policy ran out; the
  // requests not taken are still the caller's and may be submitted again.
  kQueueFull = 4,
  // A deadline passed before the operation could finish: Shutdown with requests
  // still in flight (call it again). Reap does not use it: at its timeout it
  // returns what it has.
  kTimedOut = 5,
  // The engine is shut down (or was never initialised): no new submissions.
  kShutdown = 6,
  // The engine cannot cancel this request (kernel AIO on regular files, or it
  // already started); it will complete normally and be reaped like any other.
  kNotCancellable = 7,
  // A read met the end of the file before its whole length was read (the
  // device layer's ReadExactly, or a read whose caller did not ask for the
  // byte count): the message says how many bytes there were.
  kEndOfFile = 8,
};

// The aiokit error category ("aiokit").
const std::error_category& ErrorCategory() noexcept;

// Enables `std::error_code ec = Errc::kQueueFull;`.
std::error_code make_error_code(
    Errc e) noexcept;  // NOLINT(readability-identifier-naming)

class Status;
namespace internal {
// Prints "aiokit: Result::value() on an error: <status>" and aborts.
[[noreturn]] void DieOnResultValue(const Status& status) noexcept;
}  // namespace internal

// The status as a negative errno for C-style interfaces (0 when OK): the errno
// itself for system codes; for aiokit codes EINVAL (kInvalidArgument,
// kMisaligned), EOPNOTSUPP (kUnsupported), EAGAIN (kQueueFull), ETIMEDOUT
// (kTimedOut), ESHUTDOWN (kShutdown), EBUSY (kNotCancellable), ENODATA
// (kEndOfFile).
int ToNegativeErrno(const Status& status) noexcept;

// The result of an operation that returns no value. Cheap when OK (no
// allocation).
class [[nodiscard]] Status {
 public:
  // An OK status.
  Status() = default;
  // REQUIRES: code is not a success code, or message is empty.
  Status(std::error_code code, std::string message)
      : code_(code), message_(std::move(message)) {}

  // An errno-based status. `err` is a positive errno value; `context` says what
  // was asked.
  static Status FromErrno(int err, std::string context);
  // A library-condition status.
  static Status Error(Errc code, std::string context) {
    return {make_error_code(code), std::move(context)};
  }

  [[nodiscard]] bool ok() const noexcept { return !code_; }
  explicit operator bool() const noexcept { return ok(); }
  [[nodiscard]] std::error_code code() const noexcept { return code_; }
  // The context alone, without the code's text.
  [[nodiscard]] const std::string& context() const noexcept { return message_; }
  // True when this status carries the given library condition.
  [[nodiscard]] bool Is(Errc e) const noexcept {
    return code_ == make_error_code(e);
  }
  // The errno when the code is in the system category, else 0.
  [[nodiscard]] int Errno() const noexcept;
  // "context: code text" ("OK" when ok()).
  [[nodiscard]] std::string ToString() const;

 private:
  std::error_code code_;
  std::string message_;
};

// Either a value or a non-OK Status. Modelled on std::expected /
// absl::StatusOr.
template <typename T>
class [[nodiscard]] Result {
 public:
  // NOLINTNEXTLINE(google-explicit-constructor): a value converts to a Result
  // implicitly.
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  // NOLINTNEXTLINE(google-explicit-constructor): so does an error.
  Result(Status status) : v_(std::in_place_index<1>, std::move(status)) {
    // An OK status carries no value; turning it into a Result is a programming
    // error.
    assert(!std::get<1>(v_).ok());
  }

  [[nodiscard]] bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  // REQUIRES: ok(). Calling it on an error is a programming error, not a
  // condition to handle: the process ends with the error's message (as
  // absl::StatusOr does), since nothing in aiokit's API throws.
  T& value() & {
    if (!ok()) DieOnValue();
    return *std::get_if<0>(&v_);
  }
  const T& value() const& {
    if (!ok()) DieOnValue();
    return *std::get_if<0>(&v_);
  }
  T&& value() && {
    if (!ok()) DieOnValue();
    return std::move(*std::get_if<0>(&v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  // The error; an OK Status when ok().
  [[nodiscard]] Status status() const {
    return ok() ? Status() : *std::get_if<1>(&v_);
  }

 private:
  [[noreturn]] void DieOnValue() const {
    internal::DieOnResultValue(*std::get_if<1>(&v_));
  }

  std::variant<T, Status> v_;
};

}  // namespace aiokit

template <>
struct std::is_error_code_enum<aiokit::Errc> : std::true_type {};

#endif  // AIOKIT_STATUS_H_
