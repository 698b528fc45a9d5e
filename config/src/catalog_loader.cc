#include "telemetryd/config/catalog_loader.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "label_names.h"
#include "telemetryd/common/read_file.h"
#include "telemetryd/wire/format.h"

namespace telemetryd::config {
namespace {

using aggregate::CatalogSpec;
using aggregate::EventSpec;
using aggregate::FilterSpec;
using aggregate::MetadataType;
using aggregate::MetricSpec;
using aggregate::MetricType;
using aggregate::SourcePosition;
using aggregate::SpanGaugeSpec;
using aggregate::SpanRole;
using aggregate::TagSpec;
using aggregate::Unit;

template <typename T>
struct Named {
  std::string_view name;
  T value;
};

constexpr Named<Unit> kUnits[] = {
    {"none", Unit::kNone},
    {"native", Unit::kNative},
    {"second", Unit::kSecond},
    {"millisecond", Unit::kMillisecond},
    {"microsecond", Unit::kMicrosecond},
    {"nanosecond", Unit::kNanosecond},
    {"byte", Unit::kByte},
    {"kilobyte", Unit::kKilobyte},
    {"megabyte", Unit::kMegabyte},
};
constexpr Named<MetadataType> kMetadataTypes[] = {
    {"any", MetadataType::kAny},
    {"string", MetadataType::kString},
    {"atom", MetadataType::kAtom},
    {"integer", MetadataType::kInteger},
    {"float", MetadataType::kFloat},
    {"boolean", MetadataType::kBoolean},
    {"map", MetadataType::kMap},
    {"list", MetadataType::kList},
    {"reference", MetadataType::kReference},
};
constexpr Named<SpanRole> kSpanRoles[] = {
    {"start", SpanRole::kStart}, {"stop", SpanRole::kStop}, {"exception", SpanRole::kException}};
constexpr Named<MetricType> kMetricTypes[] = {
    {"counter", MetricType::kCounter},      {"sum", MetricType::kSum},
    {"last_value", MetricType::kLastValue}, {"distribution", MetricType::kDistribution},
    {"summary", MetricType::kSummary},
};
constexpr Named<FilterSpec::Op> kComparisons[] = {
    {"gt", FilterSpec::Op::kGt}, {"ge", FilterSpec::Op::kGe}, {"lt", FilterSpec::Op::kLt},
    {"le", FilterSpec::Op::kLe}, {"eq", FilterSpec::Op::kEq}, {"ne", FilterSpec::Op::kNe},
};

constexpr double kDefaultBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
constexpr double kDefaultQuantiles[] = {0.5, 0.9, 0.99};
constexpr double kMaxGeneratedBuckets = 1000;

template <typename T, std::size_t N>
std::optional<T> Lookup(const Named<T> (&table)[N], std::string_view name) {
  for (const auto& entry : table) {
    if (entry.name == name) return entry.value;
  }
  return std::nullopt;
}

template <typename T, std::size_t N>
std::string NameOf(const Named<T> (&table)[N], T value) {
  for (const auto& entry : table) {
    if (entry.value == value) return std::string(entry.name);
  }
  return "none";
}

template <typename T, std::size_t N>
std::string Choices(const Named<T> (&table)[N]) {
  std::string out;
  for (const auto& entry : table) out += (out.empty() ? "" : ", ") + std::string(entry.name);
  return out;
}

enum class UnitFamily : std::uint8_t { kNone, kTime, kBytes };

UnitFamily FamilyOf(Unit unit) {
  switch (unit) {
    case Unit::kNone:
      return UnitFamily::kNone;
    case Unit::kByte:
    case Unit::kKilobyte:
    case Unit::kMegabyte:
      return UnitFamily::kBytes;
    default:
      return UnitFamily::kTime;
  }
}

bool IsWordChar(char ch, bool upper) {
  return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
         (upper && ch >= 'A' && ch <= 'Z');
}

bool IsSystemName(std::string_view name) {
  return !name.empty() &&
         std::all_of(name.begin(), name.end(), [](char ch) { return IsWordChar(ch, false); });
}

// Dotted, every segment [A-Za-z0-9_]+: what exporters can turn into a metric name.
bool IsMetricName(std::string_view name) {
  char previous = '.';
  for (const char ch : name) {
    if (ch == '.') {
      if (previous == '.') return false;
    } else if (!IsWordChar(ch, true)) {
      return false;
    }
    previous = ch;
  }
  return previous != '.';
}

bool IsAbsent(const YAML::Node& node) { return !node || node.IsNull(); }

std::string Describe(const YAML::Node& node) {
  if (node.IsScalar()) return "\"" + node.Scalar() + "\"";
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  return "nothing";
}

std::string FormatNumber(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

std::string Index(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

std::string Join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

struct Problem {
  SourcePosition position;
  std::string text;  // "file:line:column: path: message"
};

Problem MakeProblem(const SourcePosition& position, const std::string& path,
                    const std::string& what) {
  std::string text = position.line > 0 ? position.ToString() : position.file;
  text += ": " + (path.empty() ? std::string("(top level)") : path) + ": " + what;
  return Problem{position, std::move(text)};
}

// Something a catalog declares that must be unique across every loaded catalog.
struct Declared {
  std::string name;
  std::string path;
  SourcePosition position;
};

struct ParsedCatalog {
  CatalogSpec spec;
  std::vector<Problem> problems;
  bool syntax_error = false;
  std::optional<Declared> system;
  std::vector<Declared> events;
  std::vector<Declared> metrics;  // metrics and span gauges: they share the exported namespace
};

// Walks the YAML tree, collecting every error with its position and field path.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  [[nodiscard]] SourcePosition Position(const YAML::Node& node) const {
    SourcePosition position{source_, 0, 0};
    const YAML::Mark mark = node.Mark();
    if (mark.line >= 0) {
      position.line = mark.line + 1;
      position.column = mark.column + 1;
    }
    return position;
  }

  void Fail(const YAML::Node& node, const std::string& path, const std::string& what) {
    problems_.push_back(MakeProblem(Position(node), path, what));
  }

  // The entries of a mapping in file order. yaml-cpp keeps both copies of a repeated key and
  // lookups see only the first, so a repeat is reported instead of silently ignored.
  std::vector<std::pair<YAML::Node, YAML::Node>> Entries(const YAML::Node& node,
                                                         const std::string& path,
                                                         const std::string& noun = "key") {
    std::vector<std::pair<YAML::Node, YAML::Node>> entries;
    if (!node.IsMap()) {
      Fail(node, path, "expected a mapping, got " + Describe(node));
      return entries;
    }
    std::map<std::string, SourcePosition> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar() || kv.first.Scalar().empty()) {
        Fail(kv.first, path, "expected a non-empty " + noun + ", got " + Describe(kv.first));
        continue;
      }
      const std::string& key = kv.first.Scalar();
      const auto [it, inserted] = seen.emplace(key, Position(kv.first));
      if (!inserted) {
        Fail(kv.first, Join(path, key),
             noun + " \"" + key + "\" is given twice (first at " + it->second.ToString() + ")");
        continue;
      }
      entries.emplace_back(kv.first, kv.second);
    }
    return entries;
  }

  // True when `node` is a mapping; reports keys other than `allowed`.
  bool Map(const YAML::Node& node, const std::string& path,
           std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) {
      Fail(node, path, "expected a mapping, got " + Describe(node));
      return false;
    }
    for (const auto& [key, value] : Entries(node, path)) {
      if (std::find(allowed.begin(), allowed.end(), key.Scalar()) == allowed.end()) {
        std::string list;
        for (const auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        Fail(key, Join(path, key.Scalar()), "unknown key (expected one of: " + list + ")");
      }
    }
    return true;
  }

  // The child `key` of a mapping, reporting it missing when `required`.
  YAML::Node Child(const YAML::Node& map, const std::string& path, const std::string& key,
                   bool required) {
    YAML::Node child = map[key];
    if (!child && required) Fail(map, Join(path, key), "missing required key");
    return child;
  }

  std::optional<std::string> String(const YAML::Node& node, const std::string& path,
                                    bool allow_empty = false) {
    if (!node.IsScalar() || (!allow_empty && node.Scalar().empty())) {
      Fail(node, path, "expected a non-empty string, got " + Describe(node));
      return std::nullopt;
    }
    return node.Scalar();
  }

  std::optional<double> Number(const YAML::Node& node, const std::string& path) {
    double value = 0;
    if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || std::isnan(value)) {
      Fail(node, path, "expected a number, got " + Describe(node));
      return std::nullopt;
    }
    return value;
  }

  std::optional<double> Count(const YAML::Node& node, const std::string& path, double max) {
    const auto value = Number(node, path);
    if (!value) return std::nullopt;
    if (*value != std::floor(*value) || *value < 1 || *value > max) {
      Fail(node, path,
           "expected a whole number between 1 and " + FormatNumber(max) + ", got " + node.Scalar());
      return std::nullopt;
    }
    return value;
  }

  template <typename T, std::size_t N>
  std::optional<T> Choice(const YAML::Node& node, const std::string& path,
                          const Named<T> (&table)[N], const std::string& noun) {
    if (!node.IsScalar()) {
      Fail(node, path,
           "expected a " + noun + " (one of: " + Choices(table) + "), got " + Describe(node));
      return std::nullopt;
    }
    auto value = Lookup(table, node.Scalar());
    if (!value) {
      Fail(node, path,
           "unknown " + noun + " \"" + node.Scalar() + "\" (expected one of: " + Choices(table) +
               ")");
    }
    return value;
  }

  [[nodiscard]] std::vector<Problem> TakeProblems() { return std::move(problems_); }

 private:
  std::string source_;
  std::vector<Problem> problems_;
};

class CatalogParser {
 public:
  CatalogParser(const std::string& source, ParsedCatalog& out) : r_(source), out_(out) {
    out_.spec.source = source;
  }

  void Parse(const YAML::Node& root) {
    if (IsAbsent(root)) {
      r_.Fail(root, "", "the catalog is empty: expected system and events");
      return;
    }
    if (!r_.Map(root, "", {"system", "description", "events", "metrics", "span_gauges"})) return;
    if (const YAML::Node system = r_.Child(root, "", "system", true)) {
      const auto name = r_.String(system, "system");
      if (name && !IsSystemName(*name)) {
        r_.Fail(system, "system", "expected a short name of [a-z0-9_]+, got \"" + *name + "\"");
      } else if (name) {
        out_.spec.system = *name;
        out_.system = Declared{*name, "system", r_.Position(system)};
      }
    }
    ReadDescription(root, "", out_.spec.description);
    // Events first, whatever their place in the file: metrics and gauges refer to them.
    if (const YAML::Node events = r_.Child(root, "", "events", true); !IsAbsent(events)) {
      ReadEvents(events);
    }
    const YAML::Node metrics = root["metrics"];
    if (!IsAbsent(metrics) && Sequence(metrics, "metrics", "a list of metrics")) {
      for (std::size_t i = 0; i < metrics.size(); ++i) {
        ReadMetric(metrics[i], Index("metrics", i));
      }
    }
    const YAML::Node gauges = root["span_gauges"];
    if (!IsAbsent(gauges) && Sequence(gauges, "span_gauges", "a list of span gauges")) {
      for (std::size_t i = 0; i < gauges.size(); ++i) {
        ReadSpanGauge(gauges[i], Index("span_gauges", i));
      }
    }
  }

  [[nodiscard]] std::vector<Problem> TakeProblems() { return r_.TakeProblems(); }

 private:
  bool Sequence(const YAML::Node& node, const std::string& path, const std::string& what) {
    if (node.IsSequence()) return true;
    r_.Fail(node, path, "expected " + what + ", got " + Describe(node));
    return false;
  }

  void ReadDescription(const YAML::Node& map, const std::string& path, std::string& out) {
    const YAML::Node node = map["description"];
    if (!node) return;
    if (auto text = r_.String(node, Join(path, "description"), true)) out = std::move(*text);
  }

  void ReadEvents(const YAML::Node& events) {
    for (const auto& [key, body] : r_.Entries(events, "events", "event name")) {
      const std::string& name = key.Scalar();
      const std::string path = "events." + name;
      if (!wire::IsValidEventName(name)) {
        r_.Fail(key, path,
                "\"" + name +
                    "\" is not a valid event name (non-empty segments joined with '.', at most " +
                    std::to_string(wire::kMaxNameSegments) + " segments and " +
                    std::to_string(wire::kMaxNameBytes) +
                    " bytes, UTF-8 without control characters)");
        continue;
      }
      EventSpec event;
      event.name = name;
      event.position = r_.Position(key);
      // An event with no body is legitimate: it carries nothing but its name (a counter's input).
      if (!IsAbsent(body) &&
          r_.Map(body, path, {"description", "measurements", "metadata", "span"})) {
        ReadDescription(body, path, event.description);
        if (const YAML::Node m = body["measurements"]; !IsAbsent(m)) {
          for (const auto& [mkey, unit_node] :
               r_.Entries(m, path + ".measurements", "measurement")) {
            const std::string mpath = path + ".measurements." + mkey.Scalar();
            if (auto unit = r_.Choice(unit_node, mpath, kUnits, "unit")) {
              event.measurements[mkey.Scalar()] = *unit;
            }
          }
        }
        if (const YAML::Node m = body["metadata"]; !IsAbsent(m)) {
          for (const auto& [mkey, type_node] : r_.Entries(m, path + ".metadata", "metadata key")) {
            const std::string mpath = path + ".metadata." + mkey.Scalar();
            if (auto type = r_.Choice(type_node, mpath, kMetadataTypes, "metadata type")) {
              event.metadata[mkey.Scalar()] = *type;
            }
          }
        }
        if (const YAML::Node span = body["span"]) {
          if (auto role = r_.Choice(span, path + ".span", kSpanRoles, "span role")) {
            event.span = *role;
          }
        }
      }
      event_index_.emplace(name, out_.spec.events.size());
      out_.events.push_back(Declared{name, path, event.position});
      out_.spec.events.push_back(std::move(event));
    }
  }

  const EventSpec* FindEvent(const std::string& name) const {
    const auto it = event_index_.find(name);
    return it == event_index_.end() ? nullptr : &out_.spec.events[it->second];
  }

  // Registers an exported name, reporting it when the catalog already uses it.
  void ClaimMetricName(const std::string& name, const YAML::Node& node, const std::string& path) {
    const auto [it, inserted] = metric_names_.emplace(name, r_.Position(node));
    if (!inserted) {
      r_.Fail(node, path,
              "metric " + name + " is defined twice (first at " + it->second.ToString() + ")");
      return;
    }
    out_.metrics.push_back(Declared{name, path, it->second});
  }

  void ReadMetric(const YAML::Node& item, const std::string& path) {
    if (!item.IsMap()) {
      r_.Fail(item, path, "expected a mapping such as {counter: name}, got " + Describe(item));
      return;
    }
    r_.Map(item, path,
           {"counter", "sum", "last_value", "distribution", "summary", "event_name", "measurement",
            "description", "tags", "keep", "drop", "unit", "buckets", "quantiles"});
    // yaml-cpp's Node::operator= rebinds the referenced node inside the document, so nodes here
    // are only ever copy-constructed.
    std::vector<std::pair<YAML::Node, YAML::Node>> typed;
    for (const auto& kv : item) {
      if (kv.first.IsScalar() && Lookup(kMetricTypes, kv.first.Scalar())) {
        typed.emplace_back(kv.first, kv.second);
      }
    }
    if (typed.empty()) {
      r_.Fail(item, path, "missing the metric type key: one of " + Choices(kMetricTypes));
      return;
    }
    const std::string type_key = typed.front().first.Scalar();
    for (std::size_t i = 1; i < typed.size(); ++i) {
      if (typed[i].first.Scalar() == type_key) continue;  // a repeated key: Map reports it
      r_.Fail(typed[i].first, path,
              "a metric has one type, got " + type_key + " and " + typed[i].first.Scalar());
    }
    MetricSpec metric;
    metric.type = *Lookup(kMetricTypes, type_key);
    metric.position = r_.Position(item);
    const YAML::Node name_node = typed.front().second;
    const bool counter = metric.type == MetricType::kCounter;
    const std::string name_path = path + "." + type_key;

    bool named = false;
    if (auto name = r_.String(name_node, name_path)) {
      if (!IsMetricName(*name)) {
        r_.Fail(name_node, name_path,
                "\"" + *name + "\" is not a valid metric name (segments of [A-Za-z0-9_] joined " +
                    "with '.')");
      } else {
        metric.name = *name;
        named = true;
        ClaimMetricName(*name, name_node, name_path);
      }
    }
    const std::size_t last_dot = metric.name.rfind('.');

    // Errors about a defaulted event_name or measurement point at the name they came from.
    const YAML::Node given_event = item["event_name"];
    const YAML::Node event_node = given_event ? given_event : name_node;
    const std::string event_path = given_event ? path + ".event_name" : name_path;
    if (given_event) {
      if (auto text = r_.String(given_event, event_path)) metric.event_name = *text;
    } else if (named && last_dot == std::string::npos) {
      r_.Fail(name_node, name_path,
              "the event cannot be derived from a one-segment name: set event_name");
    } else if (named) {
      metric.event_name = metric.name.substr(0, last_dot);
    }
    const YAML::Node given_measurement = item["measurement"];
    const YAML::Node measurement_node = given_measurement ? given_measurement : name_node;
    const std::string measurement_path = given_measurement ? path + ".measurement" : name_path;
    if (given_measurement) {
      if (auto text = r_.String(given_measurement, measurement_path)) metric.measurement = *text;
    } else if (named) {
      metric.measurement =
          last_dot == std::string::npos ? metric.name : metric.name.substr(last_dot + 1);
    }
    ReadDescription(item, path, metric.description);

    const EventSpec* event = nullptr;
    if (!metric.event_name.empty()) {
      event = FindEvent(metric.event_name);
      if (event == nullptr) {
        r_.Fail(event_node, event_path,
                "event " + metric.event_name + " is not declared in this catalog");
      }
    }
    // A counter counts events; its measurement (a default it always gets) is never read.
    std::optional<Unit> declared;
    if (event != nullptr && !counter && !metric.measurement.empty()) {
      const auto it = event->measurements.find(metric.measurement);
      if (it == event->measurements.end()) {
        r_.Fail(measurement_node, measurement_path,
                "\"" + metric.measurement + "\" is not a measurement of event " + event->name);
      } else {
        declared = it->second;
      }
    }

    if (const YAML::Node unit = item["unit"]) {
      if (counter) {
        r_.Fail(unit, path + ".unit", "a counter counts events and takes no unit");
      } else {
        ReadUnit(unit, path + ".unit", declared, metric);
      }
    } else if (declared) {
      metric.unit_from = metric.unit_to = *declared;
    }

    if (const YAML::Node buckets = item["buckets"]) {
      if (metric.type != MetricType::kDistribution) {
        r_.Fail(buckets, path + ".buckets", "only a distribution has buckets");
      } else {
        metric.buckets = ReadBuckets(buckets, path + ".buckets");
      }
    } else if (metric.type == MetricType::kDistribution) {
      metric.buckets.assign(std::begin(kDefaultBuckets), std::end(kDefaultBuckets));
    }
    if (const YAML::Node quantiles = item["quantiles"]) {
      if (metric.type != MetricType::kSummary) {
        r_.Fail(quantiles, path + ".quantiles", "only a summary has quantiles");
      } else {
        metric.quantiles = ReadQuantiles(quantiles, path + ".quantiles");
      }
    } else if (metric.type == MetricType::kSummary) {
      metric.quantiles.assign(std::begin(kDefaultQuantiles), std::end(kDefaultQuantiles));
    }

    // The exposition adds these labels itself; a tag with the same name would collide.
    metric.tags = ReadTags(item["tags"], path + ".tags", event);
    metric.keep = ReadFilters(item["keep"], path + ".keep", event);
    metric.drop = ReadFilters(item["drop"], path + ".drop", event);
    out_.spec.metrics.push_back(std::move(metric));
  }

  std::optional<Unit> UnitOf(const YAML::Node& node, const std::string& path) {
    return r_.Choice(node, path, kUnits, "unit");
  }

  // `declared` is the measurement's unit, unset when the measurement is unknown (already
  // reported).
  void ReadUnit(const YAML::Node& node, const std::string& path, std::optional<Unit> declared,
                MetricSpec& metric) {
    if (node.IsScalar()) {
      const auto to = UnitOf(node, path);
      if (to && declared) Convert(*declared, *to, node, path, metric);
      return;
    }
    if (!node.IsMap()) {
      r_.Fail(node, path, "expected a unit or {from: unit, to: unit}, got " + Describe(node));
      return;
    }
    if (!r_.Map(node, path, {"from", "to"})) return;
    const YAML::Node from_node = r_.Child(node, path, "from", true);
    const YAML::Node to_node = r_.Child(node, path, "to", true);
    std::optional<Unit> from;
    std::optional<Unit> to;
    if (from_node) from = UnitOf(from_node, path + ".from");
    if (to_node) to = UnitOf(to_node, path + ".to");
    if (from && declared && *from != *declared) {
      r_.Fail(from_node, path + ".from",
              "measurement \"" + metric.measurement + "\" of event " + metric.event_name +
                  " is declared in " + NameOf(kUnits, *declared) + ", not " +
                  NameOf(kUnits, *from));
      return;
    }
    if (from && to) Convert(*from, *to, to_node, path + ".to", metric);
  }

  void Convert(Unit from, Unit to, const YAML::Node& node, const std::string& path,
               MetricSpec& metric) {
    if (FamilyOf(from) != FamilyOf(to)) {
      r_.Fail(node, path,
              "cannot convert " + NameOf(kUnits, from) + " to " + NameOf(kUnits, to) +
                  " (time converts to time, bytes to bytes, none only to none)");
      return;
    }
    metric.unit_from = from;
    metric.unit_to = to;
  }

  std::vector<double> ReadBuckets(const YAML::Node& node, const std::string& path) {
    std::vector<double> bounds;
    if (node.IsSequence()) {
      if (node.size() == 0) r_.Fail(node, path, "expected at least one bucket bound");
      bool ok = true;
      for (std::size_t i = 0; i < node.size(); ++i) {
        const std::string element = Index(path, i);
        const auto value = r_.Number(node[i], element);
        if (!value) {
          ok = false;
        } else if (!std::isfinite(*value)) {
          r_.Fail(node[i], element, "must be finite (the +Inf bucket is implicit)");
          ok = false;
        } else if (!bounds.empty() && *value <= bounds.back()) {
          r_.Fail(node[i], element,
                  "buckets must be strictly ascending: " + node[i].Scalar() + " follows " +
                      FormatNumber(bounds.back()));
          ok = false;
        }
        if (value) bounds.push_back(*value);
      }
      if (!ok) bounds.clear();
      return bounds;
    }
    if (!node.IsMap()) {
      r_.Fail(node, path,
              "expected a list of bounds, {linear: {start, width, count}} or "
              "{exponential: {start, factor, count}}, got " +
                  Describe(node));
      return bounds;
    }
    if (!r_.Map(node, path, {"linear", "exponential"})) return bounds;
    const YAML::Node linear = node["linear"];
    const YAML::Node exponential = node["exponential"];
    if (static_cast<bool>(linear) == static_cast<bool>(exponential)) {
      r_.Fail(node, path, "expected exactly one of linear or exponential");
      return bounds;
    }
    const bool is_linear = static_cast<bool>(linear);
    const YAML::Node gen = is_linear ? linear : exponential;
    const std::string gen_path = path + (is_linear ? ".linear" : ".exponential");
    const char* step_key = is_linear ? "width" : "factor";
    if (!r_.Map(gen, gen_path, {"start", step_key, "count"})) return bounds;
    const YAML::Node start_node = r_.Child(gen, gen_path, "start", true);
    const YAML::Node step_node = r_.Child(gen, gen_path, step_key, true);
    const YAML::Node count_node = r_.Child(gen, gen_path, "count", true);
    // Each check runs even when another failed, so that one pass reports all three.
    double start = 0;
    double step = 0;
    double count = 0;
    bool ok = static_cast<bool>(start_node) && static_cast<bool>(step_node) &&
              static_cast<bool>(count_node);
    if (start_node) {
      const auto value = r_.Number(start_node, gen_path + ".start");
      if (!value) {
        ok = false;
      } else if (!std::isfinite(*value)) {
        r_.Fail(start_node, gen_path + ".start", "must be finite");
        ok = false;
      } else if (!is_linear && *value <= 0) {
        r_.Fail(start_node, gen_path + ".start",
                "must be greater than 0, got " + start_node.Scalar());
        ok = false;
      } else {
        start = *value;
      }
    }
    if (step_node) {
      const double step_min = is_linear ? 0 : 1;
      const auto value = r_.Number(step_node, gen_path + "." + step_key);
      if (!value) {
        ok = false;
      } else if (!std::isfinite(*value) || *value <= step_min) {
        r_.Fail(step_node, gen_path + "." + step_key,
                "must be a finite number greater than " + FormatNumber(step_min) + ", got " +
                    step_node.Scalar());
        ok = false;
      } else {
        step = *value;
      }
    }
    if (count_node) {
      const auto value = r_.Count(count_node, gen_path + ".count", kMaxGeneratedBuckets);
      if (value) {
        count = *value;
      } else {
        ok = false;
      }
    }
    if (!ok) return bounds;
    const auto n = static_cast<std::size_t>(count);
    for (std::size_t i = 0; i < n; ++i) {
      const auto x = static_cast<double>(i);
      bounds.push_back(is_linear ? start + x * step : start * std::pow(step, x));
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
        r_.Fail(gen, gen_path,
                "bound " + std::to_string(i) + " (" + FormatNumber(bounds[i]) +
                    ") is not finite and greater than the one before it");
        bounds.clear();
        break;
      }
    }
    return bounds;
  }

  std::vector<double> ReadQuantiles(const YAML::Node& node, const std::string& path) {
    std::vector<double> quantiles;
    if (!Sequence(node, path, "a list of quantiles")) return quantiles;
    if (node.size() == 0) r_.Fail(node, path, "expected at least one quantile");
    bool ok = true;
    for (std::size_t i = 0; i < node.size(); ++i) {
      const std::string element = Index(path, i);
      const auto q = r_.Number(node[i], element);
      if (!q) {
        ok = false;
        continue;
      }
      if (*q <= 0 || *q >= 1) {
        r_.Fail(node[i], element, "a quantile must be in (0, 1), got " + node[i].Scalar());
        ok = false;
      } else if (!quantiles.empty() && *q <= quantiles.back()) {
        r_.Fail(node[i], element,
                "quantiles must be strictly ascending: " + node[i].Scalar() + " follows " +
                    FormatNumber(quantiles.back()));
        ok = false;
      }
      quantiles.push_back(*q);
    }
    if (!ok) quantiles.clear();
    return quantiles;
  }

  // Checks that `key` names metadata of `event` whose value has a text form; `use` says what for.
  void CheckMetadataKey(const std::string& key, const EventSpec* event, const YAML::Node& node,
                        const std::string& path, const std::string& use) {
    if (event == nullptr) return;
    const auto it = event->metadata.find(key);
    if (it == event->metadata.end()) {
      r_.Fail(node, path, "\"" + key + "\" is not a metadata key of event " + event->name);
      return;
    }
    if (it->second == MetadataType::kMap || it->second == MetadataType::kList ||
        it->second == MetadataType::kReference) {
      r_.Fail(node, path,
              "\"" + key + "\" is a " + NameOf(kMetadataTypes, it->second) +
                  " metadata key of event " + event->name + " and cannot be " + use);
    }
  }

  std::vector<TagSpec> ReadTags(const YAML::Node& node, const std::string& path,
                                const EventSpec* event) {
    std::vector<TagSpec> tags;
    if (IsAbsent(node) || !Sequence(node, path, "a list of metadata keys")) return tags;
    std::map<std::string, std::string> labels;  // label -> path of the tag that has it
    for (std::size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      const std::string item_path = Index(path, i);
      const bool full = item.IsMap();
      if (!full && !item.IsScalar()) {
        r_.Fail(item, item_path,
                "expected a metadata key or {key, label, default, values}, got " + Describe(item));
        continue;
      }
      if (full && !r_.Map(item, item_path, {"key", "label", "default", "values"})) continue;
      const YAML::Node key_node = full ? r_.Child(item, item_path, "key", true) : item;
      if (!key_node) continue;
      const std::string key_path = full ? item_path + ".key" : item_path;
      const bool label_given = full && item["label"];
      const YAML::Node label_node = label_given ? item["label"] : key_node;
      const std::string label_path = label_given ? item_path + ".label" : key_path;
      TagSpec tag;
      if (label_given) {
        if (auto text = r_.String(label_node, label_path)) tag.label = *text;
      }
      if (full && item["default"]) {
        tag.default_value = r_.String(item["default"], item_path + ".default", true);
      }
      if (full && item["values"]) {
        for (const auto& [from, to] : r_.Entries(item["values"], item_path + ".values", "value")) {
          if (auto text = r_.String(to, item_path + ".values." + from.Scalar(), true)) {
            tag.values[from.Scalar()] = *text;
          }
        }
      }
      const auto key = r_.String(key_node, key_path);
      if (!key) continue;
      tag.key = *key;
      CheckMetadataKey(tag.key, event, key_node, key_path, "a tag");
      if (label_given && tag.label.empty()) continue;  // not a string: reported
      if (!label_given) tag.label = tag.key;
      if (!detail::IsLabelName(tag.label)) {
        r_.Fail(label_node, label_path,
                "\"" + tag.label + "\" is not a valid label name ([A-Za-z_][A-Za-z0-9_]*)" +
                    (label_given ? "" : "; set label"));
      } else if (tag.label.starts_with("__")) {
        r_.Fail(label_node, label_path,
                "\"" + tag.label + "\": label names starting with \"__\" are reserved by " +
                    "Prometheus" + (label_given ? "" : "; set label"));
      } else if (detail::IsReservedLabelName(tag.label)) {  // le, quantile
        r_.Fail(label_node, label_path,
                "the label \"" + tag.label + "\" is reserved for the " +
                    (tag.label == "le" ? "buckets of a histogram" : "quantiles of a summary") +
                    "; choose another label");
      } else if (const auto [it, inserted] = labels.emplace(tag.label, item_path); !inserted) {
        r_.Fail(label_node, label_path,
                "the label \"" + tag.label + "\" is already used by " + it->second);
      }
      tags.push_back(std::move(tag));
    }
    return tags;
  }

  // keep/drop: a list of conditions, or one condition on its own.
  std::vector<FilterSpec> ReadFilters(const YAML::Node& node, const std::string& path,
                                      const EventSpec* event) {
    std::vector<FilterSpec> filters;
    if (IsAbsent(node)) return filters;
    if (node.IsMap()) {
      if (auto filter = ReadFilter(node, path, event)) filters.push_back(std::move(*filter));
      return filters;
    }
    if (!Sequence(node, path, "a condition or a list of conditions")) return filters;
    for (std::size_t i = 0; i < node.size(); ++i) {
      if (auto filter = ReadFilter(node[i], Index(path, i), event)) {
        filters.push_back(std::move(*filter));
      }
    }
    return filters;
  }

  std::optional<FilterSpec> ReadFilter(const YAML::Node& node, const std::string& path,
                                       const EventSpec* event) {
    static const std::string kForms =
        "{metadata: key, in: [...]}, {metadata: key, not_in: [...]} or "
        "{measurement: name, op: gt, value: number}";
    if (!node.IsMap()) {
      r_.Fail(node, path, "expected a condition " + kForms + ", got " + Describe(node));
      return std::nullopt;
    }
    const YAML::Node metadata = node["metadata"];
    const YAML::Node measurement = node["measurement"];
    if (static_cast<bool>(metadata) == static_cast<bool>(measurement)) {
      r_.Fail(node, path, "expected exactly one of metadata or measurement: " + kForms);
      return std::nullopt;
    }
    FilterSpec filter;
    bool ok = true;
    if (metadata) {
      if (!r_.Map(node, path, {"metadata", "in", "not_in"})) return std::nullopt;
      if (auto key = r_.String(metadata, path + ".metadata")) {
        filter.metadata = *key;
        CheckMetadataKey(*key, event, metadata, path + ".metadata", "a condition");
      } else {
        ok = false;
      }
      const YAML::Node in = node["in"];
      const YAML::Node not_in = node["not_in"];
      if (static_cast<bool>(in) == static_cast<bool>(not_in)) {
        r_.Fail(node, path, "expected exactly one of in or not_in");
        return std::nullopt;
      }
      filter.op = in ? FilterSpec::Op::kIn : FilterSpec::Op::kNotIn;
      const YAML::Node list = in ? in : not_in;
      const std::string list_path = path + (in ? ".in" : ".not_in");
      if (!Sequence(list, list_path, "a list of values")) return std::nullopt;
      if (list.size() == 0) {
        r_.Fail(list, list_path, "expected at least one value");
        ok = false;
      }
      for (std::size_t i = 0; i < list.size(); ++i) {
        auto value = r_.String(list[i], Index(list_path, i), true);
        if (value) {
          filter.values.push_back(std::move(*value));
        } else {
          ok = false;
        }
      }
    } else {
      if (!r_.Map(node, path, {"measurement", "op", "value"})) return std::nullopt;
      if (auto name = r_.String(measurement, path + ".measurement")) {
        filter.measurement = *name;
        if (event != nullptr && event->measurements.count(*name) == 0) {
          r_.Fail(measurement, path + ".measurement",
                  "\"" + *name + "\" is not a measurement of event " + event->name);
        }
      } else {
        ok = false;
      }
      const YAML::Node op = r_.Child(node, path, "op", true);
      const YAML::Node value = r_.Child(node, path, "value", true);
      if (!op || !value) return std::nullopt;
      if (auto parsed = r_.Choice(op, path + ".op", kComparisons, "comparison")) {
        filter.op = *parsed;
      } else {
        ok = false;
      }
      if (auto threshold = r_.Number(value, path + ".value")) {
        filter.threshold = *threshold;
      } else {
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    return filter;
  }

  void ReadSpanGauge(const YAML::Node& item, const std::string& path) {
    if (!r_.Map(item, path, {"name", "span", "description", "tags"})) return;
    SpanGaugeSpec gauge;
    gauge.position = r_.Position(item);
    if (const YAML::Node name = r_.Child(item, path, "name", true)) {
      if (auto text = r_.String(name, path + ".name")) {
        if (!IsMetricName(*text)) {
          r_.Fail(name, path + ".name",
                  "\"" + *text + "\" is not a valid metric name (segments of [A-Za-z0-9_] " +
                      "joined with '.')");
        } else {
          gauge.name = *text;
          ClaimMetricName(*text, name, path + ".name");
        }
      }
    }
    ReadDescription(item, path, gauge.description);
    const EventSpec* start = nullptr;
    if (const YAML::Node span = r_.Child(item, path, "span", true)) {
      if (auto prefix = r_.String(span, path + ".span")) {
        gauge.span = *prefix;
        start = SpanEvent(*prefix, SpanRole::kStart, span, path + ".span");
        SpanEvent(*prefix, SpanRole::kStop, span, path + ".span");
      }
    }
    gauge.tags = ReadTags(item["tags"], path + ".tags", start);
    out_.spec.span_gauges.push_back(std::move(gauge));
  }

  // The event `<prefix>.<role>`, which must be declared with that span role.
  const EventSpec* SpanEvent(const std::string& prefix, SpanRole role, const YAML::Node& node,
                             const std::string& path) {
    const std::string role_name = NameOf(kSpanRoles, role);
    const std::string name = prefix + "." + role_name;
    const EventSpec* event = FindEvent(name);
    if (event == nullptr) {
      r_.Fail(node, path, "event " + name + " is not declared in this catalog");
      return nullptr;
    }
    if (event->span != role) {
      r_.Fail(node, path,
              "event " + name + " is declared with span: " + NameOf(kSpanRoles, event->span) +
                  ", expected span: " + role_name);
      return nullptr;
    }
    return event;
  }

  Reader r_;
  ParsedCatalog& out_;
  std::map<std::string, std::size_t> event_index_;
  std::map<std::string, SourcePosition> metric_names_;
};

ParsedCatalog Parse(std::string_view yaml, const std::string& source) {
  ParsedCatalog out;
  out.spec.source = source;
  std::optional<YAML::Node> root;
  try {
    root.emplace(YAML::Load(std::string(yaml)));
  } catch (const YAML::Exception& e) {
    SourcePosition position{source, e.mark.line + 1, e.mark.column + 1};
    out.problems.push_back(
        Problem{position, (e.mark.line >= 0 ? position.ToString() : source) + ": " + e.msg});
    out.syntax_error = true;
    return out;
  }
  CatalogParser parser(source, out);
  try {
    parser.Parse(*root);
  } catch (const std::exception& e) {
    // The walk checks types before each access, so this is a yaml-cpp surprise; still an error,
    // never a crash.
    out.problems.push_back(Problem{SourcePosition{source, 0, 0}, source + ": " + e.what()});
  }
  auto problems = parser.TakeProblems();
  problems.insert(problems.end(), std::make_move_iterator(out.problems.begin()),
                  std::make_move_iterator(out.problems.end()));
  std::stable_sort(problems.begin(), problems.end(), [](const Problem& a, const Problem& b) {
    return std::pair(a.position.line, a.position.column) <
           std::pair(b.position.line, b.position.column);
  });
  out.problems = std::move(problems);
  return out;
}

std::string JoinProblems(const std::vector<Problem>& problems) {
  std::string message;
  for (const auto& p : problems) message += (message.empty() ? "" : "\n") + p.text;
  return message;
}

Expected<CatalogSpec> Finish(ParsedCatalog parsed) {
  if (parsed.problems.empty()) return std::move(parsed.spec);
  return Error{parsed.syntax_error ? "catalog.syntax" : "catalog.invalid",
               JoinProblems(parsed.problems)};
}

Expected<std::string> ReadFile(const std::string& path) {
  return ReadBoundedFile(path, kMaxConfigFileBytes, "catalog.read", "catalog file");
}

// Checks names that must be unique across catalogs; `seen` maps each to its first declaration.
void CheckUnique(const std::vector<Declared>& declared, const std::string& what,
                 std::map<std::string, Declared>& seen, std::vector<Problem>& problems) {
  for (const auto& d : declared) {
    const auto [it, inserted] = seen.emplace(d.name, d);
    if (!inserted) {
      problems.push_back(MakeProblem(
          d.position, d.path,
          what + " " + d.name + " is also declared at " + it->second.position.ToString()));
    }
  }
}

}  // namespace

Expected<CatalogSpec> ParseCatalog(std::string_view yaml, const std::string& source) {
  try {
    return Finish(Parse(yaml, source));
  } catch (const std::exception& e) {
    return Error{"catalog.invalid", source + ": " + e.what()};
  }
}

Expected<CatalogSpec> LoadCatalogFile(const std::string& path) {
  try {
    auto text = ReadFile(path);
    if (!text) return text.error();
    return Finish(Parse(*text, path));
  } catch (const std::exception& e) {
    return Error{"catalog.invalid", path + ": " + e.what()};
  }
}

Expected<std::vector<CatalogSpec>> LoadCatalogs(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  try {
    std::vector<Problem> problems;
    std::set<std::string> codes;
    auto fail = [&](const std::string& code, const std::string& text) {
      problems.push_back(Problem{SourcePosition{}, text});
      codes.insert(code);
    };

    std::vector<std::string> files;
    for (const auto& path : paths) {
      std::error_code ec;
      if (!fs::is_directory(path, ec)) {
        files.push_back(path);
        continue;
      }
      std::vector<fs::path> found;
      fs::directory_iterator it(path, ec);
      for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
        std::error_code type_ec;
        if (it->path().extension() == ".yaml" && it->is_regular_file(type_ec)) {
          found.push_back(it->path());
        }
      }
      if (ec) {
        fail("catalog.read", path + ": cannot list the directory: " + ec.message());
        continue;
      }
      std::sort(found.begin(), found.end(),
                [](const fs::path& a, const fs::path& b) { return a.filename() < b.filename(); });
      for (const auto& f : found) files.push_back(f.string());
    }

    std::set<std::string> loaded;
    std::vector<ParsedCatalog> catalogs;
    for (const auto& file : files) {
      std::error_code ec;
      const fs::path canonical = fs::weakly_canonical(file, ec);
      if (!loaded.insert(ec ? file : canonical.string()).second) continue;
      auto text = ReadFile(file);
      if (!text) {
        fail(text.error().code, text.error().message);
        continue;
      }
      ParsedCatalog parsed = Parse(*text, file);
      if (!parsed.problems.empty()) {
        codes.insert(parsed.syntax_error ? "catalog.syntax" : "catalog.invalid");
        problems.insert(problems.end(), parsed.problems.begin(), parsed.problems.end());
      }
      catalogs.push_back(std::move(parsed));
    }

    // Invalid catalogs take part too, with what they did declare, so that one run shows all.
    std::map<std::string, Declared> systems;
    std::map<std::string, Declared> events;
    std::map<std::string, Declared> metrics;
    std::vector<Problem> cross;
    for (const auto& c : catalogs) {
      if (c.system) CheckUnique({*c.system}, "system", systems, cross);
      CheckUnique(c.events, "event", events, cross);
      CheckUnique(c.metrics, "metric", metrics, cross);
    }
    if (!cross.empty()) codes.insert("catalog.invalid");
    problems.insert(problems.end(), cross.begin(), cross.end());

    if (!problems.empty()) {
      return Error{codes.size() == 1 ? *codes.begin() : "catalog.invalid", JoinProblems(problems)};
    }
    std::vector<CatalogSpec> specs;
    specs.reserve(catalogs.size());
    for (auto& c : catalogs) specs.push_back(std::move(c.spec));
    return specs;
  } catch (const std::exception& e) {
    return Error{"catalog.invalid", std::string("loading catalogs: ") + e.what()};
  }
}

}  // namespace telemetryd::config
