// The Erlang client (clients/erlang) against the real daemon: an Erlang node started here runs
// telemetryd_client_it, which starts the client's sender pointed at the daemon and calls the
// handler exactly as :telemetry would, for events of the four built-in catalogs; the series on
// /metrics must be exactly what those events give, over UDP and over TCP.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "support/daemon_process.h"
#include "telemetryd/config/catalog_loader.h"

using telemetryd::test::ChildProcess;
using telemetryd::test::DaemonProcess;
using telemetryd::test::Eventually;
using telemetryd::test::HttpGet;
using telemetryd::test::MetricValue;
using telemetryd::test::SumOf;

namespace {

constexpr const char* kDaemonConfig = R"(
listeners:
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {enabled: false}, tcp: {enabled: false}}
prometheus: {port: 0}
)";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// An Erlang node running `telemetryd_client_it:main()` in `mode`, its sender pointed at the
// daemon's `transport` port; what it prints goes to a log in a temporary folder, which also holds
// the file the scenario waits for (Go()). Ended by pid when the object goes.
class ErlangNode {
 public:
  ErlangNode(const std::string& mode, const std::string& transport, std::uint16_t port) {
    char dir[] = "/tmp/telemetryd-erlang-XXXXXX";
    if (::mkdtemp(dir) == nullptr) return;
    log_path_ = std::string(dir) + "/erl.log";
    go_path_ = std::string(dir) + "/go";
    process_.emplace(std::vector<std::string>{TELEMETRYD_ERL, "-noshell", "-pa",
                                              TELEMETRYD_ERLANG_EBIN, TELEMETRYD_ERLANG_TEST_EBIN,
                                              "-eval", "telemetryd_client_it:main()", "-extra",
                                              mode, transport, std::to_string(port), go_path_},
                     log_path_);
  }

  // Lets the scenario go on to its second phase.
  void Go() const { std::ofstream(go_path_).put('\n'); }

  [[nodiscard]] std::string output() const {
    if (!process_ || !process_->started()) return "could not run " TELEMETRYD_ERL;
    return ReadFile(log_path_);
  }

  // Waits until the node printed `text`; false at once if it printed a failure instead.
  [[nodiscard]] bool WaitFor(const std::string& text) const {
    if (!process_ || !process_->started()) return false;
    Eventually(
        [&] {
          const std::string out = output();
          return out.find(text) != std::string::npos || out.find("failed") != std::string::npos;
        },
        std::chrono::seconds(60));
    const std::string out = output();
    return out.find(text) != std::string::npos && out.find("failed") == std::string::npos;
  }

  // A counter from the node's "counters dropped=0 ... sent=3 ..." line.
  [[nodiscard]] std::optional<long> Counter(const std::string& name) const {
    const std::string out = output();
    const auto line = out.find("counters ");
    if (line == std::string::npos) return std::nullopt;
    const auto at = out.find(" " + name + "=", line);
    if (at == std::string::npos) return std::nullopt;
    return std::stol(out.substr(at + name.size() + 2));
  }

 private:
  std::string log_path_;
  std::string go_path_;
  std::optional<ChildProcess> process_;
};

double EventsReceived(std::uint16_t prometheus, const std::string& listener) {
  return MetricValue(HttpGet(prometheus, "/metrics"),
                     "telemetryd_ingest_events_total{listener=\"" + listener + "\"}")
      .value_or(-1);
}

// The cumulative buckets of one histogram series: (upper bound, count), in exposition order.
// `labels` are the series' labels without le, as exposed ("node_id=\"n1\"").
std::vector<std::pair<double, double>> Buckets(const std::string& exposition,
                                               const std::string& name, const std::string& labels) {
  std::vector<std::pair<double, double>> buckets;
  const std::string prefix = name + "_bucket{" + (labels.empty() ? "" : labels + ",") + "le=\"";
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    const std::string le =
        line.substr(prefix.size(), line.find('"', prefix.size()) - prefix.size());
    const double bound = le == "+Inf" ? std::numeric_limits<double>::infinity() : std::stod(le);
    buckets.emplace_back(bound, std::stod(line.substr(line.rfind(' ') + 1)));
  }
  return buckets;
}

// A histogram series that observed `seconds` once: count 1, that sum, and every bucket from the
// first bound at or above the value on counts it, the ones below do not.
void CheckOneObservation(const std::string& exposition, const std::string& name,
                         const std::string& labels, double seconds) {
  CAPTURE(name);
  CAPTURE(labels);
  const std::string series = labels.empty() ? "" : "{" + labels + "}";
  CHECK(MetricValue(exposition, name + "_count" + series) == 1);
  CHECK(MetricValue(exposition, name + "_sum" + series).value_or(-1) == doctest::Approx(seconds));
  const auto buckets = Buckets(exposition, name, labels);
  REQUIRE(buckets.size() > 2);
  std::size_t below = 0;
  for (const auto& [bound, count] : buckets) {
    CAPTURE(bound);
    CHECK(count == (bound >= seconds ? 1 : 0));
    if (bound < seconds) ++below;
  }
  CHECK(below > 0);  // the value is not in the first bucket, so a wrong unit would show
}

// The scenario of telemetryd_client_it over `transport`: three spans start (the in-progress
// gauges go up), then they stop (back to 0) and one or more events of every built-in catalog
// follow. The values asserted are the ones telemetryd_client_it sends.
void RunScenario(const std::string& transport) {
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  const std::string listener = "native_" + transport;
  const std::uint16_t prometheus = d.port("prometheus");
  ErlangNode node("scenario", transport, d.port(listener));

  REQUIRE_MESSAGE(node.WaitFor("phase1"), node.output());
  REQUIRE(Eventually([&] { return EventsReceived(prometheus, listener) == 3; }));
  std::string text = HttpGet(prometheus, "/metrics");
  CHECK(MetricValue(text, "telemetryd_spans_open") == 3);
  CHECK(MetricValue(text, "vsr_leadership_active{node_id=\"n1\"}") == 1);
  CHECK(MetricValue(text, "vsr_leadership_start_count_total{node_id=\"n1\"}") == 1);
  CHECK(MetricValue(text, "router_core_route_start_count_total") == 1);

  node.Go();
  REQUIRE_MESSAGE(node.WaitFor("done"), node.output());
  CHECK(node.Counter("sent") == 28);
  CHECK(node.Counter("dropped") == 0);
  CHECK(node.Counter("lost") == 0);
  CHECK(node.Counter("invalid") == 0);
  CHECK(node.Counter("skipped") == 0);
  REQUIRE(Eventually([&] { return EventsReceived(prometheus, listener) == 28; }));
  text = HttpGet(prometheus, "/metrics");
  MESSAGE(node.output());

  // Nothing rejected or left unaggregated: every event had the tags its metrics need.
  CHECK(SumOf(text, "telemetryd_ingest_rejected_total") == 0);
  CHECK(SumOf(text, "telemetryd_aggregate_dropped_total") == 0);

  // Spans: all paired; the operation's 3 ms native-unit duration, the leadership's 2 s from the
  // monotonic times of its start and stop (its stop says duration 0), the route's 1830 us.
  CHECK(MetricValue(text, "telemetryd_spans_open") == 0);
  CHECK(MetricValue(text, "vsr_leadership_active{node_id=\"n1\"}") == 0);
  CheckOneObservation(text, "vsr_state_machine_operation_stop_duration_seconds", "node_id=\"n1\"",
                      0.003);
  CHECK(MetricValue(text, "vsr_state_machine_operation_duration_seconds_count{node_id=\"n1\"}") ==
        1);
  CHECK(MetricValue(text, "vsr_state_machine_operation_stop_count_total{node_id=\"n1\"}") == 1);
  CheckOneObservation(text, "vsr_leadership_stop_duration_seconds", "node_id=\"n1\"", 2.0);
  CheckOneObservation(text, "router_core_route_stop_duration_seconds",
                      "result=\"ok\",provider_id=\"openai\"", 0.00183);
  CHECK(MetricValue(
            text,
            "router_core_route_stop_count_total{provider_id=\"openai\",reason=\"best_score\"}") ==
        1);

  // VSR.
  CHECK(MetricValue(text, "vsr_protocol_prepare_sent_count_total{node_id=\"n1\"}") == 3);
  CHECK(MetricValue(text, "vsr_protocol_prepare_sent_replicas{node_id=\"n1\"}") == 6);
  CHECK(MetricValue(text,
                    "vsr_state_status_change_count_total{node_id=\"n1\",old_status=\"normal\","
                    "new_status=\"view_change\"}") == 1);
  CHECK(MetricValue(text,
                    "vsr_state_role_change_count_total{node_id=\"n1\",is_primary=\"false\"}") == 1);

  // Partisan: an atom name with a list of maps holding a tuple; a map in metadata.
  CHECK(MetricValue(text, "partisan_membership_peer_join_count_total{name=\"node2@127.0.0.1\"}") ==
        2);
  CHECK(MetricValue(text, "partisan_membership_peer_channel_up_count_total") == 1);
  CHECK(MetricValue(text, "partisan_membership_peer_channel_up_sockets") == 4);
  CHECK(MetricValue(text, "partisan_channel_configured_count_total{name=\"data\"}") == 1);
  CHECK(MetricValue(text, "partisan_socket_send_count_total") == 5);

  // Snakepit: float and integer measurements, atoms as labels, a boolean label.
  CHECK(MetricValue(text,
                    "snakepit_zero_copy_export_count_total{kind=\"dlpack\",device=\"cpu\"}") == 2);
  CHECK(MetricValue(text, "snakepit_zero_copy_export_bytes{kind=\"dlpack\",device=\"cpu\"}") ==
        69632);
  CHECK(MetricValue(
            text,
            "snakepit_zero_copy_export_duration_seconds_count{kind=\"dlpack\",device=\"cpu\"}") ==
        2);
  CHECK(MetricValue(
            text, "snakepit_zero_copy_export_duration_seconds_sum{kind=\"dlpack\",device=\"cpu\"}")
            .value_or(-1) == doctest::Approx(0.00175));
  CHECK(MetricValue(
            text, "snakepit_request_executed_count_total{pool=\"default\",success=\"true\"}") == 1);
  CheckOneObservation(text, "snakepit_request_executed_duration_seconds", "pool=\"default\"",
                      0.0015);
  CHECK(MetricValue(text, "snakepit_pool_saturated_queue_size{pool=\"default\"}") == 7);
  CHECK(MetricValue(
            text,
            "snakepit_worker_recycled_count_total{pool=\"default\",reason=\"ttl_expired\"}") == 1);

  // Router Core.
  CHECK(MetricValue(text,
                    "router_core_routes_total_count_total{result=\"ok\",provider_id=\"openai\","
                    "reason=\"best_score\"}") == 1);
  CHECK(MetricValue(text, "router_core_errors_total_count_total{error=\"policy_not_found\"}") == 1);
  CHECK(MetricValue(text, "router_policy_store_list_policies_policies_returned") == 12);
  CHECK(MetricValue(text, "router_policy_store_list_policies_queue_len") == 2);
  CheckOneObservation(text, "router_policy_store_list_policies_duration_seconds", "", 0.00025);
}

}  // namespace

TEST_CASE("the Erlang client over UDP: events of every built-in catalog give their series") {
  RunScenario("udp");
}

TEST_CASE("the Erlang client over TCP: events of every built-in catalog give their series") {
  RunScenario("tcp");
}

// Every event name of the client's built-in catalog lists is one the daemon's catalogs declare,
// and all of them are there.
TEST_CASE("the Erlang client's catalog event lists match the daemon's catalogs") {
  const auto catalogs = telemetryd::config::LoadCatalogs({TELEMETRYD_CATALOG_DIR});
  REQUIRE_MESSAGE(catalogs.has_value(), (catalogs ? "" : catalogs.error().message));
  std::size_t declared = 0;
  for (const auto& catalog : *catalogs) declared += catalog.events.size();

  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  ErlangNode node("catalogs", "udp", d.port("native_udp"));
  REQUIRE_MESSAGE(node.WaitFor("done"), node.output());
  CHECK(node.Counter("sent") == static_cast<long>(declared));
  REQUIRE(Eventually([&] {
    return EventsReceived(d.port("prometheus"), "native_udp") == static_cast<double>(declared);
  }));
  const std::string text = HttpGet(d.port("prometheus"), "/metrics");
  CHECK(MetricValue(text, "telemetryd_aggregate_dropped_total{reason=\"unknown_event\"}") == 0);
  CHECK(text.find("telemetryd_unknown_events_total{") == std::string::npos);
}

// A full queue drops and counts without making the caller wait: 10000 handler calls against a
// suspended sender with a queue of 100 keep the first 100, which reach the daemon once it runs.
TEST_CASE("the Erlang client drops and counts when its queue is full") {
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  ErlangNode node("overflow", "tcp", d.port("native_tcp"));
  REQUIRE_MESSAGE(node.WaitFor("done"), node.output());
  MESSAGE(node.output());
  CHECK(node.Counter("dropped") == 9900);
  CHECK(node.Counter("sent") == 100);
  CHECK(node.Counter("queued") == 0);
  CHECK(node.Counter("lost") == 0);
  REQUIRE(Eventually([&] { return EventsReceived(d.port("prometheus"), "native_tcp") == 100; }));
  const std::string text = HttpGet(d.port("prometheus"), "/metrics");
  CHECK(MetricValue(text, "vsr_replication_log_append_count_total{node_id=\"n1\"}") == 100);
  // Against a stuck sender the calls only touch an atomic and an ETS table.
  const std::string out = node.output();
  const auto at = out.find("micros=");
  REQUIRE(at != std::string::npos);
  CHECK(std::stol(out.substr(at + 7)) < 2'000'000);
}
