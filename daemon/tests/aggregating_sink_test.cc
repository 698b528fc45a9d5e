#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "aggregating_sink.h"
#include "telemetryd/aggregate/engine.h"
#include "telemetryd/ingest/statsd.h"

using namespace telemetryd;

namespace {

std::unique_ptr<aggregate::Engine> NewEngine() {
  auto engine = aggregate::Engine::Create({}, {});
  REQUIRE(engine.has_value());
  return std::move(*engine);
}

// Parses StatsD packets into one shard through the daemon's sink, counting rejected lines by
// reason as the ingest server does.
class Pipeline final : public ingest::StatsdVisitor {
 public:
  Pipeline() : engine_(NewEngine()), shard_(engine_->NewShard()) {}

  // As the intake does: a packet's samples go to the sink in one run.
  void Send(std::string_view packet) {
    samples_.clear();
    parser_.Parse(packet, *this);
    sink_.OnStatsdSamples(samples_);
  }
  void OnSample(const ingest::StatsdSample& sample) noexcept override {
    samples_.push_back(sample);
  }
  // The same packet's samples one call each.
  void SendOneByOne(std::string_view packet) {
    samples_.clear();
    parser_.Parse(packet, *this);
    for (const auto& sample : samples_) sink_.OnStatsd(sample);
  }
  void OnError(ingest::StatsdError error, std::string_view /*line*/) noexcept override {
    ++errors[std::string(ingest::StatsdErrorName(error))];
  }

  // Value of each series of `name`, by its labels written "k=v,k2=v2".
  std::map<std::string, double> Series(const std::string& name) {
    shard_->Flush();
    std::map<std::string, double> out;
    for (const auto& metric : engine_->Collect()) {
      if (metric.info.name != name) continue;
      for (const auto& series : metric.series) {
        std::string labels;
        for (const auto& [key, value] : series.labels) {
          labels += (labels.empty() ? "" : ",") + key + "=" + value;
        }
        out[labels] = series.value;
      }
    }
    return out;
  }

  std::map<std::string, int> errors;

 private:
  std::unique_ptr<aggregate::Engine> engine_;
  std::unique_ptr<aggregate::Shard> shard_;
  AggregatingSink sink_{*shard_, false};
  ingest::StatsdLineParser parser_;
  std::vector<ingest::StatsdSample> samples_;
};

}  // namespace

TEST_CASE("StatsD through the sink: repeated tag texts, reordered tags, bad tag sections") {
  Pipeline p;
  p.Send("hits:1|c|#env:prod,host:a\nhits:2|c|#env:prod,host:a\nhits:4|c|#host:a,env:prod\n");
  p.Send("hits:8|c|#env:prod,host:b\nhits:16|c|#env:prod|@1|#host:a\nhits:32|c|#env:prod\n");
  CHECK(p.Series("hits") == std::map<std::string, double>{
                                {"env=prod", 32}, {"env=prod,host=a", 23}, {"env=prod,host=b", 8}});
  CHECK(p.errors.empty());

  // After identical good lines, a bad section on the same name is still rejected and counted.
  p.Send("hits:64|c|#env:prod,host:a,\nhits:64|c|#env:prod,,host:a\nhits:64|c|#:x\n");
  p.Send("hits:64|c|#env:prod,host:a\n");
  CHECK(p.errors == std::map<std::string, int>{{"bad_tags", 3}});
  CHECK(p.Series("hits").at("env=prod,host=a") == 87);

  // The same tag text under another type or name is another series (or a counted conflict).
  p.Send("other:5|c|#env:prod,host:a\nhits:5|g|#env:prod,host:a\n");
  CHECK(p.Series("other") == std::map<std::string, double>{{"env=prod,host=a", 5}});
  CHECK(p.Series("hits").at("env=prod,host=a") == 87);
}

TEST_CASE("StatsD through the sink: a packet longer than a run, and samples one call each") {
  // 100 lines with 10 tag texts in one packet: the sink records them in runs of its own size.
  std::string packet;
  for (int i = 0; i < 100; ++i) {
    packet += "runs:" + std::to_string(i) + "|c|#k:" + std::to_string(i % 10) + "\n";
  }
  packet += "level:10|g\nlevel:+5|g\nlevel:-3|g\n";
  Pipeline in_runs;
  Pipeline one_by_one;
  in_runs.Send(packet);
  one_by_one.SendOneByOne(packet);
  std::map<std::string, double> expected;
  for (int i = 0; i < 100; ++i) expected["k=" + std::to_string(i % 10)] += i;
  CHECK(in_runs.Series("runs") == expected);
  CHECK(one_by_one.Series("runs") == expected);
  CHECK(in_runs.Series("level") == std::map<std::string, double>{{"", 12}});
  CHECK(one_by_one.Series("level") == std::map<std::string, double>{{"", 12}});
}
