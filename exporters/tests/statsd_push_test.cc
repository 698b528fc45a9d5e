#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>
#include <vector>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>

#include "telemetryd/exporters/statsd_push.h"

using namespace telemetryd;
using namespace telemetryd::exporters;
using aggregate::MetricPoints;
using aggregate::MetricType;
using aggregate::SeriesPoint;
namespace asio = boost::asio;

namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

MetricPoints Points(std::string name, MetricType type, std::vector<SeriesPoint> series) {
  MetricPoints m;
  m.info.name = std::move(name);
  m.info.type = type;
  m.series = std::move(series);
  return m;
}

SeriesPoint Value(double value, Labels labels = {}) {
  SeriesPoint p;
  p.value = value;
  p.labels = std::move(labels);
  return p;
}

SeriesPoint Observations(std::uint64_t count, double sum, Labels labels = {},
                         std::vector<double> quantiles = {}) {
  SeriesPoint p;
  p.count = count;
  p.sum = sum;
  p.labels = std::move(labels);
  p.quantile_values = std::move(quantiles);
  return p;
}

// One of each metric type, with tags where they matter.
std::vector<MetricPoints> EveryType() {
  std::vector<MetricPoints> deltas;
  deltas.push_back(Points("app.requests", MetricType::kCounter,
                          {Value(3), Value(4, {{"route", "home"}, {"code", "200"}})}));
  deltas.push_back(Points("app.bytes", MetricType::kSum, {Value(2.5)}));
  deltas.push_back(
      Points("app.temp", MetricType::kLastValue, {Value(21.5), Value(-5, {{"k", "v"}})}));
  deltas.push_back(
      Points("app.latency", MetricType::kDistribution, {Observations(4, 90, {{"node", "n.1"}})}));
  auto summary = Points("app.duration", MetricType::kSummary,
                        {Observations(2, 0.75, {}, {0.25, 0.5, 0.5, 0.5})});
  summary.info.quantiles = {0.5, 0.9, 0.99, 0.999};
  deltas.push_back(std::move(summary));
  auto leaders = Points("vsr.leadership.active", MetricType::kLastValue, {Value(1)});
  leaders.info.span_gauge = true;
  deltas.push_back(std::move(leaders));
  auto users = Points("app.users", MetricType::kLastValue, {Value(2)});
  users.info.statsd_set = true;
  deltas.push_back(std::move(users));
  return deltas;
}

StatsdPushOptions Options(config::StatsdFormat format = config::StatsdFormat::kStandard) {
  StatsdPushOptions o;
  o.enabled = true;
  o.format = format;
  return o;
}

config::StatsdDestination Destination(const std::string& text) {
  auto d = config::ParseStatsdDestination(text);
  REQUIRE_MESSAGE(d.has_value(), (d ? "" : d.error().message));
  return *d;
}

// Every datagram that arrives on `socket` within `timeout` after the first `want` came.
template <typename Socket>
std::vector<std::string> Receive(Socket& socket, std::size_t want,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
  socket.non_blocking(true);
  std::vector<std::string> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[70000];
  while (out.size() < want && std::chrono::steady_clock::now() < deadline) {
    boost::system::error_code ec;
    const std::size_t n = socket.receive(asio::buffer(buf), 0, ec);
    if (ec) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    out.emplace_back(buf, n);
  }
  return out;
}

// A loopback UDP port nobody listens on (bound, then released).
std::uint16_t ClosedUdpPort(asio::io_context& io) {
  asio::ip::udp::socket s(io, {asio::ip::make_address("127.0.0.1"), 0});
  return s.local_endpoint().port();
}

std::string TempSocketPath() {
  char dir[] = "/tmp/telemetryd-statsd-XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  return std::string(dir) + "/statsd.sock";
}

}  // namespace

TEST_CASE("StatsD names: the characters a line cannot carry become '_'") {
  CHECK(StatsdName("a:b|c@d#e f\ng\th") == "a_b_c_d_e_f_g_h");
  CHECK(StatsdName("vsr.protocol.prepare.sent.count") == "vsr.protocol.prepare.sent.count");
}

TEST_CASE("standard format: every type, tags folded into the name") {
  const auto lines = FormatLines(EveryType(), Options());
  const std::vector<std::string> expected = {
      "app.requests:3|c",
      "app.requests.route_home.code_200:4|c",
      "app.bytes:2.5|c",
      "app.temp:21.5|g",
      "app.temp.k_v:0|g\napp.temp.k_v:-5|g",
      "app.latency.node_n_1.count:4|c",
      "app.latency.node_n_1.sum:90|c",
      "app.duration.count:2|c",
      "app.duration.sum:0.75|c",
      "app.duration.p50:0.25|g",
      "app.duration.p90:0.5|g",
      "app.duration.p99:0.5|g",
      "app.duration.p99_9:0.5|g",
      "vsr.leadership.active:1|g",
      "app.users:2|g",
  };
  CHECK(lines == expected);
}

TEST_CASE("dogstatsd format: tags after |#, prefix and global tags") {
  auto options = Options(config::StatsdFormat::kDogstatsd);
  options.prefix = "td";
  options.global_tags = {{"env", "prod"}, {"route", "ignored"}};
  const auto lines = FormatLines(EveryType(), options);
  const std::vector<std::string> expected = {
      "td.app.requests:3|c|#env:prod,route:ignored",
      // The series' own route wins over the global one.
      "td.app.requests:4|c|#route:home,code:200,env:prod",
      "td.app.bytes:2.5|c|#env:prod,route:ignored",
      "td.app.temp:21.5|g|#env:prod,route:ignored",
      "td.app.temp:0|g|#k:v,env:prod,route:ignored\ntd.app.temp:-5|g|#k:v,env:prod,route:ignored",
      "td.app.latency.count:4|c|#node:n.1,env:prod,route:ignored",
      "td.app.latency.sum:90|c|#node:n.1,env:prod,route:ignored",
      "td.app.duration.count:2|c|#env:prod,route:ignored",
      "td.app.duration.sum:0.75|c|#env:prod,route:ignored",
      "td.app.duration.p50:0.25|g|#env:prod,route:ignored",
      "td.app.duration.p90:0.5|g|#env:prod,route:ignored",
      "td.app.duration.p99:0.5|g|#env:prod,route:ignored",
      "td.app.duration.p99_9:0.5|g|#env:prod,route:ignored",
      "td.vsr.leadership.active:1|g|#env:prod,route:ignored",
      "td.app.users:2|g|#env:prod,route:ignored",
  };
  CHECK(lines == expected);
}

TEST_CASE("standard format: prefix and global tags are folded; a prefix may end in a dot") {
  auto options = Options();
  options.prefix = "host 1.";
  options.global_tags = {{"env", "prod.eu"}};
  const auto lines =
      FormatLines({Points("q", MetricType::kCounter, {Value(1, {{"a:b", "c|d,e"}})})}, options);
  CHECK(lines == std::vector<std::string>{"host_1.q.a_b_c_d,e.env_prod_eu:1|c"});
  options.format = config::StatsdFormat::kDogstatsd;
  CHECK(FormatLines({Points("q", MetricType::kCounter, {Value(1, {{"a:b", "c|d,e: f"}})})},
                    options) == std::vector<std::string>{"host_1.q:1|c|#a_b:c_d_e:_f,env:prod.eu"});
}

TEST_CASE("sums and observation sums as gauges; negative gauges are set through zero") {
  auto options = Options();
  options.sum_as = config::StatsdSumAs::kGauge;
  const auto lines =
      FormatLines({Points("s", MetricType::kSum, {Value(-2.5), Value(7, {{"k", "v"}})}),
                   Points("d", MetricType::kDistribution, {Observations(1, -3)})},
                  options);
  CHECK(lines == std::vector<std::string>{"s:0|g\ns:-2.5|g", "s.k_v:7|g", "d.count:1|c",
                                          "d.sum:0|g\nd.sum:-3|g"});
}

TEST_CASE("numbers: shortest exact text, no negative zero, non-finite values left out") {
  const auto lines =
      FormatLines({Points("g", MetricType::kLastValue,
                          {Value(-0.0), Value(0.1, {{"a", "1"}}), Value(1e21, {{"a", "2"}}),
                           Value(std::numeric_limits<double>::quiet_NaN(), {{"a", "3"}}),
                           Value(-std::numeric_limits<double>::infinity(), {{"a", "4"}}),
                           Value(123456789, {{"a", "5"}})})},
                  Options());
  CHECK(lines ==
        std::vector<std::string>{"g:0|g", "g.a_1:0.1|g", "g.a_2:1e+21|g", "g.a_5:123456789|g"});
  CHECK(FormatLines(std::vector<MetricPoints>{}, Options()).empty());
  CHECK(FormatLines({Points("idle", MetricType::kCounter, {})}, Options()).empty());
}

TEST_CASE("batching: lines are never split, an oversized line goes alone, packets fit the MTU") {
  std::vector<std::string> lines;
  lines.reserve(102);
  for (int i = 0; i < 100; ++i) {
    lines.push_back("metric.number." + std::to_string(i) + ":" + std::to_string(i * 7) + "|c");
  }
  lines.insert(lines.begin() + 50, std::string(600, 'x') + ":1|c");  // longer than the MTU
  lines.push_back("last:0|g\nlast:-1|g");
  const auto packets = Batch(lines, 512);
  REQUIRE(packets.size() > 2);
  std::size_t oversized = 0;
  for (const auto& p : packets) {
    if (p.size() > 512) {
      ++oversized;
      CHECK(p == lines[50]);
    }
    CHECK(p.front() != '\n');
    CHECK(p.back() != '\n');
  }
  CHECK(oversized == 1);
  // Joining the packets gives the lines back in order, each whole.
  std::string joined;
  for (const auto& p : packets) joined += (joined.empty() ? "" : "\n") + p;
  std::string expected;
  for (const auto& l : lines) expected += (expected.empty() ? "" : "\n") + l;
  CHECK(joined == expected);
  std::size_t at = 0;
  for (const auto& p : packets) {
    // Each packet starts at a line boundary of the original sequence.
    CHECK(expected.compare(at, p.size(), p) == 0);
    at += p.size() + 1;
  }
  // Full packets: the next line would not have fit.
  CHECK(Batch({"a:1|c", "b:1|c"}, 11) == std::vector<std::string>{"a:1|c\nb:1|c"});
  CHECK(Batch({"a:1|c", "b:1|c"}, 10) == std::vector<std::string>{"a:1|c", "b:1|c"});
  CHECK(Batch({}, 512).empty());
}

TEST_CASE("pushing to a UDP socket and a Unix datagram socket delivers the batched lines") {
  asio::io_context io;
  asio::ip::udp::socket udp(io, {asio::ip::make_address("127.0.0.1"), 0});
  const std::string path = TempSocketPath();
  asio::local::datagram_protocol::socket local(io, asio::local::datagram_protocol::endpoint(path));

  auto options = Options(config::StatsdFormat::kDogstatsd);
  options.mtu = 512;
  options.destinations = {Destination("127.0.0.1:" + std::to_string(udp.local_endpoint().port())),
                          Destination("unix://" + path)};
  StatsdPusher pusher(options);
  std::vector<SeriesPoint> series;
  series.reserve(60);
  for (int i = 0; i < 60; ++i) series.push_back(Value(i, {{"i", std::to_string(i)}}));
  const std::vector<MetricPoints> deltas = {Points("push.test", MetricType::kCounter, series)};
  const auto packets = Batch(FormatLines(deltas, options), 512);
  REQUIRE(packets.size() >= 3);

  pusher.Push(deltas);
  CHECK(Receive(udp, packets.size()) == packets);
  CHECK(Receive(local, packets.size()) == packets);
  for (const auto& c : pusher.counters()) {
    CHECK(c.flushes_ok == 1);
    CHECK(c.flushes_failed == 0);
    CHECK(c.packets_sent == packets.size());
    CHECK(c.packets_failed == 0);
  }
  CHECK(pusher.counters()[1].destination == "unix://" + path);

  // A push with nothing in it sends nothing and counts nothing.
  pusher.Push({Points("push.test", MetricType::kCounter, {})});
  CHECK(Receive(udp, 1, std::chrono::milliseconds(100)).empty());
  CHECK(pusher.counters()[0].flushes_ok == 1);

  // The exact bytes of a small push.
  pusher.Push({Points("t", MetricType::kLastValue, {Value(-5)})});
  CHECK(Receive(udp, 1) == std::vector<std::string>{"t:0|g\nt:-5|g"});
  CHECK(Receive(local, 1) == std::vector<std::string>{"t:0|g\nt:-5|g"});
  ::unlink(path.c_str());
  ::rmdir(path.substr(0, path.rfind('/')).c_str());
}

TEST_CASE("failures are counted per destination and never stop the other destinations") {
  asio::io_context io;
  asio::ip::udp::socket udp(io, {asio::ip::make_address("127.0.0.1"), 0});
  const std::string good = "127.0.0.1:" + std::to_string(udp.local_endpoint().port());
  // A label longer than 63 bytes cannot be put in a DNS query: the resolver fails on this machine
  // without sending anything.
  const std::string unresolvable = std::string(70, 'x') + ".invalid:8125";
  const std::string missing = "unix:///nonexistent/telemetryd-test/statsd.sock";
  auto options = Options();
  options.destinations = {Destination(unresolvable), Destination(missing), Destination(good)};
  StatsdPusher pusher(options);
  const std::vector<MetricPoints> deltas = {Points("c", MetricType::kCounter, {Value(1)})};
  pusher.Push(deltas);
  pusher.Push(deltas);
  CHECK(Receive(udp, 2) == std::vector<std::string>{"c:1|c", "c:1|c"});
  const auto counters = pusher.counters();
  REQUIRE(counters.size() == 3);
  for (std::size_t i = 0; i < 2; ++i) {
    CAPTURE(counters[i].destination);
    CHECK(counters[i].flushes_ok == 0);
    CHECK(counters[i].flushes_failed == 2);
    CHECK(counters[i].packets_sent == 0);
    CHECK(counters[i].packets_failed == 2);
  }
  CHECK(counters[2].flushes_ok == 2);
  CHECK(counters[2].packets_sent == 2);

  std::vector<prometheus::MetricFamily> families;
  AddStatsdPushMetrics(pusher, families);
  REQUIRE(families.size() == 2);
  CHECK(families[0].name == "telemetryd_statsd_flushes_total");
  CHECK(families[1].name == "telemetryd_statsd_packets_total");
  REQUIRE(families[1].metric.size() == 6);
  CHECK(families[1].metric[1].label[0].value == unresolvable);
  CHECK(families[1].metric[1].label[1].value == "failed");
  CHECK(families[1].metric[1].counter.value == 2);
  CHECK(families[1].metric[4].label[1].value == "sent");
  CHECK(families[1].metric[4].counter.value == 2);
}

TEST_CASE("a refused UDP destination is counted as failed, and sending resumes when it is back") {
  asio::io_context io;
  const std::uint16_t port = ClosedUdpPort(io);
  auto options = Options();
  options.destinations = {Destination("127.0.0.1:" + std::to_string(port))};
  StatsdPusher pusher(options);
  const std::vector<MetricPoints> deltas = {Points("c", MetricType::kCounter, {Value(1)})};
  // The kernel reports the refusal of one datagram (an ICMP port unreachable) on a later send.
  for (int i = 0; i < 20 && pusher.counters()[0].packets_failed == 0; ++i) {
    pusher.Push(deltas);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(pusher.counters()[0].packets_failed >= 1);
  CHECK(pusher.counters()[0].flushes_failed >= 1);

  asio::ip::udp::socket udp(io, {asio::ip::make_address("127.0.0.1"), port});
  pusher.Push(deltas);
  pusher.Push(deltas);  // the first may still meet the last refusal
  CHECK(!Receive(udp, 1).empty());
}

TEST_CASE("a datagram too large for UDP fails alone; the others of the push still go") {
  asio::io_context io;
  asio::ip::udp::socket udp(io, {asio::ip::make_address("127.0.0.1"), 0});
  auto options = Options();
  options.destinations = {Destination("127.0.0.1:" + std::to_string(udp.local_endpoint().port()))};
  StatsdPusher pusher(options);
  // A name longer than a UDP datagram can be: its line goes alone and cannot be sent.
  pusher.Push({Points("a", MetricType::kCounter, {Value(1)}),
               Points(std::string(70'000, 'n'), MetricType::kCounter, {Value(1)}),
               Points("b", MetricType::kCounter, {Value(2)})});
  CHECK(Receive(udp, 2) == std::vector<std::string>{"a:1|c", "b:2|c"});
  const auto c = pusher.counters()[0];
  CHECK(c.packets_sent == 2);
  CHECK(c.packets_failed == 1);
  CHECK(c.flushes_failed == 1);
  CHECK(c.flushes_ok == 0);
}

TEST_CASE("a delta snapshot of an engine formats its changes once") {
  auto created = aggregate::Engine::Create({}, {});
  REQUIRE(created.has_value());
  auto& engine = **created;
  auto shard = engine.NewShard();
  const aggregate::StatsdTagView tags[] = {{"route", "home"}, {"code", "200"}};
  shard->RecordStatsd({"app.requests", aggregate::StatsdKind::kCounter, 3, {}, false, 1, tags});
  shard->RecordStatsd({"app.temp", aggregate::StatsdKind::kGauge, 21.5, {}, false, 1, {}});
  shard->RecordStatsd({"app.latency", aggregate::StatsdKind::kTimer, 40, {}, false, 1, {}});
  shard->RecordStatsd({"app.latency", aggregate::StatsdKind::kTimer, 50, {}, false, 1, {}});
  shard->Flush();
  const auto lines =
      FormatLines(engine.TakeDeltaSnapshot(), Options(config::StatsdFormat::kDogstatsd));
  const std::vector<std::string> expected = {
      // Tags in the series key's order: sorted by key.
      "app.requests:3|c|#code:200,route:home",
      "app.temp:21.5|g",
      "app.latency.count:2|c",
      "app.latency.sum:90|c",
  };
  CHECK(lines == expected);
  // Nothing changed since: nothing to send.
  CHECK(FormatLines(engine.TakeDeltaSnapshot(), Options()).empty());
  shard->RecordStatsd({"app.requests", aggregate::StatsdKind::kCounter, 1, {}, false, 1, tags});
  shard->Flush();
  CHECK(FormatLines(engine.TakeDeltaSnapshot(), Options()) ==
        std::vector<std::string>{"app.requests.code_200.route_home:1|c"});
}
