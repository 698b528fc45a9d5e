// telemetryd-loadgen: offers a steady load of native frames or StatsD lines over UDP or TCP and
// reports exactly what it offered as one JSON line on stdout. Payloads are built once (cycling
// through `--series` distinct series) and sent in 1 ms slices, with sendmmsg (UDP) or writev (TCP),
// so the generator itself costs little per event. `--rate max` sends as fast as it can.
// `--send-batch N` caps the writes per system call (default 64); `--send-batch 1` sends one
// datagram per call, as a StatsD client library does.
//
//   telemetryd-loadgen --port 7625 --protocol native --transport udp --rate 1000000 --duration 10
//       --per-write 25 --series 100000 --cpu 0
//
// Native: each write is one frame of `--per-write` vsr.protocol.prepare.sent events with VSR's six
// common metadata fields; a series is a node_id (the VSR catalog keeps a counter and a sum per
// node_id, so each makes two series in telemetryd); the ids follow one another through a frame's
// events unless `--node-per-frame`, where each frame is one node's, as its own reporter sends it
// (VsrFrames). Over TCP every frame is preceded by its length
// (4 bytes, big endian). StatsD: each write is `--per-write` counter lines `app.requests.N:1|c`,
// with DogStatsD tags `|#env:prod,host:web-K` unless `--no-tags`; `--series-in-tag` keeps one name
// and puts the series in a tag instead (`app.requests:1|c|#id:N,...`).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "pin_cpu.h"
#include "telemetryd/wire/encoder.h"
#include "vsr_event.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 7625;
  bool native = true;
  bool tcp = false;
  double rate = 100'000;  // events (or lines) per second; 0: as fast as possible
  double duration = 10;   // seconds
  int per_write = 25;     // events or lines per datagram (UDP) or per write (TCP)
  int series = 1000;
  bool tags = true;
  bool series_in_tag = false;
  bool node_per_frame = false;
  int cpu = -1;
  std::size_t send_batch = 64;  // writes per sendmmsg or writev, 1 to Sender::kBatch
};

// What was offered: only complete datagrams and writes count as events.
struct Offered {
  std::uint64_t writes = 0;
  std::uint64_t calls = 0;  // sendmmsg or writev calls made
  std::uint64_t bytes = 0;
  std::uint64_t enobufs = 0;
  std::uint64_t eagain = 0;
  std::uint64_t econnrefused = 0;
  std::uint64_t other_errors = 0;
  bool incomplete_write = false;  // TCP: the last write could not be finished in time

  void CountError(int error) {
    if (error == ENOBUFS) {
      ++enobufs;
    } else if (error == EAGAIN || error == EWOULDBLOCK) {
      ++eagain;
    } else if (error == ECONNREFUSED) {
      ++econnrefused;
    } else {
      ++other_errors;
    }
  }
  [[nodiscard]] std::uint64_t errors() const {
    return enobufs + eagain + econnrefused + other_errors;
  }
};

int Usage() {
  std::fprintf(stderr,
               "usage: telemetryd-loadgen [--host H] [--port P] [--protocol native|statsd]\n"
               "         [--transport udp|tcp] [--rate EVENTS_PER_S|max] [--duration S]\n"
               "         [--per-write N] [--series N] [--no-tags] [--series-in-tag] [--cpu N]\n"
               "         [--send-batch N] [--node-per-frame]\n"
               "  --per-datagram N is the same as --per-write N\n");
  return 2;
}

std::string StatsdLine(const Options& o, int s) {
  const std::string id = std::to_string(s);
  const std::string host = "host:web-" + std::to_string(s % 16);
  if (o.series_in_tag) {
    return "app.requests:1|c|#id:" + id + (o.tags ? ",env:prod," + host : "") + "\n";
  }
  return "app.requests." + id + ":1|c" + (o.tags ? "|#env:prod," + host : "") + "\n";
}

// The payloads to cycle through: every series appears once per cycle.
std::vector<std::string> Payloads(const Options& o) {
  std::vector<std::string> out;
  if (o.native) {
    for (const auto& frame :
         telemetryd::bench::VsrFrames(o.series, o.per_write, o.node_per_frame)) {
      std::string payload;
      if (o.tcp) {
        const auto n = static_cast<std::uint32_t>(frame.size());
        const unsigned char prefix[4] = {
            static_cast<unsigned char>(n >> 24), static_cast<unsigned char>(n >> 16),
            static_cast<unsigned char>(n >> 8), static_cast<unsigned char>(n)};
        payload.append(reinterpret_cast<const char*>(prefix), 4);
      }
      payload.append(reinterpret_cast<const char*>(frame.data()), frame.size());
      out.push_back(std::move(payload));
    }
    return out;
  }
  const int count = std::max(1, (o.series + o.per_write - 1) / o.per_write);
  int next = 0;
  for (int d = 0; d < count; ++d) {
    std::string payload;
    for (int i = 0; i < o.per_write; ++i, ++next) payload += StatsdLine(o, next % o.series);
    out.push_back(std::move(payload));
  }
  return out;
}

// Sends the payloads in turn, cycling; each call sends up to `n` of them and returns how many went
// out whole. failed() tells whether the last call met an error (counted in Offered).
class Sender {
 public:
  static constexpr std::size_t kBatch = 64;
  Sender(int fd, const std::vector<std::string>& payloads, Offered& offered)
      : fd_(fd), payloads_(payloads), offered_(offered) {}
  virtual ~Sender() = default;
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;
  virtual std::size_t Send(std::size_t n) = 0;
  // TCP: completes a write begun earlier, until `deadline`. False if it could not.
  virtual bool Finish(Clock::time_point /*deadline*/) { return true; }
  [[nodiscard]] bool failed() const { return failed_; }

 protected:
  const std::string& At(std::size_t i) const { return payloads_[i % payloads_.size()]; }
  // Points out[0..n) at the next n payloads, the first from byte `skip` on.
  void Gather(std::size_t n, std::size_t skip, iovec* out) const {
    for (std::size_t i = 0; i < n; ++i) {
      const std::string& d = At(cursor_ + i);
      const std::size_t from = i == 0 ? skip : 0;
      out[i] = {const_cast<char*>(d.data() + from), d.size() - from};
    }
  }
  int fd_;
  const std::vector<std::string>& payloads_;
  Offered& offered_;
  std::size_t cursor_ = 0;  // the next payload to send
  bool failed_ = false;
};

class UdpSender final : public Sender {
 public:
  using Sender::Sender;
  std::size_t Send(std::size_t n) override {
    n = std::min(n, kBatch);
    Gather(n, 0, iov_.data());
    for (std::size_t i = 0; i < n; ++i) {
      msgs_[i] = mmsghdr{};
      msgs_[i].msg_hdr.msg_iov = &iov_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
    }
    const int r = ::sendmmsg(fd_, msgs_.data(), static_cast<unsigned>(n), 0);
    ++offered_.calls;
    failed_ = r <= 0;
    if (failed_) {
      offered_.CountError(r < 0 ? errno : EAGAIN);
      return 0;
    }
    const auto sent = static_cast<std::size_t>(r);
    for (std::size_t i = 0; i < sent; ++i) offered_.bytes += msgs_[i].msg_len;
    cursor_ += sent;
    return sent;
  }

 private:
  std::vector<mmsghdr> msgs_ = std::vector<mmsghdr>(kBatch);
  std::vector<iovec> iov_ = std::vector<iovec>(kBatch);
};

// Blocking writes with a short send timeout: a server that stops reading slows the generator
// down (that is TCP) but never holds it past the duration.
class TcpSender final : public Sender {
 public:
  using Sender::Sender;
  std::size_t Send(std::size_t n) override {
    n = std::min(n, kBatch);
    Gather(n, offset_, iov_.data());
    const ssize_t r = ::writev(fd_, iov_.data(), static_cast<int>(n));
    ++offered_.calls;
    failed_ = r < 0;
    if (failed_) {
      offered_.CountError(errno);
      return 0;
    }
    return Advance(static_cast<std::size_t>(r));
  }
  bool Finish(Clock::time_point deadline) override {
    while (offset_ > 0 && Clock::now() < deadline) offered_.writes += Send(1);
    return offset_ == 0;
  }

 private:
  // Moves past `written` bytes; returns the payloads completed.
  std::size_t Advance(std::size_t written) {
    offered_.bytes += written;
    std::size_t done = 0;
    while (written > 0) {
      const std::size_t left = At(cursor_).size() - offset_;
      if (written < left) {
        offset_ += written;
        break;
      }
      written -= left;
      offset_ = 0;
      ++cursor_;
      ++done;
    }
    return done;
  }
  std::vector<iovec> iov_ = std::vector<iovec>(kBatch);
  std::size_t offset_ = 0;  // bytes of payload `cursor_` already written
};

bool ParseOptions(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-tags") {
      o.tags = false;
      continue;
    }
    if (a == "--series-in-tag") {
      o.series_in_tag = true;
      continue;
    }
    if (a == "--node-per-frame") {
      o.node_per_frame = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (a == "--host") {
      o.host = v;
    } else if (a == "--port") {
      o.port = std::atoi(v.c_str());
    } else if (a == "--protocol" && (v == "native" || v == "statsd")) {
      o.native = v == "native";
    } else if (a == "--transport" && (v == "udp" || v == "tcp")) {
      o.tcp = v == "tcp";
    } else if (a == "--rate") {
      o.rate = v == "max" ? 0 : std::atof(v.c_str());
      if (v != "max" && o.rate <= 0) return false;
    } else if (a == "--duration") {
      o.duration = std::atof(v.c_str());
    } else if (a == "--per-write" || a == "--per-datagram") {
      o.per_write = std::max(1, std::atoi(v.c_str()));
    } else if (a == "--series") {
      o.series = std::max(1, std::atoi(v.c_str()));
    } else if (a == "--cpu") {
      o.cpu = std::atoi(v.c_str());
    } else if (a == "--send-batch") {
      const int n = std::atoi(v.c_str());
      if (n < 1 || static_cast<std::size_t>(n) > Sender::kBatch) return false;
      o.send_batch = static_cast<std::size_t>(n);
    } else {
      return false;
    }
  }
  return o.duration > 0 && o.duration <= 3600 && o.port > 0 && o.port < 65536;
}

int Connect(const Options& o) {
  const int fd = ::socket(AF_INET, o.tcp ? SOCK_STREAM : SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (fd < 0 || ::inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::fprintf(stderr, "telemetryd-loadgen: connect %s:%d: %s\n", o.host.c_str(), o.port,
                 std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return -1;
  }
  if (o.tcp) {
    const timeval timeout{0, 100'000};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  }
  return fd;
}

double CpuSeconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, o)) return Usage();
  if (o.cpu >= 0 && !telemetryd::bench::PinToCpu(o.cpu, "telemetryd-loadgen")) return 1;
  const int fd = Connect(o);
  if (fd < 0) return 1;
  const auto payloads = Payloads(o);
  Offered offered;
  UdpSender udp(fd, payloads, offered);
  TcpSender tcp(fd, payloads, offered);
  Sender& sender = o.tcp ? static_cast<Sender&>(tcp) : static_cast<Sender&>(udp);

  const double writes_per_ms = o.rate / o.per_write / 1000.0;
  const double cpu_before = CpuSeconds();
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(o.duration));
  if (o.rate == 0) {
    while (Clock::now() < end) offered.writes += sender.Send(o.send_batch);
  } else {
    double owed = 0;
    auto slice = start;
    while (Clock::now() < end) {
      owed += writes_per_ms;
      auto due = static_cast<std::size_t>(owed);
      owed -= static_cast<double>(due);
      while (due > 0 && Clock::now() < end) {
        const std::size_t sent = sender.Send(std::min(due, o.send_batch));
        if (sender.failed()) break;  // counted; the rest of this slice is not offered
        offered.writes += sent;
        due -= std::min(due, sent);
      }
      slice += std::chrono::milliseconds(1);
      std::this_thread::sleep_until(slice);
    }
  }
  offered.incomplete_write = !sender.Finish(Clock::now() + std::chrono::seconds(2));
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = CpuSeconds() - cpu_before;
  ::close(fd);

  const std::uint64_t events = offered.writes * static_cast<std::uint64_t>(o.per_write);
  std::printf(
      "{\"protocol\": \"%s\", \"transport\": \"%s\", \"per_write\": %d, \"series\": %d, "
      "\"tags\": %s, \"series_in_tag\": %s, \"node_per_frame\": %s, \"target_rate\": %.0f, "
      "\"events\": %llu, "
      "\"writes\": %llu, \"bytes\": %llu, \"seconds\": %.3f, \"rate\": %.0f, "
      "\"writes_per_second\": %.0f, \"send_errors\": %llu, \"enobufs\": %llu, \"eagain\": %llu, "
      "\"econnrefused\": %llu, \"other_errors\": %llu, \"incomplete_write\": %s, "
      "\"cpu_seconds\": %.3f, \"send_batch\": %zu, \"send_calls\": %llu}\n",
      o.native ? "native" : "statsd", o.tcp ? "tcp" : "udp", o.per_write, o.series,
      o.tags && !o.native ? "true" : "false", o.series_in_tag ? "true" : "false",
      o.node_per_frame ? "true" : "false", o.rate, static_cast<unsigned long long>(events),
      static_cast<unsigned long long>(offered.writes),
      static_cast<unsigned long long>(offered.bytes), elapsed,
      static_cast<double>(events) / elapsed, static_cast<double>(offered.writes) / elapsed,
      static_cast<unsigned long long>(offered.errors()),
      static_cast<unsigned long long>(offered.enobufs),
      static_cast<unsigned long long>(offered.eagain),
      static_cast<unsigned long long>(offered.econnrefused),
      static_cast<unsigned long long>(offered.other_errors),
      offered.incomplete_write ? "true" : "false", cpu, o.send_batch,
      static_cast<unsigned long long>(offered.calls));
  return 0;
}
