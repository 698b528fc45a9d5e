#include <doctest/doctest.h>

#include <string>

#include "telemetryd/wire/format.h"

using namespace telemetryd::wire;

TEST_CASE("UTF-8 validation") {
  CHECK(IsValidUtf8("plain ascii text that is long enough"));
  CHECK(IsValidUtf8("n\xC5\x93ud"));             // œ
  CHECK(IsValidUtf8("\xF0\x9F\x98\x80"));        // emoji
  CHECK_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  CHECK_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate
  CHECK_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(IsValidUtf8("abc\xE2\x82"));       // cut short
  CHECK_FALSE(IsValidUtf8("abcdefgh\x80"));      // stray continuation after the fast path
}

// Every length a scan by words handles differently (under 4, 4 to 7, whole words and a last
// overlapping word), with the one non-ASCII byte at every position.
TEST_CASE("UTF-8 validation sees a non-ASCII byte at any position of any length") {
  for (std::size_t n = 0; n <= 40; ++n) {
    const std::string ascii(n, 'a');
    CHECK(IsValidUtf8(ascii));
    for (std::size_t at = 0; at < n; ++at) {
      std::string stray = ascii;
      stray[at] = '\x80';  // a continuation byte with no lead
      CHECK_MESSAGE(!IsValidUtf8(stray), "length " << n << ", at " << at);
      std::string lead = ascii;
      lead[at] = '\xC5';  // a lead byte; valid only when its continuation follows
      CHECK_MESSAGE(!IsValidUtf8(lead.substr(0, at + 1)), "length " << at + 1);
      if (at + 1 < n) {
        lead[at + 1] = '\x93';
        CHECK_MESSAGE(IsValidUtf8(lead), "length " << n << ", at " << at);
      }
    }
  }
}

TEST_CASE("event names") {
  CHECK(IsValidEventName("vsr.protocol.prepare.sent"));
  CHECK(IsValidEventName("routes_total"));
  CHECK_FALSE(IsValidEventName(""));
  CHECK_FALSE(IsValidEventName(".a"));
  CHECK_FALSE(IsValidEventName("a."));
  CHECK_FALSE(IsValidEventName("a..b"));
  CHECK_FALSE(IsValidEventName("a\nb"));
  CHECK_FALSE(IsValidEventName("a.\xff"));
  CHECK_FALSE(IsValidEventName(std::string(256, 'a')));
  CHECK(IsValidEventName("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p"));
  CHECK_FALSE(IsValidEventName("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q"));
}

TEST_CASE("the static table is what v1 froze") {
  const auto table = StaticStrings();
  CHECK(table.size() == kStaticStrings);
  CHECK(table[0] == "count");
  CHECK(FindStatic("node_id").has_value());
  CHECK_FALSE(FindStatic("not_there").has_value());
  for (std::size_t i = 0; i < table.size(); ++i) {
    CHECK(IsValidEventName(table[i]));
    CHECK(FindStatic(table[i]) == i);  // no duplicates
  }
}
