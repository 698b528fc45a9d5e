// The StatsD push exporter (docs/statsd-push.md): every flush interval the daemon hands the
// engine's deltas (Engine::TakeDeltaSnapshot) to a StatsdPusher, which formats them as StatsD or
// DogStatsD lines, packs the lines into datagrams of at most the MTU and sends them to each
// destination over UDP or a Unix datagram socket.
//
// Thread-safety: FormatLines, Batch and StatsdName are pure. A StatsdPusher is driven by one thread
// (the daemon's main thread calls Push); counters() and AddStatsdPushMetrics may run on any thread
// at the same time (they read atomics).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/metric_family.h>

#include "telemetryd/aggregate/engine.h"
#include "telemetryd/config/config.h"

namespace telemetryd::exporters {

// The options live in the config library (config::StatsdPushOptions) so that config does not
// depend on the exporters.
using StatsdPushOptions = config::StatsdPushOptions;

// `text` with the characters a StatsD line cannot carry in a name (':', '|', '@', '#', spaces and
// control characters) replaced by '_'.
std::string StatsdName(std::string_view text);

// The lines for one push, in the order of `deltas`. Each element is one line, except a gauge set to
// a negative value: StatsD reads a leading '-' as "subtract", so it is sent as "name:0|g" and then
// "name:-5|g", and both lines stay in one element so that they travel in one datagram, in order.
// Non-finite values are left out (StatsD cannot carry them).
std::vector<std::string> FormatLines(const aggregate::Snapshot& deltas,
                                     const StatsdPushOptions& options);
// The same for points (Engine::TakeDeltas).
std::vector<std::string> FormatLines(const std::vector<aggregate::MetricPoints>& deltas,
                                     const StatsdPushOptions& options);

// Packs the elements into payloads of at most `mtu` bytes, separated by '\n'. An element is never
// split; one longer than `mtu` goes alone in its own datagram rather than being dropped.
std::vector<std::string> Batch(const std::vector<std::string>& lines, std::size_t mtu);

struct StatsdDestinationCounters {
  std::string destination;  // as configured
  std::uint64_t flushes_ok = 0;
  std::uint64_t flushes_failed = 0;  // at least one datagram of the flush was not sent
  std::uint64_t packets_sent = 0;
  std::uint64_t packets_failed = 0;
};

class StatsdPusher {
 public:
  explicit StatsdPusher(StatsdPushOptions options);
  ~StatsdPusher();
  StatsdPusher(const StatsdPusher&) = delete;
  StatsdPusher& operator=(const StatsdPusher&) = delete;

  // Sends `deltas` to every destination. A push with no lines sends nothing and counts nothing.
  // Never throws and never stops on a failure: an unresolvable name, a missing Unix socket, a
  // refused or full destination are counted and logged (rate-limited), and the next push tries
  // again. A socket is kept between pushes and opened anew after a failure, so a name is resolved
  // again then. Sockets are non-blocking: a destination that cannot keep up loses datagrams
  // rather than holding up the caller.
  void Push(const aggregate::Snapshot& deltas) noexcept;
  void Push(const std::vector<aggregate::MetricPoints>& deltas) noexcept;

  [[nodiscard]] std::vector<StatsdDestinationCounters> counters() const;
  [[nodiscard]] const StatsdPushOptions& options() const noexcept { return options_; }

 private:
  struct Io;           // the Boost.Asio io_context, kept out of this header
  struct Destination;  // its socket, counters and log site
  void Push(const std::function<std::vector<std::string>()>& format) noexcept;
  void Send(Destination& d, const std::vector<std::string>& packets);

  StatsdPushOptions options_;
  std::unique_ptr<Io> io_;
  std::vector<std::unique_ptr<Destination>> destinations_;
};

// Appends telemetryd_statsd_flushes_total{destination,outcome="ok|failed"} and
// telemetryd_statsd_packets_total{destination,outcome="sent|failed"}.
void AddStatsdPushMetrics(const StatsdPusher& pusher, std::vector<prometheus::MetricFamily>& out);

}  // namespace telemetryd::exporters
