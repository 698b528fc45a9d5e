// Private: reads one metadata value; shared by the decoder (which validates) and ValueReader.
#pragma once

#include <cstddef>

#include "bytes.h"
#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/event.h"

namespace telemetryd::wire::detail {

// Reads a value at `in` into `out`. Containers are walked to validate them and to find their end.
// On failure returns false and sets `error`.
bool ReadValue(Cursor& in, const StringTable& strings, std::size_t depth, Value& out,
               DecodeError& error) noexcept;

}  // namespace telemetryd::wire::detail
