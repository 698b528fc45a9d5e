// Test helpers: a visitor that records what the decoder produced, typed-JSON terms (the form the
// golden vectors in docs/wire-vectors.json use), and hex conversion.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "telemetryd/wire/decoder.h"
#include "telemetryd/wire/encoder.h"
#include "telemetryd/wire/term.h"

namespace telemetryd::wire::test {

struct DecodedEvent {
  std::string name;
  bool has_time = false;
  std::int64_t system_time = 0;
  std::vector<std::pair<std::string, Number>> measurements;
  std::vector<std::pair<std::string, Term>> metadata;
};

struct Recorder : FrameVisitor {
  std::vector<DecodedEvent> events;
  std::vector<std::pair<DecodeError, std::uint32_t>> errors;
  FrameInfo last_frame;

  void OnEvent(const FrameInfo& frame, const Event& event) noexcept override {
    last_frame = frame;
    DecodedEvent e;
    e.name = std::string(event.name);
    e.has_time = event.has_time;
    e.system_time = event.system_time;
    for (const auto& m : event.measurements)
      e.measurements.emplace_back(std::string(m.key), m.value);
    for (const auto& f : event.metadata)
      e.metadata.emplace_back(std::string(f.key()), ToTerm(f.value));
    events.push_back(std::move(e));
  }
  void OnError(DecodeError error, std::uint32_t lost) noexcept override {
    errors.emplace_back(error, lost);
  }
};

inline std::string ToHex(std::span<const std::uint8_t> bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (const auto b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

inline std::vector<std::uint8_t> FromHex(std::string_view hex) {
  std::vector<std::uint8_t> out;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int high = -1;
  for (const char c : hex) {
    const int n = nibble(c);
    if (n < 0) continue;  // spaces and line breaks are allowed between bytes
    if (high < 0) {
      high = n;
    } else {
      out.push_back(static_cast<std::uint8_t>(high * 16 + n));
      high = -1;
    }
  }
  return out;
}

// Typed JSON: null, true/false, {"int": n}, {"float": x}, {"string": s}, {"atom": s},
// {"bytes": hex}, {"list": [..]}, {"tuple": [..]}, {"map": [[k, v], ..]}.
inline Term TermFromJson(const nlohmann::json& j) {
  if (j.is_null()) return Term::Nil();
  if (j.is_boolean()) return Term::Bool(j.get<bool>());
  const auto it = j.begin();  // typed terms are one-key objects
  const std::string kind = it.key();
  const nlohmann::json& v = it.value();
  if (kind == "int") return Term::Int(v.get<std::int64_t>());
  if (kind == "float") return Term::Float(v.get<double>());
  if (kind == "string") return Term::String(v.get<std::string>());
  if (kind == "atom") return Term::Atom(v.get<std::string>());
  if (kind == "bytes") {
    const auto raw = FromHex(v.get<std::string>());
    return Term::Bytes(std::string(raw.begin(), raw.end()));
  }
  std::vector<Term> items;
  if (kind == "map") {
    std::vector<std::pair<Term, Term>> pairs;
    for (const auto& kv : v) pairs.emplace_back(TermFromJson(kv[0]), TermFromJson(kv[1]));
    return Term::Map(std::move(pairs));
  }
  for (const auto& item : v) items.push_back(TermFromJson(item));
  return kind == "list" ? Term::List(std::move(items)) : Term::Tuple(std::move(items));
}

inline Number NumberFromJson(const nlohmann::json& j) {
  if (j.contains("float")) return Number::Float(j["float"].get<double>());
  return Number::Int(j["int"].get<std::int64_t>());
}

inline EventRecord EventFromJson(const nlohmann::json& j) {
  EventRecord e;
  e.name = j["name"].get<std::string>();
  if (j.contains("system_time")) e.system_time = j["system_time"].get<std::int64_t>();
  for (const auto& m : j.value("measurements", nlohmann::json::array())) {
    e.measurements.emplace_back(m[0].get<std::string>(), NumberFromJson(m[1]));
  }
  for (const auto& f : j.value("metadata", nlohmann::json::array())) {
    e.metadata.emplace_back(f[0].get<std::string>(), TermFromJson(f[1]));
  }
  return e;
}

inline bool SameNumber(const Number& a, const Number& b) {
  return a.is_float == b.is_float &&
         (a.is_float ? a.float_value == b.float_value : a.int_value == b.int_value);
}

// True when a decoded event says exactly what the record said.
inline bool Same(const DecodedEvent& d, const EventRecord& r) {
  if (d.name != r.name || d.has_time != r.system_time.has_value()) return false;
  if (r.system_time && d.system_time != *r.system_time) return false;
  if (d.measurements.size() != r.measurements.size() || d.metadata.size() != r.metadata.size()) {
    return false;
  }
  for (std::size_t i = 0; i < d.measurements.size(); ++i) {
    if (d.measurements[i].first != r.measurements[i].first ||
        !SameNumber(d.measurements[i].second, r.measurements[i].second)) {
      return false;
    }
  }
  for (std::size_t i = 0; i < d.metadata.size(); ++i) {
    if (d.metadata[i] != r.metadata[i]) return false;
  }
  return true;
}

// Encodes records into one frame; fails the caller's expectations by returning an empty frame.
inline std::vector<std::uint8_t> EncodeAll(const std::vector<EventRecord>& records,
                                           EncoderOptions options = {}) {
  options.max_frame_bytes = 1 << 20;
  FrameEncoder encoder(options);
  for (const auto& r : records) {
    if (encoder.Add(r) != AddResult::kAdded) return {};
  }
  const auto frame = encoder.Finish();
  return {frame.begin(), frame.end()};
}

}  // namespace telemetryd::wire::test
