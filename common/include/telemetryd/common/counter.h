// SingleWriterCounter: a counter written by exactly one thread and read by any. Increments are a
// relaxed load and store (no locked instruction); readers see a recent value.
#pragma once

#include <atomic>
#include <cstdint>

namespace telemetryd {

class SingleWriterCounter {
 public:
  // Always inlined: it runs per packet, event and metric update, and is two instructions.
  [[gnu::always_inline]] void Add(std::uint64_t n = 1) noexcept {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void Set(std::uint64_t n) noexcept { value_.store(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t Get() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uint64_t> value_{0};
};

}  // namespace telemetryd
