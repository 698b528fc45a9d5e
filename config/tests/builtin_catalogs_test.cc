// The built-in catalogs (config/catalogs/*.yaml): they load, they declare every event of the
// systems they describe (config/tests/seed_events.txt, cross-checked against the system documents
// in ../shared/seeds when that directory exists), and they define the metrics operators need.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "telemetryd/aggregate/catalog.h"
#include "telemetryd/config/catalog_loader.h"

namespace {

using telemetryd::aggregate::CatalogSpec;
using telemetryd::aggregate::EventSpec;
using telemetryd::aggregate::MetricSpec;
using telemetryd::aggregate::MetricType;
using telemetryd::aggregate::SpanGaugeSpec;
using telemetryd::aggregate::SpanRole;
using telemetryd::aggregate::TagSpec;
using telemetryd::aggregate::Unit;

constexpr std::string_view kSourceDir = TELEMETRYD_SOURCE_DIR;
constexpr std::array<std::string_view, 4> kSystems = {"vsr", "partisan", "snakepit", "router_core"};

std::string SourcePath(std::string_view relative) {
  return std::string(kSourceDir) + "/" + std::string(relative);
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read " << path.string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<CatalogSpec> LoadBuiltins() {
  auto loaded = telemetryd::config::LoadCatalogs({SourcePath("config/catalogs")});
  REQUIRE_MESSAGE(loaded.has_value(), (loaded ? std::string() : loaded.error().message));
  return std::move(loaded).value();
}

const CatalogSpec& Catalog(const std::vector<CatalogSpec>& catalogs, std::string_view system) {
  const auto it = std::find_if(catalogs.begin(), catalogs.end(),
                               [&](const CatalogSpec& c) { return c.system == system; });
  REQUIRE_MESSAGE(it != catalogs.end(), "no catalog for system " << system);
  return *it;
}

const EventSpec* FindEvent(const CatalogSpec& catalog, std::string_view name) {
  for (const auto& event : catalog.events) {
    if (event.name == name) return &event;
  }
  return nullptr;
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The event and measurement a metric reads, with the documented defaults applied (the loader
// may or may not have filled them in).
std::string EventOf(const MetricSpec& m) {
  if (!m.event_name.empty()) return m.event_name;
  return m.name.substr(0, m.name.rfind('.'));
}
std::string MeasurementOf(const MetricSpec& m) {
  if (!m.measurement.empty()) return m.measurement;
  return m.name.substr(m.name.rfind('.') + 1);
}

std::string TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kSum:
      return "sum";
    case MetricType::kLastValue:
      return "last_value";
    case MetricType::kDistribution:
      return "distribution";
    case MetricType::kSummary:
      return "summary";
  }
  return "?";
}

// The first metric of `type` on `event` (and, unless it is empty, on `measurement`).
const MetricSpec* FindMetric(const CatalogSpec& catalog, MetricType type, std::string_view event,
                             std::string_view measurement = {}) {
  for (const auto& m : catalog.metrics) {
    if (m.type != type || EventOf(m) != event) continue;
    if (!measurement.empty() && MeasurementOf(m) != measurement) continue;
    return &m;
  }
  return nullptr;
}

const TagSpec* FindTag(const MetricSpec& m, std::string_view key) {
  for (const auto& tag : m.tags) {
    if (tag.key == key) return &tag;
  }
  return nullptr;
}

// Requires a metric of `type` on event/measurement tagged with at least `tags`; returns it.
const MetricSpec& RequireMetric(const CatalogSpec& catalog, MetricType type, std::string_view event,
                                std::string_view measurement,
                                std::initializer_list<std::string_view> tags = {}) {
  const MetricSpec* m = FindMetric(catalog, type, event, measurement);
  REQUIRE_MESSAGE(m != nullptr, catalog.system << ": no " << TypeName(type) << " on " << event
                                               << std::string(measurement.empty() ? "" : ".")
                                               << measurement);
  for (const auto tag : tags) {
    CHECK_MESSAGE(FindTag(*m, tag) != nullptr, m->name << " has no tag " << tag);
  }
  return *m;
}

void CheckConversion(const MetricSpec& m, Unit from, Unit to) {
  CHECK_MESSAGE(m.unit_from == from, m.name << ": unexpected unit to convert from");
  CHECK_MESSAGE(m.unit_to == to, m.name << ": unexpected unit to convert to");
}

// seed_events.txt: "# system" lines start a group; other non-empty lines are event names.
std::vector<std::pair<std::string, std::string>> SeedEventList() {
  std::vector<std::pair<std::string, std::string>> events;  // (system, event)
  std::istringstream in(ReadFile(SourcePath("config/tests/seed_events.txt")));
  std::string line;
  std::string system;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '#') {
      system = line.substr(line.find_first_not_of("# "));
      continue;
    }
    REQUIRE_MESSAGE(!system.empty(), "seed_events.txt: " << line << " comes before any # system");
    events.emplace_back(system, line);
  }
  return events;
}

// The function called around position `pos` of `text` ("telemetry:span", ":telemetry.attach"),
// if `pos` is inside the argument list of a call that starts in the same paragraph.
std::string EnclosingCall(const std::string& text, std::size_t pos) {
  int depth = 0;
  for (std::size_t i = pos; i > 0 && pos - i < 400; --i) {
    const char c = text[i - 1];
    if (c == '\n' && i >= 2 && text[i - 2] == '\n') break;  // a blank line ends the search
    if (c == ')') {
      ++depth;
    } else if (c == '(') {
      if (depth == 0) {
        std::size_t begin = i - 1;
        while (begin > 0) {
          const char p = text[begin - 1];
          const bool name_char = (p >= 'a' && p <= 'z') || (p >= 'A' && p <= 'Z') ||
                                 (p >= '0' && p <= '9') || p == '_' || p == '.' || p == ':';
          if (!name_char) break;
          --begin;
        }
        return text.substr(begin, i - 1 - begin);
      }
      --depth;
    }
  }
  return {};
}

// Event names in a system document: lists of atoms written as `[:vsr, :protocol, :prepare,
// :sent]` (Elixir) or `[router_core, route, start]` (Erlang). Not events, and left out:
//  - lists whose first atom is not one of the documented systems' roots: illustrative code such as
//    `[:myapp, :custom, :event]`, the naming pattern `[component, operation, phase]`, and names
//    relative to the `[:vsr]` prefix as passed to Vsr.Telemetry.execute/span
//    (`[:protocol, :prepare, :sent]`, whose full name is listed separately);
//  - span prefixes, the first argument of a `span(...)` call (`[router_core, route]`): the events
//    are the prefix plus start/stop/exception, each listed separately;
//  - metric names passed to telemetry_metrics_prometheus_core's execute
//    (`[:snakepit, :worker_recycled_total]`, `[:snakepit, :worker_uptime_seconds]`): the handler
//    derives them from `[:snakepit, :worker, :recycled]`; no system emits them.
// Telemetry.Metrics names in strings ("vsr.protocol.prepare.sent.count") are not lists and are not
// matched.
std::set<std::string> EventsInDocument(const std::string& text) {
  static const std::set<std::string> kRoots = {"vsr", "partisan", "snakepit", "router_core",
                                               "router_policy_store"};
  static const std::regex kList(R"(\[\s*:?[a-z_][a-z0-9_]*(?:\s*,\s*:?[a-z_][a-z0-9_]*)+\s*\])");
  static const std::regex kAtom(R"([a-z_][a-z0-9_]*)");
  std::set<std::string> events;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kList);
       it != std::sregex_iterator(); ++it) {
    const std::string list = it->str();
    std::vector<std::string> segments;
    for (auto a = std::sregex_iterator(list.begin(), list.end(), kAtom);
         a != std::sregex_iterator(); ++a) {
      segments.push_back(a->str());
    }
    if (segments.empty() || kRoots.count(segments.front()) == 0) continue;
    const std::string call = EnclosingCall(text, static_cast<std::size_t>(it->position()));
    if (call.size() >= 4 && call.compare(call.size() - 4, 4, "span") == 0) continue;
    if (call.find("prometheus_core") != std::string::npos) continue;
    std::string name;
    for (const auto& segment : segments) name += (name.empty() ? "" : ".") + segment;
    events.insert(name);
  }
  return events;
}

}  // namespace

TEST_CASE("the four built-in catalogs load and describe one system each") {
  const auto catalogs = LoadBuiltins();
  REQUIRE(catalogs.size() == kSystems.size());
  for (const auto& system : kSystems) {
    const auto& catalog = Catalog(catalogs, system);
    CHECK_MESSAGE(!catalog.description.empty(), system);
    CHECK_MESSAGE(!catalog.events.empty(), system);
    CHECK_MESSAGE(!catalog.metrics.empty(), system);
  }
}

TEST_CASE("every metric has a description and metric names are unique across the catalogs") {
  const auto catalogs = LoadBuiltins();
  std::map<std::string, int> names;
  for (const auto& catalog : catalogs) {
    for (const auto& m : catalog.metrics) {
      CHECK_MESSAGE(!m.description.empty(), m.name << " has no description");
      CHECK_MESSAGE(FindEvent(catalog, EventOf(m)) != nullptr,
                    m.name << ": event " << EventOf(m) << " not in " << catalog.system);
      ++names[m.name];
    }
    for (const auto& g : catalog.span_gauges) {
      CHECK_MESSAGE(!g.description.empty(), g.name << " has no description");
      ++names[g.name];
    }
  }
  for (const auto& entry : names) {
    CHECK_MESSAGE(entry.second == 1, entry.first << " defined " << entry.second << " times");
  }
}

TEST_CASE("the catalogs declare exactly the events of seed_events.txt, in the right system") {
  const auto catalogs = LoadBuiltins();
  const auto seeds = SeedEventList();
  REQUIRE(!seeds.empty());
  std::set<std::string> listed;
  for (const auto& seed : seeds) {
    const std::string& system = seed.first;
    const std::string& event = seed.second;
    CHECK_MESSAGE(listed.insert(event).second, "seed_events.txt lists " << event << " twice");
    const auto& catalog = Catalog(catalogs, system);
    CHECK_MESSAGE(FindEvent(catalog, event) != nullptr,
                  event << " is not declared in the " << system << " catalog");
  }
  for (const auto& catalog : catalogs) {
    for (const auto& event : catalog.events) {
      CHECK_MESSAGE(listed.count(event.name) == 1,
                    event.name << " is declared but not in seed_events.txt");
    }
  }
}

TEST_CASE("seed_events.txt lists exactly the events named in the system documents") {
  const std::filesystem::path dir = std::filesystem::path(kSourceDir) / ".." / "shared" / "seeds";
  if (!std::filesystem::is_directory(dir)) {
    MESSAGE("no seed documents at " << dir.string() << "; skipped");
    return;
  }
  std::set<std::string> documented;
  int documents = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".txt") continue;
    ++documents;
    const auto found = EventsInDocument(ReadFile(entry.path()));
    CHECK_MESSAGE(!found.empty(), "no event names found in " << entry.path().string());
    documented.insert(found.begin(), found.end());
  }
  REQUIRE(documents > 0);
  std::set<std::string> listed;
  for (const auto& seed : SeedEventList()) listed.insert(seed.second);
  for (const auto& event : documented) {
    CHECK_MESSAGE(listed.count(event) == 1, event << " is documented but not in seed_events.txt");
  }
  for (const auto& event : listed) {
    CHECK_MESSAGE(documented.count(event) == 1,
                  event << " is in seed_events.txt but in no seed document");
  }
  // What the extraction leaves out on purpose.
  for (const char* excluded :
       {"myapp.custom.event", "snakepit.worker_recycled_total", "snakepit.worker_uptime_seconds",
        "router_core.route", "protocol.prepare.sent", "component.operation.phase"}) {
    CHECK_MESSAGE(documented.count(excluded) == 0, std::string(excluded) << " is not an event");
  }
}

TEST_CASE("measurement units follow the systems' documentation") {
  const auto catalogs = LoadBuiltins();
  const std::map<std::string, Unit> common = {
      {"count", Unit::kNone},
      {"sockets", Unit::kNone},
      {"queue_size", Unit::kNone},
      {"queue_len", Unit::kNone},
      {"operations_committed", Unit::kNone},
      {"monotonic_time", Unit::kNative},
      {"system_time", Unit::kNative},
      {"duration_ms", Unit::kMillisecond},
      {"startup_time_ms", Unit::kMillisecond},
      {"duration_us", Unit::kMicrosecond},
      {"bytes", Unit::kByte},
  };
  for (const auto& catalog : catalogs) {
    for (const auto& event : catalog.events) {
      for (const auto& measurement : event.measurements) {
        const std::string& name = measurement.first;
        const Unit unit = measurement.second;
        Unit expected = Unit::kNone;
        if (name == "duration") {
          expected = catalog.system == "router_core" ? Unit::kMicrosecond : Unit::kNative;
        } else {
          const auto it = common.find(name);
          REQUIRE_MESSAGE(it != common.end(), event.name << ": unexpected measurement " << name);
          expected = it->second;
        }
        CHECK_MESSAGE(unit == expected, event.name << "." << name << ": wrong unit");
      }
    }
  }
}

TEST_CASE("span events carry their role") {
  const auto catalogs = LoadBuiltins();
  const std::map<std::string, SpanRole> roles = {
      {"start", SpanRole::kStart}, {"stop", SpanRole::kStop}, {"exception", SpanRole::kException}};
  const std::vector<std::pair<std::string, std::string>> spans = {
      {"vsr", "vsr.leadership."},
      {"vsr", "vsr.protocol.client_request."},
      {"vsr", "vsr.state_machine.operation."},
      {"router_core", "router_core.route."},
  };
  for (const auto& span : spans) {
    const std::string& system = span.first;
    const std::string& prefix = span.second;
    int found = 0;
    for (const auto& event : Catalog(catalogs, system).events) {
      if (!StartsWith(event.name, prefix)) continue;
      ++found;
      const auto role = roles.find(event.name.substr(prefix.size()));
      REQUIRE_MESSAGE(role != roles.end(), event.name << " is not a span phase");
      CHECK_MESSAGE(event.span == role->second, event.name << ": wrong span role");
      if (system == "vsr") {
        CHECK_MESSAGE(event.metadata.count("telemetry_span_context") == 1, event.name);
      }
    }
    CHECK_MESSAGE(found >= 2, prefix);
  }
}

TEST_CASE("vsr metrics") {
  const auto catalogs = LoadBuiltins();
  const auto& vsr = Catalog(catalogs, "vsr");
  for (const auto& event : vsr.events) {
    const bool counted =
        StartsWith(event.name, "vsr.protocol.") || StartsWith(event.name, "vsr.state_transfer.") ||
        StartsWith(event.name, "vsr.replication.") || StartsWith(event.name, "vsr.timer.");
    if (counted) RequireMetric(vsr, MetricType::kCounter, event.name, {}, {"node_id"});
  }
  RequireMetric(vsr, MetricType::kSum, "vsr.protocol.prepare.sent", "count", {"node_id"});
  RequireMetric(vsr, MetricType::kCounter, "vsr.view_change.start", {}, {"node_id"});
  RequireMetric(vsr, MetricType::kCounter, "vsr.view_change.complete", {}, {"node_id"});
  RequireMetric(vsr, MetricType::kCounter, "vsr.state.status_change", {},
                {"node_id", "old_status", "new_status"});
  RequireMetric(vsr, MetricType::kSum, "vsr.state.commit_advance", "operations_committed",
                {"node_id"});

  CheckConversion(RequireMetric(vsr, MetricType::kDistribution, "vsr.leadership.stop", "duration"),
                  Unit::kNative, Unit::kSecond);
  for (const char* span :
       {"vsr.state_machine.operation.stop", "vsr.protocol.client_request.stop"}) {
    for (const auto type : {MetricType::kDistribution, MetricType::kSummary}) {
      CheckConversion(RequireMetric(vsr, type, span, "duration", {"node_id"}), Unit::kNative,
                      Unit::kMillisecond);
    }
  }

  const auto gauge =
      std::find_if(vsr.span_gauges.begin(), vsr.span_gauges.end(),
                   [](const SpanGaugeSpec& g) { return g.span == "vsr.leadership"; });
  REQUIRE(gauge != vsr.span_gauges.end());
  CHECK(gauge->name == "vsr.leadership.active");
  REQUIRE(gauge->tags.size() == 1);
  CHECK(gauge->tags[0].key == "node_id");
}

TEST_CASE("partisan metrics") {
  const auto catalogs = LoadBuiltins();
  const auto& partisan = Catalog(catalogs, "partisan");
  for (const auto& event : partisan.events) {
    RequireMetric(partisan, MetricType::kCounter, event.name, {});
  }
  for (const char* event : {"partisan.membership.peer.join", "partisan.membership.peer.leave",
                            "partisan.membership.peer.up", "partisan.membership.peer.down"}) {
    RequireMetric(partisan, MetricType::kCounter, event, {}, {"name"});
  }
}

TEST_CASE("snakepit metrics") {
  const auto catalogs = LoadBuiltins();
  const auto& snakepit = Catalog(catalogs, "snakepit");
  RequireMetric(snakepit, MetricType::kCounter, "snakepit.worker.recycled", {}, {"pool", "reason"});
  RequireMetric(snakepit, MetricType::kCounter, "snakepit.worker.health_check_failed", {},
                {"pool", "reason"});
  for (const char* event :
       {"snakepit.worker.crash", "snakepit.worker.tainted", "snakepit.worker.restarted",
        "snakepit.worker.started", "snakepit.pool.saturated", "snakepit.request.executed"}) {
    RequireMetric(snakepit, MetricType::kCounter, event, {}, {"pool"});
  }
  RequireMetric(snakepit, MetricType::kDistribution, "snakepit.worker.tainted", "duration_ms");
  RequireMetric(snakepit, MetricType::kDistribution, "snakepit.worker.started", "startup_time_ms");
  for (const char* event :
       {"snakepit.zero_copy.export", "snakepit.zero_copy.import", "snakepit.zero_copy.fallback"}) {
    RequireMetric(snakepit, MetricType::kCounter, event, {}, {"kind", "device"});
    RequireMetric(snakepit, MetricType::kSum, event, "bytes", {"kind", "device"});
    RequireMetric(snakepit, MetricType::kDistribution, event, "duration_ms");
  }
  for (const char* event :
       {"snakepit.python.exception.mapped", "snakepit.python.exception.unmapped"}) {
    RequireMetric(snakepit, MetricType::kCounter, event, {}, {"python_type", "library"});
  }
  RequireMetric(snakepit, MetricType::kLastValue, "snakepit.pool.saturated", "queue_size",
                {"pool"});
  RequireMetric(snakepit, MetricType::kCounter, "snakepit.request.executed", {},
                {"pool", "success"});
  RequireMetric(snakepit, MetricType::kDistribution, "snakepit.request.executed", "duration_us");
  RequireMetric(snakepit, MetricType::kSummary, "snakepit.request.executed", "duration_us");
}

TEST_CASE("router_core metrics") {
  const auto catalogs = LoadBuiltins();
  const auto& router = Catalog(catalogs, "router_core");
  const auto& routes = RequireMetric(router, MetricType::kCounter, "router_core.routes_total", {},
                                     {"result", "provider_id", "reason"});
  CHECK_FALSE(FindTag(routes, "result")->default_value.has_value());
  for (const char* key : {"provider_id", "reason"}) {
    const TagSpec* tag = FindTag(routes, key);
    REQUIRE(tag != nullptr);
    CHECK_MESSAGE(tag->default_value == std::optional<std::string>("none"), std::string(key));
  }
  RequireMetric(router, MetricType::kCounter, "router_core.resolutions_total", {}, {"provider_id"});
  RequireMetric(router, MetricType::kCounter, "router_core.errors_total", {}, {"error"});

  CheckConversion(RequireMetric(router, MetricType::kDistribution, "router_core.route.stop",
                                "duration", {"result"}),
                  Unit::kMicrosecond, Unit::kSecond);
  CheckConversion(
      RequireMetric(router, MetricType::kSummary, "router_core.route.stop", "duration", {"result"}),
      Unit::kMicrosecond, Unit::kSecond);
  CheckConversion(RequireMetric(router, MetricType::kDistribution, "router_core.route.exception",
                                "duration", {"error"}),
                  Unit::kMicrosecond, Unit::kSecond);

  for (const char* event :
       {"router_policy_store.load_policy", "router_policy_store.upsert_policy",
        "router_policy_store.delete_policy", "router_policy_store.list_policies"}) {
    RequireMetric(router, MetricType::kCounter, event, {});
    CheckConversion(RequireMetric(router, MetricType::kDistribution, event, "duration_us"),
                    Unit::kMicrosecond, Unit::kSecond);
    RequireMetric(router, MetricType::kLastValue, event, "queue_len");
  }
}
