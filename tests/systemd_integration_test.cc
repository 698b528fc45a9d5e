// systemd integration: the daemon's sd_notify messages, read from a NOTIFY_SOCKET the test owns,
// and the unit file checked by systemd-analyze (verify, and the security exposure rating).
#include <doctest/doctest.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>

#include "support/daemon_process.h"

using telemetryd::test::DaemonProcess;
using telemetryd::test::RunCommand;
namespace asio = boost::asio;

namespace {

const std::string kConfig = R"(
listeners:
  native: {udp: {port: 0}, tcp: {port: 0}}
  statsd: {udp: {port: 0}, tcp: {port: 0}}
prometheus: {port: 0}
)";

// Reads datagrams from the notify socket until one equals or starts with `want`, or time is up.
bool Receive(asio::local::datagram_protocol::socket& socket, const std::string& want,
             std::chrono::milliseconds timeout, std::string* seen) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    boost::system::error_code ec;
    const std::size_t n = socket.receive(asio::buffer(buf), 0, ec);
    if (ec == asio::error::would_block) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    if (ec) return false;
    const std::string message(buf, n);
    *seen += message + "|";
    std::istringstream lines(message);
    std::string line;
    while (std::getline(lines, line)) {
      if (line == want) return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("sd_notify: READY once listening, WATCHDOG while the workers answer, STOPPING at exit") {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("telemetryd-notify-" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove(path);
  asio::io_context io;
  asio::local::datagram_protocol::socket socket(io, asio::local::datagram_protocol::endpoint(path));
  socket.non_blocking(true);

  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  ::setenv("WATCHDOG_USEC", "200000", 1);  // the daemon pings every 100 ms
  DaemonProcess d(TELEMETRYD_BINARY, kConfig);
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  REQUIRE_MESSAGE(d.ready(), d.log());

  std::string seen;
  CHECK_MESSAGE(Receive(socket, "READY=1", std::chrono::seconds(5), &seen), seen);
  CHECK_MESSAGE(Receive(socket, "WATCHDOG=1", std::chrono::seconds(2), &seen), seen);
  CHECK_MESSAGE(Receive(socket, "WATCHDOG=1", std::chrono::seconds(2), &seen), seen);
  const auto status = d.Signal(SIGTERM, std::chrono::seconds(10));
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  CHECK_MESSAGE(Receive(socket, "STOPPING=1", std::chrono::seconds(2), &seen), seen);
  std::filesystem::remove(path);
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
