// Test support: runs the real telemetryd binary with a config written to a temporary file, reads
// the ports it bound from its log, and scrapes its /metrics over a real socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

namespace telemetryd::test {

class DaemonProcess {
 public:
  // Starts `binary --config <file with yaml>` and waits until it says it is ready.
  DaemonProcess(const std::string& binary, const std::string& yaml);
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  [[nodiscard]] bool ready() const { return ready_; }
  // Port of a listener by name ("native_udp", ...) or "prometheus".
  [[nodiscard]] std::uint16_t port(const std::string& name) const;
  // Everything the daemon wrote to stderr so far.
  [[nodiscard]] std::string log() const;
  // Waits until the log contains `text`.
  bool WaitForLog(const std::string& text, std::chrono::milliseconds timeout) const;
  // Replaces the config file's text (for a reload).
  bool RewriteConfig(const std::string& yaml) const;
  [[nodiscard]] const std::string& config_path() const { return config_path_; }
  [[nodiscard]] pid_t pid() const { return pid_; }
  // Sends a signal and returns at once.
  void Kill(int signo) const;
  // Sends a signal and waits for the exit status (or kills it after `timeout`).
  std::optional<int> Signal(int signo, std::chrono::milliseconds timeout);

 private:
  void ReadLog(int fd);

  pid_t pid_ = -1;
  std::string config_path_;
  std::thread reader_;
  mutable std::mutex mutex_;
  std::string log_;
  std::map<std::string, std::uint16_t> ports_;
  bool ready_ = false;
  bool exited_ = false;
};

// GET http://127.0.0.1:port/path; returns the body (empty on failure).
std::string HttpGet(std::uint16_t port, const std::string& path);

struct HttpResponse {
  int status = 0;  // 0: no answer
  std::string headers;
  std::string body;
};
// GET with extra request header lines (each ending in "\r\n").
HttpResponse HttpRequest(std::uint16_t port, const std::string& path,
                         const std::string& extra_headers = "");

// Runs `command` through the shell; returns its exit status and what it wrote (stdout and stderr).
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult RunCommand(const std::string& command);

// Sends one UDP datagram to 127.0.0.1:port.
void SendUdp(std::uint16_t port, const std::string& payload);

// A NOTIFY_SOCKET the test owns: reads what the daemon's sd_notify sends. The socket file is made
// in the temporary directory and removed with the object.
class NotifySocket {
 public:
  NotifySocket();
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;
  [[nodiscard]] const std::string& path() const { return path_; }
  // Reads datagrams until one has the line `want` ("READY=1"), or `timeout` passes.
  bool WaitFor(const std::string& want, std::chrono::milliseconds timeout);
  // Every datagram read so far, separated by '|'.
  [[nodiscard]] const std::string& seen() const { return seen_; }

 private:
  int fd_ = -1;
  std::string path_;
  std::string seen_;
};

// A port on 127.0.0.1 that was free a moment ago (bind to 0, read it, close).
std::uint16_t FreeTcpPort();

// Any other program the test runs (a Prometheus server, say): output to `log_path`, ended by pid
// when the object goes.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  [[nodiscard]] bool started() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

// The value of one sample in a Prometheus text exposition, e.g.
// MetricValue(text, "telemetryd_ingest_events_total{listener=\"native_udp\"}").
std::optional<double> MetricValue(const std::string& exposition, const std::string& series);

// Sum of the values of every sample of `name` (any labels) in an exposition; -1 when absent.
double SumOf(const std::string& exposition, const std::string& name);

// One sample of the daemon's /metrics right now; -1 when it is absent or the scrape failed.
double Metric(const DaemonProcess& d, const std::string& series);
// Whether that sample reaches exactly `value` within 5 s.
bool MetricReaches(const DaemonProcess& d, const std::string& series, double value);

// Polls `probe` until it returns true or `timeout` passes.
template <typename F>
bool Eventually(F&& probe, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (probe()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return probe();
}

}  // namespace telemetryd::test
