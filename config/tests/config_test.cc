#include <doctest/doctest.h>

#include <filesystem>
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

TEST_CASE("statsd_push: off by default, with the documented defaults") {
  const auto config = ParseConfig("", "empty.yaml");
  REQUIRE(config.has_value());
  const StatsdPushOptions& push = config->statsd_push;
  CHECK_FALSE(push.enabled);
  CHECK(push.interval == std::chrono::seconds(10));
  CHECK(push.mtu == 1432);
  CHECK(push.format == StatsdFormat::kStandard);
  CHECK(push.sum_as == StatsdSumAs::kCounter);
  CHECK(push.prefix.empty());
  CHECK(push.global_tags.empty());
  CHECK(push.destinations.empty());
}

TEST_CASE("statsd_push: every key, and the dump reads back to the same config") {
  const auto config = ParseConfig(
      "statsd_push:\n"
      "  enabled: true\n"
      "  interval_seconds: 1\n"
      "  mtu: 512\n"
      "  format: dogstatsd\n"
      "  prefix: telemetryd\n"
      "  global_tags: {env: prod, region: eu-1}\n"
      "  sum_as: gauge\n"
      "  destinations: [\"statsd.internal:9125\", \"[::1]:8125\", \"unix:///run/statsd.sock\"]\n",
      "p.yaml");
  REQUIRE_MESSAGE(config.has_value(), (config ? std::string() : config.error().message));
  const StatsdPushOptions& push = config->statsd_push;
  CHECK(push.enabled);
  CHECK(push.interval == std::chrono::seconds(1));
  CHECK(push.mtu == 512);
  CHECK(push.format == StatsdFormat::kDogstatsd);
  CHECK(push.prefix == "telemetryd");
  CHECK(push.global_tags ==
        std::vector<std::pair<std::string, std::string>>{{"env", "prod"}, {"region", "eu-1"}});
  CHECK(push.sum_as == StatsdSumAs::kGauge);
  REQUIRE(push.destinations.size() == 3);
  CHECK(push.destinations[0].kind == StatsdDestination::Kind::kUdp);
  CHECK(push.destinations[0].host == "statsd.internal");
  CHECK(push.destinations[0].port == 9125);
  CHECK(push.destinations[1].host == "::1");
  CHECK(push.destinations[1].port == 8125);
  CHECK(push.destinations[2].kind == StatsdDestination::Kind::kUnix);
  CHECK(push.destinations[2].path == "/run/statsd.sock");
  CHECK(push.destinations[2].text == "unix:///run/statsd.sock");

  const auto again = ParseConfig(DumpConfig(*config), "dump");
  REQUIRE_MESSAGE(again.has_value(), (again ? std::string() : again.error().message));
  CHECK(DumpConfig(*again) == DumpConfig(*config));
  CHECK(again->statsd_push.destinations.size() == 3);
  CHECK(again->statsd_push.destinations[1].text == "[::1]:8125");
  CHECK(again->statsd_push.global_tags == push.global_tags);
}

TEST_CASE("statsd_push: destinations are validated") {
  CHECK(ParseStatsdDestination("localhost:8125").has_value());
  CHECK(ParseStatsdDestination("10.1.2.3:1").has_value());
  for (const char* bad :
       {"nohost", ":8125", "host:", "host:0", "host:65536", "host:12a", "::1:8125", "[::1]8125",
        "[::1]", "unix://relative/path", "unix://", "unix:///", "bad host:8125"}) {
    CAPTURE(bad);
    const auto d = ParseStatsdDestination(bad);
    REQUIRE_FALSE(d.has_value());
    CHECK(d.error().code == "config.statsd_destination");
    CHECK(d.error().message.find(std::string("got \"") + bad + "\"") != std::string::npos);
  }
  CHECK_FALSE(ParseStatsdDestination("unix:///" + std::string(120, 'p')).has_value());
}

TEST_CASE("statsd_push: errors name the file, line, column and field") {
  const auto config = ParseConfig(
      "statsd_push:\n"
      "  enabled: true\n"
      "  mtu: 100\n"
      "  format: graphite\n"
      "  sum_as: histogram\n"
      "  global_tags: [env]\n"
      "  destinations: [\"nope\", \"h:99999\", {a: b}]\n"
      "  flush: 3\n",
      "e.yaml");
  REQUIRE_FALSE(config.has_value());
  const std::string& m = config.error().message;
  CHECK(m.find("e.yaml:3:8: statsd_push.mtu: must be between 512 and 65507, got 100") !=
        std::string::npos);
  CHECK(m.find("e.yaml:4:11: statsd_push.format: expected standard or dogstatsd, got "
               "\"graphite\"") != std::string::npos);
  CHECK(m.find("e.yaml:5:11: statsd_push.sum_as: expected counter or gauge") != std::string::npos);
  CHECK(m.find("e.yaml:6:16: statsd_push.global_tags: expected a mapping") != std::string::npos);
  CHECK(m.find("e.yaml:7:18: statsd_push.destinations[0]: expected host:port or unix:///path, "
               "got \"nope\"") != std::string::npos);
  CHECK(m.find("e.yaml:7:26: statsd_push.destinations[1]: the port must be a number from 1 to "
               "65535") != std::string::npos);
  CHECK(m.find("e.yaml:7:37: statsd_push.destinations[2]: expected host:port") !=
        std::string::npos);
  CHECK(m.find("e.yaml:8:3: statsd_push.flush: unknown key") != std::string::npos);

  auto empty = ParseConfig("statsd_push: {enabled: true}\n", "n.yaml");
  REQUIRE_FALSE(empty.has_value());
  CHECK(empty.error().message.find(
            "n.yaml:1:14: statsd_push.destinations: at least one destination is needed") !=
        std::string::npos);
  // Disabled, an empty list is fine.
  CHECK(ParseConfig("statsd_push: {enabled: false}\n", "n.yaml").has_value());
}

TEST_CASE("statsd_push: a destination that is telemetryd's own StatsD listener is refused") {
  auto config = ParseConfig("statsd_push: {enabled: true, destinations: [\"127.0.0.1:8125\"]}\n",
                            "loop.yaml");
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().message.find("loop.yaml:1:45: statsd_push.destinations[0]: is "
                                    "telemetryd's own StatsD listener") != std::string::npos);
  config = ParseConfig("statsd_push: {enabled: true, destinations: [\"localhost:8125\"]}\n",
                       "loop.yaml");
  CHECK_FALSE(config.has_value());
  // Another port, or the listener moved away, is fine.
  CHECK(ParseConfig("statsd_push: {enabled: true, destinations: [\"127.0.0.1:9125\"]}\n", "ok.yaml")
            .has_value());
  CHECK(ParseConfig("listeners: {statsd: {udp: {port: 18125}}}\n"
                    "statsd_push: {enabled: true, destinations: [\"127.0.0.1:8125\"]}\n",
                    "ok.yaml")
            .has_value());
}

TEST_CASE("a key given twice is an error, as in a catalog") {
  const auto config = ParseConfig(
      "prometheus:\n"
      "  port: 9100\n"
      "  port: 9200\n",
      "twice.yaml");
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().message.find("twice.yaml:3:3: prometheus.port") != std::string::npos);
}

TEST_CASE("two listeners on one transport, address and port are an error") {
  // With SO_REUSEPORT both would bind, and the kernel would share the datagrams between them.
  const auto config = ParseConfig(
      "listeners:\n"
      "  native: {udp: {port: 9125}}\n"
      "  statsd: {udp: {port: 9125}}\n",
      "same.yaml");
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().message.find("same.yaml:3:") != std::string::npos);
  CHECK(config.error().message.find("listeners.statsd.udp.port") != std::string::npos);
  CHECK(config.error().message.find("listeners.native.udp") != std::string::npos);

  // Against a default port (native UDP's 7625), and a wildcard address against a specific one.
  const auto on_default = ParseConfig(
      "listeners:\n"
      "  statsd:\n"
      "    udp: {address: 127.0.0.1, port: 7625}\n",
      "default.yaml");
  REQUIRE_FALSE(on_default.has_value());
  CHECK(on_default.error().message.find("default.yaml:3:") != std::string::npos);
  CHECK(on_default.error().message.find("listeners.statsd.udp.port: port 7625") !=
        std::string::npos);

  // One port for UDP and TCP, two addresses, or a port picked by the kernel: all fine.
  CHECK(ParseConfig("listeners:\n"
                    "  native: {udp: {port: 9125}, tcp: {port: 9125}}\n",
                    "ok.yaml")
            .has_value());
  CHECK(ParseConfig("listeners:\n"
                    "  native: {udp: {address: 127.0.0.1, port: 9125}}\n"
                    "  statsd: {udp: {address: 127.0.0.2, port: 9125}}\n",
                    "ok.yaml")
            .has_value());
  CHECK(ParseConfig("listeners:\n"
                    "  native: {udp: {port: 0}}\n"
                    "  statsd: {udp: {port: 0}}\n",
                    "ok.yaml")
            .has_value());
}

TEST_CASE("StatsD mapping labels are checked like every other field") {
  const auto config = ParseConfig(
      "statsd:\n"
      "  mappings:\n"
      "    - {match: \"app.*.req\", name: app.req, labels: {svc: [1, 2], q: \"$9\"}}\n",
      "labels.yaml");
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().message.find("statsd.mappings[0].labels.svc") != std::string::npos);
  CHECK(config.error().message.find("statsd.mappings[0].labels.q") != std::string::npos);

  for (const std::string bad : {"le", "quantile", "__x", "a-b", "9x"}) {
    CAPTURE(bad);
    const auto named = ParseConfig(
        "statsd:\n"
        "  mappings:\n"
        "    - {match: \"app.*.req\", name: app.req, labels: {\"" +
            bad + "\": x}}\n",
        "names.yaml");
    REQUIRE_FALSE(named.has_value());
    CHECK(named.error().message.find("names.yaml:3:") != std::string::npos);
    CHECK(named.error().message.find("statsd.mappings[0].labels." + bad) != std::string::npos);
  }
  const auto name_capture = ParseConfig(
      "statsd:\n"
      "  mappings:\n"
      "    - {match: \"app.*.req\", name: \"app.$2\"}\n",
      "name.yaml");
  REQUIRE_FALSE(name_capture.has_value());
  CHECK(name_capture.error().message.find("statsd.mappings[0].name: $2") != std::string::npos);
  const auto good = ParseConfig(
      "statsd:\n"
      "  mappings:\n"
      "    - {match: \"app.*.*\", name: \"app.$2\", labels: {service: \"$1\", _x9: \"v-$2\"}}\n",
      "good.yaml");
  REQUIRE_MESSAGE(good.has_value(), good.error().message);
  REQUIRE(good->aggregation.statsd_mappings.size() == 1);
  CHECK(good->aggregation.statsd_mappings[0].labels.size() == 2);
}

TEST_CASE("a directory is not a configuration file") {
  // Reading a directory through a stream gives no bytes, which would parse as every default.
  const std::string dir = std::filesystem::path(TELEMETRYD_DEFAULT_CONFIG).parent_path().string();
  const auto config = LoadConfigFile(dir);
  REQUIRE_FALSE(config.has_value());
  CHECK(config.error().code == "config.read");
  CHECK(config.error().message.find(dir + ": ") == 0);
}

TEST_CASE("listener port clash detection sees through spellings of one address") {
  for (const std::string pair :
       {"{address: \"::0\", port: 9125}}\n  statsd: {udp: {address: 127.0.0.1, port: 9125}}\n",
        "{address: \"::1\", port: 9125}}\n  statsd: {udp: {address: \"0::1\", port: 9125}}\n",
        "{address: \"0:0:0:0:0:0:0:0\", port: 9125}}\n  statsd: {udp: {address: \"::1\", port: "
        "9125}}\n"}) {
    CAPTURE(pair);
    const auto config = ParseConfig("listeners:\n  native: {udp: " + pair, "same.yaml");
    CHECK_FALSE(config.has_value());
  }
}
