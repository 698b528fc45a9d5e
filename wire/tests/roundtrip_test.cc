#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "test_support.h"

using namespace telemetryd::wire;
using namespace telemetryd::wire::test;

namespace {

EventRecord VsrPrepareSent(std::int64_t count, std::int64_t op) {
  EventRecord e;
  e.name = "vsr.protocol.prepare.sent";
  e.measurements = {{"count", Number::Int(count)}};
  e.metadata = {{"node_id", Term::String("n1")},  {"view_number", Term::Int(4)},
                {"status", Term::Atom("normal")}, {"cluster_size", Term::Int(3)},
                {"op_number", Term::Int(op)},     {"commit_number", Term::Int(op - 1)}};
  return e;
}

}  // namespace

TEST_CASE("one event survives encode and decode unchanged") {
  const auto record = VsrPrepareSent(3, 120);
  const auto frame = EncodeAll({record});
  REQUIRE_FALSE(frame.empty());
  FrameDecoder decoder;
  Recorder rec;
  const auto summary = decoder.Decode(frame, rec);
  CHECK(summary.events_accepted == 1);
  CHECK(rec.errors.empty());
  REQUIRE(rec.events.size() == 1);
  CHECK(Same(rec.events[0], record));
  CHECK(rec.last_frame.units_per_second == 1'000'000'000);
}

TEST_CASE("every value kind and extreme numbers round-trip") {
  EventRecord e;
  e.name = "partisan.membership.peer.join";
  e.system_time = 1'764'000'000'123'456'789;
  e.measurements = {{"count", Number::Int(1)},
                    {"min", Number::Int(std::numeric_limits<std::int64_t>::min())},
                    {"max", Number::Int(std::numeric_limits<std::int64_t>::max())},
                    {"neg", Number::Int(-64)},
                    {"ratio", Number::Float(0.1)},
                    {"tiny", Number::Float(std::numeric_limits<double>::denorm_min())}};
  e.metadata = {
      {"name", Term::Atom("node@192.168.0.20")},
      {"listen_addrs",
       Term::List({Term::Map({{Term::Atom("ip"), Term::Tuple({Term::Int(127), Term::Int(0),
                                                              Term::Int(0), Term::Int(1)})},
                              {Term::Atom("port"), Term::Int(10200)}})})},
      {"telemetry_span_context", Term::Bytes(std::string("\x83r\x00\x03\xff", 5))},
      {"correlation_id", Term::Atom("undefined")},
      {"nothing", Term::Nil()},
      {"is_primary", Term::Bool(true)},
      {"flag", Term::Bool(false)},
      {"small", Term::Int(63)},
      {"medium", Term::Int(64)},
      {"negative", Term::Int(-1)},
      {"pi", Term::Float(3.14159)},
      {"empty_list", Term::List({})},
      {"empty_map", Term::Map({})},
      {"binary", Term::String(std::string("\xff\xfe", 2))},  // values may be any bytes
  };
  const auto frame = EncodeAll({e}, EncoderOptions{.units_per_second = 1'000'000});
  FrameDecoder decoder;
  Recorder rec;
  decoder.Decode(frame, rec);
  CHECK(rec.errors.empty());
  REQUIRE(rec.events.size() == 1);
  CHECK(Same(rec.events[0], e));
  CHECK(rec.last_frame.units_per_second == 1'000'000);
  CHECK(ToText(rec.events[0].metadata[1].second) == "[%{:ip => {127, 0, 0, 1}, :port => 10200}]");
}

TEST_CASE(
    "integer metadata of every varint length decodes exactly, also as an event's last bytes") {
  // 63 sits in the tag byte, 64 takes 2 zigzag varint bytes; 8191 / 8192 take 2 / 3;
  // 1048575 / 1048576 take 3 / 4 (the longest the decoder reads inline, and the shortest it leaves
  // to the general reader).
  const std::vector<std::int64_t> values = {0,
                                            63,
                                            64,
                                            -64,
                                            -65,
                                            8191,
                                            8192,
                                            -8192,
                                            -8193,
                                            1048575,
                                            1048576,
                                            -1048576,
                                            -1048577,
                                            std::numeric_limits<std::int64_t>::max(),
                                            std::numeric_limits<std::int64_t>::min()};
  std::vector<EventRecord> events;
  EventRecord all;
  all.name = "a.b";
  for (std::size_t i = 0; i < values.size(); ++i) {
    EventRecord e;
    e.name = "a.b";
    e.metadata = {{"value", Term::Int(values[i])}};  // the event's last bytes
    events.push_back(e);
    all.metadata.emplace_back("v" + std::to_string(i), Term::Int(values[i]));
  }
  events.push_back(all);
  FrameDecoder decoder;
  Recorder rec;
  decoder.Decode(EncodeAll(events), rec);
  CHECK(rec.errors.empty());
  REQUIRE(rec.events.size() == events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    CAPTURE(i);
    CHECK(Same(rec.events[i], events[i]));
  }

  // A varint cut by the end of the event: the event is rejected, whatever its length.
  for (const std::int64_t v : {std::int64_t{64}, std::int64_t{8192}, std::int64_t{1048576}}) {
    CAPTURE(v);
    EventRecord e;
    e.name = "a.b";
    e.metadata = {{"value", Term::Int(v)}};
    auto bytes = EncodeAll({e});
    // The frame ends with the event count (1), the body's one-byte length and the body: find
    // them, then cut the body's last byte (the varint's) and the length with it.
    std::size_t length = 1;
    while (length < 128 &&
           (bytes[bytes.size() - length - 1] != length || bytes[bytes.size() - length - 2] != 1)) {
      ++length;
    }
    REQUIRE(length < 128);
    --bytes[bytes.size() - length - 1];
    bytes.pop_back();
    Recorder cut;
    FrameDecoder d;
    d.Decode(bytes, cut);
    CHECK(cut.events.empty());
    REQUIRE(cut.errors.size() == 1);
    CHECK(cut.errors[0].first == DecodeError::kEventLengthMismatch);
  }
}

TEST_CASE("NaN and infinities are carried as floats; the aggregation decides what to do") {
  EventRecord e;
  e.name = "x.y";
  e.measurements = {{"a", Number::Float(std::numeric_limits<double>::quiet_NaN())},
                    {"b", Number::Float(-std::numeric_limits<double>::infinity())}};
  FrameDecoder decoder;
  Recorder rec;
  decoder.Decode(EncodeAll({e}), rec);
  REQUIRE(rec.events.size() == 1);
  CHECK(std::isnan(rec.events[0].measurements[0].second.float_value));
  CHECK(std::isinf(rec.events[0].measurements[1].second.float_value));
}

TEST_CASE("event times are relative to the frame's base time when it has one") {
  std::vector<EventRecord> records;
  for (int i = 0; i < 3; ++i) {
    auto e = VsrPrepareSent(3, 100 + i);
    e.system_time = 1'764'000'000'000'000'000 + i * 1000;
    records.push_back(e);
  }
  const auto with_base = EncodeAll(records, EncoderOptions{.base_time = 1'764'000'000'000'000'000});
  const auto without_base = EncodeAll(records);
  CHECK(with_base.size() < without_base.size());
  for (const auto* frame : {&with_base, &without_base}) {
    FrameDecoder decoder;
    Recorder rec;
    decoder.Decode(*frame, rec);
    REQUIRE(rec.events.size() == 3);
    for (int i = 0; i < 3; ++i)
      CHECK(Same(rec.events[static_cast<std::size_t>(i)], records[static_cast<std::size_t>(i)]));
  }
}

TEST_CASE("the encoder batches up to the frame budget and reports what does not fit") {
  FrameEncoder encoder(EncoderOptions{.max_frame_bytes = 300});
  std::size_t added = 0;
  AddResult result = AddResult::kAdded;
  while ((result = encoder.Add(VsrPrepareSent(3, 1000 + static_cast<std::int64_t>(added)))) ==
         AddResult::kAdded) {
    ++added;
  }
  CHECK(result == AddResult::kFrameFull);
  CHECK(added > 5);
  const std::size_t expected_size = encoder.size();
  const auto frame = encoder.Finish();
  CHECK(frame.size() == expected_size);
  CHECK(frame.size() <= 300);
  FrameDecoder decoder;
  Recorder rec;
  decoder.Decode(frame, rec);
  CHECK(rec.events.size() == added);
  CHECK(rec.errors.empty());
  // The rejected event goes into the next frame, whose string table starts afresh.
  CHECK(encoder.Add(VsrPrepareSent(3, 1)) == AddResult::kAdded);
  Recorder rec2;
  decoder.Decode(encoder.Finish(), rec2);
  REQUIRE(rec2.events.size() == 1);
  CHECK(rec2.events[0].name == "vsr.protocol.prepare.sent");
  CHECK(rec2.last_frame.sequence == rec.last_frame.sequence + 1);
}

TEST_CASE("the encoder refuses events that break v1 limits") {
  FrameEncoder encoder;
  EventRecord bad;
  bad.name = "a..b";
  CHECK(encoder.Add(bad) == AddResult::kInvalid);
  bad.name = "ok.name";
  bad.metadata = {{"", Term::Nil()}};
  CHECK(encoder.Add(bad) == AddResult::kInvalid);
  bad.metadata = {{"big", Term::String(std::string(5000, 'x'))}};
  CHECK(encoder.Add(bad) == AddResult::kInvalid);
  Term deep = Term::Int(1);
  for (int i = 0; i < 9; ++i) deep = Term::List({deep});
  bad.metadata = {{"deep", deep}};
  CHECK(encoder.Add(bad) == AddResult::kInvalid);
  CHECK(encoder.empty());
  EventRecord huge;
  huge.name = "ok.name";
  huge.metadata = {{"big", Term::String(std::string(2000, 'x'))}};
  CHECK(encoder.Add(huge) == AddResult::kEventTooLarge);
}

TEST_CASE("a frame that runs out of string slots is full, not the event invalid") {
  FrameEncoder encoder(EncoderOptions{.max_frame_bytes = 1 << 20});
  AddResult result = AddResult::kAdded;
  std::size_t added = 0;
  while (result == AddResult::kAdded && added < 2000) {
    EventRecord e;
    e.name = "many.strings";
    e.metadata = {{"k", Term::String("value-" + std::to_string(added))}};
    result = encoder.Add(e);
    if (result == AddResult::kAdded) ++added;
  }
  CHECK(result == AddResult::kFrameFull);
  CHECK(added == kMaxStrings - 2);  // the name and the key take two slots
}
