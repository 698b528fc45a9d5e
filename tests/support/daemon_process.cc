#include "daemon_process.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>

extern char** environ;

namespace telemetryd::test {

DaemonProcess::DaemonProcess(const std::string& binary, const std::string& yaml) {
  char path[] = "/tmp/telemetryd-test-XXXXXX.yaml";
  const int fd = ::mkstemps(path, 5);
  if (fd < 0) return;
  config_path_ = path;
  const ssize_t written = ::write(fd, yaml.data(), yaml.size());
  ::close(fd);
  if (written != static_cast<ssize_t>(yaml.size())) return;

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  std::vector<std::string> args = {binary, "--config", config_path_};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = ::posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc != 0) {
    pid_ = -1;
    ::close(pipe_fds[0]);
    return;
  }
  reader_ = std::thread([this, fd = pipe_fds[0]] { ReadLog(fd); });
  ready_ = WaitForLog(" ready", std::chrono::seconds(10));
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0 && !exited_) Signal(SIGKILL, std::chrono::seconds(5));
  if (reader_.joinable()) reader_.join();
  if (!config_path_.empty()) ::unlink(config_path_.c_str());
}

void DaemonProcess::ReadLog(int fd) {
  char buf[4096];
  std::string partial;
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    std::lock_guard lock(mutex_);
    log_.append(buf, static_cast<std::size_t>(n));
    partial.append(buf, static_cast<std::size_t>(n));
    std::size_t nl;
    while ((nl = partial.find('\n')) != std::string::npos) {
      const std::string line = partial.substr(0, nl);
      partial.erase(0, nl + 1);
      // "listening: native_udp on 127.0.0.1:7625" and "prometheus endpoint on
      // 127.0.0.1:9568/metrics"
      if (auto at = line.find("listening: "); at != std::string::npos) {
        const std::string rest = line.substr(at + 11);
        const std::string name = rest.substr(0, rest.find(' '));
        ports_[name] = static_cast<std::uint16_t>(std::stoi(rest.substr(rest.rfind(':') + 1)));
      } else if (auto p = line.find("prometheus endpoint on "); p != std::string::npos) {
        const std::string rest = line.substr(p + 23);
        const auto colon = rest.rfind(':');
        ports_["prometheus"] = static_cast<std::uint16_t>(std::stoi(rest.substr(colon + 1)));
      }
    }
  }
  ::close(fd);
}

std::uint16_t DaemonProcess::port(const std::string& name) const {
  std::lock_guard lock(mutex_);
  const auto it = ports_.find(name);
  return it == ports_.end() ? 0 : it->second;
}

std::string DaemonProcess::log() const {
  std::lock_guard lock(mutex_);
  return log_;
}

bool DaemonProcess::WaitForLog(const std::string& text, std::chrono::milliseconds timeout) const {
  return Eventually([&] { return log().find(text) != std::string::npos; }, timeout);
}

bool DaemonProcess::RewriteConfig(const std::string& yaml) const {
  // Written beside and renamed over, as an editor or a deployment tool would.
  const std::string temporary = config_path_ + ".new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << yaml;
    if (!out.flush()) return false;
  }
  return std::rename(temporary.c_str(), config_path_.c_str()) == 0;
}

void DaemonProcess::Kill(int signo) const {
  if (pid_ > 0 && !exited_) ::kill(pid_, signo);
}

std::optional<int> DaemonProcess::Signal(int signo, std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || exited_) return std::nullopt;
  ::kill(pid_, signo);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  exited_ = true;
  return std::nullopt;
}

double Metric(const DaemonProcess& d, const std::string& series) {
  return MetricValue(HttpGet(d.port("prometheus"), "/metrics"), series).value_or(-1);
}

bool MetricReaches(const DaemonProcess& d, const std::string& series, double value) {
  return Eventually([&] { return Metric(d, series) == value; });
}

void SendUdp(std::uint16_t port, const std::string& payload) {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::udp::socket socket(io, asio::ip::udp::v4());
  socket.send_to(asio::buffer(payload), {asio::ip::make_address("127.0.0.1"), port});
}

NotifySocket::NotifySocket() {
  static int made = 0;
  path_ = "/tmp/telemetryd-notify-" + std::to_string(::getpid()) + "-" + std::to_string(++made);
  ::unlink(path_.c_str());
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path_.c_str());
  if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

NotifySocket::~NotifySocket() {
  if (fd_ >= 0) ::close(fd_);
  ::unlink(path_.c_str());
}

bool NotifySocket::WaitFor(const std::string& want, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (fd_ >= 0 && std::chrono::steady_clock::now() < deadline) {
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    const std::string message(buf, static_cast<std::size_t>(n));
    seen_ += message + "|";
    std::istringstream lines(message);
    std::string line;
    while (std::getline(lines, line)) {
      if (line == want) return true;
    }
  }
  return false;
}

HttpResponse HttpRequest(std::uint16_t port, const std::string& path,
                         const std::string& extra_headers) {
  namespace asio = boost::asio;
  HttpResponse out;
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return out;
  const std::string request =
      "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n" + extra_headers + "\r\n";
  asio::write(socket, asio::buffer(request), ec);
  if (ec) return out;
  std::string response;
  char buf[65536];
  while (true) {
    const std::size_t n = socket.read_some(asio::buffer(buf), ec);
    response.append(buf, n);
    if (ec) break;
  }
  const auto split = response.find("\r\n\r\n");
  if (split == std::string::npos || response.size() < 12) return out;
  out.status = std::atoi(response.substr(9, 3).c_str());
  out.headers = response.substr(0, split);
  out.body = response.substr(split + 4);
  return out;
}

std::string HttpGet(std::uint16_t port, const std::string& path) {
  return HttpRequest(port, path).body;
}

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buf[512];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) result.output += buf;
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::uint16_t FreeTcpPort() {
  namespace asio = boost::asio;
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor(io, {asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

ChildProcess::ChildProcess(std::vector<std::string> argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  if (::posix_spawn(&pid_, argv[0].c_str(), &actions, nullptr, args.data(), environ) != 0) {
    pid_ = -1;
  }
  posix_spawn_file_actions_destroy(&actions);
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 500; ++i) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
}

std::optional<double> MetricValue(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

double SumOf(const std::string& exposition, const std::string& name) {
  std::istringstream in(exposition);
  std::string line;
  double sum = 0;
  bool found = false;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const std::size_t end = line.find_first_of("{ ");
    if (line.compare(0, end, name) != 0 || end != name.size()) continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
    found = true;
  }
  return found ? sum : -1;
}

}  // namespace telemetryd::test
