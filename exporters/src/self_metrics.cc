#include "telemetryd/exporters/self_metrics.h"

#include "telemetryd/common/log.h"

namespace telemetryd::exporters {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

#ifndef TELEMETRYD_VERSION
#define TELEMETRYD_VERSION "unknown"
#endif

MetricFamily& AddFamily(std::vector<MetricFamily>& out, const std::string& name,
                        const std::string& help, MetricType type) {
  MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  out.push_back(std::move(family));
  return out.back();
}

void AddSample(MetricFamily& family, std::vector<ClientMetric::Label> labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  if (family.type == MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
}

SelfMetrics::SelfMetrics(const ingest::IngestServer& server,
                         std::function<void(std::vector<MetricFamily>&)> extra)
    : server_(server), extra_(std::move(extra)) {}

std::vector<MetricFamily> SelfMetrics::Collect() const {
  std::vector<MetricFamily> out;
  out.reserve(16);
  const auto listeners = server_.listeners();

  // Sums one counter of one listener over its workers.
  auto sum = [&](std::size_t l, auto&& field) {
    double total = 0;
    for (const auto& stats : listeners[l].stats) total += static_cast<double>(field(stats));
    return total;
  };
  auto per_listener = [&](const std::string& name, const std::string& help, MetricType type,
                          auto&& field, auto&& applies) {
    auto& family = AddFamily(out, name, help, type);
    for (std::size_t l = 0; l < listeners.size(); ++l) {
      if (!applies(listeners[l].options)) continue;
      AddSample(family, {{"listener", listeners[l].options.Name()}}, sum(l, field));
    }
  };
  auto all = [](const ingest::ListenerOptions&) { return true; };
  auto udp = [](const ingest::ListenerOptions& lo) {
    return lo.transport == ingest::Transport::kUdp;
  };
  auto tcp = [](const ingest::ListenerOptions& lo) {
    return lo.transport == ingest::Transport::kTcp;
  };
  auto native = [](const ingest::ListenerOptions& lo) {
    return lo.protocol == ingest::Protocol::kNative;
  };

  per_listener(
      "telemetryd_ingest_packets_total",
      "UDP datagrams, TCP native frames or TCP StatsD line runs received.", MetricType::Counter,
      [](const auto& s) { return s.packets.Get(); }, all);
  per_listener(
      "telemetryd_ingest_bytes_total", "Payload bytes received.", MetricType::Counter,
      [](const auto& s) { return s.bytes.Get(); }, all);
  per_listener(
      "telemetryd_ingest_events_total",
      "Events (native) or samples (StatsD) decoded and handed to aggregation.", MetricType::Counter,
      [](const auto& s) { return s.events.Get(); }, all);
  per_listener(
      "telemetryd_ingest_events_lost_total",
      "Native events lost with a damaged frame or event (see ..._rejected_total).",
      MetricType::Counter, [](const auto& s) { return s.events_lost.Get(); }, native);
  per_listener(
      "telemetryd_ingest_kernel_drops_total",
      "Datagrams the kernel dropped because a socket's receive buffer was full.",
      MetricType::Counter, [](const auto& s) { return s.kernel_drops.Get(); }, udp);
  per_listener(
      "telemetryd_ingest_truncated_datagrams_total",
      "Datagrams larger than the receive buffer, rejected.", MetricType::Counter,
      [](const auto& s) { return s.truncated_datagrams.Get(); }, udp);
  per_listener(
      "telemetryd_ingest_connections_open", "Open TCP connections.", MetricType::Gauge,
      [](const auto& s) { return s.connections_open.load(); }, tcp);

  auto& rejected = AddFamily(out, "telemetryd_ingest_rejected_total",
                             "Rejected input by listener and reason (docs/wire-format.md, "
                             "docs/statsd.md).",
                             MetricType::Counter);
  for (std::size_t l = 0; l < listeners.size(); ++l) {
    const bool is_native = listeners[l].options.protocol == ingest::Protocol::kNative;
    const std::size_t reasons = is_native ? wire::kDecodeErrorCount : ingest::kStatsdErrorCount;
    for (std::size_t r = 0; r < reasons; ++r) {
      const std::string reason(is_native
                                   ? wire::DecodeErrorName(static_cast<wire::DecodeError>(r))
                                   : ingest::StatsdErrorName(static_cast<ingest::StatsdError>(r)));
      AddSample(rejected, {{"listener", listeners[l].options.Name()}, {"reason", reason}},
                sum(l, [r](const auto& s) { return s.rejected[r].Get(); }));
    }
  }

  auto& connections = AddFamily(out, "telemetryd_ingest_connections_total",
                                "TCP connections by outcome.", MetricType::Counter);
  for (std::size_t l = 0; l < listeners.size(); ++l) {
    if (listeners[l].options.transport != ingest::Transport::kTcp) continue;
    const std::string name = listeners[l].options.Name();
    AddSample(connections, {{"listener", name}, {"outcome", "accepted"}},
              sum(l, [](const auto& s) { return s.connections_accepted.Get(); }));
    AddSample(connections, {{"listener", name}, {"outcome", "rejected_limit"}},
              sum(l, [](const auto& s) { return s.connections_rejected.Get(); }));
    AddSample(connections, {{"listener", name}, {"outcome", "closed_idle"}},
              sum(l, [](const auto& s) { return s.connections_closed_idle.Get(); }));
    AddSample(connections, {{"listener", name}, {"outcome", "closed_error"}},
              sum(l, [](const auto& s) { return s.connections_closed_error.Get(); }));
  }

  AddSample(AddFamily(out, "telemetryd_log_suppressed_total",
                      "Log lines suppressed by rate limiting.", MetricType::Counter),
            {}, static_cast<double>(log::SuppressedTotal()));
  AddSample(AddFamily(out, "telemetryd_build_info", "Build information.", MetricType::Gauge),
            {{"version", TELEMETRYD_VERSION}}, 1);
  if (extra_) extra_(out);
  return out;
}

}  // namespace telemetryd::exporters
