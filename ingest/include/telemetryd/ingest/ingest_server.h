// IngestServer: the UDP and TCP listeners of both protocols, served by a fixed set of worker
// threads. Each worker runs its own io_context, owns one SO_REUSEPORT socket per UDP listener and a
// share of the TCP connections, decodes what it receives and hands it to its own EventSink. A
// worker never waits for another thread: no lock on the packet path.
// Thread-safety: Start/Stop/ports/stats may be called from one controlling thread; stats() may be
// read from any thread while workers run.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "telemetryd/common/expected.h"
#include "telemetryd/ingest/ingest_stats.h"
#include "telemetryd/ingest/listener_options.h"
#include "telemetryd/ingest/sink.h"

namespace telemetryd::ingest {

class IngestServer {
 public:
  // `sinks` has one entry per worker (options.workers of them); they must outlive the server.
  static Expected<std::unique_ptr<IngestServer>> Start(const IngestOptions& options,
                                                       std::span<EventSink* const> sinks);
  ~IngestServer();
  IngestServer(const IngestServer&) = delete;
  IngestServer& operator=(const IngestServer&) = delete;

  // Stops accepting, reads what the UDP sockets already hold, lets TCP connections hand over what
  // they have buffered, then joins the workers. Idempotent.
  void Stop();

  // Runs `task(worker_index)` on every worker thread, between packets, and waits until all have
  // run or `timeout` passes (then returns false; the tasks still run later). This is how a sink's
  // per-worker state is read without a lock on the packet path.
  bool RunOnWorkers(const std::function<void(std::size_t)>& task,
                    std::chrono::milliseconds timeout);

  [[nodiscard]] const IngestOptions& options() const noexcept;
  // The port each listener is bound to, in options().listeners order.
  [[nodiscard]] std::vector<std::uint16_t> ports() const;
  // stats(listener, worker)
  [[nodiscard]] const ListenerStats& stats(std::size_t listener, std::size_t worker) const;

  class Impl;

 private:
  explicit IngestServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace telemetryd::ingest
