// EventSink: where decoded input goes. Each ingest worker thread owns one sink and is the only
// thread that calls it, so an implementation needs no lock on this path (the aggregator keeps
// per-worker state and merges it when read). Calls must not throw and should not block.
#pragma once

#include <array>
#include <cstddef>
#include <span>

#include "telemetryd/ingest/statsd.h"
#include "telemetryd/wire/event.h"

namespace telemetryd::ingest {

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept = 0;
  virtual void OnStatsd(const StatsdSample& sample) noexcept = 0;
  // The samples of one packet (or part of one), in order: views into the packet, valid during the
  // call. The intake delivers StatsD this way (StatsdRuns); a sink that gains from seeing several
  // samples at once overrides it.
  virtual void OnStatsdSamples(std::span<const StatsdSample> samples) noexcept {
    for (const StatsdSample& sample : samples) OnStatsd(sample);
  }
  // A sink may look at a native frame's events before it gets them: when WantsPreview says so
  // (asked per frame), the frame is decoded twice, and the sink gets Preview for each event, then
  // PreviewDone, then OnEvent for each. Worth it where what the events need is far from the caches.
  virtual bool WantsPreview() noexcept { return false; }
  virtual void Preview(const wire::FrameInfo& /*frame*/, const wire::Event& /*event*/) noexcept {}
  virtual void PreviewDone() noexcept {}
};

// The most samples StatsdRuns hands a sink at once.
inline constexpr std::size_t kStatsdRun = 32;

// Holds the samples a StatsdLineParser delivers for one packet and hands them to a sink's
// OnStatsdSamples in runs: each time kStatsdRun are held, and at Flush. Call Flush when the packet
// is parsed, before its bytes change: the samples are views into it.
class StatsdRuns {
 public:
  explicit StatsdRuns(EventSink& sink) noexcept : sink_(sink) {}
  void Add(const StatsdSample& sample) noexcept {
    // Field by field, each read as wide as the parser wrote it: a whole-struct copy reads 16 bytes
    // at a time across several narrower stores the parser has just made, which the processor
    // cannot forward to the load, so each such read waits for the stores to reach the cache.
    StatsdSample& s = samples_[count_++];
    s.name = {sample.name.data(), sample.name.size()};
    s.type = sample.type;
    s.value = sample.value;
    s.set_member = {sample.set_member.data(), sample.set_member.size()};
    s.gauge_delta = sample.gauge_delta;
    s.sample_rate = sample.sample_rate;
    s.tag_text = {sample.tag_text.data(), sample.tag_text.size()};
    if (count_ == samples_.size()) Flush();
  }
  void Flush() noexcept {
    if (count_ == 0) return;
    sink_.OnStatsdSamples(std::span<const StatsdSample>(samples_.data(), count_));
    count_ = 0;
  }

 private:
  EventSink& sink_;
  std::array<StatsdSample, kStatsdRun> samples_{};
  std::size_t count_ = 0;
};

}  // namespace telemetryd::ingest
