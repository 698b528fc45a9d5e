// Turning aggregated metrics into Prometheus metric families (docs/prometheus.md): names, units,
// types, label sanitising. AggregateCollector is the prometheus::Collectable that serves them.
// Thread-safety: the functions are pure; AggregateCollector::Collect may run on any thread.
#pragma once

#include <atomic>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "telemetryd/aggregate/engine.h"
#include "telemetryd/common/expected.h"

namespace telemetryd::exporters {

struct PrometheusName {
  std::string name;  // e.g. "vsr_state_machine_operation_stop_duration_seconds"
  double scale = 1;  // multiply values (and bucket bounds) by this: e.g. 0.001 for ms -> s
  prometheus::MetricType type = prometheus::MetricType::Untyped;
};

// The Prometheus name, unit scale and type of a metric: dots and invalid characters become '_',
// time is exposed in seconds (suffix _seconds), sizes in bytes (_bytes), counters end in _total.
PrometheusName NameFor(const aggregate::MetricInfo& metric);
// A valid Prometheus label name for `text`.
std::string LabelName(std::string_view text);
// The label name `text` is exposed as: LabelName, and "exported_" before the names of histogram
// buckets and summary quantiles ("le", "quantile").
std::string ExposedLabelName(std::string_view text);
// Label values must be UTF-8: invalid bytes become U+FFFD.
std::string LabelValue(std::string_view text);
// A family's help text as the exposition needs it: UTF-8 (as LabelValue), with backslashes and
// line feeds escaped ("\\", "\n"), which prometheus-cpp's text serializer writes as given.
std::string HelpText(std::string text);

// Two metrics that would share a Prometheus name are an error (reported with both names).
Status CheckNames(const std::vector<aggregate::MetricInfo>& metrics);

// Builds metric families from a snapshot (aggregate::Snapshot::Visit), appending to `out`.
// Metrics whose name clashes with an earlier one are left out and counted, by Finish (which the
// visit calls last: the families are final only then). In a series, a label
// whose exposed name an earlier label of the series already has is left out and counted; in a
// family, a series with the same labels as an earlier series (after sanitizing and leaving out)
// is left out and counted.
class FamilyBuilder final : public aggregate::SnapshotVisitor {
 public:
  explicit FamilyBuilder(std::vector<prometheus::MetricFamily>& out);
  ~FamilyBuilder() override;
  FamilyBuilder(const FamilyBuilder&) = delete;
  FamilyBuilder& operator=(const FamilyBuilder&) = delete;
  void Start(std::size_t metrics) override;
  void Metric(const aggregate::MetricInfo& info, std::size_t series) override;
  void Series(std::span<const aggregate::LabelRef> labels,
              const aggregate::SeriesPoint& point) override;
  // Leaves out the families whose names an earlier family has (Visit calls it last).
  void Finish() override;
  [[nodiscard]] std::uint64_t clashes() const noexcept { return clashes_; }
  [[nodiscard]] std::uint64_t label_clashes() const noexcept { return label_clashes_; }
  [[nodiscard]] std::uint64_t series_clashes() const noexcept { return series_clashes_; }

 private:
  struct LabelNaming {
    std::string key;          // as the series carry it
    std::string name;         // as exposed
    std::uint32_t first = 0;  // index of the metric's first naming exposed under this name
    // On a `first` naming: series_number_ of the last series that had the name (0: none).
    std::uint64_t seen = 0;
  };
  std::vector<prometheus::MetricFamily>& out_;
  prometheus::MetricFamily* family_ = nullptr;  // of the current metric; null: left out
  const aggregate::MetricInfo* info_ = nullptr;
  PrometheusName name_;
  std::vector<LabelNaming> label_names_;
  std::size_t expected_ = 0;         // series announced for the current family
  std::uint64_t series_number_ = 0;  // of the series being built, counted from 1
  // Whether two series of the current family may have the same labels: two keys are exposed
  // under one name, a label was left out, or a value was not UTF-8.
  bool may_repeat_ = false;
  // Names `key` for the current metric, noting whether another key has the same name.
  std::vector<LabelNaming>::iterator AddLabelNaming(std::string_view key);
  // Leaves out the series of the current family whose labels an earlier one has.
  void DropRepeatedSeries();
  // Ends the current family: leaves out its repeated series and notes the clashes counted in it.
  void CloseFamily();
  // The families this builder made, each as the high 32 bits of its name's std::hash above its
  // index in out_. Finish sorts them to find the names made twice.
  std::vector<std::uint64_t> names_;
  // Label and series clashes counted within a family since the last Finish (the few families
  // that have any), taken back when Finish leaves the family out.
  struct FamilyClashes {
    std::uint32_t family = 0;  // index in out_
    std::uint64_t labels = 0;
    std::uint64_t series = 0;
  };
  std::vector<FamilyClashes> family_clashes_;
  std::uint64_t labels_before_ = 0;  // label_clashes_ when the current family began
  std::uint64_t series_before_ = 0;
  std::uint64_t clashes_ = 0;
  std::uint64_t label_clashes_ = 0;
  std::uint64_t series_clashes_ = 0;
};

// Families for the points of Engine::Collect or TakeDeltas, as FamilyBuilder makes them; the
// metrics left out for a clashing name are added to `clashes`.
std::vector<prometheus::MetricFamily> ToFamilies(const std::vector<aggregate::MetricPoints>& points,
                                                 std::uint64_t* clashes = nullptr);

class AggregateCollector final : public prometheus::Collectable {
 public:
  // `snapshot` returns a fresh snapshot (the daemon flushes the shards first).
  explicit AggregateCollector(std::function<aggregate::Snapshot()> snapshot)
      : snapshot_(std::move(snapshot)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;
  [[nodiscard]] std::uint64_t clashes() const noexcept { return clashes_.load(); }
  // Labels and series the last scrape left out (FamilyBuilder).
  [[nodiscard]] std::uint64_t label_clashes() const noexcept { return label_clashes_.load(); }
  [[nodiscard]] std::uint64_t series_clashes() const noexcept { return series_clashes_.load(); }
  // Wall time of the last scrape's flush, snapshot and conversion, in seconds.
  [[nodiscard]] double last_duration_seconds() const noexcept { return last_duration_.load(); }
  // Scrapes that had no memory for the aggregated metrics: they carried none of them.
  [[nodiscard]] std::uint64_t failures() const noexcept { return failures_.load(); }

 private:
  mutable std::atomic<double> last_duration_{0};
  std::function<aggregate::Snapshot()> snapshot_;
  mutable std::atomic<std::uint64_t> clashes_{0};
  mutable std::atomic<std::uint64_t> label_clashes_{0};
  mutable std::atomic<std::uint64_t> series_clashes_{0};
  mutable std::atomic<std::uint64_t> failures_{0};
};

}  // namespace telemetryd::exporters
