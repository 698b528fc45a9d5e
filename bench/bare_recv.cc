// telemetryd-bare-recv: the physical limit of UDP intake on this machine. A single thread reads
// datagrams with recvmmsg into a fixed buffer and counts them: StatsD lines (optionally parsed down
// to name, value and type) or the events of native frames (read from the frame header, nothing
// decoded). No aggregation, no allocation per datagram.
//
// Prints {"port": N, "receive_buffer": BYTES} when ready, then one JSON line with the counts when
// SIGTERM or SIGINT arrives or `--duration` has passed (0: wait for a signal). Datagrams still
// queued at that moment are read and counted first. Kernel drops come from SO_RXQ_OVFL.
//
// Like telemetryd's receivers, it lets datagrams gather while they keep coming: after a read that
// emptied the socket having found more than one, it sleeps before the next read, rather than being
// woken for every datagram or two. By default as long as telemetryd's receivers pause (their
// GatherPause, from the socket's memory figures at the end of each sleep); `--gather-us N` sleeps
// N µs every time, 0 never.
//
//   telemetryd-bare-recv --port 0 --receive-buffer 67108864 --protocol statsd --parse --cpu 1
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "../ingest/src/gather_pause.h"
#include "pin_cpu.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

struct Options {
  std::string address = "127.0.0.1";
  int port = 0;
  int receive_buffer = 64 << 20;
  int batch = 64;
  bool native = false;
  bool parse = false;
  double duration = 0;
  int cpu = -1;
  int gather_us = -1;  // -1: telemetryd's GatherPause
};

struct Counts {
  std::uint64_t datagrams = 0;
  std::uint64_t bytes = 0;
  std::uint64_t items = 0;         // lines or events
  std::uint64_t parse_errors = 0;  // lines without name:value|type, frames without a header
  std::uint64_t truncated = 0;
  std::uint64_t kernel_drops = 0;  // the socket's running total (SO_RXQ_OVFL)
  double value_sum = 0;            // keeps the parsed values alive
};

int Usage() {
  std::fprintf(stderr,
               "usage: telemetryd-bare-recv [--address A] [--port P] [--receive-buffer BYTES]\n"
               "         [--batch N] [--protocol statsd|native] [--parse] [--duration S] "
               "[--cpu N]\n"
               "         [--gather-us N]\n");
  return 2;
}

// StatsD: counts lines; with `parse`, also splits each into name, value and type.
void CountLines(std::string_view data, bool parse, Counts& c) {
  while (!data.empty()) {
    const std::size_t eol = data.find('\n');
    const std::string_view line = data.substr(0, eol);
    data = eol == std::string_view::npos ? std::string_view{} : data.substr(eol + 1);
    if (line.empty()) continue;
    ++c.items;
    if (!parse) continue;
    const std::size_t colon = line.find(':');
    const std::size_t bar = line.find('|', colon == std::string_view::npos ? 0 : colon);
    double value = 0;
    if (colon == 0 || colon == std::string_view::npos || bar == std::string_view::npos ||
        bar + 1 >= line.size() ||
        std::from_chars(line.data() + colon + 1, line.data() + bar, value).ec != std::errc{}) {
      ++c.parse_errors;
      continue;
    }
    c.value_sum += value;
  }
}

bool ReadVarint(const unsigned char*& p, const unsigned char* end, std::uint64_t& out) {
  out = 0;
  for (int shift = 0; p < end && shift < 64; shift += 7) {
    const unsigned char b = *p++;
    out |= static_cast<std::uint64_t>(b & 0x7f) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}

// Native: the event count of a v1 frame (docs/wire-format.md), after its string table.
void CountEvents(const unsigned char* p, const unsigned char* end, Counts& c) {
  std::uint64_t v = 0;
  if (end - p < 4 || p[0] != 0xD7 || p[1] != 0x1E || p[2] != 0x01 || p[3] > 1) {
    ++c.parse_errors;
    return;
  }
  const bool has_base_time = p[3] == 1;
  p += 4;
  bool ok = ReadVarint(p, end, v) && (!has_base_time || ReadVarint(p, end, v));
  std::uint64_t strings = 0;
  ok = ok && ReadVarint(p, end, strings);
  for (std::uint64_t i = 0; ok && i < strings; ++i) {
    ok = ReadVarint(p, end, v) && v <= static_cast<std::uint64_t>(end - p);
    if (ok) p += v;
  }
  if (!ok || !ReadVarint(p, end, v)) {
    ++c.parse_errors;
    return;
  }
  c.items += v;
}

bool ParseOptions(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--parse") {
      o.parse = true;
      continue;
    }
    if (i + 1 >= argc) return false;
    const std::string v = argv[++i];
    if (a == "--address") {
      o.address = v;
    } else if (a == "--port") {
      o.port = std::atoi(v.c_str());
    } else if (a == "--receive-buffer") {
      o.receive_buffer = std::atoi(v.c_str());
    } else if (a == "--batch") {
      o.batch = std::atoi(v.c_str());
    } else if (a == "--protocol" && (v == "statsd" || v == "native")) {
      o.native = v == "native";
    } else if (a == "--duration") {
      o.duration = std::atof(v.c_str());
    } else if (a == "--gather-us") {
      o.gather_us = std::atoi(v.c_str());
    } else if (a == "--cpu") {
      o.cpu = std::atoi(v.c_str());
    } else {
      return false;
    }
  }
  return o.port >= 0 && o.port < 65536 && o.batch >= 1 && o.batch <= 1024 && o.receive_buffer > 0 &&
         o.duration >= 0 && o.duration <= 86400 && o.gather_us >= -1 && o.gather_us <= 1'000'000;
}

int Bind(const Options& o, int& buffer) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  const int one = 1;
  // As root SO_RCVBUFFORCE passes net.core.rmem_max; otherwise SO_RCVBUF, capped by it.
  if (fd < 0 || ::inet_pton(AF_INET, o.address.c_str(), &addr.sin_addr) != 1 ||
      (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &o.receive_buffer, sizeof(int)) != 0 &&
       ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o.receive_buffer, sizeof(int)) != 0) ||
      ::setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) != 0 ||
      ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::fprintf(stderr, "telemetryd-bare-recv: %s:%d: %s\n", o.address.c_str(), o.port,
                 std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return -1;
  }
  socklen_t buffer_len = sizeof buffer;
  ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, &buffer_len);
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, o)) return Usage();
  if (o.cpu >= 0 && !telemetryd::bench::PinToCpu(o.cpu, "telemetryd-bare-recv")) return 1;
  int buffer = 0;
  const int fd = Bind(o, buffer);
  if (fd < 0) return 1;
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);

  // No SA_RESTART: a signal interrupts recvmmsg at once.
  struct sigaction action {};
  action.sa_handler = OnSignal;
  ::sigaction(SIGTERM, &action, nullptr);
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGALRM, &action, nullptr);
  if (o.duration > 0) ::alarm(static_cast<unsigned>(o.duration + 0.999));
  std::printf("{\"port\": %u, \"receive_buffer\": %d}\n", ntohs(bound.sin_port), buffer);
  std::fflush(stdout);

  constexpr std::size_t kDatagramBytes = 65536;
  const auto batch = static_cast<std::size_t>(o.batch);
  std::vector<unsigned char> buffers(batch * kDatagramBytes);
  std::vector<iovec> iov(batch);
  std::vector<mmsghdr> msgs(batch);
  constexpr std::size_t kControlBytes = CMSG_SPACE(sizeof(std::uint32_t));
  std::vector<unsigned char> control(batch * kControlBytes);
  Counts c;
  const auto start = std::chrono::steady_clock::now();
  telemetryd::ingest::detail::GatherPause gather;
  // Blocks until a signal; then reads what is still queued without blocking, and stops.
  bool draining = false;
  while (true) {
    if (g_stop != 0) draining = true;
    for (std::size_t i = 0; i < batch; ++i) {
      iov[i] = {buffers.data() + i * kDatagramBytes, kDatagramBytes};
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_control = control.data() + i * kControlBytes;
      msgs[i].msg_hdr.msg_controllen = kControlBytes;
    }
    const int n = ::recvmmsg(fd, msgs.data(), static_cast<unsigned>(batch),
                             draining ? MSG_DONTWAIT : MSG_WAITFORONE, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (draining && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      std::fprintf(stderr, "telemetryd-bare-recv: recvmmsg: %s\n", std::strerror(errno));
      return 1;
    }
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      msghdr& h = msgs[i].msg_hdr;
      const std::size_t size = msgs[i].msg_len;
      ++c.datagrams;
      c.bytes += size;
      for (cmsghdr* m = CMSG_FIRSTHDR(&h); m != nullptr; m = CMSG_NXTHDR(&h, m)) {
        if (m->cmsg_level == SOL_SOCKET && m->cmsg_type == SO_RXQ_OVFL) {
          std::uint32_t drops = 0;
          std::memcpy(&drops, CMSG_DATA(m), sizeof drops);
          c.kernel_drops = drops;
        }
      }
      if ((h.msg_flags & MSG_TRUNC) != 0) {
        ++c.truncated;
        continue;
      }
      const unsigned char* data = buffers.data() + i * kDatagramBytes;
      if (o.native) {
        CountEvents(data, data + size, c);
      } else {
        CountLines(std::string_view(reinterpret_cast<const char*>(data), size), o.parse, c);
      }
    }
    // The socket is empty and datagrams keep coming: let the next ones gather.
    if (!draining && o.gather_us != 0 && n >= 2 && static_cast<std::size_t>(n) < batch) {
      const long us = o.gather_us > 0 ? o.gather_us : static_cast<long>(gather.get().count());
      timespec pause{us / 1'000'000, (us % 1'000'000) * 1000};
      while (g_stop == 0 && ::nanosleep(&pause, &pause) != 0 && errno == EINTR) {
      }
      if (o.gather_us < 0) {
        const auto memory = telemetryd::ingest::detail::ReadSocketMemory(fd);
        gather.Observe(memory.queued, memory.limit);
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "{\"protocol\": \"%s\", \"unit\": \"%s\", \"parse\": %s, \"datagrams\": %llu, "
      "\"events\": %llu, \"bytes\": %llu, \"kernel_drops\": %llu, \"truncated\": %llu, "
      "\"parse_errors\": %llu, \"value_sum\": %.0f, \"seconds\": %.3f}\n",
      o.native ? "native" : "statsd", o.native ? "events" : "lines", o.parse ? "true" : "false",
      static_cast<unsigned long long>(c.datagrams), static_cast<unsigned long long>(c.items),
      static_cast<unsigned long long>(c.bytes), static_cast<unsigned long long>(c.kernel_drops),
      static_cast<unsigned long long>(c.truncated), static_cast<unsigned long long>(c.parse_errors),
      c.value_sum, seconds);
  ::close(fd);
  return 0;
}
