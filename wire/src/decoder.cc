#include "telemetryd/wire/decoder.h"

#include <algorithm>
#include <array>

#include "bytes.h"
#include "value_read.h"

namespace telemetryd::wire {
namespace {

using detail::Cursor;

constexpr std::array<std::string_view, kDecodeErrorCount> kErrorNames = {
    "bad_magic",         "unsupported_version", "bad_flags",        "bad_time_unit",
    "truncated",         "bad_varint",          "too_many_strings", "string_too_long",
    "bad_string_ref",    "invalid_name",        "invalid_key",      "too_many_measurements",
    "too_many_metadata", "bad_value_tag",       "nesting_too_deep", "event_length_mismatch",
    "trailing_bytes",    "frame_too_large",     "too_many_events",
};

// Per frame string flags.
constexpr std::uint8_t kUtf8Valid = 0x01;
constexpr std::uint8_t kNameChecked = 0x02;
constexpr std::uint8_t kNameValid = 0x04;

// Maps a varint failure to the reason to report: running out of bytes inside an event body means
// the body's declared length was wrong.
DecodeError VarintError(Cursor::VarintStatus status, DecodeError truncated) noexcept {
  return status == Cursor::VarintStatus::kOverflow ? DecodeError::kBadVarint : truncated;
}

}  // namespace

std::string_view DecodeErrorName(DecodeError error) noexcept {
  const auto index = static_cast<std::size_t>(error);
  return index < kErrorNames.size() ? kErrorNames[index] : "unknown";
}

namespace detail {

bool ReadValue(Cursor& in, const StringTable& strings, std::size_t depth, Value& out,
               DecodeError& error) noexcept {
  std::uint8_t tag = 0;
  if (!in.Byte(tag)) {
    error = DecodeError::kEventLengthMismatch;
    return false;
  }
  // Only the fields of the value's kind are set; the others keep whatever they held.
  out.strings = &strings;
  if (tag >= kSmallIntTag && tag <= kSmallIntTag + kSmallIntMax) {
    out.kind = ValueKind::kInt;
    out.int_value = tag - kSmallIntTag;
    return true;
  }
  std::uint64_t n = 0;
  Cursor::VarintStatus status{};
  switch (static_cast<Tag>(tag)) {
    case Tag::kNil:
      out.kind = ValueKind::kNil;
      return true;
    case Tag::kFalse:
    case Tag::kTrue:
      out.kind = ValueKind::kBool;
      out.bool_value = static_cast<Tag>(tag) == Tag::kTrue;
      return true;
    case Tag::kInt:
      if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
        error = VarintError(status, DecodeError::kEventLengthMismatch);
        return false;
      }
      out.kind = ValueKind::kInt;
      out.int_value = detail::ZigzagDecode(n);
      return true;
    case Tag::kFloat:
      if (!in.Float64(out.float_value)) {
        error = DecodeError::kEventLengthMismatch;
        return false;
      }
      out.kind = ValueKind::kFloat;
      return true;
    case Tag::kString:
    case Tag::kAtom:
      if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
        error = VarintError(status, DecodeError::kEventLengthMismatch);
        return false;
      }
      if (!strings.Resolve(n, out.text)) {
        error = DecodeError::kBadStringRef;
        return false;
      }
      out.kind = static_cast<Tag>(tag) == Tag::kString ? ValueKind::kString : ValueKind::kAtom;
      return true;
    case Tag::kBytes: {
      if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
        error = VarintError(status, DecodeError::kEventLengthMismatch);
        return false;
      }
      if (n > kMaxStringBytes) {
        error = DecodeError::kStringTooLong;
        return false;
      }
      std::span<const std::uint8_t> raw;
      if (!in.Take(static_cast<std::size_t>(n), raw)) {
        error = DecodeError::kEventLengthMismatch;
        return false;
      }
      out.kind = ValueKind::kBytes;
      out.text = std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size());
      return true;
    }
    case Tag::kList:
    case Tag::kTuple:
    case Tag::kMap: {
      if (depth >= kMaxNesting) {
        error = DecodeError::kNestingTooDeep;
        return false;
      }
      if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
        error = VarintError(status, DecodeError::kEventLengthMismatch);
        return false;
      }
      const bool is_map = static_cast<Tag>(tag) == Tag::kMap;
      // Every element takes at least one byte: a count beyond the bytes left cannot be true.
      if (n > in.remaining() || (is_map && n * 2 > in.remaining())) {
        error = DecodeError::kEventLengthMismatch;
        return false;
      }
      const std::uint8_t* first = in.here();
      Value element;
      for (std::uint64_t i = 0; i < (is_map ? n * 2 : n); ++i) {
        if (!ReadValue(in, strings, depth + 1, element, error)) return false;
      }
      out.kind = is_map
                     ? ValueKind::kMap
                     : (static_cast<Tag>(tag) == Tag::kList ? ValueKind::kList : ValueKind::kTuple);
      out.count = static_cast<std::uint32_t>(n);
      out.body = std::span<const std::uint8_t>(first, in.here());
      out.strings = &strings;
      return true;
    }
  }
  error = DecodeError::kBadValueTag;
  return false;
}

}  // namespace detail

namespace {

// Decodes the body of one event. On success fills `event` (pointing into the scratch arrays).
class EventReader {
 public:
  EventReader(const StringTable& strings, std::span<std::uint8_t> flags,
              std::span<Measurement> measurements, std::span<MetadataField> metadata) noexcept
      : strings_(strings), flags_(flags), measurements_(measurements), metadata_(metadata) {}

  bool Read(std::span<const std::uint8_t> body, const FrameInfo& frame, Event& event,
            DecodeError& error) noexcept {
    Cursor in(body);
    std::uint64_t n = 0;
    Cursor::VarintStatus status{};
    auto varint = [&](std::uint64_t& out) {
      if ((status = in.Varint(out)) == Cursor::VarintStatus::kOk) return true;
      error = VarintError(status, DecodeError::kEventLengthMismatch);
      return false;
    };

    if (!varint(n)) return false;
    if (!strings_.Resolve(n, event.name)) {
      error = DecodeError::kBadStringRef;
      return false;
    }
    if (!NameValid(n)) {
      error = DecodeError::kInvalidName;
      return false;
    }
    event.name_ref = static_cast<std::uint32_t>(n);

    std::uint8_t flags = 0;
    if (!in.Byte(flags)) {
      error = DecodeError::kEventLengthMismatch;
      return false;
    }
    if ((flags & ~kEventHasTime) != 0) {
      error = DecodeError::kBadFlags;
      return false;
    }
    event.has_time = (flags & kEventHasTime) != 0;
    event.system_time = 0;
    if (event.has_time) {
      if (!varint(n)) return false;
      const std::int64_t t = detail::ZigzagDecode(n);
      // Wrapping add: a nonsense time stays a value, never undefined behaviour.
      event.system_time =
          frame.has_base_time
              ? static_cast<std::int64_t>(static_cast<std::uint64_t>(frame.base_time) +
                                          static_cast<std::uint64_t>(t))
              : t;
    }

    if (!varint(n)) return false;
    if (n > measurements_.size()) {
      error = DecodeError::kTooManyMeasurements;
      return false;
    }
    const auto measurement_count = static_cast<std::size_t>(n);
    for (std::size_t i = 0; i < measurement_count; ++i) {
      Measurement& m = measurements_[i];
      if (!varint(n)) return false;
      if (!Key(n >> 1, m.key, error)) return false;
      m.key_ref = static_cast<std::uint32_t>(n >> 1);
      if ((n & 1) == 0) {
        std::uint64_t raw = 0;
        if (!varint(raw)) return false;
        m.value = Number::Int(detail::ZigzagDecode(raw));
      } else {
        double d = 0;
        if (!in.Float64(d)) {
          error = DecodeError::kEventLengthMismatch;
          return false;
        }
        m.value = Number::Float(d);
      }
    }

    if (!varint(n)) return false;
    if (n > metadata_.size()) {
      error = DecodeError::kTooManyMetadata;
      return false;
    }
    const auto metadata_count = static_cast<std::size_t>(n);
    for (std::size_t i = 0; i < metadata_count; ++i) {
      MetadataField& f = metadata_[i];
      if (!varint(n)) return false;
      // The key's text is not kept: consumers compare references, and resolve the text when asked.
      if (n >= kStaticStrings && !FrameKey(n, error)) return false;
      f.key_ref = static_cast<std::uint32_t>(n);
      if (!CommonValue(in, f.value) && !SlowValue(in, f.value, error)) return false;
    }
    if (!in.empty()) {
      error = DecodeError::kEventLengthMismatch;
      return false;
    }
    event.measurements = measurements_.first(measurement_count);
    event.metadata = metadata_.first(metadata_count);
    return true;
  }

 private:
  bool NameValid(std::uint64_t ref) noexcept {
    if (ref < kStaticStrings) return true;  // every static string is a valid one-segment name
    std::uint8_t& f = flags_[static_cast<std::size_t>(ref - kStaticStrings)];
    if ((f & kNameChecked) == 0) {
      f = static_cast<std::uint8_t>(
          f | kNameChecked |
          (IsValidEventName(strings_.frame_strings[ref - kStaticStrings]) ? kNameValid : 0));
    }
    return (f & kNameValid) != 0;
  }

  // Reads the most common metadata values here, without a call: an integer of up to three varint
  // bytes, or a string or atom by a one-byte reference. False, having read nothing, for anything
  // else (ReadValue's).
  bool CommonValue(Cursor& in, Value& out) noexcept {
    const std::uint8_t* p = in.here();
    const std::size_t left = in.remaining();
    if (left == 0) return false;
    if (p[0] >= kSmallIntTag && p[0] <= kSmallIntTag + kSmallIntMax) {
      out.kind = ValueKind::kInt;
      out.int_value = p[0] - kSmallIntTag;
      out.strings = &strings_;
      in.Skip(1);
      return true;
    }
    if (p[0] == static_cast<std::uint8_t>(Tag::kInt) && left >= 2) {
      // Integers under 2^20 in magnitude: at most three varint bytes. Longer ones, and varints cut
      // short, are ReadValue's (which reports the latter).
      std::uint64_t v = p[1] & 0x7FU;
      std::size_t n = 1;
      if ((p[1] & 0x80U) != 0) {
        if (left < 3) return false;
        v |= static_cast<std::uint64_t>(p[2] & 0x7FU) << 7;
        n = 2;
        if ((p[2] & 0x80U) != 0) {
          if (left < 4 || (p[3] & 0x80U) != 0) return false;
          v |= static_cast<std::uint64_t>(p[3]) << 14;
          n = 3;
        }
      }
      out.kind = ValueKind::kInt;
      out.int_value = detail::ZigzagDecode(v);
      out.strings = &strings_;
      in.Skip(1 + n);
      return true;
    }
    const bool text = p[0] == static_cast<std::uint8_t>(Tag::kString) ||
                      p[0] == static_cast<std::uint8_t>(Tag::kAtom);
    if (!text || left < 2 || p[1] >= 0x80 || !strings_.Resolve(p[1], out.text)) return false;
    out.kind =
        p[0] == static_cast<std::uint8_t>(Tag::kString) ? ValueKind::kString : ValueKind::kAtom;
    out.strings = &strings_;
    in.Skip(2);
    return true;
  }

  // ReadValue on a copy of `in`, which then takes its place: `in` itself is never passed to a
  // call, so the compiler can keep its position in a register rather than in memory.
  bool SlowValue(Cursor& in, Value& out, DecodeError& error) const noexcept {
    Cursor copy = in;
    const bool ok = detail::ReadValue(copy, strings_, 0, out, error);
    in = copy;
    return ok;
  }

  bool Key(std::uint64_t ref, std::string_view& out, DecodeError& error) noexcept {
    if (!strings_.Resolve(ref, out)) {
      error = DecodeError::kBadStringRef;
      return false;
    }
    return ref < kStaticStrings || FrameKey(ref, error);
  }

  // Checks that frame string `ref` (>= kStaticStrings) exists and may be a key: every static
  // string may.
  bool FrameKey(std::uint64_t ref, DecodeError& error) const noexcept {
    const std::uint64_t index = ref - kStaticStrings;
    if (index >= strings_.frame_count) {
      error = DecodeError::kBadStringRef;
      return false;
    }
    if (strings_.frame_strings[index].empty() ||
        (flags_[static_cast<std::size_t>(index)] & kUtf8Valid) == 0) {
      error = DecodeError::kInvalidKey;
      return false;
    }
    return true;
  }

  const StringTable& strings_;
  std::span<std::uint8_t> flags_;
  std::span<Measurement> measurements_;
  std::span<MetadataField> metadata_;
};

}  // namespace

DecodeSummary FrameDecoder::Decode(std::span<const std::uint8_t> frame,
                                   FrameVisitor& visitor) noexcept {
  DecodeSummary summary;
  auto reject = [&](DecodeError error) {
    summary.frame_rejected = true;
    visitor.OnError(error, 0);
    return summary;
  };
  if (frame.size() > kMaxFrameBytes) return reject(DecodeError::kFrameTooLarge);

  Cursor in(frame);
  std::uint8_t magic0 = 0;
  std::uint8_t magic1 = 0;
  if (!in.Byte(magic0) || !in.Byte(magic1) || magic0 != kMagic0 || magic1 != kMagic1) {
    return reject(DecodeError::kBadMagic);
  }
  std::uint8_t version = 0;
  std::uint8_t flags = 0;
  if (!in.Byte(version)) return reject(DecodeError::kTruncated);
  if (version != kVersion) return reject(DecodeError::kUnsupportedVersion);
  if (!in.Byte(flags)) return reject(DecodeError::kTruncated);
  if ((flags & ~kFrameHasBaseTime) != 0) return reject(DecodeError::kBadFlags);

  std::uint64_t n = 0;
  Cursor::VarintStatus status{};
  FrameInfo info;
  if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
    return reject(VarintError(status, DecodeError::kTruncated));
  }
  if (n == 0 || n > kMaxUnitsPerSecond) return reject(DecodeError::kBadTimeUnit);
  info.units_per_second = n;
  if ((flags & kFrameHasBaseTime) != 0) {
    if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
      return reject(VarintError(status, DecodeError::kTruncated));
    }
    info.has_base_time = true;
    info.base_time = detail::ZigzagDecode(n);
  }

  if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
    return reject(VarintError(status, DecodeError::kTruncated));
  }
  if (n > kMaxStrings) return reject(DecodeError::kTooManyStrings);
  const auto string_count = static_cast<std::uint32_t>(n);
  for (std::uint32_t i = 0; i < string_count; ++i) {
    if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
      return reject(VarintError(status, DecodeError::kTruncated));
    }
    if (n > kMaxStringBytes) return reject(DecodeError::kStringTooLong);
    std::span<const std::uint8_t> raw;
    if (!in.Take(static_cast<std::size_t>(n), raw)) return reject(DecodeError::kTruncated);
    strings_[i] = std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size());
    // Most frame strings are ASCII: checked inline, without the call of the full validation.
    string_flags_[i] = detail::IsAscii(strings_[i]) || IsValidUtf8(strings_[i]) ? kUtf8Valid : 0;
  }

  if ((status = in.Varint(n)) != Cursor::VarintStatus::kOk) {
    return reject(VarintError(status, DecodeError::kTruncated));
  }
  if (n > kMaxEventsPerFrame) return reject(DecodeError::kTooManyEvents);
  const auto event_count = static_cast<std::uint32_t>(n);
  // Unique among all frames decoded on this thread, whichever decoder: a consumer that caches per
  // frame (the aggregation shard) sees frames of several listeners' decoders on one thread.
  thread_local std::uint64_t frames_on_this_thread = 0;
  info.sequence = ++frames_on_this_thread;

  const StringTable table{strings_.data(), string_count};
  EventReader reader(table, std::span<std::uint8_t>(string_flags_.data(), string_count),
                     measurements_, metadata_);
  Event event;
  for (std::uint32_t i = 0; i < event_count; ++i) {
    std::uint64_t length = 0;
    std::span<const std::uint8_t> body;
    status = in.Varint(length);
    if (status != Cursor::VarintStatus::kOk || !in.Take(static_cast<std::size_t>(length), body)) {
      // Without a trustworthy length the rest of the frame cannot be delimited: stop here.
      const std::uint32_t lost = event_count - i;
      summary.events_rejected += lost;
      visitor.OnError(status == Cursor::VarintStatus::kOverflow ? DecodeError::kBadVarint
                                                                : DecodeError::kTruncated,
                      lost);
      return summary;
    }
    DecodeError error{};
    if (reader.Read(body, info, event, error)) {
      ++summary.events_accepted;
      visitor.OnEvent(info, event);
    } else {
      ++summary.events_rejected;
      visitor.OnError(error, 1);
    }
  }
  if (!in.empty()) visitor.OnError(DecodeError::kTrailingBytes, 0);
  return summary;
}

}  // namespace telemetryd::wire
