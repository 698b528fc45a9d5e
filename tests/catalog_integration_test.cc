// Every event of every built-in catalog, sent through a real socket to the real daemon, yields the
// series its catalog promises: each counter counts it once, each distribution and summary observes
// it once, each gauge shows it; spans pair and the in-progress gauges return to 0.
#include <doctest/doctest.h>

#include <map>
#include <sstream>

#include "support/daemon_process.h"
#include "telemetryd/aggregate/engine.h"
#include "telemetryd/client/client.h"
#include "telemetryd/config/catalog_loader.h"
#include "telemetryd/exporters/prometheus_metrics.h"

using namespace telemetryd;
using telemetryd::test::DaemonProcess;
using telemetryd::test::Eventually;
using telemetryd::test::HttpGet;
using telemetryd::test::MetricValue;

namespace {

wire::Term ValueFor(aggregate::MetadataType type, const std::string& key, int span_id) {
  using aggregate::MetadataType;
  switch (type) {
    case MetadataType::kString:
      return wire::Term::String("s_" + key);
    case MetadataType::kAtom:
      return wire::Term::Atom("a_" + key);
    case MetadataType::kInteger:
      return wire::Term::Int(7);
    case MetadataType::kFloat:
      return wire::Term::Float(1.5);
    case MetadataType::kBoolean:
      return wire::Term::Bool(true);
    case MetadataType::kMap:
      return wire::Term::Map({{wire::Term::Atom("k"), wire::Term::Int(1)}});
    case MetadataType::kList:
      return wire::Term::List({wire::Term::Int(1)});
    case MetadataType::kReference:
      return wire::Term::Bytes("ref-" + std::to_string(span_id));
    case MetadataType::kAny:
      return wire::Term::String("any");
  }
  return wire::Term::Nil();
}

// Sum of the values of every sample of `name` (any labels) in an exposition; -1 when absent.
double SumOf(const std::string& exposition, const std::string& name) {
  std::istringstream in(exposition);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::size_t end = line.find_first_of("{ ");
    if (line.compare(0, end, name) != 0 || end != name.size()) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
    found = true;
  }
  return found ? sum : -1;
}

}  // namespace

TEST_CASE("every event of every built-in catalog yields its series") {
  const auto catalogs = config::LoadCatalogs({TELEMETRYD_CATALOG_DIR});
  REQUIRE_MESSAGE(catalogs.has_value(), (catalogs ? "" : catalogs.error().message));
  REQUIRE(catalogs->size() == 4);
  const auto engine = aggregate::Engine::Create(*catalogs, {});
  REQUIRE(engine.has_value());

  DaemonProcess d(TELEMETRYD_BINARY, R"(
listeners:
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {enabled: false}, tcp: {enabled: false}}
prometheus: {port: 0}
)");
  REQUIRE_MESSAGE(d.ready(), d.log());
  client::ClientOptions options;
  options.transport = client::Transport::kTcp;
  options.port = d.port("native_tcp");
  auto c = client::Client::Connect(options);
  REQUIRE(c.has_value());

  // Spans: every start first (monotonic_time 1 s), then every stop/exception (4 s, duration 0 for
  // the VSR leadership stop whose duration is documented as always 0), then the rest.
  std::size_t sent = 0;
  std::map<std::string, int> span_ids;
  for (const int pass : {0, 1, 2}) {
    for (const auto& catalog : *catalogs) {
      for (const auto& event : catalog.events) {
        const int want = event.span == aggregate::SpanRole::kStart  ? 0
                         : event.span == aggregate::SpanRole::kNone ? 2
                                                                    : 1;
        if (want != pass) continue;
        const std::string prefix = event.name.substr(0, event.name.rfind('.'));
        if (!span_ids.count(prefix)) span_ids[prefix] = static_cast<int>(span_ids.size());
        wire::EventRecord record;
        record.name = event.name;
        for (const auto& [key, unit] : event.measurements) {
          std::int64_t value = 2;
          if (key == "monotonic_time") value = pass == 0 ? 1'000'000'000 : 4'000'000'000;
          if (key == "duration" && event.name == "vsr.leadership.stop") value = 0;
          record.measurements.emplace_back(key, wire::Number::Int(value));
        }
        for (const auto& [key, type] : event.metadata) {
          record.metadata.emplace_back(key, ValueFor(type, key, span_ids[prefix]));
        }
        REQUIRE((*c)->Send(record));
        ++sent;
      }
    }
  }
  REQUIRE((*c)->Flush());
  MESSAGE(sent, " events sent");
  REQUIRE(Eventually([&] {
    return MetricValue(HttpGet(d.port("prometheus"), "/metrics"),
                       "telemetryd_ingest_events_total{listener=\"native_tcp\"}") ==
           static_cast<double>(sent);
  }));

  const std::string text = HttpGet(d.port("prometheus"), "/metrics");
  CHECK(SumOf(text, "telemetryd_aggregate_dropped_total") == 0);
  CHECK(MetricValue(text, "telemetryd_spans_open") == 0);
  std::size_t checked = 0;
  for (const auto& metric : (*engine)->metrics()) {
    const auto p = exporters::NameFor(metric);
    CAPTURE(metric.name);
    CAPTURE(p.name);
    switch (metric.type) {
      case aggregate::MetricType::kCounter:
        CHECK(SumOf(text, p.name) == 1);
        break;
      case aggregate::MetricType::kDistribution:
        CHECK(SumOf(text, p.name + "_count") == 1);
        CHECK(SumOf(text, p.name + "_bucket") >= 1);
        break;
      case aggregate::MetricType::kSummary:
        CHECK(SumOf(text, p.name + "_count") == 1);
        break;
      case aggregate::MetricType::kSum:
      case aggregate::MetricType::kLastValue:
        if (metric.span_gauge) {
          CHECK(SumOf(text, p.name) == 0);  // started and stopped
        } else {
          CHECK(SumOf(text, p.name) > 0);
        }
        break;
    }
    ++checked;
  }
  MESSAGE(checked, " metrics checked");
  // The leadership stop carried duration 0: the paired start gives 3 seconds.
  CHECK(SumOf(text, "vsr_leadership_stop_duration_seconds_sum") == doctest::Approx(3.0));
}
