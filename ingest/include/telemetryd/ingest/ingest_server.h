// IngestServer: the UDP and TCP listeners of both protocols, served by a fixed set of worker
// threads. Each worker runs its own io_context, owns one SO_REUSEPORT socket per UDP listener and a
// share of the TCP connections, decodes what it receives and hands it to its own EventSink. A
// worker never waits for another thread: no lock on the packet path.
// Listeners can be added, re-bound and closed while the server runs (Reconfigure); the worker
// threads stay. Thread-safety: Start, Stop and Reconfigure are called from one controlling
// thread; RunOnWorkers and listeners() from any thread (a task queued while the workers stop may
// never run: RunOnWorkers then returns false after its timeout).
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
  // per-worker state is read without a lock on the packet path. The task is queued on every worker
  // or on none (after Stop): queuing that finds no memory is tried again every 10 ms.
  bool RunOnWorkers(const std::function<void(std::size_t)>& task,
                    std::chrono::milliseconds timeout) noexcept;

  struct ReconfigureResult {
    std::size_t kept = 0;    // unchanged: same sockets, same connections
    std::size_t bound = 0;   // new, or re-bound with other settings
    std::size_t closed = 0;  // removed, or replaced by a re-bound one
  };
  // Moves to `next`'s listeners. A listener whose settings did not change keeps its sockets and
  // connections. A changed one is re-bound: its new sockets open before the old ones close
  // (SO_REUSEPORT), the old ones are drained, its connections are closed after what they hold is
  // read, and its counters carry on. Every new socket is bound before anything is closed: on error
  // nothing changes. The number of workers cannot change (an error: it needs a restart).
  Expected<ReconfigureResult> Reconfigure(const IngestOptions& next);

  // A listener as it is now. `stats` has one entry per worker and stays valid while the server
  // lives.
  struct ListenerView {
    ListenerOptions options;
    std::uint16_t port = 0;
    std::span<const ListenerStats> stats;
  };
  [[nodiscard]] std::vector<ListenerView> listeners() const;

  class Impl;

 private:
  explicit IngestServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace telemetryd::ingest
