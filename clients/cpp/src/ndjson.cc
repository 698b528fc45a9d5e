#include "telemetryd/client/ndjson.h"

#include <cstdint>
#include <exception>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "telemetryd/wire/format.h"

namespace telemetryd::client {
namespace {

// ordered_json keeps fields in the order of the line, so the event lists them as written.
using Json = nlohmann::ordered_json;

Error FieldError(const char* code, const std::string& field, const std::string& what) {
  return Error{code, field + ": " + what};
}

std::string Got(const Json& j) { return std::string("got ") + j.type_name(); }

// JSON integers that fit in int64 stay exact; every other number is a float.
wire::Number ToNumber(const Json& j) {
  if (j.is_number_unsigned()) {
    const auto u = j.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return wire::Number::Float(static_cast<double>(u));
    }
    return wire::Number::Int(static_cast<std::int64_t>(u));
  }
  if (j.is_number_integer()) return wire::Number::Int(j.get<std::int64_t>());
  return wire::Number::Float(j.get<double>());
}

std::optional<Error> CheckKey(const char* code, const std::string& field, const std::string& key) {
  if (key.empty()) return FieldError(code, field, "empty key");
  if (key.size() > wire::kMaxStringBytes) {
    return FieldError(code, field, "key longer than 4096 bytes");
  }
  return std::nullopt;
}

// Converts a metadata value; `depth` counts the containers around it. Bounding it here also
// bounds the recursion on hostile input.
std::optional<Error> ToTerm(const Json& j, std::size_t depth, const std::string& field,
                            wire::Term& out) {
  switch (j.type()) {
    case Json::value_t::null:
      out = wire::Term::Nil();
      return std::nullopt;
    case Json::value_t::boolean:
      out = wire::Term::Bool(j.get<bool>());
      return std::nullopt;
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: {
      const wire::Number n = ToNumber(j);
      out = n.is_float ? wire::Term::Float(n.float_value) : wire::Term::Int(n.int_value);
      return std::nullopt;
    }
    case Json::value_t::string: {
      const auto& text = j.get_ref<const std::string&>();
      if (text.size() > wire::kMaxStringBytes) {
        return FieldError("ndjson.bad_metadata", field, "string longer than 4096 bytes");
      }
      out = TermFromJsonString(text);
      return std::nullopt;
    }
    case Json::value_t::array:
    case Json::value_t::object:
      break;
    case Json::value_t::binary:
    case Json::value_t::discarded:
      return FieldError("ndjson.bad_metadata", field, "unsupported value");
  }
  if (depth >= wire::kMaxNesting) {
    return FieldError("ndjson.bad_metadata", field, "nested more than 8 deep");
  }
  if (j.is_array()) {
    std::vector<wire::Term> items(j.size());
    for (std::size_t i = 0; i < j.size(); ++i) {
      if (auto e = ToTerm(j[i], depth + 1, field + "[" + std::to_string(i) + "]", items[i])) {
        return e;
      }
    }
    out = wire::Term::List(std::move(items));
    return std::nullopt;
  }
  std::vector<std::pair<wire::Term, wire::Term>> pairs;
  pairs.reserve(j.size());
  for (const auto& [key, value] : j.items()) {
    std::string child = field;
    child.append(".").append(key);
    if (key.size() > wire::kMaxStringBytes) {
      return FieldError("ndjson.bad_metadata", child, "key longer than 4096 bytes");
    }
    wire::Term term;
    if (auto e = ToTerm(value, depth + 1, child, term)) return e;
    pairs.emplace_back(TermFromJsonString(key), std::move(term));
  }
  out = wire::Term::Map(std::move(pairs));
  return std::nullopt;
}

std::optional<Error> ParseName(const Json& j, std::string& name) {
  if (j.is_string()) {
    name = j.get<std::string>();
  } else if (j.is_array()) {
    if (j.empty()) return FieldError("ndjson.bad_event", "event", "empty list of segments");
    for (std::size_t i = 0; i < j.size(); ++i) {
      const std::string field = "event[" + std::to_string(i) + "]";
      if (!j[i].is_string()) return FieldError("ndjson.bad_event", field, "want a string");
      const auto& segment = j[i].get_ref<const std::string&>();
      if (segment.empty()) return FieldError("ndjson.bad_event", field, "empty segment");
      if (i > 0) name.push_back('.');
      name += segment;
    }
  } else {
    return FieldError("ndjson.bad_event", "event", "want a string or a list of strings, " + Got(j));
  }
  if (!wire::IsValidEventName(name)) {
    return FieldError("ndjson.bad_event", "event",
                      "not a valid event name: want 1 to 16 non-empty segments joined with '.', "
                      "at most 255 bytes, no control characters");
  }
  return std::nullopt;
}

std::optional<Error> ParseMeasurements(const Json& j, wire::EventRecord& event) {
  if (j.is_null()) return std::nullopt;
  if (!j.is_object()) {
    return FieldError("ndjson.bad_measurements", "measurements", "want an object, " + Got(j));
  }
  if (j.size() > wire::kMaxMeasurements) {
    return FieldError("ndjson.bad_measurements", "measurements",
                      std::to_string(j.size()) + " fields, at most 32 allowed");
  }
  for (const auto& [key, value] : j.items()) {
    const std::string field = "measurements." + key;
    if (auto e = CheckKey("ndjson.bad_measurements", field, key)) return e;
    if (!value.is_number()) {
      return FieldError("ndjson.bad_measurements", field, "want a number, " + Got(value));
    }
    event.measurements.emplace_back(key, ToNumber(value));
  }
  return std::nullopt;
}

std::optional<Error> ParseMetadata(const Json& j, wire::EventRecord& event) {
  if (j.is_null()) return std::nullopt;
  if (!j.is_object()) {
    return FieldError("ndjson.bad_metadata", "metadata", "want an object, " + Got(j));
  }
  if (j.size() > wire::kMaxMetadata) {
    return FieldError("ndjson.bad_metadata", "metadata",
                      std::to_string(j.size()) + " fields, at most 64 allowed");
  }
  for (const auto& [key, value] : j.items()) {
    const std::string field = "metadata." + key;
    if (auto e = CheckKey("ndjson.bad_metadata", field, key)) return e;
    wire::Term term;
    if (auto e = ToTerm(value, 0, field, term)) return e;
    event.metadata.emplace_back(key, std::move(term));
  }
  return std::nullopt;
}

std::optional<Error> ParseTime(const Json& j, wire::EventRecord& event) {
  if (j.is_null()) return std::nullopt;
  if (!j.is_number_integer()) {
    return FieldError("ndjson.bad_time", "time",
                      "want an integer count of native units since the epoch, " + Got(j));
  }
  const wire::Number n = ToNumber(j);
  if (n.is_float) return FieldError("ndjson.bad_time", "time", "does not fit in 64 signed bits");
  event.system_time = n.int_value;
  return std::nullopt;
}

Expected<wire::EventRecord> Parse(std::string_view line) {
  Json j;
  try {
    j = Json::parse(line.begin(), line.end());
  } catch (const Json::parse_error& e) {
    return Error{"ndjson.bad_json", e.what()};
  }
  if (!j.is_object()) return Error{"ndjson.not_object", "want a JSON object, " + Got(j)};
  wire::EventRecord event;
  bool has_name = false;
  for (const auto& [key, value] : j.items()) {
    std::optional<Error> error;
    if (key == "event") {
      error = ParseName(value, event.name);
      has_name = true;
    } else if (key == "measurements") {
      error = ParseMeasurements(value, event);
    } else if (key == "metadata") {
      error = ParseMetadata(value, event);
    } else if (key == "time") {
      error = ParseTime(value, event);
    } else {
      error = FieldError("ndjson.unknown_field", key,
                         "unknown field; want event, measurements, metadata or time");
    }
    if (error) return *std::move(error);
  }
  if (!has_name) return Error{"ndjson.missing_event", "event: missing"};
  return event;
}

}  // namespace

wire::Term TermFromJsonString(std::string_view text) {
  if (text.size() >= 2 && text[0] == ':') {
    if (text[1] == ':') return wire::Term::String(std::string(text.substr(1)));
    return wire::Term::Atom(std::string(text.substr(1)));
  }
  return wire::Term::String(std::string(text));
}

Expected<wire::EventRecord> ParseEventJson(std::string_view line) {
  try {
    return Parse(line);
  } catch (const std::exception& e) {
    return Error{"ndjson.internal", e.what()};
  } catch (...) {
    return Error{"ndjson.internal", "unknown exception"};
  }
}

}  // namespace telemetryd::client
