#include "telemetryd/exporters/prometheus_endpoint.h"

#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

namespace telemetryd::exporters {

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
