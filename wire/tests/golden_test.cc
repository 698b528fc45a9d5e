// The golden vectors of docs/wire-vectors.json (explained in docs/wire-format.md): valid frames
// must encode to exactly their bytes and decode to exactly their events; damaged frames must decode
// to the listed surviving events and reasons. Other clients check themselves against the same file.
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

using namespace telemetryd::wire;
using namespace telemetryd::wire::test;

namespace {

nlohmann::json LoadVectors() {
  std::ifstream in(std::string(TELEMETRYD_SOURCE_DIR) + "/docs/wire-vectors.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

EncoderOptions OptionsFromJson(const nlohmann::json& v) {
  EncoderOptions options;
  options.units_per_second = v.value("units_per_second", std::uint64_t{1'000'000'000});
  if (v.contains("base_time")) options.base_time = v["base_time"].get<std::int64_t>();
  return options;
}

}  // namespace

TEST_CASE("golden vectors") {
  const auto vectors = LoadVectors();
  REQUIRE(vectors["vectors"].size() >= 10);
  for (const auto& v : vectors["vectors"]) {
    const std::string name = v["name"];
    CAPTURE(name);
    const auto bytes = FromHex(v["hex"].get<std::string>());
    const auto& expect = v["expect"];
    std::vector<EventRecord> events;
    for (const auto& e : expect["events"]) events.push_back(EventFromJson(e));

    if (v["valid"].get<bool>()) {
      const auto encoded = EncodeAll(events, OptionsFromJson(v));
      CHECK_MESSAGE(ToHex(encoded) == ToHex(bytes), "encoder output: ", ToHex(encoded));
    }
    FrameDecoder decoder;
    Recorder rec;
    const auto summary = decoder.Decode(bytes, rec);
    CHECK(summary.frame_rejected == expect.value("frame_rejected", false));
    REQUIRE(rec.events.size() == events.size());
    for (std::size_t i = 0; i < events.size(); ++i) CHECK(Same(rec.events[i], events[i]));
    const auto& errors = expect["errors"];
    REQUIRE(rec.errors.size() == errors.size());
    for (std::size_t i = 0; i < errors.size(); ++i) {
      CHECK(DecodeErrorName(rec.errors[i].first) == errors[i][0].get<std::string>());
      CHECK(rec.errors[i].second == errors[i][1].get<std::uint32_t>());
    }
    if (!rec.events.empty()) {
      CHECK(rec.last_frame.units_per_second == OptionsFromJson(v).units_per_second);
    }
  }
}

TEST_CASE("the static table in docs/wire-format.md is the one compiled in") {
  std::ifstream in(std::string(TELEMETRYD_SOURCE_DIR) + "/docs/wire-format.md");
  REQUIRE(in.good());
  std::string line;
  std::vector<std::string> documented;
  // Rows of the static table look like: "| 15 | `node_id` |".
  while (std::getline(in, line)) {
    if (line.rfind("| ", 0) != 0) continue;
    const auto tick = line.find('`');
    const auto end = line.find('`', tick + 1);
    if (tick == std::string::npos || end == std::string::npos) continue;
    const auto index_text = line.substr(2, line.find(' ', 2) - 2);
    if (index_text.empty() || index_text.find_first_not_of("0123456789") != std::string::npos)
      continue;
    CHECK(std::stoul(index_text) == documented.size());
    documented.push_back(line.substr(tick + 1, end - tick - 1));
  }
  const auto table = StaticStrings();
  REQUIRE(documented.size() == table.size());
  for (std::size_t i = 0; i < table.size(); ++i) CHECK(documented[i] == table[i]);
}
