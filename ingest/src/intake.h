// Private: the per-worker, per-listener step between bytes and the sink. It owns the decoder or
// parser, counts what it sees and logs rejections at a limited rate.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "telemetryd/common/log.h"
#include "telemetryd/ingest/ingest_stats.h"
#include "telemetryd/ingest/listener_options.h"
#include "telemetryd/ingest/sink.h"
#include "telemetryd/ingest/statsd.h"
#include "telemetryd/wire/decoder.h"

namespace telemetryd::ingest::detail {

class Intake final : public wire::FrameVisitor, public StatsdVisitor {
 public:
  // `statsd_max_line_bytes`: the longest StatsD line taken (the listener's limit).
  Intake(Protocol protocol, std::string listener_name, EventSink& sink, ListenerStats& stats,
         std::size_t statsd_max_line_bytes)
      : protocol_(protocol),
        name_(std::move(listener_name)),
        sink_(sink),
        stats_(stats),
        parser_(statsd_max_line_bytes) {}
  Intake(const Intake&) = delete;
  Intake& operator=(const Intake&) = delete;

  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  // One UDP datagram, one TCP frame (native) or a run of whole lines (StatsD).
  void Packet(std::span<const std::uint8_t> bytes) noexcept {
    stats_.packets.Add();
    stats_.bytes.Add(bytes.size());
    if (protocol_ == Protocol::kNative) {
      if (sink_.WantsPreview()) {
        Previewer previewer{sink_};
        decoder_.Decode(bytes, previewer);  // what it rejects is counted by the decoding below
        sink_.PreviewDone();
      }
      const auto summary = decoder_.Decode(bytes, *this);
      stats_.events.Add(summary.events_accepted);
    } else {
      const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      stats_.events.Add(parser_.Parse(text, *this));
      runs_.Flush();
    }
  }

  // Input that never reached the decoder: cut datagrams, oversize TCP frames or lines.
  void RejectOversize() noexcept {
    if (protocol_ == Protocol::kNative) {
      OnError(wire::DecodeError::kFrameTooLarge, 0);
    } else {
      OnError(StatsdError::kLineTooLong, std::string_view{});
    }
  }

  // Native: the start of a TCP frame whose connection ended before the rest came. Its events
  // cannot be read, nor counted.
  void RejectCutFrame() noexcept { OnError(wire::DecodeError::kTruncated, 0); }

  void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
    sink_.OnEvent(frame, event);
  }
  void OnError(wire::DecodeError error, std::uint32_t events_lost) noexcept override {
    stats_.rejected[static_cast<std::size_t>(error)].Add();
    stats_.events_lost.Add(events_lost);
    Log(wire::DecodeErrorName(error), {});
  }
  // Samples are views into the packet, which outlives its Parse: they go to the sink in runs.
  void OnSample(const StatsdSample& sample) noexcept override { runs_.Add(sample); }
  void OnError(StatsdError error, std::string_view line) noexcept override {
    stats_.rejected[static_cast<std::size_t>(error)].Add();
    Log(StatsdErrorName(error), line);
  }

 private:
  // Hands the events of a frame's first decoding to the sink's Preview.
  struct Previewer final : wire::FrameVisitor {
    explicit Previewer(EventSink& to) noexcept : sink(to) {}
    void OnEvent(const wire::FrameInfo& frame, const wire::Event& event) noexcept override {
      sink.Preview(frame, event);
    }
    void OnError(wire::DecodeError /*error*/, std::uint32_t /*events_lost*/) noexcept override {}
    EventSink& sink;
  };

  // Logs rejected input (at most every 10 s): the listener, the reason, and the line (StatsD).
  void Log(std::string_view reason, std::string_view line) noexcept {
    log_(
        [&] {
          std::string message = name_ + ": rejected input: " + std::string(reason);
          if (!line.empty()) {
            message +=
                ": \"" + std::string(line.substr(0, 200)) + (line.size() > 200 ? "...\"" : "\"");
          }
          return message;
        },
        reason);
  }

  Protocol protocol_;
  std::string name_;
  EventSink& sink_;
  ListenerStats& stats_;
  wire::FrameDecoder decoder_;
  StatsdLineParser parser_;
  StatsdRuns runs_{sink_};  // a packet's samples not yet delivered
  log::RateLimitedLog log_{log::Level::kWarn, 10'000};
};

}  // namespace telemetryd::ingest::detail
