#include "telemetryd/wire/event.h"

#include "telemetryd/wire/format.h"
#include "value_read.h"

namespace telemetryd::wire {

ValueReader::ValueReader(const Value& container) noexcept
    : rest_(container.body),
      remaining_(container.kind == ValueKind::kMap ? container.count * 2 : container.count),
      strings_(container.strings) {
  if (!container.IsContainer() || strings_ == nullptr) remaining_ = 0;
}

bool ValueReader::Next(Value& out) noexcept {
  if (remaining_ == 0) return false;
  detail::Cursor in(rest_);
  DecodeError ignored{};
  if (!detail::ReadValue(in, *strings_, 1, out, ignored)) {
    remaining_ = 0;
    return false;
  }
  rest_ = rest_.last(in.remaining());
  --remaining_;
  return true;
}

const Measurement* Event::FindMeasurement(std::string_view key) const noexcept {
  for (const auto& m : measurements) {
    if (m.key == key) return &m;
  }
  return nullptr;
}

const MetadataField* Event::FindMetadata(std::string_view key) const noexcept {
  for (const auto& f : metadata) {
    if (f.key() == key) return &f;
  }
  return nullptr;
}

}  // namespace telemetryd::wire
