// Every malformed case of docs/wire-format.md: the reason reported and which events survive.
#include <doctest/doctest.h>

#include <set>

#include "test_support.h"

using namespace telemetryd::wire;
using namespace telemetryd::wire::test;

namespace {

EventRecord Simple(const std::string& name, std::int64_t count) {
  EventRecord e;
  e.name = name;
  e.measurements = {{"count", Number::Int(count)}};
  e.metadata = {{"node_id", Term::String("n1")}};
  return e;
}

Recorder DecodeBytes(const std::vector<std::uint8_t>& bytes) {
  FrameDecoder decoder;
  Recorder rec;
  decoder.Decode(bytes, rec);
  return rec;
}

// Offset of event `index`'s length prefix in a frame made by EncodeAll with default options.
std::size_t EventOffset(const std::vector<std::uint8_t>& frame, std::size_t index) {
  std::size_t pos = 4 + 5;  // header and the 5-byte varint of 1e9 units per second
  std::size_t strings = frame[pos++];
  while (strings-- > 0) pos += 1U + frame[pos];
  ++pos;  // event count (< 128 here)
  for (std::size_t i = 0; i < index; ++i) pos += 1U + frame[pos];
  return pos;
}

}  // namespace

TEST_CASE("header damage rejects the whole frame") {
  const auto good = EncodeAll({Simple("a.b", 1)});
  struct Case {
    std::string what;
    std::vector<std::uint8_t> bytes;
    DecodeError reason;
  };
  auto patched = [&](std::size_t at, std::uint8_t value) {
    auto copy = good;
    copy[at] = value;
    return copy;
  };
  std::vector<Case> cases = {
      {"empty", {}, DecodeError::kBadMagic},
      {"statsd line", {'a', ':', '1', '|', 'c'}, DecodeError::kBadMagic},
      {"wrong magic", patched(1, 0x1F), DecodeError::kBadMagic},
      {"version 2", patched(2, 2), DecodeError::kUnsupportedVersion},
      {"unknown frame flag", patched(3, 0x80), DecodeError::kBadFlags},
      {"header cut", std::vector<std::uint8_t>(good.begin(), good.begin() + 6),
       DecodeError::kTruncated},
      {"zero time unit", {0xD7, 0x1E, 1, 0, 0, 0, 0}, DecodeError::kBadTimeUnit},
      {"overlong varint",
       {0xD7, 0x1E, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01},
       DecodeError::kBadVarint},
      {"too many strings", {0xD7, 0x1E, 1, 0, 1, 0x81, 0x08}, DecodeError::kTooManyStrings},
      {"string too long", {0xD7, 0x1E, 1, 0, 1, 1, 0x81, 0x20}, DecodeError::kStringTooLong},
      {"string table cut", {0xD7, 0x1E, 1, 0, 1, 1, 5, 'a', 'b'}, DecodeError::kTruncated},
      {"too many events", {0xD7, 0x1E, 1, 0, 1, 0, 0x81, 0x80, 0x08}, DecodeError::kTooManyEvents},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    FrameDecoder decoder;
    Recorder rec;
    const auto summary = decoder.Decode(c.bytes, rec);
    CHECK(summary.frame_rejected);
    CHECK(rec.events.empty());
    REQUIRE(rec.errors.size() == 1);
    CHECK(rec.errors[0].first == c.reason);
  }
}

TEST_CASE("a frame cut inside an event keeps the events before it") {
  const auto good = EncodeAll({Simple("a.b", 1), Simple("a.b", 2), Simple("a.b", 3)});
  const std::size_t cut = EventOffset(good, 1) + 3;
  const auto rec = DecodeBytes(
      std::vector<std::uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut)));
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0].measurements[0].second.int_value == 1);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].first == DecodeError::kTruncated);
  CHECK(rec.errors[0].second == 2);
}

TEST_CASE("a damaged event is skipped and the events after it survive") {
  const auto good = EncodeAll({Simple("a.b", 1), Simple("a.b", 2), Simple("a.b", 3)});
  struct Case {
    std::string what;
    std::size_t offset_in_event;  // from the event's first body byte
    std::uint8_t value;
    DecodeError reason;
  };
  // Event body: name ref, flags, measurement count, key<<1|kind, value, metadata count, key, tag,
  // ref.
  const std::vector<Case> cases = {
      {"name ref out of range", 0, 0x7F, DecodeError::kBadStringRef},
      {"unknown event flag", 1, 0x04, DecodeError::kBadFlags},
      {"too many measurements", 2, 33, DecodeError::kTooManyMeasurements},
      {"too many metadata", 5, 65, DecodeError::kTooManyMetadata},
      {"metadata key out of range", 6, 0x7F, DecodeError::kBadStringRef},
      {"unknown value tag", 7, 0x0B, DecodeError::kBadValueTag},
      {"value ref out of range", 8, 0x7F, DecodeError::kBadStringRef},
  };
  for (const auto& c : cases) {
    CAPTURE(c.what);
    auto bytes = good;
    bytes[EventOffset(good, 1) + 1 + c.offset_in_event] = c.value;
    const auto rec = DecodeBytes(bytes);
    REQUIRE(rec.events.size() == 2);
    CHECK(rec.events[0].measurements[0].second.int_value == 1);
    CHECK(rec.events[1].measurements[0].second.int_value == 3);
    REQUIRE(rec.errors.size() == 1);
    CHECK(rec.errors[0].first == c.reason);
    CHECK(rec.errors[0].second == 1);
  }
}

TEST_CASE("an event whose length disagrees with its content is rejected alone") {
  auto bytes = EncodeAll({Simple("a.b", 1), Simple("a.b", 2)});
  // Declare event 0 one byte longer and give it a stray byte: the body then has trailing content.
  const std::size_t at = EventOffset(bytes, 0);
  bytes[at] = static_cast<std::uint8_t>(bytes[at] + 1);
  bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at + bytes[at]), 0x00);
  const auto rec = DecodeBytes(bytes);
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0].measurements[0].second.int_value == 2);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].first == DecodeError::kEventLengthMismatch);
}

TEST_CASE("invalid UTF-8 in a name or key rejects that event only") {
  EventRecord ok = Simple("a.b", 1);
  auto bytes = EncodeAll({Simple("x\xC3\xA9.y", 7), ok});  // "xé.y": valid; then corrupt it
  bool patched = false;
  for (std::size_t i = 0; i + 1 < bytes.size(); ++i) {
    if (bytes[i] == 0xC3 && bytes[i + 1] == 0xA9) {
      bytes[i + 1] = 0x28;  // "\xC3(" is not UTF-8
      patched = true;
      break;
    }
  }
  REQUIRE(patched);
  const auto rec = DecodeBytes(bytes);
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0].name == "a.b");
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].first == DecodeError::kInvalidName);
}

TEST_CASE(
    "a key that is not UTF-8 rejects each event that uses it; the same bytes as a value do not") {
  // "ké" is valid UTF-8; the frame's one copy of it is corrupted below.
  EventRecord as_key = Simple("a.b", 1);
  as_key.metadata = {{"k\xC3\xA9", Term::Int(1)}};
  EventRecord as_value = Simple("a.b", 2);
  as_value.metadata = {{"node_id", Term::String("k\xC3\xA9")}};
  EventRecord as_measurement_key = Simple("a.b", 3);
  as_measurement_key.measurements = {{"k\xC3\xA9", Number::Int(3)}};
  EventRecord valid_key = Simple("a.b", 4);
  valid_key.metadata = {{"n\xC3\xA9", Term::Int(4)}};
  auto bytes = EncodeAll({as_value, as_key, valid_key, as_measurement_key, as_key});
  std::size_t patched = 0;
  for (std::size_t i = 0; i + 2 < bytes.size(); ++i) {
    if (bytes[i] == 'k' && bytes[i + 1] == 0xC3 && bytes[i + 2] == 0xA9) {
      bytes[i + 2] = 0x28;  // "\xC3(" is not UTF-8
      ++patched;
    }
  }
  REQUIRE(patched == 1);  // one string in the frame's table, used four times
  const auto rec = DecodeBytes(bytes);
  REQUIRE(rec.events.size() == 2);
  REQUIRE(rec.events[0].metadata.size() == 1);
  CHECK(rec.events[0].metadata[0].first == "node_id");
  CHECK(rec.events[0].metadata[0].second == Term::String("k\xC3("));
  REQUIRE(rec.events[1].metadata.size() == 1);
  CHECK(rec.events[1].metadata[0].first == "n\xC3\xA9");
  REQUIRE(rec.errors.size() == 3);
  for (const auto& error : rec.errors) {
    CHECK(error.first == DecodeError::kInvalidKey);
    CHECK(error.second == 1);
  }
}

TEST_CASE("nesting deeper than eight levels is rejected") {
  // Hand-built: one event "a.b" (static? no: frame string 0) with metadata "v" = 9 nested lists.
  std::vector<std::uint8_t> body = {64, 0, 0, 1, 65};  // name ref 64, flags, 0 meas, 1 meta, key 65
  for (int i = 0; i < 9; ++i) body.insert(body.end(), {0x08, 0x01});
  body.push_back(0x40);
  std::vector<std::uint8_t> frame = {0xD7, 0x1E, 1, 0, 1, 2, 3, 'a', '.', 'b', 1, 'v', 1};
  frame.push_back(static_cast<std::uint8_t>(body.size()));
  frame.insert(frame.end(), body.begin(), body.end());
  auto rec = DecodeBytes(frame);
  CHECK(rec.events.empty());
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].first == DecodeError::kNestingTooDeep);
  // Eight levels are fine.
  frame[13] = static_cast<std::uint8_t>(frame[13] - 2);
  frame.erase(frame.begin() + 19, frame.begin() + 21);
  rec = DecodeBytes(frame);
  CHECK(rec.events.size() == 1);
  CHECK(rec.errors.empty());
}

TEST_CASE("bytes after the declared events are reported and the events kept") {
  auto bytes = EncodeAll({Simple("a.b", 1)});
  bytes.push_back(0xAA);
  const auto rec = DecodeBytes(bytes);
  CHECK(rec.events.size() == 1);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].first == DecodeError::kTrailingBytes);
  CHECK(rec.errors[0].second == 0);
}

TEST_CASE("every reason has a distinct stable name") {
  std::set<std::string_view> names;
  for (std::size_t i = 0; i < kDecodeErrorCount; ++i) {
    const auto name = DecodeErrorName(static_cast<DecodeError>(i));
    CHECK(name != "unknown");
    names.insert(name);
  }
  CHECK(names.size() == kDecodeErrorCount);
}
