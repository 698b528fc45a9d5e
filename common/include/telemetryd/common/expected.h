// Errors as values: Error carries a stable code and a human message; Expected<T> is a T or an
// Error. Thread-safety: plain values, no shared state.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace telemetryd {

// A failure that a caller can report or act on. `code` is stable and machine-readable
// (e.g. "config.unknown_key"); `message` is for people and says where and what.
struct Error {
  std::string code;
  std::string message;

  // Returns the same error with `prefix` put before the message (adds context on the way up).
  [[nodiscard]] Error with_prefix(const std::string& prefix) const {
    return Error{code, prefix + message};
  }
};

// Either a value or an Error. Never throws on access through the checked accessors.
template <typename T>
class Expected {
 public:
  Expected(T value) : state_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Expected(Error error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  [[nodiscard]] bool has_value() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  T* operator->() { return &std::get<0>(state_); }
  const T* operator->() const { return &std::get<0>(state_); }
  T& operator*() & { return std::get<0>(state_); }
  const T& operator*() const& { return std::get<0>(state_); }

  [[nodiscard]] const Error& error() const& { return std::get<1>(state_); }
  Error&& error() && { return std::get<1>(std::move(state_)); }

 private:
  std::variant<T, Error> state_;
};

// For operations that return nothing but can fail.
struct Ok {};
using Status = Expected<Ok>;

}  // namespace telemetryd
