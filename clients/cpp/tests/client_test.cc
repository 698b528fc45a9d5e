#include <doctest/doctest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "telemetryd/client/client.h"
#include "telemetryd/client/ndjson.h"
#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/term.h"

namespace {

namespace asio = boost::asio;
namespace tc = telemetryd::client;
namespace wire = telemetryd::wire;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

struct Decoded {
  std::string name;
  bool has_time = false;
  std::int64_t system_time = 0;
  std::vector<std::pair<std::string, wire::Number>> measurements;
  std::vector<std::pair<std::string, wire::Term>> metadata;

  const wire::Number* Measure(std::string_view key) const {
    for (const auto& [k, v] : measurements) {
      if (k == key) return &v;
    }
    return nullptr;
  }
  const wire::Term* Meta(std::string_view key) const {
    for (const auto& [k, v] : metadata) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

struct Recorder : wire::FrameVisitor {
  std::vector<Decoded> events;
  std::size_t errors = 0;
  wire::FrameInfo last_frame;

  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    last_frame = frame;
    Decoded d;
    d.name = std::string(event.name);
    d.has_time = event.has_time;
    d.system_time = event.system_time;
    for (const auto& m : event.measurements) d.measurements.emplace_back(m.key, m.value);
    for (const auto& f : event.metadata) d.metadata.emplace_back(f.key(), wire::ToTerm(f.value));
    events.push_back(std::move(d));
  }
  void OnError(wire::DecodeError, std::uint32_t) noexcept override { ++errors; }
};

bool WaitReadable(int fd, milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) > 0;
}

milliseconds Left(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? left : milliseconds(0);
}

// A UDP socket on 127.0.0.1 that decodes every datagram it receives.
class UdpReceiver {
 public:
  UdpReceiver() : socket_(io_, asio::ip::udp::endpoint(asio::ip::address_v4::loopback(), 0)) {
    boost::system::error_code ignored;
    // Room for every datagram a test sends before it starts reading.
    socket_.set_option(asio::socket_base::receive_buffer_size(1 << 20), ignored);
  }

  std::uint16_t port() const { return socket_.local_endpoint().port(); }

  // Reads datagrams until `events` events have arrived or `timeout` has passed.
  void ReceiveUntil(std::size_t events, milliseconds timeout = milliseconds(3000)) {
    const auto deadline = Clock::now() + timeout;
    while (recorder.events.size() < events &&
           WaitReadable(socket_.native_handle(), Left(deadline))) {
      ReadOne();
    }
  }

  // True when a datagram arrives within `timeout` (it is decoded too).
  bool AnyWithin(milliseconds timeout) {
    if (!WaitReadable(socket_.native_handle(), timeout)) return false;
    ReadOne();
    return true;
  }

  Recorder recorder;
  std::vector<std::size_t> datagram_sizes;

 private:
  void ReadOne() {
    std::array<std::uint8_t, 65536> buffer{};
    boost::system::error_code ec;
    const std::size_t n = socket_.receive(asio::buffer(buffer), 0, ec);
    REQUIRE_FALSE(ec);
    datagram_sizes.push_back(n);
    decoder_.Decode(std::span<const std::uint8_t>(buffer.data(), n), recorder);
  }

  asio::io_context io_;
  asio::ip::udp::socket socket_;
  wire::FrameDecoder decoder_;
};

// A TCP listener on 127.0.0.1 that accepts one connection and decodes its length-prefixed frames.
class TcpReceiver {
 public:
  TcpReceiver() : acceptor_(io_, asio::ip::tcp::endpoint(asio::ip::address_v4::loopback(), 0)) {}

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  void Accept() {
    REQUIRE(WaitReadable(acceptor_.native_handle(), milliseconds(3000)));
    boost::system::error_code ec;
    acceptor_.accept(socket_, ec);
    REQUIRE_FALSE(ec);
  }

  void Close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
    acceptor_.close(ignored);
  }

  // Reads the stream until `events` events have arrived or `timeout` has passed.
  void ReceiveUntil(std::size_t events, milliseconds timeout = milliseconds(3000)) {
    const auto deadline = Clock::now() + timeout;
    while (recorder.events.size() < events &&
           WaitReadable(socket_.native_handle(), Left(deadline))) {
      std::array<std::uint8_t, 65536> chunk{};
      boost::system::error_code ec;
      const std::size_t n = socket_.read_some(asio::buffer(chunk), ec);
      if (ec) break;
      stream_.insert(stream_.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
      while (stream_.size() >= 4) {
        const std::uint32_t length = (std::uint32_t{stream_[0]} << 24) |
                                     (std::uint32_t{stream_[1]} << 16) |
                                     (std::uint32_t{stream_[2]} << 8) | std::uint32_t{stream_[3]};
        if (stream_.size() < 4 + std::size_t{length}) break;
        prefixes.push_back({stream_[0], stream_[1], stream_[2], stream_[3]});
        frame_sizes.push_back(length);
        decoder_.Decode(std::span<const std::uint8_t>(stream_.data() + 4, length), recorder);
        stream_.erase(stream_.begin(), stream_.begin() + 4 + static_cast<std::ptrdiff_t>(length));
      }
    }
  }

  Recorder recorder;
  std::vector<std::size_t> frame_sizes;
  std::vector<std::array<std::uint8_t, 4>> prefixes;

 private:
  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  asio::ip::tcp::socket socket_{io_};
  std::vector<std::uint8_t> stream_;
  wire::FrameDecoder decoder_;
};

wire::EventRecord Prepare(std::int64_t op) {
  wire::EventRecord e;
  e.name = "vsr.protocol.prepare.sent";
  e.measurements = {{"count", wire::Number::Int(1)}};
  e.metadata = {{"node_id", wire::Term::String("n1")},
                {"status", wire::Term::Atom("normal")},
                {"op_number", wire::Term::Int(op)}};
  return e;
}

std::unique_ptr<tc::Client> MustConnect(const tc::ClientOptions& options) {
  auto connected = tc::Client::Connect(options);
  if (!connected) FAIL(connected.error().code << ": " << connected.error().message);
  return std::move(connected).value();
}

tc::ClientOptions Udp(std::uint16_t port, std::size_t max_frame_bytes = 0) {
  tc::ClientOptions options;
  options.port = port;
  options.max_frame_bytes = max_frame_bytes;
  return options;
}

tc::ClientOptions Tcp(std::uint16_t port, std::size_t max_frame_bytes = 0) {
  tc::ClientOptions options = Udp(port, max_frame_bytes);
  options.transport = tc::Transport::kTcp;
  return options;
}

bool IsInt(const wire::Number* n, std::int64_t v) { return n && !n->is_float && n->int_value == v; }
bool IsFloat(const wire::Number* n, double v) { return n && n->is_float && n->float_value == v; }

}  // namespace

TEST_CASE("UDP: many events become several datagrams within the budget, in order") {
  UdpReceiver receiver;
  auto c = MustConnect(Udp(receiver.port(), 256));
  constexpr int kEvents = 120;
  for (int i = 0; i < kEvents; ++i) REQUIRE(c->Send(Prepare(i)));
  REQUIRE(c->Flush());
  receiver.ReceiveUntil(kEvents);

  REQUIRE(receiver.recorder.events.size() == kEvents);
  CHECK(receiver.recorder.errors == 0);
  CHECK(receiver.datagram_sizes.size() > 1);
  std::size_t total = 0;
  for (const std::size_t size : receiver.datagram_sizes) {
    CHECK(size <= 256);
    total += size;
  }
  for (int i = 0; i < kEvents; ++i) {
    const auto& e = receiver.recorder.events[static_cast<std::size_t>(i)];
    CHECK(e.name == "vsr.protocol.prepare.sent");
    CHECK(IsInt(e.Measure("count"), 1));
    REQUIRE(e.Meta("op_number"));
    CHECK(*e.Meta("op_number") == wire::Term::Int(i));
    CHECK(*e.Meta("status") == wire::Term::Atom("normal"));
  }
  CHECK(c->frames_sent() == receiver.datagram_sizes.size());
  CHECK(c->events_sent() == kEvents);
  CHECK(c->bytes_sent() == total);
  CHECK(c->send_errors() == 0);
  CHECK(c->pending_events() == 0);
}

TEST_CASE("UDP: events wait in the frame until Flush") {
  UdpReceiver receiver;
  auto c = MustConnect(Udp(receiver.port()));
  CHECK(c->max_frame_bytes() == tc::kDefaultUdpFrameBytes);
  REQUIRE(c->Send(Prepare(1)));
  REQUIRE(c->Send(Prepare(2)));
  CHECK(c->pending_events() == 2);
  CHECK_FALSE(receiver.AnyWithin(milliseconds(50)));
  CHECK(c->frames_sent() == 0);

  REQUIRE(c->Flush());
  receiver.ReceiveUntil(2);
  CHECK(receiver.datagram_sizes.size() == 1);
  CHECK(receiver.recorder.events.size() == 2);
  CHECK(c->frames_sent() == 1);
  CHECK(c->events_sent() == 2);

  REQUIRE(c->Flush());  // nothing pending: no empty frame goes out
  CHECK(c->frames_sent() == 1);
  CHECK_FALSE(receiver.AnyWithin(milliseconds(50)));
}

TEST_CASE("UDP: the destructor sends what is pending") {
  UdpReceiver receiver;
  {
    auto c = MustConnect(Udp(receiver.port()));
    REQUIRE(c->Send(Prepare(7)));
  }
  receiver.ReceiveUntil(1);
  REQUIRE(receiver.recorder.events.size() == 1);
  CHECK(*receiver.recorder.events[0].Meta("op_number") == wire::Term::Int(7));
}

TEST_CASE("UDP: time unit and event times reach the receiver") {
  UdpReceiver receiver;
  tc::ClientOptions options = Udp(receiver.port());
  options.units_per_second = 1'000'000;
  auto c = MustConnect(options);
  wire::EventRecord e = Prepare(1);
  e.system_time = 1'764'000'000'123'456;
  REQUIRE(c->Send(e));
  REQUIRE(c->Flush());
  receiver.ReceiveUntil(1);
  REQUIRE(receiver.recorder.events.size() == 1);
  CHECK(receiver.recorder.last_frame.units_per_second == 1'000'000);
  CHECK(receiver.recorder.events[0].has_time);
  CHECK(receiver.recorder.events[0].system_time == 1'764'000'000'123'456);
}

TEST_CASE("an event too large for an empty frame is an error and leaves the frame intact") {
  UdpReceiver receiver;
  auto c = MustConnect(Udp(receiver.port(), 128));
  REQUIRE(c->Send(Prepare(1)));
  wire::EventRecord big = Prepare(2);
  big.metadata.emplace_back("blob", wire::Term::String(std::string(300, 'x')));
  const auto sent = c->Send(big);
  REQUIRE_FALSE(sent);
  CHECK(sent.error().code == "client.event_too_large");
  CHECK(sent.error().message.find("128") != std::string::npos);
  CHECK(c->pending_events() == 1);

  REQUIRE(c->Flush());
  receiver.ReceiveUntil(1);
  REQUIRE(receiver.recorder.events.size() == 1);
  CHECK(*receiver.recorder.events[0].Meta("op_number") == wire::Term::Int(1));
  CHECK(c->send_errors() == 0);
}

TEST_CASE("invalid events are errors and nothing is sent") {
  UdpReceiver receiver;
  auto c = MustConnect(Udp(receiver.port()));
  REQUIRE(c->Send(Prepare(1)));  // a pending frame must not make the check lenient

  wire::EventRecord empty_name = Prepare(2);
  empty_name.name = "";
  wire::EventRecord empty_segment = Prepare(2);
  empty_segment.name = "vsr..sent";
  wire::EventRecord many = Prepare(2);
  for (int i = 0; i < 40; ++i) {
    many.measurements.emplace_back("m" + std::to_string(i), wire::Number::Int(i));
  }
  wire::EventRecord empty_key = Prepare(2);
  empty_key.metadata.emplace_back("", wire::Term::Nil());
  wire::EventRecord odd_map = Prepare(2);
  odd_map.metadata.emplace_back("m", wire::Term::Map({}));
  odd_map.metadata.back().second.items.push_back(wire::Term::Int(1));

  for (const auto* e : {&empty_name, &empty_segment, &many, &empty_key, &odd_map}) {
    const auto sent = c->Send(*e);
    REQUIRE_FALSE(sent);
    CHECK(sent.error().code == "client.invalid_event");
  }
  CHECK(c->pending_events() == 1);
  REQUIRE(c->Flush());
  receiver.ReceiveUntil(1);
  CHECK(receiver.recorder.events.size() == 1);
  CHECK(c->frames_sent() == 1);
}

TEST_CASE("bad options are reported before connecting") {
  tc::ClientOptions options;
  options.units_per_second = 0;
  auto a = tc::Client::Connect(options);
  REQUIRE_FALSE(a);
  CHECK(a.error().code == "client.invalid_options");

  options = tc::ClientOptions{};
  options.max_frame_bytes = 70'000;  // over a UDP datagram
  auto b = tc::Client::Connect(options);
  REQUIRE_FALSE(b);
  CHECK(b.error().code == "client.invalid_options");

  options = tc::ClientOptions{};
  options.port = 0;
  CHECK(tc::Client::Connect(options).error().code == "client.invalid_options");
  options = tc::ClientOptions{};
  options.host = "";
  CHECK(tc::Client::Connect(options).error().code == "client.invalid_options");
}

TEST_CASE("TCP: frames follow a 4-byte big-endian length and decode") {
  TcpReceiver receiver;
  auto c = MustConnect(Tcp(receiver.port(), 512));
  receiver.Accept();
  constexpr int kEvents = 100;
  for (int i = 0; i < kEvents; ++i) REQUIRE(c->Send(Prepare(i)));
  REQUIRE(c->Flush());
  receiver.ReceiveUntil(kEvents);

  REQUIRE(receiver.recorder.events.size() == kEvents);
  CHECK(receiver.recorder.errors == 0);
  CHECK(receiver.frame_sizes.size() > 1);
  CHECK(c->frames_sent() == receiver.frame_sizes.size());
  std::size_t total = 0;
  for (const std::size_t size : receiver.frame_sizes) {
    CHECK(size <= 512);
    total += 4 + size;
  }
  CHECK(c->bytes_sent() == total);
  // A frame over 255 bytes shows the byte order: the high byte comes first.
  REQUIRE(receiver.frame_sizes[0] > 255);
  CHECK(receiver.prefixes[0][0] == 0);
  CHECK(receiver.prefixes[0][1] == 0);
  CHECK(receiver.prefixes[0][2] == (receiver.frame_sizes[0] >> 8));
  CHECK(receiver.prefixes[0][3] == (receiver.frame_sizes[0] & 0xFF));
  for (int i = 0; i < kEvents; ++i) {
    CHECK(*receiver.recorder.events[static_cast<std::size_t>(i)].Meta("op_number") ==
          wire::Term::Int(i));
  }
}

TEST_CASE("TCP: the default budget is 64 KiB") {
  TcpReceiver receiver;
  auto c = MustConnect(Tcp(receiver.port()));
  CHECK(c->max_frame_bytes() == tc::kDefaultTcpFrameBytes);
}

TEST_CASE("TCP: a full string table starts a new frame instead of rejecting the event") {
  TcpReceiver receiver;
  // Each event brings a string of its own; a frame holds at most 1024 of them, fewer than this
  // budget would allow.
  auto c = MustConnect(Tcp(receiver.port(), 1 << 20));
  receiver.Accept();
  constexpr int kEvents = 1100;
  for (int i = 0; i < kEvents; ++i) {
    wire::EventRecord e = Prepare(i);
    e.metadata.emplace_back("request_id", wire::Term::String("req-" + std::to_string(i)));
    const auto sent = c->Send(e);
    REQUIRE_MESSAGE(sent, "event " << i << ": " << sent.error().message);
  }
  REQUIRE(c->Flush());
  receiver.ReceiveUntil(kEvents);
  REQUIRE(receiver.recorder.events.size() == kEvents);
  CHECK(receiver.frame_sizes.size() == 2);
  CHECK(*receiver.recorder.events.back().Meta("request_id") == wire::Term::String("req-1099"));
}

TEST_CASE("TCP: a refused connection is an Error") {
  std::uint16_t port = 0;
  {
    TcpReceiver closed;  // take a free port, then stop listening on it
    port = closed.port();
    closed.Close();
  }
  const auto connected = tc::Client::Connect(Tcp(port));
  REQUIRE_FALSE(connected);
  CHECK(connected.error().code == "client.connect_failed");
  CHECK(connected.error().message.find(std::to_string(port)) != std::string::npos);
}

TEST_CASE("TCP: a write to a closed peer fails once, then the client reports disconnected") {
  TcpReceiver receiver;
  auto c = MustConnect(Tcp(receiver.port()));
  receiver.Accept();
  receiver.Close();
  std::optional<telemetryd::Error> failure;
  // The first write after the peer closed may still succeed; the reset it provokes fails a later
  // one.
  for (int i = 0; i < 200 && !failure; ++i) {
    REQUIRE(c->Send(Prepare(i)));
    if (auto flushed = c->Flush(); !flushed) failure = flushed.error();
    if (!failure) std::this_thread::sleep_for(milliseconds(5));
  }
  REQUIRE(failure);
  CHECK(failure->code == "client.send_failed");
  CHECK(c->send_errors() == 1);
  const auto after = c->Send(Prepare(0));
  REQUIRE_FALSE(after);
  CHECK(after.error().code == "client.disconnected");
  CHECK(c->Flush().error().code == "client.disconnected");
}

TEST_CASE("NDJSON: names, numbers and every metadata mapping") {
  const auto parsed = tc::ParseEventJson(R"({"event": ["vsr", "protocol", "prepare", "sent"],
      "measurements": {"count": 3, "duration": 1.5, "neg": -7, "big": 18446744073709551615,
                       "whole": 2.0},
      "metadata": {"zeta": "n1", "status": ":normal", "colon": "::x", "bare": ":",
                   "int": 4, "float": 0.25, "yes": true, "no": false, "nothing": null,
                   "list": [1, "a", ":b"], "map": {":ip": "127.0.0.1", "port": 7625}},
      "time": 1764000000123456789})");
  REQUIRE_MESSAGE(parsed, parsed.error().message);
  const wire::EventRecord& e = *parsed;
  CHECK(e.name == "vsr.protocol.prepare.sent");
  REQUIRE(e.system_time);
  CHECK(*e.system_time == 1'764'000'000'123'456'789);

  REQUIRE(e.measurements.size() == 5);
  CHECK(e.measurements[0].first == "count");
  CHECK(IsInt(&e.measurements[0].second, 3));
  CHECK(IsFloat(&e.measurements[1].second, 1.5));
  CHECK(IsInt(&e.measurements[2].second, -7));
  CHECK(IsFloat(&e.measurements[3].second, 18446744073709551615.0));  // beyond int64
  CHECK(IsFloat(&e.measurements[4].second, 2.0));

  using wire::Term;
  const std::vector<std::pair<std::string, Term>> want = {
      {"zeta", Term::String("n1")},  // order of the line, not sorted
      {"status", Term::Atom("normal")},
      {"colon", Term::String(":x")},
      {"bare", Term::String(":")},
      {"int", Term::Int(4)},
      {"float", Term::Float(0.25)},
      {"yes", Term::Bool(true)},
      {"no", Term::Bool(false)},
      {"nothing", Term::Nil()},
      {"list", Term::List({Term::Int(1), Term::String("a"), Term::Atom("b")})},
      {"map", Term::Map({{Term::Atom("ip"), Term::String("127.0.0.1")},
                         {Term::String("port"), Term::Int(7625)}})}};
  REQUIRE(e.metadata.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CAPTURE(want[i].first);
    CHECK(e.metadata[i].first == want[i].first);
    CHECK(e.metadata[i].second == want[i].second);
  }
}

TEST_CASE("NDJSON: a string name and no optional fields") {
  const auto parsed = tc::ParseEventJson(R"({"event":"a.b"})");
  REQUIRE(parsed);
  CHECK(parsed->name == "a.b");
  CHECK_FALSE(parsed->system_time);
  CHECK(parsed->measurements.empty());
  CHECK(parsed->metadata.empty());
  const auto nulls =
      tc::ParseEventJson(R"({"event":"a","measurements":null,"metadata":null,"time":null})");
  REQUIRE(nulls);
  CHECK_FALSE(nulls->system_time);
}

TEST_CASE("NDJSON: every error has a code and names the field") {
  std::string deep = "1";
  for (int i = 0; i < 9; ++i) deep.insert(0, "[").append("]");
  std::string many = R"({"event":"a","measurements":{)";
  for (int i = 0; i < 33; ++i) many += (i ? ",\"m" : "\"m") + std::to_string(i) + "\":1";
  many += "}}";

  struct Case {
    std::string line;
    std::string code;
    std::string field;  // must appear in the message
  };
  const std::vector<Case> cases = {
      {R"({"event": "a.b")", "ndjson.bad_json", "parse error"},
      {"", "ndjson.bad_json", "parse error"},
      {"[1, 2]", "ndjson.not_object", "array"},
      {R"({"measurements": {"count": 1}})", "ndjson.missing_event", "event"},
      {R"({"event": 5})", "ndjson.bad_event", "event"},
      {R"({"event": "a..b"})", "ndjson.bad_event", "event"},
      {R"({"event": ""})", "ndjson.bad_event", "event"},
      {R"({"event": ["a", 2]})", "ndjson.bad_event", "event[1]"},
      {R"({"event": ["a", ""]})", "ndjson.bad_event", "event[1]"},
      {R"({"event": []})", "ndjson.bad_event", "event"},
      {R"({"event": "a", "measurements": [1]})", "ndjson.bad_measurements", "measurements"},
      {R"({"event": "a", "measurements": {"count": "3"}})", "ndjson.bad_measurements",
       "measurements.count"},
      {R"({"event": "a", "measurements": {"ok": true}})", "ndjson.bad_measurements",
       "measurements.ok"},
      {R"({"event": "a", "measurements": {"": 1}})", "ndjson.bad_measurements", "empty key"},
      {many, "ndjson.bad_measurements", "at most 32"},
      {R"({"event": "a", "metadata": "x"})", "ndjson.bad_metadata", "metadata"},
      {R"({"event": "a", "metadata": {"d": )" + deep + "}}", "ndjson.bad_metadata",
       "metadata.d[0]"},
      {R"({"event": "a", "time": 1.5})", "ndjson.bad_time", "time"},
      {R"({"event": "a", "time": "now"})", "ndjson.bad_time", "time"},
      {R"({"event": "a", "time": 18446744073709551615})", "ndjson.bad_time", "time"},
      {R"({"event": "a", "measurement": {"count": 1}})", "ndjson.unknown_field", "measurement"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.line);
    const auto parsed = tc::ParseEventJson(c.line);
    REQUIRE_FALSE(parsed);
    CHECK(parsed.error().code == c.code);
    CHECK(parsed.error().message.find(c.field) != std::string::npos);
  }
}

namespace {

struct CliRun {
  int status = -1;
  std::string output;  // stdout and stderr together
};

std::string Quote(std::string_view text) {
  std::string out = "'";
  for (const char ch : text) {
    if (ch == '\'') {
      out += "'\\''";
    } else {
      out.push_back(ch);
    }
  }
  return out + "'";
}

int ExitStatus(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

CliRun RunCli(const std::string& args) {
  const std::string command = Quote(TELEMETRY_SEND_PATH) + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe);
  CliRun run;
  std::array<char, 4096> buffer{};
  std::size_t n = 0;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    run.output.append(buffer.data(), n);
  run.status = ExitStatus(::pclose(pipe));
  return run;
}

CliRun RunCliWithInput(const std::string& args, const std::string& input) {
  const auto output_path = std::filesystem::temp_directory_path() /
                           ("telemetry-send-test-" + std::to_string(::getpid()) + ".out");
  const std::string command =
      Quote(TELEMETRY_SEND_PATH) + " " + args + " >" + Quote(output_path.string()) + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "w");
  REQUIRE(pipe);
  std::fwrite(input.data(), 1, input.size(), pipe);
  CliRun run;
  run.status = ExitStatus(::pclose(pipe));
  std::ifstream file(output_path);
  std::stringstream text;
  text << file.rdbuf();
  run.output = text.str();
  std::error_code ignored;
  std::filesystem::remove(output_path, ignored);
  return run;
}

}  // namespace

TEST_CASE("CLI: an event from arguments") {
  UdpReceiver receiver;
  const auto run = RunCli("--port " + std::to_string(receiver.port()) +
                          " vsr.protocol.prepare.sent count=3 node_id=n1 --meta view_number=4");
  CHECK(run.status == 0);
  CHECK(run.output.find("sent 1 events in 1 frames (") != std::string::npos);
  receiver.ReceiveUntil(1);
  REQUIRE(receiver.recorder.events.size() == 1);
  const Decoded& e = receiver.recorder.events[0];
  CHECK(e.name == "vsr.protocol.prepare.sent");
  CHECK(e.measurements.size() == 1);
  CHECK(IsInt(e.Measure("count"), 3));
  REQUIRE(e.metadata.size() == 2);
  CHECK(*e.Meta("node_id") == wire::Term::String("n1"));
  CHECK(*e.Meta("view_number") == wire::Term::Int(4));
  CHECK_FALSE(e.has_time);
}

TEST_CASE("CLI: numbers go to measurements unless forced, atoms, floats, repeat") {
  UdpReceiver receiver;
  const auto run = RunCli("--quiet --port=" + std::to_string(receiver.port()) +
                          " --repeat 40 vsr.protocol.view_change view_number=4 duration=1.5"
                          " status=:normal --measure op=-2 --meta ratio=0.5 reason=::x");
  CHECK(run.status == 0);
  CHECK(run.output.empty());
  receiver.ReceiveUntil(40);
  REQUIRE(receiver.recorder.events.size() == 40);
  const Decoded& e = receiver.recorder.events.back();
  CHECK(IsInt(e.Measure("view_number"), 4));
  CHECK(IsFloat(e.Measure("duration"), 1.5));
  CHECK(IsInt(e.Measure("op"), -2));
  CHECK(*e.Meta("status") == wire::Term::Atom("normal"));
  CHECK(*e.Meta("ratio") == wire::Term::Float(0.5));
  CHECK(*e.Meta("reason") == wire::Term::String(":x"));
}

TEST_CASE("CLI: TCP transport") {
  TcpReceiver receiver;
  const auto run = RunCli("--tcp --port " + std::to_string(receiver.port()) + " a.b count=1");
  CHECK(run.status == 0);
  receiver.Accept();
  receiver.ReceiveUntil(1);
  REQUIRE(receiver.recorder.events.size() == 1);
  CHECK(receiver.recorder.events[0].name == "a.b");
}

TEST_CASE("CLI: NDJSON from stdin; bad lines are reported and skipped") {
  UdpReceiver receiver;
  const std::string input =
      "{\"event\": \"a.one\", \"measurements\": {\"count\": 1}}\n"
      "{\"event\": \"a.two\", \"measurements\": {\"count\": \"x\"}}\n"
      "\n"
      "{\"event\": [\"a\", \"three\"], \"metadata\": {\"status\": \":normal\"}}\r\n"
      "not json\n"
      "{\"event\": \"a.four\", \"time\": 5}";  // no final newline
  const auto run = RunCliWithInput("--stdin --port " + std::to_string(receiver.port()), input);
  CHECK(run.status == 1);
  CHECK(run.output.find("line 2: measurements.count") != std::string::npos);
  CHECK(run.output.find("line 5:") != std::string::npos);
  CHECK(run.output.find("sent 3 events in 1 frames") != std::string::npos);
  receiver.ReceiveUntil(3);
  REQUIRE(receiver.recorder.events.size() == 3);
  CHECK(receiver.recorder.events[0].name == "a.one");
  CHECK(receiver.recorder.events[1].name == "a.three");
  CHECK(*receiver.recorder.events[1].Meta("status") == wire::Term::Atom("normal"));
  CHECK(receiver.recorder.events[2].name == "a.four");
  CHECK(receiver.recorder.events[2].system_time == 5);
}

TEST_CASE("CLI: '-' as EVENT reads stdin; all good lines exit 0") {
  UdpReceiver receiver;
  const auto run = RunCliWithInput("--quiet --port " + std::to_string(receiver.port()) + " -",
                                   "{\"event\":\"x.y\"}\n{\"event\":\"x.z\"}\n");
  CHECK(run.status == 0);
  CHECK(run.output.empty());
  receiver.ReceiveUntil(2);
  CHECK(receiver.recorder.events.size() == 2);
}

TEST_CASE("CLI: --version, --help and bad arguments") {
  const auto version = RunCli("--version");
  CHECK(version.status == 0);
  CHECK(version.output == "telemetry-send 0.1.0\n");
  const auto help = RunCli("--help");
  CHECK(help.status == 0);
  CHECK(help.output.find("usage: telemetry-send") != std::string::npos);
  CHECK(help.output.find("--meta") != std::string::npos);

  for (const char* args :
       {"", "--port", "--port 0 a.b", "--port x a.b", "--bogus a.b", "a.b novalue", "a.b =3",
        "a..b count=1", "--measure x=abc a.b", "--repeat 0 a.b", "--stdin a.b",
        "--repeat 2 --stdin", "--quiet=1 a.b", "--mtu 70000 a.b"}) {
    CAPTURE(args);
    const auto run = RunCli(std::string("--port 9 ") + args);
    CHECK(run.status == 2);
    CHECK(run.output.find("usage:") != std::string::npos);
  }
}
