#include "telemetryd/exporters/prometheus_endpoint.h"

#include <malloc.h>

#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

namespace telemetryd::exporters {

void KeepScrapeMemory() noexcept {
  // Every scrape builds and frees tens of megabytes, a gigabyte at a million StatsD names. Keep
  // freed memory in the process instead of returning it to the kernel and faulting it in again
  // next time: that was a third to half of a large scrape's cost (bench/README.md). So every
  // block comes from the heap (none is mapped apart, where its pages would go back when it is
  // freed: the response text grows to 256 MiB at a million names), and the heap is never
  // trimmed: the process keeps what its largest scrape needed. One arena: the scrape's civetweb
  // thread would otherwise get an arena of its own, which maps and unmaps every block larger
  // than its 64 MiB heaps whatever these settings.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
  mallopt(M_ARENA_MAX, 1);
}

namespace {
// HTTP threads: each serves one connection at a time, so a few clients that connect and never
// finish their request would otherwise hold every thread until the request timeout.
constexpr const char* kHttpThreads = "8";
// A request must arrive, and each write of the response go out, within this long (civetweb's
// default is 30 s).
constexpr const char* kRequestTimeoutMs = "5000";

// An endpoint with no metrics: a 200 with an empty body.
class Empty final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override { return {}; }
};
}  // namespace

PrometheusEndpoint::PrometheusEndpoint(std::unique_ptr<prometheus::Exposer> exposer,
                                       std::uint16_t port)
    : exposer_(std::move(exposer)), port_(port), health_(std::make_shared<Empty>()) {
  exposer_->RegisterCollectable(health_, "/-/healthy");
  exposer_->RegisterCollectable(health_, "/-/ready");
}

PrometheusEndpoint::~PrometheusEndpoint() = default;

Expected<std::unique_ptr<PrometheusEndpoint>> PrometheusEndpoint::Start(const std::string& address,
                                                                        std::uint16_t port) {
  // civetweb wants "[::1]:9568" for IPv6 and "127.0.0.1:9568" for IPv4.
  const std::string host = address.find(':') != std::string::npos ? "[" + address + "]" : address;
  const std::string bind = host + ":" + std::to_string(port);
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(
        std::vector<std::string>{"listening_ports", bind, "num_threads", kHttpThreads,
                                 "request_timeout_ms", kRequestTimeoutMs});
    const auto ports = exposer->GetListeningPorts();
    if (ports.empty()) return Error{"prometheus.bind", "cannot listen on " + bind};
    return std::unique_ptr<PrometheusEndpoint>(
        new PrometheusEndpoint(std::move(exposer), static_cast<std::uint16_t>(ports.front())));
  } catch (const std::exception& e) {
    return Error{"prometheus.bind", "cannot listen on " + bind + ": " + e.what()};
  }
}

void PrometheusEndpoint::RequireBasicAuth(const std::string& username,
                                          const std::string& password) {
  exposer_->RegisterAuth(
      [username, password](const std::string& user, const std::string& pass) {
        return user == username && pass == password;
      },
      "telemetryd");
}

void PrometheusEndpoint::Register(const std::weak_ptr<prometheus::Collectable>& collectable) {
  exposer_->RegisterCollectable(collectable);
}

}  // namespace telemetryd::exporters
