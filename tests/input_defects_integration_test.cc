// Hostile input against the real telemetryd binary: each case sends what an adversarial sender or
// operator could, and asserts what docs/wire-format.md, docs/statsd.md and docs/prometheus.md
// promise (nothing lost silently, a valid exposition, limits as configured).
#include <doctest/doctest.h>

#include <set>
#include <sstream>
#include <string>
#include <thread>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>

#include "support/daemon_process.h"
#include "telemetryd/wire/encoder.h"

using namespace telemetryd;
using telemetryd::test::DaemonProcess;
using telemetryd::test::Eventually;
using telemetryd::test::HttpGet;
using telemetryd::test::Metric;
using telemetryd::test::MetricReaches;
using telemetryd::test::SendUdp;
namespace asio = boost::asio;

namespace {

const std::string kConfig = R"(
listeners:
  workers: 1
  native:
    udp: {port: 0}
    tcp: {port: 0, idle_timeout_ms: 300}
  statsd:
    udp: {port: 0}
    tcp: {port: 0, idle_timeout_ms: 300}
prometheus: {port: 0}
)";

// The first sample line of `exposition` that names one label twice, or "".
std::string LineWithRepeatedLabel(const std::string& exposition) {
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto open = line.find('{');
    if (open == std::string::npos) continue;
    std::set<std::string> names;
    std::size_t p = open + 1;
    while (p < line.size() && line[p] != '}') {
      const auto eq = line.find('=', p);
      if (eq == std::string::npos) break;
      if (!names.insert(line.substr(p, eq - p)).second) return line;
      // Skip the quoted value (escapes: \\ \" \n).
      std::size_t q = eq + 2;
      while (q < line.size() && line[q] != '"')
        q += line[q] == '\\' ? std::size_t{2} : std::size_t{1};
      p = q + 1;
      if (p < line.size() && line[p] == ',') ++p;
    }
  }
  return "";
}

std::string FrameBytes() {
  wire::FrameEncoder encoder;
  wire::EventRecord e;
  e.name = "vsr.protocol.prepare.sent";
  e.measurements = {{"count", wire::Number::Int(3)}};
  e.metadata = {{"node_id", wire::Term::String("n1")}};
  REQUIRE(encoder.Add(e) == wire::AddResult::kAdded);
  const auto frame = encoder.Finish();
  return std::string(reinterpret_cast<const char*>(frame.data()), frame.size());
}

std::string Prefixed(const std::string& frame) {
  const auto n = frame.size();
  std::string out = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8), static_cast<char>(n)};
  return out + frame;
}

// A connection to the daemon's TCP listener `listener`, with `bytes` written to it.
asio::ip::tcp::socket Connected(asio::io_context& io, const DaemonProcess& d,
                                const std::string& listener, const std::string& bytes) {
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), d.port(listener)});
  asio::write(socket, asio::buffer(bytes));
  return socket;
}

}  // namespace

TEST_CASE("DogStatsD tags whose names clash after sanitizing never make the exposition invalid") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  // One datagram from any sender: "a-b" and "a_b" both become the label a_b, "__x" becomes "_x",
  // and "le" is the bucket label of a histogram.
  SendUdp(d.port("statsd_udp"),
          "clash.dash:1|c|#a-b:x,a_b:y\nclash.reserved:1|c|#__x:1,_x:2\n"
          "clash.timer:5|ms|#le:7\n");
  REQUIRE(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"statsd_udp\"}", 3));
  const std::string exposition = HttpGet(d.port("prometheus"), "/metrics");
  // Prometheus refuses a whole scrape with a repeated label name in one series.
  CHECK_MESSAGE(LineWithRepeatedLabel(exposition).empty(), LineWithRepeatedLabel(exposition));
  // docs/prometheus.md: the first label of a name stays, the others are left out and counted;
  // "le" on a histogram is exposed as "exported_le".
  CHECK(exposition.find("clash_dash_total{a_b=\"x\"} 1") != std::string::npos);
  CHECK(exposition.find("clash_reserved_total{_x=\"1\"} 1") != std::string::npos);
  CHECK(exposition.find("clash_timer_seconds_count{exported_le=\"7\"} 1") != std::string::npos);
  CHECK(Metric(d, "telemetryd_exposition_label_clashes") == 2);
}

TEST_CASE("a native TCP frame cut short by the end of the connection is counted as truncated") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  const std::string whole = Prefixed(FrameBytes());
  {
    asio::io_context io;
    Connected(io, d, "native_tcp", whole + whole.substr(0, whole.size() / 2));
  }  // closed: the second frame ends early
  REQUIRE(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"native_tcp\"}", 1));
  CHECK(MetricReaches(
      d, "telemetryd_ingest_rejected_total{listener=\"native_tcp\",reason=\"truncated\"}", 1));
}

TEST_CASE("a native TCP frame cut short by the idle timeout is counted as truncated") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  const std::string whole = Prefixed(FrameBytes());
  asio::io_context io;
  auto socket = Connected(io, d, "native_tcp", whole.substr(0, whole.size() / 2));
  REQUIRE(MetricReaches(
      d, "telemetryd_ingest_connections_total{listener=\"native_tcp\",outcome=\"closed_idle\"}",
      1));
  CHECK(MetricReaches(
      d, "telemetryd_ingest_rejected_total{listener=\"native_tcp\",reason=\"truncated\"}", 1));
}

TEST_CASE(
    "a last StatsD TCP line without a newline is read when the daemon closes the "
    "connection") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  asio::io_context io;
  auto socket = Connected(io, d, "statsd_tcp", "idle.partial:1|c");
  REQUIRE(MetricReaches(
      d, "telemetryd_ingest_connections_total{listener=\"statsd_tcp\",outcome=\"closed_idle\"}",
      1));
  // docs/statsd.md: "a last line without one is read when the connection closes".
  CHECK(MetricReaches(d, "idle_partial_total", 1));
}

TEST_CASE("StatsD over TCP takes lines up to the listener's max_frame_bytes") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);  // StatsD TCP max_frame_bytes: 65536 by default
  REQUIRE_MESSAGE(d.ready(), d.log());
  asio::io_context io;
  // A 9000-byte set member: over the UDP limit of 8192, well under 65536.
  auto socket = Connected(io, d, "statsd_tcp", "long.set:" + std::string(9000, 'm') + "|s\n");
  CHECK(MetricReaches(d, "long_set", 1));
  CHECK(
      Metric(d,
             R"(telemetryd_ingest_rejected_total{listener="statsd_tcp",reason="line_too_long"})") ==
      0);
}

TEST_CASE("StatsD set members beyond what a set holds are counted as dropped") {
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  constexpr int kMembers = 12'000;
  for (int b = 0; b < kMembers / 100; ++b) {
    std::string datagram;
    for (int i = 0; i < 100; ++i) datagram += "many.users:u" + std::to_string(b * 100 + i) + "|s\n";
    SendUdp(d.port("statsd_udp"), datagram);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  REQUIRE(MetricReaches(d, "telemetryd_ingest_events_total{listener=\"statsd_udp\"}", kMembers));
  const double held = Metric(d, "many_users");
  double dropped = 0;
  const std::string exposition = HttpGet(d.port("prometheus"), "/metrics");
  std::istringstream in(exposition);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("telemetryd_aggregate_dropped_total{", 0) == 0) {
      dropped += std::stod(line.substr(line.rfind(' ') + 1));
    }
  }
  // Either every distinct member is counted, or what was left out is counted as a drop.
  CHECK(held + dropped >= kMembers);
}
