// AggregatingSink: what each ingest worker hands its input to (its aggregation shard, and stderr
// when asked to print). Header-only so that the benchmarks measure the daemon's own sink.
// Thread-safety: one sink per worker thread.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdio>
#include <span>
#include <string_view>

#include "telemetryd/aggregate/engine.h"
#include "telemetryd/ingest/sink.h"
#include "telemetryd/ingest/sinks.h"
#include "telemetryd/ingest/statsd.h"

namespace telemetryd {

// The sink converts StatsD types by value: the two enums must stay in step.
static_assert(static_cast<int>(ingest::StatsdType::kCounter) ==
                  static_cast<int>(aggregate::StatsdKind::kCounter) &&
              static_cast<int>(ingest::StatsdType::kGauge) ==
                  static_cast<int>(aggregate::StatsdKind::kGauge) &&
              static_cast<int>(ingest::StatsdType::kTimer) ==
                  static_cast<int>(aggregate::StatsdKind::kTimer) &&
              static_cast<int>(ingest::StatsdType::kHistogram) ==
                  static_cast<int>(aggregate::StatsdKind::kHistogram) &&
              static_cast<int>(ingest::StatsdType::kDistribution) ==
                  static_cast<int>(aggregate::StatsdKind::kDistribution) &&
              static_cast<int>(ingest::StatsdType::kSet) ==
                  static_cast<int>(aggregate::StatsdKind::kSet));

// What each worker hands its input to: its aggregation shard, and stderr when asked to print.
// A reload points it at another shard, on the worker's own thread.
class AggregatingSink final : public ingest::EventSink {
 public:
  AggregatingSink(aggregate::Shard& shard, bool print)
      : shard_(&shard), debug_(stderr), print_(print) {}
  void Use(aggregate::Shard& shard, bool print) noexcept {
    shard_ = &shard;
    print_ = print;
  }
  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    shard_->Record(frame, event);
    if (print_) debug_.OnEvent(frame, event);
  }
  bool WantsPreview() noexcept override { return shard_->PreviewHelps(); }
  void Preview(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    shard_->Preview(frame, event);
  }
  void PreviewDone() noexcept override { shard_->PreviewDone(); }
  void OnStatsd(const ingest::StatsdSample& sample) noexcept override {
    OnStatsdSamples(std::span<const ingest::StatsdSample>(&sample, 1));
  }
  void OnStatsdSamples(std::span<const ingest::StatsdSample> samples) noexcept override {
    while (!samples.empty()) {
      const std::size_t n = std::min(samples.size(), inputs_.size());
      for (std::size_t i = 0; i < n; ++i) {
        const ingest::StatsdSample& sample = samples[i];
        // The engine asks for the tags only for a sample its cache has not seen.
        inputs_[i] = aggregate::StatsdInput{sample.name,
                                            static_cast<aggregate::StatsdKind>(sample.type),
                                            sample.value,
                                            sample.set_member,
                                            sample.gauge_delta,
                                            sample.sample_rate,
                                            {},
                                            sample.tag_text,
                                            &AggregatingSink::SplitTags,
                                            this};
        if (print_) debug_.OnStatsd(sample);
      }
      shard_->RecordStatsd(std::span<const aggregate::StatsdInput>(inputs_.data(), n));
      samples = samples.subspan(n);
    }
  }

 private:
  static std::span<const aggregate::StatsdTagView> SplitTags(const void* self,
                                                             std::string_view text) noexcept {
    return ingest::SplitStatsdTags(text, static_cast<const AggregatingSink*>(self)->tags_);
  }

  aggregate::Shard* shard_;
  ingest::DebugSink debug_;
  bool print_;
  std::array<aggregate::StatsdInput, ingest::kStatsdRun> inputs_{};       // scratch
  mutable std::array<ingest::StatsdTag, ingest::kStatsdMaxTags> tags_{};  // scratch
};

}  // namespace telemetryd
