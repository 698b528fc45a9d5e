#include "telemetryd/wire/format.h"

#include <array>

#include "bytes.h"

namespace telemetryd::wire {
std::span<const std::string_view> StaticStrings() noexcept { return kStaticTable; }

std::optional<std::uint32_t> FindStatic(std::string_view text) noexcept {
  for (std::uint32_t i = 0; i < kStaticTable.size(); ++i) {
    if (kStaticTable[i] == text) return i;
  }
  return std::nullopt;
}

bool IsValidUtf8(std::string_view text) noexcept {
  if (detail::IsAscii(text)) return true;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const unsigned char* end = p + text.size();
  while (p < end) {
    // Fast path over ASCII, eight bytes at a time.
    while (end - p >= 8) {
      if ((Load<std::uint64_t>(reinterpret_cast<const char*>(p)) & 0x8080808080808080ULL) != 0) {
        break;
      }
      p += 8;
    }
    if (p >= end) break;
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t extra = 0;
    std::uint32_t cp = 0;
    std::uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      extra = 1, cp = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2, cp = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3, cp = c & 0x07u, min = 0x10000;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) <= extra) return false;
    for (std::size_t i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += extra + 1;
  }
  return true;
}

bool IsValidEventName(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxNameBytes) return false;
  std::size_t segments = 1;
  char previous = '.';
  for (const char ch : name) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F) return false;
    if (ch == '.') {
      if (previous == '.') return false;  // empty segment
      ++segments;
    }
    previous = ch;
  }
  if (previous == '.' || segments > kMaxNameSegments) return false;
  return IsValidUtf8(name);
}

}  // namespace telemetryd::wire
