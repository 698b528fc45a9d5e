// The aggregation engine: catalogs compiled into metric definitions, per-worker Shards that record
// events without locks, and a Store that holds the merged series for the two views: cumulative
// (Prometheus) and deltas since the last push (StatsD). No I/O.
//
// Threads: each ingest worker owns one Shard and is the only thread that calls it. Shard::Flush
// (on that same thread) moves the shard's deltas into the Store under the Store's mutex; Collect
// and TakeDeltas read the Store under the same mutex. Record never locks and never allocates for a
// series that already exists in the shard.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "telemetryd/aggregate/catalog.h"
#include "telemetryd/common/counter.h"
#include "telemetryd/common/expected.h"
#include "telemetryd/common/tag.h"
#include "telemetryd/wire/event.h"

namespace telemetryd::aggregate {

enum class UnknownEventPolicy : std::uint8_t {
  kDrop,         // count them all in one counter
  kCountByName,  // also count per event name, up to unknown_event_names_max names
};

// Rename and label StatsD metrics by their dotted name, as statsd_exporter's glob mapper does:
// `*` matches one segment and is available as $1, $2, ... in `name` and label values.
struct StatsdMapping {
  std::string match;                                        // "app.*.requests.*"
  std::string name;                                         // "app_requests" (may use $n)
  std::vector<std::pair<std::string, std::string>> labels;  // {"service", "$1"}
};

struct EngineOptions {
  std::size_t max_series_per_metric = 10'000;
  std::size_t max_series_total = 1'000'000;
  std::chrono::milliseconds series_ttl{0};  // 0: series never expire
  UnknownEventPolicy unknown_events = UnknownEventPolicy::kCountByName;
  std::size_t unknown_event_names_max = 1'000;
  std::size_t max_open_spans = 65'536;  // per shard
  std::chrono::milliseconds span_max_age{3'600'000};
  std::chrono::milliseconds summary_window{60'000};
  double summary_accuracy = 0.01;
  bool statsd_enabled = true;
  std::size_t statsd_max_metrics = 10'000;
  std::vector<double> statsd_buckets = {1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
  std::vector<double> statsd_quantiles = {0.5, 0.9, 0.99};
  std::vector<StatsdMapping> statsd_mappings;
};

// Why an event (for one metric) or a sample was not recorded.
enum class DropReason : std::uint8_t {
  kUnknownEvent,          // no catalog declares the event
  kMissingMeasurement,    // the metric's measurement is not in the event
  kMissingTag,            // a tag's metadata key is missing and has no default
  kBadTagValue,           // a tag's value is a list, map, tuple or bytes
  kNonFinite,             // NaN or an infinity (StatsD: also once scaled by the sample rate)
  kNegativeCounter,       // a StatsD counter increment below zero
  kSeriesOverflow,        // a cardinality limit was reached
  kSpanUnmatched,         // a stop/exception without duration whose start was never seen
  kSpanExpired,           // a start whose stop never came within span_max_age
  kSpanTableFull,         // more open spans than max_open_spans
  kStatsdTypeConflict,    // a StatsD name seen with two types
  kStatsdMetricOverflow,  // more StatsD metric names than statsd_max_metrics
  kStatsdSetOverflow,     // a StatsD set member beyond kMaxSetMembers in one window
  kNoMemory,              // an update that found no memory, or one a last flush could not merge
  kCount
};
inline constexpr std::size_t kDropReasonCount = static_cast<std::size_t>(DropReason::kCount);
// Distinct members a StatsD set series counts in one window; more are dropped and counted.
inline constexpr std::size_t kMaxSetMembers = 10'000;
std::string_view DropReasonName(DropReason reason) noexcept;

enum class StatsdKind : std::uint8_t { kCounter, kGauge, kTimer, kHistogram, kDistribution, kSet };

using StatsdTagView = TagView;

struct StatsdInput {
  std::string_view name;
  StatsdKind kind = StatsdKind::kCounter;
  double value = 0;
  std::string_view set_member;
  bool gauge_delta = false;
  double sample_rate = 1;
  std::span<const StatsdTagView> tags;  // in wire order
  // Optional: the tags as sent, a text that always splits into the same tags (see
  // ingest::StatsdSample::tag_text). When set, the shard's sample cache keys on it, and only a
  // sample it has not seen yet needs its tags: from `split_tags(split_context, tag_text)` when
  // given, else from `tags`.
  std::string_view tag_text;
  std::span<const StatsdTagView> (*split_tags)(const void* context,
                                               std::string_view tag_text) noexcept = nullptr;
  const void* split_context = nullptr;
};

// A metric as the exporters see it.
struct MetricInfo {
  std::uint32_t id = 0;
  std::string name;  // dotted
  MetricType type = MetricType::kCounter;
  std::string description;
  Unit unit = Unit::kNone;  // of the recorded values (after conversion)
  std::vector<double> buckets;
  std::vector<double> quantiles;
  std::string system;       // catalog system, "statsd" for StatsD metrics
  bool span_gauge = false;  // an in-progress gauge: value may go up and down
  bool statsd_set = false;  // StatsD set: distinct members per push interval
};

struct SeriesPoint {
  std::vector<std::pair<std::string, std::string>> labels;
  double value = 0;                          // counter, sum, last_value, span gauge, set size
  std::uint64_t count = 0;                   // distribution, summary: observations
  double sum = 0;                            // distribution, summary
  std::vector<std::uint64_t> bucket_counts;  // distribution: per bucket (not cumulative), +Inf last
  std::vector<double> quantile_values;       // summary, in MetricInfo::quantiles order
};

struct MetricPoints {
  MetricInfo info;
  std::vector<SeriesPoint> series;
};

// A series' label as views into a Snapshot, valid only during SnapshotVisitor::Series.
struct LabelRef {
  std::string_view name;
  std::string_view value;
};

// Receives a Snapshot metric by metric and, after each metric, its series one by one.
class SnapshotVisitor {
 public:
  virtual ~SnapshotVisitor() = default;
  // Whether all series of a StatsD name must come after one Metric call (Prometheus families
  // must). If not, each may come after a Metric call of its own, which saves sorting the names.
  [[nodiscard]] virtual bool GroupsByName() const { return true; }
  // Called once before the first Metric: how many Metric calls follow.
  virtual void Start(std::size_t metrics) { (void)metrics; }
  // The next metric and how many series follow it (possibly none). `info` stays valid until the
  // next call of Metric or the end of the visit.
  virtual void Metric(const MetricInfo& info, std::size_t series) = 0;
  // One series of that metric. The labels are in `labels` (`point.labels` may be empty).
  virtual void Series(std::span<const LabelRef> labels, const SeriesPoint& point) = 0;
  // Called once after the last series.
  virtual void Finish() {}
};

// The values of every series at one moment (Engine::CollectSnapshot), or what changed in an
// interval (Engine::TakeDeltaSnapshot). It owns what it
// holds: it outlives the engine and its store's lock. Each series' labels stay packed in its key
// until Visit hands the series over, so a snapshot costs a few bytes per series and no
// allocation per series (distribution and summary series excepted).
class Snapshot {
 public:
  void Visit(SnapshotVisitor& visitor) const;
  // The same series as MetricPoints, labels copied.
  [[nodiscard]] std::vector<MetricPoints> Points() const;
  [[nodiscard]] std::size_t series() const noexcept { return key_ends_.size(); }

 private:
  friend class Engine;
  struct Metric {
    MetricInfo info;
    std::uint32_t first_label = 0;  // tag label names: labels_[first_label, first_label + tags)
    std::uint32_t tags = 0;
    std::size_t first = 0;  // series: key_ends_[first, first + count), and values_ or points_
    std::size_t count = 0;
    std::size_t first_point = 0;  // distribution and summary: points_[first_point, ...)
    bool by_name = false;         // a StatsD type's series, visited as one metric per name
  };
  void BeginMetric(const MetricInfo& info, std::span<const std::string> tag_labels,
                   bool by_name = false);
  // A series of the metric begun last: a counter, sum or last value, or another type's point.
  void Add(std::string_view key, double value);
  void Add(std::string_view key, SeriesPoint point);
  [[nodiscard]] std::string_view Key(std::size_t series) const noexcept;
  // The StatsD name of series `entry` (low 32 bits) of a by_name metric.
  [[nodiscard]] std::string_view NameAt(const Metric& m, std::uint64_t entry) const noexcept;
  // Hands series `j` of metric `m` to the visitor.
  void VisitSeries(const Metric& m, std::size_t j, SnapshotVisitor& visitor,
                   std::vector<LabelRef>& labels, SeriesPoint& scalar) const;
  // The series of a by_name metric in visiting order (series index in the low 32 bits), and how
  // many names they have.
  std::size_t GroupByName(const Metric& m, std::vector<std::uint64_t>& order) const;
  void VisitByName(const Metric& m, std::span<const std::uint64_t> order, SnapshotVisitor& visitor,
                   std::vector<LabelRef>& labels, SeriesPoint& scalar) const;

  std::vector<Metric> metrics_;
  std::vector<std::string> labels_;
  std::string keys_;
  std::vector<std::size_t> key_ends_;  // where each series' key ends in keys_
  std::vector<double> values_;         // per series: counter, sum, last value, set size
  std::vector<SeriesPoint> points_;    // per distribution or summary series
};

// Hands points (Engine::Collect, TakeDeltas) to a visitor as Snapshot::Visit hands its series.
void VisitPoints(const std::vector<MetricPoints>& points, SnapshotVisitor& visitor);

struct EngineCounters {
  std::uint64_t series = 0;
  std::uint64_t statsd_metrics = 0;
  std::vector<std::pair<std::string, std::uint64_t>> series_per_metric;
  std::vector<std::pair<std::string, std::uint64_t>> unknown_events;  // by name (policy permitting)
};

class Engine;

class Shard {
 public:
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  // Records a decoded event into this shard's series. Call on the recording thread, with the
  // FrameInfo the decoder gave: the shard keeps per-frame caches keyed by its `sequence` (unique
  // per frame decoded on a thread), whose entries point into the frame.
  void Record(const wire::FrameInfo& frame, const wire::Event& event) noexcept;
  // A look at the events of a frame before they are recorded: when this shard's series no longer
  // fit in the caches, each Preview starts loading the probe slot of the event's first series and
  // PreviewDone their entries, so that the frame's cache misses overlap instead of following one
  // another. Whether it is worth a second decoding of the frame: PreviewHelps. Records nothing,
  // counts nothing.
  [[nodiscard]] bool PreviewHelps() const noexcept;
  void Preview(const wire::FrameInfo& frame, const wire::Event& event) noexcept;
  void PreviewDone() noexcept;
  void RecordStatsd(const StatsdInput& sample) noexcept;
  // The same for each sample in order (with one reading of the clock), cheaper than one call
  // each: the samples' cache misses overlap.
  void RecordStatsd(std::span<const StatsdInput> samples) noexcept;
  // Moves what this shard recorded into the engine's store; expires idle series and old spans.
  // Call on the thread that records. False when memory ran out: the series not moved keep their
  // updates for the next Flush (or DiscardPending), and none was moved in part.
  bool Flush() noexcept;
  // Drops the updates a Flush that returned false left in this shard, counted as
  // DropReason::kNoMemory: for a shard that will not flush again (a reload's old one, a stop).
  void DiscardPending() noexcept;
  // Takes over the open spans of `previous` (a shard of the engine this one's engine adopted, see
  // Engine::Adopt), so that stops arriving after a reload still pair and span gauges come down.
  // Call on the recording thread, after `previous` flushed for the last time.
  void AdoptSpans(Shard& previous) noexcept;

  [[nodiscard]] std::uint64_t dropped(DropReason reason) const noexcept {
    return drops_[static_cast<std::size_t>(reason)].Get();
  }
  [[nodiscard]] std::uint64_t recorded() const noexcept { return recorded_.Get(); }
  [[nodiscard]] std::uint64_t filtered() const noexcept { return filtered_.Get(); }
  [[nodiscard]] std::uint64_t open_spans() const noexcept { return open_spans_.Get(); }

  class State;

 private:
  friend class Engine;
  explicit Shard(Engine& engine);
  std::unique_ptr<State> state_;
  SingleWriterCounter drops_[kDropReasonCount];
  SingleWriterCounter recorded_;  // metric updates
  SingleWriterCounter filtered_;  // skipped by keep/drop
  SingleWriterCounter open_spans_;
};

class Engine {
 public:
  // Compiles the catalogs (already validated by the loader). Errors: conflicting metric names.
  static Expected<std::unique_ptr<Engine>> Create(const std::vector<CatalogSpec>& catalogs,
                                                  const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  std::unique_ptr<Shard> NewShard();

  // Cumulative values of every series (summaries: over the sliding window). The store's lock is
  // held only while values and keys are copied.
  [[nodiscard]] Snapshot CollectSnapshot() const;
  // The same as MetricPoints (CollectSnapshot().Points()).
  [[nodiscard]] std::vector<MetricPoints> Collect() const;
  // Changes since the previous call: counter increments, sums added, last values set since,
  // distribution/summary observations since, set sizes; only series that changed. Starts the next
  // interval.
  Snapshot TakeDeltaSnapshot();
  // The same as MetricPoints (TakeDeltaSnapshot().Points()).
  std::vector<MetricPoints> TakeDeltas();
  [[nodiscard]] EngineCounters counters() const;
  // The catalog metrics and span gauges (StatsD names are counted in counters().statsd_metrics).
  [[nodiscard]] std::vector<MetricInfo> metrics() const;
  [[nodiscard]] const EngineOptions& options() const noexcept;
  struct AdoptResult {
    std::size_t kept = 0;     // metrics whose series were taken over
    std::size_t changed = 0;  // same name, other definition: they start again from zero
    std::size_t removed = 0;  // no longer defined
    std::size_t series = 0;   // series taken over
    // StatsD set members left out where both engines held a set's series and together more than
    // kMaxSetMembers members: to be counted as DropReason::kStatsdSetOverflow.
    std::uint64_t set_members_dropped = 0;
  };
  // For a configuration reload: takes over the merged series of every metric of `previous` whose
  // definition did not change (name, type, event, measurement, tags, filters, units, buckets,
  // quantiles), of its StatsD metrics when the StatsD input options did not change, and its
  // unknown-event counts. Call after the last Flush of `previous`'s shards and before the first
  // Flush of this engine's shards.
  AdoptResult Adopt(Engine& previous);
  // Drops overflowed at the store (cardinality limits), by metric name.
  [[nodiscard]] std::uint64_t overflow_total() const;

  class Impl;

 private:
  friend class Shard;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace telemetryd::aggregate
