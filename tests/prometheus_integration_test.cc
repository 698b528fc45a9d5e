// telemetryd against the real Prometheus: promtool accepts its exposition with all four built-in
// catalogs populated, and a Prometheus server scraping it every second answers PromQL with the
// values that were sent.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>

#include "support/catalog_events.h"
#include "support/daemon_process.h"
#include "telemetryd/client/client.h"
#include "telemetryd/config/catalog_loader.h"

using namespace telemetryd;
using telemetryd::test::ChildProcess;
using telemetryd::test::DaemonProcess;
using telemetryd::test::Eventually;
using telemetryd::test::HttpGet;
using telemetryd::test::HttpRequest;
using telemetryd::test::MetricValue;

namespace {

constexpr const char* kPromtool = "/usr/bin/promtool";
constexpr const char* kPrometheus = "/usr/bin/prometheus";

const std::string kDaemonConfig = R"(
listeners:
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {port: 0}, tcp: {enabled: false}}
prometheus: {port: 0}
)";

std::unique_ptr<client::Client> Connect(const DaemonProcess& d) {
  client::ClientOptions options;
  options.transport = client::Transport::kTcp;
  options.port = d.port("native_tcp");
  auto c = client::Client::Connect(options);
  REQUIRE(c.has_value());
  return std::move(*c);
}

wire::EventRecord Event(std::string name, std::vector<std::pair<std::string, wire::Number>> m,
                        std::vector<std::pair<std::string, wire::Term>> meta) {
  wire::EventRecord e;
  e.name = std::move(name);
  e.measurements = std::move(m);
  e.metadata = std::move(meta);
  return e;
}

std::string TempDir() {
  char path[] = "/tmp/telemetryd-prom-XXXXXX";
  return ::mkdtemp(path) != nullptr ? std::string(path) : std::string();
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || c == '_' || c == '-' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

// The value of a PromQL instant query with one result, or NaN.
double Query(std::uint16_t port, const std::string& promql) {
  const std::string body = HttpGet(port, "/api/v1/query?query=" + UrlEncode(promql));
  const auto json = nlohmann::json::parse(body, nullptr, false);
  if (json.is_discarded() || json.value("status", "") != "success") return std::nan("");
  const auto& result = json["data"]["result"];
  if (!result.is_array() || result.size() != 1) return std::nan("");
  return std::stod(result[0]["value"][1].get<std::string>());
}

}  // namespace

TEST_CASE("promtool accepts the exposition with every built-in catalog populated") {
  REQUIRE_MESSAGE(std::filesystem::exists(kPromtool),
                  "promtool is missing: scripts/install-deps installs it");
  const auto catalogs = config::LoadCatalogs({TELEMETRYD_CATALOG_DIR});
  REQUIRE(catalogs.has_value());
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig);
  REQUIRE_MESSAGE(d.ready(), d.log());
  auto c = Connect(d);
  const std::size_t sent = telemetryd::test::SendEveryCatalogEvent(*c, *catalogs);
  REQUIRE(sent > 80);
  // StatsD too: counter, gauge, timer, histogram, set, with and without tags.
  {
    namespace asio = boost::asio;
    asio::io_context io;
    asio::ip::udp::socket socket(io, asio::ip::udp::v4());
    const std::string lines =
        "app.requests:1|c|#env:prod,canary\napp.queue:5|g\napp.latency:12|ms|@0.5\n"
        "app.size:300|h|#env:prod\napp.users:alice|s\n";
    socket.send_to(asio::buffer(lines),
                   {asio::ip::make_address("127.0.0.1"), d.port("statsd_udp")});
  }
  REQUIRE(Eventually([&] {
    const auto text = HttpGet(d.port("prometheus"), "/metrics");
    return MetricValue(text, "telemetryd_ingest_events_total{listener=\"native_tcp\"}") ==
               static_cast<double>(sent) &&
           MetricValue(text, "telemetryd_ingest_events_total{listener=\"statsd_udp\"}") == 5;
  }));
  const std::string dir = TempDir();
  const std::string exposition = dir + "/metrics.txt";
  {
    std::ofstream out(exposition);
    out << HttpGet(d.port("prometheus"), "/metrics");
  }
  const auto promtool =
      telemetryd::test::RunCommand(std::string(kPromtool) + " check metrics < " + exposition);
  CHECK_MESSAGE(promtool.status == 0, promtool.output);
  CHECK_MESSAGE(promtool.output.empty(), promtool.output);
  std::filesystem::remove_all(dir);
}

TEST_CASE("promtool accepts the exposition of StatsD tags and mapping labels that clash") {
  REQUIRE_MESSAGE(std::filesystem::exists(kPromtool),
                  "promtool is missing: scripts/install-deps installs it");
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig + R"(
statsd:
  mappings:
    - {match: "svc.*.lat", name: "svc.lat", labels: {service: "$1"}}
)");
  REQUIRE_MESSAGE(d.ready(), d.log());
  // Tags that share a name once sanitized, a reserved "__" prefix, the bucket label of a
  // histogram, tags named as mapping labels, and series that become the same.
  telemetryd::test::SendUdp(d.port("statsd_udp"),
                            "clash.dash:1|c|#a-b:x,a_b:y\nclash.dash:1|c|#a_b:x\n"
                            "clash.reserved:1|c|#__x:1,_x:2,__le:3\n"
                            "clash.timer:5|ms|#le:7,exported_le:8,quantile:9\n"
                            "clash.hist:5|h|#le:1\nclash.hist:6|h|#le:2\n"
                            "svc.web.lat:3|ms|#service:tag\nsvc.web.lat:4|ms\n");
  std::string text;
  REQUIRE(Eventually([&] {
    text = HttpGet(d.port("prometheus"), "/metrics");
    return MetricValue(text, "telemetryd_ingest_events_total{listener=\"statsd_udp\"}") == 8;
  }));
  // The clash counts are those of the last scrape: the one above had everything.
  text = HttpGet(d.port("prometheus"), "/metrics");
  // a_b=y (repeats a_b), _x=2 (repeats _x), the timer's le=7 (exported_le, after the tag
  // exported_le=8), and the tag service of svc.web.lat (repeats the mapping label).
  CHECK(MetricValue(text, "telemetryd_exposition_label_clashes") == 4);
  // clash.dash{a_b="x"} twice, svc_lat_seconds{service="web"} twice.
  CHECK(MetricValue(text, "telemetryd_exposition_series_clashes") == 2);
  // Every scrape had the memory it needed.
  CHECK(MetricValue(text, "telemetryd_scrape_failures_total") == 0);
  CHECK(text.find(R"(clash_timer_seconds_count{exported_le="8",exported_quantile="9"} 1)") !=
        std::string::npos);
  CHECK(text.find(R"(clash_hist_bucket{exported_le="2",le="+Inf"} 1)") != std::string::npos);
  const std::string dir = TempDir();
  const std::string exposition = dir + "/metrics.txt";
  {
    std::ofstream out(exposition);
    out << text;
  }
  const auto promtool =
      telemetryd::test::RunCommand(std::string(kPromtool) + " check metrics < " + exposition);
  CHECK_MESSAGE(promtool.status == 0, (promtool.output + "\n" + text));
  CHECK_MESSAGE(promtool.output.empty(), promtool.output);
  std::filesystem::remove_all(dir);
}

TEST_CASE("help texts with line feeds and backslashes are escaped, and promtool accepts them") {
  REQUIRE_MESSAGE(std::filesystem::exists(kPromtool),
                  "promtool is missing: scripts/install-deps installs it");
  const std::string dir = TempDir();
  const std::string catalog = dir + "/app.yaml";
  // A literal block keeps its line feeds, the last one too.
  std::ofstream(catalog) << "system: app\n"
                            "events:\n"
                            "  app.job.done: {measurements: {count: none}}\n"
                            "metrics:\n"
                            "  - counter: app.job.done.count\n"
                            "    description: |\n"
                            "      Jobs done, C:\\queue\\jobs;\n"
                            "      one line each.\n";
  DaemonProcess d(TELEMETRYD_BINARY,
                  kDaemonConfig + "catalogs: {builtin: false, paths: [" + catalog + "]}\n");
  REQUIRE_MESSAGE(d.ready(), d.log());
  auto c = Connect(d);
  REQUIRE(c->Send(Event("app.job.done", {{"count", wire::Number::Int(1)}}, {})));
  REQUIRE(c->Flush());
  telemetryd::test::SendUdp(d.port("statsd_udp"), "path.C\\tmp:1|c\n");
  std::string text;
  REQUIRE(Eventually([&] {
    text = HttpGet(d.port("prometheus"), "/metrics");
    return MetricValue(text, "app_job_done_count_total") == 1 &&
           MetricValue(text, "path_C_tmp_total") == 1;
  }));
  CHECK(text.find("# HELP app_job_done_count_total Jobs done, C:\\\\queue\\\\jobs;\\none line "
                  "each.\\n\n") != std::string::npos);
  CHECK(text.find("# HELP path_C_tmp_total StatsD metric path.C\\\\tmp.\n") != std::string::npos);
  const std::string exposition = dir + "/metrics.txt";
  std::ofstream(exposition) << text;
  const auto promtool =
      telemetryd::test::RunCommand(std::string(kPromtool) + " check metrics < " + exposition);
  CHECK_MESSAGE(promtool.status == 0, (promtool.output + "\n" + text));
  CHECK_MESSAGE(promtool.output.empty(), promtool.output);
  std::filesystem::remove_all(dir);
}

TEST_CASE("gzip on request, basic auth when configured, health endpoints") {
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig + "\nlogging: {level: info}\n");
  REQUIRE(d.ready());
  const auto plain = HttpRequest(d.port("prometheus"), "/metrics");
  CHECK(plain.status == 200);
  CHECK(plain.headers.find("Content-Encoding: gzip") == std::string::npos);
  const auto zipped = HttpRequest(d.port("prometheus"), "/metrics", "Accept-Encoding: gzip\r\n");
  CHECK(zipped.status == 200);
  CHECK(zipped.headers.find("Content-Encoding: gzip") != std::string::npos);
  REQUIRE(zipped.body.size() > 2);
  CHECK(static_cast<unsigned char>(zipped.body[0]) == 0x1f);  // gzip magic
  CHECK(static_cast<unsigned char>(zipped.body[1]) == 0x8b);
  CHECK(HttpRequest(d.port("prometheus"), "/-/healthy").status == 200);
  CHECK(HttpRequest(d.port("prometheus"), "/-/ready").status == 200);

  DaemonProcess secured(TELEMETRYD_BINARY,
                        R"(
listeners:
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {port: 0}, tcp: {port: 0}}
prometheus: {port: 0, basic_auth: {username: scraper, password: s3cret}}
)");
  REQUIRE(secured.ready());
  CHECK(HttpRequest(secured.port("prometheus"), "/metrics").status == 401);
  // "scraper:s3cret" in base64.
  CHECK(HttpRequest(secured.port("prometheus"), "/metrics",
                    "Authorization: Basic c2NyYXBlcjpzM2NyZXQ=\r\n")
            .status == 200);
  CHECK(HttpRequest(secured.port("prometheus"), "/metrics",
                    "Authorization: Basic c2NyYXBlcjp3cm9uZw==\r\n")
            .status == 401);
}

TEST_CASE("clients that never finish their request neither block scrapes nor stay connected") {
  namespace asio = boost::asio;
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig);
  REQUIRE(d.ready());
  asio::io_context io;
  std::vector<asio::ip::tcp::socket> stalled;
  for (int i = 0; i < 4; ++i) {
    auto& s = stalled.emplace_back(io);
    s.connect({asio::ip::make_address("127.0.0.1"), d.port("prometheus")});
    asio::write(s, asio::buffer(std::string("GET /metrics HTTP/1.1\r\n")));  // never ends
  }
  // A scrape meanwhile is answered at once: idle clients do not hold every HTTP thread.
  auto health = std::async(std::launch::async,
                           [&] { return HttpRequest(d.port("prometheus"), "/-/healthy"); });
  REQUIRE(health.wait_for(std::chrono::seconds(3)) == std::future_status::ready);
  CHECK(health.get().status == 200);
  // And the stalled connections are closed after the request timeout (5 s), not kept for good.
  const auto start = std::chrono::steady_clock::now();
  for (auto& s : stalled) {
    s.non_blocking(false);
    const timeval limit{20, 0};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    char buf[4096];
    boost::system::error_code ec;
    while (!ec) s.read_some(asio::buffer(buf), ec);
    CHECK_MESSAGE(ec == asio::error::eof, ec.message());
  }
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(15));
}

TEST_CASE("a real Prometheus server scraping every second answers PromQL with what was sent") {
  REQUIRE_MESSAGE(std::filesystem::exists(kPrometheus),
                  "prometheus is missing: scripts/install-deps installs it");
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig);
  REQUIRE(d.ready());
  const std::string dir = TempDir();
  const std::uint16_t prom_port = telemetryd::test::FreeTcpPort();
  {
    std::ofstream config(dir + "/prometheus.yml");
    config << "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
              "scrape_configs:\n"
              "  - job_name: telemetryd\n"
              "    static_configs: [{targets: ['127.0.0.1:"
           << d.port("prometheus") << "']}]\n";
  }
  ChildProcess prometheus(
      {kPrometheus, "--config.file=" + dir + "/prometheus.yml",
       "--storage.tsdb.path=" + dir + "/data",
       "--web.listen-address=127.0.0.1:" + std::to_string(prom_port), "--log.level=warn"},
      dir + "/prometheus.log");
  REQUIRE(prometheus.started());
  REQUIRE_MESSAGE(Eventually([&] { return HttpRequest(prom_port, "/-/ready").status == 200; },
                             std::chrono::seconds(30)),
                  "prometheus did not become ready");

  auto c = Connect(d);
  const auto node = wire::Term::String("n1");
  auto send = [&](const wire::EventRecord& e, int times) {
    for (int i = 0; i < times; ++i) REQUIRE(c->Send(e));
    REQUIRE(c->Flush());
  };
  const auto prepare = Event("vsr.protocol.prepare.sent", {{"count", wire::Number::Int(2)}},
                             {{"node_id", node}, {"status", wire::Term::Atom("normal")}});
  send(prepare, 5);
  // 3 ms in native nanoseconds, ten times.
  send(Event("vsr.state_machine.operation.stop",
             {{"monotonic_time", wire::Number::Int(1)}, {"duration", wire::Number::Int(3'000'000)}},
             {{"node_id", node}}),
       10);
  send(Event("router_core.route.stop", {{"duration", wire::Number::Int(1830)}},
             {{"tenant_id", wire::Term::String("t")},
              {"policy_id", wire::Term::String("p")},
              {"provider_id", wire::Term::String("openai")},
              {"reason", wire::Term::String("weighted")},
              {"result", wire::Term::Atom("ok")}}),
       10);
  send(Event("snakepit.pool.saturated",
             {{"count", wire::Number::Int(1)}, {"queue_size", wire::Number::Int(42)}},
             {{"pool", wire::Term::Atom("hpc_pool")}}),
       1);

  const std::string counter = "vsr_protocol_prepare_sent_count_total{node_id=\"n1\"}";
  REQUIRE_MESSAGE(
      Eventually([&] { return Query(prom_port, counter) == 5; }, std::chrono::seconds(20)),
      "the counter never reached 5 in Prometheus");
  send(prepare, 7);
  REQUIRE(Eventually([&] { return Query(prom_port, counter) == 12; }, std::chrono::seconds(20)));
  // The counter's increase over the last minute, computed by PromQL from the scraped samples.
  CHECK(Query(prom_port,
              "max_over_time(" + counter + "[1m]) - min_over_time(" + counter + "[1m])") == 7);
  CHECK(Query(prom_port, "increase(" + counter + "[1m])") > 0);

  // All ten observations were 3 ms: the median lies in the bucket (2.56 ms, 5.12 ms].
  const double median =
      Query(prom_port,
            "histogram_quantile(0.5, vsr_state_machine_operation_stop_duration_seconds_bucket)");
  CHECK(median > 0.00256);
  CHECK(median <= 0.00512);
  // The summary's median within the sketch's 1% of 1830 microseconds.
  const double route_median =
      Query(prom_port, "router_core_route_duration_seconds{quantile=\"0.5\"}");
  CHECK(std::fabs(route_median - 0.00183) <= 0.01 * 0.00183);
  CHECK(Query(prom_port,
              "snakepit_pool_saturated_queue_size{pool=\"a_pool\"} or "
              "snakepit_pool_saturated_queue_size{pool=\"hpc_pool\"}") == 42);
  CHECK(Query(prom_port, "up{job=\"telemetryd\"}") == 1);
  std::filesystem::remove_all(dir);
}

// Scrapes yield to ingest: the thread that converts and serializes a scrape runs at nice 10, the
// ingest workers keep the daemon's priority.
TEST_CASE("a scrape runs at a lower priority than the ingest workers") {
  DaemonProcess d(TELEMETRYD_BINARY, kDaemonConfig);
  REQUIRE(d.ready());
  REQUIRE(HttpRequest(d.port("prometheus"), "/metrics").status == 200);
  std::map<std::string, int> nice_by_thread;  // "tid name" -> nice
  const std::string task_dir = "/proc/" + std::to_string(d.pid()) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(task_dir)) {
    std::ifstream comm_file(task.path() / "comm");
    std::string comm;
    std::getline(comm_file, comm);
    std::ifstream stat_file(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
    // Fields after the command name's closing parenthesis: state is field 3, nice field 19.
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 19 && fields >> field; ++i) {
    }
    nice_by_thread[task.path().filename().string() + " " + comm] = std::stoi(field);
  }
  int ingest = 0;
  int lowered = 0;
  for (const auto& [thread, nice] : nice_by_thread) {
    INFO(thread << " nice " << nice);
    if (thread.find(" ingest/") != std::string::npos) {
      ++ingest;
      CHECK(nice == 0);
    } else if (nice == 10) {
      ++lowered;
    }
  }
  CHECK(ingest >= 1);
  CHECK(lowered >= 1);  // the civetweb thread that served the scrape
}
