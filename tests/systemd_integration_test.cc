// systemd integration: the daemon's sd_notify messages, read from a NOTIFY_SOCKET the test owns,
// and the unit file checked by systemd-analyze (verify, and the security exposure rating).
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "support/daemon_process.h"

using telemetryd::test::DaemonProcess;
using telemetryd::test::MetricReaches;
using telemetryd::test::NotifySocket;
using telemetryd::test::RunCommand;
using telemetryd::test::SendUdp;

namespace {

const std::string kConfig = R"(
listeners:
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {port: 0}, tcp: {port: 0}}
prometheus: {port: 0}
)";

// The unit file's Environment= assignments, in order.
std::vector<std::pair<std::string, std::string>> UnitEnvironment() {
  std::ifstream in(std::string(TELEMETRYD_SOURCE_DIR) + "/packaging/telemetryd.service");
  std::vector<std::pair<std::string, std::string>> out;
  const std::regex assignment("^Environment=([A-Za-z_][A-Za-z0-9_]*)=(.*)$");
  std::smatch match;
  for (std::string line; std::getline(in, line);) {
    if (std::regex_match(line, match, assignment)) out.emplace_back(match[1], match[2]);
  }
  return out;
}

// The daemon's anonymous memory on transparent huge pages, in KiB, after it has grown its heap by
// holding `names` StatsD counters.
long AnonHugeKib(const DaemonProcess& d, int names) {
  for (int i = 0; i < names; i += 50) {
    std::string datagram;
    for (int j = i; j < i + 50; ++j) datagram += "thp.check.name" + std::to_string(j) + ":1|c\n";
    SendUdp(d.port("statsd_udp"), datagram);
  }
  const std::string series = "telemetryd_metric_series{metric=\"statsd:counter\"}";
  if (!MetricReaches(d, series, names)) return -1;
  std::ifstream in("/proc/" + std::to_string(d.pid()) + "/smaps_rollup");
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("AnonHugePages:")) return std::stol(line.substr(14));
  }
  return -1;
}

}  // namespace

TEST_CASE("sd_notify: READY once listening, WATCHDOG while the workers answer, STOPPING at exit") {
  NotifySocket notify;
  ::setenv("NOTIFY_SOCKET", notify.path().c_str(), 1);
  ::setenv("WATCHDOG_USEC", "200000", 1);  // the daemon pings every 100 ms
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  REQUIRE_MESSAGE(d.ready(), d.log());

  CHECK_MESSAGE(notify.WaitFor("READY=1", std::chrono::seconds(5)), notify.seen());
  CHECK_MESSAGE(notify.WaitFor("WATCHDOG=1", std::chrono::seconds(2)), notify.seen());
  CHECK_MESSAGE(notify.WaitFor("WATCHDOG=1", std::chrono::seconds(2)), notify.seen());
  const auto status = d.Signal(SIGTERM, std::chrono::seconds(10));
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  CHECK_MESSAGE(notify.WaitFor("STOPPING=1", std::chrono::seconds(2)), notify.seen());
}

TEST_CASE("the unit file passes systemd-analyze verify and rates at most 2.0 in security") {
  const std::string unit = std::string(TELEMETRYD_SOURCE_DIR) + "/packaging/telemetryd.service";
  REQUIRE(std::filesystem::exists(unit));
  REQUIRE_MESSAGE(std::filesystem::exists("/usr/bin/systemd-analyze"),
                  "systemd-analyze is missing: scripts/install-deps --test installs it");

  // verify checks that ExecStart's program exists: point it at the binary just built.
  const auto dir =
      std::filesystem::temp_directory_path() / ("telemetryd-unit-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ifstream in(unit);
    std::stringstream text;
    text << in.rdbuf();
    std::ofstream out(dir / "telemetryd.service");
    out << std::regex_replace(text.str(), std::regex("/usr/bin/telemetryd"), TELEMETRYD_BINARY);
  }
  const auto verify =
      RunCommand("systemd-analyze verify --man=no " + (dir / "telemetryd.service").string());
  CHECK_MESSAGE(verify.status == 0, verify.output);
  CHECK_MESSAGE(verify.output.empty(), verify.output);
  std::filesystem::remove_all(dir);

  const auto security = RunCommand("systemd-analyze security --offline=true " + unit);
  std::smatch match;
  REQUIRE_MESSAGE(std::regex_search(security.output, match,
                                    std::regex("Overall exposure level for telemetryd.service: "
                                               "([0-9]+\\.[0-9]+)")),
                  security.output);
  const double exposure = std::stod(match[1].str());
  MESSAGE("exposure ", exposure);
  CHECK(exposure <= 2.0);
}

TEST_CASE("with the unit's environment the daemon's heap is on transparent huge pages") {
#if defined(__SANITIZE_ADDRESS__)
  MESSAGE("under AddressSanitizer the daemon does not allocate through glibc: nothing to check");
  return;
#endif
  std::ifstream mode_file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(mode_file, mode);
  if (mode.empty() || mode.find("[never]") != std::string::npos) {
    MESSAGE("transparent huge pages are off on this machine (", mode, "): nothing to check");
    return;
  }
  const auto environment = UnitEnvironment();
  REQUIRE(!environment.empty());
  constexpr int kNames = 5'000;

  for (const auto& [name, value] : environment) ::setenv(name.c_str(), value.c_str(), 1);
  DaemonProcess with(TELEMETRYD_BINARY, kConfig);
  for (const auto& [name, value] : environment) ::unsetenv(name.c_str());
  REQUIRE_MESSAGE(with.ready(), with.log());
  const long huge = AnonHugeKib(with, kNames);
  MESSAGE("mode ", mode, "; with the unit's environment: ", huge, " KiB on huge pages");
  CHECK(huge > 0);

  // Where the kernel gives huge pages only on request, they are the environment's doing.
  if (mode.find("[madvise]") != std::string::npos) {
    DaemonProcess without(TELEMETRYD_BINARY, kConfig);
    REQUIRE_MESSAGE(without.ready(), without.log());
    CHECK(AnonHugeKib(without, kNames) == 0);
  }
}
