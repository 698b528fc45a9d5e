#include <doctest/doctest.h>

#include <prometheus/text_serializer.h>

#include <sstream>

#include "support/failing_allocations.h"
#include "telemetryd/exporters/prometheus_metrics.h"

using namespace telemetryd;
using namespace telemetryd::exporters;
using aggregate::MetricInfo;
using aggregate::MetricType;
using aggregate::Unit;

namespace {
MetricInfo Info(std::string name, MetricType type, Unit unit = Unit::kNone) {
  MetricInfo m;
  m.name = std::move(name);
  m.type = type;
  m.unit = unit;
  return m;
}
}  // namespace

TEST_CASE("names: dots to underscores, base units, counters end in _total") {
  CHECK(NameFor(Info("vsr.protocol.prepare.sent.count", MetricType::kCounter)).name ==
        "vsr_protocol_prepare_sent_count_total");
  CHECK(NameFor(Info("router_core.routes_total.count", MetricType::kCounter)).name ==
        "router_core_routes_total_count_total");
  CHECK(NameFor(Info("errors_total", MetricType::kCounter)).name == "errors_total");
  const auto ms = NameFor(Info("vsr.op.duration", MetricType::kDistribution, Unit::kMillisecond));
  CHECK(ms.name == "vsr_op_duration_seconds");
  CHECK(ms.scale == 1e-3);
  CHECK(ms.type == prometheus::MetricType::Histogram);
  CHECK(NameFor(Info("policy.load.duration_us", MetricType::kSummary, Unit::kMicrosecond)).name ==
        "policy_load_duration_seconds");
  CHECK(NameFor(Info("zero_copy.export.bytes", MetricType::kSum, Unit::kKilobyte)).scale == 1024);
  CHECK(NameFor(Info("zero_copy.export.bytes", MetricType::kSum, Unit::kByte)).name ==
        "zero_copy_export_bytes");
  CHECK(NameFor(Info("9lives.a-b/c", MetricType::kLastValue)).name == "_9lives_a_b_c");
  CHECK(LabelName("__reserved") == "_reserved");
  CHECK(LabelName("node-id") == "node_id");
  CHECK(LabelValue("ok\xff") == "ok\xEF\xBF\xBD");
}

TEST_CASE("metrics that would share a Prometheus name are an error") {
  const auto status =
      CheckNames({Info("a.b", MetricType::kLastValue), Info("a_b", MetricType::kLastValue)});
  REQUIRE_FALSE(status.has_value());
  CHECK(status.error().message == "metrics a.b and a_b would both be exposed to Prometheus as a_b");
  // A histogram owns its _count: a counter called x.count... is fine, x_count gauge is not.
  CHECK_FALSE(
      CheckNames({Info("h", MetricType::kDistribution), Info("h.count", MetricType::kLastValue)})
          .has_value());
  CHECK(CheckNames({Info("a", MetricType::kCounter), Info("b", MetricType::kCounter)}).has_value());
}

TEST_CASE("families serialize as the exposition format expects") {
  aggregate::MetricPoints hist;
  hist.info = Info("op.duration", MetricType::kDistribution, Unit::kMillisecond);
  hist.info.description = "Operation time.";
  hist.info.buckets = {1, 10};
  aggregate::SeriesPoint p;
  p.labels = {{"node_id", "n\"1"}};
  p.bucket_counts = {2, 1, 1};
  p.count = 4;
  p.sum = 25;
  hist.series.push_back(p);
  aggregate::MetricPoints counter;
  counter.info = Info("hits", MetricType::kCounter);
  aggregate::SeriesPoint c;
  c.value = 7;
  counter.series.push_back(c);
  aggregate::MetricPoints summary;
  summary.info = Info("lat", MetricType::kSummary, Unit::kSecond);
  summary.info.quantiles = {0.5, 0.99};
  aggregate::SeriesPoint s;
  s.count = 3;
  s.sum = 1.5;
  s.quantile_values = {0.25, 1};
  summary.series.push_back(s);

  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, ToFamilies({hist, counter, summary}));
  const std::string text = out.str();
  MESSAGE(text);
  CHECK(text.find("# HELP op_duration_seconds Operation time.\n") != std::string::npos);
  CHECK(text.find("# TYPE op_duration_seconds histogram\n") != std::string::npos);
  CHECK(text.find("op_duration_seconds_bucket{node_id=\"n\\\"1\",le=\"0.001\"} 2\n") !=
        std::string::npos);
  CHECK(text.find("op_duration_seconds_bucket{node_id=\"n\\\"1\",le=\"0.01\"} 3\n") !=
        std::string::npos);
  CHECK(text.find("op_duration_seconds_bucket{node_id=\"n\\\"1\",le=\"+Inf\"} 4\n") !=
        std::string::npos);
  CHECK(text.find("op_duration_seconds_sum{node_id=\"n\\\"1\"} 0.025") != std::string::npos);
  CHECK(text.find("op_duration_seconds_count{node_id=\"n\\\"1\"} 4\n") != std::string::npos);
  CHECK(text.find("hits_total 7\n") != std::string::npos);
  CHECK(text.find("lat_seconds{quantile=\"0.99\"} 1\n") != std::string::npos);
  CHECK(text.find("lat_seconds_count 3\n") != std::string::npos);
}

TEST_CASE("help texts are UTF-8 with backslashes and line feeds escaped") {
  CHECK(HelpText("Jobs done.") == "Jobs done.");
  CHECK(HelpText("C:\\jobs\nnext\\") == "C:\\\\jobs\\nnext\\\\");
  CHECK(HelpText("bad \xff byte\n") == "bad \xEF\xBF\xBD byte\\n");
  aggregate::MetricPoints counter;
  counter.info = Info("jobs", MetricType::kCounter);
  counter.info.description = "Two\nlines \\ one slash.";
  counter.series.emplace_back().value = 1;
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, ToFamilies({counter}));
  CHECK(out.str() ==
        "# HELP jobs_total Two\\nlines \\\\ one slash.\n# TYPE jobs_total counter\njobs_total 1\n");
}

TEST_CASE("a snapshot of an engine becomes families: empty metrics, clashes, StatsD help, UTF-8") {
  aggregate::CatalogSpec catalog;
  catalog.system = "app";
  aggregate::EventSpec event;
  event.name = "app.job.done";
  event.measurements = {{"duration", Unit::kNone}};
  catalog.events.push_back(event);
  aggregate::MetricSpec jobs;
  jobs.name = "app.job.done.count";
  jobs.event_name = "app.job.done";
  jobs.description = "Jobs done.";
  catalog.metrics.push_back(jobs);
  auto created = aggregate::Engine::Create({catalog}, {});
  REQUIRE(created.has_value());
  auto& engine = **created;
  auto shard = engine.NewShard();
  const aggregate::StatsdTagView bad[] = {{"host", "web\xff"}, {"env", "prod"}};
  shard->RecordStatsd({"a.b", aggregate::StatsdKind::kCounter, 2, {}, false, 1, bad});
  shard->RecordStatsd({"a_b", aggregate::StatsdKind::kCounter, 5, {}, false, 1, bad});
  shard->RecordStatsd({"queue", aggregate::StatsdKind::kTimer, 250, {}, false, 1, {}});
  shard->Flush();

  std::vector<prometheus::MetricFamily> families;
  FamilyBuilder builder(families);
  engine.CollectSnapshot().Visit(builder);
  // app.job.done.count has no series: no family. "a_b" and "a.b" clash (both a_b_total): one of
  // them is exposed, whole, the same one at every scrape.
  CHECK(builder.clashes() == 1);
  REQUIRE(families.size() == 2);
  const auto by_name = [](const std::vector<prometheus::MetricFamily>& all,
                          const std::string& name) -> const prometheus::MetricFamily& {
    const auto it =
        std::find_if(all.begin(), all.end(), [&](const auto& f) { return f.name == name; });
    REQUIRE(it != all.end());
    return *it;
  };
  const auto& counter = by_name(families, "a_b_total");
  CHECK(counter.type == prometheus::MetricType::Counter);
  REQUIRE(counter.metric.size() == 1);
  const auto& labels = counter.metric[0].label;
  CHECK((counter.help == "StatsD metric a.b." || counter.help == "StatsD metric a_b."));
  CHECK(counter.metric[0].counter.value == (counter.help == "StatsD metric a.b." ? 2 : 5));
  REQUIRE(labels.size() == 2);
  CHECK(labels[0].name == "env");
  CHECK(labels[0].value == "prod");
  CHECK(labels[1].name == "host");
  CHECK(labels[1].value == "web\xEF\xBF\xBD");
  std::vector<prometheus::MetricFamily> again;
  FamilyBuilder second(again);
  engine.CollectSnapshot().Visit(second);
  CHECK(by_name(again, "a_b_total").help == counter.help);
  const auto& timer = by_name(families, "queue_seconds");
  CHECK(timer.type == prometheus::MetricType::Histogram);
  REQUIRE(timer.metric.size() == 1);
  CHECK(timer.metric[0].histogram.sample_count == 1);
  CHECK(timer.metric[0].histogram.sample_sum == doctest::Approx(0.25));
  // ToFamilies on the same series as points agrees.
  std::uint64_t clashes = 0;
  const auto from_points = ToFamilies(engine.Collect(), &clashes);
  CHECK(clashes == 1);
  REQUIRE(from_points.size() == families.size());
  for (std::size_t i = 0; i < families.size(); ++i) {
    CHECK(from_points[i].name == families[i].name);
    CHECK(from_points[i].metric.size() == families[i].metric.size());
  }
}

TEST_CASE("a scrape without memory for the aggregated metrics is counted, and loses nothing") {
  auto created = aggregate::Engine::Create({}, {});
  REQUIRE(created.has_value());
  auto& engine = **created;
  auto shard = engine.NewShard();
  // A counter with a label, a gauge and a histogram (the timer).
  const aggregate::StatsdTagView tags[] = {{"env", "prod"}};
  shard->RecordStatsd({"jobs", aggregate::StatsdKind::kCounter, 3, {}, false, 1, tags});
  shard->RecordStatsd({"queue.depth", aggregate::StatsdKind::kGauge, 7, {}, false, 1, {}});
  shard->RecordStatsd({"job.duration", aggregate::StatsdKind::kTimer, 5, {}, false, 1, tags});
  REQUIRE(shard->Flush());

  AggregateCollector collector([&] { return engine.CollectSnapshot(); });
  const auto whole = collector.Collect();
  REQUIRE(whole.size() == 3);
  // Each allocation of a scrape fails in turn (and every one after it, as when memory is gone):
  // the scrape has none of the aggregated metrics and is counted, or all of them.
  std::uint64_t failed = 0;
  for (long n = 0;; ++n) {
    telemetryd::testing::allocations_left = n;
    const auto families = collector.Collect();
    telemetryd::testing::allocations_left = -1;
    if (collector.failures() == failed) {
      REQUIRE(families.size() == whole.size());
      CHECK(n > 10);
      break;
    }
    CHECK(families.empty());
    REQUIRE(collector.failures() == ++failed);
  }
  // Nothing aggregated was lost: the next scrape has every family as before.
  const auto after = collector.Collect();
  REQUIRE(after.size() == whole.size());
  prometheus::TextSerializer serializer;
  CHECK(serializer.Serialize(after) == serializer.Serialize(whole));
}

namespace {

// The families FamilyBuilder makes of `points`, with the labels and series it left out.
struct Built {
  std::vector<prometheus::MetricFamily> families;
  std::uint64_t label_clashes = 0;
  std::uint64_t series_clashes = 0;
};

Built Build(const std::vector<aggregate::MetricPoints>& points) {
  Built out;
  FamilyBuilder builder(out.families);
  aggregate::VisitPoints(points, builder);
  out.label_clashes = builder.label_clashes();
  out.series_clashes = builder.series_clashes();
  return out;
}

aggregate::MetricPoints Points(MetricInfo info,
                               std::vector<std::vector<std::pair<std::string, std::string>>> sets) {
  aggregate::MetricPoints m;
  m.info = std::move(info);
  for (auto& labels : sets) {
    aggregate::SeriesPoint p;
    p.labels = std::move(labels);
    p.value = 1;
    p.count = 1;
    p.bucket_counts.assign(m.info.buckets.size() + 1, 0);
    p.bucket_counts.back() = 1;
    p.quantile_values.assign(m.info.quantiles.size(), 0);
    m.series.push_back(std::move(p));
  }
  return m;
}

std::string Labels(const prometheus::ClientMetric& cm) {
  std::string out;
  for (const auto& l : cm.label) out += (out.empty() ? "" : ",") + l.name + "=" + l.value;
  return out;
}

}  // namespace

TEST_CASE("labels that share a name after sanitizing: the first stays, the others are counted") {
  const auto built =
      Build({Points(Info("dup", MetricType::kCounter), {{{"a-b", "x"}, {"a_b", "y"}}}),
             Points(Info("reserved", MetricType::kCounter), {{{"__x", "1"}, {"_x", "2"}}}),
             Points(Info("fine", MetricType::kCounter), {{{"a", "1"}, {"b", "2"}}})});
  REQUIRE(built.families.size() == 3);
  REQUIRE(built.families[0].metric.size() == 1);
  CHECK(Labels(built.families[0].metric[0]) == "a_b=x");
  REQUIRE(built.families[1].metric.size() == 1);
  CHECK(Labels(built.families[1].metric[0]) == "_x=1");
  CHECK(Labels(built.families[2].metric[0]) == "a=1,b=2");
  CHECK(built.label_clashes == 2);
  CHECK(built.series_clashes == 0);
}

TEST_CASE("le and quantile labels are exposed with the exported_ prefix") {
  MetricInfo hist = Info("t", MetricType::kDistribution);
  hist.buckets = {1};
  MetricInfo summary = Info("s", MetricType::kSummary);
  summary.quantiles = {0.5};
  const auto built = Build({Points(hist, {{{"le", "7"}}, {{"exported_le", "1"}, {"le", "2"}}}),
                            Points(summary, {{{"quantile", "q"}, {"le", "3"}}}),
                            Points(Info("c", MetricType::kCounter), {{{"le", "4"}}})});
  REQUIRE(built.families.size() == 3);
  REQUIRE(built.families[0].metric.size() == 2);
  CHECK(Labels(built.families[0].metric[0]) == "exported_le=7");
  // "exported_le" comes first: the renamed "le" is left out.
  CHECK(Labels(built.families[0].metric[1]) == "exported_le=1");
  CHECK(Labels(built.families[1].metric[0]) == "exported_quantile=q,exported_le=3");
  // promtool lints "le" on any metric that is not a histogram.
  CHECK(Labels(built.families[2].metric[0]) == "exported_le=4");
  CHECK(built.label_clashes == 1);
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, built.families);
  CHECK(text.str().find(R"(t_bucket{exported_le="7",le="1"} 0)") != std::string::npos);
  CHECK(text.str().find(R"(s{exported_quantile="q",exported_le="3",quantile="0.5"} 0)") !=
        std::string::npos);
}

TEST_CASE("series whose labels become the same are exposed once and counted") {
  const auto built = Build({Points(Info("m", MetricType::kCounter), {{{"a-b", "x"}},
                                                                     {{"a_b", "x"}},
                                                                     {{"a_b", "y"}},
                                                                     {{"a-b", "y"}, {"a_b", "z"}},
                                                                     {{"v", "\xff"}},
                                                                     {{"v", "\xfe"}}}),
                            Points(Info("n", MetricType::kCounter), {{{"a", "1"}}, {{"a", "2"}}})});
  REQUIRE(built.families.size() == 2);
  const auto& m = built.families[0].metric;
  REQUIRE(m.size() == 3);  // the first of each: a_b=x, a_b=y, v=U+FFFD
  CHECK(Labels(m[0]) == "a_b=x");
  CHECK(Labels(m[1]) == "a_b=y");
  CHECK(Labels(m[2]) == "v=\xEF\xBF\xBD");
  CHECK(built.families[1].metric.size() == 2);
  CHECK(built.label_clashes == 1);
  CHECK(built.series_clashes == 3);
}

TEST_CASE("a StatsD mapping label and a tag of the same name: the mapping label stays") {
  aggregate::EngineOptions options;
  options.statsd_mappings = {
      aggregate::StatsdMapping{"app.*.lat", "app.lat", {{"service", "$1"}, {"le", "m"}}}};
  auto created = aggregate::Engine::Create({}, options);
  REQUIRE(created.has_value());
  auto& engine = **created;
  auto shard = engine.NewShard();
  const aggregate::StatsdTagView tags[] = {{"service", "tag"}, {"le", "7"}};
  shard->RecordStatsd({"app.web.lat", aggregate::StatsdKind::kTimer, 5, {}, false, 1, tags});
  shard->RecordStatsd({"app.web.lat", aggregate::StatsdKind::kTimer, 5, {}, false, 1, {}});
  shard->Flush();
  std::vector<prometheus::MetricFamily> families;
  FamilyBuilder builder(families);
  engine.CollectSnapshot().Visit(builder);
  REQUIRE(families.size() == 1);
  // The tags service and le repeat the mapping's labels: left out, and the series then repeats
  // the one without tags.
  REQUIRE(families[0].metric.size() == 1);
  CHECK(Labels(families[0].metric[0]) == "exported_le=m,service=web");
  CHECK(builder.label_clashes() == 2);
  CHECK(builder.series_clashes() == 1);
}

TEST_CASE(
    "of StatsD names that clash, one family stays; the clashes within the others are not counted") {
  // Many names, so that finding the clashes takes the radix sort; three pairs clash (x.N and x_N).
  // One name of each pair carries two tags whose names clash (k-1 and k_1: one is left out and
  // counted), the other a plain tag: x.1 and x.3 the clashing ones, and x_2.
  auto created = aggregate::Engine::Create({}, {});
  REQUIRE(created.has_value());
  auto& engine = **created;
  auto shard = engine.NewShard();
  const aggregate::StatsdTagView clashing[] = {{"k-1", "v"}, {"k_1", "v"}};
  const aggregate::StatsdTagView plain[] = {{"k", "v"}};
  for (int i = 0; i < 5000; ++i) {
    const std::string name = "n" + std::to_string(i);
    shard->RecordStatsd({name, aggregate::StatsdKind::kCounter, 1, {}, false, 1, plain});
  }
  auto clashes_in = [](const std::string& name) {
    return name == "x.1" || name == "x.3" || name == "x_2";
  };
  for (const char* n : {"1", "2", "3"}) {
    for (const std::string& name : {std::string("x.") + n, std::string("x_") + n}) {
      const double value = name[1] == '.' ? 2 : 5;
      if (clashes_in(name)) {
        shard->RecordStatsd({name, aggregate::StatsdKind::kCounter, value, {}, false, 1, clashing});
      } else {
        shard->RecordStatsd({name, aggregate::StatsdKind::kCounter, value, {}, false, 1, plain});
      }
    }
  }
  shard->Flush();
  std::vector<prometheus::MetricFamily> families;
  FamilyBuilder builder(families);
  engine.CollectSnapshot().Visit(builder);
  CHECK(builder.clashes() == 3);
  REQUIRE(families.size() == 5003);
  // Whichever of each pair stayed, its family is whole, and only the label clashes of the
  // families that stayed are counted.
  std::uint64_t label_clashes = 0;
  for (const char* n : {"1", "2", "3"}) {
    const std::string exposed = std::string("x_") + n + "_total";
    const auto it = std::find_if(families.begin(), families.end(),
                                 [&](const auto& f) { return f.name == exposed; });
    REQUIRE(it != families.end());
    REQUIRE(it->metric.size() == 1);
    const std::string dotted = std::string("x.") + n;
    const std::string stayed =
        it->help == "StatsD metric " + dotted + "." ? dotted : "x_" + std::string(n);
    CHECK(it->help == "StatsD metric " + stayed + ".");
    CHECK(it->metric[0].counter.value == (stayed == dotted ? 2 : 5));
    CHECK(it->metric[0].label.size() == 1);
    label_clashes += clashes_in(stayed) ? 1U : 0U;
  }
  CHECK(builder.label_clashes() == label_clashes);
  for (const auto& family : families) {
    CHECK(family.metric.size() == 1);
    if (family.name.starts_with("n")) {
      CHECK(family.help == "StatsD metric " + family.name.substr(0, family.name.size() - 6) + ".");
    }
  }
  // Scraped again: the same families stay, in the same order.
  std::vector<prometheus::MetricFamily> again;
  FamilyBuilder second(again);
  engine.CollectSnapshot().Visit(second);
  REQUIRE(again.size() == families.size());
  bool same = true;
  for (std::size_t i = 0; i < families.size(); ++i)
    same = same && again[i].help == families[i].help;
  CHECK(same);
  CHECK(second.label_clashes() == label_clashes);
}
