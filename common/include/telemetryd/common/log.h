// Leveled logging to stderr (journald takes it from there), with per-site rate limiting so that a
// flood of bad input produces a bounded number of lines and a count of what was suppressed.
// Thread-safety: every function and RateLimitedLog may be used from any thread concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace telemetryd::log {

enum class Level : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Sets the lowest level that is written. Default: kInfo.
void SetLevel(Level level) noexcept;
Level GetLevel() noexcept;
// Parses "debug", "info", "warn" or "error"; returns false for anything else.
bool ParseLevel(std::string_view text, Level& out) noexcept;

// Writes one line "<level> <message>" to stderr. Formatting is the caller's job.
void Write(Level level, std::string_view message) noexcept;

// Total lines suppressed by every RateLimitedLog so far (exported as a self-metric).
std::uint64_t SuppressedTotal() noexcept;

// A log site that writes at most one line per `interval_ms`; the lines it skips are counted and the
// count is reported on the next line it writes. Lock-free: one atomic compare-exchange per call.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(Level level, std::uint64_t interval_ms = 10'000) noexcept
      : level_(level), interval_ns_(interval_ms * 1'000'000) {}
  RateLimitedLog(const RateLimitedLog&) = delete;
  RateLimitedLog& operator=(const RateLimitedLog&) = delete;

  // Returns true when the caller may write now (then call Emit); false means counted and skipped.
  bool ShouldWrite() noexcept;
  // Writes the message, with " (N similar messages suppressed)" when lines were skipped.
  void Emit(std::string_view message) noexcept;
  void operator()(std::string_view message) noexcept {
    if (ShouldWrite()) Emit(message);
  }
  // Writes the message `make()` returns (a std::string), made only when the site may write now.
  // When it cannot be made (no memory), `fallback`, a text that needs none, is written instead.
  template <typename Make>
  void operator()(Make&& make, std::string_view fallback) noexcept {
    if (!ShouldWrite()) return;
    try {
      Emit(make());
    } catch (...) {
      Emit(fallback);
    }
  }

 private:
  Level level_;
  std::uint64_t interval_ns_;
  std::atomic<std::int64_t> next_allowed_ns_{0};
  std::atomic<std::uint64_t> suppressed_{0};
};

}  // namespace telemetryd::log
