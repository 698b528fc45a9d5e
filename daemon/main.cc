// telemetryd: receives telemetry events and StatsD lines, counts them and exposes the counts.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <systemd/sd-daemon.h>
#include <array>
#include <atomic>
#include <chrono>

#include <boost/asio.hpp>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "aggregating_sink.h"
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

// Loads the catalogs the config names and compiles them. Errors say file, line and field.
Expected<std::unique_ptr<aggregate::Engine>> BuildEngine(const config::Config& cfg) {
  auto catalogs = config::LoadCatalogs(config::CatalogPaths(cfg));
  if (!catalogs) return catalogs.error();
  auto engine = aggregate::Engine::Create(*catalogs, cfg.aggregation);
  if (!engine) return engine.error();
  if (auto names = exporters::CheckNames((*engine)->metrics()); !names) return names.error();
  return engine;
}

// One configuration's aggregation: the engine and one shard per ingest worker. A reload replaces
// it as a whole. Shared with the tasks queued on the workers, which may outlive it.
struct Generation {
  std::unique_ptr<aggregate::Engine> engine;
  std::vector<std::unique_ptr<aggregate::Shard>> shards;
};

// A shard's flush, from the periodic flush, a scrape or a push. What memory did not allow to
// merge stays in the shard for the next one.
void Flush(aggregate::Shard& shard) noexcept {
  static log::RateLimitedLog no_memory(log::Level::kWarn);
  if (!shard.Flush()) {
    no_memory(
        "flush: out of memory; an ingest worker keeps what it could not merge for the next "
        "flush");
  }
}

// A shard's last flush, before a reload retires it or the daemon stops. What memory does not
// allow to merge at a second try is dropped and counted (aggregate dropped, reason no_memory).
void FlushLast(aggregate::Shard& shard) noexcept {
  if (shard.Flush() || shard.Flush()) return;
  shard.DiscardPending();
  log::Write(log::Level::kError,
             "flush: out of memory; updates an ingest worker could not merge are dropped "
             "(telemetryd_aggregate_dropped_total{reason=\"no_memory\"})");
}

// Counters of replaced generations, so that the self-metrics never go down across a reload.
struct RetiredCounters {
  std::array<std::uint64_t, aggregate::kDropReasonCount> dropped{};
  std::uint64_t updates = 0;
  std::uint64_t filtered = 0;
  std::uint64_t overflow = 0;

  void Add(const Generation& g) {
    for (const auto& s : g.shards) {
      for (std::size_t r = 0; r < aggregate::kDropReasonCount; ++r) {
        dropped[r] += s->dropped(static_cast<aggregate::DropReason>(r));
      }
      updates += s->recorded();
      filtered += s->filtered();
    }
    overflow += g.engine->overflow_total();
  }
};

// Aggregation self-metrics, summed over the shards.
void AddAggregationMetrics(const Generation& g, const RetiredCounters& retired,
                           std::vector<prometheus::MetricFamily>& out) {
  using prometheus::MetricType;
  auto& dropped = exporters::AddFamily(out, "telemetryd_aggregate_dropped_total",
                                       "Events (per metric) and samples not aggregated, by reason.",
                                       MetricType::Counter);
  for (std::size_t r = 0; r < aggregate::kDropReasonCount; ++r) {
    auto total = static_cast<double>(retired.dropped[r]);
    for (const auto& s : g.shards)
      total += static_cast<double>(s->dropped(static_cast<aggregate::DropReason>(r)));
    exporters::AddSample(
        dropped,
        {{"reason", std::string(aggregate::DropReasonName(static_cast<aggregate::DropReason>(r)))}},
        total);
  }
  auto updates = static_cast<double>(retired.updates);
  auto filtered = static_cast<double>(retired.filtered);
  double open_spans = 0;
  for (const auto& s : g.shards) {
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
  const auto counters = g.engine->counters();
  exporters::AddSample(exporters::AddFamily(out, "telemetryd_series", "Series held, all metrics.",
                                            MetricType::Gauge),
                       {}, static_cast<double>(counters.series));
  exporters::AddSample(
      exporters::AddFamily(out, "telemetryd_statsd_names",
                           "StatsD metric names held (at most statsd.max_metrics).",
                           MetricType::Gauge),
      {}, static_cast<double>(counters.statsd_metrics));
  auto& per_metric = exporters::AddFamily(out, "telemetryd_metric_series",
                                          "Series held per metric.", MetricType::Gauge);
  for (const auto& [name, n] : counters.series_per_metric) {
    if (n > 0) exporters::AddSample(per_metric, {{"metric", name}}, static_cast<double>(n));
  }
  exporters::AddSample(exporters::AddFamily(out, "telemetryd_cardinality_overflow_total",
                                            "Updates dropped because a series limit was reached.",
                                            MetricType::Counter),
                       {}, static_cast<double>(retired.overflow + g.engine->overflow_total()));
  auto& unknown =
      exporters::AddFamily(out, "telemetryd_unknown_events_total",
                           "Events no catalog declares, by name (capped; the rest is \"(other)\").",
                           MetricType::Counter);
  for (const auto& [name, n] : counters.unknown_events) {
    exporters::AddSample(unknown, {{"event", exporters::LabelValue(name)}}, static_cast<double>(n));
  }
}

// Reloads and their outcome (self-metrics).
struct ReloadCounters {
  std::atomic<std::uint64_t> success{0};
  std::atomic<std::uint64_t> failure{0};
  std::atomic<bool> last_ok{true};
  std::atomic<double> last_success_time{0};  // Unix seconds: start, then each successful reload
};

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void AddReloadMetrics(const ReloadCounters& reloads, std::vector<prometheus::MetricFamily>& out) {
  using prometheus::MetricType;
  auto& total =
      exporters::AddFamily(out, "telemetryd_config_reloads_total",
                           "Configuration reloads (SIGHUP) by outcome.", MetricType::Counter);
  exporters::AddSample(total, {{"outcome", "success"}},
                       static_cast<double>(reloads.success.load()));
  exporters::AddSample(total, {{"outcome", "failure"}},
                       static_cast<double>(reloads.failure.load()));
  exporters::AddSample(
      exporters::AddFamily(out, "telemetryd_config_last_reload_successful",
                           "1 if the last reload succeeded (or none was tried), 0 if it failed.",
                           MetricType::Gauge),
      {}, reloads.last_ok.load() ? 1 : 0);
  exporters::AddSample(
      exporters::AddFamily(out, "telemetryd_config_last_reload_success_timestamp_seconds",
                           "When the running configuration was loaded (Unix time).",
                           MetricType::Gauge),
      {}, reloads.last_success_time.load());
}

// The running daemon: listeners, aggregation, exporters and the timers that drive them. Everything
// here runs on the main thread except the scrape (on the Exposer's threads), which takes `mutex_`.
class Daemon {
 public:
  Daemon(std::string config_path, config::Config cfg)
      : config_path_(std::move(config_path)), cfg_(std::move(cfg)) {}

  int Run();

 private:
  Expected<std::shared_ptr<Generation>> NewGeneration(const config::Config& cfg) const;
  Expected<std::unique_ptr<exporters::PrometheusEndpoint>> StartEndpoint(
      const config::PrometheusOptions& options);
  // Moves every shard's updates into the engine's store, each on its own worker thread. Under
  // mutex_.
  void FlushLocked();
  // Sends the changes since the previous push to the StatsD destinations. Under mutex_.
  void PushLocked();
  void Reload();
  Status ApplyReload(config::Config next);
  void SchedulePush();
  void StopTimers();

  std::string config_path_;
  config::Config cfg_;
  boost::asio::io_context io_;
  boost::asio::steady_timer flush_timer_{io_};
  boost::asio::steady_timer push_timer_{io_};
  boost::asio::steady_timer watchdog_timer_{io_};

  std::vector<std::unique_ptr<AggregatingSink>> sinks_;  // one per worker, for the process's life
  std::unique_ptr<ingest::IngestServer> server_;
  std::unique_ptr<exporters::PrometheusEndpoint> endpoint_;
  std::shared_ptr<exporters::SelfMetrics> self_metrics_;
  std::shared_ptr<exporters::AggregateCollector> aggregated_;

  mutable std::mutex mutex_;  // guards the members below, which reloads replace
  std::shared_ptr<Generation> generation_;
  RetiredCounters retired_;
  std::unique_ptr<exporters::StatsdPusher> pusher_;
  ReloadCounters reloads_;
};

Expected<std::shared_ptr<Generation>> Daemon::NewGeneration(const config::Config& cfg) const {
  auto engine = BuildEngine(cfg);
  if (!engine) return engine.error();
  auto g = std::make_shared<Generation>();
  g->engine = std::move(*engine);
  for (std::size_t i = 0; i < cfg.ingest.workers; ++i) g->shards.push_back(g->engine->NewShard());
  return g;
}

Expected<std::unique_ptr<exporters::PrometheusEndpoint>> Daemon::StartEndpoint(
    const config::PrometheusOptions& options) {
  auto started = exporters::PrometheusEndpoint::Start(options.address, options.port);
  if (!started) return started.error();
  if (!options.username.empty()) (*started)->RequireBasicAuth(options.username, options.password);
  (*started)->Register(aggregated_);
  (*started)->Register(self_metrics_);
  log::Write(log::Level::kInfo, "prometheus endpoint on " + options.address + ":" +
                                    std::to_string((*started)->port()) + "/metrics");
  return started;
}

void Daemon::FlushLocked() {
  server_->RunOnWorkers([g = generation_](std::size_t worker) { Flush(*g->shards[worker]); },
                        std::chrono::seconds(2));
}

void Daemon::PushLocked() {
  static log::RateLimitedLog no_memory(log::Level::kWarn);
  try {
    pusher_->Push(generation_->engine->TakeDeltaSnapshot());  // Push itself throws nothing
  } catch (const std::bad_alloc&) {  // the snapshot: its changes stay for the next push
    no_memory("statsd push: out of memory for the changes; they go with the next push");
  }
}

void Daemon::SchedulePush() {
  push_timer_.expires_after(cfg_.statsd_push.interval);
  push_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    {
      std::lock_guard lock(mutex_);
      if (!pusher_) return;
      FlushLocked();
      PushLocked();
    }
    SchedulePush();
  });
}

void Daemon::StopTimers() {
  watchdog_timer_.cancel();
  flush_timer_.cancel();
  push_timer_.cancel();
}

// A reload either applies the whole new configuration or changes nothing.
Status Daemon::ApplyReload(config::Config next) {
  auto loaded = NewGeneration(next);  // catalogs are read again even if the config did not change
  if (!loaded) return loaded.error();
  std::shared_ptr<Generation> fresh = std::move(*loaded);
  // The Prometheus endpoint: restarted with its new settings, or the old one comes back.
  const bool endpoint_changed = !(next.prometheus == cfg_.prometheus);
  auto restore_endpoint = [&] {
    endpoint_.reset();
    if (!cfg_.prometheus.enabled) return;
    if (auto restored = StartEndpoint(cfg_.prometheus)) endpoint_ = std::move(*restored);
  };
  if (endpoint_changed) {
    endpoint_.reset();  // frees the port for a new endpoint on the same one
    if (next.prometheus.enabled) {
      auto started = StartEndpoint(next.prometheus);
      if (!started) {
        restore_endpoint();
        return started.error();
      }
      endpoint_ = std::move(*started);
    }
  }
  // Listeners: only those whose settings changed are re-bound; on error (a bind, or a change of
  // ingest.workers, which needs a restart) none changed.
  if (!(next.ingest == cfg_.ingest)) {
    auto changed = server_->Reconfigure(next.ingest);
    if (!changed) {
      if (endpoint_changed) restore_endpoint();
      return changed.error();
    }
    log::Write(log::Level::kInfo, "reload: listeners kept " + std::to_string(changed->kept) +
                                      ", bound " + std::to_string(changed->bound) + ", closed " +
                                      std::to_string(changed->closed));
  }
  // Nothing can fail from here.
  log::SetLevel(next.logging.level);
  std::lock_guard lock(mutex_);
  std::shared_ptr<Generation> old = generation_;
  // Each worker, between two packets: flush the old shard for the last time, take over its open
  // spans, and record into the new one from then on.
  auto remaining = std::make_shared<std::atomic<std::size_t>>(sinks_.size());
  const bool print = next.logging.print_events;
  server_->RunOnWorkers(
      [old, fresh, remaining, print, this](std::size_t worker) {
        FlushLast(*old->shards[worker]);
        fresh->shards[worker]->AdoptSpans(*old->shards[worker]);
        sinks_[worker]->Use(*fresh->shards[worker], print);
        remaining->fetch_sub(1);
      },
      std::chrono::seconds(5));
  while (remaining->load() != 0) {
    log::Write(log::Level::kWarn, "reload: waiting for an ingest worker to switch");
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  // The workers record into the new engine from now on, so it is the one exported even if
  // carrying the old series over runs out of memory: those series then start again from zero.
  std::optional<aggregate::Engine::AdoptResult> adopted;
  try {
    adopted = fresh->engine->Adopt(*old->engine);
  } catch (...) {  // out of memory
  }
  retired_.Add(*old);
  if (adopted) {
    retired_.dropped[static_cast<std::size_t>(aggregate::DropReason::kStatsdSetOverflow)] +=
        adopted->set_members_dropped;
  }
  generation_ = fresh;
  const std::string metrics = std::to_string(fresh->engine->metrics().size()) + " metrics";
  if (adopted) {
    log::Write(log::Level::kInfo, "reload: " + metrics + "; kept " + std::to_string(adopted->kept) +
                                      " with " + std::to_string(adopted->series) + " series, " +
                                      std::to_string(adopted->changed) + " changed (reset), " +
                                      std::to_string(adopted->removed) + " removed");
  } else {
    log::Write(log::Level::kError, "reload: " + metrics +
                                       "; out of memory while carrying the previous series over: "
                                       "those left behind start again from zero");
  }
  const bool push_changed = !(next.statsd_push == cfg_.statsd_push);
  if (push_changed) {
    push_timer_.cancel();
    pusher_.reset();
    if (next.statsd_push.enabled) {
      pusher_ = std::make_unique<exporters::StatsdPusher>(next.statsd_push);
    }
  }
  cfg_ = std::move(next);
  if (push_changed && pusher_) {
    // A fresh timer: the cancelled one's handler returns when it sees operation_aborted.
    boost::asio::post(io_, [this] { SchedulePush(); });
  }
  return Ok{};
}

void Daemon::Reload() {
  log::Write(log::Level::kInfo, "reloading " + config_path_);
  const auto now_usec = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
  sd_notify(0,
            ("RELOADING=1\nSTATUS=reloading\nMONOTONIC_USEC=" + std::to_string(now_usec)).c_str());
  Status status = Ok{};
  try {
    auto next = config::LoadConfigFile(config_path_);
    status = next ? ApplyReload(std::move(*next)) : Status(next.error());
  } catch (const std::exception& e) {
    status = Error{"reload.exception", std::string("reload: ") + e.what()};
  }
  if (status) {
    reloads_.success.fetch_add(1);
    reloads_.last_ok.store(true);
    reloads_.last_success_time.store(UnixNow());
    log::Write(log::Level::kInfo, "reload: configuration applied");
    sd_notify(0, "READY=1\nSTATUS=listening");
  } else {
    reloads_.failure.fetch_add(1);
    reloads_.last_ok.store(false);
    log::Write(log::Level::kError, "reload rejected, the previous configuration keeps running: " +
                                       status.error().message);
    sd_notify(0, "READY=1\nSTATUS=listening (last reload failed)");
  }
}

int Daemon::Run() {
  log::SetLevel(cfg_.logging.level);
  auto first = NewGeneration(cfg_);
  if (!first) {
    log::Write(log::Level::kError, first.error().message);
    return 1;
  }
  generation_ = std::move(*first);
  std::vector<ingest::EventSink*> sink_ptrs;
  for (std::size_t i = 0; i < cfg_.ingest.workers; ++i) {
    sinks_.push_back(
        std::make_unique<AggregatingSink>(*generation_->shards[i], cfg_.logging.print_events));
    sink_ptrs.push_back(sinks_.back().get());
  }
  log::Write(log::Level::kInfo,
             "aggregating " + std::to_string(generation_->engine->metrics().size()) +
                 " metrics from " + std::to_string(config::CatalogPaths(cfg_).size()) +
                 " catalog location(s)");
  auto server = ingest::IngestServer::Start(cfg_.ingest, sink_ptrs);
  if (!server) {
    log::Write(log::Level::kError, server.error().message);
    return 1;
  }
  server_ = std::move(*server);
  reloads_.last_success_time.store(UnixNow());

  if (cfg_.statsd_push.enabled) {
    pusher_ = std::make_unique<exporters::StatsdPusher>(cfg_.statsd_push);
    log::Write(log::Level::kInfo, "statsd push to " +
                                      std::to_string(cfg_.statsd_push.destinations.size()) +
                                      " destination(s) every " +
                                      std::to_string(cfg_.statsd_push.interval.count()) + " s");
  }
  self_metrics_ = std::make_shared<exporters::SelfMetrics>(
      *server_, [this](std::vector<prometheus::MetricFamily>& out) {
        {
          std::lock_guard lock(mutex_);
          AddAggregationMetrics(*generation_, retired_, out);
          if (pusher_) exporters::AddStatsdPushMetrics(*pusher_, out);
        }
        AddReloadMetrics(reloads_, out);
        const struct {
          const char* name;
          const char* help;
          double value;
        } gauges[] = {
            {"telemetryd_scrape_duration_seconds",
             "Time the previous scrape took to flush, snapshot and convert.",
             aggregated_->last_duration_seconds()},
            {"telemetryd_exposition_name_clashes",
             "Metrics left out of the last scrape: their name clashed.",
             static_cast<double>(aggregated_->clashes())},
            {"telemetryd_exposition_label_clashes",
             "Labels left out of the last scrape: another label of their series had the same "
             "name.",
             static_cast<double>(aggregated_->label_clashes())},
            {"telemetryd_exposition_series_clashes",
             "Series left out of the last scrape: an earlier series of their metric had the same "
             "labels.",
             static_cast<double>(aggregated_->series_clashes())},
        };
        for (const auto& g : gauges) {
          exporters::AddSample(
              exporters::AddFamily(out, g.name, g.help, prometheus::MetricType::Gauge), {},
              g.value);
        }
        exporters::AddSample(
            exporters::AddFamily(out, "telemetryd_scrape_failures_total",
                                 "Scrapes that had no memory for the aggregated metrics: they "
                                 "carried telemetryd's own metrics only.",
                                 prometheus::MetricType::Counter),
            {}, static_cast<double>(aggregated_->failures()));
      });
  aggregated_ = std::make_shared<exporters::AggregateCollector>([this] {
    std::lock_guard lock(mutex_);
    FlushLocked();
    return generation_->engine->CollectSnapshot();
  });
  if (cfg_.prometheus.enabled) {
    auto started = StartEndpoint(cfg_.prometheus);
    if (!started) {
      log::Write(log::Level::kError, started.error().message);
      return 1;
    }
    endpoint_ = std::move(*started);
  }

  // Periodic flush: bounds shard memory, expires idle series and old spans between scrapes.
  std::function<void()> schedule_flush = [&] {
    flush_timer_.expires_after(std::chrono::seconds(1));
    flush_timer_.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      {
        std::lock_guard lock(mutex_);
        FlushLocked();
      }
      schedule_flush();
    });
  };
  schedule_flush();
  // StatsD push: the deltas since the previous push, every interval.
  if (pusher_) SchedulePush();
  // systemd watchdog: WATCHDOG=1 only while every ingest worker answers, at half the interval.
  std::uint64_t watchdog_usec = 0;
  std::function<void()> schedule_watchdog = [&] {
    watchdog_timer_.expires_after(std::chrono::microseconds(watchdog_usec / 2));
    watchdog_timer_.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      const auto deadline = std::chrono::microseconds(watchdog_usec / 4);
      if (server_->RunOnWorkers([](std::size_t) {},
                                std::chrono::duration_cast<std::chrono::milliseconds>(deadline))) {
        sd_notify(0, "WATCHDOG=1");
      } else {
        log::Write(log::Level::kWarn, "watchdog: an ingest worker did not answer in time");
      }
      schedule_watchdog();
    });
  };
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec >= 4000) schedule_watchdog();

  boost::asio::signal_set signals(io_, SIGINT, SIGTERM, SIGHUP);
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int signo) {
        if (ec) return;
        if (signo == SIGHUP) {
          Reload();
          signals.async_wait(on_signal);
          return;
        }
        log::Write(log::Level::kInfo, std::string("stopping on ") + ::strsignal(signo));
        sd_notify(0, "STOPPING=1");
        StopTimers();
        server_->Stop();
        std::lock_guard lock(mutex_);
        // The workers are gone: safe from here.
        for (auto& shard : generation_->shards) FlushLast(*shard);
        // The final push: what came in since the previous one.
        if (pusher_) PushLocked();
        io_.stop();
      };
  signals.async_wait(on_signal);

  log::Write(log::Level::kInfo, "telemetryd " TELEMETRYD_VERSION " ready");
  sd_notify(0, "READY=1\nSTATUS=listening");
  io_.run();
  endpoint_.reset();
  log::Write(log::Level::kInfo, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  exporters::KeepScrapeMemory();
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
    Daemon daemon(config_path, *cfg);
    return daemon.Run();
  } catch (const std::exception& e) {
    log::Write(log::Level::kError, std::string("fatal: ") + e.what());
    return 1;
  }
}
