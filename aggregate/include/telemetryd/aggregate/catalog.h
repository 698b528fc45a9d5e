// The catalog model: what a system's events are and which metrics derive from them
// (docs/catalogs.md). Produced by the config library from YAML, validated there, and compiled by
// the aggregation Engine. Thread-safety: plain values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace telemetryd::aggregate {

// Where a definition came from, for error messages ("vsr.yaml:12:5").
struct SourcePosition {
  std::string file;
  int line = 0;    // 1-based; 0 when unknown
  int column = 0;  // 1-based
  [[nodiscard]] std::string ToString() const {
    return file + ":" + std::to_string(line) + ":" + std::to_string(column);
  }
};

enum class MetricType : std::uint8_t { kCounter, kSum, kLastValue, kDistribution, kSummary };

// Units a measurement can be declared in and converted between. kNative is the sender's native
// time unit, declared per frame on the wire.
enum class Unit : std::uint8_t {
  kNone,
  kNative,
  kSecond,
  kMillisecond,
  kMicrosecond,
  kNanosecond,
  kByte,
  kKilobyte,
  kMegabyte,
};

enum class SpanRole : std::uint8_t { kNone, kStart, kStop, kException };

enum class MetadataType : std::uint8_t {
  kAny,
  kString,
  kAtom,
  kInteger,
  kFloat,
  kBoolean,
  kMap,
  kList,
  kReference,
};

struct EventSpec {
  std::string name;  // dotted: "vsr.protocol.prepare.sent"
  std::string description;
  std::map<std::string, Unit> measurements;
  std::map<std::string, MetadataType> metadata;
  SpanRole span = SpanRole::kNone;
  SourcePosition position;
};

// A tag (label) of a metric: read from a metadata key of the event.
struct TagSpec {
  std::string key;                            // metadata key
  std::string label;                          // label name (default: key)
  std::optional<std::string> default_value;   // used when the key is missing; unset: skip the event
  std::map<std::string, std::string> values;  // value mapping ("ttl_expired" -> "ttl")
};

// keep / drop conditions: on a metadata key (its value's text in `values`), or on a
// measurement's value compared with `threshold`.
struct FilterSpec {
  enum class Op : std::uint8_t { kIn, kNotIn, kGt, kGe, kLt, kLe, kEq, kNe };
  std::string metadata;     // set for metadata conditions
  std::string measurement;  // set for measurement conditions
  Op op = Op::kIn;
  std::vector<std::string> values;
  double threshold = 0;
};

struct MetricSpec {
  MetricType type = MetricType::kCounter;
  std::string name;         // dotted: "vsr.protocol.prepare.sent.count"
  std::string event_name;   // default: name minus its last segment
  std::string measurement;  // default: the last segment of name
  std::string description;
  std::vector<TagSpec> tags;
  std::vector<FilterSpec> keep;  // all must hold
  std::vector<FilterSpec> drop;  // any drops the event
  Unit unit_from = Unit::kNone;
  Unit unit_to = Unit::kNone;
  std::vector<double> buckets;    // distribution upper bounds, ascending (generators expanded)
  std::vector<double> quantiles;  // summary, each in (0, 1)
  // Span pairing: for a metric on a span's stop/exception event whose `duration` is missing or 0,
  // the duration is computed from the start event with the same telemetry_span_context.
  bool pair_spans = true;
  SourcePosition position;
};

// An "in progress" gauge: spans started and not yet stopped, by tags (e.g. whether a node leads).
struct SpanGaugeSpec {
  std::string name;  // dotted metric name, e.g. "vsr.leadership.active"
  std::string span;  // span prefix: "vsr.leadership" (events .start/.stop/.exception)
  std::string description;
  std::vector<TagSpec> tags;  // read from the start event
  SourcePosition position;
};

struct CatalogSpec {
  std::string system;  // "vsr"
  std::string description;
  std::string source;  // file path
  std::vector<EventSpec> events;
  std::vector<MetricSpec> metrics;
  std::vector<SpanGaugeSpec> span_gauges;
};

}  // namespace telemetryd::aggregate
