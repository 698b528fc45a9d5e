#include <doctest/doctest.h>

#include <fstream>
#include <iterator>

#include "telemetryd/config/config.h"

using namespace telemetryd;
using namespace telemetryd::config;

TEST_CASE("the bundled default config loads: four loopback listeners and the scrape endpoint") {
  const auto config = LoadConfigFile(TELEMETRYD_DEFAULT_CONFIG);
  REQUIRE_MESSAGE(config.has_value(), (config ? "" : config.error().message));
  REQUIRE(config->ingest.listeners.size() == 4);
  for (const auto& lo : config->ingest.listeners) CHECK(lo.address == "127.0.0.1");
  CHECK(config->ingest.listeners[0].port == 7625);
  CHECK(config->ingest.listeners[2].port == 8125);
  CHECK(config->prometheus.port == 9568);
}

TEST_CASE("an empty file means every default") {
  const auto config = ParseConfig("", "empty.yaml");
  REQUIRE(config.has_value());
  CHECK(config->ingest.workers == 2);
  CHECK(config->ingest.listeners.size() == 4);
}

TEST_CASE("errors name the file, line, column and field") {
  const auto config = ParseConfig(
      "listeners:\n"
      "  native:\n"
      "    udp: {port: 70000}\n"
      "    tcp: {enabled: maybe}\n"
      "  bogus: 1\n"
      "logging:\n"
      "  level: loud\n",
      "t.yaml");
  REQUIRE_FALSE(config.has_value());
  const std::string& m = config.error().message;
  CHECK(m.find("t.yaml:3:17: listeners.native.udp.port: must be between 0 and 65535, got 70000") !=
        std::string::npos);
  CHECK(m.find("t.yaml:4:20: listeners.native.tcp.enabled: expected true or false") !=
        std::string::npos);
  CHECK(m.find("t.yaml:5:3: listeners.bogus: unknown key") != std::string::npos);
  CHECK(m.find("t.yaml:7:10: logging.level: expected one of debug, info, warn, error") !=
        std::string::npos);
}

TEST_CASE("wrong types and syntax errors are reported with their position") {
  auto config = ParseConfig("listeners:\n  workers: two\n", "w.yaml");
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().message.find("w.yaml:2:12: listeners.workers: expected a whole number") !=
        std::string::npos);
  config = ParseConfig("listeners: [\n", "s.yaml");
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().code == "config.syntax");
  CHECK(config.error().message.rfind("s.yaml:", 0) == 0);
  config = ParseConfig("listeners:\n  workers: -1\n", "n.yaml");
  REQUIRE_FALSE(config.has_value());
}

TEST_CASE("a disabled listener is left out and the dump reads back to the same config") {
  const auto config = ParseConfig("listeners:\n  statsd:\n    tcp: {enabled: false}\n", "d.yaml");
  REQUIRE(config.has_value());
  CHECK(config->ingest.listeners.size() == 3);
  const auto again = ParseConfig(DumpConfig(*config), "dump");
  REQUIRE_MESSAGE(again.has_value(), (again ? "" : again.error().message));
  CHECK(DumpConfig(*again) == DumpConfig(*config));
  CHECK(again->ingest.listeners.size() == 3);
}

TEST_CASE("a missing file is an error, not a crash") {
  const auto config = LoadConfigFile("/nonexistent/telemetryd.yaml");
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().code == "config.read");
}

TEST_CASE("the full example of docs/configuration.md is a valid configuration") {
  std::ifstream in(std::string(TELEMETRYD_SOURCE_DIR) + "/docs/configuration.md");
  REQUIRE(in.good());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto heading = text.find("## Full example");
  REQUIRE(heading != std::string::npos);
  const auto start = text.find("```yaml\n", heading);
  const auto end = text.find("```", start + 8);
  REQUIRE(start != std::string::npos);
  const auto config = ParseConfig(text.substr(start + 8, end - start - 8), "configuration.md");
  REQUIRE_MESSAGE(config.has_value(), (config ? "" : config.error().message));
  CHECK(config->aggregation.statsd_mappings.size() == 1);
  CHECK(config->aggregation.series_ttl == std::chrono::seconds(3600));
  CHECK(config->catalogs.paths == std::vector<std::string>{"/etc/telemetryd/catalogs.d"});
}
