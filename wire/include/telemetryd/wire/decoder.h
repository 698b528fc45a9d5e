// FrameDecoder reads v1 frames and hands each valid event to a FrameVisitor; it never throws and
// never allocates after construction. Damage is reported per event where the rest of the frame can
// still be read (docs/wire-format.md, "Malformed input").
// Thread-safety: one FrameDecoder per thread; it keeps scratch space between calls.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

#include "telemetryd/wire/event.h"
#include "telemetryd/wire/format.h"

namespace telemetryd::wire {

enum class DecodeError : std::uint8_t {
  kBadMagic,
  kUnsupportedVersion,
  kBadFlags,
  kBadTimeUnit,
  kTruncated,
  kBadVarint,
  kTooManyStrings,
  kStringTooLong,
  kBadStringRef,
  kInvalidName,
  kInvalidKey,
  kTooManyMeasurements,
  kTooManyMetadata,
  kBadValueTag,
  kNestingTooDeep,
  kEventLengthMismatch,
  kTrailingBytes,
  kFrameTooLarge,
  kTooManyEvents,
  kCount  // number of reasons, not a reason
};
inline constexpr std::size_t kDecodeErrorCount = static_cast<std::size_t>(DecodeError::kCount);

// Stable snake_case name of a reason, used as the `reason` label in self-metrics and logs.
std::string_view DecodeErrorName(DecodeError error) noexcept;

class FrameVisitor {
 public:
  virtual ~FrameVisitor() = default;
  virtual void OnEvent(const FrameInfo& frame, const Event& event) noexcept = 0;
  // `events_lost` is how many declared events this error took with it (0 for trailing bytes).
  virtual void OnError(DecodeError error, std::uint32_t events_lost) noexcept = 0;
};

struct DecodeSummary {
  std::uint32_t events_accepted = 0;
  std::uint32_t events_rejected = 0;
  bool frame_rejected = false;  // the header or string table was unreadable: nothing accepted
};

class FrameDecoder {
 public:
  FrameDecoder() = default;
  FrameDecoder(const FrameDecoder&) = delete;
  FrameDecoder& operator=(const FrameDecoder&) = delete;

  // Decodes one whole frame (a UDP datagram, or a TCP frame without its length prefix).
  DecodeSummary Decode(std::span<const std::uint8_t> frame, FrameVisitor& visitor) noexcept;

 private:
  std::array<std::string_view, kMaxStrings> strings_{};
  std::array<std::uint8_t, kMaxStrings> string_flags_{};
  std::array<Measurement, kMaxMeasurements> measurements_{};
  std::array<MetadataField, kMaxMetadata> metadata_{};
};

}  // namespace telemetryd::wire
