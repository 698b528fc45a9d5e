// Aggregation of decoded catalog events into existing series (Shard::Record), and memory per
// series. Events are decoded once up front; the loop measures the engine alone.
#include <benchmark/benchmark.h>

#include <malloc.h>

#include <array>
#include <cstring>

#include <string>
#include <string_view>
#include <vector>

#include "aggregating_sink.h"
#include "telemetryd/aggregate/engine.h"
#include "telemetryd/config/catalog_loader.h"
#include "telemetryd/ingest/sink.h"
#include "telemetryd/ingest/statsd.h"
#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/encoder.h"
#include "vsr_event.h"

namespace {

using namespace telemetryd;

// Decoded events kept alive past the decoder call: copies of the measurement and metadata arrays,
// pointing into `frame` (scalar metadata only, as in these events).
struct DecodedFrame : wire::FrameVisitor {
  std::vector<std::uint8_t> frame;
  wire::FrameInfo info;
  std::vector<std::vector<wire::Measurement>> measurements;
  std::vector<std::vector<wire::MetadataField>> metadata;
  std::vector<wire::Event> events;

  void OnEvent(const wire::FrameInfo& f, const wire::Event& e) noexcept override {
    info = f;
    measurements.emplace_back(e.measurements.begin(), e.measurements.end());
    metadata.emplace_back(e.metadata.begin(), e.metadata.end());
    events.push_back(e);
  }
  void OnError(wire::DecodeError, std::uint32_t) noexcept override {}
  void Fix() {
    for (std::size_t i = 0; i < events.size(); ++i) {
      events[i].measurements = measurements[i];
      events[i].metadata = metadata[i];
    }
  }
};

// A frame of `events` events over node ids first_node + i % nodes.
std::unique_ptr<DecodedFrame> VsrFrame(int events, int nodes, int first_node = 0) {
  wire::FrameEncoder encoder(wire::EncoderOptions{.max_frame_bytes = 1 << 20});
  for (int i = 0; i < events; ++i) {
    if (encoder.Add(bench::VsrPrepareSent(
            i, "vsr-node-" + std::to_string(first_node + i % nodes))) != wire::AddResult::kAdded) {
      return nullptr;
    }
  }
  auto out = std::make_unique<DecodedFrame>();
  const auto bytes = encoder.Finish();
  out->frame.assign(bytes.begin(), bytes.end());
  wire::FrameDecoder decoder;
  decoder.Decode(out->frame, *out);
  out->Fix();
  return out;
}

std::unique_ptr<aggregate::Engine> BuiltinEngine(aggregate::EngineOptions options = {}) {
  auto catalogs = config::LoadCatalogs({TELEMETRYD_CATALOG_DIR});
  if (!catalogs) return nullptr;
  auto engine = aggregate::Engine::Create(*catalogs, options);
  return engine ? std::move(*engine) : nullptr;
}

// The VSR prepare.sent event feeds the catalog's metrics on it (a counter and a sum by node).
void BM_RecordVsrEvent(benchmark::State& state) {
  auto engine = BuiltinEngine();
  auto shard = engine->NewShard();
  const auto frame = VsrFrame(20, 5);
  for (const auto& e : frame->events) shard->Record(frame->info, e);  // series exist from here
  for (auto _ : state) {
    for (const auto& e : frame->events) shard->Record(frame->info, e);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 20);
  state.counters["metric_updates_per_event"] =
      static_cast<double>(shard->recorded()) / static_cast<double>((state.iterations() + 1) * 20);
}
BENCHMARK(BM_RecordVsrEvent);

// The same event over many node ids: with 500,000 (1,000,000 series) the tables no longer fit in
// the caches, and each event's lookups miss. One pass records every node once, then flushes into
// the store as the daemon does.
void BM_RecordVsrEventManySeries(benchmark::State& state) {
  const auto nodes = static_cast<int>(state.range(0));
  aggregate::EngineOptions options;
  options.max_series_per_metric = 2'000'000;
  options.max_series_total = 2'000'000;
  auto engine = BuiltinEngine(options);
  auto shard = engine->NewShard();
  std::vector<std::unique_ptr<DecodedFrame>> frames;
  for (int first = 0; first < nodes; first += 1000) {
    frames.push_back(VsrFrame(std::min(1000, nodes - first), nodes, first));
    if (!frames.back()) {
      state.SkipWithError("frame too large");
      return;
    }
  }
  const bool preview = state.range(1) != 0;
  auto pass = [&] {
    for (const auto& frame : frames) {
      // In datagrams of 25 events, as the load generator sends them.
      for (std::size_t first = 0; first < frame->events.size(); first += 25) {
        const auto events = std::span(frame->events)
                                .subspan(first)
                                .first(std::min<std::size_t>(25, frame->events.size() - first));
        if (preview && shard->PreviewHelps()) {
          for (const auto& e : events) shard->Preview(frame->info, e);
          shard->PreviewDone();
        }
        for (const auto& e : events) shard->Record(frame->info, e);
      }
    }
    shard->Flush();
  };
  pass();  // series exist from here
  for (auto _ : state) pass();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * nodes);
  state.counters["series"] = static_cast<double>(engine->counters().series);
}
BENCHMARK(BM_RecordVsrEventManySeries)
    ->ArgNames({"nodes", "preview"})
    ->Args({5'000, 0})
    ->Args({500'000, 0})
    ->Args({500'000, 1})
    ->Unit(benchmark::kMillisecond);

// Native datagrams decoded and recorded through the daemon's sink, as a UDP worker handles them:
// the load generator's payloads (25 events each, 1,000 node ids: 2,000 series), 32 at a time (a
// listener's default batch) copied into 64 KiB receive slots the way recvmmsg fills them, then
// each decoded into the shard. The copies push the tables out of the nearest cache as the kernel's
// do in the daemon, which the one-frame benchmarks do not show; the kernel's own work is not here.
// Argument: 0, every event of a frame another node's (the load generator's default); 1, each frame
// one node's (`--node-per-frame`); 2, frames of one event (an application that sends each event as
// it happens).
void BM_NativeDatagramsToShard(benchmark::State& state) {
  constexpr std::size_t kBatch = 32;  // ListenerOptions::batch
  constexpr std::size_t kSlot = 65536;
  const auto frames = bench::VsrFrames(1000, state.range(0) == 2 ? 1 : 25, state.range(0) == 1);
  auto engine = BuiltinEngine();
  auto shard = engine->NewShard();
  AggregatingSink sink(*shard, false);
  struct Visitor final : wire::FrameVisitor {
    explicit Visitor(AggregatingSink& to) : sink(to) {}
    void OnEvent(const wire::FrameInfo& f, const wire::Event& e) noexcept override {
      sink.OnEvent(f, e);
    }
    void OnError(wire::DecodeError, std::uint32_t) noexcept override { ++errors; }
    AggregatingSink& sink;
    std::uint64_t errors = 0;
  } visitor(sink);
  wire::FrameDecoder decoder;
  std::vector<std::uint8_t> slots(kBatch * kSlot);
  std::array<std::size_t, kBatch> sizes{};
  std::size_t next = 0;
  std::uint64_t events = 0;
  auto batch = [&] {
    for (std::size_t i = 0; i < kBatch; ++i, next = (next + 1) % frames.size()) {
      std::memcpy(slots.data() + i * kSlot, frames[next].data(), frames[next].size());
      sizes[i] = frames[next].size();
    }
    for (std::size_t i = 0; i < kBatch; ++i) {
      events +=
          decoder.Decode(std::span(slots.data() + i * kSlot, sizes[i]), visitor).events_accepted;
    }
  };
  for (std::size_t i = 0; i < frames.size(); i += kBatch) batch();  // series exist from here
  events = 0;
  const std::uint64_t recorded = shard->recorded();
  for (auto _ : state) batch();
  state.SetItemsProcessed(static_cast<std::int64_t>(events));
  if (visitor.errors != 0 || shard->recorded() - recorded != events * 2) {
    state.SkipWithError("an event was not decoded, or not recorded into both of its metrics");
  }
}
BENCHMARK(BM_NativeDatagramsToShard)->Arg(0)->Arg(1)->Arg(2);

// StatsD counter with two DogStatsD tags into an existing series.
void BM_RecordStatsdCounter(benchmark::State& state) {
  auto engine = BuiltinEngine();
  auto shard = engine->NewShard();
  const aggregate::StatsdTagView tags[] = {{"env", "prod"}, {"host", "web-1"}};
  const aggregate::StatsdInput sample{
      "app.requests", aggregate::StatsdKind::kCounter, 1, {}, false, 1, tags};
  shard->RecordStatsd(sample);
  for (auto _ : state) shard->RecordStatsd(sample);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_RecordStatsdCounter);

// One 25-line StatsD datagram parsed and recorded through the daemon's sink into existing series,
// as the end-to-end load generator sends it: "app.requests.K:1|c|#env:prod,host:web-J".
void BM_StatsdDatagramToShard(benchmark::State& state) {
  const bool tags = state.range(0) != 0;
  std::string datagram;
  for (int i = 0; i < 25; ++i) {
    datagram += "app.requests." + std::to_string(i) + ":1|c";
    if (tags) datagram += "|#env:prod,host:web-" + std::to_string(i % 16);
    datagram += '\n';
  }
  auto engine = BuiltinEngine();
  auto shard = engine->NewShard();
  AggregatingSink sink(*shard, false);
  ingest::StatsdLineParser parser;
  // As the intake does: the datagram's samples go to the sink in runs.
  struct Visitor final : ingest::StatsdVisitor {
    explicit Visitor(AggregatingSink& sink) : runs(sink) {}
    void OnSample(const ingest::StatsdSample& sample) noexcept override { runs.Add(sample); }
    void OnError(ingest::StatsdError, std::string_view) noexcept override {}
    ingest::StatsdRuns runs;
  } visitor(sink);
  auto send = [&] {
    parser.Parse(datagram, visitor);
    visitor.runs.Flush();
  };
  send();  // series exist from here
  for (auto _ : state) send();
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 25);
  const auto lines = static_cast<std::uint64_t>(state.iterations() + 1) * 25;
  if (shard->recorded() != lines) state.SkipWithError("not every line was recorded");
}
BENCHMARK(BM_StatsdDatagramToShard)->Arg(0)->Arg(1)->ArgNames({"tags"});

// Heap bytes per counter series (shard entry + merged store entry), label strings included,
// measured with mallinfo2 around creating N series.
void BM_MemoryPerCounterSeries(benchmark::State& state) {
  const auto n = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    aggregate::EngineOptions options;
    options.max_series_per_metric = n + 1;
    options.max_series_total = n + 1;
    options.statsd_max_metrics = 10;
    auto engine = BuiltinEngine(options);
    auto shard = engine->NewShard();
    malloc_trim(0);
    // uordblks: heap chunks in use; hblkhd: large blocks the allocator mapped separately.
    const std::size_t before = mallinfo2().uordblks + mallinfo2().hblkhd;
    char name[32];
    const aggregate::StatsdTagView tags[] = {{"id", {}}};
    aggregate::StatsdTagView tag = tags[0];
    for (std::size_t i = 0; i < n; ++i) {
      const int len = std::snprintf(name, sizeof name, "%08zu", i);
      tag.value = std::string_view(name, static_cast<std::size_t>(len));
      shard->RecordStatsd(
          aggregate::StatsdInput{"c", aggregate::StatsdKind::kCounter, 1, {}, false, 1, {&tag, 1}});
    }
    shard->Flush();
    const std::size_t after = mallinfo2().uordblks + mallinfo2().hblkhd;
    state.counters["bytes_per_series"] =
        static_cast<double>(after - before) / static_cast<double>(n);
    // Key text per series: the store key, and the same after the StatsD counters' metric id
    // (three digits with the built-in catalogs) in the shard.
    constexpr std::string_view kStoreKey =
        "\x1e"
        "c\x1fid=00000000";
    state.counters["label_bytes_per_series"] = 2.0 * static_cast<double>(kStoreKey.size()) + 3;
    state.counters["series"] = static_cast<double>(engine->counters().series);
  }
}
BENCHMARK(BM_MemoryPerCounterSeries)
    ->Arg(100'000)
    ->Arg(1'000'000)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
