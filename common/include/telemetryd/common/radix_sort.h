// Sorting a million 64-bit keys by their high half without comparisons.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace telemetryd {

// Sorts `v` by the high 32 bits of each value, keeping the order of values whose high bits are
// equal (two counting passes of 16 bits). Callers put a hash in the high half and an index in the
// low half: equal hashes stay in index order.
inline void RadixSortHigh(std::vector<std::uint64_t>& v) {
  std::vector<std::uint64_t> tmp(v.size());
  std::vector<std::size_t> start(std::size_t{1} << 16);
  for (const unsigned shift : {32U, 48U}) {
    std::fill(start.begin(), start.end(), 0);
    for (const std::uint64_t x : v) ++start[(x >> shift) & 0xFFFF];
    std::size_t sum = 0;
    for (auto& c : start) sum += std::exchange(c, sum);
    for (const std::uint64_t x : v) tmp[start[(x >> shift) & 0xFFFF]++] = x;
    v.swap(tmp);
  }
}

// Sorts values that carry a hash in the high half and an index in the low half, given with equal
// hashes in index order, so that equal hashes are neighbours in index order: a radix sort for
// many, a plain sort (the same order) for few.
inline void SortByHighHalf(std::vector<std::uint64_t>& v) {
  if (v.size() > 4096) {
    RadixSortHigh(v);
  } else {
    std::sort(v.begin(), v.end());
  }
}

// The end of the run of values from `begin` whose high halves equal that of v[begin].
inline std::size_t EndOfHighRun(const std::vector<std::uint64_t>& v, std::size_t begin) {
  std::size_t end = begin + 1;
  while (end < v.size() && v[end] >> 32 == v[begin] >> 32) ++end;
  return end;
}

}  // namespace telemetryd
