// Decoded events: read-only views into a frame's bytes, valid only during the visitor call that
// receives them. Nothing here allocates. Thread-safety: values; share nothing across threads.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "telemetryd/wire/format.h"

namespace telemetryd::wire {

// A measurement value: an exact 64-bit integer or a binary64 float.
struct Number {
  bool is_float = false;
  std::int64_t int_value = 0;
  double float_value = 0.0;

  static Number Int(std::int64_t v) noexcept { return Number{false, v, 0.0}; }
  static Number Float(double v) noexcept { return Number{true, 0, v}; }
  [[nodiscard]] double AsDouble() const noexcept {
    return is_float ? float_value : static_cast<double>(int_value);
  }
};

// The strings a frame can reference: the static table, then the frame's own.
struct StringTable {
  const std::string_view* frame_strings = nullptr;
  std::uint32_t frame_count = 0;

  // Resolves reference `ref`; false when it names no string. Inline: it runs per field.
  bool Resolve(std::uint64_t ref, std::string_view& out) const noexcept {
    if (ref < kStaticStrings) {
      out = kStaticTable[ref];
      return true;
    }
    const std::uint64_t index = ref - kStaticStrings;
    if (index >= frame_count) return false;
    out = frame_strings[index];
    return true;
  }
};

enum class ValueKind : std::uint8_t {
  kNil,
  kBool,
  kInt,
  kFloat,
  kString,
  kAtom,
  kBytes,
  kList,
  kTuple,
  kMap
};

// A metadata value. Scalars are held directly; lists, tuples and maps keep their encoded bytes and
// element count and are read with ValueReader (a map's elements alternate key, value). Only the
// fields that belong to `kind` are meaningful.
struct Value {
  ValueKind kind = ValueKind::kNil;
  bool bool_value = false;
  std::int64_t int_value = 0;
  double float_value = 0.0;
  std::string_view text;               // kString, kAtom, kBytes
  std::uint32_t count = 0;             // kList, kTuple: elements; kMap: pairs
  std::span<const std::uint8_t> body;  // encoded elements of a container
  const StringTable* strings = nullptr;

  [[nodiscard]] bool IsContainer() const noexcept {
    return kind == ValueKind::kList || kind == ValueKind::kTuple || kind == ValueKind::kMap;
  }
};

// Iterates the elements of a container Value (already validated by the decoder).
class ValueReader {
 public:
  explicit ValueReader(const Value& container) noexcept;
  // Reads the next element into `out`; false at the end.
  bool Next(Value& out) noexcept;

 private:
  std::span<const std::uint8_t> rest_;
  std::uint32_t remaining_;
  const StringTable* strings_;
};

struct Measurement {
  std::string_view key;
  Number value;
  std::uint32_t key_ref = 0;  // the key's string reference: equal refs, equal keys, per frame
};

struct MetadataField {
  Value value;
  std::uint32_t key_ref = 0;  // the key's string reference: equal refs, equal keys, per frame

  // The key's text. Resolved when asked (most consumers compare key_ref): a static key by the
  // static table, a frame key through value.strings, so only while the frame is.
  [[nodiscard]] std::string_view key() const noexcept {
    std::string_view text;
    if (key_ref < kStaticStrings) return kStaticTable[key_ref];
    if (value.strings != nullptr) (void)value.strings->Resolve(key_ref, text);
    return text;
  }
};

// What a frame says about all of its events.
struct FrameInfo {
  std::uint64_t units_per_second = 1'000'000'000;  // the sender's native time unit
  bool has_base_time = false;
  std::int64_t base_time = 0;  // native units since the Unix epoch
  std::uint64_t sequence = 0;  // unique per frame decoded on a thread (by any decoder): a cache key
};

struct Event {
  std::string_view name;       // segments joined with '.'
  std::uint32_t name_ref = 0;  // the name's string reference: equal refs, equal names, per frame
  bool has_time = false;
  std::int64_t system_time = 0;  // native units since the Unix epoch, when has_time
  std::span<const Measurement> measurements;
  std::span<const MetadataField> metadata;

  // First measurement or metadata field named `key`, or nullptr.
  [[nodiscard]] const Measurement* FindMeasurement(std::string_view key) const noexcept;
  [[nodiscard]] const MetadataField* FindMetadata(std::string_view key) const noexcept;
};

}  // namespace telemetryd::wire
