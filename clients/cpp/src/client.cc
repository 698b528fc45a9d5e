#include "telemetryd/client/client.h"

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/write.hpp>
#include <exception>
#include <span>
#include <string_view>
#include <utility>

#include "telemetryd/wire/format.h"

namespace telemetryd::client {
namespace {

namespace asio = boost::asio;
using boost::system::error_code;

// Event names and keys come from callers and may hold anything; keep messages on one line.
std::string Printable(std::string_view text) {
  constexpr std::size_t kMaxShown = 80;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7F || c == '"' || c == '\\') {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out;
}

Error InternalError(const char* where, const char* what) {
  return Error{"client.internal", std::string(where) + ": " + what};
}

}  // namespace

const char* TransportName(Transport transport) noexcept {
  return transport == Transport::kTcp ? "tcp" : "udp";
}

struct Client::Socket {
  asio::io_context io;
  asio::ip::udp::socket udp{io};
  asio::ip::tcp::socket tcp{io};
  Transport transport = Transport::kUdp;
  bool broken = false;  // TCP only: a write failed, the stream can no longer be trusted
  std::string peer;     // "udp://host:port", for messages

  // Writes one frame; returns the bytes put on the wire.
  std::size_t Write(std::span<const std::uint8_t> frame, error_code& ec) {
    if (transport == Transport::kUdp) {
      const std::size_t n = udp.send(asio::buffer(frame.data(), frame.size()), 0, ec);
      if (!ec && n != frame.size()) ec = asio::error::message_size;
      return ec ? 0 : n;
    }
    const auto length = static_cast<std::uint32_t>(frame.size());
    const std::array<std::uint8_t, 4> prefix{
        static_cast<std::uint8_t>(length >> 24), static_cast<std::uint8_t>(length >> 16),
        static_cast<std::uint8_t>(length >> 8), static_cast<std::uint8_t>(length)};
    // One gathered write, so a frame and its prefix normally leave in the same segment.
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(prefix),
                                                    asio::buffer(frame.data(), frame.size())};
    const std::size_t n = asio::write(tcp, buffers, ec);
    return ec ? 0 : n;
  }
};

Expected<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  try {
    const bool tcp = options.transport == Transport::kTcp;
    std::size_t budget = options.max_frame_bytes;
    if (budget == 0) budget = tcp ? kDefaultTcpFrameBytes : kDefaultUdpFrameBytes;
    const std::size_t budget_limit = tcp ? wire::kMaxFrameBytes : kMaxUdpFrameBytes;
    if (budget > budget_limit) {
      return Error{"client.invalid_options", "max_frame_bytes " + std::to_string(budget) +
                                                 " is over the " +
                                                 TransportName(options.transport) + " limit of " +
                                                 std::to_string(budget_limit)};
    }
    if (options.units_per_second == 0 || options.units_per_second > wire::kMaxUnitsPerSecond) {
      return Error{
          "client.invalid_options",
          "units_per_second " + std::to_string(options.units_per_second) + " is outside 1..10^12"};
    }
    if (options.host.empty()) return Error{"client.invalid_options", "host is empty"};
    if (options.port == 0) return Error{"client.invalid_options", "port is 0"};

    auto socket = std::make_unique<Socket>();
    socket->transport = options.transport;
    socket->peer = std::string(TransportName(options.transport)) + "://" + options.host + ":" +
                   std::to_string(options.port);
    const std::string service = std::to_string(options.port);
    error_code ec;
    if (tcp) {
      asio::ip::tcp::resolver resolver(socket->io);
      const auto endpoints =
          resolver.resolve(options.host, service, asio::ip::resolver_base::numeric_service, ec);
      if (ec) {
        return Error{"client.resolve_failed", "resolving " + socket->peer + ": " + ec.message()};
      }
      asio::connect(socket->tcp, endpoints, ec);
      if (ec) {
        return Error{"client.connect_failed",
                     "connecting to " + socket->peer + ": " + ec.message()};
      }
      // Frames are already batched; Nagle would only hold a finished frame back.
      socket->tcp.set_option(asio::ip::tcp::no_delay(true), ec);
    } else {
      asio::ip::udp::resolver resolver(socket->io);
      const auto endpoints =
          resolver.resolve(options.host, service, asio::ip::resolver_base::numeric_service, ec);
      if (ec) {
        return Error{"client.resolve_failed", "resolving " + socket->peer + ": " + ec.message()};
      }
      // A connected UDP socket lets the kernel report ICMP errors (nobody listening) on later
      // sends instead of dropping them silently.
      ec = asio::error::host_not_found;
      for (const auto& entry : endpoints) {
        error_code attempt;
        socket->udp.close(attempt);
        socket->udp.open(entry.endpoint().protocol(), attempt);
        if (!attempt) socket->udp.connect(entry.endpoint(), attempt);
        ec = attempt;
        if (!ec) break;
      }
      if (ec) {
        return Error{"client.connect_failed",
                     "connecting to " + socket->peer + ": " + ec.message()};
      }
    }
    return std::unique_ptr<Client>(new Client(std::move(socket), options, budget));
  } catch (const std::exception& e) {
    return InternalError("Client::Connect", e.what());
  } catch (...) {
    return InternalError("Client::Connect", "unknown exception");
  }
}

Client::Client(std::unique_ptr<Socket> socket, const ClientOptions& options,
               std::size_t max_frame_bytes)
    : socket_(std::move(socket)),
      encoder_options_{options.units_per_second, max_frame_bytes, std::nullopt},
      max_frame_bytes_(max_frame_bytes),
      encoder_(encoder_options_) {}

Client::~Client() {
  try {
    (void)Flush();
  } catch (...) {  // NOLINT(bugprone-empty-catch): nobody is left to report to
  }
}

std::size_t Client::pending_events() const noexcept { return encoder_.event_count(); }

Status Client::SendFrame() {
  if (encoder_.empty()) return Ok{};
  const std::size_t events = encoder_.event_count();
  const auto frame = encoder_.Finish();
  error_code ec;
  const std::size_t written = socket_->Write(frame, ec);
  if (ec) {
    ++counters_.send_errors;
    std::string message = "sending a " + std::to_string(frame.size()) + "-byte frame of " +
                          std::to_string(events) + " events to " + socket_->peer + ": " +
                          ec.message();
    if (socket_->transport == Transport::kTcp) {
      error_code ignored;
      socket_->tcp.close(ignored);
      socket_->broken = true;
      message += " (connection closed)";
    }
    return Error{"client.send_failed", std::move(message)};
  }
  ++counters_.frames_sent;
  counters_.events_sent += events;
  counters_.bytes_sent += written;
  return Ok{};
}

Error Client::InvalidEventError(const wire::EventRecord& event) const {
  const std::string name = "\"" + Printable(event.name) + "\"";
  if (!wire::IsValidEventName(event.name)) {
    return Error{"client.invalid_event",
                 "invalid event name " + name +
                     ": want 1 to 16 non-empty segments joined with '.', at most 255 bytes of "
                     "UTF-8 without control characters"};
  }
  if (event.measurements.size() > wire::kMaxMeasurements) {
    return Error{"client.invalid_event", "event " + name + " has " +
                                             std::to_string(event.measurements.size()) +
                                             " measurements; at most 32 are allowed"};
  }
  if (event.metadata.size() > wire::kMaxMetadata) {
    return Error{"client.invalid_event", "event " + name + " has " +
                                             std::to_string(event.metadata.size()) +
                                             " metadata fields; at most 64 are allowed"};
  }
  const auto bad_key = [](const std::string& key) {
    return key.empty() || !wire::IsValidUtf8(key);
  };
  for (const auto& [key, value] : event.measurements) {
    if (bad_key(key)) {
      return Error{"client.invalid_event", "event " + name +
                                               " has an empty or non-UTF-8 "
                                               "measurement key \"" +
                                               Printable(key) + "\""};
    }
  }
  for (const auto& [key, value] : event.metadata) {
    if (bad_key(key)) {
      return Error{"client.invalid_event", "event " + name +
                                               " has an empty or non-UTF-8 "
                                               "metadata key \"" +
                                               Printable(key) + "\""};
    }
  }
  return Error{"client.invalid_event",
               "event " + name +
                   " breaks a wire v1 limit: a string over 4096 bytes, a map with an odd item "
                   "count or values nested more than 8 deep"};
}

Error Client::TooLargeError(const wire::EventRecord& event) const {
  return Error{"client.event_too_large", "event \"" + Printable(event.name) +
                                             "\" does not fit in an empty frame of " +
                                             std::to_string(max_frame_bytes_) + " bytes"};
}

Status Client::AddAfterSending(const wire::EventRecord& event) {
  if (Status sent = SendFrame(); !sent) return sent;
  switch (encoder_.Add(event)) {
    case wire::AddResult::kAdded:
      return Ok{};
    case wire::AddResult::kInvalid:
      return InvalidEventError(event);
    case wire::AddResult::kFrameFull:  // not expected from an empty frame
    case wire::AddResult::kEventTooLarge:
      break;
  }
  return TooLargeError(event);
}

Status Client::Send(const wire::EventRecord& event) {
  try {
    if (socket_->broken) {
      return Error{"client.disconnected",
                   "the connection to " + socket_->peer + " was closed after a failed write"};
    }
    // The encoder does not enforce the per-frame event limit; only huge TCP budgets can reach it.
    if (encoder_.event_count() >= wire::kMaxEventsPerFrame) {
      if (Status sent = SendFrame(); !sent) return sent;
    }
    switch (encoder_.Add(event)) {
      case wire::AddResult::kAdded:
        return Ok{};
      case wire::AddResult::kEventTooLarge:
        return TooLargeError(event);
      case wire::AddResult::kInvalid:
        if (encoder_.empty()) return InvalidEventError(event);
        break;
      case wire::AddResult::kFrameFull:
        break;
    }
    // Against a non-empty frame the encoder cannot say whether the event would fit alone, and it
    // also answers kInvalid when the frame's string table is full, which a new frame cures. Trying
    // the event alone in a scratch encoder settles both before anything is sent, so that an error
    // leaves the pending frame as it was.
    if (!probe_) probe_ = std::make_unique<wire::FrameEncoder>(encoder_options_);
    const wire::AddResult alone = probe_->Add(event);
    (void)probe_->Finish();
    if (alone == wire::AddResult::kInvalid) return InvalidEventError(event);
    if (alone == wire::AddResult::kEventTooLarge) return TooLargeError(event);
    return AddAfterSending(event);
  } catch (const std::exception& e) {
    return InternalError("Client::Send", e.what());
  } catch (...) {
    return InternalError("Client::Send", "unknown exception");
  }
}

Status Client::Flush() {
  try {
    if (socket_->broken) {
      return Error{"client.disconnected",
                   "the connection to " + socket_->peer + " was closed after a failed write"};
    }
    return SendFrame();
  } catch (const std::exception& e) {
    return InternalError("Client::Flush", e.what());
  } catch (...) {
    return InternalError("Client::Flush", "unknown exception");
  }
}

}  // namespace telemetryd::client
