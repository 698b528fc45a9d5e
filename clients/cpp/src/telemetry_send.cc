// telemetry-send: sends events to a telemetryd daemon, from its arguments or as NDJSON from stdin.
// `telemetry-send --help` describes the arguments; clients/cpp/README.md has examples.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "telemetryd/client/client.h"
#include "telemetryd/client/ndjson.h"
#include "telemetryd/wire/format.h"

#ifndef TELEMETRYD_VERSION
#define TELEMETRYD_VERSION "0.1.0"
#endif

namespace {

namespace client = telemetryd::client;
namespace wire = telemetryd::wire;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr std::string_view kUsage =
    "usage: telemetry-send [options] EVENT [key=value ...]\n"
    "       telemetry-send [options] --stdin    (or EVENT = -)\n";

constexpr std::string_view kHelp = R"(
Sends telemetry events to a telemetryd daemon in wire format v1.

Argument mode sends one event named EVENT (segments joined with '.', for
example vsr.protocol.prepare.sent). Each key=value after it is
  - a measurement when the value is a number: an integer if it is one
    (count=3), otherwise a float (duration=1.5);
  - a metadata string otherwise (node_id=n1), or an atom when the value
    starts with ':' (status=:normal is the atom normal; '::x' is the
    string ':x').
So view_number=4 is a measurement. To choose explicitly:
  --meta key=value      metadata; numbers become integers or floats
  --measure key=value   measurement; the value must be a number
Booleans, nil, lists and maps can be sent with --stdin.

Stdin mode (--stdin or EVENT = -) reads one JSON object per line:
  {"event": "a.b.c" | ["a","b","c"], "measurements": {"count": 3},
   "metadata": {"node_id": "n1", "status": ":normal"}, "time": 1764000000000000000}
Blank lines are skipped. A bad line is reported with its number and skipped.

Options:
  --host H       daemon host name or address (default 127.0.0.1)
  --port P       daemon port (default 7625)
  --udp          send frames as UDP datagrams (the default)
  --tcp          send frames over one TCP connection
  --mtu N        frame budget in bytes (default 1432 for UDP, 65536 for TCP)
  --repeat N     send the argument event N times (default 1)
  --quiet        do not print the summary line
  --help         print this help
  --version      print the version

On completion a summary goes to stderr: sent N events in M frames (B bytes).
Exit status: 0 on success; 1 if an event could not be sent or a stdin line
was bad; 2 for bad arguments.
)";

struct Args {
  client::ClientOptions options;
  std::string event;
  bool from_stdin = false;
  std::uint64_t repeat = 1;
  bool repeat_given = false;
  bool quiet = false;
  bool help = false;
  bool version = false;
  std::vector<std::pair<std::string, wire::Number>> measurements;
  std::vector<std::pair<std::string, wire::Term>> metadata;
};

struct UsageError {
  std::string message;
};

std::optional<std::int64_t> ParseInt(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// Only finite values count as numbers, so that "nan" and "inf" stay strings.
std::optional<double> ParseFloat(std::string_view text) {
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  if (!std::isfinite(value)) return std::nullopt;
  return value;
}

std::optional<wire::Number> ParseNumber(std::string_view text) {
  if (const auto i = ParseInt(text)) return wire::Number::Int(*i);
  if (const auto f = ParseFloat(text)) return wire::Number::Float(*f);
  return std::nullopt;
}

std::optional<std::uint64_t> ParseCount(std::string_view text, std::uint64_t min,
                                        std::uint64_t max) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  if (value < min || value > max) return std::nullopt;
  return value;
}

std::optional<UsageError> SplitKeyValue(std::string_view arg, std::string& key,
                                        std::string& value) {
  const auto eq = arg.find('=');
  if (eq == std::string_view::npos) {
    return UsageError{"expected key=value, got '" + std::string(arg) + "'"};
  }
  if (eq == 0) return UsageError{"empty key in '" + std::string(arg) + "'"};
  key = std::string(arg.substr(0, eq));
  value = std::string(arg.substr(eq + 1));
  return std::nullopt;
}

enum class Field { kAuto, kMeasurement, kMetadata };

std::optional<UsageError> AddField(std::string_view arg, Field field, Args& args) {
  std::string key;
  std::string value;
  if (auto e = SplitKeyValue(arg, key, value)) return e;
  const auto number = ParseNumber(value);
  if (field == Field::kMeasurement && !number) {
    return UsageError{"--measure " + key + ": '" + value + "' is not a number"};
  }
  if (number && field != Field::kMetadata) {
    args.measurements.emplace_back(std::move(key), *number);
  } else if (number) {
    args.metadata.emplace_back(std::move(key), number->is_float
                                                   ? wire::Term::Float(number->float_value)
                                                   : wire::Term::Int(number->int_value));
  } else {
    args.metadata.emplace_back(std::move(key), client::TermFromJsonString(value));
  }
  return std::nullopt;
}

std::optional<UsageError> ParseArgs(int argc, char** argv, Args& args) {
  std::vector<std::string_view> positional;
  bool options_done = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (options_done || arg == "-" || !arg.starts_with("--")) {
      positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    // "--name value" and "--name=value" are both accepted.
    std::string_view name = arg;
    std::optional<std::string_view> inline_value;
    if (const auto eq = arg.find('='); eq != std::string_view::npos) {
      name = arg.substr(0, eq);
      inline_value = arg.substr(eq + 1);
    }
    const auto value = [&]() -> std::optional<std::string_view> {
      if (inline_value) return inline_value;
      if (i + 1 < argc) return std::string_view(argv[++i]);
      return std::nullopt;
    };
    const auto flag = [&]() -> std::optional<UsageError> {
      if (inline_value) return UsageError{std::string(name) + " takes no value"};
      return std::nullopt;
    };
    std::optional<UsageError> error;
    if (name == "--help") {
      error = flag();
      args.help = true;
    } else if (name == "--version") {
      error = flag();
      args.version = true;
    } else if (name == "--quiet") {
      error = flag();
      args.quiet = true;
    } else if (name == "--stdin") {
      error = flag();
      args.from_stdin = true;
    } else if (name == "--tcp") {
      error = flag();
      args.options.transport = client::Transport::kTcp;
    } else if (name == "--udp") {
      error = flag();
      args.options.transport = client::Transport::kUdp;
    } else if (name == "--host" || name == "--port" || name == "--mtu" || name == "--repeat" ||
               name == "--meta" || name == "--measure") {
      const auto v = value();
      if (!v) return UsageError{std::string(name) + " needs a value"};
      if (name == "--host") {
        if (v->empty()) return UsageError{"--host: empty host"};
        args.options.host = std::string(*v);
      } else if (name == "--port") {
        const auto port = ParseCount(*v, 1, 65535);
        if (!port) return UsageError{"--port: want 1..65535, got '" + std::string(*v) + "'"};
        args.options.port = static_cast<std::uint16_t>(*port);
      } else if (name == "--mtu") {
        const auto mtu = ParseCount(*v, 1, wire::kMaxFrameBytes);
        if (!mtu) return UsageError{"--mtu: want a byte count, got '" + std::string(*v) + "'"};
        args.options.max_frame_bytes = static_cast<std::size_t>(*mtu);
      } else if (name == "--repeat") {
        const auto n = ParseCount(*v, 1, 1'000'000'000);
        if (!n) return UsageError{"--repeat: want 1..10^9, got '" + std::string(*v) + "'"};
        args.repeat = *n;
        args.repeat_given = true;
      } else {
        error = AddField(*v, name == "--meta" ? Field::kMetadata : Field::kMeasurement, args);
      }
    } else {
      return UsageError{"unknown option " + std::string(name)};
    }
    if (error) return error;
  }
  if (args.help || args.version) return std::nullopt;

  if (!positional.empty()) {
    if (positional.front() == "-") {
      args.from_stdin = true;
    } else {
      if (args.from_stdin) return UsageError{"--stdin takes no EVENT"};
      args.event = std::string(positional.front());
    }
    for (std::size_t i = 1; i < positional.size(); ++i) {
      if (auto e = AddField(positional[i], Field::kAuto, args)) return e;
    }
  }
  if (args.from_stdin) {
    if (!args.measurements.empty() || !args.metadata.empty() || positional.size() > 1) {
      return UsageError{"fields cannot be given with --stdin"};
    }
    if (args.repeat_given) return UsageError{"--repeat cannot be used with --stdin"};
    return std::nullopt;
  }
  if (args.event.empty()) return UsageError{"no EVENT given"};
  if (!wire::IsValidEventName(args.event)) {
    return UsageError{"invalid event name '" + args.event +
                      "': want 1 to 16 non-empty segments joined with '.'"};
  }
  return std::nullopt;
}

void PrintSummary(const Args& args, const client::Client& c, std::uint64_t bad_lines) {
  if (args.quiet) return;
  std::cerr << "sent " << c.events_sent() << " events in " << c.frames_sent() << " frames ("
            << c.bytes_sent() << " bytes)";
  if (bad_lines > 0) std::cerr << ", " << bad_lines << " bad lines skipped";
  std::cerr << '\n';
}

bool IsEventProblem(const telemetryd::Error& error) {
  return error.code == "client.invalid_event" || error.code == "client.event_too_large";
}

int SendArguments(const Args& args, client::Client& c) {
  wire::EventRecord event;
  event.name = args.event;
  event.measurements = args.measurements;
  event.metadata = args.metadata;
  for (std::uint64_t i = 0; i < args.repeat; ++i) {
    if (const auto sent = c.Send(event); !sent) {
      std::cerr << "telemetry-send: " << sent.error().message << '\n';
      // An event the encoder refuses is a problem with the arguments, not with the daemon.
      return IsEventProblem(sent.error()) ? kExitUsage : kExitFailed;
    }
  }
  if (const auto flushed = c.Flush(); !flushed) {
    std::cerr << "telemetry-send: " << flushed.error().message << '\n';
    return kExitFailed;
  }
  PrintSummary(args, c, 0);
  return kExitOk;
}

int SendStdin(const Args& args, client::Client& c) {
  std::uint64_t line_number = 0;
  std::uint64_t bad_lines = 0;
  std::string line;
  while (std::getline(std::cin, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    auto event = client::ParseEventJson(line);
    if (!event) {
      std::cerr << "telemetry-send: line " << line_number << ": " << event.error().message << " ("
                << event.error().code << ")\n";
      ++bad_lines;
      continue;
    }
    if (const auto sent = c.Send(*event); !sent) {
      std::cerr << "telemetry-send: line " << line_number << ": " << sent.error().message << " ("
                << sent.error().code << ")\n";
      if (IsEventProblem(sent.error())) {
        ++bad_lines;
        continue;
      }
      // The daemon is unreachable: reading on would only lose every later line too.
      PrintSummary(args, c, bad_lines);
      return kExitFailed;
    }
  }
  if (const auto flushed = c.Flush(); !flushed) {
    std::cerr << "telemetry-send: " << flushed.error().message << '\n';
    return kExitFailed;
  }
  PrintSummary(args, c, bad_lines);
  return bad_lines > 0 ? kExitFailed : kExitOk;
}

int Run(int argc, char** argv) {
  Args args;
  if (const auto error = ParseArgs(argc, argv, args)) {
    std::cerr << "telemetry-send: " << error->message << '\n'
              << kUsage << "Try 'telemetry-send --help' for more.\n";
    return kExitUsage;
  }
  if (args.help) {
    std::cout << kUsage << kHelp;
    return kExitOk;
  }
  if (args.version) {
    std::cout << "telemetry-send " << TELEMETRYD_VERSION << '\n';
    return kExitOk;
  }
  auto connected = client::Client::Connect(args.options);
  if (!connected) {
    std::cerr << "telemetry-send: " << connected.error().message << '\n';
    if (connected.error().code != "client.invalid_options") return kExitFailed;
    std::cerr << kUsage;
    return kExitUsage;
  }
  client::Client& c = **connected;
  return args.from_stdin ? SendStdin(args, c) : SendArguments(args, c);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "telemetry-send: " << e.what() << '\n';
  } catch (...) {
    std::cerr << "telemetry-send: unknown error\n";
  }
  return kExitFailed;
}
