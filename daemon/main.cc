// telemetryd: receives telemetry events and StatsD lines, counts them and exposes the counts.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <malloc.h>
#include <systemd/sd-daemon.h>
#include <array>

#include <boost/asio.hpp>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "telemetryd/aggregate/engine.h"
#include "telemetryd/common/log.h"
#include "telemetryd/config/catalog_loader.h"
#include "telemetryd/config/config.h"
#include "telemetryd/exporters/prometheus_endpoint.h"
#include "telemetryd/exporters/prometheus_metrics.h"
#include "telemetryd/exporters/self_metrics.h"
#include "telemetryd/exporters/statsd_push.h"
#include "telemetryd/ingest/ingest_server.h"
#include "telemetryd/ingest/sinks.h"

#ifndef TELEMETRYD_VERSION
#define TELEMETRYD_VERSION "unknown"
#endif
#ifndef TELEMETRYD_DEFAULT_CONFIG
#define TELEMETRYD_DEFAULT_CONFIG "/etc/telemetryd/telemetryd.yaml"
#endif

namespace {

using namespace telemetryd;

constexpr const char* kUsage =
    "Usage: telemetryd [--config FILE] [--check-config] [--print-config] [--version] [--help]\n"
    "\n"
    "  --config FILE    configuration file (default " TELEMETRYD_DEFAULT_CONFIG
    ")\n"
    "  --check-config   validate the configuration, print problems, exit 0 if valid, 1 if not\n"
    "  --print-config   print the effective configuration (every default written out)\n"
    "  --version        print the version\n"
    "  --help           print this help\n";

// The sink converts StatsD types by value: the two enums must stay in step.
static_assert(static_cast<int>(ingest::StatsdType::kCounter) ==
                  static_cast<int>(aggregate::StatsdKind::kCounter) &&
              static_cast<int>(ingest::StatsdType::kGauge) ==
                  static_cast<int>(aggregate::StatsdKind::kGauge) &&
              static_cast<int>(ingest::StatsdType::kTimer) ==
                  static_cast<int>(aggregate::StatsdKind::kTimer) &&
              static_cast<int>(ingest::StatsdType::kHistogram) ==
                  static_cast<int>(aggregate::StatsdKind::kHistogram) &&
              static_cast<int>(ingest::StatsdType::kDistribution) ==
                  static_cast<int>(aggregate::StatsdKind::kDistribution) &&
              static_cast<int>(ingest::StatsdType::kSet) ==
                  static_cast<int>(aggregate::StatsdKind::kSet));

// What each worker hands its input to: its aggregation shard, and stderr when asked to print.
class AggregatingSink final : public ingest::EventSink {
 public:
  AggregatingSink(aggregate::Shard& shard, bool print)
      : shard_(shard), debug_(stderr), print_(print) {}
  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    shard_.Record(frame, event);
    if (print_) debug_.OnEvent(frame, event);
  }
  void OnStatsd(const ingest::StatsdSample& sample) noexcept override {
    std::size_t n = 0;
    for (const auto& tag : sample.tags) {
      if (n == tags_.size()) break;
      tags_[n++] = aggregate::StatsdTagView{tag.key, tag.value};
    }
    shard_.RecordStatsd(aggregate::StatsdInput{
        sample.name, static_cast<aggregate::StatsdKind>(sample.type), sample.value,
        sample.set_member, sample.gauge_delta, sample.sample_rate,
        std::span<const aggregate::StatsdTagView>(tags_.data(), n)});
    if (print_) debug_.OnStatsd(sample);
  }

 private:
  aggregate::Shard& shard_;
  ingest::DebugSink debug_;
  bool print_;
  std::array<aggregate::StatsdTagView, ingest::kStatsdMaxTags> tags_{};
};

// Loads the catalogs the config names and compiles them. Errors say file, line and field.
Expected<std::unique_ptr<aggregate::Engine>> BuildEngine(const config::Config& cfg) {
  auto catalogs = config::LoadCatalogs(config::CatalogPaths(cfg));
  if (!catalogs) return catalogs.error();
  auto engine = aggregate::Engine::Create(*catalogs, cfg.aggregation);
  if (!engine) return engine.error();
  if (auto names = exporters::CheckNames((*engine)->metrics()); !names) return names.error();
  return engine;
}

// Aggregation self-metrics, summed over the shards.
void AddAggregationMetrics(const aggregate::Engine& engine,
                           const std::vector<std::unique_ptr<aggregate::Shard>>& shards,
                           std::vector<prometheus::MetricFamily>& out) {
  using prometheus::MetricType;
  auto& dropped = exporters::AddFamily(out, "telemetryd_aggregate_dropped_total",
                                       "Events (per metric) and samples not aggregated, by reason.",
                                       MetricType::Counter);
  for (std::size_t r = 0; r < aggregate::kDropReasonCount; ++r) {
    double total = 0;
    for (const auto& s : shards)
      total += static_cast<double>(s->dropped(static_cast<aggregate::DropReason>(r)));
    exporters::AddSample(
        dropped,
        {{"reason", std::string(aggregate::DropReasonName(static_cast<aggregate::DropReason>(r)))}},
        total);
  }
  double updates = 0;
  double filtered = 0;
  double open_spans = 0;
  for (const auto& s : shards) {
    updates += static_cast<double>(s->recorded());
    filtered += static_cast<double>(s->filtered());
    open_spans += static_cast<double>(s->open_spans());
  }
  exporters::AddSample(
      exporters::AddFamily(out, "telemetryd_aggregate_updates_total",
                           "Metric updates made from events and samples.", MetricType::Counter),
      {}, updates);
  exporters::AddSample(
      exporters::AddFamily(out, "telemetryd_aggregate_filtered_total",
                           "Events skipped by a metric's keep/drop filters.", MetricType::Counter),
      {}, filtered);
  exporters::AddSample(
      exporters::AddFamily(out, "telemetryd_spans_open", "Spans started and not yet stopped.",
                           MetricType::Gauge),
      {}, open_spans);
  const auto counters = engine.counters();
  exporters::AddSample(exporters::AddFamily(out, "telemetryd_series", "Series held, all metrics.",
                                            MetricType::Gauge),
                       {}, static_cast<double>(counters.series));
  auto& per_metric = exporters::AddFamily(out, "telemetryd_metric_series",
                                          "Series held per metric.", MetricType::Gauge);
  for (const auto& [name, n] : counters.series_per_metric) {
    if (n > 0) exporters::AddSample(per_metric, {{"metric", name}}, static_cast<double>(n));
  }
  exporters::AddSample(exporters::AddFamily(out, "telemetryd_cardinality_overflow_total",
                                            "Updates dropped because a series limit was reached.",
                                            MetricType::Counter),
                       {}, static_cast<double>(engine.overflow_total()));
  auto& unknown =
      exporters::AddFamily(out, "telemetryd_unknown_events_total",
                           "Events no catalog declares, by name (capped; the rest is \"(other)\").",
                           MetricType::Counter);
  for (const auto& [name, n] : counters.unknown_events) {
    exporters::AddSample(unknown, {{"event", exporters::LabelValue(name)}}, static_cast<double>(n));
  }
}

int Run(const config::Config& cfg) {
  log::SetLevel(cfg.logging.level);
  auto built = BuildEngine(cfg);
  if (!built) {
    log::Write(log::Level::kError, built.error().message);
    return 1;
  }
  std::unique_ptr<aggregate::Engine> engine = std::move(*built);
  std::vector<std::unique_ptr<aggregate::Shard>> shards;
  std::vector<std::unique_ptr<AggregatingSink>> sinks;
  std::vector<ingest::EventSink*> sink_ptrs;
  for (std::size_t i = 0; i < cfg.ingest.workers; ++i) {
    shards.push_back(engine->NewShard());
    sinks.push_back(std::make_unique<AggregatingSink>(*shards.back(), cfg.logging.print_events));
    sink_ptrs.push_back(sinks.back().get());
  }
  log::Write(log::Level::kInfo,
             "aggregating " + std::to_string(engine->metrics().size()) + " metrics from " +
                 std::to_string(config::CatalogPaths(cfg).size()) + " catalog location(s)");
  auto server = ingest::IngestServer::Start(cfg.ingest, sink_ptrs);
  if (!server) {
    log::Write(log::Level::kError, server.error().message);
    return 1;
  }

  // Moves every shard's updates into the engine's store, each on its own worker thread.
  auto flush = [&] {
    (*server)->RunOnWorkers([&shards](std::size_t worker) { shards[worker]->Flush(); },
                            std::chrono::seconds(2));
  };
  std::unique_ptr<exporters::StatsdPusher> pusher;
  if (cfg.statsd_push.enabled) {
    pusher = std::make_unique<exporters::StatsdPusher>(cfg.statsd_push);
    log::Write(log::Level::kInfo, "statsd push to " +
                                      std::to_string(cfg.statsd_push.destinations.size()) +
                                      " destination(s) every " +
                                      std::to_string(cfg.statsd_push.interval.count()) + " s");
  }
  std::unique_ptr<exporters::PrometheusEndpoint> endpoint;
  std::shared_ptr<exporters::SelfMetrics> self_metrics;
  std::shared_ptr<exporters::AggregateCollector> aggregated;
  if (cfg.prometheus.enabled) {
    auto started =
        exporters::PrometheusEndpoint::Start(cfg.prometheus.address, cfg.prometheus.port);
    if (!started) {
      log::Write(log::Level::kError, started.error().message);
      return 1;
    }
    endpoint = std::move(*started);
    if (!cfg.prometheus.username.empty()) {
      endpoint->RequireBasicAuth(cfg.prometheus.username, cfg.prometheus.password);
    }
    self_metrics = std::make_shared<exporters::SelfMetrics>(
        **server, [&](std::vector<prometheus::MetricFamily>& out) {
          AddAggregationMetrics(*engine, shards, out);
          if (pusher) exporters::AddStatsdPushMetrics(*pusher, out);
          if (aggregated) {
            exporters::AddSample(
                exporters::AddFamily(
                    out, "telemetryd_scrape_duration_seconds",
                    "Time the previous scrape took to flush, snapshot and convert.",
                    prometheus::MetricType::Gauge),
                {}, aggregated->last_duration_seconds());
            exporters::AddSample(
                exporters::AddFamily(out, "telemetryd_exposition_name_clashes",
                                     "Metrics left out of the last scrape: their name clashed.",
                                     prometheus::MetricType::Gauge),
                {}, static_cast<double>(aggregated->clashes()));
          }
        });
    aggregated = std::make_shared<exporters::AggregateCollector>([&] {
      flush();
      return engine->Collect();
    });
    endpoint->Register(aggregated);
    endpoint->Register(self_metrics);
    log::Write(log::Level::kInfo, "prometheus endpoint on " + cfg.prometheus.address + ":" +
                                      std::to_string(endpoint->port()) + "/metrics");
  }

  boost::asio::io_context main_io;
  // Periodic flush: bounds shard memory, expires idle series and old spans between scrapes.
  boost::asio::steady_timer flush_timer(main_io);
  std::function<void()> schedule_flush = [&] {
    flush_timer.expires_after(std::chrono::seconds(1));
    flush_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      flush();
      schedule_flush();
    });
  };
  schedule_flush();
  // StatsD push: the deltas since the previous push, every interval.
  boost::asio::steady_timer push_timer(main_io);
  std::function<void()> schedule_push = [&] {
    push_timer.expires_after(cfg.statsd_push.interval);
    push_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      flush();
      pusher->Push(engine->TakeDeltas());
      schedule_push();
    });
  };
  if (pusher) schedule_push();
  // systemd watchdog: WATCHDOG=1 only while every ingest worker answers, at half the interval.
  boost::asio::steady_timer watchdog_timer(main_io);
  std::uint64_t watchdog_usec = 0;
  std::function<void()> schedule_watchdog = [&] {
    watchdog_timer.expires_after(std::chrono::microseconds(watchdog_usec / 2));
    watchdog_timer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      const auto deadline = std::chrono::microseconds(watchdog_usec / 4);
      if ((*server)->RunOnWorkers(
              [](std::size_t) {},
              std::chrono::duration_cast<std::chrono::milliseconds>(deadline))) {
        sd_notify(0, "WATCHDOG=1");
      } else {
        log::Write(log::Level::kWarn, "watchdog: an ingest worker did not answer in time");
      }
      schedule_watchdog();
    });
  };
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec >= 4000) schedule_watchdog();

  boost::asio::signal_set signals(main_io, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
          log::Write(log::Level::kWarn, "SIGHUP: configuration reload is not supported yet");
          signals.async_wait(on_signal);
          return;
        }
        log::Write(log::Level::kInfo, std::string("stopping on ") + ::strsignal(signo));
        sd_notify(0, "STOPPING=1");
        watchdog_timer.cancel();
        flush_timer.cancel();
        push_timer.cancel();
        (*server)->Stop();
        for (auto& shard : shards) shard->Flush();  // the workers are gone: safe from here
        // The final push: what came in since the previous one.
        if (pusher) pusher->Push(engine->TakeDeltas());
        main_io.stop();
      };
  signals.async_wait(on_signal);

  log::Write(log::Level::kInfo, "telemetryd " TELEMETRYD_VERSION " ready");
  sd_notify(0, "READY=1\nSTATUS=listening");
  main_io.run();
  endpoint.reset();
  log::Write(log::Level::kInfo, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Every scrape builds and frees tens of megabytes. Keep freed memory in the process instead of
  // returning it to the kernel and faulting it in again next time: that was most of a large
  // scrape's cost (bench/README.md).
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  std::string config_path = TELEMETRYD_DEFAULT_CONFIG;
  bool check = false;
  bool print = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      config_path = arg.substr(9);
    } else if (arg == "--check-config") {
      check = true;
    } else if (arg == "--print-config") {
      print = true;
    } else if (arg == "--version") {
      std::cout << "telemetryd " TELEMETRYD_VERSION "\n";
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    } else {
      std::cerr << "telemetryd: unknown argument \"" << arg << "\"\n" << kUsage;
      return 2;
    }
  }
  try {
    const auto cfg = config::LoadConfigFile(config_path);
    if (!cfg) {
      std::cerr << cfg.error().message << "\n";
      return 1;
    }
    if (check) {
      const auto engine = BuildEngine(*cfg);
      if (!engine) {
        std::cerr << engine.error().message << "\n";
        return 1;
      }
      std::cout << config_path << ": configuration is valid (" << (*engine)->metrics().size()
                << " metrics from " << config::CatalogPaths(*cfg).size()
                << " catalog location(s))\n";
      return 0;
    }
    if (print) {
      std::cout << config::DumpConfig(*cfg);
      return 0;
    }
    return Run(*cfg);
  } catch (const std::exception& e) {
    log::Write(log::Level::kError, std::string("fatal: ") + e.what());
    return 1;
  }
}
