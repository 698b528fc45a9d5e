// SelfMetrics: telemetryd's own counters (prefix `telemetryd_`) as a prometheus::Collectable that
// reads the ingest counters at scrape time. Thread-safety: Collect may run on any thread while the
// ingest workers write their counters (they are atomics).
#pragma once

#include <functional>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "telemetryd/ingest/ingest_server.h"

namespace telemetryd::exporters {

class SelfMetrics final : public prometheus::Collectable {
 public:
  // `server` must outlive this object. `extra` adds families computed elsewhere (e.g. the sink).
  explicit SelfMetrics(const ingest::IngestServer& server,
                       std::function<void(std::vector<prometheus::MetricFamily>&)> extra = {});
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const ingest::IngestServer& server_;
  std::function<void(std::vector<prometheus::MetricFamily>&)> extra_;
};

// Helpers for building families by hand. AddFamily's reference is valid until the next family is
// added to `out`: fill a family before adding another.
prometheus::MetricFamily& AddFamily(std::vector<prometheus::MetricFamily>& out,
                                    const std::string& name, const std::string& help,
                                    prometheus::MetricType type);
void AddSample(prometheus::MetricFamily& family,
               std::vector<prometheus::ClientMetric::Label> labels, double value);

}  // namespace telemetryd::exporters
