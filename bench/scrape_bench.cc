// A scrape of N series: flush, snapshot, conversion to metric families and text serialization (what
// /metrics does per request), and the same text gzip-compressed. Reports response bytes.
#include <benchmark/benchmark.h>
#include <zlib.h>

#include <prometheus/text_serializer.h>

#include <sstream>
#include <string>

#include "telemetryd/aggregate/engine.h"
#include "telemetryd/exporters/prometheus_endpoint.h"
#include "telemetryd/exporters/prometheus_metrics.h"
#include "telemetryd/exporters/statsd_push.h"

namespace {

using namespace telemetryd;

// N series with two labels each: counters and gauges only (mix 0), or also one series in ten a
// timer histogram of 13 buckets (mix 1: about 3.3 exposition lines per series).
struct Populated {
  std::unique_ptr<aggregate::Engine> engine;
  std::unique_ptr<aggregate::Shard> shard;
};

// Records every series once more (histograms: no), so that each has a delta to push. With
// `names`, each series is a StatsD counter of its own name (app.requests.<i>), without tags.
void RecordAll(aggregate::Shard& shard, std::size_t series, bool histograms, bool names = false);

Populated Populate(std::size_t series, bool histograms, bool names = false) {
  aggregate::EngineOptions options;
  options.max_series_per_metric = series;
  options.max_series_total = series * 2;
  options.statsd_max_metrics = series;
  auto created = aggregate::Engine::Create({}, options);
  std::unique_ptr<aggregate::Engine> engine = std::move(*created);
  auto shard = engine->NewShard();
  RecordAll(*shard, series, histograms, names);
  shard->Flush();
  return {std::move(engine), std::move(shard)};
}

void RecordAll(aggregate::Shard& shard, std::size_t series, bool histograms, bool names) {
  char host[32];
  char id[32];
  for (std::size_t i = 0; i < series; ++i) {
    if (names) {
      const int nl = std::snprintf(id, sizeof id, "app.requests.%zu", i);
      shard.RecordStatsd(aggregate::StatsdInput{std::string_view(id, static_cast<std::size_t>(nl)),
                                                aggregate::StatsdKind::kCounter, 1});
      continue;
    }
    const int hl = std::snprintf(host, sizeof host, "web-%zu", i % 100);
    const int il = std::snprintf(id, sizeof id, "%zu", i);
    const aggregate::StatsdTagView tags[] = {
        {"host", std::string_view(host, static_cast<std::size_t>(hl))},
        {"id", std::string_view(id, static_cast<std::size_t>(il))}};
    const auto kind = histograms && i % 10 == 0 ? aggregate::StatsdKind::kTimer
                      : i % 3 == 0              ? aggregate::StatsdKind::kGauge
                                                : aggregate::StatsdKind::kCounter;
    const char* name = kind == aggregate::StatsdKind::kTimer   ? "app.latency"
                       : kind == aggregate::StatsdKind::kGauge ? "app.queue"
                                                               : "app.requests";
    shard.RecordStatsd(
        aggregate::StatsdInput{name, kind, static_cast<double>(i % 1000), {}, false, 1, tags});
  }
}

std::string Gzip(const std::string& text) {
  z_stream z{};
  deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, text.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// What the daemon's collector does: a snapshot of the store, visited into families.
std::vector<prometheus::MetricFamily> Families(const aggregate::Engine& engine) {
  std::vector<prometheus::MetricFamily> families;
  exporters::FamilyBuilder builder(families);
  engine.CollectSnapshot().Visit(builder);
  return families;
}

void BM_Scrape(benchmark::State& state) {
  const auto series = static_cast<std::size_t>(state.range(0));
  const bool gzip = state.range(1) != 0;
  auto p = Populate(series, state.range(2) != 0);
  std::size_t bytes = 0;
  auto scrape = [&] {
    p.shard->Flush();
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, Families(*p.engine));
    std::string text = out.str();
    if (gzip) text = Gzip(text);
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  };
  // A daemon scrapes again and again: measure that steady state, not the first scrape's page
  // faults on memory the allocator has not had yet.
  scrape();
  for (auto _ : state) scrape();
  state.counters["response_bytes"] = static_cast<double>(bytes);
  state.counters["series"] = static_cast<double>(p.engine->counters().series);
}
BENCHMARK(BM_Scrape)
    ->ArgNames({"series", "gzip", "histograms"})
    ->Args({100'000, 0, 0})
    ->Args({100'000, 1, 0})
    ->Args({100'000, 0, 1})
    ->Args({100'000, 1, 1})
    ->Args({1'000'000, 0, 0})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2)
    ->UseRealTime();

// The stages of one scrape, timed apart: the snapshot under the store's lock (stage 0), the
// conversion to metric families (1) and the text serialization (2); names:1 is a million StatsD
// names of one series each.
void BM_ScrapeStage(benchmark::State& state) {
  const auto series = static_cast<std::size_t>(state.range(0));
  const auto stage = state.range(1);
  auto p = Populate(series, false, state.range(2) != 0);
  for (auto _ : state) {
    state.PauseTiming();
    p.shard->Flush();
    state.ResumeTiming();
    auto snapshot = p.engine->CollectSnapshot();
    if (stage == 0) {
      state.PauseTiming();
      snapshot = {};
      state.ResumeTiming();
      continue;
    }
    std::vector<prometheus::MetricFamily> families;
    exporters::FamilyBuilder builder(families);
    snapshot.Visit(builder);
    if (stage == 1) {
      state.PauseTiming();
      families = {};
      state.ResumeTiming();
      continue;
    }
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, families);
    benchmark::DoNotOptimize(out);
  }
}
BENCHMARK(BM_ScrapeStage)
    ->ArgNames({"series", "stages", "names"})
    ->ArgsProduct({{1'000'000}, {0, 1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2)
    ->UseRealTime();

// A StatsD push of N changed series: the deltas (Engine::TakeDeltaSnapshot), their lines and the
// datagrams they are batched into (what StatsdPusher::Push does before sending).
void BM_StatsdPush(benchmark::State& state) {
  const auto series = static_cast<std::size_t>(state.range(0));
  const bool names = state.range(1) != 0;
  auto p = Populate(series, false, names);
  std::size_t packets = 0;
  for (auto _ : state) {
    state.PauseTiming();
    RecordAll(*p.shard, series, false, names);
    p.shard->Flush();
    state.ResumeTiming();
    const auto batched =
        exporters::Batch(exporters::FormatLines(p.engine->TakeDeltaSnapshot(), {}), 1432);
    packets = batched.size();
    benchmark::DoNotOptimize(batched);
  }
  state.counters["packets"] = static_cast<double>(packets);
}
BENCHMARK(BM_StatsdPush)
    ->ArgNames({"series", "names"})
    ->Args({100'000, 0})
    ->Args({1'000'000, 0})
    ->Args({1'000'000, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

// The daemon's allocator settings: freed scrape memory stays in the process.
int main(int argc, char** argv) {
  telemetryd::exporters::KeepScrapeMemory();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
