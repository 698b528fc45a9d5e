#include "telemetryd/aggregate/engine.h"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <mutex>
#include <span>
#include <unordered_map>
#include <unordered_set>

#include "series_table.h"
#include "statsd_names.h"
#include "telemetryd/aggregate/sketch.h"
#include "telemetryd/common/radix_sort.h"
#include "units.h"

namespace telemetryd::aggregate {
namespace {

using Clock = std::chrono::steady_clock;

// CLOCK_MONOTONIC at its coarse resolution (a few ms): good enough for idle-series TTLs and
// cheap enough to read for every StatsD sample, whose packet boundaries the shard does not see.
std::int64_t CoarseNowNs() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t NowNs() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// 64-bit FNV-1a: span contexts are hashed once per span event.
std::uint64_t Fnv1a(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ULL) noexcept {
  for (const char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

constexpr char kLabelSeparator = '\x1f';

constexpr std::array<std::string_view, kDropReasonCount> kDropNames = {
    "unknown_event",       "missing_measurement", "missing_tag",          "bad_tag_value",
    "non_finite",          "negative_counter",    "series_overflow",      "span_unmatched",
    "span_expired",        "span_table_full",     "statsd_type_conflict", "statsd_metric_overflow",
    "statsd_set_overflow", "no_memory",
};

struct CompiledFilter {
  FilterSpec::Op op;
  std::string metadata;
  std::string measurement;
  std::vector<std::string> values;
  double threshold;
  bool operator==(const CompiledFilter&) const = default;
};

struct CompiledTag {
  std::string key;
  std::string label;
  bool has_default;
  std::string default_value;
  std::vector<std::pair<std::string, std::string>> values;  // sorted by first
  bool operator==(const CompiledTag&) const = default;
};

struct CompiledMetric {
  MetricInfo info;
  std::string event;        // the event (or span prefix, for span gauges) that feeds it
  std::string measurement;  // empty: count events
  std::vector<CompiledTag> tags;
  std::vector<CompiledFilter> keep;
  std::vector<CompiledFilter> drop;
  Unit unit_from = Unit::kNone;
  Unit unit_to = Unit::kNone;
  bool pair_duration = false;  // a span stop/exception metric on `duration`
  // Engine::Impl::key_indexes of each tag's metadata key and of the measurement.
  std::vector<std::uint32_t> tag_keys;
  std::uint32_t measurement_key = 0;
  // The metric's part of its shard series' hash (SeriesHash): SeriesMix of a seed. The metrics an
  // event feeds with the same tags share one (Binding::tag_groups), so that the series one event
  // updates sit side by side in a shard's table: the first lookup's cache misses bring in the
  // others'.
  std::uint64_t series_mix = 0;
  // The decimal digits of info.id, with which the metric's series keys start.
  std::uint8_t id_digits = 1;
};

// The part of its series' hash that a metric takes from `seed` (CompiledMetric::series_mix), mixed
// once here rather than on every lookup.
std::uint64_t SeriesMix(std::uint32_t seed) noexcept {
  return detail::MixBits((seed + 1ULL) * 0x9E3779B97F4A7C15ULL);
}

// Whether series recorded under `a` mean the same under `b`: everything that shapes a value or a
// label, but not the description.
bool SameDefinition(const CompiledMetric& a, const CompiledMetric& b) {
  return a.info.name == b.info.name && a.info.type == b.info.type && a.info.unit == b.info.unit &&
         a.info.buckets == b.info.buckets && a.info.quantiles == b.info.quantiles &&
         a.info.span_gauge == b.info.span_gauge && a.info.statsd_set == b.info.statsd_set &&
         a.event == b.event && a.measurement == b.measurement && a.tags == b.tags &&
         a.keep == b.keep && a.drop == b.drop && a.unit_from == b.unit_from &&
         a.unit_to == b.unit_to && a.pair_duration == b.pair_duration;
}

// Whether StatsD metrics made under `a` are made the same way under `b`.
bool SameStatsdInput(const EngineOptions& a, const EngineOptions& b) {
  auto same_mappings = [&] {
    if (a.statsd_mappings.size() != b.statsd_mappings.size()) return false;
    for (std::size_t i = 0; i < a.statsd_mappings.size(); ++i) {
      const auto& x = a.statsd_mappings[i];
      const auto& y = b.statsd_mappings[i];
      if (x.match != y.match || x.name != y.name || x.labels != y.labels) return false;
    }
    return true;
  };
  return a.statsd_enabled == b.statsd_enabled && a.statsd_buckets == b.statsd_buckets &&
         a.statsd_quantiles == b.statsd_quantiles && same_mappings();
}

struct Binding {
  std::vector<std::uint32_t> metrics;
  // Per entry of `metrics`: the position in `metrics` of the first metric with the same tags. An
  // event builds the label values of each such group once, for all of the group's metrics.
  std::vector<std::uint32_t> tag_groups;
  SpanRole span = SpanRole::kNone;
  std::uint32_t span_prefix = 0;           // index of the span ("vsr.leadership")
  std::vector<std::uint32_t> span_gauges;  // gauge metric ids fed by this span
};

// ---- Store: merged series, guarded by Engine::Impl::mutex ----

struct SummaryWindow {
  QuantileSketch current;
  QuantileSketch previous;
  QuantileSketch delta;
  explicit SummaryWindow(double accuracy)
      : current(accuracy), previous(accuracy), delta(accuracy) {}
};

// A StatsD set's members, looked up by a view of a packet's bytes without making a string.
struct MemberHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view member) const noexcept {
    return std::hash<std::string_view>{}(member);
  }
};
using SetMembers = std::unordered_set<std::string, MemberHash, std::equal_to<>>;

// What only distributions, summaries and StatsD sets need: kept out of the common series record.
struct StoreExtra {
  std::uint64_t count = 0;
  double sum = 0;
  std::uint64_t delta_count = 0;
  double delta_sum = 0;
  std::vector<std::uint64_t> buckets;
  std::vector<std::uint64_t> delta_buckets;
  std::unique_ptr<SummaryWindow> summary;
  SetMembers set_members;
};

// 48 bytes: one of these per series, so every field counts.
struct StoreSeries {
  std::int64_t isum = 0;  // counters and sums: integer part, exact
  double value = 0;       // counters and sums: the float part; last values, span gauges: the level
  std::int64_t delta_isum = 0;
  double delta_fsum = 0;
  std::int64_t touched_ns : 62 = 0;      // monotonic clock
  std::uint64_t level_set : 1 = 0;       // last values: set, not only moved by deltas
  std::uint64_t delta_has_last : 1 = 0;  // a last value was set since the previous push
  std::unique_ptr<StoreExtra> extra;
};
static_assert(sizeof(StoreSeries) == 48);

void Touch(StoreSeries& s, std::int64_t now_ns) noexcept {
  s.touched_ns = now_ns & ((std::int64_t{1} << 61) - 1);  // a monotonic clock: decades of range
}

struct StoreMetric {
  detail::SeriesTable<StoreSeries> series;
  std::uint64_t overflow = 0;
};

// ---- StatsD carriers ----

// StatsD types as the store holds them: one carrier metric each. `h` and `d` share one; a timer
// has its own, since its values are milliseconds.
enum StatsdType : unsigned {
  kStatsdCounter,
  kStatsdGauge,
  kStatsdSet,
  kStatsdTimer,
  kStatsdHistogram
};
constexpr unsigned kStatsdTypes = 5;
constexpr unsigned kStatsdNoRoom = kStatsdTypes;  // a shard's answer: no room for another name
static_assert(kStatsdNoRoom < detail::StatsdNames::kTypes);
constexpr std::array<std::string_view, kStatsdTypes> kStatsdCarrierNames = {
    "statsd:counter", "statsd:gauge", "statsd:set", "statsd:timer", "statsd:histogram"};

unsigned StatsdTypeOf(StatsdKind kind) noexcept {
  switch (kind) {
    case StatsdKind::kCounter:
      return kStatsdCounter;
    case StatsdKind::kGauge:
      return kStatsdGauge;
    case StatsdKind::kSet:
      return kStatsdSet;
    case StatsdKind::kTimer:
      return kStatsdTimer;
    case StatsdKind::kHistogram:
    case StatsdKind::kDistribution:
      return kStatsdHistogram;
  }
  return kStatsdCounter;
}

// A carrier series key starts with this, then the StatsD name (which has no control characters),
// then its labels.
constexpr char kNameSeparator = '\x1e';

// The StatsD name in a carrier's store key.
std::string_view StatsdNameOf(std::string_view store_key) noexcept {
  const std::size_t end = store_key.find(kLabelSeparator);
  return store_key.substr(1, end == std::string_view::npos ? std::string_view::npos : end - 1);
}

// A shard series key is "<metric id>" and then the store key: the labels part, which starts with
// a separator (or is empty).
std::string_view StoreKey(std::string_view shard_key) noexcept {
  std::size_t digits = 0;
  while (digits < shard_key.size() && shard_key[digits] >= '0' && shard_key[digits] <= '9') {
    ++digits;
  }
  return shard_key.substr(digits);
}

// A shard series key for another metric id, with the same labels.
std::string Rekey(std::string_view shard_key, std::uint32_t id) {
  return std::to_string(id).append(StoreKey(shard_key));
}

}  // namespace

// ---- Engine::Impl ----

class Engine::Impl {
 public:
  EngineOptions options;
  std::vector<CompiledMetric> metrics;  // fixed after Create: shards read it without the lock
  StringMap<Binding> bindings;
  StringMap<std::uint32_t> catalog_metrics;  // name -> id, catalog metrics and span gauges
  // Every metadata key a tag reads and every measurement a metric reads, numbered, so that shards
  // find them in events by string reference (Shard::State::KeyIndex) instead of by text.
  StringMap<std::uint32_t> key_indexes;
  std::vector<std::string> span_prefixes;
  // StatsD series live in one metric per StatsD type (a carrier, StatsdType), ids statsd_first
  // and on, keyed by "<sep0>name" and labels; see StatsdNames.
  std::uint32_t statsd_first = 0;

  mutable std::mutex mutex;  // guards everything below
  std::vector<StoreMetric> store;
  std::uint64_t total_series = 0;
  std::int64_t window_start_ns = 0;
  std::int64_t last_sweep_ns = 0;
  detail::StatsdNames statsd_names;
  // How many times Sweep forgot StatsD names: a shard that saw another number clears its cache
  // of names (Shard::State::statsd_names_).
  std::uint64_t statsd_forget_epoch = 0;
  mutable std::size_t snapshot_key_bytes = 0;  // key text in the last CollectSnapshot
  std::unordered_map<std::string, std::uint64_t> unknown_names;
  std::uint64_t unknown_other = 0;

  [[nodiscard]] bool IsStatsd(std::size_t metric) const noexcept {
    return metric >= statsd_first && metric < statsd_first + kStatsdTypes;
  }
  // The entry of the StatsD name with `hash`, added with `type` when it is new; nullptr when it
  // is new and statsd_max_metrics names are held. May throw std::bad_alloc. Under mutex.
  detail::StatsdNames::Entry* AdmitStatsdName(std::uint64_t hash, unsigned type);
  // The StatsD name's entry for a store key of a carrier, if any. Under mutex.
  detail::StatsdNames::Entry* StatsdName(std::string_view store_key) noexcept {
    return statsd_names.Find(detail::HashKey(StatsdNameOf(store_key)));
  }
  // The entry of the name of a new store series of carrier type `type`: admitted again if it was
  // forgotten since a shard admitted it. nullptr, with the reason, when the name now has another
  // type or no room is left. May throw std::bad_alloc (a new entry). Under mutex.
  detail::StatsdNames::Entry* StatsdSeriesName(std::string_view store_key, unsigned type,
                                               DropReason& why);
  void RollWindows(std::int64_t now);
  void Sweep(std::int64_t now);
  // Moves another engine's series into metric `id`'s table (under both mutexes); returns how
  // many (those this engine already holds are added up). With `statsd_type` (a carrier's type),
  // only the series of names statsd_names holds with that type.
  // Set members left out for want of room (kMaxSetMembers) are added to `set_members_dropped`.
  std::size_t AdoptSeries(StoreMetric& from, std::uint32_t id, std::uint64_t& set_members_dropped,
                          int statsd_type = -1);
};

detail::StatsdNames::Entry* Engine::Impl::AdmitStatsdName(std::uint64_t hash, unsigned type) {
  if (auto* name = statsd_names.Find(hash)) return name;
  if (statsd_names.size() >= options.statsd_max_metrics) return nullptr;
  return statsd_names.Add(hash, type);
}

detail::StatsdNames::Entry* Engine::Impl::StatsdSeriesName(std::string_view store_key,
                                                           unsigned type, DropReason& why) {
  detail::StatsdNames::Entry* name =
      AdmitStatsdName(detail::HashKey(StatsdNameOf(store_key)), type);
  if (name != nullptr && name->type() == type) return name;
  why = name == nullptr ? DropReason::kStatsdMetricOverflow : DropReason::kStatsdTypeConflict;
  return nullptr;
}

// ---- Shard state ----

struct ShardExtra {
  std::uint64_t count = 0;
  double sum = 0;
  std::vector<std::uint64_t> buckets;
  std::unique_ptr<QuantileSketch> sketch;
  std::unique_ptr<SetMembers> members;
};

// What a series recorded since the previous flush. 48 bytes: one per series, so every field
// counts.
struct ShardSeries {
  struct Sums {
    std::int64_t isum;  // counters and sums: integer part, exact
    double fsum;        // the float part
  };
  struct Level {
    double last;         // last value set (has_last)
    double gauge_delta;  // span gauges and StatsD gauge deltas
  };
  std::uint32_t metric = 0;
  std::uint32_t open_refs = 0;  // open spans that will decrement this gauge
  // Counters and sums use `sums`, last values `level` (made the active member when the series is
  // created, see ClearPending), distributions and summaries `extra`.
  union {
    Sums sums{0, 0};
    Level level;
  };
  std::int64_t touched_ns = 0;
  bool dirty = false;
  bool has_last = false;
  // The series one index below has the same labels (the key's part after the metric id). Set when
  // both were looked up with one event's labels; cleared when that series is erased (EraseSeries).
  bool follows = false;
  // Updates were dropped (DiscardPending): the store lacks what this series counted. A span
  // gauge's open spans then leave it alone (AdoptSpans).
  bool lost = false;
  // Where Flush last merged this series in the store (checked against the key before use: the
  // store may have expired and reused the entry).
  std::uint32_t store_index = detail::SeriesTable<ShardSeries>::kNone;
  std::unique_ptr<ShardExtra> extra;

  ShardExtra& Extra() {
    if (!extra) extra = std::make_unique<ShardExtra>();
    return *extra;
  }
};

static_assert(sizeof(ShardSeries) == 48);

// Adds `member` to a StatsD set's members, which count at most kMaxSetMembers; false when it is
// left out for want of room (a member already held is not). Allocates only for a new member. May
// throw std::bad_alloc.
bool AddSetMember(SetMembers& members, std::string_view member) {
  if (members.contains(member)) return true;
  if (members.size() >= kMaxSetMembers) return false;
  members.emplace(member);
  return true;
}

// Clears what a series recorded, and makes the member of its pending union that its metric's
// type uses the active one.
void ClearPending(const CompiledMetric& m, ShardSeries& s) noexcept {
  if (m.info.type == MetricType::kLastValue) {
    s.level = ShardSeries::Level{0, 0};
  } else {
    s.sums = ShardSeries::Sums{0, 0};
  }
  s.has_last = false;
}
constexpr std::uint32_t kNoSeries = detail::SeriesTable<ShardSeries>::kNone;

struct SpanSlot {
  std::uint64_t key = 0;  // 0: empty
  std::int64_t start_monotonic = 0;
  bool has_monotonic = false;
  std::int64_t started_ns = 0;
  std::uint64_t units_per_second = 1;
  std::uint32_t prefix = 0;  // Binding::span_prefix
  std::array<std::uint32_t, 2> gauges{kNoSeries, kNoSeries};
};

class Shard::State {
 public:
  State(Engine::Impl& engine, Shard& owner) : engine_(engine), owner_(owner) {
    std::size_t capacity = 16;
    while (capacity < engine.options.max_open_spans * 2) capacity *= 2;
    spans_.resize(capacity);
    key_.reserve(256);
    std::size_t max_tags = 0;
    for (const auto& m : engine.metrics) max_tags = std::max(max_tags, m.tags.size());
    labels_.resize(max_tags);
    number_text_.resize(max_tags);
  }

  void Record(const wire::FrameInfo& frame, const wire::Event& event) noexcept;
  [[nodiscard]] bool PreviewHelps() const noexcept { return series_.size() >= kPreviewSeries; }
  void Preview(const wire::FrameInfo& frame, const wire::Event& event) noexcept;
  void PreviewDone() noexcept;
  void RecordStatsd(const StatsdInput& sample) noexcept;
  void RecordStatsd(std::span<const StatsdInput> samples) noexcept;
  bool Flush() noexcept;
  void DiscardPending() noexcept;
  void AdoptSpans(State& previous) noexcept;

 private:
  // Flush's part for dirty series `i`: see its definition.
  void MergeSeries(std::uint32_t i, std::int64_t now, std::uint64_t& left_out);
  const Binding* Resolve(const wire::FrameInfo& frame, const wire::Event& event) noexcept;
  void RecordMetric(const Binding& b, std::size_t position, const wire::FrameInfo& frame,
                    const wire::Event& event, const double* paired_duration) noexcept;
  bool BuildLabels(const CompiledMetric& m, const wire::Event& event, DropReason& why) noexcept;
  // The key index of a key of the current frame: that of `item` (a measurement or a metadata
  // field), whose text is read only when its reference is not cached for this frame.
  template <typename Item>
  std::uint32_t KeyIndex(const Item& item) noexcept {
    KeySlot& slot = key_cache_[item.key_ref & (key_cache_.size() - 1)];
    if (slot.frame != cached_sequence_ || slot.ref != item.key_ref) {
      slot = {cached_sequence_, item.key_ref, LookUpKey(KeyText(item))};
    }
    return slot.key;
  }
  static std::string_view KeyText(const wire::Measurement& m) noexcept { return m.key; }
  static std::string_view KeyText(const wire::MetadataField& f) noexcept { return f.key(); }
  // The index of key `text` among the catalogs' keys, or kNoKey.
  std::uint32_t LookUpKey(std::string_view text) const noexcept;
  // The first of an event's metadata fields or measurements whose key has index `key`, or nullptr:
  // Event::FindMetadata and FindMeasurement, comparing cached numbers instead of text.
  template <typename Item>
  const Item* FindByKey(std::span<const Item> items, std::uint32_t key) noexcept {
    for (const Item& item : items) {
      if (KeyIndex(item) == key) return &item;
    }
    return nullptr;
  }
  // The shard series of metric `metric` with the labels BuildLabels found; see Series. After the
  // first metric of a tag group, the next ones are usually the series one index further
  // (`follows`): checked there before the table is probed.
  ShardSeries* LabelsSeries(std::uint32_t metric, std::uint32_t* index = nullptr) noexcept {
    if (ShardSeries* next = FollowingSeries(metric, index)) return next;
    return FindLabelsSeries(metric, index);
  }
  // The series one index after labels_series_ when it is `metric`'s and has the same labels, else
  // nullptr.
  ShardSeries* FollowingSeries(std::uint32_t metric, std::uint32_t* index) noexcept {
    const std::uint32_t previous = labels_series_;
    if (previous != kNoSeries && previous + 1 < series_.end()) {
      ShardSeries& next = series_.value(previous + 1);
      if (next.follows && next.metric == metric) {
        labels_series_ = previous + 1;
        if (index != nullptr) *index = previous + 1;
        return &next;
      }
    }
    return nullptr;
  }
  // LabelsSeries past its first check: a lookup in the table, or a new series.
  ShardSeries* FindLabelsSeries(std::uint32_t metric, std::uint32_t* index) noexcept;
  // Erases series `index` and unlinks the series one index above from it.
  void EraseSeries(std::uint32_t index) noexcept;
  // The shard series for key_, created if new; nullptr (counted) over the limit.
  ShardSeries* Series(std::uint32_t metric, std::uint32_t* index = nullptr) noexcept;
  // Creates the series for key_ with `hash` (not in the table yet).
  ShardSeries* NewSeries(std::uint32_t metric, std::uint64_t hash, std::uint32_t* index) noexcept;
  // The shard table's hash of key "<metric id><labels>": the labels part, hashed once per event,
  // combined with the metric's series_mix. The metrics of one mix share hashes: their series with
  // the same labels are found one after the other from the same probe slot. Both parts are mixed
  // already (KeyHasher::Finish, SeriesMix), so an xor keeps the result spread and puts no
  // multiply between the labels and the probe slot's load.
  [[nodiscard]] std::uint64_t SeriesHash(std::uint32_t metric,
                                         std::uint64_t labels_hash) const noexcept {
    return labels_hash ^ engine_.metrics[metric].series_mix;
  }
  bool Passes(const CompiledMetric& m, const wire::Event& event) const noexcept;
  void Drop(DropReason reason) noexcept { owner_.drops_[static_cast<std::size_t>(reason)].Add(); }
  // Marks series `s` for the flush and counts the update, once it took place: one dropped for
  // want of memory leaves the series as it was, without a store series made for nothing.
  void Recorded(ShardSeries& s) noexcept {
    s.dirty = true;
    s.touched_ns = now_ns_;
    owner_.recorded_.Add();
  }
  // A distribution series' extra with its buckets, made on first use; nullptr, counted as
  // no_memory, when there is no memory for them.
  ShardExtra* Buckets(ShardSeries& s, const CompiledMetric& m) noexcept {
    try {
      ShardExtra& x = s.Extra();
      if (x.buckets.size() != m.info.buckets.size() + 1) {
        x.buckets.assign(m.info.buckets.size() + 1, 0);
      }
      return &x;
    } catch (...) {
      Drop(DropReason::kNoMemory);
      return nullptr;
    }
  }
  // Span table (open addressing, linear probing, backward-shift deletion).
  SpanSlot* FindSpan(std::uint64_t key) noexcept;
  SpanSlot* InsertSpan(std::uint64_t key) noexcept;
  void EraseSpan(SpanSlot* slot) noexcept;
  void CloseSpanGauges(SpanSlot& slot) noexcept;
  std::uint64_t SpanKey(const Binding& b, const wire::Event& event) const noexcept;

  Engine::Impl& engine_;
  Shard& owner_;
  detail::SeriesTable<ShardSeries> series_;
  // Previews pay off from about this many series (bench/README.md): beyond the caches.
  static constexpr std::size_t kPreviewSeries = 1U << 18;
  // The probe hashes of the previewed events' first series, for PreviewDone.
  std::array<std::uint64_t, 64> preview_hashes_{};
  std::size_t previews_ = 0;
  std::string key_;  // scratch: the series key being looked up
  // The label values of the event being recorded (where they lie: in the frame, the catalog, or
  // number_text_), the length and hash of the key's labels part "<sep>v1<sep>v2...", and the tag
  // group (Binding::tag_groups) they were built for; a failure is kept to be counted per metric.
  static constexpr std::uint32_t kNoGroup = ~0U;
  std::vector<std::string_view> labels_;  // one per tag of the metric with the most tags
  std::vector<std::array<char, 32>> number_text_;
  std::size_t label_count_ = 0;
  std::size_t labels_length_ = 0;
  std::uint64_t labels_hash_ = 0;
  std::uint32_t labels_group_ = kNoGroup;
  std::uint32_t labels_series_ = kNoSeries;  // the last series LabelsSeries gave for these labels
  // The series a tag group's labels found earlier in the frame. A node's reporter sends its events
  // with its own node_id, so the events of a frame mostly repeat their label values; a repeat
  // takes its series from here, without making the labels or probing the table. A value is told
  // apart by a ValueId: the place and length of a string (a frame's strings lie in the frame, the
  // static ones in the static table), or a scalar's kind and bits; equal ids in one frame, equal
  // label texts. Direct-mapped by the group's first metric. A memo is valid while its stamp is
  // memo_stamp_, which changes with every frame and every erased series (indexes are reused).
  // Where a frame's values do not repeat (a relay's mix of many senders), a group that misses
  // skips its memo for its next 1, 3, 7, then 15 events, until it hits again, so that the
  // events that gain nothing pay little for it.
  static constexpr std::size_t kMemoTags = 4;  // groups of more tags are not kept
  static constexpr int kMemoMaxSkip = 15;
  struct ValueId {
    std::uint64_t where = 0;
    std::uint64_t bits = 0;
    bool operator==(const ValueId&) const = default;
  };
  struct LabelsMemo {
    std::uint64_t stamp = 0;
    std::uint32_t group = 0;
    std::uint32_t metric = 0;  // the metric whose series `series` is
    std::uint32_t series = kNoSeries;
    std::uint8_t backoff = 0;              // events to skip after the next miss
    std::array<ValueId, kMemoTags> ids{};  // the values of the group's tags
  };
  // The id of a tag's field (nullptr: absent); false for a value that has none.
  static bool IdOf(const wire::MetadataField* field, ValueId& id) noexcept {
    if (field == nullptr) {
      id = {1, 0};
      return true;
    }
    const wire::Value& v = field->value;
    if (v.kind == wire::ValueKind::kString || v.kind == wire::ValueKind::kAtom) {
      id = {reinterpret_cast<std::uintptr_t>(v.text.data()), v.text.size()};
      return id.where > 16;  // places lie far above the scalars' kinds
    }
    switch (v.kind) {
      case wire::ValueKind::kInt:
        id = {2, static_cast<std::uint64_t>(v.int_value)};
        return true;
      case wire::ValueKind::kFloat:
        id = {3, std::bit_cast<std::uint64_t>(v.float_value)};
        return true;
      case wire::ValueKind::kBool:
        id = {4, v.bool_value ? 1U : 0U};
        return true;
      case wire::ValueKind::kNil:
        id = {5, 0};
        return true;
      default:
        return false;  // no label: BuildLabels drops it
    }
  }
  // BuildLabels for the tag group whose first metric is `group`, through its memo: labels_series_
  // and memo_ set for MemoSeries when the memo holds these values (labels_ then not made); else
  // BuildLabels, with memo_ set to keep the series found when the values have ids (its stamp
  // stale until then).
  bool MemoLabels(const CompiledMetric& m, const wire::Event& event, std::uint32_t group,
                  LabelsMemo& memo, DropReason& why) noexcept;
  // LabelsSeries for the group MemoLabels looked up: the memo's series when it held the values
  // (its stamp is current), else the one found, which it then keeps.
  ShardSeries* MemoSeries(const CompiledMetric& m, const wire::Event& event) noexcept;
  // The place of the group whose first metric is `group` in memos_ and memo_skips_.
  static std::size_t MemoPlace(std::uint32_t group) noexcept { return group & (kMemoPlaces - 1); }
  static constexpr std::size_t kMemoPlaces = 64;
  std::array<LabelsMemo, kMemoPlaces> memos_{};
  // Per memo place: how many of its groups' events still skip it (one cache line for all).
  std::array<std::uint8_t, kMemoPlaces> memo_skips_{};
  std::uint64_t memo_stamp_ = 1;
  LabelsMemo* memo_ = nullptr;  // the current group's, when MemoSeries has a part
  bool labels_ok_ = false;
  DropReason labels_drop_ = DropReason::kMissingTag;
  // The sequence of the frame being recorded (FrameInfo::sequence), which the caches below and
  // the memo's stamp follow.
  std::uint64_t cached_sequence_ = ~0ULL;
  // Per-frame cache of key reference -> Engine::Impl::key_indexes (kNoKey: no metric reads it).
  // Entries of other frames are stale: frame sequences are unique per thread.
  static constexpr std::uint32_t kNoKey = ~0U;
  struct KeySlot {
    std::uint64_t frame = ~0ULL;
    std::uint32_t ref = 0;
    std::uint32_t key = kNoKey;
  };
  std::array<KeySlot, 128> key_cache_{};  // the static strings and 64 frame strings apart
  // Per-frame cache of name reference -> binding; entries of other frames are stale, as above.
  struct BindingSlot {
    std::uint64_t frame = ~0ULL;
    std::uint32_t ref = 0;
    const Binding* binding = nullptr;
  };
  std::array<BindingSlot, 64> name_cache_{};
  std::int64_t now_ns_ = 0;
  std::vector<SpanSlot> spans_;
  std::size_t open_spans_ = 0;
  // StatsD names this shard admitted or was refused, by StatsdNames::Key: the engine's answer
  // for a name only changes when the name is forgotten, so a shard asks (under the engine's lock)
  // only for names it has not kept here, and forgets its answers when the engine forgot names
  // (statsd_forget_epoch). Direct-mapped, key 0 empty.
  struct NameSlot {
    std::uint64_t key = 0;
    unsigned type = 0;  // the name's type, or kStatsdNoRoom (Engine::Impl::AdmitStatsdName)
  };
  static constexpr std::size_t kNameCacheSlots = 4096;
  std::vector<NameSlot> statsd_names_ = std::vector<NameSlot>(kNameCacheSlots);
  std::uint64_t statsd_forget_epoch_ = 0;
  // Whether the StatsD name may be recorded with `type`, else why not.
  bool AdmitStatsdName(std::string_view name, unsigned type, DropReason& why) noexcept;
  // What statsd_mappings make of a StatsD name, for the last names seen (direct-mapped).
  struct MappedName {
    std::uint64_t hash = 0;
    std::string raw;
    std::string name;
    std::vector<std::pair<std::string, std::string>> labels;
  };
  static constexpr std::size_t kMappedSlots = 1024;
  std::vector<MappedName> mapped_cache_;
  // The mapping of `raw` (valid until the next call), or nullptr when out of memory.
  const MappedName* Map(std::string_view raw) noexcept;
  // The shard table's hash of key_ for `metric` (see SeriesHash).
  [[nodiscard]] std::uint64_t KeyHash(std::uint32_t metric) const noexcept {
    return SeriesHash(metric, detail::HashKey(StoreKey(key_)));
  }
  // KeyHash of the key RecordSample builds for a StatsD name without tags or mappings (the
  // carrier's id, kNameSeparator, the name), without building it.
  [[nodiscard]] std::uint64_t PlainStatsdHash(std::uint32_t metric,
                                              std::string_view name) const noexcept {
    detail::KeyHasher hasher;
    hasher.Add(kNameSeparator, name);
    return SeriesHash(metric, hasher.Finish());
  }
  StringMap<std::uint64_t> unknown_;
  std::uint64_t unknown_other_ = 0;
  std::array<StatsdTagView, 80> tag_scratch_{};

  // StatsD fast path: a four-way set-associative cache from the hash of a sample's identity as
  // sent (kind, name, and the tag text as sent or else the tags in wire order) to its series, so
  // that a repeated sample skips the mapping, the tag sort and the key build. Cleared whenever a
  // shard series is erased (indexes are reused). A hit needs the hash and the identity's length
  // to match. A set is one cache line: one miss at most per lookup.
  // Made only by Identify. No default values: RecordStatsd keeps a run's identities in an array
  // on the stack that would otherwise be cleared at every call, for every datagram.
  struct SampleIdentity {
    std::uint64_t hash;  // never 0, which marks an empty slot
    std::uint32_t length;
  };
  struct SampleSlot {
    std::uint64_t hash = 0;
    std::uint32_t length = 0;
    std::uint32_t series = kNoSeries;
    [[nodiscard]] bool Holds(const SampleIdentity& identity) const noexcept {
      return hash == identity.hash && length == identity.length;
    }
  };
  struct alignas(64) SampleSet {
    std::array<SampleSlot, 4> ways;
  };
  static_assert(sizeof(SampleSet) == 64);
  static constexpr std::size_t kSampleSets = 2048;  // 8,192 samples, 128 KiB
  std::vector<SampleSet> sample_cache_ = std::vector<SampleSet>(kSampleSets);
  static SampleIdentity Identify(const StatsdInput& sample) noexcept;
  SampleSet& SetOf(const SampleIdentity& identity) noexcept {
    return sample_cache_[identity.hash & (kSampleSets - 1)];
  }
  const SampleSet& SetOf(const SampleIdentity& identity) const noexcept {
    return sample_cache_[identity.hash & (kSampleSets - 1)];
  }
  // The series sample_cache_ holds for `identity`, or kNoSeries.
  std::uint32_t CachedSample(const SampleIdentity& identity) const noexcept;
  // Records a sample with its identity, and its series when the cache already told (else
  // kNoSeries). now_ns_ is the caller's to set.
  void RecordSample(const StatsdInput& sample, const SampleIdentity& identity,
                    std::uint32_t cached) noexcept;
  static constexpr std::size_t kStatsdRun = 32;  // samples per run of RecordStatsd(span)
  void Apply(ShardSeries* s, const CompiledMetric& m, const StatsdInput& sample) noexcept;
};

const Binding* Shard::State::Resolve(const wire::FrameInfo& frame,
                                     const wire::Event& event) noexcept {
  if (frame.sequence != cached_sequence_) {
    cached_sequence_ = frame.sequence;
    ++memo_stamp_;
    now_ns_ = NowNs();
  }
  BindingSlot& slot = name_cache_[event.name_ref & (name_cache_.size() - 1)];
  if (slot.frame == cached_sequence_ && slot.ref == event.name_ref) return slot.binding;
  const auto it = engine_.bindings.find(event.name);
  const Binding* binding = it == engine_.bindings.end() ? nullptr : &it->second;
  slot = {cached_sequence_, event.name_ref, binding};
  return binding;
}

bool Shard::State::Passes(const CompiledMetric& m, const wire::Event& event) const noexcept {
  auto holds = [&](const CompiledFilter& f) {
    if (!f.metadata.empty()) {
      const auto* field = event.FindMetadata(f.metadata);
      std::string_view text;
      char buf[32];
      if (field != nullptr) {
        const wire::Value& v = field->value;
        if (v.kind == wire::ValueKind::kString || v.kind == wire::ValueKind::kAtom) {
          text = v.text;
        } else if (v.kind == wire::ValueKind::kInt) {
          const auto r = std::to_chars(buf, buf + sizeof buf, v.int_value);
          text = std::string_view(buf, static_cast<std::size_t>(r.ptr - buf));
        } else if (v.kind == wire::ValueKind::kBool) {
          text = v.bool_value ? "true" : "false";
        }
      }
      const bool in =
          field != nullptr && std::find(f.values.begin(), f.values.end(), text) != f.values.end();
      return f.op == FilterSpec::Op::kNotIn ? !in : in;
    }
    const auto* meas = event.FindMeasurement(f.measurement);
    if (meas == nullptr) return false;
    const double v = meas->value.AsDouble();
    switch (f.op) {
      case FilterSpec::Op::kGt:
        return v > f.threshold;
      case FilterSpec::Op::kGe:
        return v >= f.threshold;
      case FilterSpec::Op::kLt:
        return v < f.threshold;
      case FilterSpec::Op::kLe:
        return v <= f.threshold;
      case FilterSpec::Op::kEq:
        return v == f.threshold;
      case FilterSpec::Op::kNe:
        return v != f.threshold;
      default:
        return false;
    }
  };
  for (const auto& f : m.keep) {
    if (!holds(f)) return false;
  }
  for (const auto& f : m.drop) {
    if (holds(f)) return false;
  }
  return true;
}

std::uint32_t Shard::State::LookUpKey(std::string_view text) const noexcept {
  const auto it = engine_.key_indexes.find(text);
  return it == engine_.key_indexes.end() ? kNoKey : it->second;
}

// Finds the label values of `m`'s tags in `event` (labels_) and hashes "<sep>value<sep>value...".
// False, with the reason, when a tag is missing without a default or holds a value that cannot be
// a label.
bool Shard::State::BuildLabels(const CompiledMetric& m, const wire::Event& event,
                               DropReason& why) noexcept {
  detail::KeyHasher hasher;
  label_count_ = 0;
  labels_length_ = 0;
  labels_series_ = kNoSeries;
  for (const auto& tag : m.tags) {
    const auto* field = FindByKey(event.metadata, m.tag_keys[label_count_]);
    std::string_view text;
    auto& buf = number_text_[label_count_];
    if (field == nullptr || field->value.kind == wire::ValueKind::kNil) {
      if (!tag.has_default) {
        if (field == nullptr) {
          why = DropReason::kMissingTag;
          return false;
        }
        text = "nil";
      } else {
        text = tag.default_value;
      }
    } else {
      const wire::Value& v = field->value;
      switch (v.kind) {
        case wire::ValueKind::kString:
        case wire::ValueKind::kAtom:
          text = v.text;
          break;
        case wire::ValueKind::kInt: {
          const auto n = std::to_chars(buf.data(), buf.data() + buf.size(), v.int_value);
          text = std::string_view(buf.data(), static_cast<std::size_t>(n.ptr - buf.data()));
          break;
        }
        case wire::ValueKind::kFloat: {
          const auto n = std::to_chars(buf.data(), buf.data() + buf.size(), v.float_value);
          text = std::string_view(buf.data(), static_cast<std::size_t>(n.ptr - buf.data()));
          break;
        }
        case wire::ValueKind::kBool:
          text = v.bool_value ? "true" : "false";
          break;
        default:
          why = DropReason::kBadTagValue;
          return false;
      }
    }
    if (!tag.values.empty()) {
      const auto it = std::lower_bound(
          tag.values.begin(), tag.values.end(), text,
          [](const auto& pair, std::string_view t) { return std::string_view(pair.first) < t; });
      if (it != tag.values.end() && it->first == text) text = it->second;
    }
    hasher.Add(kLabelSeparator, text);
    labels_[label_count_++] = text;
    labels_length_ += 1 + text.size();
  }
  labels_hash_ = hasher.Finish();
  return true;
}

bool Shard::State::MemoLabels(const CompiledMetric& m, const wire::Event& event,
                              std::uint32_t group, LabelsMemo& memo, DropReason& why) noexcept {
  memo_ = nullptr;
  const std::size_t tags = m.tags.size();
  if (tags > kMemoTags) return BuildLabels(m, event, why);
  const bool current = memo.stamp == memo_stamp_ && memo.group == group;
  bool same = current;
  bool memorable = true;
  for (std::size_t t = 0; t < tags; ++t) {
    ValueId id;
    memorable = IdOf(FindByKey(event.metadata, m.tag_keys[t]), id) && memorable;
    same = same && memo.ids[t] == id;
    memo.ids[t] = id;
  }
  if (same && memorable) {
    memo.backoff = 0;
    memo_ = &memo;
    labels_series_ = kNoSeries;
    return true;
  }
  if (current) {  // the values could have repeated and did not
    memo.backoff = static_cast<std::uint8_t>(std::min(memo.backoff * 2 + 1, kMemoMaxSkip));
    memo_skips_[MemoPlace(group)] = memo.backoff;
  }
  memo.stamp = 0;  // until it has its series
  memo.group = group;
  if (memorable) memo_ = &memo;
  return BuildLabels(m, event, why);
}

ShardSeries* Shard::State::MemoSeries(const CompiledMetric& m, const wire::Event& event) noexcept {
  LabelsMemo& memo = *memo_;
  if (memo.stamp != memo_stamp_) {  // a miss: the series found is kept
    ShardSeries* s = LabelsSeries(m.info.id);
    if (s != nullptr) {
      memo.metric = m.info.id;
      memo.series = labels_series_;
      memo.stamp = memo_stamp_;
      memo_ = nullptr;
    }
    return s;
  }
  if (memo.metric == m.info.id) {
    labels_series_ = memo.series;
    return &series_.value(memo.series);
  }
  if (ShardSeries* next = FollowingSeries(m.info.id, nullptr)) return next;
  // Another metric of the group, not beside the memo's series: its labels after all. (They were
  // made once for these values in this frame, so they cannot fail; if they did, the group's
  // metrics would be dropped as they would have been without the memo.)
  memo_ = nullptr;
  const std::uint32_t previous = labels_series_;
  if (!BuildLabels(m, event, labels_drop_)) {
    labels_ok_ = false;
    Drop(labels_drop_);
    return nullptr;
  }
  labels_series_ = previous;
  return LabelsSeries(m.info.id);
}

// Looks the labels up where they lie: no key is put together unless the series is new. A stored
// key of the metric is its id, then the labels part.
ShardSeries* Shard::State::FindLabelsSeries(std::uint32_t metric, std::uint32_t* index) noexcept {
  const std::uint32_t previous = labels_series_;
  // `i` has these labels: it is the last series given for them, and follows the one before if
  // that is `previous` (also when the two were created apart).
  auto take = [&](std::uint32_t i) {
    ShardSeries& s = series_.value(i);
    if (previous != kNoSeries && i == previous + 1) s.follows = true;
    labels_series_ = i;
    if (index != nullptr) *index = i;
    return &s;
  };
  const std::size_t id_length = engine_.metrics[metric].id_digits;
  const std::uint64_t hash = SeriesHash(metric, labels_hash_);
  const std::uint32_t i = series_.FindIf(hash, [&](std::uint32_t candidate) {
    std::string_view key = series_.key(candidate);
    if (series_.value(candidate).metric != metric || key.size() != id_length + labels_length_) {
      return false;
    }
    key.remove_prefix(id_length);
    for (std::size_t t = 0; t < label_count_; ++t) {
      const std::string_view text = labels_[t];
      if (key[0] != kLabelSeparator ||
          !detail::SameBytes(key.data() + 1, text.data(), text.size())) {
        return false;
      }
      key.remove_prefix(1 + text.size());
    }
    return true;
  });
  if (i != series_.kNone) return take(i);
  try {
    char id[16];
    key_.assign(id, static_cast<std::size_t>(std::to_chars(id, id + sizeof id, metric).ptr - id));
    for (std::size_t t = 0; t < label_count_; ++t) {
      key_.push_back(kLabelSeparator);
      key_.append(labels_[t]);
    }
  } catch (...) {  // no memory for the key
    Drop(DropReason::kNoMemory);
    return nullptr;
  }
  std::uint32_t created = kNoSeries;
  if (NewSeries(metric, hash, &created) == nullptr) return nullptr;
  return take(created);
}

void Shard::State::EraseSeries(std::uint32_t index) noexcept {
  series_.Erase(index);
  ++memo_stamp_;
  if (index + 1 < series_.end()) series_.value(index + 1).follows = false;
}

ShardSeries* Shard::State::Series(std::uint32_t metric, std::uint32_t* index) noexcept {
  const std::uint64_t hash = KeyHash(metric);
  const std::uint32_t i = series_.Find(key_, hash);
  if (i == series_.kNone) return NewSeries(metric, hash, index);
  if (index != nullptr) *index = i;
  return &series_.value(i);
}

ShardSeries* Shard::State::NewSeries(std::uint32_t metric, std::uint64_t hash,
                                     std::uint32_t* index) noexcept {
  if (series_.size() >= engine_.options.max_series_total) {
    Drop(DropReason::kSeriesOverflow);
    return nullptr;
  }
  std::uint32_t i = 0;
  try {
    i = series_.Insert(key_, hash);
  } catch (...) {
    Drop(DropReason::kNoMemory);
    return nullptr;
  }
  series_.value(i).metric = metric;
  ClearPending(engine_.metrics[metric], series_.value(i));
  if (index != nullptr) *index = i;
  return &series_.value(i);
}

void Shard::State::RecordMetric(const Binding& b, std::size_t position,
                                const wire::FrameInfo& frame, const wire::Event& event,
                                const double* paired_duration) noexcept {
  const CompiledMetric& m = engine_.metrics[b.metrics[position]];
  const std::uint32_t tag_group = b.tag_groups[position];
  if (!m.keep.empty() || !m.drop.empty()) {
    if (!Passes(m, event)) {
      owner_.filtered_.Add();
      return;
    }
  }
  double value = 1;
  std::int64_t int_value = 1;
  bool is_int = true;
  if (m.info.type != MetricType::kCounter) {
    const auto* meas = FindByKey(event.measurements, m.measurement_key);
    const bool zero = meas == nullptr || (meas->value.is_float ? meas->value.float_value == 0
                                                               : meas->value.int_value == 0);
    if (m.pair_duration && zero && paired_duration != nullptr) {
      value = *paired_duration;
      is_int = false;
    } else if (meas == nullptr) {
      Drop(m.pair_duration ? DropReason::kSpanUnmatched : DropReason::kMissingMeasurement);
      return;
    } else {
      is_int = !meas->value.is_float;
      int_value = meas->value.int_value;
      value = meas->value.AsDouble();
    }
    if (!std::isfinite(value)) {
      Drop(DropReason::kNonFinite);
      return;
    }
    if (m.unit_from != m.unit_to) {
      value = ConvertUnit(value, m.unit_from, m.unit_to, frame.units_per_second);
      is_int = false;
    }
  }
  if (labels_group_ != tag_group) {
    labels_group_ = tag_group;
    const std::uint32_t group = b.metrics[tag_group];
    std::uint8_t& skip = memo_skips_[MemoPlace(group)];
    if (skip == 0) {
      labels_ok_ = MemoLabels(m, event, group, memos_[MemoPlace(group)], labels_drop_);
    } else {
      --skip;
      memo_ = nullptr;
      labels_ok_ = BuildLabels(m, event, labels_drop_);
    }
  }
  if (!labels_ok_) {
    Drop(labels_drop_);
    return;
  }
  ShardSeries* s = memo_ == nullptr ? LabelsSeries(m.info.id) : MemoSeries(m, event);
  if (s == nullptr) return;
  switch (m.info.type) {
    case MetricType::kCounter:
      ++s->sums.isum;
      break;
    case MetricType::kSum:
      if (is_int) {
        s->sums.isum += int_value;
      } else {
        s->sums.fsum += value;
      }
      break;
    case MetricType::kLastValue:
      s->has_last = true;
      s->level.last = value;
      s->level.gauge_delta = 0;
      break;
    case MetricType::kDistribution: {
      ShardExtra* x = Buckets(*s, m);
      if (x == nullptr) return;
      const auto bucket = static_cast<std::size_t>(
          std::lower_bound(m.info.buckets.begin(), m.info.buckets.end(), value) -
          m.info.buckets.begin());
      ++x->buckets[bucket];
      ++x->count;
      x->sum += value;
      break;
    }
    case MetricType::kSummary: {
      try {
        ShardExtra& x = s->Extra();
        if (!x.sketch) {
          x.sketch = std::make_unique<QuantileSketch>(engine_.options.summary_accuracy);
        }
        x.sketch->Add(value);  // unchanged when it throws
        ++x.count;
        x.sum += value;
      } catch (...) {  // no memory for the sketch or its wider range
        Drop(DropReason::kNoMemory);
        return;
      }
      break;
    }
  }
  Recorded(*s);
}

std::uint64_t Shard::State::SpanKey(const Binding& b, const wire::Event& event) const noexcept {
  const auto* ctx = event.FindMetadata("telemetry_span_context");
  if (ctx == nullptr) return 0;
  std::uint64_t h = Fnv1a(engine_.span_prefixes[b.span_prefix]);
  const wire::Value& v = ctx->value;
  switch (v.kind) {
    case wire::ValueKind::kString:
    case wire::ValueKind::kAtom:
    case wire::ValueKind::kBytes:
      h = Fnv1a(v.text, h ^ static_cast<std::uint64_t>(v.kind));
      break;
    case wire::ValueKind::kInt:
      h = Fnv1a(std::string_view(reinterpret_cast<const char*>(&v.int_value), sizeof v.int_value),
                h);
      break;
    default:
      if (!v.body.empty()) {
        h = Fnv1a(std::string_view(reinterpret_cast<const char*>(v.body.data()), v.body.size()), h);
      }
      break;
  }
  return h == 0 ? 1 : h;
}

SpanSlot* Shard::State::FindSpan(std::uint64_t key) noexcept {
  const std::size_t mask = spans_.size() - 1;
  for (std::size_t i = key & mask;; i = (i + 1) & mask) {
    if (spans_[i].key == key) return &spans_[i];
    if (spans_[i].key == 0) return nullptr;
  }
}

SpanSlot* Shard::State::InsertSpan(std::uint64_t key) noexcept {
  if (SpanSlot* existing = FindSpan(key)) return existing;
  if (open_spans_ >= engine_.options.max_open_spans) return nullptr;
  const std::size_t mask = spans_.size() - 1;
  std::size_t i = key & mask;
  while (spans_[i].key != 0) i = (i + 1) & mask;
  spans_[i] = SpanSlot{};
  spans_[i].key = key;
  ++open_spans_;
  owner_.open_spans_.Set(open_spans_);
  return &spans_[i];
}

void Shard::State::EraseSpan(SpanSlot* slot) noexcept {
  const std::size_t mask = spans_.size() - 1;
  detail::EraseFromProbeRun(
      std::span<SpanSlot>(spans_), static_cast<std::size_t>(slot - spans_.data()),
      [](const SpanSlot& s) { return s.key == 0; },
      [mask](const SpanSlot& s) { return static_cast<std::size_t>(s.key & mask); });
  --open_spans_;
  owner_.open_spans_.Set(open_spans_);
}

void Shard::State::CloseSpanGauges(SpanSlot& slot) noexcept {
  for (const std::uint32_t index : slot.gauges) {
    if (index == kNoSeries) continue;
    ShardSeries& g = series_.value(index);
    g.level.gauge_delta -= 1;
    g.dirty = true;
    g.touched_ns = now_ns_;
    if (g.open_refs > 0) --g.open_refs;
  }
}

void Shard::State::Preview(const wire::FrameInfo& frame, const wire::Event& event) noexcept {
  if (previews_ == preview_hashes_.size()) return;
  const Binding* b = Resolve(frame, event);
  if (b == nullptr || b->metrics.empty()) return;
  const CompiledMetric& m = engine_.metrics[b->metrics[0]];
  DropReason unused{};
  if (!BuildLabels(m, event, unused)) return;
  const std::uint64_t hash = SeriesHash(m.info.id, labels_hash_);
  series_.PrefetchSlot(hash);
  preview_hashes_[previews_++] = hash;
}

void Shard::State::PreviewDone() noexcept {
  for (std::size_t i = 0; i < previews_; ++i) series_.PrefetchEntry(preview_hashes_[i]);
  previews_ = 0;
}

void Shard::State::Record(const wire::FrameInfo& frame, const wire::Event& event) noexcept {
  const Binding* b = Resolve(frame, event);
  if (b == nullptr) {
    Drop(DropReason::kUnknownEvent);
    if (engine_.options.unknown_events == UnknownEventPolicy::kCountByName) {
      if (auto it = unknown_.find(event.name); it != unknown_.end()) {
        ++it->second;
      } else if (unknown_.size() < engine_.options.unknown_event_names_max) {
        try {
          unknown_.emplace(std::string(event.name), 1);
        } catch (...) {
          ++unknown_other_;
        }
      } else {
        ++unknown_other_;
      }
    }
    return;
  }
  double paired = 0;
  const double* paired_ptr = nullptr;
  if (b->span != SpanRole::kNone) {
    const std::uint64_t key = SpanKey(*b, event);
    const auto* mono = event.FindMeasurement("monotonic_time");
    if (b->span == SpanRole::kStart && key != 0) {
      SpanSlot* slot = InsertSpan(key);
      if (slot == nullptr) {
        Drop(DropReason::kSpanTableFull);
      } else {
        slot->has_monotonic = mono != nullptr && !mono->value.is_float;
        slot->start_monotonic = slot->has_monotonic ? mono->value.int_value : 0;
        slot->started_ns = now_ns_;  // set per frame by Resolve
        slot->units_per_second = frame.units_per_second;
        slot->prefix = b->span_prefix;
        std::size_t n = 0;
        for (const std::uint32_t gauge : b->span_gauges) {
          const CompiledMetric& gm = engine_.metrics[gauge];
          if (n >= slot->gauges.size()) continue;
          DropReason why{};
          if (!BuildLabels(gm, event, why)) {
            Drop(why);
            continue;
          }
          std::uint32_t index = kNoSeries;
          ShardSeries* s = LabelsSeries(gm.info.id, &index);
          if (s == nullptr) continue;
          s->level.gauge_delta += 1;
          s->dirty = true;
          s->touched_ns = now_ns_;
          ++s->open_refs;
          slot->gauges[n++] = index;
        }
      }
    } else if (b->span != SpanRole::kStart && key != 0) {
      if (SpanSlot* slot = FindSpan(key)) {
        // Duration in the sender's native units, as a :telemetry span's `duration` would be.
        if (slot->has_monotonic && mono != nullptr && !mono->value.is_float) {
          paired = static_cast<double>(mono->value.int_value - slot->start_monotonic);
        } else {
          const double seconds = static_cast<double>(NowNs() - slot->started_ns) / 1e9;
          paired = seconds * static_cast<double>(slot->units_per_second);
        }
        paired_ptr = &paired;
        CloseSpanGauges(*slot);
        EraseSpan(slot);
      }
    }
  }
  labels_group_ = kNoGroup;
  for (std::size_t i = 0; i < b->metrics.size(); ++i) {
    RecordMetric(*b, i, frame, event, paired_ptr);
  }
}

}  // namespace telemetryd::aggregate

namespace telemetryd::aggregate {
namespace {

// statsd_exporter-style glob: '*' matches one whole dot-free segment part.
bool GlobMatch(std::string_view pattern, std::string_view name,
               std::vector<std::string_view>& captures) {
  std::size_t p = 0;
  std::size_t n = 0;
  while (p < pattern.size()) {
    if (pattern[p] == '*') {
      const std::size_t end = name.find('.', n);
      const std::size_t stop = end == std::string_view::npos ? name.size() : end;
      // The star takes the rest of this segment up to the next literal in the pattern.
      std::size_t take = stop;
      if (p + 1 < pattern.size() && pattern[p + 1] != '.') {
        const std::size_t lit = name.find(pattern[p + 1], n);
        if (lit == std::string_view::npos || lit > stop) return false;
        take = lit;
      }
      if (take == n) return false;
      captures.push_back(name.substr(n, take - n));
      n = take;
      ++p;
    } else {
      if (n >= name.size() || name[n] != pattern[p]) return false;
      ++n;
      ++p;
    }
  }
  return n == name.size();
}

std::string Expand(std::string_view templ, const std::vector<std::string_view>& captures) {
  std::string out;
  for (std::size_t i = 0; i < templ.size(); ++i) {
    if (templ[i] == '$' && i + 1 < templ.size() && templ[i + 1] >= '1' && templ[i + 1] <= '9') {
      const auto index = static_cast<std::size_t>(templ[i + 1] - '1');
      if (index < captures.size()) out += captures[index];
      ++i;
    } else {
      out.push_back(templ[i]);
    }
  }
  return out;
}

// A fast 64-bit hash over the pieces of a StatsD sample's identity, 8 bytes a step: each step
// multiplies into 128 bits and folds the halves together. Each piece's length goes into its last
// step, so ("ab", "c") and ("a", "bc") hash apart. Not detail::KeyHasher: series keys need a hash
// that ignores where pieces split, which costs this path a third of its time.
class IdentityHash {
 public:
  explicit IdentityHash(std::uint64_t seed) noexcept : a_(seed ^ kSeedA), b_(kSeedB) {}
  // Returns the piece's length. Two lanes take 16 bytes a step, each through its own multiply,
  // so that a piece's chain of multiplications is half as long.
  [[gnu::always_inline]] std::size_t Add(std::string_view piece) noexcept {
    const char* p = piece.data();
    std::size_t n = piece.size();
    for (; n > 16; p += 16, n -= 16) {
      a_ = Mix(a_ ^ Load<std::uint64_t>(p));
      b_ = Mix(b_ ^ Load<std::uint64_t>(p + 8));
    }
    // The last 1 to 16 bytes: two words that may overlap, or what a shorter tail holds.
    std::uint64_t x = 0;
    std::uint64_t y = 0;
    if (n >= 8) {
      x = Load<std::uint64_t>(p);
      y = Load<std::uint64_t>(p + n - 8);
    } else if (n >= 4) {
      x = (std::uint64_t{Load<std::uint32_t>(p)} << 32) | Load<std::uint32_t>(p + n - 4);
    } else if (n > 0) {
      x = (std::uint64_t{Byte(p[0])} << 16) | (std::uint64_t{Byte(p[n / 2])} << 8) | Byte(p[n - 1]);
    }
    a_ = Mix(a_ ^ x ^ piece.size());
    b_ = Mix(b_ ^ y);
    return piece.size();
  }
  [[nodiscard]] std::uint64_t Get() const noexcept { return a_ ^ b_; }

 private:
  static constexpr std::uint64_t kSeedA = 0x243f6a8885a308d3ULL;
  static constexpr std::uint64_t kSeedB = 0x13198a2e03707344ULL;
  static constexpr std::uint64_t kMultiplier = 0x9e3779b97f4a7c15ULL;
  static std::uint64_t Byte(char c) noexcept { return static_cast<unsigned char>(c); }
  __extension__ using Wide = unsigned __int128;
  static std::uint64_t Mix(std::uint64_t word) noexcept {
    const Wide product = static_cast<Wide>(word) * kMultiplier;
    return static_cast<std::uint64_t>(product) ^ static_cast<std::uint64_t>(product >> 64);
  }
  std::uint64_t a_;
  std::uint64_t b_;
};

}  // namespace

void Shard::State::RecordStatsd(const StatsdInput& sample) noexcept {
  if (!engine_.options.statsd_enabled) return;
  now_ns_ = CoarseNowNs();
  RecordSample(sample, Identify(sample), kNoSeries);
}

// Three passes over each run of samples, so that their cache misses overlap with one another's
// work instead of following one after another: the identities (each starting to load its cache
// set), the cached series (each starting to load its entry), then the records.
void Shard::State::RecordStatsd(std::span<const StatsdInput> samples) noexcept {
  if (!engine_.options.statsd_enabled) return;
  now_ns_ = CoarseNowNs();
  std::array<SampleIdentity, kStatsdRun> identities;
  std::array<std::uint32_t, kStatsdRun> cached;
  std::array<std::uint64_t, kStatsdRun> miss_hashes;
  const bool plain = engine_.options.statsd_mappings.empty();
  while (!samples.empty()) {
    const std::size_t n = std::min(samples.size(), kStatsdRun);
    for (std::size_t i = 0; i < n; ++i) {
      identities[i] = Identify(samples[i]);
      __builtin_prefetch(&SetOf(identities[i]));
    }
    // Samples the cache does not know look their series up in the table: for a plain name (no
    // tags, no mappings) its probe slot, entry and key are loaded for the whole run first, so that
    // a run of names beyond the caches waits for memory about once, not three times per sample.
    std::size_t plain_misses = 0;
    for (std::size_t i = 0; i < n; ++i) {
      cached[i] = CachedSample(identities[i]);
      if (cached[i] != kNoSeries) {
        series_.PrefetchValue(cached[i]);
      } else if (plain && samples[i].tags.empty() && samples[i].tag_text.empty()) {
        const std::uint64_t hash =
            PlainStatsdHash(engine_.statsd_first + StatsdTypeOf(samples[i].kind), samples[i].name);
        series_.PrefetchSlot(hash);
        miss_hashes[plain_misses++] = hash;
      }
    }
    for (std::size_t i = 0; i < plain_misses; ++i) series_.PrefetchEntry(miss_hashes[i]);
    for (std::size_t i = 0; i < plain_misses; ++i) series_.PrefetchKey(miss_hashes[i]);
    for (std::size_t i = 0; i < n; ++i) RecordSample(samples[i], identities[i], cached[i]);
    samples = samples.subspan(n);
  }
}

std::uint32_t Shard::State::CachedSample(const SampleIdentity& identity) const noexcept {
  for (const SampleSlot& way : SetOf(identity).ways) {
    if (way.Holds(identity)) return way.series;
  }
  return kNoSeries;
}

void Shard::State::RecordSample(const StatsdInput& sample, const SampleIdentity& identity,
                                std::uint32_t cached) noexcept {
  if (!std::isfinite(sample.value) || !(sample.sample_rate > 0)) {
    Drop(DropReason::kNonFinite);
    return;
  }
  // A sampled counter or timer value stands for value / rate: that must be finite too, and a
  // sampled timer's 1 / rate observations a count that a double holds exactly. (Gauges and sets
  // ignore the rate.)
  if (sample.sample_rate != 1 && sample.kind != StatsdKind::kGauge &&
      sample.kind != StatsdKind::kSet) {
    const double weight = 1.0 / sample.sample_rate;
    if (!std::isfinite(sample.value * weight) || !(weight < 9e15)) {
      Drop(DropReason::kNonFinite);
      return;
    }
  }
  if (sample.kind == StatsdKind::kCounter && sample.value < 0) {
    Drop(DropReason::kNegativeCounter);
    return;
  }
  // A miss of a run's second pass may have been filled by an earlier sample of the run since.
  if (cached == kNoSeries) cached = CachedSample(identity);
  if (cached != kNoSeries) {
    ShardSeries& s = series_.value(cached);
    Apply(&s, engine_.metrics[s.metric], sample);
    return;
  }
  const unsigned type = StatsdTypeOf(sample.kind);
  const std::uint32_t metric = engine_.statsd_first + type;
  std::string_view name = sample.name;
  std::span<const std::pair<std::string, std::string>> mapped;
  if (!engine_.options.statsd_mappings.empty()) {
    const MappedName* m = Map(sample.name);
    if (m == nullptr) {  // no memory for the mapped name
      Drop(DropReason::kNoMemory);
      return;
    }
    name = m->name;
    mapped = m->labels;
  }

  // Series key: the carrier's id, the name, the mapped labels, then the tags sorted by key (tag
  // order on the wire varies).
  std::size_t n = 0;
  const auto tags = sample.split_tags != nullptr
                        ? sample.split_tags(sample.split_context, sample.tag_text)
                        : sample.tags;
  for (const auto& t : tags) {
    if (n == tag_scratch_.size()) break;
    tag_scratch_[n++] = t;
  }
  std::sort(tag_scratch_.begin(), tag_scratch_.begin() + static_cast<std::ptrdiff_t>(n),
            [](const StatsdTagView& a, const StatsdTagView& b) { return a.key < b.key; });
  try {
    char idtext[16];
    const auto r = std::to_chars(idtext, idtext + sizeof idtext, metric);
    key_.assign(idtext, static_cast<std::size_t>(r.ptr - idtext));
    key_.push_back(kNameSeparator);
    key_.append(name);
    for (const auto& [label, value] : mapped) {
      key_.push_back(kLabelSeparator);
      key_.append(label);
      key_.push_back('=');
      key_.append(value);
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (i > 0 && tag_scratch_[i].key == tag_scratch_[i - 1].key) continue;
      key_.push_back(kLabelSeparator);
      key_.append(tag_scratch_[i].key);
      key_.push_back('=');
      key_.append(tag_scratch_[i].value.empty() ? std::string_view("true") : tag_scratch_[i].value);
    }
  } catch (...) {  // no memory for the key
    Drop(DropReason::kNoMemory);
    return;
  }
  const std::uint64_t hash = KeyHash(metric);
  std::uint32_t index = series_.Find(key_, hash);
  if (index == kNoSeries) {
    // A name takes a place among statsd.max_metrics only with a series, until its last expires.
    if (series_.size() >= engine_.options.max_series_total) {
      Drop(DropReason::kSeriesOverflow);
      return;
    }
    DropReason why{};
    if (!AdmitStatsdName(name, type, why)) {
      Drop(why);
      return;
    }
    if (NewSeries(metric, hash, &index) == nullptr) return;
  }
  // Fill an empty way, else evict one picked by hash bits the set index does not use.
  auto& ways = SetOf(identity).ways;
  std::size_t way = static_cast<std::size_t>(identity.hash >> 62);
  for (std::size_t w = 0; w < ways.size(); ++w) {
    if (ways[w].hash == 0) {
      way = w;
      break;
    }
  }
  ways[way] = SampleSlot{identity.hash, identity.length, index};
  Apply(&series_.value(index), engine_.metrics[metric], sample);
}

bool Shard::State::AdmitStatsdName(std::string_view name, unsigned type, DropReason& why) noexcept {
  const std::uint64_t key = detail::StatsdNames::Key(detail::HashKey(name));
  NameSlot& slot = statsd_names_[(key >> 3) & (kNameCacheSlots - 1)];
  if (slot.key != key) {
    try {
      std::lock_guard lock(engine_.mutex);
      const auto* entry = engine_.AdmitStatsdName(key, type);
      slot.type = entry != nullptr ? entry->type() : kStatsdNoRoom;
    } catch (...) {  // no memory for the name's entry
      why = DropReason::kNoMemory;
      return false;
    }
    slot.key = key;
  }
  if (slot.type == type) return true;
  why = slot.type == kStatsdNoRoom ? DropReason::kStatsdMetricOverflow
                                   : DropReason::kStatsdTypeConflict;
  return false;
}

const Shard::State::MappedName* Shard::State::Map(std::string_view raw) noexcept {
  try {
    if (mapped_cache_.empty()) mapped_cache_.resize(kMappedSlots);
    const std::uint64_t hash = detail::HashKey(raw);
    MappedName& slot = mapped_cache_[hash & (kMappedSlots - 1)];
    if (slot.hash == hash && slot.raw == raw) return &slot;
    slot.hash = 0;  // until it is complete
    slot.raw.assign(raw);
    slot.name.assign(raw);
    slot.labels.clear();
    for (const auto& mapping : engine_.options.statsd_mappings) {
      std::vector<std::string_view> captures;
      if (GlobMatch(mapping.match, raw, captures)) {
        slot.name = Expand(mapping.name, captures);
        for (const auto& [label, templ] : mapping.labels) {
          slot.labels.emplace_back(label, Expand(templ, captures));
        }
        break;
      }
    }
    slot.hash = hash;
    return &slot;
  } catch (...) {
    return nullptr;
  }
}

Shard::State::SampleIdentity Shard::State::Identify(const StatsdInput& sample) noexcept {
  IdentityHash h(static_cast<std::uint64_t>(sample.kind));
  std::size_t length = h.Add(sample.name);
  if (!sample.tag_text.empty()) {
    length += h.Add(sample.tag_text);
  } else {
    for (const auto& tag : sample.tags) length += h.Add(tag.key) + h.Add(tag.value);
  }
  const std::uint64_t hash = h.Get();
  return {hash == 0 ? 1 : hash, static_cast<std::uint32_t>(length)};
}

void Shard::State::Apply(ShardSeries* series, const CompiledMetric& m,
                         const StatsdInput& sample) noexcept {
  ShardSeries* s = series;
  // Most samples are not sampled: no division then, whose latency the sum would wait for.
  const double weight = sample.sample_rate == 1.0 ? 1.0 : 1.0 / sample.sample_rate;
  switch (sample.kind) {
    case StatsdKind::kCounter: {
      const double inc = sample.value * weight;
      // A whole number goes to the integer sum: one that converts to an integer and back unchanged
      // (without std::floor, which this target's instruction set computes in several steps).
      const bool small = std::fabs(inc) < 9e15;
      const std::int64_t whole = small ? static_cast<std::int64_t>(inc) : 0;
      if (small && static_cast<double>(whole) == inc) {
        s->sums.isum += whole;
      } else {
        s->sums.fsum += inc;
      }
      break;
    }
    case StatsdKind::kGauge:
      if (!sample.gauge_delta) {
        s->has_last = true;
        s->level.last = sample.value;
        s->level.gauge_delta = 0;
      } else if (s->has_last) {
        s->level.last += sample.value;
      } else {
        s->level.gauge_delta += sample.value;
      }
      break;
    case StatsdKind::kSet:
      try {
        ShardExtra& x = s->Extra();
        if (!x.members) x.members = std::make_unique<SetMembers>();
        if (!AddSetMember(*x.members, sample.set_member)) {
          Drop(DropReason::kStatsdSetOverflow);
          return;  // dropped, not an update
        }
      } catch (...) {  // no memory for the member
        Drop(DropReason::kNoMemory);
        return;
      }
      break;
    default: {
      ShardExtra* x = Buckets(*s, m);
      if (x == nullptr) return;
      const auto bucket = static_cast<std::size_t>(
          std::lower_bound(m.info.buckets.begin(), m.info.buckets.end(), sample.value) -
          m.info.buckets.begin());
      // A sampled observation stands for 1/rate observations: counts scale, rounded.
      const auto times = static_cast<std::uint64_t>(std::llround(weight));
      x->buckets[bucket] += times;
      x->count += times;
      x->sum += sample.value * static_cast<double>(times);
      break;
    }
  }
  Recorded(*s);
}

void Engine::Impl::RollWindows(std::int64_t now) {
  const std::int64_t window =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options.summary_window).count();
  if (window <= 0 || now - window_start_ns < window) return;
  window_start_ns = now;
  for (std::size_t m = 0; m < store.size(); ++m) {
    auto& table = store[m].series;
    for (std::uint32_t i = 0; i < table.end(); ++i) {
      if (!table.live(i) || !table.value(i).extra) continue;
      StoreExtra& x = *table.value(i).extra;
      if (x.summary) {
        x.summary->previous = std::move(x.summary->current);
        x.summary->current = QuantileSketch(options.summary_accuracy);
      }
      if (metrics[m].info.statsd_set) x.set_members.clear();
    }
  }
}

void Engine::Impl::Sweep(std::int64_t now) {
  const std::int64_t ttl =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options.series_ttl).count();
  if (ttl <= 0 || now - last_sweep_ns < ttl / 4) return;
  last_sweep_ns = now;
  for (std::size_t m = 0; m < store.size(); ++m) {
    auto& table = store[m].series;
    for (std::uint32_t i = 0; i < table.end(); ++i) {
      if (table.live(i) && now - table.value(i).touched_ns > ttl) {
        if (IsStatsd(m)) {
          if (auto* name = StatsdName(table.key(i)); name != nullptr && name->series > 0) {
            --name->series;
          }
        }
        table.Erase(i);
        --total_series;
      }
    }
  }
  // A name without store series goes: its place and its type are free again. That is a name
  // whose last series expired, and also one a shard admitted whose series never reached the
  // store (lost to a limit) or has not yet: that one is admitted again at the shard's flush.
  if (statsd_names.EraseEmpty() > 0) ++statsd_forget_epoch;
}

namespace {

// The updates a shard series holds, counted when they are lost: a catalog counter's events, a
// distribution's or summary's values, a set's members; for a sum, a last value or a StatsD
// counter (whose pending sum is of the values sent), at least one.
std::uint64_t PendingUpdates(const CompiledMetric& m, const ShardSeries& s, bool statsd) noexcept {
  const bool counts_events = m.info.type == MetricType::kCounter && !statsd;
  const ShardExtra* x = s.extra.get();
  return std::max<std::uint64_t>(1, counts_events  ? static_cast<std::uint64_t>(s.sums.isum)
                                    : x == nullptr ? 0
                                    : x->members   ? x->members->size()
                                                   : x->count);
}

// Clears a shard series' updates without merging them.
void DiscardUpdates(const CompiledMetric& m, ShardSeries& s) noexcept {
  if (s.extra) {
    ShardExtra& x = *s.extra;
    x.count = 0;
    x.sum = 0;
    std::fill(x.buckets.begin(), x.buckets.end(), 0);
    if (x.sketch) x.sketch->Clear();
    if (x.members) x.members->clear();
  }
  s.dirty = false;
  ClearPending(m, s);
}

// Adds a shard series' updates to its merged series and clears them. What the merged series needs
// is allocated before anything is added, so that when memory runs out (std::bad_alloc) nothing is
// added twice or lost: the shard series keeps what was not merged, for the next flush.
// `left_out`: set members not added for want of room (kMaxSetMembers).
void MergeInto(const CompiledMetric& m, ShardSeries& s, StoreSeries& t, std::uint64_t& left_out) {
  switch (m.info.type) {
    case MetricType::kCounter:
    case MetricType::kSum:
      t.isum += s.sums.isum;
      t.value += s.sums.fsum;
      t.delta_isum += s.sums.isum;
      t.delta_fsum += s.sums.fsum;
      break;
    case MetricType::kLastValue:
      if (m.info.statsd_set) {
        if (s.extra && s.extra->members) {
          if (!t.extra) t.extra = std::make_unique<StoreExtra>();
          t.delta_has_last = 1;  // before a member is added: one added before a throw is pushed
          // Each member leaves the shard once added or left out: when an addition throws, the next
          // flush adds only the rest, in whichever window it then is.
          SetMembers& from = *s.extra->members;
          for (auto it = from.begin(); it != from.end(); it = from.erase(it)) {
            if (!AddSetMember(t.extra->set_members, *it)) ++left_out;
          }
        }
      } else if (s.has_last) {
        t.value = s.level.last;
        t.level_set = 1;
      } else {
        t.value += s.level.gauge_delta;
      }
      t.delta_has_last = 1;
      break;
    case MetricType::kDistribution:
    case MetricType::kSummary: {
      if (!s.extra) break;
      if (!t.extra) t.extra = std::make_unique<StoreExtra>();
      ShardExtra& from = *s.extra;
      StoreExtra& to = *t.extra;
      if (m.info.type == MetricType::kDistribution) {
        if (to.buckets.size() != from.buckets.size()) {
          std::vector<std::uint64_t> buckets(from.buckets.size(), 0);
          std::vector<std::uint64_t> delta_buckets(from.buckets.size(), 0);
          to.buckets = std::move(buckets);
          to.delta_buckets = std::move(delta_buckets);
        }
        for (std::size_t b = 0; b < from.buckets.size(); ++b) {
          to.buckets[b] += from.buckets[b];
          to.delta_buckets[b] += from.buckets[b];
        }
      } else if (from.sketch) {
        if (!to.summary)
          to.summary = std::make_unique<SummaryWindow>(from.sketch->relative_accuracy());
        to.summary->current.Cover(*from.sketch);
        to.summary->delta.Cover(*from.sketch);
        to.summary->current.Merge(*from.sketch);  // allocates nothing once covered
        to.summary->delta.Merge(*from.sketch);
      }
      to.count += from.count;
      to.sum += from.sum;
      to.delta_count += from.count;
      to.delta_sum += from.sum;
      break;
    }
  }
  DiscardUpdates(m, s);  // all merged: the shard series starts again from nothing
}

}  // namespace

// Merges dirty series `i` into the store (or drops its updates, counted, when no series is left
// for it there). Throws std::bad_alloc with the series' updates all still in the shard, or none.
void Shard::State::MergeSeries(std::uint32_t i, std::int64_t now, std::uint64_t& left_out) {
  ShardSeries& s = series_.value(i);
  const CompiledMetric& m = engine_.metrics[s.metric];
  auto& table = engine_.store[s.metric].series;
  const std::string_view key = StoreKey(series_.key(i));
  std::uint32_t t = s.store_index;
  detail::StatsdNames::Entry* name = nullptr;
  bool inserted = false;
  if (t >= table.end() || !table.live(t) || table.key(t) != key) {
    const std::uint64_t hash = table.Hash(key);
    t = table.Find(key, hash);
    if (t == table.kNone) {
      // A StatsD name's series count against the limit per metric by name. Its name may have
      // been forgotten (Sweep) since this shard admitted it: it is admitted again, with this
      // series' type, unless another type or no room took its place.
      const bool statsd = engine_.IsStatsd(s.metric);
      DropReason why = DropReason::kSeriesOverflow;
      bool room = engine_.total_series < engine_.options.max_series_total;
      if (room && statsd) {
        name = engine_.StatsdSeriesName(key, s.metric - engine_.statsd_first, why);
        room = name != nullptr && name->series < engine_.options.max_series_per_metric;
      } else if (room) {
        room = table.size() < engine_.options.max_series_per_metric;
      }
      if (!room) {
        const std::uint64_t lost = PendingUpdates(m, s, statsd);
        if (why == DropReason::kSeriesOverflow) engine_.store[s.metric].overflow += lost;
        owner_.drops_[static_cast<std::size_t>(why)].Add(lost);
        DiscardUpdates(m, s);
        return;
      }
      t = table.Insert(key, hash);
      ++engine_.total_series;
      if (name != nullptr) ++name->series;
      inserted = true;
    }
    s.store_index = t;
  }
  StoreSeries& merged = table.value(t);
  Touch(merged, now);
  try {
    MergeInto(m, s, merged, left_out);
  } catch (...) {
    // A new entry that got nothing goes again, so that a shard that never flushes again leaves
    // no empty series behind. (One that got some of a set's members keeps them.)
    const bool empty = !merged.extra || merged.extra->set_members.empty();
    if (inserted && empty) {
      table.Erase(t);
      --engine_.total_series;
      if (name != nullptr) --name->series;
      s.store_index = detail::SeriesTable<ShardSeries>::kNone;
    }
    throw;
  }
}

bool Shard::State::Flush() noexcept {
  const std::int64_t now = NowNs();
  now_ns_ = now;
  // Spans whose stop never came.
  const std::int64_t max_age =
      std::chrono::duration_cast<std::chrono::nanoseconds>(engine_.options.span_max_age).count();
  for (std::size_t i = 0; i < spans_.size();) {
    if (spans_[i].key != 0 && now - spans_[i].started_ns > max_age) {
      CloseSpanGauges(spans_[i]);
      EraseSpan(&spans_[i]);
      Drop(DropReason::kSpanExpired);
      continue;  // the backward shift may have moved another entry into slot i
    }
    ++i;
  }

  const std::int64_t ttl =
      std::chrono::duration_cast<std::chrono::nanoseconds>(engine_.options.series_ttl).count();
  std::lock_guard lock(engine_.mutex);
  if (engine_.window_start_ns == 0) engine_.window_start_ns = now;
  engine_.RollWindows(now);
  bool erased = false;
  bool complete = true;
  std::uint64_t left_out = 0;
  for (std::uint32_t i = 0; i < series_.end(); ++i) {
    if (!series_.live(i)) continue;
    const ShardSeries& s = series_.value(i);
    if (s.dirty) {
      // Only an allocation throws (a store entry, a StatsD name, a merged series' extra or set
      // members): that series stays dirty for the next flush. The others go on: a series whose
      // store entry exists needs no memory, unless it is a new distribution, summary or set's.
      try {
        MergeSeries(i, now, left_out);
      } catch (const std::exception&) {
        complete = false;
      }
    } else if (ttl > 0 && s.open_refs == 0 && now - s.touched_ns > ttl) {
      erased = true;
      EraseSeries(i);
    }
  }
  if (left_out > 0) {
    owner_.drops_[static_cast<std::size_t>(DropReason::kStatsdSetOverflow)].Add(left_out);
  }
  if (erased) std::fill(sample_cache_.begin(), sample_cache_.end(), SampleSet{});
  for (auto& [name, count] : unknown_) {
    try {
      engine_.unknown_names[name] += count;
    } catch (const std::bad_alloc&) {  // counted without its name
      engine_.unknown_other += count;
    }
  }
  unknown_.clear();
  engine_.unknown_other += unknown_other_;
  unknown_other_ = 0;
  engine_.Sweep(now);
  // Names forgotten since this shard's last flush: its answers for them may be stale (a type,
  // or no room that is now free).
  if (statsd_forget_epoch_ != engine_.statsd_forget_epoch) {
    statsd_forget_epoch_ = engine_.statsd_forget_epoch;
    std::fill(statsd_names_.begin(), statsd_names_.end(), NameSlot{});
  }
  return complete;
}

void Shard::State::DiscardPending() noexcept {
  for (std::uint32_t i = 0; i < series_.end(); ++i) {
    if (!series_.live(i) || !series_.value(i).dirty) continue;
    ShardSeries& s = series_.value(i);
    const CompiledMetric& m = engine_.metrics[s.metric];
    owner_.drops_[static_cast<std::size_t>(DropReason::kNoMemory)].Add(
        PendingUpdates(m, s, engine_.IsStatsd(s.metric)));
    DiscardUpdates(m, s);
    s.lost = true;
  }
}

void Shard::State::AdoptSpans(State& previous) noexcept {
  const Engine::Impl& old = previous.engine_;
  for (SpanSlot& from : previous.spans_) {
    if (from.key == 0) continue;
    const std::string& prefix = old.span_prefixes[from.prefix];
    const auto it = std::find(engine_.span_prefixes.begin(), engine_.span_prefixes.end(), prefix);
    if (it == engine_.span_prefixes.end()) continue;  // no longer a span: its stop is unknown
    SpanSlot* to = InsertSpan(from.key);
    if (to == nullptr) {
      Drop(DropReason::kSpanTableFull);
      continue;
    }
    const auto gauges = to->gauges;
    *to = from;
    to->prefix = static_cast<std::uint32_t>(it - engine_.span_prefixes.begin());
    to->gauges = gauges;
    // The store kept the gauges' +1 when their definition did not change (Engine::Adopt): the
    // stop must bring them down here. Changed gauges started again from 0 and are left alone.
    std::size_t n = 0;
    for (const std::uint32_t index : from.gauges) {
      // A gauge whose +1 never reached the store (its merge found no memory, and needed some
      // only when the store had no entry for it yet) is not brought down either.
      if (index == kNoSeries || previous.series_.value(index).lost) continue;
      const std::string_view old_key = previous.series_.key(index);
      const CompiledMetric& gm = old.metrics[previous.series_.value(index).metric];
      const auto found = engine_.catalog_metrics.find(gm.info.name);
      if (found == engine_.catalog_metrics.end() ||
          !SameDefinition(gm, engine_.metrics[found->second])) {
        continue;
      }
      try {
        key_ = Rekey(old_key, found->second);
      } catch (...) {
        continue;
      }
      std::uint32_t series = kNoSeries;
      ShardSeries* g = Series(found->second, &series);
      if (g == nullptr) continue;
      ++g->open_refs;
      to->gauges[n++] = series;
    }
  }
}

namespace {

// Adds a merged series of the same metric, from another engine, into `to`. Returns the set
// members left out for want of room (kMaxSetMembers).
std::uint64_t AbsorbSeries(const CompiledMetric& m, StoreSeries& from, StoreSeries& to) {
  if (m.info.type == MetricType::kCounter || m.info.type == MetricType::kSum) {
    to.isum += from.isum;
    to.value += from.value;
    to.delta_isum += from.delta_isum;
    to.delta_fsum += from.delta_fsum;
    return 0;
  }
  to.delta_has_last |= from.delta_has_last;
  if (m.info.type == MetricType::kLastValue && !m.info.statsd_set) {
    // `to` is the newer: a level set since, or deltas (a span stop, a StatsD `-1`) to add.
    if (to.level_set == 0) to.value += from.value;
    to.level_set |= from.level_set;
    return 0;
  }
  if (!from.extra) return 0;
  if (!to.extra) {
    to.extra = std::move(from.extra);
    return 0;
  }
  StoreExtra& x = *from.extra;
  StoreExtra& y = *to.extra;
  // What allocates comes first: a summary's sketches are widened before anything is added, so
  // that running out of memory leaves `to` as it was (a set's members added so far are there
  // once each, as sent).
  if (x.summary && y.summary) {
    y.summary->current.Cover(x.summary->current);
    y.summary->previous.Cover(x.summary->previous);
    y.summary->delta.Cover(x.summary->delta);
  }
  std::uint64_t left_out = 0;
  for (const auto& member : x.set_members) {
    if (!AddSetMember(y.set_members, member)) ++left_out;
  }
  y.count += x.count;
  y.sum += x.sum;
  y.delta_count += x.delta_count;
  y.delta_sum += x.delta_sum;
  if (y.buckets.size() == x.buckets.size() && y.delta_buckets.size() == x.delta_buckets.size()) {
    for (std::size_t b = 0; b < x.buckets.size(); ++b) y.buckets[b] += x.buckets[b];
    for (std::size_t b = 0; b < x.delta_buckets.size(); ++b)
      y.delta_buckets[b] += x.delta_buckets[b];
  } else if (y.buckets.empty()) {
    y.buckets = std::move(x.buckets);
    y.delta_buckets = std::move(x.delta_buckets);
  }
  if (x.summary && !y.summary) {
    y.summary = std::move(x.summary);
  } else if (x.summary) {
    y.summary->current.Merge(x.summary->current);
    y.summary->previous.Merge(x.summary->previous);
    y.summary->delta.Merge(x.summary->delta);
  }
  return left_out;
}

}  // namespace

std::size_t Engine::Impl::AdoptSeries(StoreMetric& from, std::uint32_t id,
                                      std::uint64_t& set_members_dropped, int statsd_type) {
  auto& to = store[id].series;
  std::size_t moved = 0;
  std::size_t absorbed = 0;
  if (to.size() == 0 && statsd_type < 0) {  // the usual case: take the whole table
    moved = from.series.size();
    std::swap(to, from.series);  // allocates nothing: the span gauges' +1 always come along
    total_series += moved;
  } else {
    for (std::uint32_t i = 0; i < from.series.end(); ++i) {
      if (!from.series.live(i)) continue;
      const std::string_view key = from.series.key(i);
      if (statsd_type >= 0) {
        const auto* name = StatsdName(key);
        if (name == nullptr || name->type() != static_cast<unsigned>(statsd_type)) continue;
      }
      const std::uint64_t hash = to.Hash(key);
      // A series this engine's shards recorded since they took over (Flush before Adopt).
      if (const std::uint32_t t = to.Find(key, hash); t != to.kNone) {
        set_members_dropped += AbsorbSeries(metrics[id], from.series.value(i), to.value(t));
        ++absorbed;
        continue;
      }
      const std::uint32_t t = to.Insert(key, hash);  // may throw: counts stay exact
      to.value(t) = std::move(from.series.value(i));
      ++moved;
      ++total_series;
    }
  }
  return moved + absorbed;
}

// ---- Shard ----

Shard::Shard(Engine& engine) : state_(std::make_unique<State>(*engine.impl_, *this)) {}
Shard::~Shard() = default;
void Shard::Record(const wire::FrameInfo& frame, const wire::Event& event) noexcept {
  state_->Record(frame, event);
}
bool Shard::PreviewHelps() const noexcept { return state_->PreviewHelps(); }
void Shard::Preview(const wire::FrameInfo& frame, const wire::Event& event) noexcept {
  state_->Preview(frame, event);
}
void Shard::PreviewDone() noexcept { state_->PreviewDone(); }
void Shard::RecordStatsd(const StatsdInput& sample) noexcept { state_->RecordStatsd(sample); }
void Shard::RecordStatsd(std::span<const StatsdInput> samples) noexcept {
  state_->RecordStatsd(samples);
}
bool Shard::Flush() noexcept { return state_->Flush(); }
void Shard::DiscardPending() noexcept { state_->DiscardPending(); }
void Shard::AdoptSpans(Shard& previous) noexcept { state_->AdoptSpans(*previous.state_); }

std::string_view DropReasonName(DropReason reason) noexcept {
  const auto i = static_cast<std::size_t>(reason);
  return i < kDropNames.size() ? kDropNames[i] : "unknown";
}

}  // namespace telemetryd::aggregate

namespace telemetryd::aggregate {

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::unique_ptr<Shard> Engine::NewShard() { return std::unique_ptr<Shard>(new Shard(*this)); }
const EngineOptions& Engine::options() const noexcept { return impl_->options; }

Expected<std::unique_ptr<Engine>> Engine::Create(const std::vector<CatalogSpec>& catalogs,
                                                 const EngineOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;

  StringMap<std::string> metric_owner;  // name -> where it was defined
  auto add_metric = [&](CompiledMetric m, const SourcePosition& pos) -> Status {
    if (const auto it = metric_owner.find(m.info.name); it != metric_owner.end()) {
      return Error{"engine.duplicate_metric", pos.ToString() + ": metric " + m.info.name +
                                                  " is already defined at " + it->second};
    }
    metric_owner.emplace(m.info.name, pos.ToString());
    m.info.id = static_cast<std::uint32_t>(impl->metrics.size());
    m.series_mix = SeriesMix(m.info.id);
    impl->catalog_metrics.emplace(m.info.name, m.info.id);
    impl->metrics.push_back(std::move(m));
    impl->store.emplace_back();
    return Ok{};
  };
  auto compile_tags = [](const std::vector<TagSpec>& specs) {
    std::vector<CompiledTag> tags;
    for (const auto& t : specs) {
      CompiledTag c{t.key,
                    t.label.empty() ? t.key : t.label,
                    t.default_value.has_value(),
                    t.default_value.value_or(""),
                    {t.values.begin(), t.values.end()}};
      std::sort(c.values.begin(), c.values.end());
      tags.push_back(std::move(c));
    }
    return tags;
  };

  for (const auto& catalog : catalogs) {
    std::unordered_map<std::string, const EventSpec*> events;
    for (const auto& e : catalog.events) {
      events[e.name] = &e;
      Binding& b = impl->bindings[e.name];
      b.span = e.span;
      if (e.span != SpanRole::kNone) {
        const std::string prefix = e.name.substr(0, e.name.rfind('.'));
        const auto it = std::find(impl->span_prefixes.begin(), impl->span_prefixes.end(), prefix);
        b.span_prefix = static_cast<std::uint32_t>(it - impl->span_prefixes.begin());
        if (it == impl->span_prefixes.end()) impl->span_prefixes.push_back(prefix);
      }
    }
    for (const auto& spec : catalog.metrics) {
      CompiledMetric m;
      m.info.name = spec.name;
      m.event = spec.event_name;
      m.info.type = spec.type;
      m.info.description = spec.description;
      m.info.system = catalog.system;
      m.info.buckets = spec.buckets;
      m.info.quantiles = spec.quantiles;
      m.measurement = spec.type == MetricType::kCounter ? std::string() : spec.measurement;
      m.tags = compile_tags(spec.tags);
      for (const auto* list : {&spec.keep, &spec.drop}) {
        for (const auto& f : *list) {
          (list == &spec.keep ? m.keep : m.drop)
              .push_back(CompiledFilter{f.op, f.metadata, f.measurement, f.values, f.threshold});
        }
      }
      const auto ev = events.find(spec.event_name);
      Unit declared = Unit::kNone;
      if (ev != events.end()) {
        const auto u = ev->second->measurements.find(spec.measurement);
        if (u != ev->second->measurements.end()) declared = u->second;
        m.pair_duration =
            spec.pair_spans && spec.measurement == "duration" &&
            (ev->second->span == SpanRole::kStop || ev->second->span == SpanRole::kException);
      }
      m.unit_from = spec.unit_from != Unit::kNone ? spec.unit_from : declared;
      m.unit_to = spec.unit_to != Unit::kNone ? spec.unit_to : m.unit_from;
      m.info.unit = spec.type == MetricType::kCounter ? Unit::kNone : m.unit_to;
      if (auto status = add_metric(std::move(m), spec.position); !status) return status.error();
      impl->bindings[spec.event_name].metrics.push_back(impl->metrics.back().info.id);
    }
    for (const auto& g : catalog.span_gauges) {
      CompiledMetric m;
      m.info.name = g.name;
      m.event = g.span;
      m.info.type = MetricType::kLastValue;
      m.info.description = g.description;
      m.info.system = catalog.system;
      m.info.span_gauge = true;
      m.tags = compile_tags(g.tags);
      if (auto status = add_metric(std::move(m), g.position); !status) return status.error();
      impl->bindings[g.span + ".start"].span_gauges.push_back(impl->metrics.back().info.id);
    }
  }
  impl->statsd_first = static_cast<std::uint32_t>(impl->metrics.size());
  for (unsigned type = 0; type < kStatsdTypes; ++type) {
    CompiledMetric& m = impl->metrics.emplace_back();
    m.info.id = impl->statsd_first + type;
    m.series_mix = SeriesMix(m.info.id);
    m.info.name = std::string(kStatsdCarrierNames[type]);
    m.info.system = "statsd";
    m.info.type = type == kStatsdCounter                       ? MetricType::kCounter
                  : type == kStatsdGauge || type == kStatsdSet ? MetricType::kLastValue
                                                               : MetricType::kDistribution;
    m.info.statsd_set = type == kStatsdSet;
    // No description: the exporters describe StatsD metrics by name.
    if (m.info.type == MetricType::kDistribution) m.info.buckets = options.statsd_buckets;
    if (type == kStatsdTimer) m.info.unit = Unit::kMillisecond;
    impl->store.emplace_back();
  }
  auto key_index = [&](const std::string& key) {
    return impl->key_indexes.emplace(key, static_cast<std::uint32_t>(impl->key_indexes.size()))
        .first->second;
  };
  for (auto& m : impl->metrics) {
    for (const auto& tag : m.tags) m.tag_keys.push_back(key_index(tag.key));
    m.measurement_key = key_index(m.measurement);
  }
  for (auto& [name, b] : impl->bindings) {
    for (std::size_t i = 0; i < b.metrics.size(); ++i) {
      std::size_t first = 0;
      while (impl->metrics[b.metrics[first]].tags != impl->metrics[b.metrics[i]].tags) ++first;
      b.tag_groups.push_back(static_cast<std::uint32_t>(first));
      impl->metrics[b.metrics[i]].series_mix = SeriesMix(b.metrics[first]);
    }
  }
  for (auto& m : impl->metrics) {
    for (std::uint32_t bound = 10; m.id_digits < 10 && m.info.id >= bound; bound *= 10) {
      ++m.id_digits;
    }
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

namespace {

// Splits a series key into labels: "<id><sep>v1<sep>v2" with names from the metric's tags, or
// "<id><sep>k=v<sep>..." for StatsD metrics. The labels view `key` and `tag_labels`.
void SplitLabels(std::span<const std::string> tag_labels, std::string_view key,
                 std::vector<LabelRef>& out) {
  out.clear();
  std::size_t pos = key.find(kLabelSeparator);
  std::size_t tag = 0;
  while (pos != std::string_view::npos) {
    const std::size_t next = key.find(kLabelSeparator, pos + 1);
    const std::string_view part = key.substr(
        pos + 1, next == std::string_view::npos ? std::string_view::npos : next - pos - 1);
    if (tag < tag_labels.size()) {
      out.push_back({tag_labels[tag], part});
    } else {
      const std::size_t eq = part.find('=');
      out.push_back({part.substr(0, eq),
                     eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1)});
    }
    ++tag;
    pos = next;
  }
}

std::vector<std::pair<std::string, std::string>> CopyLabels(std::span<const LabelRef> labels) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(labels.size());
  for (const auto& l : labels) out.emplace_back(l.name, l.value);
  return out;
}

bool IsScalar(MetricType type) noexcept {
  return type == MetricType::kCounter || type == MetricType::kSum || type == MetricType::kLastValue;
}

// A counter, sum or last value series' cumulative value.
double CumulativeValue(const CompiledMetric& m, const StoreSeries& s) {
  if (m.info.type == MetricType::kLastValue) {
    const StoreExtra* x = s.extra.get();
    return m.info.statsd_set ? static_cast<double>(x ? x->set_members.size() : 0) : s.value;
  }
  return static_cast<double>(s.isum) + s.value;
}

// A series' cumulative values, without its labels.
SeriesPoint CumulativePoint(const CompiledMetric& m, const StoreSeries& s) {
  SeriesPoint p;
  const StoreExtra* x = s.extra.get();
  switch (m.info.type) {
    case MetricType::kCounter:
    case MetricType::kSum:
    case MetricType::kLastValue:
      p.value = CumulativeValue(m, s);
      break;
    case MetricType::kDistribution:
      p.bucket_counts = x ? x->buckets : std::vector<std::uint64_t>{};
      if (p.bucket_counts.empty()) p.bucket_counts.assign(m.info.buckets.size() + 1, 0);
      p.count = x ? x->count : 0;
      p.sum = x ? x->sum : 0;
      break;
    case MetricType::kSummary: {
      p.count = x ? x->count : 0;
      p.sum = x ? x->sum : 0;
      QuantileSketch window(x && x->summary ? x->summary->current.relative_accuracy() : 0.01);
      if (x && x->summary) {
        window.Merge(x->summary->current);
        window.Merge(x->summary->previous);
      }
      for (const double q : m.info.quantiles) p.quantile_values.push_back(window.Quantile(q));
      break;
    }
  }
  return p;
}

}  // namespace

void Snapshot::BeginMetric(const MetricInfo& info, std::span<const std::string> tag_labels,
                           bool by_name) {
  Metric& m = metrics_.emplace_back();
  m.info = info;
  m.by_name = by_name;
  m.first_label = static_cast<std::uint32_t>(labels_.size());
  m.tags = static_cast<std::uint32_t>(tag_labels.size());
  labels_.insert(labels_.end(), tag_labels.begin(), tag_labels.end());
  m.first = key_ends_.size();
  m.first_point = points_.size();
}

void Snapshot::Add(std::string_view key, double value) {
  keys_.append(key);
  key_ends_.push_back(keys_.size());
  values_.push_back(value);
  ++metrics_.back().count;
}

void Snapshot::Add(std::string_view key, SeriesPoint point) {
  points_.push_back(std::move(point));
  Add(key, 0.0);
}

namespace {

std::vector<std::string> TagLabels(const CompiledMetric& m) {
  std::vector<std::string> out;
  out.reserve(m.tags.size());
  for (const auto& tag : m.tags) out.push_back(tag.label);
  return out;
}

}  // namespace

Snapshot Engine::CollectSnapshot() const {
  Snapshot out;
  std::lock_guard lock(impl_->mutex);
  std::size_t series = 0;
  for (const auto& metric : impl_->store) series += metric.series.size();
  out.metrics_.reserve(impl_->store.size());
  out.key_ends_.reserve(series);
  out.values_.reserve(series);
  // The key text of the previous snapshot, and some room to grow: no copies as it grows under
  // the lock.
  out.keys_.reserve(impl_->snapshot_key_bytes + impl_->snapshot_key_bytes / 8);
  for (std::size_t i = 0; i < impl_->store.size(); ++i) {
    const CompiledMetric& m = impl_->metrics[i];
    const auto& table = impl_->store[i].series;
    out.BeginMetric(m.info, TagLabels(m), impl_->IsStatsd(i));
    const bool scalar = IsScalar(m.info.type);
    for (std::uint32_t t = 0; t < table.end(); ++t) {
      if (!table.live(t)) continue;
      if (scalar) {
        out.Add(table.key(t), CumulativeValue(m, table.value(t)));
      } else {
        out.Add(table.key(t), CumulativePoint(m, table.value(t)));
      }
    }
  }
  impl_->snapshot_key_bytes = out.keys_.size();
  return out;
}

std::string_view Snapshot::Key(std::size_t series) const noexcept {
  const std::size_t begin = series == 0 ? 0 : key_ends_[series - 1];
  return std::string_view(keys_).substr(begin, key_ends_[series] - begin);
}

std::string_view Snapshot::NameAt(const Metric& m, std::uint64_t entry) const noexcept {
  return StatsdNameOf(Key(m.first + static_cast<std::uint32_t>(entry)));
}

void Snapshot::VisitSeries(const Metric& m, std::size_t j, SnapshotVisitor& visitor,
                           std::vector<LabelRef>& labels, SeriesPoint& scalar) const {
  const std::size_t i = m.first + j;
  SplitLabels(std::span<const std::string>(labels_.data() + m.first_label, m.tags), Key(i), labels);
  if (IsScalar(m.info.type)) {
    scalar.value = values_[i];
    visitor.Series(labels, scalar);
  } else {
    visitor.Series(labels, points_[m.first_point + j]);
  }
}

// A carrier's series, one metric per StatsD name. Grouped by the hash of the name (and, where
// hashes tie, by the name), so that a million names cost a radix sort, not a string sort; the
// names are then visited in the order of their first series in the store, not of their hashes:
// one series per name is the usual case, and store order reads the snapshot's keys and values in
// the order they lie instead of at random (a million names' families in half the time).
std::size_t Snapshot::GroupByName(const Metric& m, std::vector<std::uint64_t>& order) const {
  auto name_of = [&](std::uint64_t entry) { return NameAt(m, entry); };
  const std::size_t n = m.count;
  order.resize(n);
  for (std::size_t j = 0; j < n; ++j) {
    order[j] = (detail::HashKey(name_of(j)) >> 32) << 32 | j;
  }
  if (n < 2) return n;
  std::vector<std::uint64_t> sorted = order;
  SortByHighHalf(sorted);
  // head[j]: 1 + where in `sorted` the group of series j starts, for the first series of each
  // name (the lowest j of its group: both sorts keep equal hashes in store order), else 0; `starts`
  // marks where in `sorted` each group starts.
  std::vector<std::uint32_t> head(n, 0);
  std::vector<bool> starts(n + 1, false);
  starts[n] = true;
  auto group_at = [&](std::size_t g) {
    head[static_cast<std::uint32_t>(sorted[g])] = static_cast<std::uint32_t>(g + 1);
    starts[g] = true;
  };
  std::size_t names = 0;
  for (std::size_t a = 0; a < n;) {
    const std::size_t b = EndOfHighRun(sorted, a);
    // The series of one name (usual), or names whose hashes tie (rare): then sorted by name, and
    // a group per name.
    bool tie = false;
    if (b > a + 1) {
      const std::string_view first = name_of(sorted[a]);
      std::size_t same = a + 1;
      while (same < b && name_of(sorted[same]) == first) ++same;
      tie = same < b;
    }
    if (tie) {
      std::stable_sort(sorted.begin() + static_cast<std::ptrdiff_t>(a),
                       sorted.begin() + static_cast<std::ptrdiff_t>(b),
                       [&](std::uint64_t x, std::uint64_t y) { return name_of(x) < name_of(y); });
    }
    group_at(a);
    ++names;
    for (std::size_t g = a + 1; tie && g < b; ++g) {
      if (name_of(sorted[g]) == name_of(sorted[g - 1])) continue;
      group_at(g);
      ++names;
    }
    a = b;
  }
  std::size_t out = 0;
  for (std::size_t j = 0; j < n; ++j) {
    if (head[j] == 0) continue;
    std::size_t g = head[j] - 1;
    do {
      order[out++] = sorted[g++];
    } while (!starts[g]);
  }
  return names;
}

void Snapshot::VisitByName(const Metric& m, std::span<const std::uint64_t> order,
                           SnapshotVisitor& visitor, std::vector<LabelRef>& labels,
                           SeriesPoint& scalar) const {
  auto name_of = [&](std::uint64_t entry) { return NameAt(m, entry); };
  MetricInfo info = m.info;
  for (std::size_t g = 0; g < order.size();) {
    const std::string_view name = name_of(order[g]);
    std::size_t e = g + 1;
    while (e < order.size() && order[e] >> 32 == order[g] >> 32 && name_of(order[e]) == name) ++e;
    info.name.assign(name);
    visitor.Metric(info, e - g);
    for (std::size_t k = g; k < e; ++k) {
      VisitSeries(m, static_cast<std::uint32_t>(order[k]), visitor, labels, scalar);
    }
    g = e;
  }
}

void Snapshot::Visit(SnapshotVisitor& visitor) const {
  std::vector<LabelRef> labels;
  SeriesPoint scalar;
  const bool group = visitor.GroupsByName();
  std::vector<std::vector<std::uint64_t>> orders;
  std::size_t total = 0;
  for (const Metric& m : metrics_) {
    if (!m.by_name) {
      ++total;
    } else if (group) {
      total += GroupByName(m, orders.emplace_back());
    } else {
      total += m.count;
    }
  }
  visitor.Start(total);
  std::size_t next_order = 0;
  for (const Metric& m : metrics_) {
    if (m.by_name && group) {
      VisitByName(m, orders[next_order++], visitor, labels, scalar);
      continue;
    }
    if (m.by_name) {  // a metric per series, in store order
      MetricInfo info = m.info;
      for (std::size_t j = 0; j < m.count; ++j) {
        info.name.assign(NameAt(m, j));
        visitor.Metric(info, 1);
        VisitSeries(m, j, visitor, labels, scalar);
      }
      continue;
    }
    visitor.Metric(m.info, m.count);
    for (std::size_t j = 0; j < m.count; ++j) VisitSeries(m, j, visitor, labels, scalar);
  }
  visitor.Finish();
}

void VisitPoints(const std::vector<MetricPoints>& points, SnapshotVisitor& visitor) {
  std::vector<LabelRef> labels;
  visitor.Start(points.size());
  for (const auto& metric : points) {
    visitor.Metric(metric.info, metric.series.size());
    for (const auto& p : metric.series) {
      labels.clear();
      for (const auto& [k, v] : p.labels) labels.push_back({k, v});
      visitor.Series(labels, p);
    }
  }
  visitor.Finish();
}

std::vector<MetricPoints> Snapshot::Points() const {
  class Copy final : public SnapshotVisitor {
   public:
    void Metric(const MetricInfo& info, std::size_t series) override {
      MetricPoints& m = out.emplace_back();
      m.info = info;
      m.series.reserve(series);
    }
    void Series(std::span<const LabelRef> labels, const SeriesPoint& point) override {
      SeriesPoint& p = out.back().series.emplace_back(point);
      p.labels = CopyLabels(labels);
    }
    std::vector<MetricPoints> out;
  } copy;
  copy.out.reserve(metrics_.size());
  Visit(copy);
  return std::move(copy.out);
}

std::vector<MetricPoints> Engine::Collect() const { return CollectSnapshot().Points(); }

namespace {

// Starts a store series' next push interval: clears what changed since the previous one.
void ClearDeltas(const CompiledMetric& m, StoreSeries& s) noexcept {
  s.delta_isum = 0;
  s.delta_fsum = 0;
  s.delta_has_last = 0;
  StoreExtra* x = s.extra.get();
  if (x == nullptr) return;
  if (m.info.statsd_set) x->set_members.clear();
  x->delta_count = 0;
  x->delta_sum = 0;
  std::fill(x->delta_buckets.begin(), x->delta_buckets.end(), 0);
  if (x->summary) x->summary->delta.Clear();
}

}  // namespace

// The snapshot is made before any delta is cleared, so that when it runs out of memory the
// changes stay for the next call.
Snapshot Engine::TakeDeltaSnapshot() {
  Snapshot out;
  std::lock_guard lock(impl_->mutex);
  out.metrics_.reserve(impl_->store.size());
  for (std::size_t i = 0; i < impl_->store.size(); ++i) {
    const CompiledMetric& m = impl_->metrics[i];
    const auto& table = impl_->store[i].series;
    out.BeginMetric(m.info, TagLabels(m), impl_->IsStatsd(i));
    for (std::uint32_t t = 0; t < table.end(); ++t) {
      if (!table.live(t)) continue;
      const StoreSeries& s = table.value(t);
      const StoreExtra* x = s.extra.get();
      if (IsScalar(m.info.type)) {
        if (m.info.type == MetricType::kLastValue) {
          if (s.delta_has_last != 0) out.Add(table.key(t), CumulativeValue(m, s));
        } else if (s.delta_isum != 0 || s.delta_fsum != 0) {
          out.Add(table.key(t), static_cast<double>(s.delta_isum) + s.delta_fsum);
        }
        continue;
      }
      if (x == nullptr || x->delta_count == 0) continue;
      SeriesPoint p;
      p.count = x->delta_count;
      p.sum = x->delta_sum;
      if (m.info.type == MetricType::kDistribution) {
        p.bucket_counts = x->delta_buckets;
      } else if (x->summary) {
        for (const double q : m.info.quantiles)
          p.quantile_values.push_back(x->summary->delta.Quantile(q));
      }
      out.Add(table.key(t), std::move(p));
    }
  }
  for (std::size_t i = 0; i < impl_->store.size(); ++i) {
    auto& table = impl_->store[i].series;
    for (std::uint32_t t = 0; t < table.end(); ++t) {
      if (table.live(t)) ClearDeltas(impl_->metrics[i], table.value(t));
    }
  }
  return out;
}

std::vector<MetricPoints> Engine::TakeDeltas() { return TakeDeltaSnapshot().Points(); }

EngineCounters Engine::counters() const {
  std::lock_guard lock(impl_->mutex);
  EngineCounters c;
  c.series = impl_->total_series;
  c.statsd_metrics = impl_->statsd_names.size();
  for (std::size_t i = 0; i < impl_->store.size(); ++i) {
    c.series_per_metric.emplace_back(impl_->metrics[i].info.name, impl_->store[i].series.size());
  }
  for (const auto& [name, n] : impl_->unknown_names) c.unknown_events.emplace_back(name, n);
  if (impl_->unknown_other > 0) c.unknown_events.emplace_back("(other)", impl_->unknown_other);
  std::sort(c.unknown_events.begin(), c.unknown_events.end());
  return c;
}

std::vector<MetricInfo> Engine::metrics() const {
  std::lock_guard lock(impl_->mutex);
  std::vector<MetricInfo> out;
  out.reserve(impl_->statsd_first);
  for (std::uint32_t i = 0; i < impl_->statsd_first; ++i) out.push_back(impl_->metrics[i].info);
  return out;
}

Engine::AdoptResult Engine::Adopt(Engine& previous) {
  Impl& self = *impl_;
  Impl& old = *previous.impl_;
  std::scoped_lock lock(self.mutex, old.mutex);
  AdoptResult result;
  for (const auto& [name, old_id] : old.catalog_metrics) {
    const auto found = self.catalog_metrics.find(name);
    if (found == self.catalog_metrics.end()) {
      ++result.removed;
    } else if (!SameDefinition(old.metrics[old_id], self.metrics[found->second])) {
      ++result.changed;
    } else {
      result.series +=
          self.AdoptSeries(old.store[old_id], found->second, result.set_members_dropped);
      ++result.kept;
    }
  }
  if (!SameStatsdInput(old.options, self.options)) {
    result.changed += old.statsd_names.size();
  } else {
    // Either this engine has no names yet and room for all (the usual case: the names and the
    // carriers' tables are taken whole), or its shards admitted names since they took over, or
    // statsd.max_metrics is lower: its own names keep their types, the old ones come while there
    // is room, and the old series of a name left out, or now of another type, are left out.
    const bool whole =
        self.statsd_names.size() == 0 && old.statsd_names.size() <= self.options.statsd_max_metrics;
    // The names' series, counted again after a merge, also when a move runs out of memory.
    auto count_series = [&self] {
      self.statsd_names.ClearSeries();
      for (unsigned type = 0; type < kStatsdTypes; ++type) {
        const auto& table = self.store[self.statsd_first + type].series;
        for (std::uint32_t i = 0; i < table.end(); ++i) {
          if (!table.live(i)) continue;
          if (auto* name = self.StatsdName(table.key(i))) ++name->series;
        }
      }
    };
    try {
      if (whole) {
        result.kept += old.statsd_names.size();
        self.statsd_names = std::exchange(old.statsd_names, {});  // names first: cannot throw
        for (unsigned type = 0; type < kStatsdTypes; ++type) {
          result.series += self.AdoptSeries(old.store[old.statsd_first + type],
                                            self.statsd_first + type, result.set_members_dropped);
        }
      } else {
        const std::size_t no_room =
            self.statsd_names.Merge(old.statsd_names, self.options.statsd_max_metrics);
        result.kept += old.statsd_names.size() - no_room;
        result.removed += no_room;
        for (unsigned type = 0; type < kStatsdTypes; ++type) {
          result.series +=
              self.AdoptSeries(old.store[old.statsd_first + type], self.statsd_first + type,
                               result.set_members_dropped, static_cast<int>(type));
        }
        count_series();
      }
    } catch (...) {
      // Out of memory: the names whose series stayed behind are forgotten again (a shard's
      // name without a series yet is admitted again when its series reaches the store), so no
      // name keeps a type it has no series of.
      count_series();
      if (self.statsd_names.EraseEmpty() > 0) ++self.statsd_forget_epoch;
      throw;
    }
  }
  for (auto& [name, count] : old.unknown_names) self.unknown_names[name] += count;
  self.unknown_other += old.unknown_other;
  self.window_start_ns = old.window_start_ns;
  self.last_sweep_ns = old.last_sweep_ns;
  return result;
}

std::uint64_t Engine::overflow_total() const {
  std::lock_guard lock(impl_->mutex);
  std::uint64_t total = 0;
  for (const auto& m : impl_->store) total += m.overflow;
  return total;
}

}  // namespace telemetryd::aggregate
