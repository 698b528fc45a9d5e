// Private: bounds-checked reading and appending of v1 primitives (varints, zigzag, binary64), and
// the word-at-a-time ASCII scan that string validation starts with.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "telemetryd/common/bytes.h"

namespace telemetryd::wire::detail {

enum class VarintStatus : std::uint8_t { kOk, kTruncated, kOverflow };

// A varint read from `p` (before `end`): the byte after it and its value, or a null `next` and the
// VarintStatus of the failure in `value`.
struct LongVarint {
  const std::uint8_t* next;
  std::uint64_t value;
};
[[gnu::noinline]] inline LongVarint ReadLongVarint(const std::uint8_t* p,
                                                   const std::uint8_t* end) noexcept {
  constexpr auto kTruncated = static_cast<std::uint64_t>(VarintStatus::kTruncated);
  constexpr auto kOverflow = static_cast<std::uint64_t>(VarintStatus::kOverflow);
  std::uint64_t value = 0;
  for (unsigned shift = 0; shift < 70; shift += 7) {
    if (p == end) return {nullptr, kTruncated};
    const std::uint8_t byte = *p++;
    if (shift == 63 && (byte & 0x7E) != 0) return {nullptr, kOverflow};
    value |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return {p, value};
  }
  return {nullptr, kOverflow};
}

// Reads from a byte span; every read checks bounds and reports failure instead of throwing. Kept
// as the next byte and the end, so that a read compares and dereferences one pointer; where a
// read started is the caller's here() before it.
class Cursor {
 public:
  explicit Cursor(std::span<const std::uint8_t> bytes) noexcept
      : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}

  [[nodiscard]] std::size_t remaining() const noexcept {
    return static_cast<std::size_t>(end_ - p_);
  }
  [[nodiscard]] bool empty() const noexcept { return p_ == end_; }
  [[nodiscard]] const std::uint8_t* here() const noexcept { return p_; }

  bool Byte(std::uint8_t& out) noexcept {
    if (p_ == end_) return false;
    out = *p_++;
    return true;
  }

  using VarintStatus = detail::VarintStatus;
  // Unsigned LEB128, at most 10 bytes, no bits beyond 64. The one-byte case (most references,
  // counts and small values) is read here; longer ones by a call that takes and returns pointers,
  // so that no caller's cursor has to live in memory.
  [[gnu::always_inline]] VarintStatus Varint(std::uint64_t& out) noexcept {
    if (p_ != end_ && *p_ < 0x80) [[likely]] {
      out = *p_++;
      return VarintStatus::kOk;
    }
    const LongVarint read = ReadLongVarint(p_, end_);
    if (read.next == nullptr) return static_cast<VarintStatus>(read.value);
    p_ = read.next;
    out = read.value;
    return VarintStatus::kOk;
  }

  bool Float64(double& out) noexcept {
    if (remaining() < 8) return false;
    std::uint64_t bits = 0;
    for (int i = 7; i >= 0; --i) bits = (bits << 8) | p_[i];
    p_ += 8;
    out = std::bit_cast<double>(bits);
    return true;
  }

  // Steps over `n` bytes the caller has checked are there.
  void Skip(std::size_t n) noexcept { p_ += n; }

  bool Take(std::size_t n, std::span<const std::uint8_t>& out) noexcept {
    if (remaining() < n) return false;
    out = std::span<const std::uint8_t>(p_, n);
    p_ += n;
    return true;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// True when no byte of `text` has its high bit set (ASCII, which is valid UTF-8). No byte loop
// from 4 bytes on: whole 8-byte words, then a last word overlapping the one before, all within
// the text.
inline bool IsAscii(std::string_view text) noexcept {
  const char* p = text.data();
  const std::size_t n = text.size();
  if (n >= 8) {
    std::uint64_t high = Load<std::uint64_t>(p + n - 8);
    for (std::size_t i = 0; i + 8 <= n; i += 8) high |= Load<std::uint64_t>(p + i);
    return (high & 0x8080808080808080ULL) == 0;
  }
  if (n >= 4) return ((Load<std::uint32_t>(p) | Load<std::uint32_t>(p + n - 4)) & 0x80808080U) == 0;
  unsigned high = 0;
  for (std::size_t i = 0; i < n; ++i) high |= static_cast<unsigned char>(p[i]);
  return (high & 0x80U) == 0;
}

inline std::int64_t ZigzagDecode(std::uint64_t v) noexcept {
  return static_cast<std::int64_t>(v >> 1) ^ -static_cast<std::int64_t>(v & 1);
}
inline std::uint64_t ZigzagEncode(std::int64_t v) noexcept {
  return (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
}

inline std::size_t VarintSize(std::uint64_t v) noexcept {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

inline void PutVarint(std::vector<std::uint8_t>& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<std::uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<std::uint8_t>(v));
}

inline void PutFloat64(std::vector<std::uint8_t>& out, double d) {
  auto bits = std::bit_cast<std::uint64_t>(d);
  for (int i = 0; i < 8; ++i) {
    out.push_back(static_cast<std::uint8_t>(bits & 0xFF));
    bits >>= 8;
  }
}

}  // namespace telemetryd::wire::detail
