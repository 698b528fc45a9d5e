#include "telemetryd/ingest/ingest_server.h"

#include <netinet/in.h>
#include <sys/socket.h>

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

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
constexpr std::size_t kTcpReadChunk = 64 * 1024;

// Reads datagrams in batches with recvmmsg and hands each to the intake.
class UdpReceiver {
 public:
  UdpReceiver(udp::socket socket, detail::Intake& intake, ListenerStats& stats, std::size_t batch)
      : socket_(std::move(socket)),
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

  void Arm() {
    socket_.async_wait(udp::socket::wait_read, [this](const boost::system::error_code& ec) {
      if (ec) return;  // closed
      Drain(kBatchesPerWakeup);
      Arm();
    });
  }

  // Reads until the socket is empty or `max_batches` batches were read.
  void Drain(int max_batches) noexcept {
    const int fd = socket_.native_handle();
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
        return;  // EAGAIN: empty; anything else: the next readiness event retries
      }
      for (int i = 0; i < n; ++i) Deliver(headers_[static_cast<std::size_t>(i)]);
      if (static_cast<std::size_t>(n) < batch_) return;
    }
  }

  void Close() noexcept {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

 private:
  void Deliver(mmsghdr& m) noexcept {
    msghdr& h = m.msg_hdr;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(&h, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
        std::uint32_t dropped = 0;
        std::memcpy(&dropped, CMSG_DATA(c), sizeof dropped);
        stats_.kernel_drops.Set(dropped);
      }
    }
    if ((h.msg_flags & MSG_TRUNC) != 0) {
      stats_.truncated_datagrams.Add();
      intake_.RejectOversize();
      return;
    }
    intake_.Packet({static_cast<const std::uint8_t*>(h.msg_iov->iov_base), m.msg_len});
  }

  udp::socket socket_;
  detail::Intake& intake_;
  ListenerStats& stats_;
  std::size_t batch_;
  std::vector<std::uint8_t> storage_;
  std::vector<iovec> iov_;
  std::vector<mmsghdr> headers_;
  std::vector<std::uint8_t> control_;
};

class Worker;

// One TCP connection: reassembles native frames (4-byte big-endian length, then the frame) or
// StatsD lines from a byte stream.
class TcpSession : public std::enable_shared_from_this<TcpSession> {
 public:
  TcpSession(tcp::socket socket, Worker& worker, const ListenerOptions& options,
             detail::Intake& intake, ListenerStats& stats, std::atomic<std::size_t>& open)
      : socket_(std::move(socket)),
        worker_(worker),
        options_(options),
        intake_(intake),
        stats_(stats),
        open_(open),
        last_activity_(Clock::now()) {}

  ~TcpSession() {
    open_.fetch_sub(1, std::memory_order_relaxed);
    stats_.connections_open.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start();
  // Reads whatever the kernel already holds for this connection, processes it and closes.
  void DrainAndClose() noexcept;
  void CloseIfIdle(Clock::time_point now) noexcept {
    if (socket_.is_open() && now - last_activity_ > options_.idle_timeout) {
      stats_.connections_closed_idle.Add();
      Close();
    }
  }

 private:
  void Read();
  void Consume(bool at_eof) noexcept;
  void ConsumeFrames() noexcept;
  void ConsumeLines(bool at_eof) noexcept;
  void Close() noexcept;

  tcp::socket socket_;
  Worker& worker_;
  const ListenerOptions& options_;
  detail::Intake& intake_;
  ListenerStats& stats_;
  std::atomic<std::size_t>& open_;
  std::vector<std::uint8_t> buffer_;
  std::size_t used_ = 0;
  bool discarding_line_ = false;  // StatsD: skipping the rest of an oversize line
  Clock::time_point last_activity_;
};

struct ListenerState {
  ListenerOptions options;
  std::uint16_t port = 0;
  std::atomic<std::size_t> open_connections{0};
  std::unique_ptr<tcp::acceptor> acceptor;  // TCP only; runs on worker 0
};

class Worker {
 public:
  Worker(std::size_t index, EventSink& sink) : index_(index), sink_(sink), sweep_(io_) {}

  asio::io_context& io() noexcept { return io_; }
  std::size_t index() const noexcept { return index_; }

  detail::Intake& AddIntake(const ListenerOptions& options, ListenerStats& stats) {
    intakes_.push_back(
        std::make_unique<detail::Intake>(options.protocol, options.Name(), sink_, stats));
    return *intakes_.back();
  }
  void AddUdp(std::unique_ptr<UdpReceiver> receiver) { udp_.push_back(std::move(receiver)); }
  void Register(TcpSession* session) { sessions_.insert(session); }
  void Unregister(TcpSession* session) { sessions_.erase(session); }

  void Run() {
    for (auto& receiver : udp_) receiver->Arm();
    Sweep();
    thread_ = std::thread([this] { io_.run(); });
  }

  // Runs on the worker's thread: drain, close, let io_context.run() return.
  void Stop() {
    asio::post(io_, [this] {
      for (auto& receiver : udp_) {
        receiver->Drain(1 << 20);
        receiver->Close();
      }
      // DrainAndClose may drop the last reference of a session: iterate over a copy.
      std::vector<TcpSession*> sessions(sessions_.begin(), sessions_.end());
      for (TcpSession* session : sessions) session->DrainAndClose();
      sweep_.cancel();
      stopping_ = true;
    });
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void Sweep() {
    sweep_.expires_after(std::chrono::seconds(1));
    sweep_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || stopping_) return;
      const auto now = Clock::now();
      std::vector<TcpSession*> sessions(sessions_.begin(), sessions_.end());
      for (TcpSession* session : sessions) session->CloseIfIdle(now);
      Sweep();
    });
  }

  std::size_t index_;
  EventSink& sink_;
  asio::io_context io_;
  asio::steady_timer sweep_;
  std::vector<std::unique_ptr<detail::Intake>> intakes_;
  std::vector<std::unique_ptr<UdpReceiver>> udp_;
  std::unordered_set<TcpSession*> sessions_;
  std::thread thread_;
  bool stopping_ = false;
};

void TcpSession::Start() {
  worker_.Register(this);
  buffer_.resize(kTcpReadChunk);
  Read();
}

void TcpSession::Read() {
  if (buffer_.size() - used_ < kTcpReadChunk / 4) {
    // Room for the largest frame (or line) we accept plus one read; never more.
    const std::size_t cap = options_.max_frame_bytes + 4 + kTcpReadChunk;
    buffer_.resize(std::min(cap, std::max(buffer_.size() * 2, used_ + kTcpReadChunk)));
  }
  socket_.async_read_some(
      asio::buffer(buffer_.data() + used_, buffer_.size() - used_),
      [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
        if (ec) {
          if (ec != asio::error::operation_aborted) self->Consume(true);
          self->Close();
          return;
        }
        self->last_activity_ = Clock::now();
        self->used_ += n;
        self->Consume(false);
        if (self->socket_.is_open()) self->Read();
      });
}

void TcpSession::DrainAndClose() noexcept {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  while (!ec && socket_.is_open()) {
    if (buffer_.size() == used_) break;
    const std::size_t n =
        socket_.read_some(asio::buffer(buffer_.data() + used_, buffer_.size() - used_), ec);
    used_ += n;
    Consume(ec == asio::error::eof);
  }
  Close();
}

void TcpSession::Consume(bool at_eof) noexcept {
  if (options_.protocol == Protocol::kNative) {
    ConsumeFrames();
  } else {
    ConsumeLines(at_eof);
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

void TcpSession::ConsumeLines(bool at_eof) noexcept {
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
  // Hand over every complete line at once; keep the unfinished one.
  std::size_t end = used_;
  while (end > start && buffer_[end - 1] != '\n') --end;
  if (end > start) intake_.Packet({buffer_.data() + start, end - start});
  if (at_eof && used_ > end) {
    intake_.Packet({buffer_.data() + end, used_ - end});
    end = used_;
  }
  const std::size_t rest = used_ - end;
  if (rest > options_.max_frame_bytes) {
    intake_.RejectOversize();
    discarding_line_ = true;
    used_ = 0;
    return;
  }
  std::memmove(buffer_.data(), buffer_.data() + end, rest);
  used_ = rest;
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

}  // namespace

class IngestServer::Impl {
 public:
  IngestOptions options;
  std::deque<ListenerState> listeners;
  std::vector<std::unique_ptr<Worker>> workers;
  // stats_[listener * workers + worker]
  std::unique_ptr<ListenerStats[]> stats;
  // intakes[listener * workers + worker], owned by the workers
  std::vector<detail::Intake*> intakes;
  std::size_t next_worker = 0;  // round-robin for accepted connections (worker 0's thread)
  bool stopped = false;

  ListenerStats& Stats(std::size_t listener, std::size_t worker) {
    return stats[listener * workers.size() + worker];
  }

  Status Bind();
  void Accept(std::size_t listener_index);
  void Stop();
};

Status IngestServer::Impl::Bind() {
  for (std::size_t l = 0; l < options.listeners.size(); ++l) {
    ListenerState& state = listeners.emplace_back();
    state.options = options.listeners[l];
    const ListenerOptions& lo = state.options;
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(lo.address, ec);
    if (ec) return Error{"ingest.address", lo.Name() + ": bad address \"" + lo.address + "\""};

    if (lo.transport == Transport::kUdp) {
      std::uint16_t port = lo.port;
      for (auto& worker : workers) {
        auto socket = OpenUdp(worker->io(), udp::endpoint(address, port), lo);
        if (!socket) return socket.error();
        port = socket->local_endpoint().port();  // port 0: the others join the kernel's choice
        auto& stats_ref = Stats(l, worker->index());
        auto& intake = worker->AddIntake(lo, stats_ref);
        intakes[l * workers.size() + worker->index()] = &intake;
        worker->AddUdp(std::make_unique<UdpReceiver>(std::move(*socket), intake, stats_ref,
                                                     std::max<std::size_t>(1, lo.batch)));
      }
      state.port = port;
    } else {
      auto acceptor = std::make_unique<tcp::acceptor>(workers[0]->io());
      acceptor->open(address.is_v6() ? tcp::v6() : tcp::v4(), ec);
      if (!ec) acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) acceptor->bind(tcp::endpoint(address, lo.port), ec);
      if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        return Error{"ingest.bind", "listen " + lo.Name() + " " + lo.address + ":" +
                                        std::to_string(lo.port) + ": " + ec.message()};
      }
      state.port = acceptor->local_endpoint().port();
      for (auto& worker : workers) {
        intakes[l * workers.size() + worker->index()] =
            &worker->AddIntake(lo, Stats(l, worker->index()));
      }
      state.acceptor = std::move(acceptor);
    }
  }
  return Ok{};
}

void IngestServer::Impl::Accept(std::size_t listener_index) {
  ListenerState& state = listeners[listener_index];
  // Connections go round-robin to the workers.
  Worker& target = *workers[next_worker++ % workers.size()];
  state.acceptor->async_accept(
      target.io(),
      [this, listener_index, &target](const boost::system::error_code& ec, tcp::socket socket) {
        ListenerState& s = listeners[listener_index];
        if (ec == asio::error::operation_aborted || !s.acceptor->is_open()) return;
        ListenerStats& acceptor_stats = Stats(listener_index, 0);
        if (!ec) {
          if (s.open_connections.load() >= s.options.max_connections) {
            acceptor_stats.connections_rejected.Add();
            boost::system::error_code ignored;
            socket.close(ignored);
          } else {
            acceptor_stats.connections_accepted.Add();
            s.open_connections.fetch_add(1);
            ListenerStats& stats_ref = Stats(listener_index, target.index());
            stats_ref.connections_open.fetch_add(1);
            asio::post(target.io(), [this, listener_index, &target, &stats_ref,
                                     sock = std::move(socket)]() mutable {
              auto session = std::make_shared<TcpSession>(
                  std::move(sock), target, listeners[listener_index].options,
                  *intakes[listener_index * workers.size() + target.index()], stats_ref,
                  listeners[listener_index].open_connections);
              session->Start();
            });
          }
        }
        Accept(listener_index);
      });
}

void IngestServer::Impl::Stop() {
  if (stopped) return;
  stopped = true;
  // Acceptors live on worker 0: close them there, before the workers drain.
  asio::post(workers[0]->io(), [this] {
    for (auto& state : listeners) {
      if (state.acceptor) {
        boost::system::error_code ignored;
        state.acceptor->close(ignored);
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
  impl->options = options;
  for (std::size_t w = 0; w < options.workers; ++w) {
    impl->workers.push_back(std::make_unique<Worker>(w, *sinks[w]));
  }
  impl->stats = std::make_unique<ListenerStats[]>(options.listeners.size() * options.workers);
  impl->intakes.resize(options.listeners.size() * options.workers);
  try {
    if (auto status = impl->Bind(); !status) return status.error();
    for (std::size_t l = 0; l < impl->listeners.size(); ++l) {
      if (impl->listeners[l].acceptor) impl->Accept(l);
    }
    for (auto& worker : impl->workers) worker->Run();
  } catch (const std::exception& e) {
    return Error{"ingest.start", std::string("starting listeners: ") + e.what()};
  }
  for (std::size_t l = 0; l < impl->listeners.size(); ++l) {
    const auto& state = impl->listeners[l];
    log::Write(log::Level::kInfo, "listening: " + state.options.Name() + " on " +
                                      state.options.address + ":" + std::to_string(state.port));
  }
  return std::unique_ptr<IngestServer>(new IngestServer(std::move(impl)));
}

bool IngestServer::RunOnWorkers(const std::function<void(std::size_t)>& task,
                                std::chrono::milliseconds timeout) {
  if (impl_->stopped) return false;
  // Shared with the posted handlers, which may outlive this call after a timeout.
  struct Pending {
    std::mutex mutex;
    std::condition_variable done;
    std::size_t remaining;
  };
  auto pending = std::make_shared<Pending>();
  pending->remaining = impl_->workers.size();
  for (auto& worker : impl_->workers) {
    asio::post(worker->io(), [pending, task, index = worker->index()] {
      task(index);
      std::lock_guard lock(pending->mutex);
      if (--pending->remaining == 0) pending->done.notify_all();
    });
  }
  std::unique_lock lock(pending->mutex);
  return pending->done.wait_for(lock, timeout, [&] { return pending->remaining == 0; });
}

IngestServer::IngestServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
IngestServer::~IngestServer() { Stop(); }
void IngestServer::Stop() { impl_->Stop(); }
const IngestOptions& IngestServer::options() const noexcept { return impl_->options; }

std::vector<std::uint16_t> IngestServer::ports() const {
  std::vector<std::uint16_t> out;
  for (const auto& state : impl_->listeners) out.push_back(state.port);
  return out;
}

const ListenerStats& IngestServer::stats(std::size_t listener, std::size_t worker) const {
  return impl_->Stats(listener, worker);
}

}  // namespace telemetryd::ingest
