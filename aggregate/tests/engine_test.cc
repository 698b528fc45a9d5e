// Engine tests with exact expected values: events are encoded and decoded with the real wire
// library, so the shard sees exactly what it sees in the daemon.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <sstream>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "../src/series_table.h"
#include "support/failing_allocations.h"
#include "telemetryd/aggregate/engine.h"
#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/encoder.h"

using namespace telemetryd;
using namespace telemetryd::aggregate;
using wire::Number;
using wire::Term;

using telemetryd::testing::allocations_left;

namespace {

EventSpec Event(std::string name, std::map<std::string, Unit> meas,
                std::map<std::string, MetadataType> meta, SpanRole span = SpanRole::kNone) {
  EventSpec e;
  e.name = std::move(name);
  e.measurements = std::move(meas);
  e.metadata = std::move(meta);
  e.span = span;
  return e;
}

MetricSpec Metric(MetricType type, std::string name, std::string event, std::string measurement,
                  std::vector<std::string> tags = {}) {
  MetricSpec m;
  m.type = type;
  m.name = std::move(name);
  m.event_name = std::move(event);
  m.measurement = std::move(measurement);
  for (auto& t : tags) m.tags.push_back(TagSpec{t, t, std::nullopt, {}});
  m.buckets = {1, 10, 100};
  m.quantiles = {0.5, 0.9, 0.99};
  return m;
}

CatalogSpec TestCatalog() {
  CatalogSpec c;
  c.system = "test";
  const std::map<std::string, MetadataType> common = {{"node_id", MetadataType::kString},
                                                      {"status", MetadataType::kAtom}};
  c.events = {
      Event("vsr.protocol.prepare.sent", {{"count", Unit::kNone}}, common),
      Event("vsr.leadership.start", {{"monotonic_time", Unit::kNative}},
            {{"node_id", MetadataType::kString},
             {"telemetry_span_context", MetadataType::kReference}},
            SpanRole::kStart),
      Event("vsr.leadership.stop", {{"monotonic_time", Unit::kNative}, {"duration", Unit::kNative}},
            {{"node_id", MetadataType::kString},
             {"telemetry_span_context", MetadataType::kReference}},
            SpanRole::kStop),
      Event("policy.load", {{"duration_us", Unit::kMicrosecond}, {"queue_len", Unit::kNone}},
            {{"reason", MetadataType::kAtom}, {"pool", MetadataType::kAtom}}),
      Event("op.stop", {{"duration", Unit::kNative}}, common),
  };
  c.metrics.push_back(Metric(MetricType::kCounter, "vsr.protocol.prepare.sent.count",
                             "vsr.protocol.prepare.sent", "count", {"node_id"}));
  c.metrics.push_back(Metric(MetricType::kSum, "vsr.protocol.prepare.sent.replicas",
                             "vsr.protocol.prepare.sent", "count", {"node_id"}));
  auto normal_only = Metric(MetricType::kCounter, "vsr.protocol.prepare.sent.normal",
                            "vsr.protocol.prepare.sent", "count");
  normal_only.keep = {
      FilterSpec{.metadata = "status", .op = FilterSpec::Op::kIn, .values = {"normal"}}};
  normal_only.drop = {
      FilterSpec{.measurement = "count", .op = FilterSpec::Op::kLt, .threshold = 1}};
  c.metrics.push_back(normal_only);
  auto lead = Metric(MetricType::kDistribution, "vsr.leadership.stop.duration",
                     "vsr.leadership.stop", "duration", {"node_id"});
  lead.unit_from = Unit::kNative;
  lead.unit_to = Unit::kSecond;
  c.metrics.push_back(lead);
  auto op = Metric(MetricType::kDistribution, "op.stop.duration", "op.stop", "duration");
  op.unit_from = Unit::kNative;
  op.unit_to = Unit::kMillisecond;
  c.metrics.push_back(op);
  c.metrics.push_back(
      Metric(MetricType::kLastValue, "policy.load.queue_len", "policy.load", "queue_len"));
  auto summary = Metric(MetricType::kSummary, "policy.load.latency", "policy.load", "duration_us");
  summary.unit_from = Unit::kMicrosecond;
  summary.unit_to = Unit::kSecond;
  c.metrics.push_back(summary);
  auto recycled = Metric(MetricType::kCounter, "policy.load.count", "policy.load", "");
  recycled.tags = {TagSpec{"reason", "reason", std::nullopt, {{"ttl_expired", "ttl"}}},
                   TagSpec{"pool", "pool", std::string("none"), {}}};
  c.metrics.push_back(recycled);
  c.span_gauges.push_back(SpanGaugeSpec{"vsr.leadership.active",
                                        "vsr.leadership",
                                        "Leading.",
                                        {TagSpec{"node_id", "node_id", std::nullopt, {}}},
                                        {}});
  return c;
}

// Encodes events into one frame and records them into the shard through the real decoder.
class Feeder final : public wire::FrameVisitor {
 public:
  explicit Feeder(Shard& shard) : shard_(shard) {}
  void Send(const std::vector<wire::EventRecord>& events, std::uint64_t units = 1'000'000'000) {
    decoder_.Decode(Encode(events, units), *this);
  }
  // Send, but the frame is decoded from the start of one buffer, every frame in the same place, as
  // a listener's receive slot holds one datagram after another.
  void SendInPlace(const std::vector<wire::EventRecord>& events) {
    const auto frame = Encode(events);
    slot_.resize(std::max(slot_.size(), frame.size()));
    std::copy(frame.begin(), frame.end(), slot_.begin());
    decoder_.Decode(std::span<const std::uint8_t>(slot_.data(), frame.size()), *this);
  }
  // A frame decoded into the shard as it is, and the events as one frame.
  void SendFrame(std::span<const std::uint8_t> frame) { decoder_.Decode(frame, *this); }
  static std::vector<std::uint8_t> Frame(const std::vector<wire::EventRecord>& events) {
    return Encode(events);
  }
  [[nodiscard]] int errors() const { return errors_; }
  // Decodes the events' frame into the shard's Preview, then PreviewDone: what the ingest intake
  // does before recording a frame when the shard asks for it.
  void Preview(const std::vector<wire::EventRecord>& events) {
    struct Previewer final : wire::FrameVisitor {
      explicit Previewer(Shard& to) : shard(to) {}
      void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
        shard.Preview(frame, event);
      }
      void OnError(wire::DecodeError, std::uint32_t) noexcept override {}
      Shard& shard;
    } previewer(shard_);
    decoder_.Decode(Encode(events), previewer);
    shard_.PreviewDone();
  }
  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    shard_.Record(frame, event);
  }
  void OnError(wire::DecodeError, std::uint32_t) noexcept override { ++errors_; }

 private:
  // The events as one frame.
  static std::vector<std::uint8_t> Encode(const std::vector<wire::EventRecord>& events,
                                          std::uint64_t units = 1'000'000'000) {
    wire::FrameEncoder encoder(
        wire::EncoderOptions{.units_per_second = units, .max_frame_bytes = 1 << 20});
    for (const auto& e : events) REQUIRE(encoder.Add(e) == wire::AddResult::kAdded);
    const auto frame = encoder.Finish();
    return {frame.begin(), frame.end()};
  }

  Shard& shard_;
  wire::FrameDecoder decoder_;
  std::vector<std::uint8_t> slot_;
  int errors_ = 0;
};

wire::EventRecord Ev(std::string name, std::vector<std::pair<std::string, Number>> meas,
                     std::vector<std::pair<std::string, Term>> meta = {}) {
  wire::EventRecord e;
  e.name = std::move(name);
  e.measurements = std::move(meas);
  e.metadata = std::move(meta);
  return e;
}

// Node n1's VSR leadership span `ref`: its start, and its stop with the duration left to the
// pairing, at `monotonic_ns`.
wire::EventRecord LeadershipStart(const Term& ref, std::int64_t monotonic_ns = 1'000'000'000) {
  return Ev("vsr.leadership.start", {{"monotonic_time", Number::Int(monotonic_ns)}},
            {{"node_id", Term::String("n1")}, {"telemetry_span_context", ref}});
}
wire::EventRecord LeadershipStop(const Term& ref, std::int64_t monotonic_ns = 2'000'000'000) {
  return Ev("vsr.leadership.stop",
            {{"monotonic_time", Number::Int(monotonic_ns)}, {"duration", Number::Int(0)}},
            {{"node_id", Term::String("n1")}, {"telemetry_span_context", ref}});
}

const MetricPoints& Find(const std::vector<MetricPoints>& all, const std::string& name) {
  for (const auto& m : all) {
    if (m.info.name == name) return m;
  }
  FAIL("no metric " << name);
  return all.front();
}

const SeriesPoint* Series(const MetricPoints& m,
                          const std::vector<std::pair<std::string, std::string>>& labels) {
  for (const auto& s : m.series) {
    if (s.labels == labels) return &s;
  }
  return nullptr;
}

std::unique_ptr<Engine> MakeEngine(EngineOptions options = {}) {
  auto engine = Engine::Create({TestCatalog()}, options);
  REQUIRE_MESSAGE(engine.has_value(), (engine ? "" : engine.error().message));
  return std::move(*engine);
}

// One StatsD sample without tags.
void SendStatsd(Shard& shard, std::string_view name, StatsdKind kind, double value = 1) {
  shard.RecordStatsd(StatsdInput{name, kind, value, {}, false, 1, {}});
}

// An engine whose idle series expire after 20 ms, and two of its shards.
struct ShortLived {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Shard> first;
  std::unique_ptr<Shard> second;
};
ShortLived ShortLivedEngine() {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  ShortLived out{MakeEngine(options), nullptr, nullptr};
  out.first = out.engine->NewShard();
  out.second = out.engine->NewShard();
  return out;
}

// Waits out a series TTL of 20 ms twice, flushing `shards` after each wait: the first flush
// finds the series idle, the next sweep runs a quarter TTL later.
void ExpireIdle(std::initializer_list<Shard*> shards) {
  for (int i = 0; i < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    for (Shard* shard : shards) shard->Flush();
  }
}

}  // namespace

TEST_CASE("counters count events per label set; sums add measurements exactly") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  std::vector<wire::EventRecord> events;
  for (int i = 0; i < 10; ++i) {
    events.push_back(
        Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(i % 2 == 0 ? 3 : 2)}},
           {{"node_id", Term::String(i < 7 ? "n1" : "n2")}, {"status", Term::Atom("normal")}}));
  }
  // Integers beyond 2^53 stay exact in a sum.
  events.push_back(Ev("vsr.protocol.prepare.sent", {{"count", Number::Int((1LL << 53) + 1)}},
                      {{"node_id", Term::String("n3")}, {"status", Term::Atom("view_change")}}));
  events.push_back(Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(1)}},
                      {{"node_id", Term::String("n3")}, {"status", Term::Atom("view_change")}}));
  feed.Send(events);
  shard->Flush();
  const auto all = engine->Collect();
  const auto& count = Find(all, "vsr.protocol.prepare.sent.count");
  REQUIRE(count.series.size() == 3);
  CHECK(Series(count, {{"node_id", "n1"}})->value == 7);
  CHECK(Series(count, {{"node_id", "n2"}})->value == 3);
  const auto& replicas = Find(all, "vsr.protocol.prepare.sent.replicas");
  CHECK(Series(replicas, {{"node_id", "n1"}})->value == 3 + 2 + 3 + 2 + 3 + 2 + 3);
  const auto* n3 = Series(replicas, {{"node_id", "n3"}});
  REQUIRE(n3 != nullptr);
  CHECK(n3->value == static_cast<double>((1LL << 53) + 2));
  // keep: status in [normal]; drop: count < 1 (none here): the two view_change events are out.
  CHECK(Find(all, "vsr.protocol.prepare.sent.normal").series.at(0).value == 10);
  CHECK(shard->filtered() == 2);
}

TEST_CASE("distributions convert native units and fill buckets; last values keep the latest") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  const std::vector<std::pair<std::string, Term>> meta = {{"node_id", Term::String("n1")},
                                                          {"status", Term::Atom("normal")}};
  // Native unit 1e9/s: 0.5 ms, 5 ms, 50 ms, 2000 ms.
  feed.Send({Ev("op.stop", {{"duration", Number::Int(500'000)}}, meta),
             Ev("op.stop", {{"duration", Number::Int(5'000'000)}}, meta),
             Ev("op.stop", {{"duration", Number::Int(50'000'000)}}, meta),
             Ev("op.stop", {{"duration", Number::Int(2'000'000'000)}}, meta),
             Ev("policy.load", {{"duration_us", Number::Int(10)}, {"queue_len", Number::Int(4)}},
                {{"reason", Term::Atom("x")}}),
             Ev("policy.load", {{"duration_us", Number::Int(20)}, {"queue_len", Number::Int(9)}},
                {{"reason", Term::Atom("x")}})});
  // A sender whose native unit is the microsecond: 1500 native = 1.5 ms.
  feed.Send({Ev("op.stop", {{"duration", Number::Int(1500)}}, meta)}, 1'000'000);
  shard->Flush();
  const auto all = engine->Collect();
  const auto& op = Find(all, "op.stop.duration");
  CHECK(op.info.unit == Unit::kMillisecond);
  REQUIRE(op.series.size() == 1);
  CHECK(op.series[0].bucket_counts == std::vector<std::uint64_t>{1, 2, 1, 1});
  CHECK(op.series[0].count == 5);
  CHECK(op.series[0].sum == doctest::Approx(0.5 + 5 + 50 + 2000 + 1.5));
  CHECK(Find(all, "policy.load.queue_len").series.at(0).value == 9);
}

TEST_CASE("summaries give quantiles within the sketch's error over the window") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  std::vector<wire::EventRecord> events;
  for (int i = 1; i <= 1000; ++i) {
    events.push_back(Ev("policy.load",
                        {{"duration_us", Number::Int(i * 100)}, {"queue_len", Number::Int(0)}},
                        {{"reason", Term::Atom("x")}}));
  }
  feed.Send(events);
  shard->Flush();
  const auto all = engine->Collect();
  const auto& s = Find(all, "policy.load.latency").series.at(0);
  CHECK(s.count == 1000);
  CHECK(s.sum == doctest::Approx(1000 * 1001 / 2 * 100 / 1e6));
  REQUIRE(s.quantile_values.size() == 3);
  // Ranks 499, 899, 989 of 0.0001 .. 0.1 s.
  CHECK(std::fabs(s.quantile_values[0] - 0.0500) <= 0.01 * 0.0500 + 1e-12);
  CHECK(std::fabs(s.quantile_values[1] - 0.0900) <= 0.01 * 0.0900 + 1e-12);
  CHECK(std::fabs(s.quantile_values[2] - 0.0990) <= 0.01 * 0.0990 + 1e-12);
}

TEST_CASE("span pairing: a stop with duration 0 gets the time since its start; the gauge follows") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  const Term ref = Term::Bytes(std::string("\x83r\x00\x03\x01\x02", 6));
  feed.Send({LeadershipStart(ref)});
  shard->Flush();
  auto all = engine->Collect();
  CHECK(Find(all, "vsr.leadership.active").series.at(0).value == 1);
  CHECK(shard->open_spans() == 1);
  feed.Send({LeadershipStop(ref, 4'500'000'000)});
  shard->Flush();
  all = engine->Collect();
  CHECK(Find(all, "vsr.leadership.active").series.at(0).value == 0);
  const auto& d = Find(all, "vsr.leadership.stop.duration").series.at(0);
  CHECK(d.count == 1);
  CHECK(d.sum == doctest::Approx(3.5));
  CHECK(d.bucket_counts == std::vector<std::uint64_t>{0, 1, 0, 0});
  CHECK(shard->open_spans() == 0);
  // A stop whose start was never seen and whose duration is 0: counted, not recorded.
  feed.Send({Ev("vsr.leadership.stop", {{"duration", Number::Int(0)}},
                {{"node_id", Term::String("n1")}, {"telemetry_span_context", Term::Bytes("zz")}})});
  CHECK(shard->dropped(DropReason::kSpanUnmatched) == 0);  // 0 is a value when nothing pairs
}

TEST_CASE("open spans are bounded in age and number") {
  EngineOptions options;
  options.span_max_age = std::chrono::milliseconds(0);
  options.max_open_spans = 2;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  for (int i = 0; i < 3; ++i) {
    feed.Send(
        {Ev("vsr.leadership.start", {{"monotonic_time", Number::Int(i)}},
            {{"node_id", Term::String("n1")}, {"telemetry_span_context", Term::Int(i + 100)}})});
  }
  CHECK(shard->open_spans() == 2);
  CHECK(shard->dropped(DropReason::kSpanTableFull) == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  shard->Flush();
  CHECK(shard->open_spans() == 0);
  CHECK(shard->dropped(DropReason::kSpanExpired) == 2);
  CHECK(Find(engine->Collect(), "vsr.leadership.active").series.at(0).value == 0);
}

TEST_CASE("tags: value mapping, defaults, missing tags and values that cannot be labels") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  const std::vector<std::pair<std::string, Number>> m = {{"duration_us", Number::Int(1)},
                                                         {"queue_len", Number::Int(1)}};
  feed.Send(
      {Ev("policy.load", m, {{"reason", Term::Atom("ttl_expired")}, {"pool", Term::Atom("hpc")}}),
       Ev("policy.load", m, {{"reason", Term::Atom("manual")}}), Ev("policy.load", m, {}),
       Ev("policy.load", m, {{"reason", Term::List({Term::Int(1)})}})});
  shard->Flush();
  const auto all = engine->Collect();
  const auto& count = Find(all, "policy.load.count");
  CHECK(Series(count, {{"reason", "ttl"}, {"pool", "hpc"}})->value == 1);
  CHECK(Series(count, {{"reason", "manual"}, {"pool", "none"}})->value == 1);
  CHECK(count.series.size() == 2);
  CHECK(shard->dropped(DropReason::kMissingTag) == 1);
  CHECK(shard->dropped(DropReason::kBadTagValue) == 1);
}

TEST_CASE("unknown events, missing measurements and non-finite values are counted, not recorded") {
  EngineOptions options;
  options.unknown_event_names_max = 2;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  feed.Send({Ev("nobody.knows.me", {}), Ev("nobody.knows.me", {}), Ev("other.one", {}),
             Ev("third.one", {}),
             Ev("policy.load", {{"queue_len", Number::Int(1)}}, {{"reason", Term::Atom("x")}}),
             Ev("policy.load",
                {{"duration_us", Number::Float(std::numeric_limits<double>::quiet_NaN())},
                 {"queue_len", Number::Float(std::numeric_limits<double>::infinity())}},
                {{"reason", Term::Atom("x")}})});
  shard->Flush();
  CHECK(shard->dropped(DropReason::kUnknownEvent) == 4);
  CHECK(shard->dropped(DropReason::kMissingMeasurement) == 1);  // the summary's duration_us
  CHECK(shard->dropped(DropReason::kNonFinite) == 2);
  const auto counters = engine->counters();
  REQUIRE(counters.unknown_events.size() == 3);
  CHECK(counters.unknown_events[0] == std::pair<std::string, std::uint64_t>{"(other)", 1});
  CHECK(counters.unknown_events[1] == std::pair<std::string, std::uint64_t>{"nobody.knows.me", 2});
}

TEST_CASE("cardinality limits cap series per metric and count the overflow") {
  EngineOptions options;
  options.max_series_per_metric = 3;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  std::vector<wire::EventRecord> events;
  for (int i = 0; i < 5; ++i) {
    events.push_back(
        Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(1)}},
           {{"node_id", Term::String("n" + std::to_string(i))}, {"status", Term::Atom("normal")}}));
  }
  // Node n4 twice more: three events of it in all.
  events.push_back(events.back());
  events.push_back(events.back());
  feed.Send(events);
  shard->Flush();
  CHECK(Find(engine->Collect(), "vsr.protocol.prepare.sent.count").series.size() == 3);
  CHECK(Find(engine->Collect(), "vsr.protocol.prepare.sent.replicas").series.size() == 3);
  // The counter lost the 4 events of n3 and n4; the sum lost at least one update per series.
  CHECK(engine->overflow_total() == 4 + 2);
  CHECK(shard->dropped(DropReason::kSeriesOverflow) == 4 + 2);
  // A StatsD counter's pending value is the sum of the values sent, not a count of updates.
  for (int i = 0; i < 4; ++i) {
    const std::string id = std::to_string(i);
    const StatsdTagView tags[] = {{"id", id}};
    shard->RecordStatsd(StatsdInput{"bytes", StatsdKind::kCounter, 1500, {}, false, 1, tags});
  }
  shard->Flush();
  CHECK(engine->overflow_total() == 6 + 1);
}

TEST_CASE("idle series expire after the TTL") {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  feed.Send({Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(1)}},
                {{"node_id", Term::String("n1")}, {"status", Term::Atom("normal")}})});
  shard->Flush();
  CHECK(Find(engine->Collect(), "vsr.protocol.prepare.sent.count").series.size() == 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  shard->Flush();
  CHECK(Find(engine->Collect(), "vsr.protocol.prepare.sent.count").series.empty());
  CHECK(engine->counters().series == 0);
}

// An event's metrics with the same tags are created one index apart, and the second is then found
// from the first without a table probe. Here the first expires alone (its filter keeps it idle),
// its entry goes to another node's series, and the second must not be taken for that node's.
TEST_CASE("a series expired under its neighbour does not lend the neighbour to new labels") {
  CatalogSpec c;
  c.system = "test";
  c.events = {Event("app.request", {{"bytes", Unit::kNone}}, {{"node_id", MetadataType::kString}})};
  auto big = Metric(MetricType::kCounter, "app.request.big", "app.request", "bytes", {"node_id"});
  big.keep = {FilterSpec{.measurement = "bytes", .op = FilterSpec::Op::kGe, .threshold = 100}};
  c.metrics = {big,
               Metric(MetricType::kSum, "app.request.bytes", "app.request", "bytes", {"node_id"})};
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  auto created = Engine::Create({c}, options);
  REQUIRE(created.has_value());
  auto& engine = *created;
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  auto request = [](const char* node, std::int64_t bytes) {
    return Ev("app.request", {{"bytes", Number::Int(bytes)}}, {{"node_id", Term::String(node)}});
  };
  feed.Send({request("a", 500)});
  shard->Flush();
  // Small requests keep a's sum alive; a's counter idles past the TTL and is erased.
  std::int64_t small = 0;
  for (int i = 0; i < 12; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(8));
    feed.Send({request("a", 1)});
    ++small;
    shard->Flush();
  }
  REQUIRE(Find(engine->Collect(), "app.request.big").series.empty());
  feed.Send({request("b", 700), request("b", 300), request("a", 2)});
  shard->Flush();
  const auto all = engine->Collect();
  const auto& sums = Find(all, "app.request.bytes");
  CHECK(sums.series.size() == 2);
  REQUIRE(Series(sums, {{"node_id", "a"}}) != nullptr);
  CHECK(Series(sums, {{"node_id", "a"}})->value == static_cast<double>(500 + small + 2));
  REQUIRE(Series(sums, {{"node_id", "b"}}) != nullptr);
  CHECK(Series(sums, {{"node_id", "b"}})->value == 1000);
  const auto& counts = Find(all, "app.request.big");
  CHECK(counts.series.size() == 1);
  REQUIRE(Series(counts, {{"node_id", "b"}}) != nullptr);
  CHECK(Series(counts, {{"node_id", "b"}})->value == 2);
}

TEST_CASE("shards merge; deltas are what changed since the previous push") {
  auto engine = MakeEngine();
  auto a = engine->NewShard();
  auto b = engine->NewShard();
  Feeder fa(*a);
  Feeder fb(*b);
  const auto ev = Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(2)}},
                     {{"node_id", Term::String("n1")}, {"status", Term::Atom("normal")}});
  fa.Send({ev, ev});
  fb.Send({ev});
  a->Flush();
  b->Flush();
  CHECK(Find(engine->Collect(), "vsr.protocol.prepare.sent.count").series.at(0).value == 3);
  auto deltas = engine->TakeDeltas();
  CHECK(Find(deltas, "vsr.protocol.prepare.sent.count").series.at(0).value == 3);
  CHECK(Find(deltas, "vsr.protocol.prepare.sent.replicas").series.at(0).value == 6);
  deltas = engine->TakeDeltas();
  CHECK(Find(deltas, "vsr.protocol.prepare.sent.count").series.empty());
  fb.Send({ev});
  b->Flush();
  deltas = engine->TakeDeltas();
  CHECK(Find(deltas, "vsr.protocol.prepare.sent.count").series.at(0).value == 1);
  CHECK(Find(engine->Collect(), "vsr.protocol.prepare.sent.count").series.at(0).value == 4);
}

TEST_CASE("StatsD: counters with sample rates, gauges with deltas, timers, sets, tags, mappings") {
  EngineOptions options;
  options.statsd_buckets = {10, 100};
  options.statsd_mappings = {StatsdMapping{"app.*.requests", "app.requests", {{"service", "$1"}}}};
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  const StatsdTagView prod[] = {{"env", "prod"}, {"canary", ""}};
  const StatsdTagView prod_reversed[] = {{"canary", ""}, {"env", "prod"}};
  auto sample = [&](std::string_view name, StatsdKind kind, double value,
                    std::span<const StatsdTagView> tags = {}, double rate = 1, bool delta = false,
                    std::string_view member = {}) {
    shard->RecordStatsd(StatsdInput{name, kind, value, member, delta, rate, tags});
  };
  sample("hits", StatsdKind::kCounter, 1, prod, 0.1);
  sample("hits", StatsdKind::kCounter, 2, prod_reversed);
  sample("hits", StatsdKind::kCounter, -1);
  sample("depth", StatsdKind::kGauge, 10);
  sample("depth", StatsdKind::kGauge, -3, {}, 1, true);
  sample("latency", StatsdKind::kTimer, 5);
  sample("latency", StatsdKind::kTimer, 50, {}, 0.5);
  sample("users", StatsdKind::kSet, 0, {}, 1, false, "alice");
  sample("users", StatsdKind::kSet, 0, {}, 1, false, "bob");
  sample("users", StatsdKind::kSet, 0, {}, 1, false, "alice");
  sample("app.web.requests", StatsdKind::kCounter, 4);
  sample("hits", StatsdKind::kGauge, 1);
  shard->Flush();
  const auto all = engine->Collect();
  const auto& hits = Find(all, "hits");
  REQUIRE(hits.series.size() == 1);
  CHECK(hits.series[0].value == 12);  // 1/0.1 + 2, same series whatever the tag order
  CHECK(hits.series[0].labels ==
        std::vector<std::pair<std::string, std::string>>{{"canary", "true"}, {"env", "prod"}});
  CHECK(shard->dropped(DropReason::kNegativeCounter) == 1);
  CHECK(shard->dropped(DropReason::kStatsdTypeConflict) == 1);
  CHECK(Find(all, "depth").series.at(0).value == 7);
  const auto& latency = Find(all, "latency").series.at(0);
  CHECK(latency.count == 3);
  CHECK(latency.bucket_counts == std::vector<std::uint64_t>{1, 2, 0});
  CHECK(Find(all, "users").series.at(0).value == 2);
  const auto& mapped = Find(all, "app.requests");
  CHECK(mapped.series.at(0).labels ==
        std::vector<std::pair<std::string, std::string>>{{"service", "web"}});
  CHECK(mapped.series.at(0).value == 4);
}

TEST_CASE("StatsD: a counter keeps fractions, and counts scaled by a sample rate, as sent") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  auto counter = [&](std::string_view name, double value, double rate = 1) {
    shard->RecordStatsd(StatsdInput{name, StatsdKind::kCounter, value, {}, false, rate, {}});
  };
  counter("fraction", 0.25);
  counter("fraction", 0.5);
  counter("scaled", 1, 0.3);
  counter("whole_once_scaled", 3, 0.5);
  counter("huge", 1e16);
  counter("huge", 1e16);
  counter("mixed", 2);
  counter("mixed", 0.5);
  shard->Flush();
  const auto all = engine->Collect();
  CHECK(Find(all, "fraction").series.at(0).value == 0.75);
  CHECK(Find(all, "scaled").series.at(0).value == 1 * (1 / 0.3));
  CHECK(Find(all, "whole_once_scaled").series.at(0).value == 6);
  CHECK(Find(all, "huge").series.at(0).value == 2e16);
  CHECK(Find(all, "mixed").series.at(0).value == 2.5);
}

TEST_CASE("StatsD: a set counts at most kMaxSetMembers members a window, and the rest as drops") {
  auto engine = MakeEngine();
  auto a = engine->NewShard();
  auto b = engine->NewShard();
  auto member = [](Shard& shard, int i) {
    const std::string m = "u" + std::to_string(i);
    shard.RecordStatsd(StatsdInput{"users", StatsdKind::kSet, 0, m, false, 1, {}});
  };
  const int max = static_cast<int>(kMaxSetMembers);
  // Shard a: the cap and 5 more distinct members, and members it already holds again.
  for (int i = 0; i < max + 5; ++i) member(*a, i);
  for (int i = 0; i < 100; ++i) member(*a, i);
  CHECK(a->dropped(DropReason::kStatsdSetOverflow) == 5);
  a->Flush();
  // Shard b: 300 members of a's and 200 new ones; the store is full, so the new ones drop.
  for (int i = max - 300; i < max + 200; ++i) member(*b, i);
  CHECK(b->dropped(DropReason::kStatsdSetOverflow) == 0);
  b->Flush();
  CHECK(b->dropped(DropReason::kStatsdSetOverflow) == 200);
  CHECK(Find(engine->Collect(), "users").series.at(0).value == max);
}

TEST_CASE("StatsD: a sampled value that is not finite once scaled is dropped as non_finite") {
  EngineOptions options;
  options.statsd_buckets = {10};
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  auto sample = [&](std::string_view name, StatsdKind kind, double value, double rate) {
    shard->RecordStatsd(StatsdInput{name, kind, value, {}, false, rate, {}});
  };
  sample("big", StatsdKind::kCounter, 1e308, 0.001);  // 1e311
  sample("big", StatsdKind::kCounter, 2, 0.5);
  sample("slow", StatsdKind::kTimer, 5, 1e-300);  // 1e300 observations
  sample("slow", StatsdKind::kTimer, 5, 0.25);
  sample("level", StatsdKind::kGauge, 3, 1e-300);  // gauges ignore the rate
  shard->Flush();
  CHECK(shard->dropped(DropReason::kNonFinite) == 2);
  const auto all = engine->Collect();
  CHECK(Find(all, "level").series.at(0).value == 3);
  CHECK(Find(all, "big").series.at(0).value == 4);
  CHECK(Find(all, "slow").series.at(0).count == 4);
}

TEST_CASE("two metrics with one name are a load error") {
  auto catalog = TestCatalog();
  catalog.metrics.push_back(catalog.metrics.front());
  catalog.metrics.back().position = SourcePosition{"x.yaml", 7, 3};
  const auto engine = Engine::Create({catalog}, {});
  REQUIRE_FALSE(engine.has_value());
  CHECK(engine.error().message.find(
            "x.yaml:7:3: metric vsr.protocol.prepare.sent.count is already defined") !=
        std::string::npos);
}

TEST_CASE("reload: unchanged metrics keep their series, changed ones restart, open spans move") {
  EngineOptions options;
  options.statsd_buckets = {10, 100};
  auto before = MakeEngine(options);
  auto old_shard = before->NewShard();
  Feeder feed_old(*old_shard);
  const Term ref = Term::Bytes(std::string("\x83r\x00\x03\x07\x08", 6));
  const std::vector<std::pair<std::string, Term>> n1 = {{"node_id", Term::String("n1")},
                                                        {"status", Term::Atom("normal")}};
  feed_old.Send({Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(3)}}, n1),
                 Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(4)}}, n1),
                 Ev("op.stop", {{"duration", Number::Int(2'000'000)}}, n1),
                 Ev("policy.load", {{"queue_len", Number::Int(9)}}), LeadershipStart(ref),
                 Ev("no.such.event", {{"x", Number::Int(1)}})});
  old_shard->RecordStatsd(StatsdInput{"hits", StatsdKind::kCounter, 5, {}, false, 1, {}});
  old_shard->Flush();

  // The new configuration: op.stop.duration has other buckets, policy.load.queue_len is gone, a
  // metric is new and a description changed (which does not matter).
  CatalogSpec next = TestCatalog();
  for (auto& m : next.metrics) {
    if (m.name == "op.stop.duration") m.buckets = {5, 50};
    if (m.name == "vsr.protocol.prepare.sent.count") m.description = "Prepares sent.";
  }
  std::erase_if(next.metrics,
                [](const MetricSpec& m) { return m.name == "policy.load.queue_len"; });
  next.metrics.push_back(Metric(MetricType::kCounter, "vsr.protocol.prepare.sent.total",
                                "vsr.protocol.prepare.sent", "count"));
  auto created = Engine::Create({next}, options);
  REQUIRE(created.has_value());
  auto after = std::move(*created);
  auto new_shard = after->NewShard();
  new_shard->AdoptSpans(*old_shard);
  const auto result = after->Adopt(*before);
  CHECK(result.changed == 1);
  CHECK(result.removed == 1);
  CHECK(result.kept == 8);  // 7 catalog metrics (incl. the span gauge) and the StatsD counter
  before.reset();           // nothing of the old engine is needed any more
  old_shard.reset();

  auto all = after->Collect();
  CHECK(Series(Find(all, "vsr.protocol.prepare.sent.count"), {{"node_id", "n1"}})->value == 2);
  CHECK(Series(Find(all, "vsr.protocol.prepare.sent.replicas"), {{"node_id", "n1"}})->value == 7);
  CHECK(Find(all, "op.stop.duration").series.empty());
  CHECK(Find(all, "vsr.protocol.prepare.sent.total").series.empty());
  for (const auto& m : all) CHECK(m.info.name != "policy.load.queue_len");
  CHECK(Find(all, "hits").series.at(0).value == 5);
  CHECK(Find(all, "vsr.leadership.active").series.at(0).value == 1);
  const auto counters = after->counters();
  CHECK(counters.unknown_events ==
        std::vector<std::pair<std::string, std::uint64_t>>{{"no.such.event", 1}});

  // Recording goes on from the kept values; the span opened before the reload closes after it.
  Feeder feed_new(*new_shard);
  CHECK(new_shard->open_spans() == 1);
  feed_new.Send({Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(1)}}, n1),
                 LeadershipStop(ref, 4'500'000'000)});
  new_shard->RecordStatsd(StatsdInput{"hits", StatsdKind::kCounter, 1, {}, false, 1, {}});
  new_shard->Flush();
  all = after->Collect();
  CHECK(Series(Find(all, "vsr.protocol.prepare.sent.count"), {{"node_id", "n1"}})->value == 3);
  CHECK(Find(all, "vsr.protocol.prepare.sent.total").series.at(0).value == 1);
  CHECK(Find(all, "vsr.leadership.active").series.at(0).value == 0);
  const auto& lead = Find(all, "vsr.leadership.stop.duration").series.at(0);
  CHECK(lead.count == 1);
  CHECK(lead.sum == doctest::Approx(3.5));
  CHECK(Find(all, "hits").series.at(0).value == 6);
  CHECK(new_shard->open_spans() == 0);
  // count, replicas, normal, total, active, lead duration, hits
  CHECK(after->counters().series == 7);
}

TEST_CASE("reload: StatsD metrics restart when the StatsD input options change") {
  EngineOptions options;
  auto before = MakeEngine(options);
  auto shard = before->NewShard();
  shard->RecordStatsd(StatsdInput{"latency", StatsdKind::kTimer, 5, {}, false, 1, {}});
  shard->Flush();
  options.statsd_buckets = {1, 2};
  auto after = MakeEngine(options);
  const auto result = after->Adopt(*before);
  CHECK(result.changed == 1);
  for (const auto& m : after->Collect()) CHECK(m.info.name != "latency");
}

TEST_CASE("frames from two decoders on one thread never share the shard's per-frame name cache") {
  // Each listener has its own decoder; one worker thread feeds one shard from all of them. The
  // first frame of each decoder names its first event with the same string reference.
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder udp(*shard);
  Feeder tcp(*shard);
  udp.Send({Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(1)}},
               {{"node_id", Term::String("n1")}, {"status", Term::Atom("normal")}})});
  tcp.Send({Ev("policy.load", {{"queue_len", Number::Int(7)}})});
  shard->Flush();
  const auto all = engine->Collect();
  CHECK(Find(all, "policy.load.queue_len").series.at(0).value == 7);
  CHECK(Series(Find(all, "vsr.protocol.prepare.sent.count"), {{"node_id", "n1"}})->value == 1);
  // Only policy.load.count misses its tag (`reason`); a mixed-up name would add the others.
  CHECK(shard->dropped(DropReason::kMissingTag) == 1);
}

TEST_CASE("StatsD: repeated samples reach their own series, also after idle series expire") {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  const StatsdTagView a[] = {{"host", "a"}};
  const StatsdTagView b[] = {{"host", "b"}};
  auto count = [&](std::string_view name, std::span<const StatsdTagView> tags, double n) {
    shard->RecordStatsd(StatsdInput{name, StatsdKind::kCounter, n, {}, false, 1, tags});
  };
  auto value = [&](const std::string& host) {
    const auto all = engine->Collect();
    const auto* s = Series(Find(all, "hits"), {{"host", host}});
    return s == nullptr ? -1.0 : s->value;
  };
  for (int i = 0; i < 3; ++i) {
    count("hits", a, 1);
    count("hits", b, 10);
  }
  shard->RecordStatsd(StatsdInput{"hits", StatsdKind::kGauge, 5, {}, false, 1, a});  // conflict
  shard->Flush();
  CHECK(value("a") == 3);
  CHECK(value("b") == 30);
  CHECK(shard->dropped(DropReason::kStatsdTypeConflict) == 1);
  // Both expire; then b comes back first and takes a freed entry: a must not land on it.
  ExpireIdle({shard.get()});
  CHECK(engine->counters().series == 0);
  count("hits", b, 100);
  count("hits", a, 7);
  count("hits", a, 7);
  shard->Flush();
  CHECK(value("a") == 14);
  CHECK(value("b") == 100);
}

TEST_CASE("metrics of one event with the same tags share label values but keep their own series") {
  CatalogSpec c;
  c.system = "db";
  c.events = {Event("db.query", {{"rows", Unit::kNone}},
                    {{"table", MetadataType::kString}, {"shard", MetadataType::kInteger}})};
  c.metrics = {
      Metric(MetricType::kCounter, "db.query.count", "db.query", "", {"table"}),
      Metric(MetricType::kSum, "db.query.rows", "db.query", "rows", {"table"}),
      Metric(MetricType::kCounter, "db.query.by_shard", "db.query", "", {"table", "shard"}),
      Metric(MetricType::kSum, "db.query.rows_by_shard", "db.query", "rows", {"table", "shard"})};
  auto mapped = Metric(MetricType::kCounter, "db.query.mapped", "db.query", "");
  mapped.tags = {TagSpec{"table", "table", std::nullopt, {{"users", "u"}}}};
  c.metrics.push_back(mapped);
  auto engine = Engine::Create({c}, {});
  REQUIRE(engine.has_value());
  auto shard = (*engine)->NewShard();
  Feeder feed(*shard);
  const std::string long_name = "orders_archive_2024_first_quarter";
  auto query = [](std::int64_t rows, std::vector<std::pair<std::string, Term>> meta) {
    return Ev("db.query", {{"rows", Number::Int(rows)}}, std::move(meta));
  };
  feed.Send({query(5, {{"table", Term::String("users")}, {"shard", Term::Int(3)}}),
             // An integer and a string with the same text are one label value.
             query(2, {{"shard", Term::String("3")}, {"table", Term::String("users")}}),
             query(1, {{"table", Term::String(long_name)}, {"shard", Term::Int(12)}}),
             // No shard: only the two metrics tagged by it drop the event.
             query(4, {{"table", Term::String("users")}}),
             // A prefix of another value, and a value ending in it, are other series.
             query(1, {{"table", Term::String("user")}, {"shard", Term::Int(3)}}),
             query(1, {{"table", Term::String("users")}, {"shard", Term::Int(31)}}),
             // No table: every metric drops it.
             query(9, {{"shard", Term::Int(3)}})});
  shard->Flush();
  const auto all = (*engine)->Collect();
  using Labels = std::vector<std::pair<std::string, std::string>>;
  auto value = [&](const std::string& metric, const Labels& labels) {
    const auto* s = Series(Find(all, metric), labels);
    REQUIRE_MESSAGE(s != nullptr, metric);
    return s->value;
  };
  CHECK(value("db.query.count", {{"table", "users"}}) == 4);
  CHECK(value("db.query.count", {{"table", long_name}}) == 1);
  CHECK(value("db.query.count", {{"table", "user"}}) == 1);
  CHECK(Find(all, "db.query.count").series.size() == 3);
  CHECK(value("db.query.rows", {{"table", "users"}}) == 12);
  CHECK(value("db.query.rows", {{"table", long_name}}) == 1);
  CHECK(value("db.query.rows", {{"table", "user"}}) == 1);
  CHECK(Find(all, "db.query.rows").series.size() == 3);
  CHECK(value("db.query.by_shard", {{"table", "users"}, {"shard", "3"}}) == 2);
  CHECK(value("db.query.by_shard", {{"table", "users"}, {"shard", "31"}}) == 1);
  CHECK(value("db.query.by_shard", {{"table", long_name}, {"shard", "12"}}) == 1);
  CHECK(value("db.query.by_shard", {{"table", "user"}, {"shard", "3"}}) == 1);
  CHECK(Find(all, "db.query.by_shard").series.size() == 4);
  CHECK(value("db.query.rows_by_shard", {{"table", "users"}, {"shard", "3"}}) == 7);
  CHECK(value("db.query.rows_by_shard", {{"table", "users"}, {"shard", "31"}}) == 1);
  CHECK(value("db.query.rows_by_shard", {{"table", long_name}, {"shard", "12"}}) == 1);
  CHECK(Find(all, "db.query.rows_by_shard").series.size() == 4);
  CHECK(value("db.query.mapped", {{"table", "u"}}) == 4);
  CHECK(value("db.query.mapped", {{"table", "user"}}) == 1);
  CHECK(Find(all, "db.query.mapped").series.size() == 3);
  CHECK(shard->dropped(DropReason::kMissingTag) == 2 + 5);
  CHECK(shard->recorded() == 6 * 5 - 2);
}

TEST_CASE(
    "a shard asks for previews once its series outgrow the caches; a preview changes nothing") {
  CatalogSpec c;
  c.system = "db";
  c.events = {Event("db.query", {{"rows", Unit::kNone}}, {{"table", MetadataType::kString}})};
  c.metrics = {Metric(MetricType::kCounter, "db.query.count", "db.query", "", {"table"}),
               Metric(MetricType::kSum, "db.query.rows", "db.query", "rows", {"table"})};
  EngineOptions options;
  options.max_series_per_metric = 1'000'000;
  options.max_series_total = 1'000'000;
  auto engine = Engine::Create({c}, options);
  REQUIRE(engine.has_value());
  auto shard = (*engine)->NewShard();
  Feeder feed(*shard);
  auto query = [](std::int64_t rows, const std::string& table) {
    return Ev("db.query", {{"rows", Number::Int(rows)}}, {{"table", Term::String(table)}});
  };
  CHECK_FALSE(shard->PreviewHelps());
  // Two series per table: 2^18 series, the size from which previews pay off.
  constexpr int kTables = 1 << 17;
  for (int first = 0; first < kTables; first += 1000) {
    std::vector<wire::EventRecord> batch;
    for (int t = first; t < std::min(kTables, first + 1000); ++t) {
      batch.push_back(query(1, "t" + std::to_string(t)));
    }
    feed.Send(batch);
  }
  CHECK(shard->PreviewHelps());
  const auto recorded = shard->recorded();

  const std::vector<wire::EventRecord> frame = {
      query(5, "t7"), query(2, "new-table"), Ev("db.unknown", {}),
      Ev("db.query", {{"rows", Number::Int(1)}}),  // no table
      query(3, "t7")};
  feed.Preview(frame);
  CHECK(shard->recorded() == recorded);
  CHECK(shard->dropped(DropReason::kUnknownEvent) == 0);
  CHECK(shard->dropped(DropReason::kMissingTag) == 0);
  shard->Flush();
  auto all = (*engine)->Collect();
  CHECK(Series(Find(all, "db.query.rows"), {{"table", "t7"}})->value == 1);
  CHECK(Series(Find(all, "db.query.rows"), {{"table", "new-table"}}) == nullptr);

  feed.Send(frame);
  shard->Flush();
  all = (*engine)->Collect();
  CHECK(Series(Find(all, "db.query.rows"), {{"table", "t7"}})->value == 1 + 5 + 3);
  CHECK(Series(Find(all, "db.query.count"), {{"table", "t7"}})->value == 3);
  CHECK(Series(Find(all, "db.query.rows"), {{"table", "new-table"}})->value == 2);
  CHECK(Find(all, "db.query.count").series.size() == kTables + 1);
  CHECK(shard->dropped(DropReason::kUnknownEvent) == 1);
  CHECK(shard->dropped(DropReason::kMissingTag) == 2);
  CHECK(shard->recorded() == recorded + 6);
}

TEST_CASE("label values repeated within a frame reach exactly the series the table gives them") {
  // A frame's events that repeat a tag group's values take the series an earlier one found (the
  // shard's per-frame memo). Every series must still get exactly its own events, as a model of
  // the tags says: across value kinds that share a text (an integer and a string, a string and an
  // atom, a boolean and a string), nil, absent values with and without a default, value mappings,
  // a group's first metric filtered out of some events, groups whose metrics are not side by
  // side, groups of more tags than a memo holds, and frames decoded one after another from the
  // same buffer, whose strings then lie at the same places.
  CatalogSpec c;
  c.system = "db";
  c.events = {Event("db.query", {{"rows", Unit::kNone}},
                    {{"table", MetadataType::kString}, {"shard", MetadataType::kInteger}})};
  const TagSpec table{"table", "table", std::nullopt, {}};
  const TagSpec shard_tag{"shard", "shard", std::nullopt, {}};
  const TagSpec shard_or_none{"shard", "shard", std::string("none"), {}};
  struct Model {
    MetricSpec spec;
    bool sum;  // adds `rows`; else counts
    bool big;  // only events of 2 rows or more
  };
  std::vector<Model> models;
  auto add = [&](MetricType type, const std::string& name, std::vector<TagSpec> tags,
                 bool big = false) {
    auto m = Metric(type, name, "db.query", type == MetricType::kSum ? "rows" : "");
    m.tags = std::move(tags);
    if (big)
      m.keep = {FilterSpec{.measurement = "rows", .op = FilterSpec::Op::kGe, .threshold = 2}};
    models.push_back({m, type == MetricType::kSum, big});
    c.metrics.push_back(m);
  };
  // Groups: {table} (big, rows), {table, shard} (by_shard, rows_by_shard), interleaved.
  add(MetricType::kCounter, "db.query.big", {table}, true);
  add(MetricType::kCounter, "db.query.by_shard", {table, shard_tag});
  add(MetricType::kSum, "db.query.rows", {table});
  add(MetricType::kCounter, "db.query.mapped",
      {TagSpec{"table", "table", std::nullopt, {{"true", "T"}, {"t1", "one"}}}});
  add(MetricType::kSum, "db.query.rows_by_shard", {table, shard_tag});
  // Metrics of another event, so that the groups below share their memo's place (a metric's id
  // modulo 64) with the ones above.
  c.events.push_back(Event("db.other", {}, {}));
  while (c.metrics.size() < 64) {
    c.metrics.push_back(Metric(MetricType::kCounter,
                               "db.other.c" + std::to_string(c.metrics.size()), "db.other", ""));
  }
  add(MetricType::kCounter, "db.query.either", {table, shard_or_none});
  std::vector<TagSpec> wide;
  for (const char* key : {"table", "shard", "zone", "rack", "host"}) {
    wide.push_back(TagSpec{key, key, std::string("none"), {}});
  }
  add(MetricType::kCounter, "db.query.wide", wide);
  auto engine = Engine::Create({c}, {});
  REQUIRE(engine.has_value());
  auto shard = (*engine)->NewShard();
  Feeder feed(*shard);

  // A metadata value: absent, or a term and the text a label makes of it.
  struct Value {
    bool present = false;
    bool nil = false;
    Term term;
    std::string text;
  };
  auto value = [](int kind, int n) {
    const std::string digits = std::to_string(n);
    const std::string truth = n % 2 == 0 ? "true" : "false";
    switch (kind) {
      case 0:
        return Value{true, false, Term::String("t" + digits), "t" + digits};
      case 1:
        return Value{true, false, Term::Atom("t" + digits), "t" + digits};
      case 2:
        return Value{true, false, Term::Int(n), digits};
      case 3:
        return Value{true, false, Term::String(digits), digits};
      case 4:
        return Value{true, true, Term::Nil(), "nil"};
      case 5:
        return Value{};
      case 6:
        return Value{true, false, Term::Bool(n % 2 == 0), truth};
      case 7:
        return Value{true, false, Term::String(truth), truth};
      default:
        return Value{true, false, Term::Float(n + 0.5), digits + ".5"};
    }
  };
  // What each metric's series must hold (label values joined by '/'), and the drops.
  std::map<std::string, std::map<std::string, double>> want;
  std::uint64_t missing_tags = 0;
  auto query = [&](std::int64_t rows, const Value& table_value, const Value& shard_value) {
    std::vector<std::pair<std::string, Term>> meta;
    if (table_value.present) meta.emplace_back("table", table_value.term);
    if (shard_value.present) meta.emplace_back("shard", shard_value.term);
    for (const auto& model : models) {
      if (model.big && rows < 2) continue;
      std::string key;
      bool missing = false;
      for (const auto& tag : model.spec.tags) {
        const Value none;
        const Value& v = tag.key == "table" ? table_value : tag.key == "shard" ? shard_value : none;
        std::string text = v.text;
        if (!v.present || v.nil) {
          if (tag.default_value) {
            text = *tag.default_value;
          } else if (!v.present) {
            missing = true;
          }
        }
        if (const auto it = tag.values.find(text); it != tag.values.end()) text = it->second;
        key += (key.empty() ? "" : "/") + text;
      }
      if (missing) {
        ++missing_tags;
      } else {
        want[model.spec.name][key] += model.sum ? static_cast<double>(rows) : 1.0;
      }
    }
    return Ev("db.query", {{"rows", Number::Int(rows)}}, std::move(meta));
  };

  // Two frames of one layout: their values lie at the same places in the buffer.
  feed.SendInPlace({query(2, value(0, 11), value(2, 1)), query(3, value(0, 11), value(2, 1))});
  feed.SendInPlace({query(2, value(0, 12), value(2, 2)), query(3, value(0, 12), value(2, 2))});
  // Runs of repeats, with misses between them. Shards: an integer, its digits, absent, nil, or a
  // boolean.
  constexpr std::array<int, 5> kShardKinds = {2, 3, 5, 4, 6};
  std::uint64_t seed = 12345;
  auto next = [&](std::uint64_t n) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<int>((seed >> 33) % n);
  };
  for (int f = 0; f < 600; ++f) {
    std::vector<wire::EventRecord> frame;
    const int events = 1 + next(40);
    int table_kind = next(9);
    int table_n = next(6);
    int shard_kind = next(5);
    int shard_n = next(3);
    for (int e = 0; e < events; ++e) {
      if (next(4) == 0) table_kind = next(9);
      if (next(4) == 0) table_n = next(6);
      if (next(5) == 0) shard_kind = next(5);
      if (next(5) == 0) shard_n = next(3);
      frame.push_back(query(1 + next(3), value(table_kind, table_n),
                            value(kShardKinds[static_cast<std::size_t>(shard_kind)], shard_n)));
    }
    feed.SendInPlace(frame);
  }
  shard->Flush();
  CHECK(feed.errors() == 0);
  CHECK(shard->dropped(DropReason::kMissingTag) == missing_tags);
  const auto all = (*engine)->Collect();
  for (const auto& model : models) {
    const auto& series = want[model.spec.name];
    const auto& got = Find(all, model.spec.name);
    CHECK_MESSAGE(got.series.size() == series.size(), model.spec.name);
    for (const auto& s : got.series) {
      std::string key;
      for (const auto& [label, text] : s.labels) key += (key.empty() ? "" : "/") + text;
      const auto it = series.find(key);
      REQUIRE_MESSAGE(it != series.end(), model.spec.name << " " << key);
      CHECK_MESSAGE(s.value == it->second, model.spec.name << " " << key);
    }
  }
}

TEST_CASE("metadata keys are found by their string reference in each frame, never a stale one") {
  CatalogSpec c;
  c.system = "db";
  c.events = {Event("db.query", {{"rows", Unit::kNone}},
                    {{"table", MetadataType::kString}, {"shard", MetadataType::kInteger}})};
  c.metrics = {Metric(MetricType::kSum, "db.query.rows", "db.query", "rows", {"table", "shard"})};
  auto engine = Engine::Create({c}, {});
  REQUIRE(engine.has_value());
  auto shard = (*engine)->NewShard();
  // Two decoders on one thread, as two listeners of one worker. The frames' string tables list
  // the keys in the order the events use them: "table" and "shard" swap references between
  // frames, and "rows" moves.
  Feeder udp(*shard);
  Feeder tcp(*shard);
  auto query = [](std::int64_t rows, std::vector<std::pair<std::string, Term>> meta) {
    return Ev("db.query", {{"rows", Number::Int(rows)}}, std::move(meta));
  };
  udp.Send({query(1, {{"table", Term::String("users")}, {"shard", Term::Int(3)}})});
  udp.Send({query(2, {{"shard", Term::Int(4)}, {"table", Term::String("orders")}})});
  tcp.Send({Ev("db.query", {{"rows", Number::Int(4)}},
               {{"x", Term::Atom("rows")}, {"shard", Term::Int(5)}, {"table", Term::Atom("a")}})});
  udp.Send({query(8, {{"table", Term::String("users")}, {"shard", Term::Int(3)}})});
  shard->Flush();
  const auto all = (*engine)->Collect();
  const auto& rows = Find(all, "db.query.rows");
  auto value = [&](const std::string& table, const std::string& shard_id) {
    const auto* s = Series(rows, {{"table", table}, {"shard", shard_id}});
    REQUIRE_MESSAGE(s != nullptr, table << " " << shard_id);
    return s->value;
  };
  CHECK(rows.series.size() == 3);
  CHECK(value("users", "3") == 9);
  CHECK(value("orders", "4") == 2);
  CHECK(value("a", "5") == 4);
  CHECK(shard->dropped(DropReason::kMissingTag) == 0);
  CHECK(shard->dropped(DropReason::kMissingMeasurement) == 0);
}

TEST_CASE("StatsD: samples recorded in runs give exactly what they give one at a time") {
  // Splits "k:v,k2" as the daemon's sink does, for the samples that give their tag text.
  struct Splitter {
    static std::span<const StatsdTagView> Split(const void* self, std::string_view text) noexcept {
      auto& out = static_cast<const Splitter*>(self)->tags;
      std::size_t n = 0;
      while (!text.empty() && n < out.size()) {
        const std::size_t comma = std::min(text.find(','), text.size());
        const std::string_view tag = text.substr(0, comma);
        const std::size_t colon = std::min(tag.find(':'), tag.size());
        out[n++] = {tag.substr(0, colon), tag.substr(std::min(colon + 1, tag.size()))};
        text.remove_prefix(std::min(comma + 1, text.size()));
      }
      return {out.data(), n};
    }
    mutable std::array<StatsdTagView, 8> tags{};
  } splitter;
  const std::array<std::string, 4> names = {"hits", "load", "lat", "hits.b"};
  const std::array<std::string, 4> tag_texts = {"", "env:prod", "env:prod,host:a",
                                                "host:b,env:dev"};
  const StatsdTagView wire_tags[] = {{"host", "c"}, {"env", "prod"}};
  // A fixed pseudo-random mix: counters, gauges set and moved, timers, sets; repeats within a run
  // (the first creates the series, the later ones find it); a name used with two types; values
  // that are dropped (not finite, a negative counter); runs longer than the shard's 32.
  std::vector<StatsdInput> samples;
  std::uint64_t r = 12345;
  auto next = [&] {
    r = r * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<unsigned>(r >> 33);
  };
  std::vector<std::string> members;
  for (int i = 0; i < 300; ++i) members.push_back("m" + std::to_string(i % 7));
  for (int i = 0; i < 300; ++i) {
    StatsdInput in;
    const unsigned name = next() % names.size();
    in.name = names[name];
    // Each name has its type; now and then another, a conflict.
    const unsigned kinds[] = {0, 1, 2, 5};
    in.kind = static_cast<StatsdKind>(next() % 10 == 0 ? next() % 6 : kinds[name]);
    in.value = static_cast<double>(next() % 100) - 10;
    in.sample_rate = next() % 5 == 0 ? 0.5 : 1;
    in.gauge_delta = in.kind == StatsdKind::kGauge && next() % 2 == 0;
    in.set_member = members[static_cast<std::size_t>(i)];
    if (next() % 23 == 0) in.value = std::numeric_limits<double>::quiet_NaN();
    const unsigned t = next() % 5;
    if (t < tag_texts.size()) {
      in.tag_text = tag_texts[t];
      in.split_tags = &Splitter::Split;
      in.split_context = &splitter;
    } else {
      in.tags = wire_tags;
    }
    samples.push_back(in);
    if (next() % 4 == 0) samples.push_back(in);  // the same identity again, at once
  }
  auto one_at_a_time = MakeEngine();
  auto in_runs = MakeEngine();
  auto a = one_at_a_time->NewShard();
  auto b = in_runs->NewShard();
  for (const auto& in : samples) a->RecordStatsd(in);
  // Runs of several lengths: 1, 7, 25, 32, 33, 100, then the rest.
  std::span<const StatsdInput> rest(samples);
  for (const std::size_t n : {1U, 7U, 25U, 32U, 33U, 100U}) {
    b->RecordStatsd(rest.first(n));
    rest = rest.subspan(n);
  }
  b->RecordStatsd(rest);
  a->Flush();
  b->Flush();
  CHECK(a->recorded() == b->recorded());
  CHECK(a->recorded() > 200);
  for (std::size_t reason = 0; reason < kDropReasonCount; ++reason) {
    CHECK(a->dropped(static_cast<DropReason>(reason)) ==
          b->dropped(static_cast<DropReason>(reason)));
  }
  CHECK(a->dropped(DropReason::kNonFinite) > 0);
  CHECK(a->dropped(DropReason::kNegativeCounter) > 0);
  CHECK(a->dropped(DropReason::kStatsdTypeConflict) > 0);
  auto points = [](Engine& engine) {
    std::map<std::string, std::tuple<double, std::uint64_t, double, std::vector<double>>> out;
    for (const auto& m : engine.Collect()) {
      for (const auto& s : m.series) {
        std::string key = m.info.name;
        for (const auto& [k, v] : s.labels) key += "," + k + "=" + v;
        out[key] = {s.value, s.count, s.sum, s.quantile_values};
      }
    }
    return out;
  };
  const auto expected = points(*one_at_a_time);
  CHECK(expected.size() > 10);
  CHECK(points(*in_runs) == expected);
}

TEST_CASE("StatsD: more identities than the sample cache holds each reach their own series") {
  EngineOptions options;
  options.max_series_total = 100'000;
  options.max_series_per_metric = 100'000;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  constexpr int kIds = 20'000;  // the cache holds 8,192: sets fill and evict
  std::vector<std::string> ids;
  for (int i = 0; i < kIds; ++i) ids.push_back(std::to_string(i));
  std::vector<StatsdTagView> tags(kIds);
  std::vector<StatsdInput> samples(kIds);
  for (int round = 1; round <= 3; ++round) {
    for (std::size_t i = 0; i < kIds; ++i) {
      tags[i] = {"id", ids[i]};
      samples[i] =
          StatsdInput{"many", StatsdKind::kCounter, static_cast<double>(i % 5 + 1), {}, false,
                      1,      {&tags[i], 1}};
    }
    shard->RecordStatsd(samples);
  }
  shard->Flush();
  const auto all = engine->Collect();
  const auto& many = Find(all, "many");
  REQUIRE(many.series.size() == kIds);
  std::size_t right = 0;
  for (const auto& series : many.series) {
    const auto i = std::stoul(series.labels.at(0).second);
    right += series.value == static_cast<double>(3 * (i % 5 + 1)) ? 1 : 0;
  }
  CHECK(right == kIds);
}

TEST_CASE("StatsD: identities that differ in one byte anywhere reach their own series") {
  EngineOptions options;
  options.max_series_per_metric = 10'000;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  // Tag texts and names of 1 to 40 bytes, one byte changed at each place in turn, so that the
  // change falls everywhere in the identity hash's steps and in the last bytes it reads.
  std::vector<std::string> texts;
  std::vector<std::string> values;
  for (std::size_t length = 1; length <= 40; ++length) {
    for (std::size_t at = 0; at <= length; ++at) {  // at == length: none changed
      std::string value(length, 'a');
      if (at < length) value[at] = 'b';
      values.push_back(value);
      texts.push_back("v:" + value);
    }
  }
  for (const double n : {1.0, 2.0}) {
    for (std::size_t i = 0; i < values.size(); ++i) {
      const StatsdTagView tag{"v", values[i]};
      shard->RecordStatsd(
          StatsdInput{"tagged", StatsdKind::kCounter, n, {}, false, 1, {&tag, 1}, texts[i]});
      shard->RecordStatsd(StatsdInput{"n" + values[i], StatsdKind::kCounter, n, {}, false, 1, {}});
    }
    // The same bytes split otherwise between the name and the tag text.
    const StatsdTagView ab{"ab", ""};
    const StatsdTagView b{"b", ""};
    shard->RecordStatsd(StatsdInput{"x", StatsdKind::kCounter, n, {}, false, 1, {&ab, 1}, "ab"});
    shard->RecordStatsd(StatsdInput{"xa", StatsdKind::kCounter, n, {}, false, 1, {&b, 1}, "b"});
  }
  shard->Flush();
  const auto all = engine->Collect();
  const auto& tagged = Find(all, "tagged");
  CHECK(tagged.series.size() == values.size());
  std::size_t right = 0;
  for (const auto& series : tagged.series) right += series.value == 3 ? 1 : 0;
  CHECK(right == values.size());
  std::size_t names_right = 0;
  for (const auto& value : values) names_right += Find(all, "n" + value).series.at(0).value == 3;
  CHECK(names_right == values.size());
  CHECK(Find(all, "x").series.at(0).value == 3);
  CHECK(Find(all, "xa").series.at(0).value == 3);
}

TEST_CASE("StatsD: the sample cache keys on the tag text as sent") {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  options.max_series_per_metric = 10'000;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  const StatsdTagView env_host[] = {{"env", "prod"}, {"host", "a"}};
  const StatsdTagView host_env[] = {{"host", "a"}, {"env", "prod"}};
  const StatsdTagView env_host_b[] = {{"env", "prod"}, {"host", "b"}};
  auto count = [&](std::string_view name, std::span<const StatsdTagView> tags,
                   std::string_view text, double n) {
    shard->RecordStatsd(StatsdInput{name, StatsdKind::kCounter, n, {}, false, 1, tags, text});
  };
  auto value = [&](const std::string& name, const std::string& host) {
    const auto all = engine->Collect();
    const auto* s = Series(Find(all, name), {{"env", "prod"}, {"host", host}});
    return s == nullptr ? -1.0 : s->value;
  };
  // The same text again, the tags in another order, and the tags without a text all reach one
  // series; another host has its own.
  count("hits", env_host, "env:prod,host:a", 1);
  count("hits", env_host, "env:prod,host:a", 2);
  count("hits", host_env, "host:a,env:prod", 4);
  count("hits", env_host, {}, 8);
  count("hits", env_host_b, "env:prod,host:b", 100);
  count("hits", env_host_b, "env:prod,host:b", 100);
  // Same text, other name or type: not the same series.
  count("misses", env_host, "env:prod,host:a", 1000);
  shard->RecordStatsd(StatsdInput{"hits",
                                  StatsdKind::kGauge,
                                  5,
                                  {},
                                  false,
                                  1,
                                  env_host,
                                  "env:prod,host:a"});  // a type conflict, every time
  shard->RecordStatsd(
      StatsdInput{"hits", StatsdKind::kGauge, 5, {}, false, 1, env_host, "env:prod,host:a"});
  shard->Flush();
  CHECK(value("hits", "a") == 15);
  CHECK(value("hits", "b") == 200);
  CHECK(value("misses", "a") == 1000);
  CHECK(engine->counters().series == 3);
  CHECK(shard->dropped(DropReason::kStatsdTypeConflict) == 2);

  // More identities than cache slots (8,192; the default series limit is 10,000), each sent twice
  // in a row and then all again: every sample lands on its own series whichever were evicted.
  constexpr int kHosts = 9'000;
  std::vector<std::string> hosts;
  for (int i = 0; i < kHosts; ++i) hosts.push_back(std::to_string(i));
  for (int round = 0; round < 2; ++round) {
    for (const auto& host : hosts) {
      const StatsdTagView tags[] = {{"env", "prod"}, {"host", host}};
      const std::string text = "env:prod,host:" + host;
      count("many", tags, text, 1);
      count("many", tags, text, 1);
    }
  }
  shard->Flush();
  const auto all = engine->Collect();
  const auto& many = Find(all, "many");
  CHECK(many.series.size() == kHosts);
  CHECK(std::all_of(many.series.begin(), many.series.end(),
                    [](const SeriesPoint& s) { return s.value == 4; }));

  // After idle series expire (their indexes are reused), a cached text must not reach a stale one.
  ExpireIdle({shard.get()});
  CHECK(engine->counters().series == 0);
  count("hits", env_host_b, "env:prod,host:b", 3);
  count("hits", env_host, "env:prod,host:a", 7);
  count("hits", env_host, "env:prod,host:a", 7);
  shard->Flush();
  CHECK(value("hits", "a") == 14);
  CHECK(value("hits", "b") == 3);
}

TEST_CASE("a snapshot keeps the values of its moment and outlives its engine") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  const std::vector<std::pair<std::string, Term>> n1 = {{"node_id", Term::String("n1")},
                                                        {"status", Term::Atom("normal")}};
  feed.Send({Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(2)}}, n1),
             Ev("op.stop", {{"duration", Number::Int(5'000'000)}}, n1)});
  const StatsdTagView tags[] = {{"env", "prod"}, {"canary", ""}};
  shard->RecordStatsd(StatsdInput{"hits", StatsdKind::kCounter, 3, {}, false, 1, tags});
  shard->Flush();
  const Snapshot snapshot = engine->CollectSnapshot();
  CHECK(snapshot.series() == engine->counters().series);
  // Later records do not reach the snapshot; the engine goes away before it is read.
  feed.Send({Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(2)}}, n1)});
  shard->Flush();
  shard.reset();
  engine.reset();

  struct Seen final : SnapshotVisitor {
    void Metric(const MetricInfo& info, std::size_t count) override {
      current = info.name;
      announced[current] = count;
    }
    void Series(std::span<const LabelRef> labels, const SeriesPoint& point) override {
      std::string text;
      for (const auto& l : labels) text += std::string(l.name) + "=" + std::string(l.value) + ";";
      series[current].emplace_back(text, point);
    }
    std::string current;
    std::map<std::string, std::size_t> announced;
    std::map<std::string, std::vector<std::pair<std::string, SeriesPoint>>> series;
  } seen;
  snapshot.Visit(seen);
  for (const auto& [name, n] : seen.announced) CHECK(seen.series[name].size() == n);
  REQUIRE(seen.series["vsr.protocol.prepare.sent.count"].size() == 1);
  CHECK(seen.series["vsr.protocol.prepare.sent.count"][0].first == "node_id=n1;");
  CHECK(seen.series["vsr.protocol.prepare.sent.count"][0].second.value == 1);
  REQUIRE(seen.series["vsr.protocol.prepare.sent.replicas"].size() == 1);
  CHECK(seen.series["vsr.protocol.prepare.sent.replicas"][0].second.value == 2);
  REQUIRE(seen.series["op.stop.duration"].size() == 1);
  CHECK(seen.series["op.stop.duration"][0].second.count == 1);
  CHECK(seen.series["op.stop.duration"][0].second.bucket_counts ==
        std::vector<std::uint64_t>{0, 1, 0, 0});
  REQUIRE(seen.series["hits"].size() == 1);
  CHECK(seen.series["hits"][0].first == "canary=true;env=prod;");
  CHECK(seen.series["hits"][0].second.value == 3);
  CHECK(seen.announced.at("policy.load.queue_len") == 0);
  // Points() gives the same series with their labels copied.
  const auto points = snapshot.Points();
  CHECK(Find(points, "hits").series.at(0).labels ==
        std::vector<std::pair<std::string, std::string>>{{"canary", "true"}, {"env", "prod"}});
}

TEST_CASE("StatsD: many names, each its own metric; limits per name; types per name") {
  EngineOptions options;
  options.max_series_per_metric = 3;
  options.statsd_max_metrics = 20'003;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  auto sample = [&](const std::string& name, StatsdKind kind, double value,
                    std::span<const StatsdTagView> tags = {}) {
    shard->RecordStatsd(StatsdInput{name, kind, value, {}, false, 1, tags});
  };
  // More names than the shard's name cache and the snapshot's plain sort hold, each with two
  // series, sent twice.
  constexpr int kNames = 20'000;
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < kNames; ++i) {
      const std::string name = "app.requests." + std::to_string(i);
      const StatsdTagView a[] = {{"host", "a"}};
      sample(name, StatsdKind::kCounter, i);
      sample(name, StatsdKind::kCounter, 1, a);
    }
  }
  shard->Flush();
  auto all = engine->Collect();
  std::size_t names = 0;
  bool values_ok = true;
  for (const auto& m : all) {
    if (m.info.system != "statsd") continue;
    ++names;
    const int i = std::stoi(m.info.name.substr(std::string("app.requests.").size()));
    values_ok = values_ok && m.info.type == MetricType::kCounter && m.series.size() == 2;
    for (const auto& s : m.series) {
      values_ok = values_ok && s.value == (s.labels.empty() ? 2.0 * i : 2.0);
    }
  }
  CHECK(names == kNames);
  CHECK(values_ok);
  CHECK(engine->counters().statsd_metrics == kNames);
  CHECK(engine->counters().series == 2 * kNames);
  // StatsD names are no catalog metrics; their series count per StatsD type.
  CHECK(engine->metrics().size() ==
        TestCatalog().metrics.size() + TestCatalog().span_gauges.size());
  const auto per_metric = engine->counters().series_per_metric;
  CHECK(std::find(per_metric.begin(), per_metric.end(),
                  std::pair<std::string, std::uint64_t>{"statsd:counter", 2 * kNames}) !=
        per_metric.end());

  // At most max_series_per_metric series per name, not per StatsD type.
  for (const char* host : {"b", "c", "d"}) {
    const StatsdTagView tags[] = {{"host", host}};
    sample("app.requests.1", StatsdKind::kCounter, 1, tags);
    sample("app.requests.2", StatsdKind::kCounter, 1, tags);
  }
  shard->Flush();
  all = engine->Collect();
  CHECK(Find(all, "app.requests.1").series.size() == 3);
  CHECK(Find(all, "app.requests.2").series.size() == 3);
  CHECK(shard->dropped(DropReason::kSeriesOverflow) == 4);

  // A name keeps its first type; a timer and a histogram are two types (their units differ),
  // `h` and `d` one.
  sample("app.requests.1", StatsdKind::kGauge, 1);
  sample("latency", StatsdKind::kTimer, 5);
  sample("latency", StatsdKind::kHistogram, 5);
  sample("size", StatsdKind::kHistogram, 5);
  sample("size", StatsdKind::kDistribution, 7);
  CHECK(shard->dropped(DropReason::kStatsdTypeConflict) == 2);
  // Three more names fit; the fourth is one too many, every time.
  sample("depth", StatsdKind::kGauge, 1);
  sample("one.too.many", StatsdKind::kGauge, 1);
  sample("one.too.many", StatsdKind::kGauge, 1);
  CHECK(shard->dropped(DropReason::kStatsdMetricOverflow) == 2);
  shard->Flush();
  all = engine->Collect();
  CHECK(Find(all, "latency").series.at(0).count == 1);
  CHECK(Find(all, "latency").info.unit == Unit::kMillisecond);
  CHECK(Find(all, "size").series.at(0).count == 2);
  CHECK(Find(all, "size").info.unit == Unit::kNone);
  CHECK(Find(all, "depth").series.at(0).value == 1);
}

TEST_CASE("StatsD: expired series leave their name's room to new ones") {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  options.max_series_per_metric = 3;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  auto count = [&](const char* host) {
    const StatsdTagView tags[] = {{"host", host}};
    shard->RecordStatsd(StatsdInput{"hits", StatsdKind::kCounter, 1, {}, false, 1, tags});
  };
  for (const char* host : {"a", "b", "c", "d"}) count(host);
  shard->Flush();
  CHECK(Find(engine->Collect(), "hits").series.size() == 3);
  CHECK(shard->dropped(DropReason::kSeriesOverflow) == 1);
  ExpireIdle({shard.get()});
  CHECK(engine->counters().series == 0);
  for (const char* host : {"x", "y", "z", "w"}) count(host);
  shard->Flush();
  CHECK(Find(engine->Collect(), "hits").series.size() == 3);
  CHECK(shard->dropped(DropReason::kSeriesOverflow) == 2);
}

TEST_CASE("StatsD: a name goes with its last series; its place and its type are free again") {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  options.statsd_max_metrics = 1;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  SendStatsd(*shard, "a", StatsdKind::kCounter, 5);
  shard->Flush();
  CHECK(engine->counters().statsd_metrics == 1);
  // The one place is taken: refused, and the shard keeps that answer.
  SendStatsd(*shard, "b", StatsdKind::kGauge, 7);
  SendStatsd(*shard, "b", StatsdKind::kGauge, 7);
  CHECK(shard->dropped(DropReason::kStatsdMetricOverflow) == 2);
  ExpireIdle({shard.get()});
  CHECK(engine->counters().series == 0);
  CHECK(engine->counters().statsd_metrics == 0);
  // The same shard takes the name it refused before.
  SendStatsd(*shard, "b", StatsdKind::kGauge, 7);
  shard->Flush();
  CHECK(shard->dropped(DropReason::kStatsdMetricOverflow) == 2);
  CHECK(Find(engine->Collect(), "b").series.at(0).value == 7);
  SendStatsd(*shard, "a", StatsdKind::kGauge, 3);
  CHECK(shard->dropped(DropReason::kStatsdMetricOverflow) == 3);
  ExpireIdle({shard.get()});
  // "a" was a counter; forgotten, it may come back as a gauge.
  SendStatsd(*shard, "a", StatsdKind::kGauge, 3);
  shard->Flush();
  const auto all = engine->Collect();
  CHECK(Find(all, "a").info.type == MetricType::kLastValue);
  CHECK(Find(all, "a").series.at(0).value == 3);
  CHECK(shard->dropped(DropReason::kStatsdTypeConflict) == 0);
}

TEST_CASE("StatsD: a name whose series never reached the store is forgotten too") {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(20);
  options.max_series_total = 1;
  options.statsd_max_metrics = 2;
  auto engine = MakeEngine(options);
  auto first = engine->NewShard();
  auto second = engine->NewShard();
  auto third = engine->NewShard();
  SendStatsd(*first, "a", StatsdKind::kCounter);
  first->Flush();
  // "b" is admitted by its shard, but the store has no room for its series.
  SendStatsd(*second, "b", StatsdKind::kCounter);
  second->Flush();
  CHECK(second->dropped(DropReason::kSeriesOverflow) == 1);
  CHECK(engine->counters().statsd_metrics == 2);
  SendStatsd(*third, "c", StatsdKind::kCounter);
  CHECK(third->dropped(DropReason::kStatsdMetricOverflow) == 1);
  ExpireIdle({first.get(), second.get(), third.get()});
  CHECK(engine->counters().statsd_metrics == 0);
  SendStatsd(*third, "c", StatsdKind::kCounter);
  third->Flush();
  CHECK(third->dropped(DropReason::kStatsdMetricOverflow) == 1);
  CHECK(Find(engine->Collect(), "c").series.at(0).value == 1);
}

TEST_CASE("StatsD: a shard that kept a forgotten name's old type cannot bring it back as that") {
  auto [engine, first, second] = ShortLivedEngine();
  SendStatsd(*first, "a", StatsdKind::kCounter, 1);
  SendStatsd(*second, "a", StatsdKind::kCounter, 1);
  first->Flush();
  second->Flush();
  CHECK(Find(engine->Collect(), "a").series.at(0).value == 2);
  // The first shard's flushes expire the store's series and forget the name; the second shard
  // still holds its own idle series of "a" as a counter.
  ExpireIdle({first.get()});
  CHECK(engine->counters().statsd_metrics == 0);
  SendStatsd(*first, "a", StatsdKind::kGauge, 9);
  SendStatsd(*second, "a", StatsdKind::kCounter, 4);
  first->Flush();
  second->Flush();
  CHECK(second->dropped(DropReason::kStatsdTypeConflict) == 1);
  // Its series of "a" as a counter lives on in the shard until it idles out, and every flush
  // of it is refused.
  SendStatsd(*second, "a", StatsdKind::kCounter, 4);
  second->Flush();
  CHECK(second->dropped(DropReason::kStatsdTypeConflict) == 2);
  std::size_t named_a = 0;
  for (const auto& m : engine->Collect())
    if (m.info.name == "a") ++named_a;
  CHECK(named_a == 1);
  CHECK(Find(engine->Collect(), "a").info.type == MetricType::kLastValue);
  CHECK(Find(engine->Collect(), "a").series.at(0).value == 9);
}

TEST_CASE("reload: StatsD names keep their types, also names first seen during the switch") {
  EngineOptions options;
  auto before = MakeEngine(options);
  auto old_shard = before->NewShard();
  auto sample = [](Shard& shard, std::string_view name, StatsdKind kind, double value,
                   bool delta = false, std::string_view member = {}) {
    shard.RecordStatsd(StatsdInput{name, kind, value, member, delta, 1, {}});
  };
  sample(*old_shard, "hits", StatsdKind::kCounter, 5);
  sample(*old_shard, "depth", StatsdKind::kGauge, 3);
  sample(*old_shard, "level", StatsdKind::kGauge, 10);
  sample(*old_shard, "queue", StatsdKind::kGauge, 10);
  sample(*old_shard, "flips", StatsdKind::kCounter, 2);
  old_shard->Flush();
  auto after = MakeEngine(options);
  auto new_shard = after->NewShard();
  // The new shard records and flushes before the engine takes over the old one's series: a new
  // name, a series both hold, a gauge moved by a delta and one set, and a name of another type.
  sample(*new_shard, "users", StatsdKind::kSet, 0, false, "ann");
  sample(*new_shard, "hits", StatsdKind::kCounter, 1);
  sample(*new_shard, "queue", StatsdKind::kGauge, -4, true);
  sample(*new_shard, "level", StatsdKind::kGauge, 4);
  sample(*new_shard, "flips", StatsdKind::kGauge, 1);
  new_shard->Flush();
  const auto result = after->Adopt(*before);
  const std::size_t catalog = TestCatalog().metrics.size() + TestCatalog().span_gauges.size();
  CHECK(result.kept == catalog + 5);
  CHECK(result.series == 4);  // the old counter "flips" is left out: "flips" is a gauge now
  before.reset();
  old_shard.reset();
  sample(*new_shard, "depth", StatsdKind::kCounter, 1);
  sample(*new_shard, "users", StatsdKind::kCounter, 1);
  sample(*new_shard, "flips", StatsdKind::kCounter, 1);
  CHECK(new_shard->dropped(DropReason::kStatsdTypeConflict) == 3);
  new_shard->Flush();
  const auto all = after->Collect();
  CHECK(Find(all, "hits").series.size() == 1);
  CHECK(Find(all, "hits").series.at(0).value == 6);
  CHECK(Find(all, "depth").series.at(0).value == 3);
  CHECK(Find(all, "queue").series.at(0).value == 6);  // 10, then -4
  CHECK(Find(all, "level").series.at(0).value == 4);  // set since
  CHECK(Find(all, "users").series.at(0).value == 1);
  std::size_t flips = 0;
  for (const auto& m : all) {
    if (m.info.name != "flips") continue;
    ++flips;
    CHECK(m.info.type == MetricType::kLastValue);
    CHECK(m.series.at(0).value == 1);
  }
  CHECK(flips == 1);
  CHECK(after->counters().statsd_metrics == 6);
  CHECK(after->counters().series == 6);
}

TEST_CASE("reload: set members that two engines hold beyond kMaxSetMembers are told apart") {
  auto before = MakeEngine();
  auto old_shard = before->NewShard();
  auto member = [](Shard& shard, int i) {
    const std::string m = "u" + std::to_string(i);
    shard.RecordStatsd(StatsdInput{"users", StatsdKind::kSet, 0, m, false, 1, {}});
  };
  const int max = static_cast<int>(kMaxSetMembers);
  for (int i = 0; i < max - 100; ++i) member(*old_shard, i);
  old_shard->Flush();
  auto after = MakeEngine();
  auto new_shard = after->NewShard();
  // 50 members the old engine holds, and 250 new ones: 150 of them find no room.
  for (int i = max - 150; i < max + 150; ++i) member(*new_shard, i);
  new_shard->Flush();
  const auto result = after->Adopt(*before);
  CHECK(result.set_members_dropped == 150);
  CHECK(Find(after->Collect(), "users").series.at(0).value == max);
}

TEST_CASE("reload: an Adopt that runs out of memory leaves exact counts and one type per name") {
  EngineOptions options;
  options.series_ttl = std::chrono::milliseconds(5);
  const StatsdKind kinds[] = {StatsdKind::kCounter, StatsdKind::kGauge, StatsdKind::kTimer};
  // Names taken whole (the new engine has none yet), or merged with the new engine's own.
  for (const bool merge : {false, true}) {
    CAPTURE(merge);
    // Every allocation of Adopt fails once, one run each, until a run needs none to fail.
    bool completed = false;
    int runs = 0;
    bool counts_exact = true;
    bool one_type_per_name = true;
    bool names_expire = true;
    for (long fail_after = 0; !completed && fail_after < 10'000; ++fail_after, ++runs) {
      auto before = MakeEngine(options);
      auto old_shard = before->NewShard();
      for (int i = 0; i < 300; ++i)
        SendStatsd(*old_shard, "old." + std::to_string(i), kinds[i % 3]);
      old_shard->Flush();
      auto after = MakeEngine(options);
      auto new_shard = after->NewShard();
      if (merge) {
        SendStatsd(*new_shard, "new", StatsdKind::kCounter);
        new_shard->Flush();
      }
      allocations_left = fail_after;
      try {
        after->Adopt(*before);
        completed = true;
      } catch (const std::bad_alloc&) {
      }
      allocations_left = -1;
      std::size_t collected = 0;
      for (const auto& m : after->Collect()) collected += m.series.size();
      counts_exact = counts_exact && after->counters().series == collected;
      // Every old name sent again as a set: refused where the name was carried over with its
      // type, taken where it was left behind; never one name under two types.
      for (int i = 0; i < 300; ++i) {
        SendStatsd(*new_shard, "old." + std::to_string(i), StatsdKind::kSet);
      }
      new_shard->Flush();
      std::map<std::string, int> families;
      for (const auto& m : after->Collect()) ++families[m.info.name];
      for (const auto& [name, n] : families) one_type_per_name = one_type_per_name && n == 1;
      // Each name's count of series is right too: the last series' expiry forgets every name.
      for (int i = 0; i < 2; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(15));
        new_shard->Flush();
      }
      names_expire =
          names_expire && after->counters().series == 0 && after->counters().statsd_metrics == 0;
    }
    CHECK(completed);
    // Taken whole, the tables and names move without an allocation: nothing can fail.
    CHECK((merge ? runs > 1 : runs == 1));
    CHECK(counts_exact);
    CHECK(one_type_per_name);
    CHECK(names_expire);
  }
}

// Everything an engine exports, and every count a shard keeps, as one text: series sorted, so
// that two engines fed the same compare equal whatever order their tables hold the series in.
std::string Dump(Engine& engine, const Shard& shard) {
  std::ostringstream out;
  out.precision(17);
  auto points = [&](std::vector<MetricPoints> all) {
    std::vector<std::string> lines;
    for (const auto& m : all) {
      for (const auto& s : m.series) {
        std::ostringstream line;
        line.precision(17);
        line << m.info.name;
        for (const auto& [k, v] : s.labels) line << ' ' << k << '=' << v;
        line << " value=" << s.value << " count=" << s.count << " sum=" << s.sum << " buckets";
        for (const auto b : s.bucket_counts) line << ' ' << b;
        line << " quantiles";
        for (const auto q : s.quantile_values) line << ' ' << q;
        lines.push_back(line.str());
      }
    }
    std::sort(lines.begin(), lines.end());
    for (const auto& l : lines) out << l << '\n';
  };
  points(engine.Collect());
  out << "-- deltas\n";
  points(engine.TakeDeltas());
  for (std::size_t r = 0; r < kDropReasonCount; ++r) {
    const auto reason = static_cast<DropReason>(r);
    out << DropReasonName(reason) << ' ' << shard.dropped(reason) << '\n';
  }
  std::uint64_t unknown = 0;  // by name, or without one when there was no memory for it
  for (const auto& [name, n] : engine.counters().unknown_events) unknown += n;
  out << "unknown " << unknown << " series " << engine.counters().series << '\n';
  return out.str();
}

// Calls `run(fail_after)`, whose allocation after `fail_after` more is to fail, for fail_after =
// 0, 1, ... until it returns false: a run that needed no allocation to fail. Returns how many did.
template <typename Run>
int ForEachFailure(Run run) {
  int failures = 0;
  for (long fail_after = 0; fail_after < 10'000; ++fail_after, ++failures) {
    CAPTURE(fail_after);
    if (!run(fail_after)) break;
  }
  return failures;
}

// ForEachFailure, checking that every run's result is `expected`: `run(fail_after, failed)`
// returns the result and sets `failed` when an allocation failed.
template <typename Run>
void CheckEveryFailure(const std::string& expected, Run run) {
  int mismatches = 0;
  const int failures = ForEachFailure([&](long fail_after) {
    bool failed = false;
    const std::string got = run(fail_after, failed);
    if (failed && got != expected && ++mismatches == 1) CHECK(got == expected);
    return failed;
  });
  CHECK(failures > 10);
  CHECK(mismatches == 0);
}

// after.Adopt(before) with the allocation after `fail_after` more failing; whether it completed.
bool AdoptFailing(Engine& after, Engine& before, long fail_after) {
  bool completed = true;
  allocations_left = fail_after;
  try {
    (void)after.Adopt(before);
  } catch (const std::bad_alloc&) {
    completed = false;
  }
  allocations_left = -1;
  return completed;
}

// Every kind of metric and StatsD type, in three rounds.
// Round 0 fills a set nearly to kMaxSetMembers: round 1's members fit, round 2's overflow it.
void RecordMembers(Shard& shard, int first, int last) {
  for (int i = first; i < last; ++i) {
    const std::string member = "u" + std::to_string(i);
    shard.RecordStatsd(StatsdInput{"users", StatsdKind::kSet, 0, member, false, 1, {}});
  }
}
void RecordRound(Shard& shard, Feeder& feed, int r) {
  const int max = static_cast<int>(kMaxSetMembers);
  if (r == 0) return RecordMembers(shard, 0, max - 40);
  const double scale = r == 1 ? 1 : 1e6;  // round 2 widens the summary's and timers' range
  feed.Send(
      {Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(3)}},
          {{"node_id", Term::String("n" + std::to_string(r))}, {"status", Term::Atom("normal")}}),
       Ev("vsr.protocol.prepare.sent", {{"count", Number::Float(0.5)}},
          {{"node_id", Term::String("n0")}, {"status", Term::Atom("normal")}}),
       Ev("vsr.leadership.stop",
          {{"monotonic_time", Number::Int(5)}, {"duration", Number::Int(2'000'000 * r)}},
          {{"node_id", Term::String("n" + std::to_string(r))}}),
       Ev("op.stop", {{"duration", Number::Int(30'000 * r)}}, {{"node_id", Term::String("x")}}),
       Ev("policy.load", {{"duration_us", Number::Float(7 * scale)}, {"queue_len", Number::Int(r)}},
          {{"reason", Term::Atom(r == 1 ? "ttl_expired" : "full")}}),
       Ev("policy.load", {{"duration_us", Number::Float(0.01 * scale)}}, {}),
       Ev("unknown.event." + std::to_string(r), {}), Ev("unknown.event.0", {})});
  SendStatsd(shard, "hits", StatsdKind::kCounter, 2 * r);
  SendStatsd(shard, "hits." + std::to_string(r), StatsdKind::kCounter);
  SendStatsd(shard, "depth", StatsdKind::kGauge, 10 * r);
  shard.RecordStatsd(StatsdInput{"depth.delta", StatsdKind::kGauge, -3, {}, true, 1, {}});
  SendStatsd(shard, "latency", StatsdKind::kTimer, 5 * scale);
  SendStatsd(shard, "size", StatsdKind::kHistogram, 50 * r);
  SendStatsd(shard, "spread", StatsdKind::kDistribution, 0.001 * scale);
  // Round 1: 30 new members; round 2: 30 new ones, of which 20 find no room.
  if (r == 1) RecordMembers(shard, max - 45, max - 10);
  if (r == 2) RecordMembers(shard, max - 20, max + 20);
}

// An engine for RecordRound's metrics (StatsD timers and histograms with buckets), its shard
// and a Feeder of it.
struct AllKinds {
  static EngineOptions Options() {
    EngineOptions options;
    options.statsd_buckets = {10, 100};
    return options;
  }
  std::unique_ptr<Engine> engine = MakeEngine(Options());
  std::unique_ptr<Shard> shard = engine->NewShard();
  Feeder feed{*shard};
  void Record(int round) { RecordRound(*shard, feed, round); }
  [[nodiscard]] std::string Dump() { return ::Dump(*engine, *shard); }
};

TEST_CASE("a series merged at a flush starts again from nothing in its shard") {
  AllKinds e;
  const double latencies_us[] = {1, 2, 100};
  for (int round = 0; round < 3; ++round) {
    e.feed.Send({Ev("op.stop", {{"duration", Number::Int(30'000)}}, {}),
                 Ev("policy.load", {{"duration_us", Number::Float(latencies_us[round])}}, {})});
    SendStatsd(*e.shard, "latency", StatsdKind::kTimer, 5);
    SendStatsd(*e.shard, "size", StatsdKind::kHistogram, 50);
    SendStatsd(*e.shard, "hits", StatsdKind::kCounter, 1);
    const std::string member = "u" + std::to_string(round);
    e.shard->RecordStatsd(StatsdInput{"users", StatsdKind::kSet, 0, member, false, 1, {}});
    REQUIRE(e.shard->Flush());
  }
  const auto all = e.engine->Collect();
  CHECK(Find(all, "op.stop.duration").series.at(0).count == 3);
  CHECK(Find(all, "op.stop.duration").series.at(0).bucket_counts ==
        std::vector<std::uint64_t>{3, 0, 0, 0});
  CHECK(Find(all, "policy.load.latency").series.at(0).count == 3);
  // The median of 1, 2 and 100 µs: the sketch holds each value once.
  CHECK(Find(all, "policy.load.latency").series.at(0).quantile_values.at(0) ==
        doctest::Approx(2e-6).epsilon(0.02).scale(0));
  CHECK(Find(all, "latency").series.at(0).count == 3);
  CHECK(Find(all, "size").series.at(0).sum == 150);
  CHECK(Find(all, "size").series.at(0).bucket_counts == std::vector<std::uint64_t>{0, 3, 0});
  CHECK(Find(all, "hits").series.at(0).value == 3);
  CHECK(Find(all, "users").series.at(0).value == 3);
}

TEST_CASE("a flush that runs out of memory anywhere merges every update once, at the next flush") {
  auto run = [&](int failing_round, long fail_after, bool& failed) {
    AllKinds e;
    failed = false;
    for (int r = 0; r <= 2; ++r) {
      e.Record(r);
      if (r == failing_round) allocations_left = fail_after;
      const bool complete = e.shard->Flush();
      allocations_left = -1;
      if (!complete) {
        failed = true;
        CHECK(e.shard->Flush());  // with memory again, the rest goes
      }
    }
    return e.Dump();
  };
  bool failed = false;
  const std::string expected = run(0, -1, failed);
  REQUIRE_FALSE(failed);
  REQUIRE(expected.find("statsd_set_overflow 20\n") != std::string::npos);
  REQUIRE(expected.find("no_memory 0\n") != std::string::npos);
  for (const int failing_round : {1, 2}) {
    CAPTURE(failing_round);
    CheckEveryFailure(expected, [&](long fail_after, bool& failed_here) {
      return run(failing_round, fail_after, failed_here);
    });
  }
}

TEST_CASE("deltas taken without memory stay, all of them, for the next take") {
  // Round 2's changes are the deltas; `take` takes them, with `fail_after` allocations left.
  auto run = [&](bool take, long fail_after, bool& failed) {
    AllKinds e;
    for (int r = 0; r <= 2; ++r) {
      e.Record(r);
      REQUIRE(e.shard->Flush());
      if (r == 1) (void)e.engine->TakeDeltaSnapshot();
    }
    failed = false;
    if (take) {
      allocations_left = fail_after;
      try {
        (void)e.engine->TakeDeltaSnapshot();
      } catch (const std::bad_alloc&) {
        failed = true;
      }
      allocations_left = -1;
    }
    return e.Dump();
  };
  bool failed = false;
  const std::string expected = run(false, -1, failed);
  const std::string taken = run(true, -1, failed);
  REQUIRE_FALSE(failed);
  REQUIRE(expected != taken);
  CheckEveryFailure(expected, [&](long fail_after, bool& failed_here) {
    return run(true, fail_after, failed_here);
  });
}

TEST_CASE("a flush without memory still expires idle series, and their samples go to new ones") {
  auto [engine, a, b] = ShortLivedEngine();
  SendStatsd(*a, "x", StatsdKind::kCounter, 2);
  SendStatsd(*b, "x", StatsdKind::kCounter, 2);
  CHECK(a->Flush());
  CHECK(b->Flush());
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  // b keeps the store's series alive; a's own has been idle past the TTL and goes at this flush.
  SendStatsd(*b, "x", StatsdKind::kCounter, 3);
  CHECK(b->Flush());
  allocations_left = 0;
  const bool complete = a->Flush();
  allocations_left = -1;
  CHECK(complete);
  // Its sample cache forgot the erased series: these reach a new one, and the store.
  SendStatsd(*a, "x", StatsdKind::kCounter, 5);
  CHECK(a->Flush());
  CHECK(Find(engine->Collect(), "x").series.at(0).value == 12);
  CHECK(a->dropped(DropReason::kNoMemory) == 0);
}

TEST_CASE("a StatsD name forgotten before its flush, admitted again without memory, waits") {
  EngineOptions options;
  options.series_ttl = std::chrono::hours(1);  // the store sweeps at the first flush
  auto engine = MakeEngine(options);
  auto a = engine->NewShard();
  auto b = engine->NewShard();
  SendStatsd(*a, "x", StatsdKind::kCounter, 7);
  // b's flush sweeps the store: x, admitted by a, has no series there yet, so its name is
  // forgotten. Then the names fill the table up to where one more grows it.
  for (int i = 0; i < 50; ++i) SendStatsd(*b, "n" + std::to_string(i), StatsdKind::kCounter);
  CHECK(b->Flush());
  SendStatsd(*b, "n50", StatsdKind::kCounter);
  CHECK(b->Flush());
  CHECK(engine->counters().statsd_metrics == 51);
  // a's flush admits x again, which needs a larger table, and finds no memory for it.
  allocations_left = 0;
  const bool complete = a->Flush();
  allocations_left = -1;
  CHECK_FALSE(complete);
  CHECK(a->Flush());
  CHECK(Find(engine->Collect(), "x").series.at(0).value == 7);
  CHECK(a->dropped(DropReason::kStatsdMetricOverflow) == 0);
  CHECK(engine->counters().statsd_metrics == 52);
}

TEST_CASE(
    "a set's members merged in part count once: in one window or the next, one push or the next") {
  EngineOptions options;
  options.summary_window = std::chrono::milliseconds(30);
  constexpr int kMembers = 20;
  for (const bool push : {false, true}) {
    CAPTURE(push);
    const int failures = ForEachFailure([&](long fail_after) {
      auto engine = MakeEngine(options);
      auto shard = engine->NewShard();
      RecordMembers(*shard, 0, kMembers);
      allocations_left = fail_after;
      const bool complete = shard->Flush();
      allocations_left = -1;
      if (complete) return false;
      // The members the window holds, or those a push takes.
      auto members = [&] {
        int n = 0;
        for (const auto& m : push ? engine->TakeDeltas() : engine->Collect()) {
          if (m.info.name != "users") continue;
          for (const auto& series : m.series) n += static_cast<int>(series.value);
        }
        return n;
      };
      const int first = members();
      // A new window, or a push: the members not merged yet go to the next.
      if (!push) std::this_thread::sleep_for(std::chrono::milliseconds(40));
      REQUIRE(shard->Flush());
      CHECK(first + members() == kMembers);
      return true;
    });
    CHECK(failures > 10);
  }
}

TEST_CASE("a span gauge whose start a last flush dropped is not brought down after a reload") {
  auto before = MakeEngine();
  auto old_shard = before->NewShard();
  Feeder old_feed(*old_shard);
  const Term ref = Term::Bytes(std::string("\x83r\x00\x03\x01\x02", 6));
  old_feed.Send({LeadershipStart(ref)});
  allocations_left = 0;
  const bool complete = old_shard->Flush();
  allocations_left = -1;
  REQUIRE_FALSE(complete);
  old_shard->DiscardPending();
  CHECK(old_shard->dropped(DropReason::kNoMemory) == 1);
  auto after = MakeEngine();
  auto new_shard = after->NewShard();
  new_shard->AdoptSpans(*old_shard);
  (void)after->Adopt(*before);
  Feeder new_feed(*new_shard);
  new_feed.Send({LeadershipStop(ref)});
  CHECK(new_shard->Flush());
  const auto all = after->Collect();
  const auto& active = Find(all, "vsr.leadership.active");
  for (const auto& series : active.series) CHECK(series.value == 0);
  CHECK(Find(all, "vsr.leadership.stop.duration").series.at(0).count == 1);
}

TEST_CASE("an update without memory is dropped as no_memory; the worker and the rest go on") {
  EngineOptions options;
  options.statsd_buckets = {10, 100};
  options.statsd_mappings = {StatsdMapping{"app.*.requests", "app.requests", {{"service", "$1"}}}};
  // policy.load feeds a last value, a summary and a tagged counter; op.stop a distribution.
  const auto frame = Feeder::Frame(
      {Ev("policy.load", {{"duration_us", Number::Float(7)}, {"queue_len", Number::Int(2)}},
          {{"reason", Term::Atom("full")}}),
       Ev("op.stop", {{"duration", Number::Int(30'000)}}, {{"node_id", Term::String("x")}})});
  const StatsdTagView prod[] = {{"env", "prod"}};
  const StatsdInput samples[] = {
      {"lat", StatsdKind::kTimer, 5, {}, false, 1, prod},
      {"size", StatsdKind::kHistogram, 50, {}, false, 1, {}},
      {"spread", StatsdKind::kDistribution, 0.5, {}, false, 1, {}},
      {"users", StatsdKind::kSet, 0, "alice", false, 1, {}},
      {"hits", StatsdKind::kCounter, 1, {}, false, 1, {}},
      {"depth", StatsdKind::kGauge, 3, {}, false, 1, {}},
      {"app.web.requests", StatsdKind::kCounter, 1, {}, false, 1, {}},
  };
  constexpr std::uint64_t kUpdates = 4 + 7;
  // How many of the updates the engine shows.
  auto shown = [](const std::vector<MetricPoints>& all) {
    double n = 0;
    for (const auto& m : all) {
      for (const auto& s : m.series) {
        if (m.info.type == MetricType::kDistribution || m.info.type == MetricType::kSummary) {
          n += static_cast<double>(s.count);
        } else if (m.info.name == "policy.load.queue_len" || m.info.name == "depth") {
          n += 1;
        } else {
          n += s.value;
        }
      }
    }
    return n;
  };
  const int failures = ForEachFailure([&](long fail_after) {
    auto engine = MakeEngine(options);
    auto shard = engine->NewShard();
    Feeder feed(*shard);
    allocations_left = fail_after;
    feed.SendFrame(frame);
    for (const auto& sample : samples) shard->RecordStatsd(sample);
    const bool failed = allocations_left == 0;
    allocations_left = -1;
    CHECK(shard->recorded() + shard->dropped(DropReason::kNoMemory) == kUpdates);
    for (std::size_t r = 0; r < kDropReasonCount; ++r) {
      const auto reason = static_cast<DropReason>(r);
      if (reason != DropReason::kNoMemory) CHECK(shard->dropped(reason) == 0);
    }
    REQUIRE(shard->Flush());
    CHECK(shown(engine->Collect()) == static_cast<double>(shard->recorded()));
    if (!failed) CHECK(shard->recorded() == kUpdates);
    return failed;
  });
  CHECK(failures > 10);
}

// Two updates that need memory for their series' extras: a set member and a histogram value.
void RecordMemberAndValue(Shard& shard) {
  shard.RecordStatsd(StatsdInput{"users", StatsdKind::kSet, 0, "alice", false, 1, {}});
  shard.RecordStatsd(StatsdInput{"size", StatsdKind::kHistogram, 5, {}, false, 1, {}});
}

TEST_CASE("an update dropped without memory leaves no series behind, and is counted once") {
  const int failures = ForEachFailure([&](long fail_after) {
    auto engine = MakeEngine();
    auto shard = engine->NewShard();
    allocations_left = fail_after;
    RecordMemberAndValue(*shard);
    const bool failed = allocations_left == 0;
    allocations_left = -1;
    CHECK(shard->recorded() + shard->dropped(DropReason::kNoMemory) == 2);
    // A last flush without memory drops what was recorded: each update is counted once, and
    // what was dropped while recording left nothing to count again.
    allocations_left = 0;
    const bool complete = shard->Flush();
    allocations_left = -1;
    if (!complete) shard->DiscardPending();
    CHECK(shard->dropped(DropReason::kNoMemory) == 2);
    CHECK(engine->counters().series == 0);
    return failed;
  });
  CHECK(failures > 3);
}

TEST_CASE("a last flush that gives up leaves no empty series in the store") {
  const int failures = ForEachFailure([&](long fail_after) {
    auto engine = MakeEngine();
    auto shard = engine->NewShard();
    RecordMemberAndValue(*shard);
    REQUIRE(shard->recorded() == 2);
    // Both tries fail at the same allocation, as a last flush's would when memory stays short.
    allocations_left = fail_after;
    const bool first = shard->Flush();
    allocations_left = fail_after;
    const bool second = first || shard->Flush();
    allocations_left = -1;
    if (first) return false;
    if (!second) shard->DiscardPending();
    CHECK(engine->counters().series + shard->dropped(DropReason::kNoMemory) == 2);
    for (const auto& m : engine->Collect()) {
      for (const auto& series : m.series) CHECK((series.count > 0 || series.value > 0));
    }
    return true;
  });
  CHECK(failures > 3);
}

TEST_CASE("an Adopt that runs out of memory still leaves span gauges that come down to zero") {
  const Term ref = Term::Bytes(std::string("\x83r\x00\x03\x01\x02", 6));
  const int failures = ForEachFailure([&](long fail_after) {
    auto before = MakeEngine();
    auto old_shard = before->NewShard();
    Feeder old_feed(*old_shard);
    old_feed.Send({LeadershipStart(ref)});
    old_feed.Send({Ev("unknown.event", {})});  // something for Adopt to allocate for
    REQUIRE(old_shard->Flush());
    auto after = MakeEngine();
    auto new_shard = after->NewShard();
    new_shard->AdoptSpans(*old_shard);
    const bool completed = AdoptFailing(*after, *before, fail_after);
    Feeder new_feed(*new_shard);
    new_feed.Send({LeadershipStop(ref)});
    CHECK(new_shard->Flush());
    const auto all = after->Collect();
    for (const auto& series : Find(all, "vsr.leadership.active").series) CHECK(series.value == 0);
    return !completed;
  });
  CHECK(failures >= 1);  // the unknown events' names
}

TEST_CASE("an Adopt that runs out of memory takes a summary's series whole or not at all") {
  // The old engine's 10 values of 1 s and the new engine's own 1 µs, in one series: merged, the
  // median is 1 s and the count 11; left behind, 1 µs and 1. Never a count without its values.
  auto load = [](Shard& shard, double us, int times) {
    Feeder feed(shard);
    for (int i = 0; i < times; ++i) {
      feed.Send({Ev("policy.load", {{"duration_us", Number::Float(us)}},
                    {{"reason", Term::Atom("full")}})});
    }
    REQUIRE(shard.Flush());
  };
  const int failures = ForEachFailure([&](long fail_after) {
    auto before = MakeEngine();
    auto old_shard = before->NewShard();
    load(*old_shard, 1e6, 10);
    auto after = MakeEngine();
    auto new_shard = after->NewShard();
    load(*new_shard, 1, 1);  // the new store holds the series already: they are merged one by one
    const bool completed = AdoptFailing(*after, *before, fail_after);
    const auto all = after->Collect();
    const auto& latency = Find(all, "policy.load.latency").series.at(0);
    const double median = latency.quantile_values.at(0);
    if (latency.count == 11) {
      CHECK(median == doctest::Approx(1).epsilon(0.02));
    } else {
      CHECK(latency.count == 1);
      CHECK(median == doctest::Approx(1e-6).epsilon(0.02).scale(0));  // relative, however small
    }
    return !completed;
  });
  CHECK(failures >= 1);
}

TEST_CASE("a shard that cannot flush drops what it holds as no_memory, counted per update") {
  auto engine = MakeEngine();
  auto shard = engine->NewShard();
  Feeder feed(*shard);
  feed.Send({Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(3)}},
                {{"node_id", Term::String("n1")}, {"status", Term::Atom("normal")}}),
             Ev("vsr.protocol.prepare.sent", {{"count", Number::Int(4)}},
                {{"node_id", Term::String("n1")}, {"status", Term::Atom("normal")}})});
  SendStatsd(*shard, "latency", StatsdKind::kTimer, 5);
  SendStatsd(*shard, "latency", StatsdKind::kTimer, 6);
  allocations_left = 0;
  const bool complete = shard->Flush();
  allocations_left = -1;
  CHECK_FALSE(complete);
  shard->DiscardPending();
  // The two counters' 2 events each, the sum's one update, the timer's 2 values.
  CHECK(shard->dropped(DropReason::kNoMemory) == 7);
  CHECK(shard->Flush());
  CHECK(engine->counters().series == 0);
  CHECK(shard->dropped(DropReason::kNoMemory) == 7);
  // A new series without memory: its update is dropped as no_memory too.
  allocations_left = 0;
  SendStatsd(*shard, "other", StatsdKind::kGauge, 1);
  allocations_left = -1;
  CHECK(shard->dropped(DropReason::kNoMemory) == 8);
  CHECK(shard->dropped(DropReason::kSeriesOverflow) == 0);
}

TEST_CASE("reload: a lower statsd.max_metrics keeps as many StatsD names as it allows") {
  EngineOptions options;
  auto before = MakeEngine(options);
  auto shard = before->NewShard();
  for (const char* name : {"a", "b", "c"}) {
    shard->RecordStatsd(StatsdInput{name, StatsdKind::kCounter, 1, {}, false, 1, {}});
  }
  shard->Flush();
  options.statsd_max_metrics = 2;
  auto after = MakeEngine(options);
  const auto result = after->Adopt(*before);
  const std::size_t catalog = TestCatalog().metrics.size() + TestCatalog().span_gauges.size();
  CHECK(result.kept == catalog + 2);
  CHECK(result.removed == 1);
  CHECK(result.series == 2);
  CHECK(after->counters().statsd_metrics == 2);
  CHECK(after->counters().series == 2);
  // The names kept still record; no third name fits.
  auto next = after->NewShard();
  for (const char* name : {"a", "b", "c"}) {
    next->RecordStatsd(StatsdInput{name, StatsdKind::kCounter, 1, {}, false, 1, {}});
  }
  next->Flush();
  CHECK(next->dropped(DropReason::kStatsdMetricOverflow) == 1);
  double total = 0;
  for (const auto& m : after->Collect()) {
    if (m.info.system == "statsd") total += m.series.at(0).value;
  }
  CHECK(total == 4);
}

TEST_CASE("StatsD: names whose hashes tie still get one metric each, with all their series") {
  // Two names whose hashes share the high 32 bits, by which a snapshot sorts names.
  std::unordered_map<std::uint64_t, std::string> seen;
  std::string a;
  std::string b;
  for (int i = 0; a.empty() && i < 2'000'000; ++i) {
    std::string name = "n" + std::to_string(i);
    const auto [it, fresh] = seen.emplace(detail::HashKey(name) >> 32, name);
    if (!fresh) {
      a = it->second;
      b = name;
    }
  }
  REQUIRE(!a.empty());
  // A few series each, then enough for the snapshot's radix sort (over 4,096 series); either
  // name's series first in the store.
  for (const auto& [hosts, a_first] :
       {std::pair{3, false}, std::pair{3, true}, std::pair{3000, false}, std::pair{3000, true}}) {
    CAPTURE(hosts);
    CAPTURE(a_first);
    EngineOptions options;
    options.max_series_per_metric = 10'000;
    auto engine = MakeEngine(options);
    auto shard = engine->NewShard();
    for (int h = 0; h < hosts; ++h) {
      const std::string host = std::to_string(h);
      const StatsdTagView tags[] = {{"host", host}};
      if (a_first) shard->RecordStatsd(StatsdInput{a, StatsdKind::kCounter, 1, {}, false, 1, tags});
      shard->RecordStatsd(StatsdInput{b, StatsdKind::kCounter, 2, {}, false, 1, tags});
      if (!a_first)
        shard->RecordStatsd(StatsdInput{a, StatsdKind::kCounter, 1, {}, false, 1, tags});
    }
    shard->Flush();
    const auto all = engine->Collect();
    std::size_t found = 0;
    for (const auto& m : all) {
      if (m.info.name != a && m.info.name != b) continue;
      ++found;
      CHECK(m.series.size() == static_cast<std::size_t>(hosts));
      const double want = m.info.name == a ? 1 : 2;
      CHECK(std::all_of(m.series.begin(), m.series.end(),
                        [&](const SeriesPoint& s) { return s.value == want; }));
    }
    CHECK(found == 2);
  }
}

TEST_CASE("StatsD: a name refused for want of series room takes no name place") {
  EngineOptions options;
  options.max_series_total = 1;
  options.statsd_max_metrics = 2;
  auto engine = MakeEngine(options);
  auto shard = engine->NewShard();
  auto count = [&](std::string_view name) {
    shard->RecordStatsd(StatsdInput{name, StatsdKind::kCounter, 1, {}, false, 1, {}});
  };
  count("a");
  count("b");
  count("c");
  CHECK(shard->dropped(DropReason::kSeriesOverflow) == 2);
  CHECK(shard->dropped(DropReason::kStatsdMetricOverflow) == 0);
  shard->Flush();
  CHECK(engine->counters().statsd_metrics == 1);
}

TEST_CASE("reload: a StatsD name's series limit counts each of its series once") {
  EngineOptions options;
  options.max_series_per_metric = 2;
  auto before = MakeEngine(options);
  auto old_shard = before->NewShard();
  auto count = [](Shard& shard, std::string_view name, const char* host) {
    const StatsdTagView tags[] = {{"host", host}};
    shard.RecordStatsd(StatsdInput{name, StatsdKind::kCounter, 1, {}, false, 1, tags});
  };
  count(*old_shard, "hits", "a");
  old_shard->Flush();
  auto after = MakeEngine(options);
  auto new_shard = after->NewShard();
  count(*new_shard, "users", "a");  // a name first seen during the switch: the names merge
  new_shard->Flush();
  after->Adopt(*before);
  count(*new_shard, "hits", "b");  // the second of two
  count(*new_shard, "hits", "c");  // one too many
  new_shard->Flush();
  CHECK(Find(after->Collect(), "hits").series.size() == 2);
  CHECK(new_shard->dropped(DropReason::kSeriesOverflow) == 1);
}

TEST_CASE("a set member dropped for overflow is not also counted as an update") {
  auto engine = MakeEngine();
  auto a = engine->NewShard();
  const int max = static_cast<int>(kMaxSetMembers);
  for (int i = 0; i < max + 5; ++i) {
    const std::string m = "u" + std::to_string(i);
    a->RecordStatsd(StatsdInput{"users", StatsdKind::kSet, 0, m, false, 1, {}});
  }
  CHECK(a->dropped(DropReason::kStatsdSetOverflow) == 5);
  CHECK(a->recorded() == static_cast<std::uint64_t>(max));
}
