#include "telemetryd/config/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "label_names.h"
#include "telemetryd/common/read_file.h"

namespace telemetryd::config {
namespace {

// Walks the YAML tree, collecting every error with its position and field path.
class Reader {
 public:
  explicit Reader(std::string source) : source_(std::move(source)) {}

  void Fail(const YAML::Node& node, const std::string& path, const std::string& what) {
    const YAML::Mark mark = node.Mark();
    std::ostringstream out;
    out << source_;
    if (mark.line >= 0) out << ':' << (mark.line + 1) << ':' << (mark.column + 1);
    out << ": " << path << ": " << what;
    errors_.push_back(out.str());
  }

  // True when `node` is a mapping (or absent); reports keys other than `allowed`.
  bool Map(const YAML::Node& node, const std::string& path,
           std::initializer_list<std::string_view> allowed) {
    if (!node || node.IsNull()) return false;
    if (!node.IsMap()) {
      Fail(node, path, "expected a mapping");
      return false;
    }
    std::set<std::string> seen;
    for (const auto& kv : node) {
      const auto key = kv.first.as<std::string>("");
      // Lookups see only the first of a repeated key: report the repeat instead of ignoring it.
      if (!seen.insert(key).second) {
        Fail(kv.first, Join(path, key), "is given twice");
        continue;
      }
      bool known = false;
      for (const auto a : allowed) known = known || a == key;
      if (!known) {
        std::string list;
        for (const auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        Fail(kv.first, Join(path, key), "unknown key (expected one of: " + list + ")");
      }
    }
    return true;
  }

  template <typename T>
  void Unsigned(const YAML::Node& parent, std::string_view key, const std::string& path, T& out,
                std::uint64_t min, std::uint64_t max) {
    const YAML::Node node = parent[std::string(key)];
    if (!node) return;
    const std::string field = Join(path, std::string(key));
    std::uint64_t value = 0;
    if (!node.IsScalar() || !YAML::convert<std::uint64_t>::decode(node, value) ||
        node.Scalar().find('-') != std::string::npos) {
      Fail(node, field, "expected a whole number, got \"" + Text(node) + "\"");
      return;
    }
    if (value < min || value > max) {
      Fail(node, field,
           "must be between " + std::to_string(min) + " and " + std::to_string(max) + ", got " +
               std::to_string(value));
      return;
    }
    out = static_cast<T>(value);
  }

  void Double(const YAML::Node& parent, std::string_view key, const std::string& path, double& out,
              double min, double max) {
    const YAML::Node node = parent[std::string(key)];
    if (!node) return;
    const std::string field = Join(path, std::string(key));
    double value = 0;
    if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || !std::isfinite(value)) {
      Fail(node, field, "expected a number, got \"" + Text(node) + "\"");
      return;
    }
    if (value < min || value > max) {
      Fail(node, field, "must be between " + Num(min) + " and " + Num(max) + ", got " + Num(value));
      return;
    }
    out = value;
  }

  void Strings(const YAML::Node& parent, std::string_view key, const std::string& path,
               std::vector<std::string>& out) {
    const YAML::Node node = parent[std::string(key)];
    if (!node) return;
    const std::string field = Join(path, std::string(key));
    if (!node.IsSequence()) {
      Fail(node, field, "expected a list of strings");
      return;
    }
    out.clear();
    for (std::size_t i = 0; i < node.size(); ++i) {
      if (!node[i].IsScalar() || node[i].Scalar().empty()) {
        Fail(node[i], field + "[" + std::to_string(i) + "]", "expected a non-empty string");
      } else {
        out.push_back(node[i].Scalar());
      }
    }
  }

  static std::string Num(double v) {
    std::ostringstream out;
    out << v;
    return out.str();
  }

  void Bool(const YAML::Node& parent, std::string_view key, const std::string& path, bool& out) {
    const YAML::Node node = parent[std::string(key)];
    if (!node) return;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, out)) {
      Fail(node, Join(path, std::string(key)),
           "expected true or false, got \"" + Text(node) + "\"");
    }
  }

  void String(const YAML::Node& parent, std::string_view key, const std::string& path,
              std::string& out) {
    const YAML::Node node = parent[std::string(key)];
    if (!node) return;
    if (!node.IsScalar() || node.Scalar().empty()) {
      Fail(node, Join(path, std::string(key)), "expected a non-empty string");
      return;
    }
    out = node.Scalar();
  }

  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  static std::string Text(const YAML::Node& node) {
    if (node.IsScalar()) return node.Scalar();
    return node.IsMap() ? "a mapping" : (node.IsSequence() ? "a list" : "null");
  }

  [[nodiscard]] const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

void ReadListener(Reader& r, const YAML::Node& node, const std::string& path,
                  ingest::ListenerOptions& lo, bool& enabled) {
  const bool udp = lo.transport == ingest::Transport::kUdp;
  if (udp) {
    if (!r.Map(node, path, {"enabled", "address", "port", "receive_buffer_bytes", "batch"})) return;
    r.Unsigned(node, "receive_buffer_bytes", path, lo.receive_buffer_bytes, 4096, 1ULL << 30);
    r.Unsigned(node, "batch", path, lo.batch, 1, 1024);
  } else {
    if (!r.Map(node, path,
               {"enabled", "address", "port", "max_frame_bytes", "max_connections",
                "idle_timeout_ms"})) {
      return;
    }
    r.Unsigned(node, "max_frame_bytes", path, lo.max_frame_bytes, 512, 16ULL << 20);
    r.Unsigned(node, "max_connections", path, lo.max_connections, 1, 1'000'000);
    std::uint64_t idle_ms = static_cast<std::uint64_t>(lo.idle_timeout.count());
    r.Unsigned(node, "idle_timeout_ms", path, idle_ms, 100, 86'400'000);
    lo.idle_timeout = std::chrono::milliseconds(idle_ms);
  }
  r.Bool(node, "enabled", path, enabled);
  r.String(node, "address", path, lo.address);
  r.Unsigned(node, "port", path, lo.port, 0, 65535);
}

// A mapping's `$N` must name one of the `*` of its match (N from 1 to 9).
void CheckCaptures(Reader& r, const YAML::Node& node, const std::string& field,
                   std::string_view text, std::size_t stars) {
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    if (text[i] != '$' || text[i + 1] < '1' || text[i + 1] > '9') continue;
    const auto n = static_cast<std::size_t>(text[i + 1] - '0');
    if (n > stars) {
      r.Fail(node, field,
             "$" + std::to_string(n) + " refers to a * that the match does not have (it has " +
                 std::to_string(stars) + ")");
      return;
    }
  }
}

// An address as the 16 bytes of IPv6 (IPv4 mapped), so that spellings of one address compare
// equal ("::1" and "0::1"); nothing if it is not an IP address.
std::optional<std::array<unsigned char, 16>> AddressBytes(const std::string& text) {
  std::array<unsigned char, 16> bytes{};
  in_addr v4{};
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    bytes[10] = bytes[11] = 0xff;
    std::memcpy(bytes.data() + 12, &v4, 4);
    return bytes;
  }
  if (::inet_pton(AF_INET6, text.c_str(), bytes.data()) == 1) return bytes;
  return std::nullopt;
}

// Whether two listen addresses take some of the same packets: equal, or either the wildcard of
// its family ("::" also takes IPv4 on a dual-stack socket).
bool AddressesOverlap(const std::string& a, const std::string& b) {
  const auto x = AddressBytes(a);
  const auto y = AddressBytes(b);
  if (!x || !y) return a == b;
  static constexpr std::array<unsigned char, 16> kAny6{};
  static constexpr std::array<unsigned char, 16> kAny4{0, 0, 0,    0,    0, 0, 0, 0,
                                                       0, 0, 0xff, 0xff, 0, 0, 0, 0};
  auto is_v4 = [](const std::array<unsigned char, 16>& z) {
    return std::equal(z.begin(), z.begin() + 12, kAny4.begin());
  };
  if (*x == *y || *x == kAny6 || *y == kAny6) return true;
  return is_v4(*x) == is_v4(*y) && (*x == kAny4 || *y == kAny4);
}

// Every socket sets SO_REUSEPORT (for several workers), so two listeners of one transport on one
// port would both bind, and the kernel would share the packets out between them: a StatsD line
// landing on the native listener is lost. Reported at the second listener's port.
void CheckListenerPorts(Reader& r, const std::vector<ingest::ListenerOptions>& listeners,
                        const std::vector<std::pair<std::string, YAML::Node>>& port_nodes) {
  for (std::size_t j = 1; j < listeners.size(); ++j) {
    for (std::size_t i = 0; i < j; ++i) {
      const auto& a = listeners[i];
      const auto& b = listeners[j];
      if (a.transport != b.transport || a.port == 0 || a.port != b.port ||
          !AddressesOverlap(a.address, b.address)) {
        continue;
      }
      const bool second_given = !port_nodes[j].second.IsNull();
      const auto& [path, node] = second_given ? port_nodes[j] : port_nodes[i];
      const std::string& other = second_given ? port_nodes[i].first : port_nodes[j].first;
      r.Fail(node, path + ".port",
             "port " + std::to_string(b.port) + " is also the port of " + other +
                 " (the two would share its packets); give each listener its own port");
      break;
    }
  }
}

// A push destination that is one of our own StatsD UDP listeners would feed every push back in.
bool IsOwnStatsdListener(const StatsdDestination& d, const ingest::IngestOptions& ingest) {
  for (const auto& lo : ingest.listeners) {
    if (lo.protocol != ingest::Protocol::kStatsd || lo.transport != ingest::Transport::kUdp ||
        lo.port == 0 || lo.port != d.port) {
      continue;
    }
    // "localhost" is either loopback address.
    const bool hit = d.host == "localhost" ? AddressesOverlap("127.0.0.1", lo.address) ||
                                                 AddressesOverlap("::1", lo.address)
                                           : AddressesOverlap(d.host, lo.address);
    if (hit) return true;
  }
  return false;
}

void ReadStatsdPush(Reader& r, const YAML::Node& node, Config& config) {
  const std::string p = "statsd_push";
  StatsdPushOptions& push = config.statsd_push;
  if (!r.Map(node, p,
             {"enabled", "interval_seconds", "mtu", "format", "prefix", "global_tags", "sum_as",
              "destinations"})) {
    return;
  }
  r.Bool(node, "enabled", p, push.enabled);
  std::uint64_t seconds = static_cast<std::uint64_t>(push.interval.count());
  r.Unsigned(node, "interval_seconds", p, seconds, 1, 86'400);
  push.interval = std::chrono::seconds(seconds);
  r.Unsigned(node, "mtu", p, push.mtu, 512, 65'507);
  std::string format = "standard";
  r.String(node, "format", p, format);
  if (format == "dogstatsd") {
    push.format = StatsdFormat::kDogstatsd;
  } else if (format != "standard") {
    r.Fail(node["format"], p + ".format", "expected standard or dogstatsd, got \"" + format + "\"");
  }
  r.String(node, "prefix", p, push.prefix);
  std::string sum_as = "counter";
  r.String(node, "sum_as", p, sum_as);
  if (sum_as == "gauge") {
    push.sum_as = StatsdSumAs::kGauge;
  } else if (sum_as != "counter") {
    r.Fail(node["sum_as"], p + ".sum_as", "expected counter or gauge, got \"" + sum_as + "\"");
  }
  const YAML::Node tags = node["global_tags"];
  if (tags && !tags.IsMap()) {
    r.Fail(tags, p + ".global_tags", "expected a mapping of tag to value");
  } else if (tags) {
    for (const auto& kv : tags) {
      const std::string key = kv.first.as<std::string>("");
      if (!kv.second.IsScalar() || kv.second.Scalar().empty() || key.empty()) {
        r.Fail(kv.second, Reader::Join(p + ".global_tags", key), "expected a non-empty string");
        continue;
      }
      push.global_tags.emplace_back(key, kv.second.Scalar());
    }
  }
  const YAML::Node destinations = node["destinations"];
  if (destinations && !destinations.IsSequence()) {
    r.Fail(destinations, p + ".destinations", "expected a list of host:port or unix:///path");
  } else if (destinations) {
    for (std::size_t i = 0; i < destinations.size(); ++i) {
      const YAML::Node d = destinations[i];
      const std::string field = p + ".destinations[" + std::to_string(i) + "]";
      if (!d.IsScalar()) {
        r.Fail(d, field, "expected host:port or unix:///path");
        continue;
      }
      auto parsed = ParseStatsdDestination(d.Scalar());
      if (!parsed) {
        r.Fail(d, field, parsed.error().message);
      } else if (push.enabled && parsed->kind == StatsdDestination::Kind::kUdp &&
                 IsOwnStatsdListener(*parsed, config.ingest)) {
        r.Fail(d, field,
               "is telemetryd's own StatsD listener: every push would come back in as input");
      } else {
        push.destinations.push_back(std::move(*parsed));
      }
    }
  }
  if (push.enabled && push.destinations.empty() && (!destinations || destinations.size() == 0)) {
    r.Fail(destinations ? destinations : node, p + ".destinations",
           "at least one destination is needed when enabled");
  }
}

}  // namespace

Expected<StatsdDestination> ParseStatsdDestination(std::string_view text) {
  auto fail = [&](const std::string& what) {
    return Error{"config.statsd_destination", what + ", got \"" + std::string(text) + "\""};
  };
  StatsdDestination d;
  d.text = std::string(text);
  constexpr std::string_view kUnix = "unix://";
  if (text.substr(0, kUnix.size()) == kUnix) {
    d.kind = StatsdDestination::Kind::kUnix;
    d.path = std::string(text.substr(kUnix.size()));
    if (d.path.size() < 2 || d.path[0] != '/') {
      return fail("expected unix:// and an absolute path (unix:///run/statsd.sock)");
    }
    // sockaddr_un::sun_path holds 108 bytes with the terminating NUL.
    if (d.path.size() > 107) return fail("a Unix socket path is at most 107 bytes");
    return d;
  }
  std::string_view port;
  if (!text.empty() && text[0] == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail("expected [ipv6 address]:port");
    }
    d.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("expected host:port or unix:///path");
    d.host = std::string(text.substr(0, colon));
    if (d.host.find(':') != std::string::npos) {
      return fail("an IPv6 address needs brackets: [address]:port");
    }
    port = text.substr(colon + 1);
  }
  if (d.host.empty()) return fail("the host is missing");
  for (const char c : d.host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '/') return fail("the host is not valid");
  }
  std::uint32_t value = 0;
  bool ok = !port.empty() && port.size() <= 5;
  for (const char c : port) {
    ok = ok && c >= '0' && c <= '9';
    if (ok) value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (!ok || value == 0 || value > 65535) return fail("the port must be a number from 1 to 65535");
  d.port = static_cast<std::uint16_t>(value);
  return d;
}

Expected<Config> ParseConfig(std::string_view yaml, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return Error{"config.syntax", source + ":" + std::to_string(e.mark.line + 1) + ":" +
                                      std::to_string(e.mark.column + 1) + ": " + e.msg};
  }
  Config config;
  config.source = source;
  Reader r(source);
  if (root && !root.IsNull() && !root.IsMap()) {
    r.Fail(root, "(top level)", "expected a mapping");
  } else {
    r.Map(
        root, "",
        {"listeners", "catalogs", "aggregation", "statsd", "statsd_push", "prometheus", "logging"});
    const YAML::Node listeners = root["listeners"];
    config.ingest.workers = 2;
    struct Default {
      ingest::Protocol protocol;
      ingest::Transport transport;
      std::uint16_t port;
    };
    const Default defaults[] = {{ingest::Protocol::kNative, ingest::Transport::kUdp, 7625},
                                {ingest::Protocol::kNative, ingest::Transport::kTcp, 7625},
                                {ingest::Protocol::kStatsd, ingest::Transport::kUdp, 8125},
                                {ingest::Protocol::kStatsd, ingest::Transport::kTcp, 8125}};
    const bool has_listeners = r.Map(listeners, "listeners", {"workers", "native", "statsd"});
    if (has_listeners) r.Unsigned(listeners, "workers", "listeners", config.ingest.workers, 1, 64);
    // Where each enabled listener's port was given (an undefined node for a default), to report
    // two listeners that would share one port.
    std::vector<std::pair<std::string, YAML::Node>> port_nodes;
    for (const auto& d : defaults) {
      ingest::ListenerOptions lo;
      lo.protocol = d.protocol;
      lo.transport = d.transport;
      lo.port = d.port;
      if (d.protocol == ingest::Protocol::kStatsd && d.transport == ingest::Transport::kTcp) {
        lo.max_frame_bytes = 64 * 1024;  // the longest StatsD line accepted over TCP
      }
      bool enabled = true;
      const std::string path = "listeners." + std::string(ingest::ProtocolName(d.protocol)) + "." +
                               std::string(ingest::TransportName(d.transport));
      YAML::Node port_node;
      if (has_listeners) {
        const std::string proto(ingest::ProtocolName(d.protocol));
        const YAML::Node group = listeners[proto];
        if (r.Map(group, "listeners." + proto, {"udp", "tcp"})) {
          const YAML::Node node = group[std::string(ingest::TransportName(d.transport))];
          ReadListener(r, node, path, lo, enabled);
          if (node && node.IsMap() && node["port"]) port_node = node["port"];
        }
      }
      if (!enabled) continue;
      config.ingest.listeners.push_back(lo);
      port_nodes.emplace_back(path, port_node);
    }
    CheckListenerPorts(r, config.ingest.listeners, port_nodes);

    const YAML::Node catalogs = root["catalogs"];
    if (r.Map(catalogs, "catalogs", {"builtin", "builtin_dir", "paths"})) {
      r.Bool(catalogs, "builtin", "catalogs", config.catalogs.builtin);
      r.String(catalogs, "builtin_dir", "catalogs", config.catalogs.builtin_dir);
      r.Strings(catalogs, "paths", "catalogs", config.catalogs.paths);
    }

    aggregate::EngineOptions& agg = config.aggregation;
    const YAML::Node aggregation = root["aggregation"];
    if (r.Map(aggregation, "aggregation",
              {"max_series_per_metric", "max_series_total", "series_ttl_seconds", "unknown_events",
               "unknown_event_names_max", "max_open_spans", "span_max_age_seconds",
               "summary_window_seconds", "summary_accuracy"})) {
      const std::string a = "aggregation";
      r.Unsigned(aggregation, "max_series_per_metric", a, agg.max_series_per_metric, 1,
                 100'000'000);
      r.Unsigned(aggregation, "max_series_total", a, agg.max_series_total, 1, 100'000'000);
      std::uint64_t seconds = static_cast<std::uint64_t>(agg.series_ttl.count() / 1000);
      r.Unsigned(aggregation, "series_ttl_seconds", a, seconds, 0, 365ULL * 86400);
      agg.series_ttl = std::chrono::milliseconds(seconds * 1000);
      std::string policy = "count_by_name";
      r.String(aggregation, "unknown_events", a, policy);
      if (policy == "drop") {
        agg.unknown_events = aggregate::UnknownEventPolicy::kDrop;
      } else if (policy != "count_by_name") {
        r.Fail(aggregation["unknown_events"], "aggregation.unknown_events",
               "expected drop or count_by_name, got \"" + policy + "\"");
      }
      r.Unsigned(aggregation, "unknown_event_names_max", a, agg.unknown_event_names_max, 0,
                 1'000'000);
      r.Unsigned(aggregation, "max_open_spans", a, agg.max_open_spans, 1, 10'000'000);
      seconds = static_cast<std::uint64_t>(agg.span_max_age.count() / 1000);
      r.Unsigned(aggregation, "span_max_age_seconds", a, seconds, 1, 7ULL * 86400);
      agg.span_max_age = std::chrono::milliseconds(seconds * 1000);
      seconds = static_cast<std::uint64_t>(agg.summary_window.count() / 1000);
      r.Unsigned(aggregation, "summary_window_seconds", a, seconds, 1, 86400);
      agg.summary_window = std::chrono::milliseconds(seconds * 1000);
      r.Double(aggregation, "summary_accuracy", a, agg.summary_accuracy, 0.0001, 0.1);
    }

    const YAML::Node statsd = root["statsd"];
    if (r.Map(statsd, "statsd", {"enabled", "max_metrics", "timer_buckets", "mappings"})) {
      r.Bool(statsd, "enabled", "statsd", agg.statsd_enabled);
      r.Unsigned(statsd, "max_metrics", "statsd", agg.statsd_max_metrics, 1, 10'000'000);
      const YAML::Node buckets = statsd["timer_buckets"];
      if (buckets) {
        if (!buckets.IsSequence() || buckets.size() == 0) {
          r.Fail(buckets, "statsd.timer_buckets", "expected a non-empty list of numbers");
        } else {
          agg.statsd_buckets.clear();
          for (std::size_t i = 0; i < buckets.size(); ++i) {
            double v = 0;
            const std::string field = "statsd.timer_buckets[" + std::to_string(i) + "]";
            if (!buckets[i].IsScalar() || !YAML::convert<double>::decode(buckets[i], v) ||
                !std::isfinite(v)) {
              r.Fail(buckets[i], field, "expected a number");
            } else if (!agg.statsd_buckets.empty() && v <= agg.statsd_buckets.back()) {
              r.Fail(buckets[i], field, "buckets must be strictly ascending");
            } else {
              agg.statsd_buckets.push_back(v);
            }
          }
        }
      }
      const YAML::Node mappings = statsd["mappings"];
      if (mappings && !mappings.IsSequence()) {
        r.Fail(mappings, "statsd.mappings", "expected a list");
      } else if (mappings) {
        for (std::size_t i = 0; i < mappings.size(); ++i) {
          const std::string path = "statsd.mappings[" + std::to_string(i) + "]";
          const YAML::Node m = mappings[i];
          if (!r.Map(m, path, {"match", "name", "labels"})) {
            if (!m || m.IsNull()) r.Fail(m, path, "expected a mapping");
            continue;
          }
          aggregate::StatsdMapping mapping;
          r.String(m, "match", path, mapping.match);
          r.String(m, "name", path, mapping.name);
          if (mapping.match.empty()) r.Fail(m, path + ".match", "is required");
          if (mapping.name.empty()) r.Fail(m, path + ".name", "is required");
          const auto stars =
              static_cast<std::size_t>(std::count(mapping.match.begin(), mapping.match.end(), '*'));
          CheckCaptures(r, m["name"], path + ".name", mapping.name, stars);
          const YAML::Node labels = m["labels"];
          if (labels && !labels.IsMap()) {
            r.Fail(labels, path + ".labels", "expected a mapping of label to value");
          } else if (labels) {
            for (const auto& kv : labels) {
              const std::string label = kv.first.as<std::string>("");
              const std::string field = path + ".labels." + label;
              if (!detail::IsLabelName(label) || detail::IsReservedLabelName(label)) {
                r.Fail(kv.first, field,
                       "expected a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting "
                       "with __, not le or quantile)");
                continue;
              }
              if (!kv.second.IsScalar()) {
                r.Fail(kv.second, field, "expected a string value, got " + Reader::Text(kv.second));
                continue;
              }
              CheckCaptures(r, kv.second, field, kv.second.Scalar(), stars);
              mapping.labels.emplace_back(label, kv.second.Scalar());
            }
          }
          agg.statsd_mappings.push_back(std::move(mapping));
        }
      }
    }

    ReadStatsdPush(r, root["statsd_push"], config);

    const YAML::Node prom = root["prometheus"];
    if (r.Map(prom, "prometheus", {"enabled", "address", "port", "basic_auth"})) {
      r.Bool(prom, "enabled", "prometheus", config.prometheus.enabled);
      const YAML::Node auth = prom["basic_auth"];
      if (r.Map(auth, "prometheus.basic_auth", {"username", "password"})) {
        r.String(auth, "username", "prometheus.basic_auth", config.prometheus.username);
        r.String(auth, "password", "prometheus.basic_auth", config.prometheus.password);
        if (config.prometheus.username.empty() || config.prometheus.password.empty()) {
          r.Fail(auth, "prometheus.basic_auth", "needs both username and password");
        }
      }
      r.String(prom, "address", "prometheus", config.prometheus.address);
      r.Unsigned(prom, "port", "prometheus", config.prometheus.port, 0, 65535);
    }

    const YAML::Node logging = root["logging"];
    if (r.Map(logging, "logging", {"level", "print_events"})) {
      std::string level = "info";
      r.String(logging, "level", "logging", level);
      if (!log::ParseLevel(level, config.logging.level)) {
        r.Fail(logging["level"], "logging.level",
               "expected one of debug, info, warn, error, got \"" + level + "\"");
      }
      r.Bool(logging, "print_events", "logging", config.logging.print_events);
    }
  }
  if (!r.errors().empty()) {
    std::string message;
    for (const auto& e : r.errors()) message += (message.empty() ? "" : "\n") + e;
    return Error{"config.invalid", message};
  }
  return config;
}

Expected<Config> LoadConfigFile(const std::string& path) {
  auto text = ReadBoundedFile(path, kMaxConfigFileBytes, "config.read", "configuration file");
  if (!text) return text.error();
  return ParseConfig(*text, path);
}

std::vector<std::string> CatalogPaths(const Config& config) {
  namespace fs = std::filesystem;
  const fs::path base = fs::path(config.source).parent_path();
  std::vector<std::string> out;
  if (config.catalogs.builtin) {
    out.push_back(config.catalogs.builtin_dir.empty() ? std::string(TELEMETRYD_BUILTIN_CATALOG_DIR)
                                                      : config.catalogs.builtin_dir);
  }
  for (const auto& p : config.catalogs.paths) out.push_back(p);
  for (auto& p : out) {
    if (!p.empty() && fs::path(p).is_relative()) p = (base / p).lexically_normal().string();
  }
  return out;
}

std::string DumpConfig(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "listeners" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "workers" << YAML::Value << config.ingest.workers;
  for (const auto protocol : {ingest::Protocol::kNative, ingest::Protocol::kStatsd}) {
    out << YAML::Key << std::string(ingest::ProtocolName(protocol)) << YAML::Value
        << YAML::BeginMap;
    for (const auto transport : {ingest::Transport::kUdp, ingest::Transport::kTcp}) {
      out << YAML::Key << std::string(ingest::TransportName(transport)) << YAML::Value
          << YAML::BeginMap;
      const ingest::ListenerOptions* found = nullptr;
      for (const auto& lo : config.ingest.listeners) {
        if (lo.protocol == protocol && lo.transport == transport) found = &lo;
      }
      ingest::ListenerOptions lo;
      out << YAML::Key << "enabled" << YAML::Value << (found != nullptr);
      if (found != nullptr) {
        lo = *found;
        out << YAML::Key << "address" << YAML::Value << lo.address;
        out << YAML::Key << "port" << YAML::Value << lo.port;
        if (transport == ingest::Transport::kUdp) {
          out << YAML::Key << "receive_buffer_bytes" << YAML::Value << lo.receive_buffer_bytes;
          out << YAML::Key << "batch" << YAML::Value << lo.batch;
        } else {
          out << YAML::Key << "max_frame_bytes" << YAML::Value << lo.max_frame_bytes;
          out << YAML::Key << "max_connections" << YAML::Value << lo.max_connections;
          out << YAML::Key << "idle_timeout_ms" << YAML::Value << lo.idle_timeout.count();
        }
      }
      out << YAML::EndMap;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  out << YAML::Key << "catalogs" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "builtin" << YAML::Value << config.catalogs.builtin;
  out << YAML::Key << "builtin_dir" << YAML::Value
      << (config.catalogs.builtin_dir.empty() ? std::string(TELEMETRYD_BUILTIN_CATALOG_DIR)
                                              : config.catalogs.builtin_dir);
  out << YAML::Key << "paths" << YAML::Value << YAML::Flow << config.catalogs.paths;
  out << YAML::EndMap;
  const aggregate::EngineOptions& agg = config.aggregation;
  out << YAML::Key << "aggregation" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max_series_per_metric" << YAML::Value << agg.max_series_per_metric;
  out << YAML::Key << "max_series_total" << YAML::Value << agg.max_series_total;
  out << YAML::Key << "series_ttl_seconds" << YAML::Value << agg.series_ttl.count() / 1000;
  out << YAML::Key << "unknown_events" << YAML::Value
      << (agg.unknown_events == aggregate::UnknownEventPolicy::kDrop ? "drop" : "count_by_name");
  out << YAML::Key << "unknown_event_names_max" << YAML::Value << agg.unknown_event_names_max;
  out << YAML::Key << "max_open_spans" << YAML::Value << agg.max_open_spans;
  out << YAML::Key << "span_max_age_seconds" << YAML::Value << agg.span_max_age.count() / 1000;
  out << YAML::Key << "summary_window_seconds" << YAML::Value << agg.summary_window.count() / 1000;
  out << YAML::Key << "summary_accuracy" << YAML::Value << agg.summary_accuracy;
  out << YAML::EndMap;
  out << YAML::Key << "statsd" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << agg.statsd_enabled;
  out << YAML::Key << "max_metrics" << YAML::Value << agg.statsd_max_metrics;
  out << YAML::Key << "timer_buckets" << YAML::Value << YAML::Flow << agg.statsd_buckets;
  out << YAML::Key << "mappings" << YAML::Value << YAML::BeginSeq;
  for (const auto& m : agg.statsd_mappings) {
    out << YAML::BeginMap << YAML::Key << "match" << YAML::Value << m.match;
    out << YAML::Key << "name" << YAML::Value << m.name;
    out << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
    for (const auto& [k, v] : m.labels) out << YAML::Key << k << YAML::Value << v;
    out << YAML::EndMap << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  const StatsdPushOptions& push = config.statsd_push;
  out << YAML::Key << "statsd_push" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << push.enabled;
  out << YAML::Key << "interval_seconds" << YAML::Value << push.interval.count();
  out << YAML::Key << "mtu" << YAML::Value << push.mtu;
  out << YAML::Key << "format" << YAML::Value
      << (push.format == StatsdFormat::kDogstatsd ? "dogstatsd" : "standard");
  if (!push.prefix.empty()) out << YAML::Key << "prefix" << YAML::Value << push.prefix;
  out << YAML::Key << "global_tags" << YAML::Value << YAML::BeginMap;
  for (const auto& [k, v] : push.global_tags) out << YAML::Key << k << YAML::Value << v;
  out << YAML::EndMap;
  out << YAML::Key << "sum_as" << YAML::Value
      << (push.sum_as == StatsdSumAs::kGauge ? "gauge" : "counter");
  out << YAML::Key << "destinations" << YAML::Value << YAML::BeginSeq;
  for (const auto& d : push.destinations) out << d.text;
  out << YAML::EndSeq << YAML::EndMap;
  out << YAML::Key << "prometheus" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "enabled" << YAML::Value << config.prometheus.enabled;
  out << YAML::Key << "address" << YAML::Value << config.prometheus.address;
  out << YAML::Key << "port" << YAML::Value << config.prometheus.port;
  if (!config.prometheus.username.empty()) {
    out << YAML::Key << "basic_auth" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "username" << YAML::Value << config.prometheus.username;
    out << YAML::Key << "password" << YAML::Value << config.prometheus.password;
    out << YAML::EndMap;
  }
  out << YAML::EndMap;
  static constexpr const char* kLevels[] = {"debug", "info", "warn", "error"};
  out << YAML::Key << "logging" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "level" << YAML::Value << kLevels[static_cast<int>(config.logging.level)];
  out << YAML::Key << "print_events" << YAML::Value << config.logging.print_events;
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace telemetryd::config
