// telemetryd: receives telemetry events and StatsD lines, counts them and exposes the counts.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "telemetryd/common/log.h"
#include "telemetryd/config/config.h"
#include "telemetryd/exporters/prometheus_endpoint.h"
#include "telemetryd/exporters/self_metrics.h"
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

// What each worker hands its input to: counts it, and prints it when asked to.
class DaemonSink final : public ingest::EventSink {
 public:
  explicit DaemonSink(bool print) : debug_(stderr), print_(print) {}
  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    counting_.OnEvent(frame, event);
    if (print_) debug_.OnEvent(frame, event);
  }
  void OnStatsd(const ingest::StatsdSample& sample) noexcept override {
    counting_.OnStatsd(sample);
    if (print_) debug_.OnStatsd(sample);
  }
  const ingest::CountingSink& counts() const noexcept { return counting_; }

 private:
  ingest::CountingSink counting_;
  ingest::DebugSink debug_;
  bool print_;
};

int Run(const config::Config& cfg) {
  log::SetLevel(cfg.logging.level);
  std::vector<std::unique_ptr<DaemonSink>> sinks;
  std::vector<ingest::EventSink*> sink_ptrs;
  for (std::size_t i = 0; i < cfg.ingest.workers; ++i) {
    sinks.push_back(std::make_unique<DaemonSink>(cfg.logging.print_events));
    sink_ptrs.push_back(sinks.back().get());
  }
  auto server = ingest::IngestServer::Start(cfg.ingest, sink_ptrs);
  if (!server) {
    log::Write(log::Level::kError, server.error().message);
    return 1;
  }

  std::unique_ptr<exporters::PrometheusEndpoint> endpoint;
  std::shared_ptr<exporters::SelfMetrics> self_metrics;
  if (cfg.prometheus.enabled) {
    auto started =
        exporters::PrometheusEndpoint::Start(cfg.prometheus.address, cfg.prometheus.port);
    if (!started) {
      log::Write(log::Level::kError, started.error().message);
      return 1;
    }
    endpoint = std::move(*started);
    self_metrics = std::make_shared<exporters::SelfMetrics>(
        **server, [&sinks](std::vector<prometheus::MetricFamily>& out) {
          double events = 0;
          double samples = 0;
          for (const auto& s : sinks) {
            events += static_cast<double>(s->counts().events());
            samples += static_cast<double>(s->counts().statsd_samples());
          }
          auto& family = exporters::AddFamily(out, "telemetryd_received_total",
                                              "Events and StatsD samples received, by kind.",
                                              prometheus::MetricType::Counter);
          exporters::AddSample(family, {{"kind", "event"}}, events);
          exporters::AddSample(family, {{"kind", "statsd_sample"}}, samples);
        });
    endpoint->Register(self_metrics);
    log::Write(log::Level::kInfo, "prometheus endpoint on " + cfg.prometheus.address + ":" +
                                      std::to_string(endpoint->port()) + "/metrics");
  }

  boost::asio::io_context main_io;
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
        (*server)->Stop();
        main_io.stop();
      };
  signals.async_wait(on_signal);
  log::Write(log::Level::kInfo, "telemetryd " TELEMETRYD_VERSION " ready");
  main_io.run();
  endpoint.reset();
  log::Write(log::Level::kInfo, "stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
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
      std::cout << config_path << ": configuration is valid\n";
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
