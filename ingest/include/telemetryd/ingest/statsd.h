// StatsdLineParser turns StatsD and DogStatsD text into StatsdSample views (docs/statsd.md).
// It never throws and never allocates; every rejected line is reported with a reason. Tags are
// checked on every line but split only on request (SplitStatsdTags), so a consumer that keys on
// the tag text as sent does not pay for it. Thread-safety: one parser per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "telemetryd/common/tag.h"

namespace telemetryd::ingest {

enum class StatsdType : std::uint8_t {
  kCounter,       // c
  kGauge,         // g
  kTimer,         // ms
  kHistogram,     // h
  kDistribution,  // d
  kSet,           // s
};

using StatsdTag = TagView;  // value empty for a bare tag such as "canary"

// One value of one line. Its texts are views into the packet (never into the parser), so a sample
// stays valid as long as the packet, beyond the visitor call: the intake keeps a packet's samples
// and hands them on in runs.
struct StatsdSample {
  std::string_view name;
  StatsdType type = StatsdType::kCounter;
  double value = 0.0;           // not used for kSet
  std::string_view set_member;  // kSet: the member, as sent
  bool gauge_delta = false;     // kGauge with an explicit '+' or '-' sign: add, don't set
  double sample_rate = 1.0;     // (0, 1]; counters are scaled by 1/rate downstream
  // The line's tags as sent, without the '#' ("env:prod,canary"), checked but not split (see
  // SplitStatsdTags); with several tag sections, the text from the first one's start to the last
  // one's end ("a:1|@0.5|#b:2"). Equal texts always split into equal tags, so the text can stand
  // for them as a key. Empty without tags.
  std::string_view tag_text;
};

enum class StatsdError : std::uint8_t {
  kMissingValue,   // no ':' or nothing after it
  kBadValue,       // not a finite number (or a bad set member)
  kBadType,        // missing or unknown type
  kBadSampleRate,  // not a number in (0, 1]
  kBadTags,        // empty tag list, too many tags, empty key
  kInvalidName,    // empty, too long, invalid UTF-8 or control characters
  kLineTooLong,
  kUnsupported,  // DogStatsD events (_e{) and service checks (_sc|)
  kCount         // number of reasons, not a reason
};
inline constexpr std::size_t kStatsdErrorCount = static_cast<std::size_t>(StatsdError::kCount);

// Stable snake_case name, used as the `reason` label in self-metrics and logs.
std::string_view StatsdErrorName(StatsdError error) noexcept;

class StatsdVisitor {
 public:
  virtual ~StatsdVisitor() = default;
  virtual void OnSample(const StatsdSample& sample) noexcept = 0;
  virtual void OnError(StatsdError error, std::string_view line) noexcept = 0;
};

inline constexpr std::size_t kStatsdMaxTags = 64;

// The longest line a parser takes by default (UDP); a TCP listener's is its max_frame_bytes.
inline constexpr std::size_t kStatsdMaxLineBytes = 8192;
inline constexpr std::size_t kStatsdMaxNameBytes = 255;

// Splits the tag text of a delivered sample into `out`, in wire order; returns the tags.
std::span<const StatsdTag> SplitStatsdTags(std::string_view tag_text,
                                           std::span<StatsdTag, kStatsdMaxTags> out) noexcept;

class StatsdLineParser {
 public:
  // Lines longer than `max_line_bytes` (not counting the "\n" or "\r\n") are rejected as
  // kLineTooLong. `fast` false: every line through the general parser, which the fast path for
  // common lines must agree with (a test compares the two).
  explicit StatsdLineParser(std::size_t max_line_bytes = kStatsdMaxLineBytes,
                            bool fast = true) noexcept
      : max_line_bytes_(max_line_bytes), fast_(fast) {}
  StatsdLineParser(const StatsdLineParser&) = delete;
  StatsdLineParser& operator=(const StatsdLineParser&) = delete;

  // Parses every line of `packet` (lines end in '\n' or "\r\n"; empty lines are skipped) and
  // calls the visitor once per value (a DogStatsD line "a:1:2:3|h" gives three samples) or once
  // per rejected line. Returns the number of samples delivered.
  std::size_t Parse(std::string_view packet, StatsdVisitor& visitor) noexcept;

 private:
  std::size_t max_line_bytes_;
  [[maybe_unused]] bool fast_;  // read only where the fast path is built (SSE2)
};

}  // namespace telemetryd::ingest
