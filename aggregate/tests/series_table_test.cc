// The series table's key hashing and comparison helpers (a private header of the engine).
#include <doctest/doctest.h>

#include <string>

#include "../src/series_table.h"

using telemetryd::aggregate::detail::HashKey;
using telemetryd::aggregate::detail::KeyHasher;
using telemetryd::aggregate::detail::SameBytes;
using telemetryd::aggregate::detail::SeriesTable;

namespace {

std::string Text(std::size_t length) {
  std::string s;
  for (std::size_t i = 0; i < length; ++i) s.push_back(static_cast<char>('a' + (i * 7) % 26));
  return s;
}

}  // namespace

TEST_CASE("a key hashed in pieces hashes as the whole key, wherever the pieces split it") {
  for (std::size_t length = 0; length <= 40; ++length) {
    const std::string key = Text(length);
    const std::uint64_t whole = HashKey(key);
    for (std::size_t a = 0; a <= length; ++a) {
      for (std::size_t b = a; b <= length; ++b) {
        KeyHasher h;
        h.Add(std::string_view(key).substr(0, a));
        h.Add(std::string_view(key).substr(a, b - a));
        if (b < length) {
          h.Add(key[b]);
          h.Add(std::string_view(key).substr(b + 1));
        }
        REQUIRE_MESSAGE(h.Finish() == whole, "length " << length << " split " << a << "," << b);
      }
    }
  }
}

TEST_CASE("key hashes tell apart keys that differ in one byte or only in length") {
  const std::string base = Text(24);
  const std::uint64_t h = HashKey(base);
  for (std::size_t i = 0; i < base.size(); ++i) {
    std::string other = base;
    other[i] = static_cast<char>(other[i] ^ 1);
    CHECK(HashKey(other) != h);
    CHECK(HashKey(std::string_view(base).substr(0, i)) != h);
  }
  // Trailing zero bytes pad the last word: the length keeps them apart.
  CHECK(HashKey(std::string_view("a\0", 2)) != HashKey("a"));
  CHECK(HashKey(std::string_view("\0", 1)) != HashKey(""));
}

TEST_CASE("SameBytes compares every byte at every length") {
  for (std::size_t length = 0; length <= 40; ++length) {
    const std::string a = Text(length);
    std::string b = a;
    CHECK(SameBytes(a.data(), b.data(), length));
    for (std::size_t i = 0; i < length; ++i) {
      b[i] = static_cast<char>(b[i] ^ 0x40);
      CHECK_FALSE(SameBytes(a.data(), b.data(), length));
      b[i] = a[i];
    }
  }
}

TEST_CASE("FindIf finds an entry by hash and predicate; Find by key") {
  auto key = [](std::string id, std::string label) { return id + '\x1f' + label; };
  SeriesTable<int> table;
  const std::string keys[] = {key("1", "a"), key("1", "ab"), key("2", "a"), key("10", "a")};
  for (const auto& k : keys) table.value(table.Insert(k, HashKey(k))) = static_cast<int>(k.size());
  for (const auto& k : keys) {
    const std::uint32_t i = table.Find(k, HashKey(k));
    REQUIRE(i != table.kNone);
    CHECK(table.key(i) == k);
    CHECK(table.value(i) == static_cast<int>(k.size()));
    CHECK(table.FindIf(HashKey(k), [&](std::uint32_t j) { return table.key(j) == k; }) == i);
  }
  CHECK(table.Find(key("1", "b"), HashKey(key("1", "b"))) == table.kNone);
  CHECK(table.FindIf(HashKey(keys[0]), [](std::uint32_t) { return false; }) == table.kNone);
}
