#include "telemetryd/common/log.h"

#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <string>

namespace telemetryd::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<std::uint64_t> g_suppressed{0};

std::int64_t NowNs() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr std::array<std::string_view, 4> kLevelNames = {"debug", "info", "warn", "error"};
// systemd's stderr level prefixes (sd-daemon.h): <7> debug, <6> info, <4> warning, <3> err.
constexpr std::array<std::string_view, 4> kJournalPrefix = {"<7>", "<6>", "<4>", "<3>"};

}  // namespace

void SetLevel(Level level) noexcept { g_level.store(static_cast<int>(level)); }
Level GetLevel() noexcept { return static_cast<Level>(g_level.load()); }

bool ParseLevel(std::string_view text, Level& out) noexcept {
  for (std::size_t i = 0; i < kLevelNames.size(); ++i) {
    if (text == kLevelNames[i]) {
      out = static_cast<Level>(i);
      return true;
    }
  }
  return false;
}

void Write(Level level, std::string_view message) noexcept {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  const auto index = static_cast<std::size_t>(level);
  // One writev(2) per line, so that lines from several threads never interleave, and no memory
  // needed: a line that says memory ran out is written all the same.
  auto part = [](std::string_view text) {
    return iovec{const_cast<char*>(text.data()), text.size()};
  };
  const std::array<iovec, 5> parts = {part(kJournalPrefix[index]), part(kLevelNames[index]),
                                      part(" "), part(message), part("\n")};
  const ssize_t ignored = ::writev(STDERR_FILENO, parts.data(), static_cast<int>(parts.size()));
  (void)ignored;
}

std::uint64_t SuppressedTotal() noexcept { return g_suppressed.load(std::memory_order_relaxed); }

bool RateLimitedLog::ShouldWrite() noexcept {
  if (static_cast<int>(level_) < g_level.load(std::memory_order_relaxed)) return false;
  const std::int64_t now = NowNs();
  std::int64_t next = next_allowed_ns_.load(std::memory_order_relaxed);
  if (now >= next && next_allowed_ns_.compare_exchange_strong(
                         next, now + static_cast<std::int64_t>(interval_ns_))) {
    return true;
  }
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  g_suppressed.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void RateLimitedLog::Emit(std::string_view message) noexcept {
  const std::uint64_t skipped = suppressed_.exchange(0, std::memory_order_relaxed);
  if (skipped == 0) {
    Write(level_, message);
    return;
  }
  try {
    std::string text(message);
    text += " (" + std::to_string(skipped) + " similar messages suppressed)";
    Write(level_, text);
  } catch (...) {
    Write(level_, message);
  }
}

}  // namespace telemetryd::log
