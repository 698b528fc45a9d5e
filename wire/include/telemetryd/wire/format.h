// Wire format v1 constants, limits and the static string table (docs/wire-format.md is the spec).
// Thread-safety: constants and pure functions only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace telemetryd::wire {

inline constexpr std::uint8_t kMagic0 = 0xD7;
inline constexpr std::uint8_t kMagic1 = 0x1E;
inline constexpr std::uint8_t kVersion = 1;

// Frame flags (byte 3 of the header).
inline constexpr std::uint8_t kFrameHasBaseTime = 0x01;
// Event flags (first byte after the name reference).
inline constexpr std::uint8_t kEventHasTime = 0x01;

// Limits a v1 decoder enforces; an encoder must stay within them.
inline constexpr std::size_t kMaxFrameBytes = std::size_t{16}
                                              << 20;  // hard cap; listeners set lower
inline constexpr std::size_t kMaxStrings = 1024;      // dynamic strings per frame
inline constexpr std::size_t kMaxStringBytes = 4096;
inline constexpr std::size_t kMaxNameBytes = 255;
inline constexpr std::size_t kMaxNameSegments = 16;
inline constexpr std::size_t kMaxMeasurements = 32;
inline constexpr std::size_t kMaxMetadata = 64;
inline constexpr std::size_t kMaxNesting = 8;
inline constexpr std::size_t kMaxEventsPerFrame = 65536;
inline constexpr std::uint64_t kMaxUnitsPerSecond = 1'000'000'000'000ULL;

// Metadata value tags.
enum class Tag : std::uint8_t {
  kNil = 0x00,
  kFalse = 0x01,
  kTrue = 0x02,
  kInt = 0x03,     // zigzag varint
  kFloat = 0x04,   // IEEE 754 binary64, little endian
  kString = 0x05,  // varint string reference
  kAtom = 0x06,    // varint string reference
  kBytes = 0x07,   // varint length, raw bytes (opaque: references, pids)
  kList = 0x08,    // varint count, values
  kTuple = 0x09,   // varint count, values
  kMap = 0x0A,     // varint pair count, key value key value ...
};
inline constexpr std::uint8_t kSmallIntTag = 0x40;  // 0x40..0x7F: the integer 0..63 in the tag
inline constexpr std::uint8_t kSmallIntMax = 63;

// The v1 static string table: references 0..kStaticStrings-1 name these strings; frame strings
// follow from kStaticStrings on. Frozen for v1: changing it is a new version.
inline constexpr std::size_t kStaticStrings = 64;
// Frozen for v1 (docs/wire-format.md lists the same strings with their references; a test checks
// that the two agree). Measurement keys come first so that (ref << 1 | kind) fits one byte.
inline constexpr std::array<std::string_view, kStaticStrings> kStaticTable = {
    "count",
    "duration",
    "monotonic_time",
    "system_time",
    "bytes",
    "duration_ms",
    "duration_us",
    "queue_len",
    "queue_size",
    "operations_committed",
    "startup_time_ms",
    "sockets",
    "value",
    "size",
    "telemetry_span_context",
    "node_id",
    "view_number",
    "status",
    "cluster_size",
    "op_number",
    "commit_number",
    "is_primary",
    "node",
    "name",
    "reason",
    "result",
    "error",
    "kind",
    "stacktrace",
    "error_context",
    "tenant_id",
    "policy_id",
    "provider_id",
    "correlation_id",
    "table",
    "pool",
    "worker_id",
    "sender",
    "operation",
    "client_id",
    "request_id",
    "old_status",
    "new_status",
    "old_view",
    "new_view",
    "ok",
    "undefined",
    "nil",
    "normal",
    "view_change",
    "uninitialized",
    "primary",
    "backup",
    "device",
    "exit_code",
    "listen_addrs",
    "ip",
    "port",
    "channel",
    "config",
    "message",
    "type",
    "id",
    "host",
};
std::span<const std::string_view> StaticStrings() noexcept;
// Index of `text` in the static table, if it is there.
std::optional<std::uint32_t> FindStatic(std::string_view text) noexcept;

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF).
bool IsValidUtf8(std::string_view text) noexcept;

// Event names are the :telemetry segments joined with '.': non-empty segments, at most
// kMaxNameSegments of them, at most kMaxNameBytes, valid UTF-8, no control characters.
bool IsValidEventName(std::string_view name) noexcept;

}  // namespace telemetryd::wire
