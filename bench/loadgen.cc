// telemetryd-loadgen: offers a steady load of native frames or StatsD lines over UDP and reports
// what it offered. Datagrams are built once (cycling through `--series` distinct series) and sent
// with sendmmsg in 1 ms slices, so the generator itself costs little per event.
//
//   telemetryd-loadgen --port 7625 --protocol native --rate 1000000 --duration 10
//       --per-datagram 25 --series 100000
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "telemetryd/wire/encoder.h"
#include "vsr_event.h"

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 7625;
  bool native = true;
  double rate = 100'000;  // events (or lines) per second
  double duration = 10;   // seconds
  int per_datagram = 25;
  int series = 1000;
  bool tags = true;
};

int Usage() {
  std::fprintf(stderr,
               "usage: telemetryd-loadgen [--host H] [--port P] [--protocol native|statsd]\n"
               "         [--rate EVENTS_PER_S] [--duration S] [--per-datagram N] [--series N]\n"
               "         [--no-tags]\n");
  return 2;
}

std::vector<std::string> Datagrams(const Options& o) {
  std::vector<std::string> out;
  const int count = std::max(1, (o.series + o.per_datagram - 1) / o.per_datagram);
  int next = 0;
  for (int d = 0; d < count; ++d) {
    if (o.native) {
      telemetryd::wire::FrameEncoder encoder(
          telemetryd::wire::EncoderOptions{.max_frame_bytes = 65000});
      for (int i = 0; i < o.per_datagram; ++i, ++next) {
        encoder.Add(
            telemetryd::bench::VsrPrepareSent(i, "node-" + std::to_string(next % o.series)));
      }
      const auto frame = encoder.Finish();
      out.emplace_back(reinterpret_cast<const char*>(frame.data()), frame.size());
    } else {
      std::string lines;
      for (int i = 0; i < o.per_datagram; ++i, ++next) {
        lines += "app.requests." + std::to_string(next % o.series) + ":1|c";
        if (o.tags) lines += "|#env:prod,host:web-" + std::to_string(next % 16);
        lines += '\n';
      }
      out.push_back(std::move(lines));
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    const char* v = nullptr;
    if (a == "--no-tags") {
      o.tags = false;
      continue;
    }
    if ((v = next()) == nullptr) return Usage();
    if (a == "--host") {
      o.host = v;
    } else if (a == "--port") {
      o.port = std::atoi(v);
    } else if (a == "--protocol") {
      o.native = std::string(v) == "native";
    } else if (a == "--rate") {
      o.rate = std::atof(v);
    } else if (a == "--duration") {
      o.duration = std::atof(v);
    } else if (a == "--per-datagram") {
      o.per_datagram = std::max(1, std::atoi(v));
    } else if (a == "--series") {
      o.series = std::max(1, std::atoi(v));
    } else {
      return Usage();
    }
  }
  if (o.duration <= 0 || o.duration > 3600 || o.rate <= 0) return Usage();

  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (::inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    std::perror("connect");
    return 1;
  }
  const auto datagrams = Datagrams(o);
  constexpr int kBatch = 64;
  std::vector<mmsghdr> msgs(kBatch);
  std::vector<iovec> iov(kBatch);

  const double datagrams_per_ms = o.rate / o.per_datagram / 1000.0;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration<double>(o.duration);
  double owed = 0;
  std::size_t sent = 0;
  std::size_t errors = 0;
  std::size_t cursor = 0;
  auto slice = start;
  while (std::chrono::steady_clock::now() < end) {
    owed += datagrams_per_ms;
    auto due = static_cast<std::size_t>(owed);
    owed -= static_cast<double>(due);
    while (due > 0) {
      const int n = static_cast<int>(std::min<std::size_t>(due, kBatch));
      for (int i = 0; i < n; ++i) {
        const std::string& d = datagrams[cursor++ % datagrams.size()];
        iov[static_cast<std::size_t>(i)] = {const_cast<char*>(d.data()), d.size()};
        msgs[static_cast<std::size_t>(i)] = mmsghdr{};
        msgs[static_cast<std::size_t>(i)].msg_hdr.msg_iov = &iov[static_cast<std::size_t>(i)];
        msgs[static_cast<std::size_t>(i)].msg_hdr.msg_iovlen = 1;
      }
      const int r = ::sendmmsg(fd, msgs.data(), static_cast<unsigned>(n), 0);
      if (r <= 0) {
        ++errors;
        cursor -= static_cast<std::size_t>(n);
        break;
      }
      cursor -= static_cast<std::size_t>(n - r);
      sent += static_cast<std::size_t>(r);
      due -= static_cast<std::size_t>(r);
    }
    slice += std::chrono::milliseconds(1);
    std::this_thread::sleep_until(slice);
  }
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::size_t events = sent * static_cast<std::size_t>(o.per_datagram);
  std::printf(
      "offered_datagrams %zu\noffered_events %zu\nseconds %.3f\nrate %.0f\nsend_errors %zu\n", sent,
      events, elapsed, static_cast<double>(events) / elapsed, errors);
  ::close(fd);
  return 0;
}
