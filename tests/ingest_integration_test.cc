// The real telemetryd binary on loopback ports chosen by the kernel, fed through real sockets by
// the C++ client and by plain StatsD lines; assertions read its /metrics and its event log.
#include <doctest/doctest.h>

#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

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
using telemetryd::test::SendUdp;
namespace asio = boost::asio;

namespace {

const std::string kConfig = R"(
listeners:
  workers: 2
  native:
    udp: {port: 0}
    tcp: {port: 0, max_frame_bytes: 4096, max_connections: 3, idle_timeout_ms: 400}
  statsd:
    udp: {port: 0}
    tcp: {port: 0}
prometheus: {port: 0}
logging: {print_events: true}
)";

wire::EventRecord Prepare(std::int64_t op) {
  wire::EventRecord e;
  e.name = "vsr.protocol.prepare.sent";
  e.measurements = {{"count", wire::Number::Int(3)}};
  e.metadata = {{"node_id", wire::Term::String("n1")},  {"view_number", wire::Term::Int(4)},
                {"status", wire::Term::Atom("normal")}, {"cluster_size", wire::Term::Int(3)},
                {"op_number", wire::Term::Int(op)},     {"commit_number", wire::Term::Int(op - 1)}};
  return e;
}

std::unique_ptr<client::Client> Connect(const DaemonProcess& d, client::Transport transport) {
  client::ClientOptions options;
  options.transport = transport;
  options.port = d.port(transport == client::Transport::kUdp ? "native_udp" : "native_tcp");
  options.max_frame_bytes = transport == client::Transport::kTcp ? 4096 : 0;  // the test's limit
  auto c = client::Client::Connect(options);
  REQUIRE_MESSAGE(c.has_value(), (c ? "" : c.error().message));
  return std::move(*c);
}

}  // namespace

TEST_CASE("native events over UDP and TCP arrive, are counted and decode to what was sent") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());

  auto udp = Connect(d, client::Transport::kUdp);
  for (int i = 0; i < 300; ++i) REQUIRE(udp->Send(Prepare(1000 + i)));
  REQUIRE(udp->Flush());
  CHECK(udp->frames_sent() > 1);  // batched up to the MTU, not one frame
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"native_udp\"}", 300));
  CHECK(Metric(d, "telemetryd_ingest_packets_total{listener=\"native_udp\"}") ==
        static_cast<double>(udp->frames_sent()));

  auto tcp = Connect(d, client::Transport::kTcp);
  for (int i = 0; i < 2000; ++i) REQUIRE(tcp->Send(Prepare(5000 + i)));
  REQUIRE(tcp->Flush());
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"native_tcp\"}", 2000));
  // Aggregated through the built-in VSR catalog.
  CHECK(MetricReaches(d, "vsr_protocol_prepare_sent_count_total{node_id=\"n1\"}", 2300));
  CHECK(d.WaitForLog(
      "event vsr.protocol.prepare.sent count=3 node_id=\"n1\" view_number=4 status=:normal "
      "cluster_size=3 op_number=6999 commit_number=6998",
      std::chrono::seconds(5)));
  CHECK(
      Metric(d, "telemetryd_ingest_rejected_total{listener=\"native_tcp\",reason=\"truncated\"}") ==
      0);
}

TEST_CASE("beyond the caches a frame is decoded twice, and still counted and recorded once") {
  // One worker, so that one shard holds every series and asks for previews (from 2^18 series).
  DaemonProcess d(TELEMETRYD_BINARY, R"(
listeners:
  workers: 1
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {enabled: false}, tcp: {enabled: false}}
aggregation: {max_series_per_metric: 1000000, max_series_total: 2000000}
prometheus: {port: 0}
)");
  REQUIRE_MESSAGE(d.ready(), d.log());
  auto prepare = [](const std::string& node, std::int64_t count) {
    wire::EventRecord e = Prepare(7);
    e.metadata[0].second = wire::Term::String(node);
    e.measurements[0].second = wire::Number::Int(count);
    return e;
  };
  auto tcp = Connect(d, client::Transport::kTcp);
  constexpr int kNodes = 1 << 17;  // a counter and a sum each
  for (int i = 0; i < kNodes; ++i) REQUIRE(tcp->Send(prepare("node-" + std::to_string(i), 1)));
  REQUIRE(tcp->Flush());
  REQUIRE(MetricReaches(d, "telemetryd_series", 2 * kNodes));

  // A frame of known and unknown events and one without its tag, then trailing garbage.
  wire::FrameEncoder encoder;
  wire::EventRecord unknown;
  unknown.name = "no.such.event";
  wire::EventRecord untagged = prepare("x", 1);
  untagged.metadata.erase(untagged.metadata.begin());
  for (const auto& e : {prepare("node-7", 5), unknown, untagged, prepare("node-7", 3)}) {
    REQUIRE(encoder.Add(e) == wire::AddResult::kAdded);
  }
  auto frame = encoder.Finish();
  std::string datagram(reinterpret_cast<const char*>(frame.data()), frame.size());
  SendUdp(d.port("native_udp"), datagram + "junk");

  CHECK(MetricReaches(d, "vsr_protocol_prepare_sent_replicas{node_id=\"node-7\"}", 1 + 5 + 3));
  CHECK(Metric(d, "vsr_protocol_prepare_sent_count_total{node_id=\"node-7\"}") == 3);
  CHECK(Metric(d, "telemetryd_ingest_events_total{listener=\"native_udp\"}") == 4);
  CHECK(
      Metric(
          d,
          "telemetryd_ingest_rejected_total{listener=\"native_udp\",reason=\"trailing_bytes\"}") ==
      1);
  CHECK(Metric(d, "telemetryd_aggregate_dropped_total{reason=\"unknown_event\"}") == 1);
  CHECK(Metric(d, "telemetryd_aggregate_dropped_total{reason=\"missing_tag\"}") == 2);
  CHECK(Metric(d, "telemetryd_series") == 2 * kNodes);
}

TEST_CASE("a TCP frame split across many writes is reassembled") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE(d.ready());
  wire::FrameEncoder encoder;
  REQUIRE(encoder.Add(Prepare(42)) == wire::AddResult::kAdded);
  REQUIRE(encoder.Add(Prepare(43)) == wire::AddResult::kAdded);
  const auto frame = encoder.Finish();
  std::string bytes = {0, 0, static_cast<char>(frame.size() >> 8),
                       static_cast<char>(frame.size() & 0xFF)};
  bytes.append(reinterpret_cast<const char*>(frame.data()), frame.size());

  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), d.port("native_tcp")});
  socket.set_option(asio::ip::tcp::no_delay(true));
  for (std::size_t i = 0; i < bytes.size(); i += 7) {
    asio::write(socket, asio::buffer(bytes.data() + i, std::min<std::size_t>(7, bytes.size() - i)));
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"native_tcp\"}", 2));
  CHECK(d.WaitForLog("op_number=43 commit_number=42", std::chrono::seconds(2)));
}

TEST_CASE("StatsD lines over UDP and TCP: good lines counted, bad lines rejected by reason") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE(d.ready());
  std::string datagram;
  for (int i = 0; i < 24; ++i) datagram += "app.requests:" + std::to_string(i) + "|c|#env:prod\n";
  datagram += "app.broken|c\n";
  SendUdp(d.port("statsd_udp"), datagram);
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"statsd_udp\"}", 24));
  CHECK(Metric(
            d,
            "telemetryd_ingest_rejected_total{listener=\"statsd_udp\",reason=\"missing_value\"}") ==
        1);
  CHECK(d.WaitForLog("statsd app.requests:23|c|#env:prod", std::chrono::seconds(2)));
  CHECK(d.WaitForLog("rejected input: missing_value: \"app.broken|c\"", std::chrono::seconds(2)));

  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), d.port("statsd_tcp")});
  asio::write(socket, asio::buffer(std::string("queue.depth:+5|g\nqueue.dep")));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  asio::write(socket, asio::buffer(std::string("th:-2|g\nlatency:12.5|ms|@0.5")));
  socket.shutdown(asio::ip::tcp::socket::shutdown_send);  // the last line has no newline
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"statsd_tcp\"}", 3));
  CHECK(d.WaitForLog("statsd queue.depth:-2|g", std::chrono::seconds(2)));
  CHECK(d.WaitForLog("statsd latency:12.5|ms|@0.5", std::chrono::seconds(2)));
}

TEST_CASE("StatsD values reach /metrics exactly, in order, from long TCP runs and datagrams") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE(d.ready());
  // One TCP write of more lines than the intake hands the sink at once, a bad line among them,
  // and a gauge set then moved: order matters.
  std::string lines;
  for (int i = 0; i < 80; ++i) {
    lines += i == 40 ? std::string("runs.hits:x|c\n")
                     : "runs.hits:1|c|#k:v" + std::to_string(i % 3) + "\n";
  }
  lines += "runs.level:10|g\nruns.level:+5|g\nruns.level:-3|g\n";
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), d.port("statsd_tcp")});
  asio::write(socket, asio::buffer(lines));
  socket.shutdown(asio::ip::tcp::socket::shutdown_send);
  std::string datagram;
  for (int i = 0; i < 30; ++i) datagram += "runs.hits:2|c|#k:v0\n";
  SendUdp(d.port("statsd_udp"), datagram);
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"statsd_tcp\"}", 82));
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"statsd_udp\"}", 30));
  CHECK(
      Metric(d, "telemetryd_ingest_rejected_total{listener=\"statsd_tcp\",reason=\"bad_value\"}") ==
      1);
  CHECK(MetricReaches(d, "runs_hits_total{k=\"v0\"}", 27 + 60));
  CHECK(Metric(d, "runs_hits_total{k=\"v1\"}") == 26);
  CHECK(Metric(d, "runs_hits_total{k=\"v2\"}") == 26);
  CHECK(MetricReaches(d, "runs_level", 12));
}

TEST_CASE("StatsD names that come and go do not fill statsd.max_metrics for good") {
  DaemonProcess d(TELEMETRYD_BINARY, R"(
listeners:
  statsd:
    udp: {port: 0}
prometheus: {port: 0}
aggregation: {series_ttl_seconds: 1}
statsd: {max_metrics: 1}
)");
  REQUIRE(d.ready());
  const std::string overflow =
      "telemetryd_aggregate_dropped_total{reason=\"statsd_metric_overflow\"}";
  SendUdp(d.port("statsd_udp"), "churn.first:1|c\n");
  CHECK(MetricReaches(d, "churn_first_total", 1));
  CHECK(Metric(d, "telemetryd_statsd_names") == 1);
  SendUdp(d.port("statsd_udp"), "churn.second:1|g\n");
  CHECK(MetricReaches(d, overflow, 1));
  // Once churn.first has idled past the TTL, its name is forgotten and churn.second gets its
  // place (and each refusal until then is counted).
  CHECK(Eventually(
      [&] {
        SendUdp(d.port("statsd_udp"), "churn.second:1|g\n");
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        return Metric(d, "churn_second") == 1;
      },
      std::chrono::seconds(10)));
  CHECK(Metric(d, "churn_first_total") == -1);
  CHECK(Metric(d, "telemetryd_statsd_names") == 1);
  CHECK(Metric(d, overflow) >= 1);
}

TEST_CASE("garbage never takes the daemon down and is counted by reason") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE(d.ready());
  const auto native_udp = d.port("native_udp");
  SendUdp(native_udp, "not a frame at all");
  SendUdp(native_udp, std::string("\xD7\x1E\x02\x00", 4));
  SendUdp(d.port("statsd_udp"), std::string("\xD7\x1E\x01\x00\xff\xff", 6));
  CHECK(MetricReaches(
      d, "telemetryd_ingest_rejected_total{listener=\"native_udp\",reason=\"bad_magic\"}", 1));
  CHECK(MetricReaches(
      d, "telemetryd_ingest_rejected_total{listener=\"native_udp\",reason=\"unsupported_version\"}",
      1));

  // A TCP length prefix over max_frame_bytes: counted, and that connection (only) is closed.
  asio::io_context io;
  asio::ip::tcp::socket bad(io);
  bad.connect({asio::ip::make_address("127.0.0.1"), d.port("native_tcp")});
  asio::write(bad, asio::buffer(std::string("\x00\x10\x00\x00garbage", 11)));
  CHECK(MetricReaches(
      d, "telemetryd_ingest_rejected_total{listener=\"native_tcp\",reason=\"frame_too_large\"}",
      1));
  CHECK(MetricReaches(
      d, "telemetryd_ingest_connections_total{listener=\"native_tcp\",outcome=\"closed_error\"}",
      1));

  // Still serving.
  auto udp = Connect(d, client::Transport::kUdp);
  REQUIRE(udp->Send(Prepare(7)));
  REQUIRE(udp->Flush());
  CHECK(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"native_udp\"}", 1));
}

TEST_CASE("TCP limits: connections over the maximum are refused, idle ones closed") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE(d.ready());
  asio::io_context io;
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> sockets;
  for (int i = 0; i < 5; ++i) {
    sockets.push_back(std::make_unique<asio::ip::tcp::socket>(io));
    sockets.back()->connect({asio::ip::make_address("127.0.0.1"), d.port("native_tcp")});
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  CHECK(MetricReaches(
      d, "telemetryd_ingest_connections_total{listener=\"native_tcp\",outcome=\"rejected_limit\"}",
      2));
  CHECK(
      Metric(d,
             "telemetryd_ingest_connections_total{listener=\"native_tcp\",outcome=\"accepted\"}") ==
      3);
  // Nobody writes: after idle_timeout_ms (400) the sweep closes the three open ones.
  CHECK(MetricReaches(
      d, "telemetryd_ingest_connections_total{listener=\"native_tcp\",outcome=\"closed_idle\"}",
      3));
  CHECK(MetricReaches(d, "telemetryd_ingest_connections_open{listener=\"native_tcp\"}", 0));
}

TEST_CASE("SIGTERM stops the daemon cleanly with exit status 0") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE(d.ready());
  const auto status = d.Signal(SIGTERM, std::chrono::seconds(10));
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  CHECK(d.WaitForLog("stopped", std::chrono::seconds(1)));
}

TEST_CASE("--check-config reports bad configuration with file, line and field") {
  char path[] = "/tmp/telemetryd-bad-XXXXXX.yaml";
  const int fd = ::mkstemps(path, 5);
  REQUIRE(fd >= 0);
  const std::string bad = "listeners:\n  native:\n    udp: {port: 99999}\n";
  REQUIRE(::write(fd, bad.data(), bad.size()) == static_cast<ssize_t>(bad.size()));
  ::close(fd);
  const auto check = telemetryd::test::RunCommand(std::string(TELEMETRYD_BINARY) +
                                                  " --check-config --config " + path);
  ::unlink(path);
  CHECK(check.status == 1);
  CHECK(check.output.find(std::string(path) +
                          ":3:17: listeners.native.udp.port: must be between 0 and 65535") !=
        std::string::npos);
}
