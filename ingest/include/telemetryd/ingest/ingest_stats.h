// Counters of one listener on one worker thread. Each is written by its worker only and read by
// anyone (self-metrics), so increments are plain relaxed load+store: no locked instruction.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>

#include "telemetryd/common/counter.h"
#include "telemetryd/ingest/statsd.h"
#include "telemetryd/wire/decoder.h"

namespace telemetryd::ingest {

inline constexpr std::size_t kMaxRejectReasons =
    std::max(wire::kDecodeErrorCount, kStatsdErrorCount);

struct alignas(64) ListenerStats {
  SingleWriterCounter packets;  // UDP datagrams, or TCP frames / line chunks
  SingleWriterCounter bytes;
  SingleWriterCounter events;  // events (native) or samples (StatsD) handed to the sink
  // Indexed by wire::DecodeError (native) or StatsdError (StatsD).
  std::array<SingleWriterCounter, kMaxRejectReasons> rejected;
  SingleWriterCounter events_lost;           // native: events taken down by frame or event damage
  SingleWriterCounter kernel_drops;          // UDP: the socket's drops (SO_RXQ_OVFL, SO_MEMINFO)
  SingleWriterCounter truncated_datagrams;   // UDP: larger than the receive buffer
  SingleWriterCounter connections_accepted;  // TCP
  SingleWriterCounter connections_rejected;  // TCP: over max_connections
  SingleWriterCounter connections_closed_idle;
  SingleWriterCounter connections_closed_error;  // unrecoverable stream damage
  std::atomic<std::int64_t> connections_open{0};
};

}  // namespace telemetryd::ingest
