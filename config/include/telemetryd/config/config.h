// The daemon's configuration: one YAML file (docs/configuration.md) parsed into a validated,
// immutable Config that the rest of the code takes. Every problem is reported with file, line,
// column and the field's path. Thread-safety: Config is a value; the functions are reentrant.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
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

struct Config {
  std::string source;  // the file it came from
  ingest::IngestOptions ingest;
  CatalogOptions catalogs;
  aggregate::EngineOptions aggregation;  // aggregation limits and StatsD input mapping
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
