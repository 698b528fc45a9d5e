// The event the benchmarks and the load generator send: VSR's prepare.sent with its six common
// metadata fields, as a VSR node emits it.
#pragma once

#include <cstdint>
#include <string>

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

}  // namespace telemetryd::bench
