// Private: how long a UDP receiver lets datagrams gather between its reads while they keep coming.
//
// A longer pause costs less CPU per datagram: fewer wakeups, and the worker's caches warmed once
// for more datagrams. But the socket holds what arrives meanwhile, within its receive buffer. So
// the pause follows how full the buffer was when the last one ended (SO_MEMINFO): it grows while
// the queue stays under a 32nd of the buffer, up to kLongest, and halves when the queue passed an
// eighth, down to kShortest. A 64 MiB buffer lets it reach a millisecond at any rate one core can
// read; one capped at the kernel's default net.core.rmem_max (416 KiB) keeps it at 50-100 µs at
// 400,000 datagrams a second.
// Thread-safety: a value of one receiver, used on its worker's thread.
#pragma once

#include <linux/sock_diag.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>

namespace telemetryd::ingest::detail {

// A socket's memory figures (SO_MEMINFO), all 0 when the kernel gave none: what its receive queue
// holds and may hold (both counting what each datagram's buffers take, not its payload), and the
// running count of the datagrams it dropped (wraps at 2^32).
struct SocketMemory {
  std::uint32_t queued = 0;
  std::uint32_t limit = 0;
  std::uint32_t drops = 0;
};
inline SocketMemory ReadSocketMemory(int fd) noexcept {
  std::array<std::uint32_t, SK_MEMINFO_VARS> meminfo{};
  socklen_t length = sizeof meminfo;
  // A kernel may give fewer figures than these headers know; the drops' index is the last read.
  if (::getsockopt(fd, SOL_SOCKET, SO_MEMINFO, meminfo.data(), &length) != 0 ||
      length <= SK_MEMINFO_DROPS * sizeof(std::uint32_t)) {
    return {};
  }
  return {meminfo[SK_MEMINFO_RMEM_ALLOC], meminfo[SK_MEMINFO_RCVBUF], meminfo[SK_MEMINFO_DROPS]};
}

class GatherPause {
 public:
  static constexpr std::chrono::microseconds kShortest{50};
  static constexpr std::chrono::microseconds kFirst{200};
  static constexpr std::chrono::microseconds kLongest{1000};

  [[nodiscard]] std::chrono::microseconds get() const noexcept { return pause_; }

  // At the end of a pause: the socket's queue held `queued` bytes of its `limit` (SocketMemory).
  // Both 0 (the kernel said nothing) change nothing.
  void Observe(std::uint64_t queued, std::uint64_t limit) noexcept {
    if (queued > limit / 8) {
      pause_ = std::max(kShortest, pause_ / 2);
    } else if (queued < limit / 32) {
      pause_ = std::min(kLongest, pause_ * 3 / 2);
    }
  }

 private:
  std::chrono::microseconds pause_ = kFirst;
};

}  // namespace telemetryd::ingest::detail
