// Microbenchmarks of the ingest hot path: decoding a 20-event native frame and parsing a 25-line
// StatsD datagram. Items processed = events or lines, so Google Benchmark reports ns per item.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "telemetryd/ingest/statsd.h"
#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/encoder.h"
#include "vsr_event.h"

namespace {

using namespace telemetryd;

// Reads the fields a sink would, so the work cannot be optimised away.
class TouchVisitor final : public wire::FrameVisitor, public ingest::StatsdVisitor {
 public:
  std::uint64_t checksum = 0;
  void OnEvent(const wire::FrameInfo& /*frame*/, const wire::Event& e) noexcept override {
    checksum += e.name.size() + e.measurements.size() + e.metadata.size();
    for (const auto& m : e.measurements) checksum += static_cast<std::uint64_t>(m.value.int_value);
  }
  void OnError(wire::DecodeError /*error*/, std::uint32_t /*lost*/) noexcept override {
    ++checksum;
  }
  void OnSample(const ingest::StatsdSample& s) noexcept override {
    checksum += s.name.size() + s.tag_text.size() + static_cast<std::uint64_t>(s.value);
  }
  void OnError(ingest::StatsdError /*error*/, std::string_view /*line*/) noexcept override {
    ++checksum;
  }
};

// A frame of `events` events over `nodes` node ids (each a string of the frame's table).
std::vector<std::uint8_t> VsrFrame(int events, int nodes = 1) {
  wire::FrameEncoder encoder(wire::EncoderOptions{.max_frame_bytes = 65000});
  for (int i = 0; i < events; ++i) {
    encoder.Add(bench::VsrPrepareSent(i, "vsr-node-" + std::to_string(1 + i % nodes)));
  }
  const auto frame = encoder.Finish();
  return {frame.begin(), frame.end()};
}

// Decodes `frame` (of 20 events) over and over, handing each event to a visitor that reads it.
void DecodeFrames(benchmark::State& state, const std::vector<std::uint8_t>& frame) {
  wire::FrameDecoder decoder;
  TouchVisitor visitor;
  for (auto _ : state) {
    decoder.Decode(frame, visitor);
  }
  benchmark::DoNotOptimize(visitor.checksum);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 20);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(frame.size()));
}

void BM_DecodeFrame20(benchmark::State& state) { DecodeFrames(state, VsrFrame(20)); }
BENCHMARK(BM_DecodeFrame20);

// As BM_DecodeFrame20, but with a node id of its own per event, as the load generator sends them.
void BM_DecodeFrame20Nodes(benchmark::State& state) { DecodeFrames(state, VsrFrame(20, 20)); }
BENCHMARK(BM_DecodeFrame20Nodes);

// tags: 0 none (lines of 26 to 33 bytes), 1 three (54 to 61 bytes), 2 six (103 to 110 bytes),
// 3 eight (148 to 155 bytes).
std::string StatsdDatagram(int tags) {
  std::string out;
  for (int i = 0; i < 25; ++i) {
    out += "app.service.requests." + std::to_string(i % 5) + ":" + std::to_string(i + 1);
    out += (i % 3 == 0) ? "|c" : (i % 3 == 1 ? "|ms|@0.5" : "|g");
    if (tags != 0) out += "|#env:prod,host:web-" + std::to_string(i % 4) + ",canary";
    if (tags >= 2) out += ",region:eu-west-1,version:1.24.3,service:checkout";
    if (tags >= 3) out += ",pod:checkout-7d9f8b6c5-x2k4q,zone:eu-west-1b";
    out += '\n';
  }
  return out;
}

void BM_StatsdParse25(benchmark::State& state) {
  const std::string datagram = StatsdDatagram(static_cast<int>(state.range(0)));
  ingest::StatsdLineParser parser;
  TouchVisitor visitor;
  for (auto _ : state) {
    parser.Parse(datagram, visitor);
  }
  benchmark::DoNotOptimize(visitor.checksum);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 25);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(datagram.size()));
}
BENCHMARK(BM_StatsdParse25)->Arg(0)->Arg(1)->Arg(2)->Arg(3)->ArgNames({"tags"});

}  // namespace

BENCHMARK_MAIN();
