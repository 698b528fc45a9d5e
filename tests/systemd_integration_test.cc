// systemd integration: the daemon's sd_notify messages, read from a NOTIFY_SOCKET the test owns,
// and the unit file checked by systemd-analyze (verify, and the security exposure rating).
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "support/daemon_process.h"

using telemetryd::test::DaemonProcess;
using telemetryd::test::NotifySocket;
using telemetryd::test::RunCommand;

namespace {

const std::string kConfig = R"(
listeners:
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {port: 0}, tcp: {port: 0}}
prometheus: {port: 0}
)";

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
