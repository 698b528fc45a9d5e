// The v1 frame against the compact JSON of the same events (the NDJSON form telemetry-send reads).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "test_support.h"

using namespace telemetryd::wire;
using namespace telemetryd::wire::test;

namespace {

EventRecord VsrEvent(int i) {
  EventRecord e;
  e.name = "vsr.protocol.prepare.sent";
  e.measurements = {{"count", Number::Int(2 + i % 3)}};
  e.metadata = {{"node_id", Term::String("n1")},    {"view_number", Term::Int(4 + i / 10)},
                {"status", Term::Atom("normal")},   {"cluster_size", Term::Int(3)},
                {"op_number", Term::Int(1200 + i)}, {"commit_number", Term::Int(1199 + i)}};
  return e;
}

std::size_t JsonSize(const EventRecord& e) {
  nlohmann::json meta = nlohmann::json::object();
  for (const auto& [k, v] : e.metadata) {
    if (v.kind == ValueKind::kInt) {
      meta[k] = v.int_value;
    } else {
      meta[k] = v.text;
    }
  }
  nlohmann::json j = {{"event", e.name},
                      {"measurements", {{"count", e.measurements[0].second.int_value}}},
                      {"metadata", meta}};
  return j.dump().size();
}

}  // namespace

TEST_CASE("one VSR event encodes to at most 40% of its compact JSON") {
  const auto frame = EncodeAll({VsrEvent(0)});
  const std::size_t json = JsonSize(VsrEvent(0));
  MESSAGE("one event: frame ", frame.size(), " bytes, JSON ", json, " bytes");
  CHECK(frame.size() * 100 <= json * 40);
}

TEST_CASE("twenty VSR events encode to at most 20% of their compact JSON") {
  std::vector<EventRecord> records;
  std::size_t json = 0;
  for (int i = 0; i < 20; ++i) {
    records.push_back(VsrEvent(i));
    json += JsonSize(records.back()) + 1;  // one NDJSON line each
  }
  const auto frame = EncodeAll(records);
  MESSAGE("twenty events: frame ", frame.size(), " bytes, JSON ", json, " bytes");
  CHECK(frame.size() * 100 <= json * 20);
  FrameDecoder decoder;
  Recorder rec;
  decoder.Decode(frame, rec);
  CHECK(rec.events.size() == 20);
}
