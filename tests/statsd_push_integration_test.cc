// The StatsD push exporter against the reference StatsD daemon (the npm package statsd 0.9, run by
// node on loopback ports): events and StatsD lines go into the real telemetryd binary, and what
// statsd's admin interface reports must be what was sent, in both line formats.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>

#include "support/daemon_process.h"
#include "telemetryd/client/client.h"
#include "telemetryd/wire/encoder.h"

extern char** environ;

using namespace telemetryd;
using telemetryd::test::DaemonProcess;
using telemetryd::test::Eventually;
using telemetryd::test::HttpGet;
using telemetryd::test::MetricValue;
using telemetryd::test::SendUdp;
namespace asio = boost::asio;

namespace {

// Ports the kernel hands out, released at once for the child to bind (it retries on a clash).
std::uint16_t FreeUdpPort() {
  asio::io_context io;
  asio::ip::udp::socket s(io, {asio::ip::make_address("127.0.0.1"), 0});
  return s.local_endpoint().port();
}
std::uint16_t FreeTcpPort() {
  asio::io_context io;
  asio::ip::tcp::acceptor a(io, {asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// The entries of a JavaScript object as node's util.inspect prints it, e.g.
// "{ 'td.app.requests': 3, foo: -5 }" (keys that are not identifiers are quoted), one entry per
// line when long. Values are kept as text.
std::map<std::string, std::string> ParseInspect(const std::string& text) {
  std::map<std::string, std::string> out;
  std::size_t i = text.find('{');
  if (i == std::string::npos) return out;
  ++i;
  const std::size_t n = text.size();
  while (true) {
    while (i < n && (std::isspace(static_cast<unsigned char>(text[i])) != 0 || text[i] == ',')) ++i;
    if (i >= n || text[i] == '}') break;
    std::string key;
    if (text[i] == '\'' || text[i] == '"') {
      const char quote = text[i++];
      while (i < n && text[i] != quote) {
        if (text[i] == '\\' && i + 1 < n) ++i;
        key.push_back(text[i++]);
      }
      ++i;
    } else {
      while (i < n && text[i] != ':') key.push_back(text[i++]);
    }
    if (i >= n || text[i] != ':') break;
    ++i;
    while (i < n && text[i] == ' ') ++i;
    std::string value;
    int depth = 0;
    for (; i < n; ++i) {
      const char c = text[i];
      if (c == '[' || c == '{') ++depth;
      if ((c == ']' || c == '}') && depth-- == 0) break;
      if (depth == 0 && (c == ',' || c == '\n')) break;
      value.push_back(c);
    }
    while (!value.empty() && value.back() == ' ') value.pop_back();
    out[key] = value;
  }
  return out;
}

// The reference StatsD daemon on free loopback ports, with no backend and no flush during the
// test: its counters add up every value pushed, its gauges keep the last value set. Killed by pid
// when the object goes away.
class ReferenceStatsd {
 public:
  ReferenceStatsd() {
    char dir[] = "/tmp/telemetryd-statsd-XXXXXX";
    if (::mkdtemp(dir) == nullptr) {
      problem_ = "cannot create a temporary directory";
      return;
    }
    dir_ = dir;
    struct stat st {};
    if (::stat(TELEMETRYD_STATSD_JS, &st) != 0) {
      problem_ = std::string("the reference StatsD daemon is not installed: ") +
                 TELEMETRYD_STATSD_JS +
                 " is missing. scripts/test installs it; by hand: npm install --prefix "
                 "<build dir>/npm --no-audit --no-fund statsd@0.9.0";
      return;
    }
    // A port taken between choosing and binding makes statsd exit: try again with others.
    for (int attempt = 0; attempt < 3 && !ready_; ++attempt) Start();
  }

  ~ReferenceStatsd() {
    Stop();
    if (!dir_.empty()) {
      ::unlink((dir_ + "/config.js").c_str());
      ::unlink((dir_ + "/statsd.log").c_str());
      ::rmdir(dir_.c_str());
    }
  }
  ReferenceStatsd(const ReferenceStatsd&) = delete;
  ReferenceStatsd& operator=(const ReferenceStatsd&) = delete;

  [[nodiscard]] bool ready() const { return ready_; }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string problem() const { return problem_ + "\nstatsd log:\n" + log(); }
  [[nodiscard]] std::string log() const {
    std::ifstream in(dir_ + "/statsd.log");
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
  }

  // Runs an admin command ("counters", "gauges", "timers", "health") and returns its answer.
  [[nodiscard]] std::string Admin(const std::string& command) const {
    asio::io_context io;
    asio::ip::tcp::socket socket(io);
    boost::system::error_code ec;
    socket.connect({asio::ip::make_address("127.0.0.1"), mgmt_port_}, ec);
    if (ec) return {};
    asio::write(socket, asio::buffer(command + "\n"), ec);
    if (ec) return {};
    // Lists end with "END\n\n"; health is one line. Non-blocking reads keep the wait bounded.
    const std::string end = command == "health" ? "\n" : "END\n\n";
    socket.non_blocking(true, ec);
    std::string answer;
    char buf[65536];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (answer.find(end) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      const std::size_t got = socket.read_some(asio::buffer(buf), ec);
      answer.append(buf, got);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      } else if (ec) {
        break;
      }
    }
    return answer;
  }

  [[nodiscard]] std::map<std::string, std::string> Values(const std::string& command) const {
    return ParseInspect(Admin(command));
  }

 private:
  void Start() {
    port_ = FreeUdpPort();
    mgmt_port_ = FreeTcpPort();
    {
      std::ofstream config(dir_ + "/config.js");
      config << "{ port: " << port_ << ", mgmt_port: " << mgmt_port_
             << ", address: \"127.0.0.1\", mgmt_address: \"127.0.0.1\", flushInterval: 3600000,"
                " backends: [] }\n";
    }
    const std::string log_path = dir_ + "/statsd.log";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    std::vector<std::string> args = {"node", TELEMETRYD_STATSD_JS, dir_ + "/config.js"};
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawnp(&pid_, "node", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      problem_ = "cannot run node (is Node.js installed?): " + std::string(std::strerror(rc));
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        problem_ = "statsd exited during startup";
        return;
      }
      if (Admin("health").find("health: up") != std::string::npos) {
        ready_ = true;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    problem_ = "statsd did not answer on its admin port within 15 s";
    Stop();
  }

  void Stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  std::string dir_;
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t mgmt_port_ = 0;
  bool ready_ = false;
  std::string problem_;
};

struct Expect {
  std::string key;
  double value;
  double tolerance = 0;  // relative; 0: exact
};

bool Matches(const std::map<std::string, std::string>& values, const Expect& e) {
  const auto it = values.find(e.key);
  if (it == values.end()) return false;
  const double got = std::strtod(it->second.c_str(), nullptr);
  return e.tolerance == 0 ? got == e.value
                          : std::fabs(got - e.value) <= e.tolerance * std::fabs(e.value);
}

// Waits until statsd reports every expected counter and gauge, then checks each one (so a
// mismatch names the key and both values).
void CheckStatsd(const ReferenceStatsd& statsd, const std::vector<Expect>& counters,
                 const std::vector<Expect>& gauges) {
  auto all = [&] {
    const auto c = statsd.Values("counters");
    const auto g = statsd.Values("gauges");
    for (const auto& e : counters) {
      if (!Matches(c, e)) return false;
    }
    for (const auto& e : gauges) {
      if (!Matches(g, e)) return false;
    }
    return true;
  };
  Eventually(all, std::chrono::seconds(10));
  const auto c = statsd.Values("counters");
  const auto g = statsd.Values("gauges");
  auto check = [](const std::vector<Expect>& expected,
                  const std::map<std::string, std::string>& values, const std::string& kind) {
    for (const auto& e : expected) {
      const auto it = values.find(e.key);
      const std::string got = it == values.end() ? std::string("nothing") : it->second;
      INFO(kind, " ", e.key, " expected ", e.value, " got ", got);
      CHECK(Matches(values, e));
    }
  };
  check(counters, c, "counter");
  check(gauges, g, "gauge");
}

std::string DaemonConfig(std::uint16_t statsd_port, const std::string& push) {
  return "listeners:\n"
         "  workers: 2\n"
         "  native: {udp: {port: 0}, tcp: {enabled: false}}\n"
         "  statsd: {udp: {port: 0}, tcp: {enabled: false}}\n"
         "prometheus: {port: 0}\n"
         "statsd_push:\n"
         "  enabled: true\n"
         "  destinations: [\"127.0.0.1:" +
         std::to_string(statsd_port) + "\"]\n" + push;
}

wire::EventRecord Event(std::string name, std::vector<std::pair<std::string, wire::Number>> m,
                        std::vector<std::pair<std::string, wire::Term>> metadata) {
  wire::EventRecord e;
  e.name = std::move(name);
  e.measurements = std::move(m);
  e.metadata = std::move(metadata);
  return e;
}

// StatsD lines and catalog events (the built-in Router Core catalog) covering every metric type.
void SendEverything(const DaemonProcess& d) {
  SendUdp(d.port("statsd_udp"),
          "app.requests:3|c\n"
          "app.requests:4|c|#route:home\n"
          "app.temp:-5|g\n"
          "app.queue:7|g\n"
          "app.latency:10|ms\n"
          "app.latency:20|ms\n"
          "app.latency:30|ms|@0.5\n"
          "app.users:alice|s\n"
          "app.users:bob|s\n"
          "app.users:alice|s");

  client::ClientOptions options;
  options.port = d.port("native_udp");
  auto c = client::Client::Connect(options);
  REQUIRE_MESSAGE(c.has_value(), (c ? std::string() : c.error().message));
  auto& client = **c;
  const std::vector<std::pair<std::string, wire::Term>> store = {
      {"tenant_id", wire::Term::String("t1")},
      {"policy_id", wire::Term::String("pol")},
      {"table", wire::Term::Atom("policies")},
      {"correlation_id", wire::Term::String("c1")}};
  using wire::Number;
  REQUIRE(client.Send(Event("router_policy_store.list_policies",
                            {{"duration_us", Number::Int(1500)},
                             {"queue_len", Number::Int(3)},
                             {"count", Number::Int(4)}},
                            store)));
  REQUIRE(client.Send(Event("router_policy_store.list_policies",
                            {{"duration_us", Number::Int(2500)},
                             {"queue_len", Number::Int(5)},
                             {"count", Number::Int(6)}},
                            store)));
  REQUIRE(client.Send(Event("router_policy_store.delete_policy",
                            {{"duration_us", Number::Int(100)},
                             {"queue_len", Number::Int(-2)},
                             {"count", Number::Int(1)}},
                            store)));
  // Route latencies 1 ms .. 100 ms: a summary with known quantiles.
  for (int i = 1; i <= 100; ++i) {
    REQUIRE(client.Send(Event("router_core.route.stop",
                              {{"duration", Number::Int(std::int64_t{i} * 1000)}},
                              {{"tenant_id", wire::Term::String("t1")},
                               {"policy_id", wire::Term::String("pol")},
                               {"provider_id", wire::Term::String("p1")},
                               {"reason", wire::Term::String("r")},
                               {"result", wire::Term::Atom("ok")}})));
  }
  REQUIRE(client.Flush());
}

using Tags = std::vector<std::pair<std::string, std::string>>;

// What SendEverything must become in statsd. key(name, tags, suffix) spells a key in the format
// used; `suffix` is an aggregate's (".count", ".p50").
template <typename Key>
void CheckEverything(const ReferenceStatsd& statsd, Key key) {
  const double sum = 5.05;  // 1 + 2 + ... + 100 ms, in seconds
  const Tags route = {{"result", "ok"}, {"provider_id", "p1"}};
  const Tags ok = {{"result", "ok"}};
  CheckStatsd(
      statsd,
      {
          {key("app.requests", {}, ""), 3},
          {key("app.requests", {{"route", "home"}}, ""), 4},
          {key("app.latency", {}, ".count"), 4},  // the sampled one counts twice
          {key("app.latency", {}, ".sum"), 90},
          {key("router_policy_store.list_policies.count", {}, ""), 2},
          {key("router_policy_store.list_policies.policies_returned", {}, ""), 10},
          {key("router_policy_store.list_policies.duration", {}, ".count"), 2},
          {key("router_policy_store.list_policies.duration", {}, ".sum"), 0.004, 1e-9},
          {key("router_policy_store.delete_policy.count", {}, ""), 1},
          {key("router_core.route.stop.count", {{"provider_id", "p1"}, {"reason", "r"}}, ""), 100},
          {key("router_core.route.stop.duration", route, ".count"), 100},
          {key("router_core.route.stop.duration", route, ".sum"), sum, 1e-9},
          {key("router_core.route.duration", ok, ".count"), 100},
          {key("router_core.route.duration", ok, ".sum"), sum, 1e-9},
          {"statsd.bad_lines_seen", 0},
      },
      {
          {key("app.temp", {}, ""), -5},
          {key("app.queue", {}, ""), 7},
          {key("app.users", {}, ""), 2},
          {key("router_policy_store.list_policies.queue_len", {}, ""), 5},
          {key("router_policy_store.delete_policy.queue_len", {}, ""), -2},
          // The sketch answers within 1% of a value of the right rank; ranks differ by
          // one between quantile definitions.
          {key("router_core.route.duration", ok, ".p50"), 0.0505, 0.03},
          {key("router_core.route.duration", ok, ".p90"), 0.0905, 0.03},
          {key("router_core.route.duration", ok, ".p99"), 0.0995, 0.03},
      });
  // Nothing is sent as a timer: the engine keeps counts, not samples (docs/statsd-push.md).
  CHECK(statsd.Admin("timers").find("app.") == std::string::npos);
}

}  // namespace

TEST_CASE("standard format: the reference StatsD receives exactly what telemetryd aggregated") {
  ReferenceStatsd statsd;
  REQUIRE_MESSAGE(statsd.ready(), statsd.problem());
  DaemonProcess d(TELEMETRYD_BINARY, DaemonConfig(statsd.port(),
                                                  "  interval_seconds: 1\n"
                                                  "  format: standard\n"
                                                  "  prefix: td\n"));
  REQUIRE_MESSAGE(d.ready(), d.log());
  SendEverything(d);
  // Tags are folded into the name, before an aggregate's suffix: td.<name>.<k>_<v>.count
  CheckEverything(statsd, [](const std::string& name, const Tags& tags, const char* suffix) {
    std::string key = "td." + name;
    for (const auto& [k, v] : tags) key.append(".").append(k).append("_").append(v);
    return key + suffix;
  });

  // A gauge that StatsD already holds is set to a negative value, not decremented.
  SendUdp(d.port("statsd_udp"), "app.temp:12|g");
  CheckStatsd(statsd, {}, {{"td.app.temp", 12}});
  SendUdp(d.port("statsd_udp"), "app.temp:0|g\napp.temp:-7|g");  // StatsD input has the rule too
  CheckStatsd(statsd, {}, {{"td.app.temp", -7}});

  const std::string destination = "destination=\"127.0.0.1:" + std::to_string(statsd.port()) + "\"";
  const auto metrics = HttpGet(d.port("prometheus"), "/metrics");
  CHECK(
      MetricValue(metrics, "telemetryd_statsd_packets_total{" + destination + ",outcome=\"sent\"}")
          .value_or(0) >= 3);
  CHECK(MetricValue(metrics, "telemetryd_statsd_packets_total{" + destination +
                                 ",outcome=\"failed\"}") == 0);
  CHECK(MetricValue(metrics, "telemetryd_statsd_flushes_total{" + destination +
                                 ",outcome=\"failed\"}") == 0);
  CHECK(d.Signal(SIGTERM, std::chrono::seconds(10)) == 0);
}

TEST_CASE("dogstatsd format: tags and global tags reach the reference StatsD") {
  ReferenceStatsd statsd;
  REQUIRE_MESSAGE(statsd.ready(), statsd.problem());
  DaemonProcess d(TELEMETRYD_BINARY, DaemonConfig(statsd.port(),
                                                  "  interval_seconds: 1\n"
                                                  "  format: dogstatsd\n"
                                                  "  prefix: td\n"
                                                  "  global_tags: {env: ci}\n"));
  REQUIRE_MESSAGE(d.ready(), d.log());
  SendEverything(d);
  // statsd 0.9 folds DogStatsD tags into the key: name;k=v;k2=v2
  CheckEverything(statsd, [](const std::string& name, const Tags& tags, const char* suffix) {
    std::string key = "td." + name + suffix;
    for (const auto& [k, v] : tags) key.append(";").append(k).append("=").append(v);
    return key + ";env=ci";
  });
  SendUdp(d.port("statsd_udp"), "app.temp:12|g");
  CheckStatsd(statsd, {}, {{"td.app.temp;env=ci", 12}});
  SendUdp(d.port("statsd_udp"), "app.temp:0|g\napp.temp:-7|g");  // StatsD input has the rule too
  CheckStatsd(statsd, {}, {{"td.app.temp;env=ci", -7}});
  CHECK(d.Signal(SIGTERM, std::chrono::seconds(10)) == 0);
}

TEST_CASE("SIGTERM pushes what came in since the last push before telemetryd exits") {
  ReferenceStatsd statsd;
  REQUIRE_MESSAGE(statsd.ready(), statsd.problem());
  // An hour between pushes: only the final push can deliver this.
  DaemonProcess d(TELEMETRYD_BINARY, DaemonConfig(statsd.port(), "  interval_seconds: 3600\n"));
  REQUIRE_MESSAGE(d.ready(), d.log());
  SendUdp(d.port("statsd_udp"), "app.final:5|c\napp.final_gauge:-3|g");
  CHECK(d.Signal(SIGTERM, std::chrono::seconds(10)) == 0);
  CheckStatsd(statsd, {{"app.final", 5}}, {{"app.final_gauge", -3}});
}
