// Load: a T read from bytes at any alignment (the byte scans and hashes of the parsers and the
// aggregation tables read text a word at a time).
#pragma once

#include <cstring>
#include <type_traits>

namespace telemetryd {

template <typename T>
requires std::is_trivially_copyable_v<T>
inline T Load(const char* p) noexcept {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

}  // namespace telemetryd
