#include "telemetryd/wire/encoder.h"

#include <algorithm>

#include "bytes.h"
#include "telemetryd/wire/format.h"

namespace telemetryd::wire {

using detail::PutFloat64;
using detail::PutVarint;
using detail::VarintSize;
using detail::ZigzagEncode;

FrameEncoder::FrameEncoder(EncoderOptions options) : options_(options) {
  // Enough for a UDP frame up front; a larger TCP budget grows only as events arrive.
  const std::size_t initial = std::min<std::size_t>(options_.max_frame_bytes, 64 * 1024);
  strings_.reserve(initial);
  events_.reserve(initial);
}

std::size_t FrameEncoder::HeaderSize() const noexcept {
  std::size_t n = 4 + VarintSize(options_.units_per_second);
  if (options_.base_time) n += VarintSize(ZigzagEncode(*options_.base_time));
  return n;
}

std::size_t FrameEncoder::size() const noexcept {
  return HeaderSize() + VarintSize(added_.size()) + strings_.size() + VarintSize(event_count_) +
         events_.size();
}

bool FrameEncoder::Ref(std::string_view text, std::uint64_t& ref) {
  if (const auto s = FindStatic(text)) {
    ref = *s;
    return true;
  }
  if (const auto it = index_.find(std::string(text)); it != index_.end()) {
    ref = it->second;
    return true;
  }
  if (text.size() > kMaxStringBytes) return false;
  if (added_.size() >= kMaxStrings) {
    table_full_ = true;  // the frame is full, not the event invalid
    return false;
  }
  const auto index = static_cast<std::uint32_t>(kStaticStrings + added_.size());
  PutVarint(strings_, text.size());
  strings_.insert(strings_.end(), text.begin(), text.end());
  added_.emplace_back(text);
  index_.emplace(std::string(text), index);
  ref = index;
  return true;
}

void FrameEncoder::Rollback(std::size_t strings_bytes, std::size_t events_bytes,
                            std::size_t added) {
  strings_.resize(strings_bytes);
  events_.resize(events_bytes);
  while (added_.size() > added) {
    index_.erase(added_.back());
    added_.pop_back();
  }
}

bool FrameEncoder::EncodeTerm(const Term& term, std::size_t depth) {
  std::uint64_t ref = 0;
  switch (term.kind) {
    case ValueKind::kNil:
      scratch_.push_back(static_cast<std::uint8_t>(Tag::kNil));
      return true;
    case ValueKind::kBool:
      scratch_.push_back(static_cast<std::uint8_t>(term.bool_value ? Tag::kTrue : Tag::kFalse));
      return true;
    case ValueKind::kInt:
      if (term.int_value >= 0 && term.int_value <= kSmallIntMax) {
        scratch_.push_back(static_cast<std::uint8_t>(kSmallIntTag + term.int_value));
      } else {
        scratch_.push_back(static_cast<std::uint8_t>(Tag::kInt));
        PutVarint(scratch_, ZigzagEncode(term.int_value));
      }
      return true;
    case ValueKind::kFloat:
      scratch_.push_back(static_cast<std::uint8_t>(Tag::kFloat));
      PutFloat64(scratch_, term.float_value);
      return true;
    case ValueKind::kString:
    case ValueKind::kAtom:
      if (!Ref(term.text, ref)) return false;
      scratch_.push_back(
          static_cast<std::uint8_t>(term.kind == ValueKind::kString ? Tag::kString : Tag::kAtom));
      PutVarint(scratch_, ref);
      return true;
    case ValueKind::kBytes:
      if (term.text.size() > kMaxStringBytes) return false;
      scratch_.push_back(static_cast<std::uint8_t>(Tag::kBytes));
      PutVarint(scratch_, term.text.size());
      scratch_.insert(scratch_.end(), term.text.begin(), term.text.end());
      return true;
    case ValueKind::kList:
    case ValueKind::kTuple:
    case ValueKind::kMap: {
      if (depth >= kMaxNesting) return false;
      const bool is_map = term.kind == ValueKind::kMap;
      if (is_map && term.items.size() % 2 != 0) return false;
      scratch_.push_back(static_cast<std::uint8_t>(
          is_map ? Tag::kMap : (term.kind == ValueKind::kList ? Tag::kList : Tag::kTuple)));
      PutVarint(scratch_, is_map ? term.items.size() / 2 : term.items.size());
      for (const Term& item : term.items) {
        if (!EncodeTerm(item, depth + 1)) return false;
      }
      return true;
    }
  }
  return false;
}

bool FrameEncoder::EncodeEvent(const EventRecord& event) {
  scratch_.clear();
  if (!IsValidEventName(event.name)) return false;
  if (event.measurements.size() > kMaxMeasurements || event.metadata.size() > kMaxMetadata) {
    return false;
  }
  std::uint64_t ref = 0;
  if (!Ref(event.name, ref)) return false;
  PutVarint(scratch_, ref);
  scratch_.push_back(event.system_time ? kEventHasTime : 0);
  if (event.system_time) {
    // Relative to the base time with wrapping arithmetic, as the decoder adds it back.
    const auto t = static_cast<std::uint64_t>(*event.system_time) -
                   static_cast<std::uint64_t>(options_.base_time.value_or(0));
    PutVarint(scratch_, ZigzagEncode(static_cast<std::int64_t>(t)));
  }
  PutVarint(scratch_, event.measurements.size());
  for (const auto& [key, number] : event.measurements) {
    if (key.empty() || !IsValidUtf8(key) || !Ref(key, ref)) return false;
    PutVarint(scratch_, (ref << 1) | (number.is_float ? 1U : 0U));
    if (number.is_float) {
      PutFloat64(scratch_, number.float_value);
    } else {
      PutVarint(scratch_, ZigzagEncode(number.int_value));
    }
  }
  PutVarint(scratch_, event.metadata.size());
  for (const auto& [key, term] : event.metadata) {
    if (key.empty() || !IsValidUtf8(key) || !Ref(key, ref)) return false;
    PutVarint(scratch_, ref);
    if (!EncodeTerm(term, 0)) return false;
  }
  PutVarint(events_, scratch_.size());
  events_.insert(events_.end(), scratch_.begin(), scratch_.end());
  return true;
}

AddResult FrameEncoder::Add(const EventRecord& event) {
  const std::size_t strings_bytes = strings_.size();
  const std::size_t events_bytes = events_.size();
  const std::size_t added = added_.size();
  table_full_ = false;
  if (!EncodeEvent(event)) {
    Rollback(strings_bytes, events_bytes, added);
    if (table_full_ && event_count_ > 0) return AddResult::kFrameFull;
    return AddResult::kInvalid;
  }
  ++event_count_;
  if (size() > options_.max_frame_bytes) {
    --event_count_;
    Rollback(strings_bytes, events_bytes, added);
    return event_count_ == 0 ? AddResult::kEventTooLarge : AddResult::kFrameFull;
  }
  return AddResult::kAdded;
}

std::span<const std::uint8_t> FrameEncoder::Finish() {
  frame_.clear();
  frame_.reserve(size());
  frame_.push_back(kMagic0);
  frame_.push_back(kMagic1);
  frame_.push_back(kVersion);
  frame_.push_back(options_.base_time ? kFrameHasBaseTime : 0);
  PutVarint(frame_, options_.units_per_second);
  if (options_.base_time) PutVarint(frame_, ZigzagEncode(*options_.base_time));
  PutVarint(frame_, added_.size());
  frame_.insert(frame_.end(), strings_.begin(), strings_.end());
  PutVarint(frame_, event_count_);
  frame_.insert(frame_.end(), events_.begin(), events_.end());
  Rollback(0, 0, 0);
  event_count_ = 0;
  return frame_;
}

}  // namespace telemetryd::wire
