#include "telemetryd/exporters/statsd_push.h"

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <atomic>
#include <boost/asio.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>

#include "telemetryd/common/log.h"
#include "telemetryd/exporters/self_metrics.h"

namespace telemetryd::exporters {
namespace {

namespace asio = boost::asio;
using aggregate::MetricType;
using config::StatsdFormat;
using config::StatsdSumAs;

// Bytes that end or split a StatsD name: the value and type separators, the sample rate and tag
// markers, and whitespace or control characters (a newline ends the line).
bool Unsafe(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u <= ' ' || u == 0x7F || c == ':' || c == '|' || c == '@' || c == '#';
}

std::string Replace(std::string_view text, bool (*bad)(char)) {
  std::string out(text);
  for (char& c : out) {
    if (bad(c)) c = '_';
  }
  return out;
}

// Standard format: a tag becomes one name segment "key_value", so dots go too.
bool UnsafeSegment(char c) { return Unsafe(c) || c == '.'; }
// DogStatsD: ',' separates tags and the key ends at the first ':'.
bool UnsafeTagKey(char c) { return Unsafe(c) || c == ','; }
bool UnsafeTagValue(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u <= ' ' || u == 0x7F || c == '|' || c == ',' || c == '#';
}

// Shortest text that reads back as the same double. Returns false for NaN and infinities.
bool AppendNumber(std::string& out, double value) {
  if (!std::isfinite(value)) return false;
  if (value == 0) value = 0;  // "-0" would be read as a gauge decrement
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, r.ptr);
  return true;
}

// ".p50", ".p99", ".p99_9" for the quantiles 0.5, 0.99, 0.999.
std::string QuantileSuffix(double q) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ".p%.6g", q * 100);
  std::string out = buf;
  for (std::size_t i = 2; i < out.size(); ++i) {
    if (out[i] == '.' || out[i] == '-' || out[i] == '+') out[i] = '_';
  }
  return out;
}

// Builds the lines of one series: the name and tag text are computed once and shared by the
// series' lines (a distribution has several).
class SeriesWriter {
 public:
  SeriesWriter(const StatsdPushOptions& options, std::vector<std::string>& out)
      : options_(options), out_(out) {}

  void Start(std::string_view metric, std::span<const aggregate::LabelRef> labels) {
    name_.clear();
    if (!options_.prefix.empty()) {
      name_ = options_.prefix;
      if (name_.back() != '.') name_.push_back('.');
    }
    name_ += metric;
    name_ = StatsdName(name_);
    tags_.clear();
    const bool dogstatsd = options_.format == StatsdFormat::kDogstatsd;
    auto add = [&](std::string_view key, std::string_view value) {
      if (dogstatsd) {
        tags_ += tags_.empty() ? "|#" : ",";
        tags_ += Replace(key, UnsafeTagKey);
        tags_.push_back(':');
        tags_ += Replace(value, UnsafeTagValue);
      } else {
        name_.push_back('.');
        name_ += Replace(key, UnsafeSegment);
        name_.push_back('_');
        name_ += Replace(value, UnsafeSegment);
      }
    };
    for (const auto& [key, value] : labels) add(key, value);
    // A series' own label is more specific than a global tag of the same key.
    for (const auto& [key, value] : options_.global_tags) {
      bool shadowed = false;
      for (const auto& label : labels) shadowed = shadowed || label.name == key;
      if (!shadowed) add(key, value);
    }
  }

  // "<name><suffix>:<value>|<type><tags>"; a negative gauge is set through zero.
  void Line(std::string_view suffix, double value, std::string_view type) {
    std::string number;
    if (!AppendNumber(number, value)) return;
    std::string line;
    line.reserve(2 * (name_.size() + suffix.size() + tags_.size() + number.size() + 8));
    if (type == "g" && value < 0) {
      line.append(name_).append(suffix).append(":0|g").append(tags_).push_back('\n');
    }
    line.append(name_).append(suffix).append(":").append(number);
    line.append("|").append(type).append(tags_);
    out_.push_back(std::move(line));
  }

 private:
  const StatsdPushOptions& options_;
  std::vector<std::string>& out_;
  std::string name_;
  std::string tags_;
};

// Turns visited series into lines.
class LineFormatter final : public aggregate::SnapshotVisitor {
 public:
  LineFormatter(const StatsdPushOptions& options, std::vector<std::string>& out)
      : writer_(options, out), sum_type_(options.sum_as == StatsdSumAs::kGauge ? "g" : "c") {}

  // Lines stand alone: a StatsD name's series need not come together.
  [[nodiscard]] bool GroupsByName() const override { return false; }
  void Metric(const aggregate::MetricInfo& info, std::size_t) override { info_ = &info; }

  void Series(std::span<const aggregate::LabelRef> labels,
              const aggregate::SeriesPoint& p) override {
    writer_.Start(info_->name, labels);
    switch (info_->type) {
      case MetricType::kCounter:
        writer_.Line("", p.value, "c");
        break;
      case MetricType::kSum:
        writer_.Line("", p.value, sum_type_);
        break;
      case MetricType::kLastValue:  // also span gauges, StatsD gauges and StatsD set sizes
        writer_.Line("", p.value, "g");
        break;
      case MetricType::kDistribution:
      case MetricType::kSummary:
        // The engine keeps bucket counts, not samples: what can be sent exactly is the count and
        // the sum of the interval's observations, plus a summary's quantiles.
        writer_.Line(".count", static_cast<double>(p.count), "c");
        writer_.Line(".sum", p.sum, sum_type_);
        for (std::size_t i = 0; i < p.quantile_values.size() && i < info_->quantiles.size(); ++i) {
          writer_.Line(QuantileSuffix(info_->quantiles[i]), p.quantile_values[i], "g");
        }
        break;
    }
  }

 private:
  SeriesWriter writer_;
  std::string_view sum_type_;
  const aggregate::MetricInfo* info_ = nullptr;
};

}  // namespace

std::string StatsdName(std::string_view text) { return Replace(text, Unsafe); }

std::vector<std::string> FormatLines(const aggregate::Snapshot& deltas,
                                     const StatsdPushOptions& options) {
  std::vector<std::string> out;
  LineFormatter formatter(options, out);
  deltas.Visit(formatter);
  return out;
}

std::vector<std::string> FormatLines(const std::vector<aggregate::MetricPoints>& deltas,
                                     const StatsdPushOptions& options) {
  std::vector<std::string> out;
  LineFormatter formatter(options, out);
  aggregate::VisitPoints(deltas, formatter);
  return out;
}

std::vector<std::string> Batch(const std::vector<std::string>& lines, std::size_t mtu) {
  std::vector<std::string> packets;
  std::string current;
  for (const auto& line : lines) {
    if (line.empty()) continue;
    if (!current.empty() && current.size() + 1 + line.size() <= mtu) {
      current.push_back('\n');
      current += line;
      continue;
    }
    if (!current.empty()) packets.push_back(std::move(current));
    current = line;  // alone in its datagram if it is longer than the MTU
  }
  if (!current.empty()) packets.push_back(std::move(current));
  return packets;
}

struct StatsdPusher::Io {
  asio::io_context context;
};

struct StatsdPusher::Destination {
  explicit Destination(config::StatsdDestination w) : where(std::move(w)) {}

  [[nodiscard]] bool open() const { return udp.has_value() || local.has_value(); }
  void Close() {
    boost::system::error_code ignored;
    if (udp) udp->close(ignored);
    if (local) local->close(ignored);
    udp.reset();
    local.reset();
  }

  config::StatsdDestination where;
  std::optional<asio::ip::udp::socket> udp;
  std::optional<asio::local::datagram_protocol::socket> local;
  bool failing = false;  // the previous push failed: log when it works again
  // Written by the pushing thread, read by scrapes.
  std::atomic<std::uint64_t> flushes_ok{0};
  std::atomic<std::uint64_t> flushes_failed{0};
  std::atomic<std::uint64_t> packets_sent{0};
  std::atomic<std::uint64_t> packets_failed{0};
  log::RateLimitedLog log{log::Level::kWarn};
};

namespace {

// Opens and connects the destination's socket; returns what went wrong, or an empty string.
// A connected UDP socket learns of an unreachable port (ECONNREFUSED) from the kernel.
std::string Open(asio::io_context& io, std::optional<asio::ip::udp::socket>& udp,
                 std::optional<asio::local::datagram_protocol::socket>& local,
                 const config::StatsdDestination& where) {
  boost::system::error_code ec;
  if (where.kind == config::StatsdDestination::Kind::kUnix) {
    asio::local::datagram_protocol::socket s(io);
    s.open(asio::local::datagram_protocol(), ec);
    if (!ec) s.non_blocking(true, ec);
    if (!ec) s.connect(asio::local::datagram_protocol::endpoint(where.path), ec);
    if (ec) return "cannot connect to " + where.path + ": " + ec.message();
    local.emplace(std::move(s));
    return {};
  }
  asio::ip::udp::resolver resolver(io);
  const auto results = resolver.resolve(where.host, std::to_string(where.port),
                                        asio::ip::resolver_base::numeric_service, ec);
  if (ec) return "cannot resolve " + where.host + ": " + ec.message();
  // IPv4 first: StatsD servers commonly listen on IPv4 only, while "localhost" resolves to ::1
  // first.
  for (const bool v4 : {true, false}) {
    for (const auto& entry : results) {
      const auto endpoint = entry.endpoint();
      if (endpoint.address().is_v4() != v4) continue;
      asio::ip::udp::socket s(io);
      s.open(endpoint.protocol(), ec);
      if (!ec) s.non_blocking(true, ec);
      if (!ec) s.connect(endpoint, ec);
      if (ec) continue;
      udp.emplace(std::move(s));
      return {};
    }
  }
  return "cannot connect to " + where.host + ": " + (ec ? ec.message() : std::string("no address"));
}

}  // namespace

StatsdPusher::StatsdPusher(StatsdPushOptions options)
    : options_(std::move(options)), io_(std::make_unique<Io>()) {
  for (const auto& d : options_.destinations) {
    destinations_.push_back(std::make_unique<Destination>(d));
  }
}

StatsdPusher::~StatsdPusher() {
  for (auto& d : destinations_) d->Close();
}

void StatsdPusher::Push(const aggregate::Snapshot& deltas) noexcept {
  Push([&] { return FormatLines(deltas, options_); });
}

void StatsdPusher::Push(const std::vector<aggregate::MetricPoints>& deltas) noexcept {
  Push([&] { return FormatLines(deltas, options_); });
}

void StatsdPusher::Push(const std::function<std::vector<std::string>()>& format) noexcept {
  try {
    const auto lines = format();
    if (lines.empty()) return;
    const auto packets = Batch(lines, options_.mtu);
    for (auto& d : destinations_) Send(*d, packets);
  } catch (const std::exception& e) {
    log::Write(log::Level::kError, std::string("statsd push failed: ") + e.what());
  } catch (...) {
    log::Write(log::Level::kError, "statsd push failed");
  }
}

void StatsdPusher::Send(Destination& d, const std::vector<std::string>& packets) {
  std::string error;
  if (!d.open()) error = Open(io_->context, d.udp, d.local, d.where);
  const bool opened = error.empty();
  std::size_t sent = 0;
  std::size_t failed = opened ? 0 : packets.size();
  for (std::size_t i = 0; opened && i < packets.size(); ++i) {
    boost::system::error_code ec;
    const auto buffer = asio::buffer(packets[i]);
    if (d.udp) {
      d.udp->send(buffer, 0, ec);
    } else {
      d.local->send(buffer, 0, ec);
    }
    if (!ec) {
      ++sent;
      continue;
    }
    ++failed;
    if (ec == asio::error::message_size) {
      // Only this datagram is too large for the transport: the others can still go.
      if (error.empty()) {
        error = "a datagram of " + std::to_string(packets[i].size()) + " bytes: " + ec.message();
      }
      continue;
    }
    // The rest would most likely fail the same way; a new socket is opened next push.
    failed += packets.size() - i - 1;
    error = "send failed: " + ec.message();
    d.Close();
    break;
  }
  d.packets_sent.fetch_add(sent, std::memory_order_relaxed);
  d.packets_failed.fetch_add(failed, std::memory_order_relaxed);
  if (error.empty()) {
    d.flushes_ok.fetch_add(1, std::memory_order_relaxed);
    if (d.failing) {
      log::Write(log::Level::kInfo, "statsd push to " + d.where.text + ": sending again");
    }
    d.failing = false;
    return;
  }
  d.flushes_failed.fetch_add(1, std::memory_order_relaxed);
  d.failing = true;
  d.log("statsd push to " + d.where.text + ": " + error + "; " + std::to_string(failed) + " of " +
        std::to_string(packets.size()) + " datagrams not sent, trying again next flush");
}

std::vector<StatsdDestinationCounters> StatsdPusher::counters() const {
  std::vector<StatsdDestinationCounters> out;
  out.reserve(destinations_.size());
  for (const auto& d : destinations_) {
    StatsdDestinationCounters c;
    c.destination = d->where.text;
    c.flushes_ok = d->flushes_ok.load(std::memory_order_relaxed);
    c.flushes_failed = d->flushes_failed.load(std::memory_order_relaxed);
    c.packets_sent = d->packets_sent.load(std::memory_order_relaxed);
    c.packets_failed = d->packets_failed.load(std::memory_order_relaxed);
    out.push_back(std::move(c));
  }
  return out;
}

void AddStatsdPushMetrics(const StatsdPusher& pusher, std::vector<prometheus::MetricFamily>& out) {
  const auto counters = pusher.counters();
  // Fill each family before adding the next: AddFamily's reference dies with the next push_back.
  auto& flushes = AddFamily(out, "telemetryd_statsd_flushes_total",
                            "StatsD pushes with something to send, by destination and outcome "
                            "(failed: at least one datagram was not sent).",
                            prometheus::MetricType::Counter);
  for (const auto& c : counters) {
    AddSample(flushes, {{"destination", c.destination}, {"outcome", "ok"}},
              static_cast<double>(c.flushes_ok));
    AddSample(flushes, {{"destination", c.destination}, {"outcome", "failed"}},
              static_cast<double>(c.flushes_failed));
  }
  auto& packets =
      AddFamily(out, "telemetryd_statsd_packets_total",
                "StatsD datagrams pushed, by destination and outcome (failed: not handed to the "
                "kernel).",
                prometheus::MetricType::Counter);
  for (const auto& c : counters) {
    AddSample(packets, {{"destination", c.destination}, {"outcome", "sent"}},
              static_cast<double>(c.packets_sent));
    AddSample(packets, {{"destination", c.destination}, {"outcome", "failed"}},
              static_cast<double>(c.packets_failed));
  }
}

}  // namespace telemetryd::exporters
