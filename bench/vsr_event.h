// The event the benchmarks and the load generator send: VSR's prepare.sent with its six common
// metadata fields, as a VSR node emits it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "telemetryd/wire/encoder.h"

namespace telemetryd::bench {

inline wire::EventRecord VsrPrepareSent(std::int64_t i, std::string node_id) {
  wire::EventRecord e;
  e.name = "vsr.protocol.prepare.sent";
  e.measurements = {{"count", wire::Number::Int(2 + i % 3)}};
  e.metadata = {{"node_id", wire::Term::String(std::move(node_id))},
                {"view_number", wire::Term::Int(4)},
                {"status", wire::Term::Atom("normal")},
                {"cluster_size", wire::Term::Int(3)},
                {"op_number", wire::Term::Int(120'000 + i)},
                {"commit_number", wire::Term::Int(119'999 + i)}};
  return e;
}

// The load generator's native payloads: frames of `per_frame` VsrPrepareSent events whose node ids
// run "node-0" .. "node-<series - 1>", each id once per cycle through the frames. By default the
// ids follow one another through the frames, so that every event of a frame is a series of its
// own (a relay's mix of many senders); with `node_per_frame` each frame is one node's, all of its
// events carrying that node's id, as a node's own reporter sends them.
inline std::vector<std::vector<std::uint8_t>> VsrFrames(int series, int per_frame,
                                                        bool node_per_frame = false) {
  std::vector<std::vector<std::uint8_t>> out;
  const int count = std::max(1, node_per_frame ? series : (series + per_frame - 1) / per_frame);
  wire::FrameEncoder encoder(wire::EncoderOptions{.max_frame_bytes = 65000});
  int next = 0;
  for (int f = 0; f < count; ++f) {
    for (int i = 0; i < per_frame; ++i, ++next) {
      const int node = node_per_frame ? f : next % series;
      encoder.Add(VsrPrepareSent(i, "node-" + std::to_string(node)));
    }
    const auto frame = encoder.Finish();
    out.emplace_back(frame.begin(), frame.end());
  }
  return out;
}

}  // namespace telemetryd::bench
