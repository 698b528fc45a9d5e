#include "telemetryd/ingest/ingest_server.h"

#include <pthread.h>

#include <netinet/in.h>
#include <sys/socket.h>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <atomic>
#include <boost/asio.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>

#include "gather_pause.h"
#include "intake.h"
#include "telemetryd/common/log.h"

namespace telemetryd::ingest {

namespace asio = boost::asio;
using asio::ip::tcp;
using asio::ip::udp;
using Clock = std::chrono::steady_clock;

std::string_view ProtocolName(Protocol protocol) noexcept {
  return protocol == Protocol::kNative ? "native" : "statsd";
}
std::string_view TransportName(Transport transport) noexcept {
  return transport == Transport::kUdp ? "udp" : "tcp";
}
std::string ListenerOptions::Name() const {
  return std::string(ProtocolName(protocol)) + "_" + std::string(TransportName(transport));
}

namespace {

// Largest UDP payload plus one byte, so that MSG_TRUNC can only mean "cut".
constexpr std::size_t kDatagramBytes = 65536;
// Batches read per readiness notification before yielding to the worker's other sockets.
constexpr int kBatchesPerWakeup = 16;
// Connections accepted per readiness notification of a TCP listener, likewise.
constexpr int kAcceptsPerWakeup = 64;
constexpr std::size_t kTcpReadChunk = 64 * 1024;

class Worker;

// Reads datagrams in batches with recvmmsg and hands each to the intake.
class UdpReceiver {
 public:
  UdpReceiver(udp::socket socket, udp protocol, detail::Intake& intake, ListenerStats& stats,
              std::size_t batch)
      : socket_(std::move(socket)),
        fd_(socket_.native_handle()),
        protocol_(protocol),
        pause_(socket_.get_executor()),
        intake_(intake),
        stats_(stats),
        batch_(batch),
        storage_(batch * kDatagramBytes),
        iov_(batch),
        headers_(batch),
        control_(batch * CMSG_SPACE(sizeof(std::uint32_t))) {
    for (std::size_t i = 0; i < batch_; ++i) {
      iov_[i].iov_base = storage_.data() + i * kDatagramBytes;
      iov_[i].iov_len = kDatagramBytes;
    }
  }

  // Waits for the socket to be readable, then reads it while datagrams keep coming: after a read
  // that emptied the socket having found several, again after a pause (Pause); after one that
  // stopped at kBatchesPerWakeup batches, once the worker's other handlers had their turn; after
  // one that found one datagram or none, it waits for readiness again (see Continue). Throws
  // std::bad_alloc when the wait cannot be queued: armed() stays false, and the worker's sweep
  // arms it again.
  void Arm() {
    if (released_) {
      // Back with the worker's reactor, which reports at once what was queued meanwhile.
      boost::system::error_code ec;
      socket_.assign(protocol_, fd_, ec);
      if (ec) {
        // Not taken back: epoll_ctl failed (no kernel memory, or fs.epoll.max_user_watches
        // reached). armed() stays false and the sweep tries again every second; what overflows
        // the receive buffer meanwhile is counted as the kernel's drops. (Asio keeps the failed
        // registration's state until the worker ends: about 160 bytes per attempt.)
        reregister_log_(
            [&] { return intake_.name() + ": cannot wait for datagrams: " + ec.message(); },
            "a UDP socket could not wait for datagrams; tried again every second");
        return;
      }
      released_ = false;
    }
    socket_.async_wait(udp::socket::wait_read, [this](const boost::system::error_code& ec) {
      if (Woken(ec)) Continue(Drain(kBatchesPerWakeup));
    });
    armed_ = true;
  }
  [[nodiscard]] bool armed() const noexcept { return armed_; }
  // The worker's list of open receivers links through its members, so that adding one to it
  // allocates nothing (Worker::AddUdp).
  UdpReceiver* next_open = nullptr;

  // What a Drain read: datagrams, and whether it stopped at its limit with more to come.
  struct Drained {
    std::size_t datagrams = 0;
    bool more = false;
  };

  // Reads until the socket is empty or `max_batches` batches were read.
  Drained Drain(int max_batches) noexcept {
    const int fd = fd_;
    Drained drained;
    for (int round = 0; round < max_batches; ++round) {
      for (std::size_t i = 0; i < batch_; ++i) {
        msghdr& h = headers_[i].msg_hdr;
        h = msghdr{};
        h.msg_iov = &iov_[i];
        h.msg_iovlen = 1;
        h.msg_control = control_.data() + i * CMSG_SPACE(sizeof(std::uint32_t));
        h.msg_controllen = CMSG_SPACE(sizeof(std::uint32_t));
      }
      const int n =
          ::recvmmsg(fd, headers_.data(), static_cast<unsigned>(batch_), MSG_DONTWAIT, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        return drained;  // EAGAIN: empty; anything else: the next readiness event retries
      }
      drained.datagrams += static_cast<std::size_t>(n);
      for (int i = 0; i < n; ++i) Deliver(headers_[static_cast<std::size_t>(i)]);
      if (static_cast<std::size_t>(n) < batch_) return drained;
    }
    drained.more = true;
    return drained;
  }

  // Reads what the socket holds, counts the kernel's last drops, closes the socket and frees the
  // receive buffers (a listener closing, the server stopping). Nothing may be called afterwards.
  void DrainAndClose() noexcept {
    Drain(1 << 20);
    PollKernelDrops();
    closed_ = true;  // a continuation's or a pause's handler may already be queued
    boost::system::error_code ignored;
    if (released_) {
      ::close(fd_);
      released_ = false;
    } else {
      socket_.close(ignored);
    }
    fd_ = -1;
    storage_ = {};
    iov_ = {};
    headers_ = {};
    control_ = {};
  }

  // Reads the socket's drop count from the kernel (SO_MEMINFO). A datagram carries the count as it
  // was when the datagram was queued, so drops after the last queued datagram reach the counter
  // only this way: the end of a burst that nothing follows. Called every second, at the end of
  // every pause and by DrainAndClose. Returns the socket's memory figures.
  detail::SocketMemory PollKernelDrops() noexcept {
    const detail::SocketMemory memory = detail::ReadSocketMemory(fd_);
    if (memory.limit != 0) CountKernelDrops(memory.drops);
    return memory;
  }

 private:
  // What follows a Drain (see Arm). Throws std::bad_alloc as Arm does.
  void Continue(Drained drained);

  // In the handler of what Arm, Pause or Continue queued: nothing is queued any more; whether to
  // read on (the wait was not cancelled, the socket is open).
  bool Woken(const boost::system::error_code& ec) noexcept {
    armed_ = false;
    return !ec && !closed_;
  }

  // Reads again after a pause (GatherPause: how long follows how full the socket's buffer was at
  // the end of the last one). Meanwhile the socket is out of the worker's reactor, so that the
  // datagrams that arrive do not wake the worker (Asio keeps a socket registered,
  // edge-triggered, between waits), and the worker serves its other sockets and connections.
  // Throws std::bad_alloc as Arm does.
  void Pause() {
    if (!released_) {
      boost::system::error_code ec;
      (void)socket_.release(ec);  // fails only for a closed socket; registered, it still works
      released_ = !ec;
    }
    pause_.expires_after(gather_.get());
    pause_.async_wait([this](const boost::system::error_code& ec) {
      if (!Woken(ec)) return;
      const detail::SocketMemory memory = PollKernelDrops();
      gather_.Observe(memory.queued, memory.limit);
      Continue(Drain(kBatchesPerWakeup));
    });
    armed_ = true;
  }

  void Deliver(mmsghdr& m) noexcept {
    msghdr& h = m.msg_hdr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
        std::uint32_t dropped = 0;
        std::memcpy(&dropped, CMSG_DATA(c), sizeof dropped);
        CountKernelDrops(dropped);
      }
    }
    if ((h.msg_flags & MSG_TRUNC) != 0) {
      stats_.truncated_datagrams.Add();
      intake_.RejectOversize();
      return;
    }
    intake_.Packet({static_cast<const std::uint8_t*>(h.msg_iov->iov_base), m.msg_len});
  }

  // `total`: the socket's running count of drops (it wraps at 2^32). What is new since the last
  // count is added, so that a listener's counter carries on across sockets (re-bound listeners,
  // workers); an older total, as a datagram queued before the last poll carries, adds nothing.
  void CountKernelDrops(std::uint32_t total) noexcept {
    const std::uint32_t added = total - kernel_drops_seen_;
    if (added == 0 || added > (1U << 31)) return;
    stats_.kernel_drops.Add(added);
    kernel_drops_seen_ = total;
    drops_log_(
        [&] {
          return intake_.name() + ": the kernel dropped " + std::to_string(added) +
                 " datagrams: the socket's receive buffer was full (receive_buffer_bytes, or "
                 "more workers)";
        },
        "the kernel dropped datagrams: a UDP socket's receive buffer was full");
  }

  udp::socket socket_;  // released from the reactor during a pause: read through fd_
  int fd_;
  udp protocol_;
  asio::steady_timer pause_;
  detail::GatherPause gather_;
  detail::Intake& intake_;
  ListenerStats& stats_;
  std::size_t batch_;
  std::vector<std::uint8_t> storage_;
  std::vector<iovec> iov_;
  std::vector<mmsghdr> headers_;
  std::vector<std::uint8_t> control_;
  std::uint32_t kernel_drops_seen_ = 0;
  bool armed_ = false;     // a readiness wait, a pause or a continuation is queued
  bool released_ = false;  // socket_ gave fd_ up (Pause); Arm takes it back
  bool closed_ = false;    // DrainAndClose ran
  log::RateLimitedLog drops_log_{log::Level::kWarn, 10'000};
  log::RateLimitedLog reregister_log_{log::Level::kError, 10'000};
};

// A listener: its options, its sockets on every worker, and its counters. Never destroyed while
// the server runs (a closed one may still have handlers queued), so workers and self-metrics can
// hold plain pointers to it.
struct ListenerState {
  ListenerOptions options;
  std::uint16_t port = 0;
  // One per worker. Shared with the listener that replaces this one when it is re-bound with other
  // settings on the same address, so its counters carry on.
  std::shared_ptr<ListenerStats[]> stats;
  std::vector<std::unique_ptr<detail::Intake>> intakes;  // one per worker
  std::vector<std::unique_ptr<UdpReceiver>> receivers;   // UDP: one per worker
  std::unique_ptr<tcp::acceptor> acceptor;               // TCP only; runs on worker 0
  // Worker 0's: the acceptor's readiness wait could not be queued (no memory); the sweep queues
  // it again.
  bool accept_lost = false;
  std::atomic<std::size_t> open_connections{0};
  std::atomic<bool> closed{false};  // set before the workers are asked to close it

  ListenerStats& Stats(std::size_t worker) noexcept { return stats.get()[worker]; }
  // A connection handed to `worker` is counted open, and given back when it is gone.
  void CountOpen(std::size_t worker) noexcept {
    open_connections.fetch_add(1);
    Stats(worker).connections_open.fetch_add(1);
  }
  void CountGone(std::size_t worker) noexcept {
    open_connections.fetch_sub(1, std::memory_order_relaxed);
    Stats(worker).connections_open.fetch_sub(1, std::memory_order_relaxed);
  }
};

// Counts a connection of `options`' listener closed because it found no memory for `what`
// (closed_error in `stats`), and logs it at most every 10 s.
void CountNoMemory(ListenerStats& stats, const ListenerOptions& options,
                   std::string_view what) noexcept {
  stats.connections_closed_error.Add();
  static log::RateLimitedLog limit{log::Level::kWarn, 10'000};
  limit(
      [&] {
        return options.Name() + ": no memory " + std::string(what) +
               "; the connection is closed and counted (closed_error)";
      },
      "a TCP listener found no memory for a connection; it is closed and counted");
}

// One TCP connection: reassembles native frames (4-byte big-endian length, then the frame) or
// StatsD lines from a byte stream.
class TcpSession : public std::enable_shared_from_this<TcpSession> {
 public:
  TcpSession(tcp::socket socket, Worker& worker, ListenerState& listener);

  ~TcpSession();

  // Registers with the worker and reads; a connection that finds no memory for either is closed
  // and counted.
  void Start() noexcept;
  // Reads whatever the kernel already holds for this connection, processes it and closes, from
  // the handler of the pending read (soon after this returns, on this worker).
  void DrainAndClose() noexcept;
  void CloseIfIdle(Clock::time_point now) noexcept {
    if (socket_.is_open() && !draining_ && now - last_activity_ > options_.idle_timeout) {
      stats_.connections_closed_idle.Add();
      CloseWithLeftovers();
    }
  }
  [[nodiscard]] const ListenerState* listener() const noexcept { return &listener_; }

 private:
  void Read() noexcept;
  // Queues the read; throws std::bad_alloc when it cannot.
  void ReadSome();
  // Grows the buffer when less than a quarter of a read fits. False when not one byte fits and no
  // memory could be had for more.
  [[nodiscard]] bool MakeRoom() noexcept;
  // Ends a connection whose buffer is full and cannot grow: the frame or line it holds is counted,
  // not handed over (it is cut), and so is the connection; with nothing read yet, only the
  // connection is.
  void CloseForWantOfMemory() noexcept;
  // Ends a connection that found no memory to go on (`what`): counted, logged, and closed as
  // CloseWithLeftovers closes.
  void CloseWithoutMemory(std::string_view what) noexcept;
  void Consume() noexcept;
  // DrainAndClose's work, once no read is pending.
  void Drain() noexcept;
  void ConsumeFrames() noexcept;
  void ConsumeLines() noexcept;
  // How every connection ends once its stream is in order (the peer closed it, a read failed, the
  // idle timeout, the listener re-bound or stopped): what is left in the buffer is handed over
  // (StatsD: the last line, without its newline) or counted (native: a frame cut short), then
  // the socket is closed.
  void CloseWithLeftovers() noexcept;
  void Close() noexcept;

  tcp::socket socket_;
  Worker& worker_;
  ListenerState& listener_;
  const ListenerOptions& options_;
  detail::Intake& intake_;
  ListenerStats& stats_;
  std::vector<std::uint8_t> buffer_;
  std::size_t used_ = 0;
  bool discarding_line_ = false;  // StatsD: skipping the rest of an oversize line
  bool draining_ = false;         // DrainAndClose was called: the pending read's handler drains
  Clock::time_point last_activity_;
};

class Worker {
 public:
  explicit Worker(std::size_t index)
      : index_(index), sweep_(io_), work_(asio::make_work_guard(io_)) {}

  asio::io_context& io() noexcept { return io_; }
  std::size_t index() const noexcept { return index_; }

  void Register(TcpSession* session) { sessions_.insert(session); }
  // Whether Stop's work ran on this worker: a session started since must drain itself.
  [[nodiscard]] bool stopping() const noexcept { return stopping_; }
  void Unregister(TcpSession* session) { sessions_.erase(session); }

  // `rearm_accepts`: worker 0's sweep calls it to queue again the accepts that could not be queued
  // (the other workers get none).
  void Run(std::function<void()> rearm_accepts) {
    rearm_accepts_ = std::move(rearm_accepts);
    Sweep();
    thread_ = std::thread([this] {
      // "ingest/N" in top -H, ps -L and /proc/PID/task/*/comm.
      const std::string name = "ingest/" + std::to_string(index_);
      ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
      RunGuarded();
    });
  }

  // On the worker's thread: start reading a listener's socket. Should the wait not be queued
  // (no memory), the receiver is in the list all the same and the sweep queues it.
  void AddUdp(UdpReceiver& receiver) {
    receiver.next_open = udp_;
    udp_ = &receiver;
    receiver.Arm();
  }

  // On the worker's thread: read what the listener's socket holds, close it, and hand over what
  // its connections have buffered before closing them.
  void Close(const ListenerState& listener) {
    if (!listener.receivers.empty()) {
      UdpReceiver* receiver = listener.receivers[index_].get();
      receiver->DrainAndClose();
      for (UdpReceiver** link = &udp_; *link != nullptr; link = &(*link)->next_open) {
        if (*link == receiver) {
          *link = receiver->next_open;
          break;
        }
      }
    }
    // Each session drains in its read's handler, which runs after this one.
    for (TcpSession* session : sessions_) {
      if (session->listener() == &listener) session->DrainAndClose();
    }
  }

  // Runs on the worker's thread: drain, close, let io_context.run() return.
  void Stop() {
    asio::post(io_, [this] {
      for (UdpReceiver* r = udp_; r != nullptr; r = r->next_open) r->DrainAndClose();
      udp_ = nullptr;
      for (TcpSession* session : sessions_) session->DrainAndClose();
      sweep_.cancel();
      stopping_ = true;
      work_.reset();  // run() returns once the drained sockets' handlers have run
    });
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  // Runs the handlers until Stop. A handler that throws (no memory to queue its next wait) is
  // logged and the worker goes on: the sweep queues that socket's wait or acceptor's accept again;
  // a sweep that could not queue itself is tried again every 100 ms while the handlers run. A
  // connection that finds no memory is closed where it happens instead.
  void RunGuarded() noexcept {
    for (;;) {
      try {
        if (sweep_queued_ || stopping_) {
          io_.run();  // returns once Stop has run and its drained sockets' handlers too
          return;
        }
        io_.run_for(std::chrono::milliseconds(100));
        if (io_.stopped()) return;
        if (!stopping_) Sweep();
      } catch (const std::exception& e) {
        failures_log_(
            [&] {
              return "ingest/" + std::to_string(index_) + ": " + e.what() +
                     " in a handler; the worker goes on";
            },
            "an ingest worker's handler failed; the worker goes on");
      }
    }
  }

  // Every second: counts the kernel's drops, queues again what could not be queued, and closes
  // idle connections. Throws std::bad_alloc when it cannot queue itself (RunGuarded retries).
  void Sweep() {
    sweep_.expires_after(std::chrono::seconds(1));
    sweep_.async_wait([this](const boost::system::error_code& ec) {
      sweep_queued_ = false;
      if (ec || stopping_) return;
      Sweep();
      const auto now = Clock::now();
      for (auto it = sessions_.begin(); it != sessions_.end();) {
        TcpSession* session = *it++;  // closing it takes it out of sessions_
        session->CloseIfIdle(now);
      }
      for (UdpReceiver* r = udp_; r != nullptr; r = r->next_open) {
        r->PollKernelDrops();
        if (!r->armed()) r->Arm();
      }
      if (rearm_accepts_) rearm_accepts_();
    });
    sweep_queued_ = true;
  }

  std::size_t index_;
  asio::io_context io_;
  asio::steady_timer sweep_;
  bool sweep_queued_ = false;
  // Keeps run() going while nothing is queued (a sweep that could not queue itself); Stop resets
  // it.
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::function<void()> rearm_accepts_;
  log::RateLimitedLog failures_log_{log::Level::kError, 10'000};
  UdpReceiver* udp_ = nullptr;  // open sockets of this worker, linked by UdpReceiver::next_open
  std::unordered_set<TcpSession*> sessions_;
  std::thread thread_;
  bool stopping_ = false;
};

void UdpReceiver::Continue(Drained drained) {
  // Gathering pays where a wakeup found more than one datagram: below that, a pause and a read
  // that finds nothing would cost more than the wait they save.
  if (!drained.more) {
    if (drained.datagrams < 2) {
      Arm();
    } else {
      Pause();
    }
    return;
  }
  asio::post(pause_.get_executor(), [this] {
    if (Woken({})) Continue(Drain(kBatchesPerWakeup));
  });
  armed_ = true;
}

TcpSession::TcpSession(tcp::socket socket, Worker& worker, ListenerState& listener)
    : socket_(std::move(socket)),
      worker_(worker),
      listener_(listener),
      options_(listener.options),
      intake_(*listener.intakes[worker.index()]),
      stats_(listener.Stats(worker.index())),
      last_activity_(Clock::now()) {}

TcpSession::~TcpSession() { listener_.CountGone(worker_.index()); }

void TcpSession::Start() noexcept {
  try {
    worker_.Register(this);
  } catch (const std::bad_alloc&) {
    CloseWithoutMemory("for a new connection");
    return;
  }
  Read();
}

void TcpSession::CloseWithoutMemory(std::string_view what) noexcept {
  CountNoMemory(stats_, options_, what);
  CloseWithLeftovers();
}

bool TcpSession::MakeRoom() noexcept {
  if (buffer_.size() - used_ < kTcpReadChunk / 4) {
    // Room for the largest frame (or line) we accept plus one read; never more.
    const std::size_t cap = options_.max_frame_bytes + 4 + kTcpReadChunk;
    try {
      buffer_.resize(std::min(cap, std::max(buffer_.size() * 2, used_ + kTcpReadChunk)));
    } catch (const std::bad_alloc&) {
      // Reads go on into the room there is; the caller ends the connection when there is none.
    }
  }
  return buffer_.size() > used_;
}

void TcpSession::CloseForWantOfMemory() noexcept {
  if (used_ == 0) {  // nothing read yet: no frame or line is cut
    CloseWithoutMemory("for a connection's buffer");
    return;
  }
  if (options_.protocol == Protocol::kNative) {
    intake_.RejectCutFrame();
  } else {
    intake_.RejectOversize();
  }
  stats_.connections_closed_error.Add();
  try {
    log::Write(log::Level::kWarn, options_.Name() + ": no memory to buffer more than " +
                                      std::to_string(used_) + " bytes of a connection's " +
                                      (options_.protocol == Protocol::kNative ? "frame" : "line") +
                                      "; it is counted as cut and the connection closed");
  } catch (...) {
    // The count above stands without the log line.
  }
  used_ = 0;
  Close();
}

void TcpSession::Read() noexcept {
  if (!MakeRoom()) {
    CloseForWantOfMemory();
    return;
  }
  try {
    ReadSome();
  } catch (const std::bad_alloc&) {
    CloseWithoutMemory("to read from a connection");
  }
}

void TcpSession::ReadSome() {
  socket_.async_read_some(
      asio::buffer(buffer_.data() + used_, buffer_.size() - used_),
      [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
        // Closed by this side meanwhile (which handled the leftovers): nothing more to do.
        if (!self->socket_.is_open()) return;
        self->used_ += n;  // 0 on error
        if (self->draining_) {
          self->Drain();
          return;
        }
        if (ec) {
          self->CloseWithLeftovers();
          return;
        }
        self->last_activity_ = Clock::now();
        self->Consume();
        if (self->socket_.is_open()) self->Read();
      });
}

void TcpSession::DrainAndClose() noexcept {
  if (!socket_.is_open() || draining_) return;
  // The pending read may already hold bytes whose handler has not run (asio reads at once when it
  // can): reading here would overwrite them. Cancelled, it completes with what it has, if
  // anything, and its handler drains the rest.
  draining_ = true;
  boost::system::error_code ignored;
  socket_.cancel(ignored);
}

void TcpSession::Drain() noexcept {
  Consume();
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  // What the kernel holds now, and no more: a peer that keeps sending cannot hold up the close.
  std::size_t pending = ec ? 0 : socket_.available(ec);
  while (!ec && pending > 0 && socket_.is_open()) {
    if (!MakeRoom()) {
      CloseForWantOfMemory();
      return;
    }
    const std::size_t room = std::min(buffer_.size() - used_, pending);
    const std::size_t n = socket_.read_some(asio::buffer(buffer_.data() + used_, room), ec);
    pending -= std::min(n, pending);
    used_ += n;
    Consume();
  }
  CloseWithLeftovers();
}

void TcpSession::Consume() noexcept {
  if (options_.protocol == Protocol::kNative) {
    ConsumeFrames();
  } else {
    ConsumeLines();
  }
}

void TcpSession::ConsumeFrames() noexcept {
  std::size_t pos = 0;
  while (used_ - pos >= 4) {
    const std::uint8_t* p = buffer_.data() + pos;
    const std::size_t length = (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) |
                               (std::size_t{p[2]} << 8) | std::size_t{p[3]};
    if (length > options_.max_frame_bytes) {
      // The stream cannot be resynchronised past a length we refuse to read: close it.
      intake_.RejectOversize();
      stats_.connections_closed_error.Add();
      used_ = 0;
      Close();
      return;
    }
    if (used_ - pos - 4 < length) break;
    intake_.Packet({p + 4, length});
    pos += 4 + length;
  }
  if (pos > 0) {
    std::memmove(buffer_.data(), buffer_.data() + pos, used_ - pos);
    used_ -= pos;
  }
}

void TcpSession::ConsumeLines() noexcept {
  std::size_t start = 0;
  if (discarding_line_) {
    const void* nl = std::memchr(buffer_.data(), '\n', used_);
    if (nl == nullptr) {
      used_ = 0;
      return;
    }
    start = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nl) - buffer_.data()) + 1;
    discarding_line_ = false;
  }
  // Hand over every complete line at once (the parser rejects those over max_frame_bytes, its
  // limit on this listener); keep the unfinished one.
  std::size_t end = used_;
  while (end > start && buffer_[end - 1] != '\n') --end;
  if (end > start) intake_.Packet({buffer_.data() + start, end - start});
  const std::size_t rest = used_ - end;
  // One byte more than a line may hold: it may be the '\r' of a "\r\n" still to come.
  if (rest > options_.max_frame_bytes + 1) {
    intake_.RejectOversize();
    discarding_line_ = true;
    used_ = 0;
    return;
  }
  std::memmove(buffer_.data(), buffer_.data() + end, rest);
  used_ = rest;
}

void TcpSession::CloseWithLeftovers() noexcept {
  if (!socket_.is_open()) return;
  // StatsD: the rest of an oversize line, being skipped, was counted when it was found.
  if (used_ > 0 && !discarding_line_) {
    if (options_.protocol == Protocol::kNative) {
      intake_.RejectCutFrame();
    } else {
      intake_.Packet({buffer_.data(), used_});
    }
  }
  used_ = 0;
  Close();
}

void TcpSession::Close() noexcept {
  if (!socket_.is_open()) return;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  worker_.Unregister(this);
}

Status SetSocketOption(int fd, int level, int name, int value, const char* what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) {
    return Error{"ingest.socket_option",
                 std::string("setsockopt ") + what + ": " + std::strerror(errno)};
  }
  return Ok{};
}

// A UDP socket bound with SO_REUSEPORT, so that every worker gets its own share of the traffic.
Expected<udp::socket> OpenUdp(asio::io_context& io, const udp::endpoint& endpoint,
                              const ListenerOptions& options) {
  boost::system::error_code ec;
  udp::socket socket(io);
  socket.open(endpoint.protocol(), ec);
  if (ec) return Error{"ingest.socket", "open: " + ec.message()};
  const int fd = socket.native_handle();
  for (auto status : {SetSocketOption(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT"),
                      SetSocketOption(fd, SOL_SOCKET, SO_RXQ_OVFL, 1, "SO_RXQ_OVFL")}) {
    if (!status) return status.error();
  }
  // As root SO_RCVBUFFORCE passes net.core.rmem_max; otherwise the kernel caps SO_RCVBUF there.
  const int wanted =
      static_cast<int>(std::min<std::size_t>(options.receive_buffer_bytes, 1U << 30));
  if (!SetSocketOption(fd, SOL_SOCKET, SO_RCVBUFFORCE, wanted, "SO_RCVBUFFORCE")) {
    (void)SetSocketOption(fd, SOL_SOCKET, SO_RCVBUF, wanted, "SO_RCVBUF");
  }
  socket.bind(endpoint, ec);
  if (ec)
    return Error{"ingest.bind", "bind " + options.Name() + " " + endpoint.address().to_string() +
                                    ":" + std::to_string(endpoint.port()) + ": " + ec.message()};
  return socket;
}

// A listener's address: two configurations with the same one are the same listener, perhaps
// with other settings.
bool SameAddress(const ListenerOptions& a, const ListenerOptions& b) {
  return a.protocol == b.protocol && a.transport == b.transport && a.address == b.address &&
         a.port == b.port;
}

std::string Describe(const ListenerState& state) {
  return state.options.Name() + " on " + state.options.address + ":" + std::to_string(state.port);
}

}  // namespace

class IngestServer::Impl {
 public:
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<EventSink*> sinks;  // one per worker
  // Every listener bound so far, open or closed; owned here until the server is destroyed.
  std::vector<std::unique_ptr<ListenerState>> all;
  mutable std::mutex mutex;            // guards `active`: self-metrics read it from other threads
  std::vector<ListenerState*> active;  // the open listeners, in configuration order
  std::size_t next_worker = 0;         // round-robin for accepted connections (worker 0's thread)
  // Read by RunOnWorkers, which a scrape's thread may call while the controlling thread stops.
  std::atomic<bool> stopped{false};

  // Opens the listener's sockets (every worker's, for UDP) without reading from them yet.
  Expected<std::unique_ptr<ListenerState>> Bind(const ListenerOptions& options,
                                                std::shared_ptr<ListenerStats[]> stats);
  // Hands a bound listener to the workers.
  void Open(ListenerState& state);
  // On worker 0: waits for the listener's connections, then accepts up to kAcceptsPerWakeup of
  // them (throws std::bad_alloc when the wait cannot be queued).
  void Accept(ListenerState& state);
  // Accepts one connection and hands it to a worker; false when none is waiting.
  bool AcceptOne(ListenerState& state) noexcept;
  // On the worker: makes and starts the session of an accepted connection, or closes the
  // connection (counted) when there is no memory for it.
  static void StartSession(tcp::socket socket, Worker& worker, ListenerState& state) noexcept;
  // On worker 0 (its sweep): queues again the accepts that could not be queued.
  void RearmAccepts();
  // Asks the workers to drain and close a listener (asynchronously).
  void Close(ListenerState& state);
  bool RunOnWorkers(const std::function<void(std::size_t)>& task,
                    std::chrono::milliseconds timeout) noexcept;
  void Stop();
};

Expected<std::unique_ptr<ListenerState>> IngestServer::Impl::Bind(
    const ListenerOptions& lo, std::shared_ptr<ListenerStats[]> stats) {
  auto state = std::make_unique<ListenerState>();
  state->options = lo;
  state->stats = stats ? std::move(stats)
                       : std::shared_ptr<ListenerStats[]>(new ListenerStats[workers.size()]);
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(lo.address, ec);
  if (ec) return Error{"ingest.address", lo.Name() + ": bad address \"" + lo.address + "\""};
  for (const auto& worker : workers) {
    // Over TCP a StatsD line may be as long as a frame; over UDP, as the parser's default allows.
    const std::size_t max_line =
        lo.transport == Transport::kTcp ? lo.max_frame_bytes : kStatsdMaxLineBytes;
    state->intakes.push_back(std::make_unique<detail::Intake>(
        lo.protocol, lo.Name(), *sinks[worker->index()], state->Stats(worker->index()), max_line));
  }
  if (lo.transport == Transport::kUdp) {
    std::uint16_t port = lo.port;
    for (const auto& worker : workers) {
      auto socket = OpenUdp(worker->io(), udp::endpoint(address, port), lo);
      if (!socket) return socket.error();
      port = socket->local_endpoint().port();  // port 0: the others join the kernel's choice
      state->receivers.push_back(std::make_unique<UdpReceiver>(
          std::move(*socket), address.is_v6() ? udp::v6() : udp::v4(),
          *state->intakes[worker->index()], state->Stats(worker->index()),
          std::max<std::size_t>(1, lo.batch)));
    }
    state->port = port;
    return state;
  }
  auto acceptor = std::make_unique<tcp::acceptor>(workers[0]->io());
  acceptor->open(address.is_v6() ? tcp::v6() : tcp::v4(), ec);
  if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) {
    // A listener re-bound with other settings opens its new socket before closing the old one.
    if (auto status =
            SetSocketOption(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
        !status) {
      return status.error();
    }
    acceptor->bind(tcp::endpoint(address, lo.port), ec);
  }
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) acceptor->non_blocking(true, ec);  // AcceptOne accepts until would_block
  if (ec) {
    return Error{"ingest.bind", "listen " + lo.Name() + " " + lo.address + ":" +
                                    std::to_string(lo.port) + ": " + ec.message()};
  }
  state->port = acceptor->local_endpoint().port();
  state->acceptor = std::move(acceptor);
  return state;
}

void IngestServer::Impl::Open(ListenerState& state) {
  if (state.acceptor) {
    asio::post(workers[0]->io(), [this, &state] { Accept(state); });
    return;
  }
  for (const auto& worker : workers) {
    asio::post(worker->io(),
               [w = worker.get(), &state] { w->AddUdp(*state.receivers[w->index()]); });
  }
}

void IngestServer::Impl::Accept(ListenerState& state) {
  state.accept_lost = true;  // until the wait is queued
  state.acceptor->async_wait(
      tcp::acceptor::wait_read, [this, &state](const boost::system::error_code& ec) {
        if (ec == asio::error::operation_aborted || !state.acceptor->is_open()) return;
        for (int i = 0; i < kAcceptsPerWakeup; ++i) {
          if (!AcceptOne(state)) break;
        }
        Accept(state);  // when it cannot, the sweep of worker 0 tries again
      });
  state.accept_lost = false;
}

bool IngestServer::Impl::AcceptOne(ListenerState& state) noexcept {
  ListenerStats& acceptor_stats = state.Stats(0);
  // Connections go round-robin to the workers.
  Worker& target = *workers[next_worker % workers.size()];
  boost::system::error_code ec;
  std::optional<tcp::socket> socket;
  try {
    // The acceptor is non-blocking: would_block once the kernel holds no more connections.
    socket.emplace(state.acceptor->accept(target.io(), ec));
  } catch (const std::bad_alloc&) {
    // Asio registers the accepted socket with the worker's reactor, which may allocate; failing,
    // it closes the socket. The connection was accepted: counted as accepted and closed.
    acceptor_stats.connections_accepted.Add();
    CountNoMemory(acceptor_stats, state.options, "for a new connection");
    return true;
  }
  if (ec) return false;  // would_block, or an error the next readiness reports again
  ++next_worker;
  if (state.open_connections.load() >= state.options.max_connections) {
    acceptor_stats.connections_rejected.Add();
    boost::system::error_code ignored;
    socket->close(ignored);
    return true;
  }
  acceptor_stats.connections_accepted.Add();
  state.CountOpen(target.index());
  try {
    asio::post(target.io(), [&state, &target, sock = std::move(*socket)]() mutable {
      StartSession(std::move(sock), target, state);
    });
  } catch (const std::bad_alloc&) {
    // The handler, and the socket in it, are gone: closed.
    state.CountGone(target.index());
    CountNoMemory(acceptor_stats, state.options, "to hand a new connection to its worker");
  }
  return true;
}

void IngestServer::Impl::StartSession(tcp::socket socket, Worker& worker,
                                      ListenerState& state) noexcept {
  std::shared_ptr<TcpSession> session;
  try {
    session = std::make_shared<TcpSession>(std::move(socket), worker, state);
  } catch (const std::bad_alloc&) {
    boost::system::error_code ignored;
    socket.close(ignored);
    state.CountGone(worker.index());
    CountNoMemory(state.Stats(worker.index()), state.options, "for a new connection");
    return;
  }
  session->Start();
  // Accepted before the listener closed or the server stopped, started after this worker drained
  // its sessions: it drains itself, or Stop would wait for its peer.
  if (state.closed.load(std::memory_order_acquire) || worker.stopping()) session->DrainAndClose();
}

void IngestServer::Impl::RearmAccepts() {
  std::lock_guard lock(mutex);
  for (ListenerState* state : active) {
    if (state->acceptor && state->accept_lost && !state->closed.load(std::memory_order_acquire) &&
        state->acceptor->is_open()) {
      Accept(*state);
    }
  }
}

void IngestServer::Impl::Close(ListenerState& state) {
  state.closed.store(true, std::memory_order_release);
  if (state.acceptor) {
    // The acceptor lives on worker 0: close it there, before the workers close its connections.
    asio::post(workers[0]->io(), [&state] {
      boost::system::error_code ignored;
      state.acceptor->close(ignored);
    });
  }
  for (const auto& worker : workers) {
    asio::post(worker->io(), [w = worker.get(), &state] { w->Close(state); });
  }
}

namespace {

// Calls `make` until it returns without std::bad_alloc, 10 ms apart: for what must not be left
// half done for want of a few bytes, such as a task queued on some workers and not others.
template <typename Make>
auto Retrying(Make make) noexcept -> decltype(make()) {
  static log::RateLimitedLog no_memory(log::Level::kError);
  for (;;) {
    try {
      return make();
    } catch (const std::bad_alloc&) {
      no_memory("out of memory to queue a task on the ingest workers; trying again");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

}  // namespace

bool IngestServer::Impl::RunOnWorkers(const std::function<void(std::size_t)>& task,
                                      std::chrono::milliseconds timeout) noexcept {
  if (stopped) return false;
  // Shared with the posted handlers, which may outlive this call after a timeout.
  struct Pending {
    std::mutex mutex;
    std::condition_variable done;
    std::size_t remaining;
  };
  auto pending = Retrying([] { return std::make_shared<Pending>(); });
  pending->remaining = workers.size();
  for (auto& worker : workers) {
    Retrying([&] {
      asio::post(worker->io(), [pending, task, index = worker->index()] {
        task(index);
        std::lock_guard lock(pending->mutex);
        if (--pending->remaining == 0) pending->done.notify_all();
      });
    });
  }
  std::unique_lock lock(pending->mutex);
  return pending->done.wait_for(lock, timeout, [&] { return pending->remaining == 0; });
}

void IngestServer::Impl::Stop() {
  if (stopped.exchange(true)) return;
  std::vector<ListenerState*> open;
  {
    std::lock_guard lock(mutex);
    open = active;
  }
  // Acceptors live on worker 0: close them there, before the workers drain.
  asio::post(workers[0]->io(), [open] {
    for (ListenerState* state : open) {
      if (state->acceptor) {
        boost::system::error_code ignored;
        state->acceptor->close(ignored);
      }
    }
  });
  for (auto& worker : workers) worker->Stop();
  for (auto& worker : workers) worker->Join();
}

Expected<std::unique_ptr<IngestServer>> IngestServer::Start(const IngestOptions& options,
                                                            std::span<EventSink* const> sinks) {
  if (options.workers == 0 || sinks.size() != options.workers) {
    return Error{"ingest.workers", "need one sink per worker (" + std::to_string(options.workers) +
                                       " workers, " + std::to_string(sinks.size()) + " sinks)"};
  }
  auto impl = std::make_unique<Impl>();
  impl->sinks.assign(sinks.begin(), sinks.end());
  for (std::size_t w = 0; w < options.workers; ++w) {
    impl->workers.push_back(std::make_unique<Worker>(w));
  }
  try {
    for (const auto& lo : options.listeners) {
      auto state = impl->Bind(lo, nullptr);
      if (!state) return state.error();
      impl->Open(**state);
      impl->active.push_back(state->get());
      impl->all.push_back(std::move(*state));
    }
    for (auto& worker : impl->workers) {
      worker->Run(worker->index() == 0
                      ? std::function<void()>([i = impl.get()] { i->RearmAccepts(); })
                      : std::function<void()>());
    }
  } catch (const std::exception& e) {
    return Error{"ingest.start", std::string("starting listeners: ") + e.what()};
  }
  for (const ListenerState* state : impl->active) {
    log::Write(log::Level::kInfo, "listening: " + Describe(*state));
  }
  return std::unique_ptr<IngestServer>(new IngestServer(std::move(impl)));
}

Expected<IngestServer::ReconfigureResult> IngestServer::Reconfigure(const IngestOptions& next) {
  Impl& s = *impl_;
  if (s.stopped) return Error{"ingest.stopped", "the listeners are stopped"};
  if (next.workers != s.workers.size()) {
    return Error{"ingest.workers", "ingest.workers: changing the number of workers (from " +
                                       std::to_string(s.workers.size()) + " to " +
                                       std::to_string(next.workers) + ") needs a restart"};
  }
  std::vector<ListenerState*> current;
  {
    std::lock_guard lock(s.mutex);
    current = s.active;
  }
  std::vector<bool> claimed(current.size(), false);
  std::vector<ListenerState*> next_active;
  std::vector<std::unique_ptr<ListenerState>> fresh;
  ReconfigureResult result;
  try {
    for (const auto& lo : next.listeners) {
      ListenerState* keep = nullptr;
      for (std::size_t i = 0; i < current.size() && keep == nullptr; ++i) {
        if (!claimed[i] && current[i]->options == lo) {
          claimed[i] = true;
          keep = current[i];
        }
      }
      if (keep != nullptr) {
        next_active.push_back(keep);
        ++result.kept;
        continue;
      }
      std::shared_ptr<ListenerStats[]> stats;
      for (const ListenerState* c : current) {
        if (SameAddress(c->options, lo)) stats = c->stats;
      }
      // Every new socket is bound before anything closes: on error nothing has changed (the
      // listeners bound so far close with `fresh`; no worker has seen them).
      auto state = s.Bind(lo, std::move(stats));
      if (!state) return state.error();
      next_active.push_back(state->get());
      fresh.push_back(std::move(*state));
    }
  } catch (const std::exception& e) {
    return Error{"ingest.reconfigure", std::string("binding listeners: ") + e.what()};
  }
  for (auto& state : fresh) {
    s.Open(*state);
    log::Write(log::Level::kInfo, "listening: " + Describe(*state));
  }
  result.bound = fresh.size();
  {
    std::lock_guard lock(s.mutex);
    s.active = next_active;
    for (auto& state : fresh) s.all.push_back(std::move(state));
  }
  for (std::size_t i = 0; i < current.size(); ++i) {
    if (claimed[i]) continue;
    s.Close(*current[i]);
    log::Write(log::Level::kInfo, "closed listener: " + Describe(*current[i]));
    ++result.closed;
  }
  // The closes were queued before this: once every worker has run it, they are done, and each
  // closed connection's cancelled read is queued to drain it; a second pass waits for those.
  s.RunOnWorkers([](std::size_t) {}, std::chrono::seconds(10));
  s.RunOnWorkers([](std::size_t) {}, std::chrono::seconds(10));
  return result;
}

bool IngestServer::RunOnWorkers(const std::function<void(std::size_t)>& task,
                                std::chrono::milliseconds timeout) noexcept {
  return impl_->RunOnWorkers(task, timeout);
}

IngestServer::IngestServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
IngestServer::~IngestServer() { Stop(); }
void IngestServer::Stop() { impl_->Stop(); }

std::vector<IngestServer::ListenerView> IngestServer::listeners() const {
  std::lock_guard lock(impl_->mutex);
  std::vector<ListenerView> out;
  out.reserve(impl_->active.size());
  for (const ListenerState* state : impl_->active) {
    out.push_back(
        ListenerView{state->options, state->port,
                     std::span<const ListenerStats>(state->stats.get(), impl_->workers.size())});
  }
  return out;
}

}  // namespace telemetryd::ingest
