// SIGHUP reload of the real daemon: what did not change keeps its state and its sockets, what
// changed is re-bound or restarts, and a bad configuration changes nothing. The systemd
// notifications around it are read from a NOTIFY_SOCKET the test owns.
#include <doctest/doctest.h>

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>

#include "support/daemon_process.h"
#include "telemetryd/client/client.h"
#include "telemetryd/wire/encoder.h"

using namespace telemetryd;
using telemetryd::test::DaemonProcess;
using telemetryd::test::Eventually;
using telemetryd::test::HttpGet;
using telemetryd::test::Metric;
using telemetryd::test::MetricReaches;
using telemetryd::test::MetricValue;
using telemetryd::test::NotifySocket;
using telemetryd::test::SendUdp;
namespace asio = boost::asio;

namespace {

std::string Catalog(const std::string& buckets) {
  return R"(
system: app
description: A test application.
events:
  app.job.done:
    description: A job finished.
    measurements: {count: none, duration_ms: millisecond}
    metadata: {queue: atom}
metrics:
  - counter: app.job.done.count
    description: Jobs done.
    tags: [queue]
  - distribution: app.job.done.duration_ms
    description: Job time.
    buckets: )" +
         buckets + R"(
    tags: [queue]
)";
}

std::string Config(const std::string& catalog, const std::string& statsd, int workers = 2,
                   const std::string& extra = "") {
  return "listeners:\n  workers: " + std::to_string(workers) +
         "\n  native:\n    udp: {port: 0}\n    tcp: {port: 0}\n  statsd:\n" + statsd +
         "catalogs:\n  paths: [" + catalog + "]\nprometheus: {port: 0}\n" + extra;
}

wire::EventRecord Prepare() {
  wire::EventRecord e;
  e.name = "vsr.protocol.prepare.sent";
  e.measurements = {{"count", wire::Number::Int(3)}};
  e.metadata = {{"node_id", wire::Term::String("n1")}};
  return e;
}

wire::EventRecord JobDone(std::int64_t ms) {
  wire::EventRecord e;
  e.name = "app.job.done";
  e.measurements = {{"count", wire::Number::Int(1)}, {"duration_ms", wire::Number::Int(ms)}};
  e.metadata = {{"queue", wire::Term::Atom("default")}};
  return e;
}

std::unique_ptr<client::Client> Connect(std::uint16_t port, client::Transport transport) {
  client::ClientOptions options;
  options.transport = transport;
  options.port = port;
  auto c = client::Client::Connect(options);
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().message));
  return std::move(*c);
}

bool SendTcp(std::uint16_t port, const std::string& payload) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (!ec) asio::write(socket, asio::buffer(payload), ec);
  return !ec;
}

std::size_t Count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE(
    "SIGHUP: unchanged state and sockets survive, changes apply, bad configs change nothing") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("telemetryd-reload-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string catalog = (dir / "app.yaml").string();
  std::ofstream(catalog) << Catalog("[10, 100]");
  NotifySocket notify;

  const std::string statsd_before = "    udp: {port: 0}\n    tcp: {enabled: false}\n";
  ::setenv("NOTIFY_SOCKET", notify.path().c_str(), 1);
  DaemonProcess d(TELEMETRYD_BINARY, Config(catalog, statsd_before));
  ::unsetenv("NOTIFY_SOCKET");
  REQUIRE_MESSAGE(d.ready(), d.log());
  const auto kWait = std::chrono::seconds(10);
  REQUIRE_MESSAGE(notify.WaitFor("READY=1", kWait), notify.seen());

  // State before the reload: native events over UDP and over a TCP connection kept open, StatsD.
  const std::uint16_t native_udp = d.port("native_udp");
  const std::uint16_t statsd_udp = d.port("statsd_udp");
  auto udp = Connect(native_udp, client::Transport::kUdp);
  auto tcp = Connect(d.port("native_tcp"), client::Transport::kTcp);
  for (int i = 0; i < 4; ++i) REQUIRE(udp->Send(Prepare()));
  REQUIRE(udp->Send(JobDone(5)));
  REQUIRE(udp->Flush());
  REQUIRE(tcp->Send(Prepare()));
  REQUIRE(tcp->Flush());
  SendUdp(statsd_udp, "jobs:1|c\njobs:2|c");
  const std::string prepares = "vsr_protocol_prepare_sent_count_total{node_id=\"n1\"}";
  const std::string jobs = "app_job_done_count_total{queue=\"default\"}";
  const std::string job_time = "app_job_done_duration_seconds_count{queue=\"default\"}";
  const std::string statsd_jobs = "jobs_total";
  REQUIRE(MetricReaches(d, prepares, 5));
  REQUIRE(MetricReaches(d, jobs, 1));
  REQUIRE(MetricReaches(d, job_time, 1));
  REQUIRE(MetricReaches(d, statsd_jobs, 3));

  SUBCASE("a reload that changes a catalog metric and the StatsD listeners") {
    // app.job.done.duration_ms gets other buckets; the StatsD UDP listener other settings (it is
    // re-bound); a StatsD TCP listener is new; the native listeners do not change.
    std::ofstream(catalog) << Catalog("[1, 1000]");
    REQUIRE(d.RewriteConfig(Config(catalog, "    udp: {port: 0, batch: 8}\n    tcp: {port: 0}\n")));
    d.Kill(SIGHUP);
    REQUIRE_MESSAGE(notify.WaitFor("RELOADING=1", kWait), notify.seen());
    REQUIRE_MESSAGE(notify.WaitFor("READY=1", kWait), notify.seen());
    REQUIRE_MESSAGE(d.WaitForLog("reload: configuration applied", std::chrono::seconds(10)),
                    d.log());
    CHECK(Metric(d, "telemetryd_config_reloads_total{outcome=\"success\"}") == 1);
    CHECK(Metric(d, "telemetryd_config_last_reload_successful") == 1);

    // Unchanged metrics kept their values; the changed one starts again.
    CHECK(Metric(d, prepares) == 5);
    CHECK(Metric(d, jobs) == 1);
    CHECK(Metric(d, job_time) == -1);
    CHECK(Metric(d, statsd_jobs) == 3);
    // The native listeners kept their sockets: same port, bound once, the TCP connection works.
    CHECK(d.port("native_udp") == native_udp);
    CHECK(Count(d.log(), "listening: native_udp") == 1);
    CHECK(Count(d.log(), "listening: native_tcp") == 1);
    REQUIRE(tcp->Send(Prepare()));
    REQUIRE(tcp->Flush());
    REQUIRE(udp->Send(JobDone(500)));
    REQUIRE(udp->Flush());
    CHECK(MetricReaches(d, prepares, 6));
    CHECK(MetricReaches(d, jobs, 2));
    CHECK(MetricReaches(d, "app_job_done_duration_seconds_bucket{queue=\"default\",le=\"1\"}", 1));
    // The StatsD UDP listener was re-bound (a new port: it asked for any) and its counters carry
    // on; the TCP one is new.
    CHECK(Count(d.log(), "listening: statsd_udp") == 2);
    CHECK(d.port("statsd_udp") != statsd_udp);
    SendUdp(d.port("statsd_udp"), "jobs:4|c");
    CHECK(MetricReaches(d, statsd_jobs, 7));
    CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"statsd_udp\"}", 3));
    REQUIRE(d.port("statsd_tcp") != 0);
    CHECK(SendTcp(d.port("statsd_tcp"), "jobs:10|c\n"));
    CHECK(MetricReaches(d, statsd_jobs, 17));

    // Removing the TCP listener closes its port.
    REQUIRE(d.RewriteConfig(
        Config(catalog, "    udp: {port: 0, batch: 8}\n    tcp: {enabled: false}\n")));
    const std::uint16_t statsd_tcp = d.port("statsd_tcp");
    d.Kill(SIGHUP);
    CHECK(MetricReaches(d, "telemetryd_config_reloads_total{outcome=\"success\"}", 2));
    CHECK(d.WaitForLog("closed listener: statsd_tcp", std::chrono::seconds(5)));
    CHECK_FALSE(SendTcp(statsd_tcp, "jobs:10|c\n"));
    CHECK(Metric(d, statsd_jobs) == 17);
    CHECK_MESSAGE(d.log().find("<3>") == std::string::npos, d.log());  // no error logged
  }

  SUBCASE("bad configurations are rejected and the running one goes on") {
    // An unknown key: reported with file, line and column.
    REQUIRE(d.RewriteConfig(Config(catalog, statsd_before, 2, "bogus: 1\n")));
    d.Kill(SIGHUP);
    REQUIRE_MESSAGE(notify.WaitFor("RELOADING=1", kWait), notify.seen());
    REQUIRE_MESSAGE(notify.WaitFor("READY=1", kWait), notify.seen());
    CHECK(MetricReaches(d, "telemetryd_config_reloads_total{outcome=\"failure\"}", 1));
    CHECK(Metric(d, "telemetryd_config_last_reload_successful") == 0);
    CHECK(d.WaitForLog("reload rejected", std::chrono::seconds(5)));
    CHECK(d.log().find(d.config_path() + ":12:1") != std::string::npos);
    // A catalog that does not load.
    REQUIRE(d.RewriteConfig(Config(catalog, statsd_before)));
    std::ofstream(catalog) << Catalog("[100, 10]");
    d.Kill(SIGHUP);
    CHECK(MetricReaches(d, "telemetryd_config_reloads_total{outcome=\"failure\"}", 2));
    CHECK(d.log().find(catalog + ":") != std::string::npos);
    // What needs a restart.
    std::ofstream(catalog) << Catalog("[10, 100]");
    REQUIRE(d.RewriteConfig(Config(catalog, statsd_before, 3)));
    d.Kill(SIGHUP);
    CHECK(MetricReaches(d, "telemetryd_config_reloads_total{outcome=\"failure\"}", 3));
    CHECK(d.WaitForLog("needs a restart", std::chrono::seconds(5)));
    CHECK(Metric(d, "telemetryd_config_reloads_total{outcome=\"success\"}") == 0);

    // Nothing changed: same sockets, same state, still counting.
    CHECK(Count(d.log(), "listening: native_udp") == 1);
    REQUIRE(udp->Send(Prepare()));
    REQUIRE(udp->Flush());
    SendUdp(statsd_udp, "jobs:1|c");
    CHECK(MetricReaches(d, prepares, 6));
    CHECK(MetricReaches(d, statsd_jobs, 4));
    CHECK(Metric(d, job_time) == 1);
    // And a good one is taken again.
    REQUIRE(d.RewriteConfig(Config(catalog, statsd_before)));
    d.Kill(SIGHUP);
    CHECK(MetricReaches(d, "telemetryd_config_reloads_total{outcome=\"success\"}", 1));
    CHECK(Metric(d, "telemetryd_config_last_reload_successful") == 1);
    CHECK(Metric(d, prepares) == 6);
  }

  const auto status = d.Signal(SIGTERM, std::chrono::seconds(10));
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  std::filesystem::remove_all(dir);
}
