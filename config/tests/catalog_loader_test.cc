#include "telemetryd/config/catalog_loader.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace telemetryd;
using namespace telemetryd::config;
using aggregate::FilterSpec;
using aggregate::MetadataType;
using aggregate::MetricType;
using aggregate::SpanRole;
using aggregate::Unit;

namespace {

constexpr const char* kFull = R"(system: vsr
description: Viewstamped Replication
events:
  vsr.protocol.prepare.sent:
    description: A primary broadcast PREPARE.
    measurements: {count: none, bytes: byte}
    metadata: {node_id: string, status: atom, pool: string, view_number: integer}
  vsr.state_machine.operation.start:
    span: start
    measurements: {monotonic_time: native}
    metadata: {telemetry_span_context: reference, node_id: string}
  vsr.state_machine.operation.stop:
    span: stop
    measurements: {monotonic_time: native, duration: native}
    metadata: {telemetry_span_context: reference, node_id: string}
  vsr.leadership.start: {span: start, metadata: {node_id: string, extra: map}}
  vsr.leadership.stop: {span: stop}
  vsr.leadership.exception: {span: exception}
  vsr.heartbeat:
metrics:
  - counter: vsr.protocol.prepare.sent.count
    description: PREPARE broadcasts, by node.
    tags:
      - node_id
      - {key: status, label: state, default: unknown, values: {normal: ok, view_change: vc}}
    keep:
      - {metadata: pool, in: [a, b]}
      - {measurement: bytes, op: ge, value: 1.5}
    drop: {metadata: pool, not_in: [c]}
  - sum: vsr.protocol.prepare.sent.bytes
    unit: kilobyte
  - last_value: vsr.view
    event_name: vsr.protocol.prepare.sent
    measurement: count
  - distribution: vsr.state_machine.operation.stop.duration
    unit: {from: native, to: millisecond}
    buckets: {exponential: {start: 0.25, factor: 2, count: 4}}
    tags: [node_id]
  - distribution: vsr.state_machine.linear
    event_name: vsr.state_machine.operation.stop
    measurement: duration
    buckets: {linear: {start: 10, width: 5, count: 3}}
  - distribution: vsr.state_machine.operation.stop.monotonic_time
  - distribution: vsr.state_machine.listed
    event_name: vsr.state_machine.operation.stop
    measurement: duration
    unit: second
    buckets: [0.1, 1, 10]
  - summary: vsr.latency
    event_name: vsr.state_machine.operation.stop
    measurement: duration
    unit: microsecond
    quantiles: [0.25, 0.75]
  - summary: vsr.state_machine.operation.start.monotonic_time
  - counter: vsr.heartbeat.count
span_gauges:
  - name: vsr.leadership.active
    span: vsr.leadership
    description: 1 while the node is the primary.
    tags: [node_id]
)";

// Seven lines that the validation tests append their metrics or gauges to (line 8 on).
constexpr const char* kBase =
    "system: t\n"
    "events:\n"
    "  t.op.done:\n"
    "    measurements: {duration: native, bytes: byte, count: none}\n"
    "    metadata: {node_id: string, ctx: reference, pool: atom}\n"
    "  t.span.start: {span: start, metadata: {node_id: string}}\n"
    "  t.span.stop: {span: stop}\n";

// The error message of a catalog that must fail validation.
std::string Errors(const std::string& yaml) {
  const auto catalog = ParseCatalog(yaml, "t.yaml");
  REQUIRE_FALSE(catalog.has_value());
  CHECK(catalog.error().code == "catalog.invalid");
  return catalog.error().message;
}

// True when one line of `message` starts with `prefix`.
bool HasLine(const std::string& message, const std::string& prefix) {
  std::istringstream lines(message);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

#define CHECK_ERROR(yaml, prefix)                       \
  do {                                                  \
    const std::string message_ = Errors(yaml);          \
    CHECK_MESSAGE(HasLine(message_, prefix), message_); \
  } while (false)

std::string WithMetrics(const std::string& metrics) {
  return std::string(kBase) + "metrics:\n" + metrics;
}
std::string WithGauges(const std::string& gauges) {
  return std::string(kBase) + "span_gauges:\n" + gauges;
}

// A scratch directory, removed at the end of the test.
class TempDir {
 public:
  TempDir()
      : path_(std::filesystem::temp_directory_path() /
              ("catalog_loader_test." + std::to_string(::getpid()) + "." +
               std::to_string(counter_++))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string Write(const std::string& name, const std::string& text) const {
    const auto file = path_ / name;
    std::ofstream(file) << text;
    return file.string();
  }
  [[nodiscard]] std::string path() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

std::string Catalog(const std::string& system, const std::string& event,
                    const std::string& metric) {
  return "system: " + system + "\nevents:\n  " + event + ": {}\nmetrics:\n  - counter: " + metric +
         "\n    event_name: " + event + "\n";
}

}  // namespace

TEST_CASE("a catalog using every feature parses into the expected model") {
  const auto parsed = ParseCatalog(kFull, "vsr.yaml");
  REQUIRE_MESSAGE(parsed.has_value(), (parsed ? "" : parsed.error().message));
  const aggregate::CatalogSpec& c = *parsed;
  CHECK(c.system == "vsr");
  CHECK(c.description == "Viewstamped Replication");
  CHECK(c.source == "vsr.yaml");

  REQUIRE(c.events.size() == 7);
  const auto& sent = c.events[0];
  CHECK(sent.name == "vsr.protocol.prepare.sent");
  CHECK(sent.description == "A primary broadcast PREPARE.");
  CHECK(sent.measurements ==
        std::map<std::string, Unit>{{"count", Unit::kNone}, {"bytes", Unit::kByte}});
  CHECK(sent.metadata ==
        std::map<std::string, MetadataType>{{"node_id", MetadataType::kString},
                                            {"status", MetadataType::kAtom},
                                            {"pool", MetadataType::kString},
                                            {"view_number", MetadataType::kInteger}});
  CHECK(sent.span == SpanRole::kNone);
  CHECK(sent.position.ToString() == "vsr.yaml:4:3");
  CHECK(c.events[1].name == "vsr.state_machine.operation.start");
  CHECK(c.events[1].span == SpanRole::kStart);
  CHECK(c.events[1].measurements.at("monotonic_time") == Unit::kNative);
  CHECK(c.events[1].metadata.at("telemetry_span_context") == MetadataType::kReference);
  CHECK(c.events[2].span == SpanRole::kStop);
  CHECK(c.events[3].metadata.at("extra") == MetadataType::kMap);
  CHECK(c.events[3].position.ToString() == "vsr.yaml:16:3");
  CHECK(c.events[5].span == SpanRole::kException);
  CHECK(c.events[6].name == "vsr.heartbeat");
  CHECK(c.events[6].measurements.empty());
  CHECK(c.events[6].metadata.empty());

  REQUIRE(c.metrics.size() == 10);
  const auto& count = c.metrics[0];
  CHECK(count.type == MetricType::kCounter);
  CHECK(count.name == "vsr.protocol.prepare.sent.count");
  CHECK(count.event_name == "vsr.protocol.prepare.sent");
  CHECK(count.measurement == "count");
  CHECK(count.description == "PREPARE broadcasts, by node.");
  CHECK(count.position.ToString() == "vsr.yaml:21:5");
  REQUIRE(count.tags.size() == 2);
  CHECK(count.tags[0].key == "node_id");
  CHECK(count.tags[0].label == "node_id");
  CHECK_FALSE(count.tags[0].default_value.has_value());
  CHECK(count.tags[0].values.empty());
  CHECK(count.tags[1].key == "status");
  CHECK(count.tags[1].label == "state");
  CHECK(count.tags[1].default_value == "unknown");
  CHECK(count.tags[1].values ==
        std::map<std::string, std::string>{{"normal", "ok"}, {"view_change", "vc"}});
  REQUIRE(count.keep.size() == 2);
  CHECK(count.keep[0].metadata == "pool");
  CHECK(count.keep[0].measurement.empty());
  CHECK(count.keep[0].op == FilterSpec::Op::kIn);
  CHECK(count.keep[0].values == std::vector<std::string>{"a", "b"});
  CHECK(count.keep[1].metadata.empty());
  CHECK(count.keep[1].measurement == "bytes");
  CHECK(count.keep[1].op == FilterSpec::Op::kGe);
  CHECK(count.keep[1].threshold == 1.5);
  REQUIRE(count.drop.size() == 1);
  CHECK(count.drop[0].op == FilterSpec::Op::kNotIn);
  CHECK(count.drop[0].values == std::vector<std::string>{"c"});
  CHECK(count.unit_from == Unit::kNone);
  CHECK(count.unit_to == Unit::kNone);
  CHECK(count.buckets.empty());
  CHECK(count.quantiles.empty());
  CHECK(count.pair_spans);

  const auto& sum = c.metrics[1];
  CHECK(sum.type == MetricType::kSum);
  CHECK(sum.measurement == "bytes");
  CHECK(sum.unit_from == Unit::kByte);
  CHECK(sum.unit_to == Unit::kKilobyte);

  const auto& last = c.metrics[2];
  CHECK(last.type == MetricType::kLastValue);
  CHECK(last.name == "vsr.view");
  CHECK(last.event_name == "vsr.protocol.prepare.sent");
  CHECK(last.measurement == "count");
  CHECK(last.unit_from == Unit::kNone);
  CHECK(last.unit_to == Unit::kNone);

  const auto& exponential = c.metrics[3];
  CHECK(exponential.type == MetricType::kDistribution);
  CHECK(exponential.event_name == "vsr.state_machine.operation.stop");
  CHECK(exponential.measurement == "duration");
  CHECK(exponential.unit_from == Unit::kNative);
  CHECK(exponential.unit_to == Unit::kMillisecond);
  CHECK(exponential.buckets == std::vector<double>{0.25, 0.5, 1, 2});
  REQUIRE(exponential.tags.size() == 1);
  CHECK(exponential.quantiles.empty());

  CHECK(c.metrics[4].buckets == std::vector<double>{10, 15, 20});
  CHECK(c.metrics[4].unit_from == Unit::kNative);
  CHECK(c.metrics[4].unit_to == Unit::kNative);
  CHECK(c.metrics[5].measurement == "monotonic_time");
  CHECK(c.metrics[5].buckets ==
        std::vector<double>{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10});
  CHECK(c.metrics[6].buckets == std::vector<double>{0.1, 1, 10});
  CHECK(c.metrics[6].unit_from == Unit::kNative);
  CHECK(c.metrics[6].unit_to == Unit::kSecond);

  const auto& summary = c.metrics[7];
  CHECK(summary.type == MetricType::kSummary);
  CHECK(summary.quantiles == std::vector<double>{0.25, 0.75});
  CHECK(summary.unit_to == Unit::kMicrosecond);
  CHECK(summary.buckets.empty());
  CHECK(c.metrics[8].quantiles == std::vector<double>{0.5, 0.9, 0.99});
  CHECK(c.metrics[9].event_name == "vsr.heartbeat");
  CHECK(c.metrics[9].position.ToString() == "vsr.yaml:55:5");

  REQUIRE(c.span_gauges.size() == 1);
  const auto& gauge = c.span_gauges[0];
  CHECK(gauge.name == "vsr.leadership.active");
  CHECK(gauge.span == "vsr.leadership");
  CHECK(gauge.description == "1 while the node is the primary.");
  REQUIRE(gauge.tags.size() == 1);
  CHECK(gauge.tags[0].key == "node_id");
  CHECK(gauge.tags[0].label == "node_id");
  CHECK(gauge.position.ToString() == "vsr.yaml:57:5");
}

TEST_CASE("the smallest catalog: a system and no events") {
  const auto parsed = ParseCatalog("system: empty\nevents: {}\n", "e.yaml");
  REQUIRE_MESSAGE(parsed.has_value(), (parsed ? "" : parsed.error().message));
  CHECK(parsed->events.empty());
  CHECK(parsed->metrics.empty());
  CHECK(parsed->span_gauges.empty());
}

TEST_CASE("the doc's example error: a tag that is not a metadata key") {
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n"
                          "    tags: [nodeid]\n"),
              "t.yaml:10:12: metrics[0].tags[0]: \"nodeid\" is not a metadata key of event "
              "t.op.done");
}

TEST_CASE("every error is reported, in file order") {
  const std::string message =
      Errors(WithMetrics("  - counter: t.op.done.count\n"
                         "    tags: [nodeid]\n"
                         "  - sum: t.op.done.latency\n"
                         "    bogus: 1\n"));
  CHECK(message ==
        "t.yaml:10:12: metrics[0].tags[0]: \"nodeid\" is not a metadata key of event t.op.done\n"
        "t.yaml:11:10: metrics[1].sum: \"latency\" is not a measurement of event t.op.done\n"
        "t.yaml:12:5: metrics[1].bogus: unknown key (expected one of: counter, sum, last_value, "
        "distribution, summary, event_name, measurement, description, tags, keep, drop, unit, "
        "buckets, quantiles)");
}

TEST_CASE("top level: not a mapping, empty, unknown keys") {
  CHECK_ERROR("- a\n", "t.yaml:1:1: (top level): expected a mapping, got a list");
  CHECK_ERROR("", "t.yaml: (top level): the catalog is empty");
  CHECK_ERROR("system: t\nevents: {}\nmetric: []\n",
              "t.yaml:3:1: metric: unknown key (expected one of: system, description, events, "
              "metrics, span_gauges)");
  CHECK_ERROR("system: t\nevents: {}\ndescription: [a]\n",
              "t.yaml:3:14: description: expected a non-empty string, got a list");
}

TEST_CASE("system is required and a short name") {
  CHECK_ERROR("events: {}\n", "t.yaml:1:1: system: missing required key");
  CHECK_ERROR("system: VSR-1\nevents: {}\n",
              "t.yaml:1:9: system: expected a short name of [a-z0-9_]+, got \"VSR-1\"");
}

TEST_CASE("events are required and must be a mapping") {
  CHECK_ERROR("system: t\n", "t.yaml:1:1: events: missing required key");
  CHECK_ERROR("system: t\nevents: [t.a]\n", "t.yaml:2:9: events: expected a mapping, got a list");
}

TEST_CASE("an event name must be valid on the wire") {
  CHECK_ERROR("system: t\nevents:\n  t..a: {}\n",
              "t.yaml:3:3: events.t..a: \"t..a\" is not a valid event name");
}

TEST_CASE("an event declared twice in one catalog") {
  CHECK_ERROR("system: t\nevents:\n  t.a: {}\n  t.a: {}\n",
              "t.yaml:4:3: events.t.a: event name \"t.a\" is given twice (first at t.yaml:3:3)");
}

TEST_CASE("unknown keys of an event") {
  CHECK_ERROR("system: t\nevents:\n  t.a:\n    measurement: {count: none}\n",
              "t.yaml:4:5: events.t.a.measurement: unknown key (expected one of: description, "
              "measurements, metadata, span)");
}

TEST_CASE("unknown measurement units") {
  CHECK_ERROR("system: t\nevents:\n  t.a:\n    measurements: {count: units}\n",
              "t.yaml:4:27: events.t.a.measurements.count: unknown unit \"units\" (expected one "
              "of: none, native, second, millisecond, microsecond, nanosecond, byte, kilobyte, "
              "megabyte)");
}

TEST_CASE("measurements of the wrong type") {
  CHECK_ERROR("system: t\nevents:\n  t.a:\n    measurements: [count]\n",
              "t.yaml:4:19: events.t.a.measurements: expected a mapping, got a list");
}

TEST_CASE("unknown metadata types") {
  CHECK_ERROR("system: t\nevents:\n  t.a:\n    metadata: {node: str}\n",
              "t.yaml:4:22: events.t.a.metadata.node: unknown metadata type \"str\" (expected "
              "one of: any, string, atom, integer, float, boolean, map, list, reference)");
}

TEST_CASE("unknown span roles") {
  CHECK_ERROR("system: t\nevents:\n  t.a:\n    span: begin\n",
              "t.yaml:4:11: events.t.a.span: unknown span role \"begin\" (expected one of: "
              "start, stop, exception)");
}

TEST_CASE("metrics must be a list") {
  CHECK_ERROR(std::string(kBase) + "metrics: {counter: t.op.done.count}\n",
              "t.yaml:8:10: metrics: expected a list of metrics, got a mapping");
}

TEST_CASE("a metric without a type, or with two") {
  CHECK_ERROR(WithMetrics("  - event_name: t.op.done\n"),
              "t.yaml:9:5: metrics[0]: missing the metric type key: one of counter, sum, "
              "last_value, distribution, summary");
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n    sum: t.op.done.bytes\n"),
              "t.yaml:10:5: metrics[0]: a metric has one type, got counter and sum");
}

TEST_CASE("unknown keys of a metric") {
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n    tag: [node_id]\n"),
              "t.yaml:10:5: metrics[0].tag: unknown key (expected one of: counter,");
}

TEST_CASE("metric names are dotted segments of [A-Za-z0-9_]") {
  CHECK_ERROR(WithMetrics("  - counter: t.op-done.count\n    event_name: t.op.done\n"),
              "t.yaml:9:14: metrics[0].counter: \"t.op-done.count\" is not a valid metric name "
              "(segments of [A-Za-z0-9_] joined with '.')");
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.\n"),
              "t.yaml:9:14: metrics[0].counter: \"t.op.done.\" is not a valid metric name");
}

TEST_CASE("two metrics with the same name") {
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n  - counter: t.op.done.count\n"),
              "t.yaml:10:14: metrics[1].counter: metric t.op.done.count is defined twice (first "
              "at t.yaml:9:14)");
}

TEST_CASE("a metric whose event is not declared") {
  CHECK_ERROR(WithMetrics("  - counter: t.nope.count\n"),
              "t.yaml:9:14: metrics[0].counter: event t.nope is not declared in this catalog");
  CHECK_ERROR(WithMetrics("  - counter: t.x\n    event_name: t.nope\n"),
              "t.yaml:10:17: metrics[0].event_name: event t.nope is not declared in this catalog");
  CHECK_ERROR(WithMetrics("  - counter: total\n"),
              "t.yaml:9:14: metrics[0].counter: the event cannot be derived from a one-segment "
              "name: set event_name");
}

TEST_CASE("a non-counter metric whose measurement the event does not declare") {
  CHECK_ERROR(WithMetrics("  - sum: t.op.done.latency\n"),
              "t.yaml:9:10: metrics[0].sum: \"latency\" is not a measurement of event t.op.done");
  CHECK_ERROR(WithMetrics("  - last_value: t.x\n"
                          "    event_name: t.op.done\n"
                          "    measurement: qlen\n"),
              "t.yaml:11:18: metrics[0].measurement: \"qlen\" is not a measurement of event "
              "t.op.done");
  // A counter counts events: its (default) measurement is not looked up.
  CHECK(ParseCatalog(WithMetrics("  - counter: t.op.done.total\n"), "t.yaml").has_value());
}

TEST_CASE("tags on metadata that cannot be a label value") {
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n    tags: [ctx]\n"),
              "t.yaml:10:12: metrics[0].tags[0]: \"ctx\" is a reference metadata key of event "
              "t.op.done and cannot be a tag");
}

TEST_CASE("tags: a key is required, labels must be valid and distinct") {
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n    tags: [{label: x}]\n"),
              "t.yaml:10:12: metrics[0].tags[0].key: missing required key");
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n"
                          "    tags: [{key: node_id, label: node-id}]\n"),
              "t.yaml:10:34: metrics[0].tags[0].label: \"node-id\" is not a valid label name");
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n"
                          "    tags: [node_id, {key: pool, label: node_id}]\n"),
              "t.yaml:10:40: metrics[0].tags[1].label: the label \"node_id\" is already used by "
              "metrics[0].tags[0]");
  CHECK_ERROR(WithMetrics("  - distribution: t.op.done.duration\n"
                          "    tags: [{key: pool, label: le}]\n"),
              "t.yaml:10:31: metrics[0].tags[0].label: the label \"le\" is reserved for the "
              "buckets of a histogram");
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n"
                          "    tags: [{key: pool, label: le}]\n"),
              "t.yaml:10:31: metrics[0].tags[0].label: the label \"le\" is reserved");
  CHECK_ERROR(WithMetrics("  - summary: t.op.done.duration\n"
                          "    tags: [{key: pool, label: quantile}]\n"),
              "t.yaml:10:31: metrics[0].tags[0].label: the label \"quantile\" is reserved for "
              "the quantiles of a summary");
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n"
                          "    tags: [{key: pool, label: __pool}]\n"),
              "t.yaml:10:31: metrics[0].tags[0].label: \"__pool\": label names starting with "
              "\"__\" are reserved by Prometheus");
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n"
                          "    tags: [{key: pool, values: [a]}]\n"),
              "t.yaml:10:32: metrics[0].tags[0].values: expected a mapping, got a list");
}

TEST_CASE("a unit on a counter") {
  CHECK_ERROR(WithMetrics("  - counter: t.op.done.count\n    unit: millisecond\n"),
              "t.yaml:10:11: metrics[0].unit: a counter counts events and takes no unit");
}

TEST_CASE("incompatible unit conversions") {
  CHECK_ERROR(WithMetrics("  - sum: t.op.done.duration\n    unit: byte\n"),
              "t.yaml:10:11: metrics[0].unit: cannot convert native to byte (time converts to "
              "time, bytes to bytes, none only to none)");
  CHECK_ERROR(WithMetrics("  - sum: t.op.done.count\n    unit: {from: none, to: millisecond}\n"),
              "t.yaml:10:28: metrics[0].unit.to: cannot convert none to millisecond");
  CHECK_ERROR(WithMetrics("  - sum: t.op.done.bytes\n    unit: second\n"),
              "t.yaml:10:11: metrics[0].unit: cannot convert byte to second");
}

TEST_CASE("unit: unknown names, a missing key, a from that contradicts the event") {
  CHECK_ERROR(WithMetrics("  - sum: t.op.done.duration\n    unit: msec\n"),
              "t.yaml:10:11: metrics[0].unit: unknown unit \"msec\"");
  CHECK_ERROR(WithMetrics("  - sum: t.op.done.duration\n    unit: {from: native}\n"),
              "t.yaml:10:11: metrics[0].unit.to: missing required key");
  CHECK_ERROR(
      WithMetrics("  - sum: t.op.done.duration\n    unit: {from: second, to: millisecond}\n"),
      "t.yaml:10:18: metrics[0].unit.from: measurement \"duration\" of event t.op.done "
      "is declared in native, not second");
}

TEST_CASE("buckets not strictly ascending") {
  CHECK_ERROR(WithMetrics("  - distribution: t.op.done.duration\n    buckets: [1, 2, 2, 5]\n"),
              "t.yaml:10:21: metrics[0].buckets[2]: buckets must be strictly ascending: 2 "
              "follows 2");
  CHECK_ERROR(WithMetrics("  - distribution: t.op.done.duration\n    buckets: []\n"),
              "t.yaml:10:14: metrics[0].buckets: expected at least one bucket bound");
  CHECK_ERROR(WithMetrics("  - distribution: t.op.done.duration\n    buckets: [1, .inf]\n"),
              "t.yaml:10:18: metrics[0].buckets[1]: must be finite");
}

TEST_CASE("buckets and quantiles only where they mean something") {
  CHECK_ERROR(WithMetrics("  - sum: t.op.done.bytes\n    buckets: [1]\n"),
              "t.yaml:10:14: metrics[0].buckets: only a distribution has buckets");
  CHECK_ERROR(WithMetrics("  - distribution: t.op.done.bytes\n    quantiles: [0.5]\n"),
              "t.yaml:10:16: metrics[0].quantiles: only a summary has quantiles");
}

TEST_CASE("bucket generators: width, factor, start and count") {
  const std::string d = "  - distribution: t.op.done.duration\n";
  CHECK_ERROR(WithMetrics(d + "    buckets: {linear: {start: 0, width: 0, count: 5}}\n"),
              "t.yaml:10:41: metrics[0].buckets.linear.width: must be a finite number greater "
              "than 0, got 0");
  CHECK_ERROR(WithMetrics(d + "    buckets: {exponential: {start: 1, factor: 1, count: 5}}\n"),
              "t.yaml:10:47: metrics[0].buckets.exponential.factor: must be a finite number "
              "greater than 1, got 1");
  CHECK_ERROR(WithMetrics(d + "    buckets: {exponential: {start: 0, factor: 2, count: 5}}\n"),
              "t.yaml:10:36: metrics[0].buckets.exponential.start: must be greater than 0, got 0");
  CHECK_ERROR(WithMetrics(d + "    buckets: {linear: {start: 0, width: 1, count: 1001}}\n"),
              "t.yaml:10:51: metrics[0].buckets.linear.count: expected a whole number between 1 "
              "and 1000, got 1001");
  CHECK_ERROR(WithMetrics(d + "    buckets: {linear: {start: 0, width: 1, count: 0}}\n"),
              "t.yaml:10:51: metrics[0].buckets.linear.count: expected a whole number between 1 "
              "and 1000, got 0");
  CHECK_ERROR(WithMetrics(d + "    buckets: {linear: {start: 0, count: 2}}\n"),
              "t.yaml:10:23: metrics[0].buckets.linear.width: missing required key");
  CHECK_ERROR(WithMetrics(d + "    buckets: {linear: {start: 0, width: 1, count: 2}, "
                              "exponential: {start: 1, factor: 2, count: 2}}\n"),
              "t.yaml:10:14: metrics[0].buckets: expected exactly one of linear or exponential");
  CHECK_ERROR(WithMetrics(d + "    buckets: {exponential: {start: 1, factor: 1e300, count: 3}}\n"),
              "t.yaml:10:28: metrics[0].buckets.exponential: bound 2 (inf) is not finite");
}

TEST_CASE("bucket generators expand at the edges of their range") {
  const auto parsed =
      ParseCatalog(WithMetrics("  - distribution: t.op.done.duration\n"
                               "    buckets: {linear: {start: -1, width: 0.5, count: 1000}}\n"
                               "  - distribution: t.op.done.bytes\n"
                               "    buckets: {exponential: {start: 3, factor: 10, count: 1}}\n"),
                   "t.yaml");
  REQUIRE_MESSAGE(parsed.has_value(), (parsed ? "" : parsed.error().message));
  const auto& linear = parsed->metrics[0].buckets;
  REQUIRE(linear.size() == 1000);
  CHECK(linear.front() == -1);
  CHECK(linear[1] == -0.5);
  CHECK(linear.back() == -1 + 999 * 0.5);
  CHECK(parsed->metrics[1].buckets == std::vector<double>{3});
}

TEST_CASE("quantiles outside (0, 1)") {
  const std::string s = "  - summary: t.op.done.duration\n";
  CHECK_ERROR(WithMetrics(s + "    quantiles: [0.5, 1]\n"),
              "t.yaml:10:22: metrics[0].quantiles[1]: a quantile must be in (0, 1), got 1");
  CHECK_ERROR(WithMetrics(s + "    quantiles: [0]\n"),
              "t.yaml:10:17: metrics[0].quantiles[0]: a quantile must be in (0, 1), got 0");
  CHECK_ERROR(WithMetrics(s + "    quantiles: [0.9, 0.5]\n"),
              "t.yaml:10:22: metrics[0].quantiles[1]: quantiles must be strictly ascending");
  CHECK_ERROR(WithMetrics(s + "    quantiles: [half]\n"),
              "t.yaml:10:17: metrics[0].quantiles[0]: expected a number, got \"half\"");
}

TEST_CASE("keep/drop on metadata: declared keys, exactly one of in and not_in") {
  const std::string c = "  - counter: t.op.done.count\n";
  CHECK_ERROR(WithMetrics(c + "    keep: {metadata: tenant, in: [a]}\n"),
              "t.yaml:10:22: metrics[0].keep.metadata: \"tenant\" is not a metadata key of event "
              "t.op.done");
  CHECK_ERROR(WithMetrics(c + "    keep: {metadata: ctx, in: [a]}\n"),
              "t.yaml:10:22: metrics[0].keep.metadata: \"ctx\" is a reference metadata key of "
              "event t.op.done and cannot be a condition");
  CHECK_ERROR(WithMetrics(c + "    keep: {metadata: pool, in: [a], not_in: [b]}\n"),
              "t.yaml:10:11: metrics[0].keep: expected exactly one of in or not_in");
  CHECK_ERROR(WithMetrics(c + "    keep: {metadata: pool, op: gt}\n"),
              "t.yaml:10:28: metrics[0].keep.op: unknown key (expected one of: metadata, in, "
              "not_in)");
  CHECK_ERROR(WithMetrics(c + "    keep: {metadata: pool, in: []}\n"),
              "t.yaml:10:32: metrics[0].keep.in: expected at least one value");
}

TEST_CASE("keep/drop on measurements: declared, a known op, a numeric value") {
  const std::string c = "  - counter: t.op.done.count\n";
  CHECK_ERROR(WithMetrics(c + "    drop:\n      - {measurement: qlen, op: gt, value: 0}\n"),
              "t.yaml:11:23: metrics[0].drop[0].measurement: \"qlen\" is not a measurement of "
              "event t.op.done");
  CHECK_ERROR(WithMetrics(c + "    keep: [{measurement: bytes, op: gte, value: 0}]\n"),
              "t.yaml:10:37: metrics[0].keep[0].op: unknown comparison \"gte\" (expected one of: "
              "gt, ge, lt, le, eq, ne)");
  CHECK_ERROR(WithMetrics(c + "    keep: {measurement: bytes, op: gt, value: many}\n"),
              "t.yaml:10:47: metrics[0].keep.value: expected a number, got \"many\"");
  CHECK_ERROR(WithMetrics(c + "    keep: {measurement: bytes, op: gt}\n"),
              "t.yaml:10:11: metrics[0].keep.value: missing required key");
  CHECK_ERROR(WithMetrics(c + "    keep: {metadata: pool, measurement: bytes}\n"),
              "t.yaml:10:11: metrics[0].keep: expected exactly one of metadata or measurement");
  CHECK_ERROR(WithMetrics(c + "    keep: [pool]\n"),
              "t.yaml:10:12: metrics[0].keep[0]: expected a condition {metadata: key, in: [...]}");
}

TEST_CASE("span gauges: the span's start and stop events must be declared as such") {
  CHECK_ERROR(WithGauges("  - {name: t.g, span: t.nope}\n"),
              "t.yaml:9:23: span_gauges[0].span: event t.nope.start is not declared in this "
              "catalog");
  CHECK_ERROR(WithGauges("  - {name: t.g, span: t.nope}\n"),
              "t.yaml:9:23: span_gauges[0].span: event t.nope.stop is not declared in this "
              "catalog");
  CHECK_ERROR(
      "system: t\n"
      "events:\n"
      "  t.s.start: {span: start}\n"
      "  t.s.stop: {}\n"
      "span_gauges:\n"
      "  - {name: t.g, span: t.s}\n",
      "t.yaml:6:23: span_gauges[0].span: event t.s.stop is declared with span: none, "
      "expected span: stop");
}

TEST_CASE("span gauges: tags, required keys, names shared with metrics") {
  CHECK_ERROR(WithGauges("  - {name: t.g, span: t.span, tags: [pool]}\n"),
              "t.yaml:9:38: span_gauges[0].tags[0]: \"pool\" is not a metadata key of event "
              "t.span.start");
  CHECK_ERROR(WithGauges("  - {span: t.span}\n"),
              "t.yaml:9:5: span_gauges[0].name: missing required key");
  CHECK_ERROR(WithGauges("  - {name: t.g, span: t.span, labels: [node_id]}\n"),
              "t.yaml:9:31: span_gauges[0].labels: unknown key (expected one of: name, span, "
              "description, tags)");
  CHECK_ERROR(std::string(kBase) +
                  "metrics:\n"
                  "  - counter: t.op.done.count\n"
                  "span_gauges:\n"
                  "  - {name: t.op.done.count, span: t.span}\n",
              "t.yaml:11:12: span_gauges[0].name: metric t.op.done.count is defined twice (first "
              "at t.yaml:9:14)");
}

TEST_CASE("a YAML syntax error has its own code and a position") {
  const auto parsed = ParseCatalog("system: t\nevents: [\n", "s.yaml");
  REQUIRE_FALSE(parsed.has_value());
  CHECK(parsed.error().code == "catalog.syntax");
  CHECK(parsed.error().message.rfind("s.yaml:3:1: ", 0) == 0);
}

TEST_CASE("loading a file, and a file that is not there") {
  TempDir dir;
  const std::string path = dir.Write("vsr.yaml", kFull);
  const auto loaded = LoadCatalogFile(path);
  REQUIRE_MESSAGE(loaded.has_value(), (loaded ? "" : loaded.error().message));
  CHECK(loaded->source == path);
  CHECK(loaded->events[0].position.file == path);
  const auto missing = LoadCatalogFile(dir.path() + "/nope.yaml");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().code == "catalog.read");
  const auto directory = LoadCatalogFile(dir.path());
  REQUIRE_FALSE(directory.has_value());
  CHECK(directory.error().code == "catalog.read");
}

TEST_CASE("a directory loads its *.yaml files in name order") {
  TempDir dir;
  dir.Write("b.yaml", Catalog("b", "b.e", "b.e.count"));
  dir.Write("a.yaml", Catalog("a", "a.e", "a.e.count"));
  dir.Write("c.yaml.orig", "not: [yaml");
  dir.Write("README", "not a catalog");
  std::filesystem::create_directories(std::filesystem::path(dir.path()) / "sub.yaml");
  const auto loaded = LoadCatalogs({dir.path()});
  REQUIRE_MESSAGE(loaded.has_value(), (loaded ? "" : loaded.error().message));
  REQUIRE(loaded->size() == 2);
  CHECK((*loaded)[0].system == "a");
  CHECK((*loaded)[0].source == dir.path() + "/a.yaml");
  CHECK((*loaded)[1].system == "b");

  // A file named directly loads after the directory's, and only once when reached twice.
  TempDir other;
  const std::string extra = other.Write("z.yaml", Catalog("z", "z.e", "z.e.count"));
  const auto both = LoadCatalogs({dir.path(), extra, dir.path() + "/a.yaml"});
  REQUIRE_MESSAGE(both.has_value(), (both ? "" : both.error().message));
  REQUIRE(both->size() == 3);
  CHECK((*both)[2].system == "z");

  const auto none = LoadCatalogs({});
  REQUIRE(none.has_value());
  CHECK(none->empty());
}

TEST_CASE("cross-catalog duplicates: events, metric names, systems") {
  TempDir dir;
  const std::string a = dir.Write("a.yaml", Catalog("vsr", "vsr.e", "vsr.m"));
  const std::string b = dir.Write("b.yaml",
                                  "system: vsr\n"
                                  "events:\n"
                                  "  vsr.e: {}\n"
                                  "  vsr.f: {}\n"
                                  "metrics:\n"
                                  "  - counter: vsr.f.count\n"
                                  "span_gauges: []\n");
  const std::string c = dir.Write("c.yaml",
                                  "system: other\n"
                                  "events:\n"
                                  "  o.s.start: {span: start}\n"
                                  "  o.s.stop: {span: stop}\n"
                                  "span_gauges:\n"
                                  "  - {name: vsr.m, span: o.s}\n");
  const auto loaded = LoadCatalogs({dir.path()});
  REQUIRE_FALSE(loaded.has_value());
  CHECK(loaded.error().code == "catalog.invalid");
  const std::string& m = loaded.error().message;
  CHECK_MESSAGE(HasLine(m, b + ":1:9: system: system vsr is also declared at " + a + ":1:9"), m);
  CHECK_MESSAGE(HasLine(m, b + ":3:3: events.vsr.e: event vsr.e is also declared at " + a + ":3:3"),
                m);
  CHECK_MESSAGE(
      HasLine(m, c + ":6:12: span_gauges[0].name: metric vsr.m is also declared at " + a + ":5:14"),
      m);
  CHECK(std::count(m.begin(), m.end(), '\n') == 2);
}

TEST_CASE("loading several catalogs reports the errors of all of them") {
  TempDir dir;
  const std::string a = dir.Write("a.yaml", "system: a\nevents: {}\nbogus: 1\n");
  const std::string b = dir.Write("b.yaml", "system: B\nevents: {}\n");
  const auto loaded = LoadCatalogs({dir.path(), dir.path() + "/missing.yaml"});
  REQUIRE_FALSE(loaded.has_value());
  CHECK(loaded.error().code == "catalog.invalid");
  const std::string& m = loaded.error().message;
  CHECK_MESSAGE(HasLine(m, a + ":3:1: bogus: unknown key"), m);
  CHECK_MESSAGE(HasLine(m, b + ":1:9: system: expected a short name"), m);
  CHECK_MESSAGE(HasLine(m, dir.path() + "/missing.yaml: cannot read the file"), m);
}

TEST_CASE("a syntax error among loaded catalogs") {
  TempDir dir;
  dir.Write("a.yaml", Catalog("a", "a.e", "a.e.count"));
  const std::string b = dir.Write("b.yaml", "system: b\nevents: {\n");
  const auto loaded = LoadCatalogs({dir.path()});
  REQUIRE_FALSE(loaded.has_value());
  CHECK(loaded.error().code == "catalog.syntax");
  CHECK(loaded.error().message.rfind(b + ":3:1: ", 0) == 0);
}
