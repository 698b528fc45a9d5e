// FrameEncoder builds v1 frames: it batches events up to a byte budget (an MTU for UDP), sends each
// repeated string once per frame and uses the static table where it can.
// Thread-safety: one encoder per thread; not for concurrent use.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "telemetryd/wire/event.h"
#include "telemetryd/wire/term.h"

namespace telemetryd::wire {

// An event to encode.
struct EventRecord {
  std::string name;                         // segments joined with '.'
  std::optional<std::int64_t> system_time;  // native units since the Unix epoch
  std::vector<std::pair<std::string, Number>> measurements;
  std::vector<std::pair<std::string, Term>> metadata;
};

struct EncoderOptions {
  std::uint64_t units_per_second = 1'000'000'000;  // the sender's native time unit
  std::size_t max_frame_bytes = 1432;              // frame budget, header included
  std::optional<std::int64_t> base_time;           // when set, event times are sent relative to it
};

enum class AddResult : std::uint8_t {
  kAdded,
  kFrameFull,      // does not fit with what is already in the frame: Finish() and add again
  kEventTooLarge,  // does not fit even in an empty frame of this budget
  kInvalid,        // breaks a v1 limit (name, key, string length, field count, nesting)
};

class FrameEncoder {
 public:
  explicit FrameEncoder(EncoderOptions options = {});
  FrameEncoder(const FrameEncoder&) = delete;
  FrameEncoder& operator=(const FrameEncoder&) = delete;

  AddResult Add(const EventRecord& event);
  [[nodiscard]] std::size_t event_count() const noexcept { return event_count_; }
  [[nodiscard]] bool empty() const noexcept { return event_count_ == 0; }
  // Size in bytes the frame would have if finished now.
  [[nodiscard]] std::size_t size() const noexcept;
  // Completes the frame and starts a new one. The bytes stay valid until the next call.
  std::span<const std::uint8_t> Finish();

 private:
  bool EncodeEvent(const EventRecord& event);
  bool EncodeTerm(const Term& term, std::size_t depth);
  bool Ref(std::string_view text, std::uint64_t& ref);
  void Rollback(std::size_t strings_bytes, std::size_t events_bytes, std::size_t added);
  std::size_t HeaderSize() const noexcept;

  EncoderOptions options_;
  std::vector<std::uint8_t> strings_;                     // encoded string table entries
  std::vector<std::uint8_t> events_;                      // encoded events
  std::vector<std::uint8_t> scratch_;                     // the event being encoded
  std::vector<std::uint8_t> frame_;                       // the finished frame
  std::unordered_map<std::string, std::uint32_t> index_;  // frame string -> reference
  std::vector<std::string> added_;                        // frame strings in table order
  std::size_t event_count_ = 0;
  bool table_full_ = false;  // the last Add ran out of frame strings
};

}  // namespace telemetryd::wire
