// Two simple EventSinks: CountingSink (counts what arrives) and DebugSink (prints every event and
// sample to a FILE, one line each). Thread-safety: one instance per worker, like every sink;
// CountingSink's counts may be read from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>

#include "telemetryd/ingest/ingest_stats.h"
#include "telemetryd/ingest/sink.h"

namespace telemetryd::ingest {

class CountingSink final : public EventSink {
 public:
  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override;
  void OnStatsd(const StatsdSample& sample) noexcept override;

  [[nodiscard]] std::uint64_t events() const noexcept { return events_.Get(); }
  [[nodiscard]] std::uint64_t measurements() const noexcept { return measurements_.Get(); }
  [[nodiscard]] std::uint64_t statsd_samples() const noexcept { return samples_.Get(); }

 private:
  SingleWriterCounter events_;
  SingleWriterCounter measurements_;
  SingleWriterCounter samples_;
};

// Formats one event as a line: `vsr.protocol.prepare.sent count=3 node_id="n1" status=:normal`.
std::string FormatEvent(const wire::Event& event);
std::string FormatSample(const StatsdSample& sample);

class DebugSink final : public EventSink {
 public:
  explicit DebugSink(std::FILE* out) noexcept : out_(out) {}
  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override;
  void OnStatsd(const StatsdSample& sample) noexcept override;

 private:
  std::FILE* out_;
};

}  // namespace telemetryd::ingest
