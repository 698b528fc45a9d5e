#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "statsd_call_log.h"
#include "telemetryd/ingest/statsd.h"

using namespace telemetryd::ingest;

namespace {

// Owned copy of a sample: the views die with the visitor call.
struct Sample {
  std::string name;
  StatsdType type = StatsdType::kCounter;
  double value = 0.0;
  std::string set_member;
  bool gauge_delta = false;
  double sample_rate = 1.0;
  std::vector<std::pair<std::string, std::string>> tags;
  std::string tag_text;
};

struct Error {
  StatsdError reason;
  std::string line;
};

class Recorder final : public StatsdVisitor {
 public:
  void OnSample(const StatsdSample& sample) noexcept override {
    Sample s;
    s.name = std::string(sample.name);
    s.type = sample.type;
    s.value = sample.value;
    s.set_member = std::string(sample.set_member);
    s.gauge_delta = sample.gauge_delta;
    s.sample_rate = sample.sample_rate;
    std::array<StatsdTag, kStatsdMaxTags> scratch;
    for (const StatsdTag& tag : SplitStatsdTags(sample.tag_text, scratch)) {
      s.tags.emplace_back(std::string(tag.key), std::string(tag.value));
    }
    s.tag_text = std::string(sample.tag_text);
    samples.push_back(std::move(s));
  }
  void OnError(StatsdError error, std::string_view line) noexcept override {
    errors.push_back(Error{error, std::string(line)});
  }

  std::vector<Sample> samples;
  std::vector<Error> errors;
  std::size_t returned = 0;
};

Recorder Parse(std::string_view packet) {
  StatsdLineParser parser;
  Recorder rec;
  rec.returned = parser.Parse(packet, rec);
  return rec;
}

// Parses one line that must give exactly one sample.
Sample One(std::string_view line) {
  Recorder rec = Parse(line);
  REQUIRE(rec.errors.empty());
  REQUIRE(rec.samples.size() == 1);
  CHECK(rec.returned == 1);
  return rec.samples[0];
}

// Parses one line that must be rejected with exactly one error.
StatsdError Reject(std::string_view line) {
  Recorder rec = Parse(line);
  REQUIRE(rec.samples.empty());
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.returned == 0);
  CHECK(rec.errors[0].line == line);
  return rec.errors[0].reason;
}

// A bad line between two good ones: the reason, and the neighbours still produce their samples.
void CheckRejectedAmongGood(const std::string& bad, StatsdError reason) {
  const std::string packet = "before:1|c\n" + bad + "\nafter:2|g\n";
  Recorder rec = Parse(packet);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].reason == reason);
  CHECK(rec.errors[0].line == bad);
  REQUIRE(rec.samples.size() == 2);
  CHECK(rec.returned == 2);
  CHECK(rec.samples[0].name == "before");
  CHECK(rec.samples[0].value == 1.0);
  CHECK(rec.samples[1].name == "after");
  CHECK(rec.samples[1].value == 2.0);
}

using Tags = std::vector<std::pair<std::string, std::string>>;

// A fixed xorshift sequence: reproducible inputs.
struct Xorshift {
  std::uint64_t state;
  std::uint64_t operator()() noexcept {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  }
};

}  // namespace

TEST_CASE("error names follow the enum") {
  CHECK(StatsdErrorName(StatsdError::kMissingValue) == "missing_value");
  CHECK(StatsdErrorName(StatsdError::kBadValue) == "bad_value");
  CHECK(StatsdErrorName(StatsdError::kBadType) == "bad_type");
  CHECK(StatsdErrorName(StatsdError::kBadSampleRate) == "bad_sample_rate");
  CHECK(StatsdErrorName(StatsdError::kBadTags) == "bad_tags");
  CHECK(StatsdErrorName(StatsdError::kInvalidName) == "invalid_name");
  CHECK(StatsdErrorName(StatsdError::kLineTooLong) == "line_too_long");
  CHECK(StatsdErrorName(StatsdError::kUnsupported) == "unsupported");
  CHECK(StatsdErrorName(StatsdError::kCount) == "unknown");
}

TEST_CASE("each type") {
  Sample c = One("hits:3|c");
  CHECK(c.name == "hits");
  CHECK(c.type == StatsdType::kCounter);
  CHECK(c.value == 3.0);
  CHECK(c.sample_rate == 1.0);
  CHECK_FALSE(c.gauge_delta);
  CHECK(c.tags.empty());
  CHECK(c.set_member.empty());

  Sample g = One("temp:21.5|g");
  CHECK(g.type == StatsdType::kGauge);
  CHECK(g.value == 21.5);
  CHECK_FALSE(g.gauge_delta);

  Sample ms = One("db.query:12.25|ms");
  CHECK(ms.name == "db.query");
  CHECK(ms.type == StatsdType::kTimer);
  CHECK(ms.value == 12.25);

  Sample h = One("size:512|h");
  CHECK(h.type == StatsdType::kHistogram);
  CHECK(h.value == 512.0);

  Sample d = One("latency:0.75|d");
  CHECK(d.type == StatsdType::kDistribution);
  CHECK(d.value == 0.75);

  Sample s = One("users:alice|s");
  CHECK(s.type == StatsdType::kSet);
  CHECK(s.set_member == "alice");
  CHECK(s.value == 0.0);
}

TEST_CASE("numbers") {
  CHECK(One("a:0|c").value == 0.0);
  CHECK(One("a:-7|c").value == -7.0);
  CHECK(One("a:+7|c").value == 7.0);
  CHECK(One("a:123456789012345678|c").value == 123456789012345678.0);
  CHECK(One("a:12345678901234567890123|c").value == 12345678901234567890123.0);
  CHECK(One("a:1.5|c").value == 1.5);
  CHECK(One("a:.5|c").value == 0.5);
  CHECK(One("a:5.|c").value == 5.0);
  CHECK(One("a:1e3|c").value == 1000.0);
  CHECK(One("a:2.5E-1|c").value == 0.25);
  CHECK(One("a:-1.25e+2|ms").value == -125.0);
  CHECK(One("a:0.1|h").value == 0.1);
  CHECK(One("a:1.7976931348623157e308|g").value == 1.7976931348623157e308);

  for (const char* bad : {"a:nan|c",  "a:NaN|c",      "a:inf|c",
                          "a:-inf|g", "a:infinity|c", "a:1e400|c",
                          "a:0x10|c", "a:1.2.3|c",    "a:--1|c",
                          "a:+-1|c",  "a:-+1|c",      "a: 1|c",
                          "a:1 |c",   "a:1e|c",       "a:.|c",
                          "a:-|c",    "a:+|g",        "a:1,5|c",
                          "a:one|c",  "a:1_000|c",    "a:12345678901234567890x|c"}) {
    CAPTURE(bad);
    CHECK(Reject(bad) == StatsdError::kBadValue);
  }
}

TEST_CASE("decimal values are correctly rounded") {
  // Compares the parser with std::from_chars over decimals of every length and point position,
  // which covers both the parser's shortcut for short decimals and its fallback.
  Xorshift next{0x2545F4914F6CDD1DULL};
  StatsdLineParser parser;
  for (int i = 0; i < 20000; ++i) {
    const std::size_t digits = 1 + next() % 22;
    std::string text;
    for (std::size_t d = 0; d < digits; ++d) text += static_cast<char>('0' + next() % 10);
    const std::size_t point = next() % (digits + 2);
    if (point <= digits) text.insert(point, ".");
    double expected = 0.0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), expected);
    REQUIRE(ec == std::errc{});
    REQUIRE(ptr == text.data() + text.size());

    Recorder rec;
    parser.Parse("a:" + text + "|ms", rec);
    CAPTURE(text);
    REQUIRE(rec.samples.size() == 1);
    CHECK(rec.samples[0].value == expected);
  }
}

TEST_CASE("sample rates") {
  CHECK(One("a:1|c|@0.5").sample_rate == 0.5);
  CHECK(One("a:1|c|@1").sample_rate == 1.0);
  CHECK(One("a:1|c|@1.0").sample_rate == 1.0);
  CHECK(One("a:1|c|@0.001").sample_rate == 0.001);
  CHECK(One("a:1|c|@1e-2").sample_rate == 0.01);
  CHECK(One("a:1|ms|@0.25").sample_rate == 0.25);

  Sample tagged = One("a:1|c|@0.1|#env:prod");
  CHECK(tagged.sample_rate == 0.1);
  CHECK(tagged.tags == Tags{{"env", "prod"}});
  Sample reversed = One("a:1|c|#env:prod|@0.1");
  CHECK(reversed.sample_rate == 0.1);
  CHECK(reversed.tags == Tags{{"env", "prod"}});

  for (const char* bad :
       {"a:1|c|@0", "a:1|c|@0.0", "a:1|c|@-0.5", "a:1|c|@1.5", "a:1|c|@2", "a:1|c|@", "a:1|c|@abc",
        "a:1|c|@nan", "a:1|c|@inf", "a:1|c|@0.5x", "a:1|c|@1e400"}) {
    CAPTURE(bad);
    CHECK(Reject(bad) == StatsdError::kBadSampleRate);
  }
}

TEST_CASE("gauge deltas need an explicit sign") {
  Sample plain = One("g:5|g");
  CHECK(plain.value == 5.0);
  CHECK_FALSE(plain.gauge_delta);

  Sample up = One("g:+5|g");
  CHECK(up.value == 5.0);
  CHECK(up.gauge_delta);

  Sample down = One("g:-5|g");
  CHECK(down.value == -5.0);
  CHECK(down.gauge_delta);

  Sample fractional = One("g:-0.5|g");
  CHECK(fractional.value == -0.5);
  CHECK(fractional.gauge_delta);

  // A sign only means "delta" for gauges.
  Sample counter = One("c:-5|c");
  CHECK(counter.value == -5.0);
  CHECK_FALSE(counter.gauge_delta);
  Sample timer = One("t:+5|ms");
  CHECK(timer.value == 5.0);
  CHECK_FALSE(timer.gauge_delta);
}

TEST_CASE("the tag text as sent stands for the tags") {
  CHECK(One("a:1|c|#env:prod,canary").tag_text == "env:prod,canary");
  CHECK(One("a:1|c|@0.5|#env:prod").tag_text == "env:prod");
  CHECK(One("a:1|c").tag_text.empty());
  CHECK(One("a:1|c|@0.5").tag_text.empty());
  // Several sections: from the first one's start to the last one's end.
  Sample twice = One("a:1|c|#a:1|@0.5|#b:2|T1700000000");
  CHECK(twice.tag_text == "a:1|@0.5|#b:2");
  CHECK(twice.tags == Tags{{"a", "1"}, {"b", "2"}});
  Sample between = One("a:1|c|#a:1,x|c:abc#d|T1|#b:2,y:|#z");
  CHECK(between.tag_text == "a:1,x|c:abc#d|T1|#b:2,y:|#z");
  CHECK(between.tags == Tags{{"a", "1"}, {"x", ""}, {"b", "2"}, {"y", ""}, {"z", ""}});
  // Every value of a multi-value line carries it; the next line does not.
  Recorder rec = Parse("h:1:2|h|#k:v\nb:2|c\n");
  REQUIRE(rec.samples.size() == 3);
  CHECK(rec.samples[0].tag_text == "k:v");
  CHECK(rec.samples[1].tag_text == "k:v");
  CHECK(rec.samples[2].tag_text.empty());
  // A bad section after a good line with the same name and tags is still rejected.
  Recorder bad = Parse("a:1|c|#env:prod\na:1|c|#env:prod,\na:1|c|#env:prod,:x\n");
  CHECK(bad.samples.size() == 1);
  REQUIRE(bad.errors.size() == 2);
  CHECK(bad.errors[0].reason == StatsdError::kBadTags);
  CHECK(bad.errors[1].reason == StatsdError::kBadTags);
}

TEST_CASE("names are checked in every byte, wherever it falls in the 8-byte scan steps") {
  // A bad byte at each position of a 20-byte name, with the line at the packet's end and with
  // more lines after it (the scan may then read past the line).
  for (std::size_t at = 0; at < 20; ++at) {
    CAPTURE(at);
    for (const char bad : {'\x01', '\x1f', '\x7f', '|'}) {
      std::string name(20, 'n');
      name[at] = bad;
      const std::string line = name + ":1|c";
      for (const std::string& packet : {line, line + "\nok:1|c\n"}) {
        Recorder rec = Parse(packet);
        REQUIRE(rec.errors.size() == 1);
        CHECK(rec.errors[0].reason ==
              (bad == '|' ? StatsdError::kMissingValue : StatsdError::kInvalidName));
      }
    }
    // The first ':' ends the name, however long it is.
    if (at != 0) CHECK(One(std::string(at, 'n') + ":1|c|#k:v").name == std::string(at, 'n'));
    // Valid UTF-8 passes, a lone continuation byte does not.
    std::string utf8(20, 'n');
    utf8.replace(std::min<std::size_t>(at, 18), 2, "\xc3\xa9");
    CHECK(One(utf8 + ":1|c").name == utf8);
    std::string broken(20, 'n');
    broken[at] = '\xa9';
    CHECK(Reject(broken + ":1|c") == StatsdError::kInvalidName);
  }
  // A name that ends within the last word of the packet, and one longer than any word.
  CHECK(One("abc:1|c").name == "abc");
  CHECK(One(std::string(255, 'x') + ":1|c").name.size() == 255);
  CHECK(Reject(std::string(256, 'x') + ":1|c") == StatsdError::kInvalidName);
}

TEST_CASE("DogStatsD tags") {
  Sample s = One("app.requests.count:1|c|#env:prod,host:web1");
  CHECK(s.name == "app.requests.count");
  CHECK(s.tags == Tags{{"env", "prod"}, {"host", "web1"}});

  // Bare tags have an empty value; only the first ':' splits, so values keep theirs.
  Sample mixed = One("a:1|c|#canary,url:http://example.com:8080/x,k:,ver:1.2");
  CHECK(mixed.tags ==
        Tags{{"canary", ""}, {"url", "http://example.com:8080/x"}, {"k", ""}, {"ver", "1.2"}});

  Sample single = One("a:1|g|#solo");
  CHECK(single.tags == Tags{{"solo", ""}});

  // Two tag sections add up.
  Sample twice = One("a:1|c|#a:1|#b:2");
  CHECK(twice.tags == Tags{{"a", "1"}, {"b", "2"}});

  // Tags do not leak from one line to the next.
  Recorder rec = Parse("a:1|c|#x:1,y:2\nb:2|c\n");
  REQUIRE(rec.samples.size() == 2);
  CHECK(rec.samples[0].tags == Tags{{"x", "1"}, {"y", "2"}});
  CHECK(rec.samples[1].tags.empty());

  // A ':' in a tag is not the name separator.
  CHECK(Reject("a|c|#k:v") == StatsdError::kMissingValue);
}

TEST_CASE("tags are checked wherever a separator falls in the 8-byte scan steps") {
  // Two tags of every length up to 20 and 11 bytes, with the line at the packet's end, with more
  // lines after it whose ',' and '|' the scan may read past the line, and with a section after
  // the tags.
  for (std::size_t first = 1; first <= 20; ++first) {
    for (std::size_t second = 1; second <= 11; ++second) {
      CAPTURE(first);
      CAPTURE(second);
      const std::string a(first, 'a');
      const std::string b = "k:" + std::string(second, 'v');
      const std::string line = "m:1|c|#" + a + "," + b;
      for (const std::string& packet : {line, line + "\nn,x:1|c|#p,q\n", line + "|@0.5"}) {
        Recorder rec = Parse(packet);
        REQUIRE(rec.errors.empty());
        REQUIRE(!rec.samples.empty());
        CHECK(rec.samples[0].tag_text == a + "," + b);
        CHECK(rec.samples[0].tags == Tags{{a, ""}, {"k", std::string(second, 'v')}});
      }
      CHECK(Reject("m:1|c|#" + a + ",," + b) == StatsdError::kBadTags);
      CHECK(Reject("m:1|c|#" + a + "," + b + ",") == StatsdError::kBadTags);
      CHECK(Reject("m:1|c|#" + a + ",:" + b) == StatsdError::kBadTags);
    }
  }
}

TEST_CASE("multi-value lines give one sample per value") {
  Recorder rec = Parse("lat:1:2.5:-3|h|@0.5|#env:prod");
  REQUIRE(rec.errors.empty());
  REQUIRE(rec.samples.size() == 3);
  CHECK(rec.returned == 3);
  const double expected[] = {1.0, 2.5, -3.0};
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(rec.samples[i].name == "lat");
    CHECK(rec.samples[i].type == StatsdType::kHistogram);
    CHECK(rec.samples[i].value == expected[i]);
    CHECK(rec.samples[i].sample_rate == 0.5);
    CHECK(rec.samples[i].tags == Tags{{"env", "prod"}});
  }

  Recorder gauges = Parse("g:+1:2:-3|g");
  REQUIRE(gauges.samples.size() == 3);
  CHECK(gauges.samples[0].gauge_delta);
  CHECK(gauges.samples[0].value == 1.0);
  CHECK_FALSE(gauges.samples[1].gauge_delta);
  CHECK(gauges.samples[1].value == 2.0);
  CHECK(gauges.samples[2].gauge_delta);
  CHECK(gauges.samples[2].value == -3.0);

  // One bad value rejects the whole line: no sample of it is delivered.
  CHECK(Reject("lat:1:2:x|h") == StatsdError::kBadValue);
  CHECK(Reject("lat:x:1|d") == StatsdError::kBadValue);
  CHECK(Reject("lat:1::2|ms") == StatsdError::kMissingValue);
  CHECK(Reject("lat:1:2:|ms") == StatsdError::kMissingValue);

  // A set has a single member, ':' included.
  Sample set = One("ids:a:b:c|s");
  CHECK(set.set_member == "a:b:c");
}

TEST_CASE("a line ends at its newline wherever that falls in the 16-byte search steps") {
  // Lines of 5 to 44 bytes one after the other, so that the newlines fall at every place of the
  // search's steps, with and without a last newline, "\n" and "\r\n".
  for (const std::string_view eol : {"\n", "\r\n"}) {
    for (const bool last_newline : {true, false}) {
      std::string packet;
      std::vector<std::string> names;
      for (std::size_t length = 5; length <= 44; ++length) {
        names.push_back(std::string(length - 4, static_cast<char>('a' + length % 26)));
        if (!packet.empty()) packet += eol;
        packet += names.back() + ":1|c";
      }
      if (last_newline) packet += eol;
      Recorder rec = Parse(packet);
      CHECK(rec.errors.empty());
      REQUIRE(rec.samples.size() == names.size());
      for (std::size_t i = 0; i < names.size(); ++i) CHECK(rec.samples[i].name == names[i]);
    }
  }
}

TEST_CASE("many lines per packet") {
  Recorder rec = Parse("a:1|c\r\nb:2|g\n\n\r\nc:3|ms\r\n\nd:4|h");
  CHECK(rec.errors.empty());
  REQUIRE(rec.samples.size() == 4);
  CHECK(rec.returned == 4);
  CHECK(rec.samples[0].name == "a");
  CHECK(rec.samples[0].type == StatsdType::kCounter);
  CHECK(rec.samples[1].name == "b");
  CHECK(rec.samples[1].type == StatsdType::kGauge);
  CHECK(rec.samples[2].name == "c");
  CHECK(rec.samples[2].type == StatsdType::kTimer);
  CHECK(rec.samples[3].name == "d");
  CHECK(rec.samples[3].type == StatsdType::kHistogram);
  CHECK(rec.samples[3].value == 4.0);

  // Only one '\r' is stripped.
  Recorder cr = Parse("a:1|c\r\r\n");
  REQUIRE(cr.errors.size() == 1);
  CHECK(cr.errors[0].reason == StatsdError::kBadType);
  CHECK(cr.errors[0].line == "a:1|c\r");

  // Empty packets and packets of blank lines are fine.
  CHECK(Parse("").returned == 0);
  CHECK(Parse({}).errors.empty());
  Recorder blank = Parse("\n\r\n\n");
  CHECK(blank.samples.empty());
  CHECK(blank.errors.empty());

  // The line reported for an error has neither '\r' nor '\n'.
  Recorder crlf = Parse("ok:1|c\r\nbad:1|x\r\n");
  REQUIRE(crlf.errors.size() == 1);
  CHECK(crlf.errors[0].line == "bad:1|x");
  CHECK(crlf.samples.size() == 1);

  // A long datagram of the typical shape.
  std::string packet;
  for (int i = 0; i < 25; ++i) packet += "app.requests.count:1|c|#env:prod,host:web1\n";
  Recorder many = Parse(packet);
  CHECK(many.returned == 25);
  CHECK(many.samples.size() == 25);
  CHECK(many.errors.empty());
}

TEST_CASE("missing_value") {
  CHECK(Reject("novalue") == StatsdError::kMissingValue);
  CHECK(Reject("novalue|c") == StatsdError::kMissingValue);
  CHECK(Reject("empty:|c") == StatsdError::kMissingValue);
  CHECK(Reject("empty:") == StatsdError::kMissingValue);
  CHECK(Reject("empty:|zz") == StatsdError::kMissingValue);
  CheckRejectedAmongGood("empty:|c", StatsdError::kMissingValue);
}

TEST_CASE("bad_value") {
  CHECK(Reject("a:abc|c") == StatsdError::kBadValue);
  CHECK(Reject("a:nan|g") == StatsdError::kBadValue);
  // An empty set member is a bad member rather than a missing number.
  CHECK(Reject("a:|s") == StatsdError::kBadValue);
  CheckRejectedAmongGood("a:1x|c", StatsdError::kBadValue);
}

TEST_CASE("bad_type") {
  CHECK(Reject("a:1") == StatsdError::kBadType);
  CHECK(Reject("a:1|") == StatsdError::kBadType);
  CHECK(Reject("a:1|x") == StatsdError::kBadType);
  CHECK(Reject("a:1|C") == StatsdError::kBadType);
  CHECK(Reject("a:1|cc") == StatsdError::kBadType);
  CHECK(Reject("a:1|m") == StatsdError::kBadType);
  CHECK(Reject("a:1|msx") == StatsdError::kBadType);
  CHECK(Reject("a:1||c") == StatsdError::kBadType);
  // Unknown or empty sections after the type.
  CHECK(Reject("a:1|c|") == StatsdError::kBadType);
  CHECK(Reject("a:1|c||#a") == StatsdError::kBadType);
  CHECK(Reject("a:1|c|x") == StatsdError::kBadType);
  CHECK(Reject("a:1|c|c") == StatsdError::kBadType);
  CHECK(Reject("a:1|c|cx") == StatsdError::kBadType);
  CheckRejectedAmongGood("a:1|q", StatsdError::kBadType);
}

TEST_CASE("bad_sample_rate") {
  CHECK(Reject("a:1|c|@0") == StatsdError::kBadSampleRate);
  CheckRejectedAmongGood("a:1|c|@1.01", StatsdError::kBadSampleRate);
}

TEST_CASE("bad_tags") {
  CHECK(Reject("a:1|c|#") == StatsdError::kBadTags);
  CHECK(Reject("a:1|c|#,") == StatsdError::kBadTags);
  CHECK(Reject("a:1|c|#a,,b") == StatsdError::kBadTags);
  CHECK(Reject("a:1|c|#a,") == StatsdError::kBadTags);
  CHECK(Reject("a:1|c|#:v") == StatsdError::kBadTags);
  CHECK(Reject("a:1|c|#a:1,:v") == StatsdError::kBadTags);
  CheckRejectedAmongGood("a:1|c|#env:prod,", StatsdError::kBadTags);
}

TEST_CASE("tag overflow") {
  std::string tags;
  for (std::size_t i = 0; i < kStatsdMaxTags; ++i) {
    if (i != 0) tags += ',';
    tags += "k" + std::to_string(i) + ":v" + std::to_string(i);
  }
  Sample full = One("a:1|c|#" + tags);
  REQUIRE(full.tags.size() == kStatsdMaxTags);
  CHECK(full.tags.front() == std::pair<std::string, std::string>{"k0", "v0"});
  CHECK(full.tags.back() == std::pair<std::string, std::string>{"k63", "v63"});

  CHECK(Reject("a:1|c|#" + tags + ",one_more") == StatsdError::kBadTags);
  // The limit is per line, across tag sections.
  CHECK(Reject("a:1|c|#" + tags + "|#one_more") == StatsdError::kBadTags);
  CheckRejectedAmongGood("a:1|c|#" + tags + ",x:y", StatsdError::kBadTags);
}

TEST_CASE("invalid_name") {
  CHECK(Reject(":1|c") == StatsdError::kInvalidName);
  CHECK(Reject("a\tb:1|c") == StatsdError::kInvalidName);
  CHECK(Reject(std::string("a\0b:1|c", 7)) == StatsdError::kInvalidName);
  CHECK(Reject("a\x7F:1|c") == StatsdError::kInvalidName);
  CHECK(Reject("bad\xFF:1|c") == StatsdError::kInvalidName);
  CHECK(Reject("cut\xE2\x82:1|c") == StatsdError::kInvalidName);
  CHECK(Reject(std::string(kStatsdMaxNameBytes + 1, 'n') + ":1|c") == StatsdError::kInvalidName);

  CHECK(One(std::string(kStatsdMaxNameBytes, 'n') + ":1|c").name.size() == kStatsdMaxNameBytes);
  CHECK(One("caf\xC3\xA9.hits:1|c").name == "caf\xC3\xA9.hits");
  CHECK(One("with space-and_punct/!:1|c").name == "with space-and_punct/!");
  CheckRejectedAmongGood(":1|c", StatsdError::kInvalidName);
}

TEST_CASE("line_too_long") {
  const std::string prefix = "a:1|c|#k:";
  const std::string fits = prefix + std::string(kStatsdMaxLineBytes - prefix.size(), 'v');
  CHECK(One(fits).tags.at(0).second.size() == kStatsdMaxLineBytes - prefix.size());
  // The '\r' of "\r\n" does not count.
  CHECK(Parse(fits + "\r\n").samples.size() == 1);

  const std::string too_long = fits + "v";
  CHECK(Reject(too_long) == StatsdError::kLineTooLong);
  // Even a line that would otherwise be fine skips to the next '\n'.
  CheckRejectedAmongGood(too_long, StatsdError::kLineTooLong);
  CheckRejectedAmongGood(std::string(3 * kStatsdMaxLineBytes, 'x'), StatsdError::kLineTooLong);
}

TEST_CASE("a parser takes lines up to the limit it is given") {
  const std::string line = "long.set:" + std::string(9000, 'm') + "|s";
  StatsdLineParser wide(line.size());
  Recorder rec;
  CHECK(wide.Parse(line + "\n" + line + "x\nb:1|c\n", rec) == 2);
  REQUIRE(rec.samples.size() == 2);
  CHECK(rec.samples[0].set_member.size() == 9000);
  CHECK(rec.samples[1].name == "b");
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].reason == StatsdError::kLineTooLong);
  CHECK(rec.errors[0].line.size() == line.size() + 1);

  StatsdLineParser narrow(16);
  Recorder short_rec;
  const std::string fits = std::string(12, 'n') + ":1|c";  // 16 bytes
  CHECK(narrow.Parse(fits + "\r\nn" + fits + "\n", short_rec) == 1);
  CHECK(short_rec.samples.at(0).name.size() == 12);
  REQUIRE(short_rec.errors.size() == 1);
  CHECK(short_rec.errors[0].reason == StatsdError::kLineTooLong);
}

TEST_CASE("unsupported") {
  CHECK(Reject("_e{5,4}:title|text") == StatsdError::kUnsupported);
  CHECK(Reject("_sc|my.check|0|#env:prod") == StatsdError::kUnsupported);
  CheckRejectedAmongGood("_e{1,1}:a|b|p:low", StatsdError::kUnsupported);
  CheckRejectedAmongGood("_sc|db.up|1", StatsdError::kUnsupported);
  // Only those exact prefixes.
  CHECK(One("_event:1|c").name == "_event");
  CHECK(One("_sc.count:1|c").name == "_sc.count");
}

TEST_CASE("sets") {
  Sample s = One("visitors:10.0.0.1|s|#env:prod");
  CHECK(s.type == StatsdType::kSet);
  CHECK(s.set_member == "10.0.0.1");
  CHECK(s.tags == Tags{{"env", "prod"}});
  // Any text is a member, numbers and signs included, and never a delta.
  Sample n = One("ids:-42|s");
  CHECK(n.set_member == "-42");
  CHECK_FALSE(n.gauge_delta);
  CHECK(One("ids:nan|s").set_member == "nan");
  CHECK(One("ids: spaced out |s").set_member == " spaced out ");
  CHECK(One("ids:x|s|@0.5").sample_rate == 0.5);
  CheckRejectedAmongGood("ids:|s", StatsdError::kBadValue);
}

TEST_CASE("container and timestamp sections are accepted and ignored") {
  Sample s =
      One("a:2|c|#env:prod|c:83c0a99c0a54c0c187f461c7980e9b57f3f6a8b0c918c8d93df19a9de6f3fe1d");
  CHECK(s.value == 2.0);
  CHECK(s.tags == Tags{{"env", "prod"}});

  Sample t = One("a:2|g|T1656581400|@0.5");
  CHECK(t.value == 2.0);
  CHECK(t.sample_rate == 0.5);

  Sample all = One("a:3|d|c:abc|T1656581400|#k:v|@1");
  CHECK(all.value == 3.0);
  CHECK(all.tags == Tags{{"k", "v"}});
  CHECK(One("a:1|c|c:").value == 1.0);
  CHECK(One("a:1|c|T").value == 1.0);
}

TEST_CASE("random-ish garbage does not crash") {
  // A fixed xorshift sequence: reproducible, and biased towards the grammar's own characters so
  // that lines get deep into the parser.
  Xorshift next{0x9E3779B97F4A7C15ULL};
  const std::string alphabet = "ab.:|#@,cgmshdT0123456789+-eE.\r\n_{xX\x7F\xC3\xA9\xFF ";
  StatsdLineParser parser;
  for (int round = 0; round < 2000; ++round) {
    std::string packet(next() % 200, '\0');
    for (char& ch : packet) {
      const std::uint64_t r = next();
      ch = (r & 7) == 0 ? static_cast<char>(r >> 8) : alphabet[(r >> 8) % alphabet.size()];
    }
    Recorder rec;
    const std::size_t returned = parser.Parse(packet, rec);
    CHECK(returned == rec.samples.size());
    for (const Sample& s : rec.samples) {
      CHECK_FALSE(s.name.empty());
      CHECK(s.sample_rate > 0.0);
      CHECK(s.sample_rate <= 1.0);
      CHECK(std::isfinite(s.value));
      CHECK(s.tags.size() <= kStatsdMaxTags);
    }
  }
}

TEST_CASE(
    "the fast path for common lines delivers and rejects exactly what the general parser does") {
  // Lines put together from the grammar's pieces, valid and not, shorter and longer than the fast
  // path's 24 to 63 bytes, packed several to a packet so that some end at the packet's end
  // (without a newline, with "\r\n"): both parsers must make the same calls, with views at the
  // same places.
  Xorshift next{0x2545F4914F6CDD1DULL};
  auto pick = [&](const std::vector<std::string>& from) { return from[next() % from.size()]; };
  // A piece of the grammar: a valid one three times in four, else one that may not be.
  auto piece = [&](const std::vector<std::string>& valid, const std::vector<std::string>& other) {
    return next() % 4 != 0 ? pick(valid) : pick(other);
  };
  const std::vector<std::string> names = {"a", "app.requests", "x.y.z.w.v.u.t.s",
                                          "app.requests.123", "caf\xC3\xA9"};
  const std::vector<std::string> other_names = {"_e{",       "_sc",     "_under",    "bad\xFF",
                                                "tab\tname", "del\x7F", "sp ace",    "",
                                                "name#hash", "n@me",    "comma,name"};
  const std::vector<std::string> values = {"1", "0", "-3", "+2.5", "12.75", "0.000001"};
  const std::vector<std::string> other_values = {
      "1e3", ".5", "5.", "", "x", "1:2", "--1", "inf", "1.2.3", "123456789012345678901234"};
  const std::vector<std::string> types = {"c", "g", "ms", "h", "d", "s"};
  const std::vector<std::string> other_types = {"", "x", "cc", "m"};
  const std::vector<std::string> sections = {"|@0.5",     "|@1",         "|#env:prod", "|#a",
                                             "|#a:b,c:d", "|@0.25|#a:b", "|#a::b",     "|#a:"};
  const std::vector<std::string> other_sections = {
      "|@0",  "|@2",    "|@",        "|@x",           "|#",    "|#,a",    "|#a,",
      "|#:a", "|#a,,b", "|#k:v|#w",  "|c:abc",        "|c",    "|T12345", "|",
      "||",   "|x",     "|#a:b\x01", "|#h\xC3\xA9:v", "|#a,:b"};
  const std::vector<std::string> endings = {"\n", "\n", "\n", "\r\n", "\r", ""};
  StatsdLineParser general(kStatsdMaxLineBytes, false);
  StatsdLineParser fast;
  std::size_t samples = 0;
  std::size_t lines = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string packet;
    const std::uint64_t count = 1 + next() % 4;
    for (std::uint64_t l = 0; l < count; ++l) {
      std::string line = piece(names, other_names);
      if (next() % 3 == 0) line.append(next() % 110, 'n');  // lengths around both limits
      line += ':' + piece(values, other_values) + '|' + piece(types, other_types);
      for (std::uint64_t s = next() % 3; s > 0; --s) line += piece(sections, other_sections);
      if (next() % 4 == 0) {  // a long tag list
        line += "|#";
        for (std::uint64_t t = 1 + next() % 8; t > 0; --t) line += "key:value" + pick({",", ""});
      }
      if (next() % 16 == 0 && !line.empty())
        line[next() % line.size()] = pick({":", "|", ",", "\n"})[0];
      packet += line + (l + 1 == count ? pick(endings) : "\n");
      ++lines;
    }
    testing::StatsdCallLog expected(packet);
    testing::StatsdCallLog got(packet);
    const std::size_t expected_samples = general.Parse(packet, expected);
    REQUIRE(fast.Parse(packet, got) == expected_samples);
    REQUIRE(got.calls == expected.calls);
    samples += expected_samples;
  }
  // The pieces make lines of both kinds: a good share is taken, not only rejected.
  CHECK(samples > lines / 10);
  CHECK(samples < lines * 9 / 10);
}
