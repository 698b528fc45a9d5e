// libFuzzer target: any byte string through the daemon's own input path into aggregation, with the
// built-in catalogs. An input that starts with the wire magic is a native frame (FrameDecoder),
// anything else a StatsD datagram (StatsdLineParser, its samples in runs as the intake hands them
// on); both go through the AggregatingSink into one shard, whose small limits the fuzzer soon
// reaches; series idle for 5 ms expire, so entries and cache slots are reused. Every 16 inputs the
// shard is flushed and the store is read both ways (a snapshot and the deltas, every label and
// value touched), so the sanitizers see a bad view, a misused series record or a broken table
// anywhere on that path.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "aggregating_sink.h"
#include "telemetryd/aggregate/engine.h"
#include "telemetryd/config/catalog_loader.h"
#include "telemetryd/ingest/sink.h"
#include "telemetryd/ingest/statsd.h"
#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/format.h"

namespace {

using namespace telemetryd;

class Forward final : public wire::FrameVisitor, public ingest::StatsdVisitor {
 public:
  explicit Forward(AggregatingSink& sink) : sink_(sink), runs_(sink) {}
  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    sink_.OnEvent(frame, event);
  }
  void OnError(wire::DecodeError, std::uint32_t) noexcept override {}
  // As the intake does: the datagram's samples go to the sink in runs.
  void OnSample(const ingest::StatsdSample& sample) noexcept override { runs_.Add(sample); }
  void OnError(ingest::StatsdError, std::string_view) noexcept override {}
  void Flush() noexcept { runs_.Flush(); }

 private:
  AggregatingSink& sink_;
  ingest::StatsdRuns runs_;
};

class Toucher final : public aggregate::SnapshotVisitor {
 public:
  void Metric(const aggregate::MetricInfo& info, std::size_t series) override {
    sum_ += info.name.size() + series;
    left_ = series;
  }
  void Series(std::span<const aggregate::LabelRef> labels,
              const aggregate::SeriesPoint& point) override {
    if (left_-- == 0) __builtin_trap();  // more series than announced
    for (const auto& l : labels) {
      for (const char c : l.name) sum_ += static_cast<unsigned char>(c);
      for (const char c : l.value) sum_ += static_cast<unsigned char>(c);
    }
    sum_ += point.count + point.bucket_counts.size() + point.quantile_values.size();
    if (point.value == point.value) sum_ += 1;
  }
  [[nodiscard]] std::size_t sum() const noexcept { return sum_; }

 private:
  std::size_t sum_ = 0;
  std::size_t left_ = 0;
};

struct World {
  std::unique_ptr<aggregate::Engine> engine;
  std::unique_ptr<aggregate::Shard> shard;
  std::unique_ptr<AggregatingSink> sink;
  wire::FrameDecoder decoder;
  ingest::StatsdLineParser parser;
  std::size_t inputs = 0;
};

World& TheWorld() {
  static World* world = [] {
    auto catalogs = config::LoadCatalogs({TELEMETRYD_CATALOG_DIR});
    if (!catalogs) __builtin_trap();
    aggregate::EngineOptions options;
    options.max_series_per_metric = 200;
    options.max_series_total = 5'000;
    options.statsd_max_metrics = 300;
    options.max_open_spans = 256;
    options.series_ttl = std::chrono::milliseconds(5);  // flushes erase, indexes are reused
    options.statsd_mappings = {
        aggregate::StatsdMapping{"app.*.requests", "app.requests", {{"service", "$1"}}}};
    auto engine = aggregate::Engine::Create(*catalogs, options);
    if (!engine) __builtin_trap();
    auto* w = new World;
    w->engine = std::move(*engine);
    w->shard = w->engine->NewShard();
    w->sink = std::make_unique<AggregatingSink>(*w->shard, false);
    return w;
  }();
  return *world;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  World& w = TheWorld();
  Forward forward(*w.sink);
  if (size >= 1 && data[0] == wire::kMagic0) {
    w.decoder.Decode(std::span<const std::uint8_t>(data, size), forward);
  } else {
    w.parser.Parse(std::string_view(reinterpret_cast<const char*>(data), size), forward);
    forward.Flush();
  }
  if (++w.inputs % 16 == 0) {
    w.shard->Flush();
    Toucher cumulative;
    w.engine->CollectSnapshot().Visit(cumulative);
    Toucher deltas;
    w.engine->TakeDeltaSnapshot().Visit(deltas);
    if (w.engine->counters().series > 5'000) __builtin_trap();  // past max_series_total
  }
  return 0;
}
