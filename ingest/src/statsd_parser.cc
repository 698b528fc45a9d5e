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

// Inlined where it is used: the switch costs less than a call.
[[gnu::always_inline]] inline bool ParseType(const char* begin, const char* end,
                                             StatsdType& type) noexcept {
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

#if defined(__SSE2__)
// The fast path for the common line: a line of 24 to 63 bytes with one value, a name of plain
// bytes, a known type, and optional "@rate" sections and one "#tags" section. Its bytes are
// classified 16 at a time into bit masks, one bit per byte, so that finding the name's end, the
// sections and the tags is bit arithmetic rather than a scan per field. It takes only lines that
// LineParser would take, and delivers what LineParser would; anything else (another shape, or
// an error) it leaves to LineParser, which then reports it as before. Other lines are left to
// LineParser too: its scans cost less than the masks over fewer bytes, and than the masks of
// more than one word (bench/README.md).
class FastLine {
 public:
  using Mask = std::uint64_t;  // one bit per byte of the line, byte 0 lowest
  static constexpr std::size_t kBits = 64;
  static constexpr std::size_t kMinBytes = 24;
  static constexpr std::size_t kMaxBytes = kBits - 1;

  // Parses the line at `p` of `n` bytes (kMinBytes to kMaxBytes, without its end of line); false
  // when the line is LineParser's. `end`: the end of the packet. Out of line: inlined in the
  // packet's loop, it made LineParser's own lines cost more (bench/README.md).
  [[gnu::noinline]] static bool Parse(const char* p, std::size_t n, const char* end,
                                      StatsdVisitor& visitor) noexcept {
    if (p[0] == '_') return false;  // maybe a DogStatsD event or service check
    const std::size_t blocks = (n + 15) / 16;
    Masks m;
    if (static_cast<std::size_t>(end - p) >= 16 * blocks) {
      m = Classify(p, blocks);
    } else {  // the packet's last bytes: classified in a copy
      alignas(16) char copy[kBits] = {};
      std::memcpy(copy, p, n);
      m = Classify(copy, blocks);
    }
    const Mask line = Below(n);
    const Mask colons = m.colon & line;
    const Mask pipes = m.pipe & line;

    // The name: up to the first ':', which must come before any '|', of plain bytes only.
    const Mask stops = colons | pipes;
    if (stops == 0) return false;
    const std::size_t colon = Lowest(stops);
    if ((pipes >> colon & 1U) != 0 || colon == 0 || (m.bad & Below(colon)) != 0) return false;

    // The value up to the first '|' (a second value after a ':' fails ParseNumber; a set's
    // member keeps it, as in LineParser), the type up to the next '|'.
    const Mask after_name = pipes & ~Below(colon + 1);
    if (after_name == 0) return false;
    const std::size_t pipe = Lowest(after_name);
    if (pipe == colon + 1) return false;
    StatsdSample sample;
    sample.name = std::string_view(p, colon);
    std::size_t section = NextPipe(pipes, pipe, n);
    if (!ParseType(p + pipe + 1, p + section, sample.type)) return false;

    bool tagged = false;
    while (section != n) {
      const std::size_t body = section + 1;
      const std::size_t next = NextPipe(pipes, section, n);
      if (body == next) return false;  // an empty section
      if (p[body] == '@') {
        bool is_signed = false;
        if (!ParseNumber(p + body + 1, p + next, sample.sample_rate, is_signed) ||
            !(sample.sample_rate > 0.0 && sample.sample_rate <= 1.0)) {
          return false;
        }
      } else if (p[body] == '#' && !tagged) {
        // Each tag starts at the section's start or after a ',', and its key is not empty: the
        // tag does not start at the section's end, nor with ':' or ','. Tags of a byte and a ','
        // each: a line this short holds no more than LineParser takes.
        static_assert((kMaxBytes + 1) / 2 <= kStatsdMaxTags);
        tagged = true;
        const Mask inside = Below(next) & ~Below(body + 1);
        const Mask starts = Bit(body + 1) | (m.comma & inside) << 1;
        if ((starts & ~Below(next)) != 0 || (starts & (m.colon | m.comma)) != 0) return false;
        sample.tag_text = std::string_view(p + body + 1, next - body - 1);
      } else {
        return false;
      }
      section = next;
    }

    if (sample.type == StatsdType::kSet) {
      sample.set_member = std::string_view(p + colon + 1, pipe - colon - 1);
    } else {
      bool is_signed = false;
      if (!ParseNumber(p + colon + 1, p + pipe, sample.value, is_signed)) return false;
      sample.gauge_delta = is_signed && sample.type == StatsdType::kGauge;
    }
    visitor.OnSample(sample);
    return true;
  }

 private:
  // Where the ':', '|' and ',' are, and the bytes a name may not hold unchecked (controls, DEL,
  // and the bytes of UTF-8 sequences, which LineParser validates). Bits past the line's end mean
  // nothing.
  struct Masks {
    Mask colon = 0;
    Mask pipe = 0;
    Mask comma = 0;
    Mask bad = 0;
  };

  // Classifies `blocks` blocks of 16 bytes at `p`.
  static Masks Classify(const char* p, std::size_t blocks) noexcept {
    Masks m;
    for (std::size_t b = 0; b < blocks; ++b) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * b));
      auto bits = [&](__m128i hits) {
        return static_cast<Mask>(static_cast<unsigned>(_mm_movemask_epi8(hits))) << (16 * b);
      };
      m.colon |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(':')));
      m.pipe |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8('|')));
      m.comma |= bits(_mm_cmpeq_epi8(v, _mm_set1_epi8(',')));
      // Signed bytes below 0x20 are the controls and every byte from 0x80 up.
      m.bad |= bits(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                 _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7F))));
    }
    return m;
  }

  static std::size_t Lowest(Mask m) noexcept {
    return static_cast<std::size_t>(std::countr_zero(m));
  }
  static Mask Bit(std::size_t i) noexcept { return i < kBits ? Mask{1} << i : Mask{0}; }
  // The bits of the bytes before `i`.
  static Mask Below(std::size_t i) noexcept { return i < kBits ? Bit(i) - 1 : ~Mask{0}; }
  // The first '|' after `from`, or `n` (the end of the line).
  static std::size_t NextPipe(Mask pipes, std::size_t from, std::size_t n) noexcept {
    const Mask later = pipes & ~Below(from + 1);
    return later == 0 ? n : Lowest(later);
  }
};

// Whether the fast path took the line (see FastLine).
inline bool FastParse(std::string_view line, const char* end, StatsdVisitor& visitor) noexcept {
  if (line.size() < FastLine::kMinBytes || line.size() > FastLine::kMaxBytes) return false;
  return FastLine::Parse(line.data(), line.size(), end, visitor);
}
#endif

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
#if defined(__SSE2__)
      } else if (fast_ && FastParse(line, end, visitor)) {
        ++samples;
#endif
      } else {
        samples += LineParser(line, end, visitor).Parse();
      }
    }
    p = newline == end ? end : newline + 1;
  }
  return samples;
}

}  // namespace telemetryd::ingest
