// The daemon's configuration: one YAML file (docs/configuration.md) parsed into a validated,
// immutable Config that the rest of the code takes. Every problem is reported with file, line,
// column and the field's path. Thread-safety: Config is a value; the functions are reentrant.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "telemetryd/aggregate/engine.h"
#include "telemetryd/common/expected.h"
#include "telemetryd/common/log.h"
#include "telemetryd/ingest/listener_options.h"

namespace telemetryd::config {

struct PrometheusOptions {
  bool enabled = true;
  std::string address = "127.0.0.1";
  std::uint16_t port = 9568;
  // HTTP basic auth for /metrics when both are set.
  std::string username;
  std::string password;
  bool operator==(const PrometheusOptions&) const = default;
};

struct LoggingOptions {
  log::Level level = log::Level::kInfo;
  bool print_events = false;  // write every received event and sample to stderr (debugging)
};

struct CatalogOptions {
  bool builtin = true;
  std::string builtin_dir;         // default: where the build put the built-in catalogs
  std::vector<std::string> paths;  // more catalog files or directories (relative: to the config)
};

// Where the StatsD push exporter sends (docs/statsd-push.md). Defined here rather than in the
// exporters library so that the config library does not depend on it.
struct StatsdDestination {
  enum class Kind : std::uint8_t { kUdp, kUnix };
  Kind kind = Kind::kUdp;
  std::string host;        // kUdp: a name or an address (IPv6 without brackets), resolved at push
  std::uint16_t port = 0;  // kUdp
  std::string path;        // kUnix: the socket's absolute path
  std::string text;        // as configured; names the destination in logs and self-metrics
  bool operator==(const StatsdDestination&) const = default;
};

// "host:port", "[ipv6]:port" or "unix:///absolute/path". The error message says what is wrong.
Expected<StatsdDestination> ParseStatsdDestination(std::string_view text);

enum class StatsdFormat : std::uint8_t {
  kStandard,   // tags folded into the name: name.key_value
  kDogstatsd,  // tags as |#key:value
};
enum class StatsdSumAs : std::uint8_t { kCounter, kGauge };

struct StatsdPushOptions {
  bool enabled = false;
  std::chrono::seconds interval{10};
  std::size_t mtu = 1432;  // payload bytes per datagram
  StatsdFormat format = StatsdFormat::kStandard;
  std::string prefix;                                            // joined to names with a '.'
  std::vector<std::pair<std::string, std::string>> global_tags;  // in config order
  StatsdSumAs sum_as = StatsdSumAs::kCounter;
  std::vector<StatsdDestination> destinations;
  bool operator==(const StatsdPushOptions&) const = default;
};

struct Config {
  std::string source;  // the file it came from
  ingest::IngestOptions ingest;
  CatalogOptions catalogs;
  aggregate::EngineOptions aggregation;  // aggregation limits and StatsD input mapping
  StatsdPushOptions statsd_push;
  PrometheusOptions prometheus;
  LoggingOptions logging;
};

// Parses YAML text; `source` names it in error messages. All errors are reported, one per line.
Expected<Config> ParseConfig(std::string_view yaml, const std::string& source);
Expected<Config> LoadConfigFile(const std::string& path);
// Every catalog path the config names, built-ins first, relative paths resolved.
std::vector<std::string> CatalogPaths(const Config& config);
// The effective configuration, every default written out, as YAML that ParseConfig accepts.
std::string DumpConfig(const Config& config);

}  // namespace telemetryd::config
