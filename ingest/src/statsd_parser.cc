#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "telemetryd/common/bytes.h"
#include "telemetryd/ingest/statsd.h"
#include "telemetryd/wire/format.h"

namespace telemetryd::ingest {
namespace {

constexpr std::array<std::string_view, kStatsdErrorCount> kErrorNames = {
    "missing_value", "bad_value",    "bad_type",      "bad_sample_rate",
    "bad_tags",      "invalid_name", "line_too_long", "unsupported",
};

// Numbers of up to 19 characters cannot overflow a 64-bit accumulator, and converting that exact
// integer to double rounds the same way a decimal parse would.
constexpr std::size_t kFastNumberChars = 19;
// With at most 15 digits a decimal such as "12.75" is an integer below 2^53 over an exact power of
// ten, and one IEEE division of exact operands is correctly rounded.
constexpr std::size_t kFastDecimalDigits = 15;
constexpr std::array<double, kFastDecimalDigits + 1> kPow10 = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};

// memchr over [begin, end), returning `end` when `c` is absent. An empty range may come from an
// empty string_view whose data() is null, which memchr must not see.
const char* Find(const char* begin, const char* end, char c) noexcept {
  if (begin == end) return end;
  const void* hit = std::memchr(begin, c, static_cast<std::size_t>(end - begin));
  return hit != nullptr ? static_cast<const char*>(hit) : end;
}

// The first '\n' in [begin, end), or `end`. Lines are short: sixteen bytes per step inline (SSE2)
// rather than a call to memchr per line, which costs more than the search.
const char* FindNewline(const char* begin, const char* end) noexcept {
#if defined(__SSE2__)
  const __m128i newline = _mm_set1_epi8('\n');
  for (; end - begin >= 16; begin += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(begin));
    const int hits = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, newline));
    if (hits != 0) return begin + std::countr_zero(static_cast<unsigned>(hits));
  }
#endif
  return Find(begin, end, '\n');
}

std::string_view View(const char* begin, const char* end) noexcept {
  return {begin, static_cast<std::size_t>(end - begin)};
}

bool IsDigit(char c) noexcept { return static_cast<unsigned char>(c - '0') <= 9; }

// The slow path of ParseNumber, past the sign: exponents, long numbers.
[[gnu::noinline]] bool ParseLongNumber(const char* p, const char* end, bool negative,
                                       double& value) noexcept {
  // from_chars would take "inf", "nan" and a second '-', none of which is a decimal number.
  if (!IsDigit(*p) && *p != '.') return false;
  double magnitude = 0.0;
  const auto [ptr, ec] = std::from_chars(p, end, magnitude, std::chars_format::general);
  if (ec != std::errc{} || ptr != end || !std::isfinite(magnitude)) return false;
  value = negative ? -magnitude : magnitude;
  return true;
}

// A finite decimal number with an optional sign. `is_signed` tells whether the sign was written,
// since a written sign turns a gauge into a delta.
inline bool ParseNumber(const char* p, const char* end, double& value, bool& is_signed) noexcept {
  bool negative = false;
  is_signed = false;
  if (p != end && (*p == '+' || *p == '-')) {
    negative = *p == '-';
    is_signed = true;
    ++p;
  }
  if (p == end) return false;

  if (static_cast<std::size_t>(end - p) <= kFastNumberChars) {
    std::uint64_t acc = 0;
    const char* q = p;
    for (; q != end && IsDigit(*q); ++q) acc = acc * 10 + static_cast<std::uint64_t>(*q - '0');
    auto digits = static_cast<std::size_t>(q - p);
    std::size_t fraction = 0;
    if (q != end && *q == '.') {
      const char* const first = ++q;
      for (; q != end && IsDigit(*q); ++q) acc = acc * 10 + static_cast<std::uint64_t>(*q - '0');
      fraction = static_cast<std::size_t>(q - first);
      digits += fraction;
    }
    if (q == end && digits != 0 && (fraction == 0 || digits <= kFastDecimalDigits)) {
      // An integer needs no division, whose latency the sample's next reader would wait for.
      const double magnitude =
          fraction == 0 ? static_cast<double>(acc) : static_cast<double>(acc) / kPow10[fraction];
      value = negative ? -magnitude : magnitude;
      return true;
    }
  }

  return ParseLongNumber(p, end, negative, value);
}

// Byte classes for the single pass that finds the end of the name and checks it.
enum NameClass : std::uint8_t { kPlain = 0, kStop = 1, kControl = 2, kHighBit = 4 };

constexpr std::array<std::uint8_t, 256> kNameClass = [] {
  std::array<std::uint8_t, 256> table{};
  for (std::size_t c = 0; c < 0x20; ++c) table[c] = kControl;
  table[0x7F] = kControl;
  for (std::size_t c = 0x80; c < 0x100; ++c) table[c] = kHighBit;
  table[':'] = kStop;
  table['|'] = kStop;
  return table;
}();

// Word-at-a-time scanning: the fields of a line are a few bytes long, shorter than what a call to
// memchr costs, so the scans test 8 bytes per step in a register. A scan may read past the end of
// its field up to `readable` (the end of the packet); hits past the field's end are ignored.
static_assert(std::endian::native == std::endian::little,
              "the word scans number bytes from the low end");
constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
constexpr std::uint64_t kHighBits = 0x8080808080808080ULL;

constexpr std::uint64_t Broadcast(unsigned char c) noexcept { return kOnes * c; }

// The high bit of each byte of `word` that is below `n` (n <= 128). Above the lowest hit, bits
// may be set wrongly by the borrow; the scans only use the lowest.
std::uint64_t BytesBelow(std::uint64_t word, unsigned char n) noexcept {
  return (word - Broadcast(n)) & ~word & kHighBits;
}

template <char... kStops>
std::uint64_t BytesEqual(std::uint64_t word) noexcept {
  return (BytesBelow(word ^ Broadcast(static_cast<unsigned char>(kStops)), 1) | ...);
}

// The first byte in [p, end) for which `hits` (over a word) or `is_hit` (over a byte) is true,
// or `end`.
template <typename WordHits, typename ByteHit>
const char* Scan(const char* p, const char* end, const char* readable, WordHits hits,
                 ByteHit is_hit) noexcept {
  for (; readable - p >= 8; p += 8) {
    if (const std::uint64_t h = hits(Load<std::uint64_t>(p)); h != 0) {
      const char* const hit = p + std::countr_zero(h) / 8;
      return hit < end ? hit : end;
    }
    if (end - p <= 8) return end;
  }
  while (p < end && !is_hit(*p)) ++p;
  return p < end ? p : end;
}

// Byte loop: values, types and tags are mostly shorter than a word.
template <char... kStops>
const char* ScanTo(const char* p, const char* end) noexcept {
  while (p != end && ((*p != kStops) && ...)) ++p;
  return p;
}

// The bytes of a name word that are not kPlain.
std::uint64_t NameStops(std::uint64_t word) noexcept {
  return (word & kHighBits) | BytesBelow(word, 0x20) | BytesEqual<':', '|', '\x7f'>(word);
}

bool ParseType(const char* begin, const char* end, StatsdType& type) noexcept {
  const auto size = end - begin;
  if (size == 1) {
    switch (*begin) {
      case 'c':
        type = StatsdType::kCounter;
        return true;
      case 'g':
        type = StatsdType::kGauge;
        return true;
      case 'h':
        type = StatsdType::kHistogram;
        return true;
      case 'd':
        type = StatsdType::kDistribution;
        return true;
      case 's':
        type = StatsdType::kSet;
        return true;
      default:
        return false;
    }
  }
  if (size == 2 && begin[0] == 'm' && begin[1] == 's') {
    type = StatsdType::kTimer;
    return true;
  }
  return false;
}

// Checks the "#k:v,k2" section that starts at `p` and may be read up to `readable` (every key
// non-empty, at most kStatsdMaxTags tags on the line with the `count` already found), and sets
// `section_end` to the '|' or end of line after it. SplitStatsdTags splits what this accepted.
bool CheckTags(const char* p, const char* end, const char* readable, std::size_t& count,
               const char*& section_end) noexcept {
  for (;;) {
    if (p == end || *p == ':' || *p == ',' || *p == '|' || count == kStatsdMaxTags) return false;
    ++count;
    // Tags are often longer than a word ("host:web-12"): scanned a word at a time.
    p = Scan(p + 1, end, readable, BytesEqual<',', '|'>,
             [](char c) { return c == ',' || c == '|'; });
    if (p == end || *p == '|') break;
    ++p;  // past the ','
  }
  section_end = p;
  return true;
}

class LineParser {
 public:
  // `readable`: the end of the packet, at or after the end of the line.
  LineParser(std::string_view line, const char* readable, StatsdVisitor& visitor) noexcept
      : line_(line), readable_(readable), visitor_(visitor) {}

  // Returns the number of samples delivered; a rejected line is reported and delivers none.
  std::size_t Parse() noexcept {
    if (line_[0] == '_' && (line_.starts_with("_e{") || line_.starts_with("_sc|"))) {
      return Fail(StatsdError::kUnsupported);
    }
    const char* const begin = line_.data();
    const char* const end = begin + line_.size();

    // The name ends at the first ':' before any '|', so a ':' inside a later section (a tag such
    // as "#env:prod") never counts as the name separator.
    const char* colon = begin;
    std::uint8_t name_flags = 0;
    for (;;) {
      colon = Scan(colon, end, readable_, NameStops,
                   [](char c) { return kNameClass[static_cast<unsigned char>(c)] != kPlain; });
      if (colon == end) break;
      const std::uint8_t cls = kNameClass[static_cast<unsigned char>(*colon)];
      if (cls == kStop) break;
      name_flags |= cls;
      ++colon;
    }
    if (colon == end || *colon == '|') return Fail(StatsdError::kMissingValue);

    StatsdSample sample;
    sample.name = View(begin, colon);
    if (sample.name.empty() || sample.name.size() > kStatsdMaxNameBytes ||
        (name_flags & kControl) != 0 ||
        ((name_flags & kHighBit) != 0 && !wire::IsValidUtf8(sample.name))) {
      return Fail(StatsdError::kInvalidName);
    }

    const char* const values = colon + 1;
    const char* const pipe = ScanTo<'|'>(values, end);
    const char* const type_end = pipe == end ? end : ScanTo<'|'>(pipe + 1, end);
    const bool type_ok = pipe != end && ParseType(pipe + 1, type_end, sample.type);
    if (values == pipe) {
      const bool is_set = type_ok && sample.type == StatsdType::kSet;
      return Fail(is_set ? StatsdError::kBadValue : StatsdError::kMissingValue);
    }
    if (!type_ok) return Fail(StatsdError::kBadType);

    std::size_t tag_count = 0;
    const char* tags_begin = nullptr;
    const char* tags_end = nullptr;
    for (const char* section = type_end; section != end;) {
      const char* const body = section + 1;
      if (body == end || *body == '|') return Fail(StatsdError::kBadType);
      const char* next = end;
      switch (*body) {
        case '@': {
          next = ScanTo<'|'>(body + 1, end);
          bool is_signed = false;
          if (!ParseNumber(body + 1, next, sample.sample_rate, is_signed) ||
              !(sample.sample_rate > 0.0 && sample.sample_rate <= 1.0)) {
            return Fail(StatsdError::kBadSampleRate);
          }
          break;
        }
        case '#':
          if (!CheckTags(body + 1, end, readable_, tag_count, next)) {
            return Fail(StatsdError::kBadTags);
          }
          if (tags_begin == nullptr) tags_begin = body + 1;
          tags_end = next;
          break;
        case 'c':
          // "c:<container id>" (DogStatsD origin detection): accepted, not used.
          if (end - body < 2 || body[1] != ':') return Fail(StatsdError::kBadType);
          next = Find(body, end, '|');
          break;
        case 'T':  // DogStatsD client timestamp: accepted, not used.
          next = ScanTo<'|'>(body, end);
          break;
        default:
          return Fail(StatsdError::kBadType);
      }
      section = next;
    }
    if (tags_begin != nullptr) sample.tag_text = View(tags_begin, tags_end);

    if (sample.type == StatsdType::kSet) {
      sample.set_member = View(values, pipe);
      visitor_.OnSample(sample);
      return 1;
    }

    // Validate every value before delivering any, so a line is either taken whole or rejected.
    std::size_t count = 0;
    for (const char* v = values;;) {
      const char* const v_end = ScanTo<':'>(v, pipe);
      if (v == v_end) return Fail(StatsdError::kMissingValue);
      bool is_signed = false;
      if (!ParseNumber(v, v_end, sample.value, is_signed)) return Fail(StatsdError::kBadValue);
      sample.gauge_delta = is_signed && sample.type == StatsdType::kGauge;
      ++count;
      if (v_end == pipe) break;
      v = v_end + 1;
    }
    if (count == 1) {
      visitor_.OnSample(sample);
      return 1;
    }
    // Multi-value lines are rare: parsing the values again beats keeping a buffer for them.
    for (const char* v = values;;) {
      const char* const v_end = ScanTo<':'>(v, pipe);
      bool is_signed = false;
      ParseNumber(v, v_end, sample.value, is_signed);
      sample.gauge_delta = is_signed && sample.type == StatsdType::kGauge;
      visitor_.OnSample(sample);
      if (v_end == pipe) break;
      v = v_end + 1;
    }
    return count;
  }

 private:
  std::size_t Fail(StatsdError error) noexcept {
    visitor_.OnError(error, line_);
    return 0;
  }

  std::string_view line_;
  const char* readable_;
  StatsdVisitor& visitor_;
};

}  // namespace

std::string_view StatsdErrorName(StatsdError error) noexcept {
  const auto index = static_cast<std::size_t>(error);
  return index < kErrorNames.size() ? kErrorNames[index] : "unknown";
}

std::span<const StatsdTag> SplitStatsdTags(std::string_view tag_text,
                                           std::span<StatsdTag, kStatsdMaxTags> out) noexcept {
  const char* p = tag_text.data();
  const char* const end = p + tag_text.size();
  std::size_t count = 0;
  while (p != end && count != out.size()) {
    StatsdTag& tag = out[count++];
    const char* const key_end = ScanTo<':', ',', '|'>(p, end);
    tag.key = View(p, key_end);
    p = key_end;
    if (p != end && *p == ':') {
      // Only the first ':' splits, so values such as URLs keep their own.
      p = ScanTo<',', '|'>(p + 1, end);
      tag.value = View(key_end + 1, p);
    } else {
      tag.value = {};
    }
    if (p != end && *p == ',') {
      ++p;
      continue;
    }
    // A '|' ends the section: skip any other sections up to the next "|#".
    while (p != end && p + 1 != end && p[1] != '#') p = ScanTo<'|'>(p + 1, end);
    if (p != end) p = p + 1 == end ? end : p + 2;
  }
  return out.first(count);
}

std::size_t StatsdLineParser::Parse(std::string_view packet, StatsdVisitor& visitor) noexcept {
  const char* p = packet.data();
  const char* const end = p + packet.size();
  std::size_t samples = 0;
  while (p != end) {
    const char* const newline = FindNewline(p, end);
    const char* line_end = newline;
    if (line_end != p && line_end[-1] == '\r') --line_end;
    if (line_end != p) {
      const std::string_view line = View(p, line_end);
      if (line.size() > max_line_bytes_) {
        visitor.OnError(StatsdError::kLineTooLong, line);
      } else {
        samples += LineParser(line, end, visitor).Parse();
      }
    }
    p = newline == end ? end : newline + 1;
  }
  return samples;
}

}  // namespace telemetryd::ingest
