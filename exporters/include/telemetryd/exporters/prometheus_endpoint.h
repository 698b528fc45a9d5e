// PrometheusEndpoint serves /metrics with prometheus-cpp's Exposer (its HTTP server and text
// serializer). Collectables registered here are asked for a snapshot on every scrape, on the
// Exposer's threads: ingest never waits for a scrape.
// It also answers /-/healthy and /-/ready with 200 (it exists only once the listeners are up).
// Thread-safety: Register may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "telemetryd/common/expected.h"

namespace prometheus {
class Collectable;
class Exposer;
}  // namespace prometheus

namespace telemetryd::exporters {

// Sets glibc's allocator so that the memory a scrape frees stays in the process for the next one
// (docs/design.md, "Memory"): no block mapped apart from the heap, no trimming, one arena. Call
// it first in main, before any thread starts.
void KeepScrapeMemory() noexcept;

class PrometheusEndpoint {
 public:
  // Binds address:port (port 0: the kernel picks one). Errors come back as values.
  static Expected<std::unique_ptr<PrometheusEndpoint>> Start(const std::string& address,
                                                             std::uint16_t port);
  ~PrometheusEndpoint();
  PrometheusEndpoint(const PrometheusEndpoint&) = delete;
  PrometheusEndpoint& operator=(const PrometheusEndpoint&) = delete;

  void Register(const std::weak_ptr<prometheus::Collectable>& collectable);
  // Requires HTTP basic auth with these credentials on /metrics.
  void RequireBasicAuth(const std::string& username, const std::string& password);
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

 private:
  PrometheusEndpoint(std::unique_ptr<prometheus::Exposer> exposer, std::uint16_t port);
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::uint16_t port_;
  std::shared_ptr<prometheus::Collectable> health_;  // serves /-/healthy and /-/ready
};

}  // namespace telemetryd::exporters
