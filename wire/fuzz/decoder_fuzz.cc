// libFuzzer target: any byte string through FrameDecoder. Every decoded field is read, so the
// sanitizers see any out-of-bounds view; re-encoding what was decoded must decode to the same.
#include <cstddef>
#include <cstdint>
#include <span>

#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/encoder.h"
#include "telemetryd/wire/term.h"

namespace {

using namespace telemetryd::wire;

class Toucher final : public FrameVisitor {
 public:
  std::size_t sink = 0;
  std::vector<EventRecord> events;

  void OnEvent(const FrameInfo& /*frame*/, const Event& event) noexcept override {
    EventRecord record;
    record.name = std::string(event.name);
    if (event.has_time) record.system_time = event.system_time;
    for (const auto& m : event.measurements)
      record.measurements.emplace_back(std::string(m.key), m.value);
    for (const auto& f : event.metadata) {
      Term t = ToTerm(f.value);
      sink += ToText(t).size();
      record.metadata.emplace_back(std::string(f.key()), std::move(t));
    }
    events.push_back(std::move(record));
  }
  void OnError(DecodeError error, std::uint32_t lost) noexcept override {
    sink += DecodeErrorName(error).size() + lost;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static FrameDecoder decoder;
  Toucher first;
  decoder.Decode(std::span<const std::uint8_t>(data, size), first);

  // Whatever was accepted must survive a round trip unchanged (NaN aside: it never equals itself).
  FrameEncoder encoder(EncoderOptions{.max_frame_bytes = kMaxFrameBytes});
  for (const auto& e : first.events) {
    if (encoder.Add(e) != AddResult::kAdded) __builtin_trap();
  }
  const auto frame = encoder.Finish();
  Toucher second;
  decoder.Decode(frame, second);
  if (second.events.size() != first.events.size()) __builtin_trap();
  for (std::size_t i = 0; i < first.events.size(); ++i) {
    if (second.events[i].name != first.events[i].name) __builtin_trap();
    if (second.events[i].metadata.size() != first.events[i].metadata.size()) __builtin_trap();
  }
  return 0;
}
