// What a listener is: protocol, transport, address and limits. Produced by the config library
// (already validated) and consumed by IngestServer. Thread-safety: plain values.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace telemetryd::ingest {

enum class Protocol : std::uint8_t { kNative, kStatsd };
enum class Transport : std::uint8_t { kUdp, kTcp };

std::string_view ProtocolName(Protocol protocol) noexcept;     // "native", "statsd"
std::string_view TransportName(Transport transport) noexcept;  // "udp", "tcp"

struct ListenerOptions {
  Protocol protocol = Protocol::kNative;
  Transport transport = Transport::kUdp;
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;  // 0: the kernel picks one (tests); IngestServer reports it

  // UDP
  // SO_RCVBUF(FORCE). Memory is taken only while the workers fall behind; 64 MiB absorbs a
  // scrape-length stall at millions of events per second (bench/README.md).
  std::size_t receive_buffer_bytes = 64 * 1024 * 1024;
  std::size_t batch = 32;  // datagrams per recvmmsg call

  // TCP
  std::size_t max_frame_bytes = 1024 * 1024;  // native frames; StatsD: longest line
  std::size_t max_connections = 1024;
  std::chrono::milliseconds idle_timeout{60'000};

  // Name used in logs and as the `listener` label: "<protocol>_<transport>".
  [[nodiscard]] std::string Name() const;
  bool operator==(const ListenerOptions&) const = default;
};

struct IngestOptions {
  std::size_t workers = 2;  // threads; each owns one socket per UDP listener (SO_REUSEPORT)
  std::vector<ListenerOptions> listeners;
  bool operator==(const IngestOptions&) const = default;
};

}  // namespace telemetryd::ingest
