// Every event of every built-in catalog, sent through a real socket to the real daemon, yields the
// series its catalog promises: each counter counts it once, each distribution and summary observes
// it once, each gauge shows it; spans pair and the in-progress gauges return to 0.
#include <doctest/doctest.h>

#include <map>

#include "support/catalog_events.h"
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
using telemetryd::test::SumOf;

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

  const std::size_t sent = telemetryd::test::SendEveryCatalogEvent(**c, *catalogs);
  REQUIRE(sent > 0);
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
