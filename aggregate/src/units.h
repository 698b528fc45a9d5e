// Private: unit conversion. Time units scale through "units per second" so that the sender's
// native unit (declared per frame) converts with one multiplication or division.
#pragma once

#include <cstdint>

#include "telemetryd/aggregate/catalog.h"

namespace telemetryd::aggregate {

// Units per second for time units, units per byte for sizes (as a divisor); 0 for kNone.
inline double UnitsPerBase(Unit unit, std::uint64_t native_units_per_second) noexcept {
  switch (unit) {
    case Unit::kNative:
      return static_cast<double>(native_units_per_second);
    case Unit::kSecond:
      return 1;
    case Unit::kMillisecond:
      return 1e3;
    case Unit::kMicrosecond:
      return 1e6;
    case Unit::kNanosecond:
      return 1e9;
    case Unit::kByte:
      return 1;
    case Unit::kKilobyte:
      return 1.0 / 1024;
    case Unit::kMegabyte:
      return 1.0 / (1024 * 1024);
    case Unit::kNone:
      return 0;
  }
  return 0;
}

// value in `from` -> value in `to`. Divides by an exact ratio when one unit is a whole multiple of
// the other, so that e.g. 1500000 native (ns) is exactly 1.5 ms.
inline double ConvertUnit(double value, Unit from, Unit to, std::uint64_t native) noexcept {
  const double f = UnitsPerBase(from, native);
  const double t = UnitsPerBase(to, native);
  if (f == 0 || t == 0 || f == t) return value;
  if (f > t) return value / (f / t);
  return value * (t / f);
}

}  // namespace telemetryd::aggregate
