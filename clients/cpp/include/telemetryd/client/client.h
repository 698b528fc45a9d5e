// Client sends events to a telemetryd daemon in wire format v1 (docs/wire-format.md): it batches
// events into frames with wire::FrameEncoder and writes each frame as one UDP datagram or, over
// TCP, behind a 4-byte big-endian length. No exception leaves this API; failures are Error values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "telemetryd/common/expected.h"
#include "telemetryd/wire/encoder.h"

namespace telemetryd::client {

// How frames travel to the daemon. A value; no shared state.
enum class Transport : std::uint8_t { kUdp, kTcp };

// Frame budgets used when ClientOptions::max_frame_bytes is 0. 1432 bytes keep a UDP datagram
// within a 1500-byte Ethernet MTU under IPv6 or IPv4 with room for tunnel headers, so it is never
// fragmented; TCP has no such limit and larger frames mean fewer length prefixes and syscalls.
inline constexpr std::size_t kDefaultUdpFrameBytes = 1432;
inline constexpr std::size_t kDefaultTcpFrameBytes = 65536;
// The largest payload an IPv4 UDP datagram can carry.
inline constexpr std::size_t kMaxUdpFrameBytes = 65507;

// Where and how a Client sends. A plain value; copy it freely.
struct ClientOptions {
  std::string host = "127.0.0.1";  // a name or an address, resolved once by Connect
  std::uint16_t port = 7625;
  Transport transport = Transport::kUdp;
  // Frame budget in bytes, frame header included (not the TCP length prefix). 0 picks the
  // transport's default: kDefaultUdpFrameBytes or kDefaultTcpFrameBytes.
  std::size_t max_frame_bytes = 0;
  // The unit of EventRecord::system_time: 1'000'000'000 for nanoseconds since the epoch.
  std::uint64_t units_per_second = 1'000'000'000;
};

// What a Client has done so far. A plain value returned by Client::counters().
struct ClientCounters {
  std::uint64_t frames_sent = 0;
  std::uint64_t events_sent = 0;  // events in frames that were written whole
  std::uint64_t bytes_sent = 0;   // bytes handed to the socket, TCP length prefixes included
  std::uint64_t send_errors = 0;  // frames lost to a socket error
};

// A connection to one daemon that batches events into frames. Not thread-safe: use one Client per
// thread (each has its own socket and encoder).
//
// Events wait in the current frame until it is full, Flush() is called or the Client is
// destroyed; a caller that sends rarely should Flush() after each burst. When a frame cannot be
// written its events are lost and counted in send_errors. Over TCP the connection is then closed
// and every later call fails with "client.disconnected": a partly written frame would leave the
// stream impossible to resynchronise, and reconnecting is the caller's choice.
// Any call can also fail with "client.internal" should memory run out.
class Client {
 public:
  // Resolves the host and connects a UDP or TCP socket. Error codes: "client.invalid_options",
  // "client.resolve_failed", "client.connect_failed".
  static Expected<std::unique_ptr<Client>> Connect(const ClientOptions& options);

  // Sends what is pending, ignoring failures.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Adds `event` to the current frame, first sending the frame if the event does not fit in it.
  // Error codes: "client.invalid_event" (the event breaks a wire v1 limit) and
  // "client.event_too_large" (it does not fit in an empty frame of max_frame_bytes), after which
  // the pending frame is as it was; "client.send_failed" and "client.disconnected", after which
  // the pending frame is lost and `event` was not taken.
  Status Send(const wire::EventRecord& event);

  // Sends the pending frame, if any. Error codes: "client.send_failed", "client.disconnected".
  Status Flush();

  [[nodiscard]] const ClientCounters& counters() const noexcept { return counters_; }
  [[nodiscard]] std::uint64_t frames_sent() const noexcept { return counters_.frames_sent; }
  [[nodiscard]] std::uint64_t events_sent() const noexcept { return counters_.events_sent; }
  [[nodiscard]] std::uint64_t bytes_sent() const noexcept { return counters_.bytes_sent; }
  [[nodiscard]] std::uint64_t send_errors() const noexcept { return counters_.send_errors; }
  // Events added to the current frame and not yet sent.
  [[nodiscard]] std::size_t pending_events() const noexcept;
  // The frame budget in effect (the transport default when the options said 0).
  [[nodiscard]] std::size_t max_frame_bytes() const noexcept { return max_frame_bytes_; }

 private:
  struct Socket;  // the Boost.Asio socket, kept out of this header

  Client(std::unique_ptr<Socket> socket, const ClientOptions& options, std::size_t max_frame_bytes);

  Status SendFrame();
  Status AddAfterSending(const wire::EventRecord& event);
  Error InvalidEventError(const wire::EventRecord& event) const;
  Error TooLargeError(const wire::EventRecord& event) const;

  std::unique_ptr<Socket> socket_;
  wire::EncoderOptions encoder_options_;
  std::size_t max_frame_bytes_;
  wire::FrameEncoder encoder_;
  // Built on first use; tries an event alone in an empty frame (see Send()).
  std::unique_ptr<wire::FrameEncoder> probe_;
  ClientCounters counters_;
};

// Stable lower-case name of a transport: "udp" or "tcp".
const char* TransportName(Transport transport) noexcept;

}  // namespace telemetryd::client
