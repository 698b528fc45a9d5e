// Events as newline-delimited JSON, the input format of `telemetry-send --stdin`. Thread-safety:
// pure functions of their arguments.
//
// One line is one JSON object:
//
//   {"event": "vsr.protocol.prepare.sent",            // or ["vsr", "protocol", "prepare", "sent"]
//    "measurements": {"count": 3, "duration": 1.5},   // optional; numbers only
//    "metadata": {"node_id": "n1", "status": ":normal"},  // optional
//    "time": 1764000000123456789}                     // optional; native units since the epoch
//
// Numbers that are integers and fit in 64 signed bits become integers, all others floats. Metadata
// values map to terms: true/false -> boolean, null -> nil, arrays -> lists, objects -> maps, and
// strings -> strings, except that, Elixir style, a string starting with ':' names an atom
// (":normal" is the atom normal). "::text" is the string ":text", and ":" alone is a string. The
// same rule applies to the keys of nested objects, so {":ip": ...} has the atom key ip. Fields are
// kept in the order of the line. Any other top-level field is an error, so that a misspelt field
// is reported rather than silently dropped.
#pragma once

#include <string_view>

#include "telemetryd/common/expected.h"
#include "telemetryd/wire/encoder.h"

namespace telemetryd::client {

// Parses one NDJSON line into an event. Error codes: "ndjson.bad_json", "ndjson.not_object",
// "ndjson.missing_event", "ndjson.bad_event", "ndjson.bad_measurements", "ndjson.bad_metadata",
// "ndjson.bad_time", "ndjson.unknown_field" (and "ndjson.internal" if memory runs out); the
// message names the offending field.
Expected<wire::EventRecord> ParseEventJson(std::string_view line);

// The metadata term a JSON string stands for under the ':' rule above.
wire::Term TermFromJsonString(std::string_view text);

}  // namespace telemetryd::client
