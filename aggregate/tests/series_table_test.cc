// The series table (a private header of the engine): its key hashing and comparison helpers, and
// the table itself against a map.
#include <doctest/doctest.h>

#include <map>
#include <new>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../src/series_table.h"
#include "support/failing_allocations.h"

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

TEST_CASE("a byte and a piece added at once hash as added one after the other") {
  for (std::size_t before = 0; before <= 9; ++before) {
    for (std::size_t length = 0; length <= 40; ++length) {
      const std::string head = Text(before);
      const std::string piece = Text(length + 3).substr(3);
      KeyHasher apart;
      apart.Add(head);
      apart.Add('\x1f');
      apart.Add(piece);
      apart.Add(piece);  // more after it, pending bytes or not
      KeyHasher together;
      together.Add(head);
      together.Add('\x1f', piece);
      together.Add(piece);
      REQUIRE_MESSAGE(together.Finish() == apart.Finish(),
                      "before " << before << " length " << length);
      REQUIRE(together.Finish() == HashKey(head + '\x1f' + piece + piece));
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

namespace {
std::uint32_t Insert(SeriesTable<int>& table, const std::string& key, int value) {
  const std::uint32_t i = table.Insert(key, table.Hash(key));
  table.value(i) = value;
  return i;
}
std::uint32_t Find(const SeriesTable<int>& table, const std::string& key) {
  return table.Find(key, table.Hash(key));
}
}  // namespace

TEST_CASE("a series table agrees with a map through inserts and erases across chunks") {
  SeriesTable<int> table;
  std::map<std::string, int> model;
  std::mt19937 random(7);
  // Enough keys for several entry chunks and arena blocks; lengths around the one-byte length
  // limit of 127 and far beyond it.
  auto key_of = [](int n) {
    const std::size_t length = static_cast<std::size_t>(n % 7 == 0 ? 200 + n % 300 : n % 130);
    return std::to_string(n) + "\x1f" + std::string(length, static_cast<char>('a' + n % 26));
  };
  for (int round = 0; round < 3; ++round) {
    for (int n = 0; n < 20'000; ++n) {
      const std::string key = key_of(n + round * 7'000);
      if (model.count(key) != 0) continue;
      Insert(table, key, n);
      model[key] = n;
    }
    // Erase about three in four, which also compacts the arena (more than 1 MiB of keys freed,
    // more than half of them).
    for (auto it = model.begin(); it != model.end();) {
      if (random() % 4 != 0) {
        const std::uint32_t i = Find(table, it->first);
        REQUIRE(i != table.kNone);
        table.Erase(i);
        it = model.erase(it);
      } else {
        ++it;
      }
    }
    REQUIRE(table.size() == model.size());
    for (const auto& [key, value] : model) {
      const std::uint32_t i = Find(table, key);
      REQUIRE(i != table.kNone);
      CHECK(table.key(i) == key);
      CHECK(table.value(i) == value);
    }
    std::size_t live = 0;
    for (std::uint32_t i = 0; i < table.end(); ++i) {
      if (!table.live(i)) continue;
      ++live;
      const auto it = model.find(std::string(table.key(i)));
      REQUIRE(it != model.end());
      CHECK(it->second == table.value(i));
    }
    CHECK(live == model.size());
  }
  CHECK(Find(table, key_of(1'000'000)) == table.kNone);
}

TEST_CASE("keys whose hashes share a probe position are found whatever their other bits") {
  // Hashes chosen by hand: all start probing at one slot. Some agree in every bit, so only the
  // keys tell them apart; the others differ in the bits above the position, which the slots keep.
  SeriesTable<int> table;
  std::vector<std::pair<std::string, std::uint64_t>> keys;
  for (int n = 0; n < 3'000; ++n) {
    const std::uint64_t high = n % 3 == 0 ? 0 : static_cast<std::uint64_t>(n);
    keys.emplace_back("k" + std::to_string(n), 0x5000ULL | high << 20);
  }
  for (const auto& [key, hash] : keys) {
    table.value(table.Insert(key, hash)) = static_cast<int>(key.size());
  }
  auto find = [&](const std::string& key, std::uint64_t hash) { return table.Find(key, hash); };
  for (const auto& [key, hash] : keys) {
    const std::uint32_t i = find(key, hash);
    REQUIRE(i != table.kNone);
    CHECK(table.key(i) == key);
  }
  // A key's own hash with other bits above the position, or another key with its hash: not found.
  CHECK(find("k1", 0x5000ULL | 2ULL << 20) == table.kNone);
  CHECK(find("k3", 0x5000ULL | 3ULL << 20) == table.kNone);
  CHECK(find("k9999", 0x5000ULL) == table.kNone);
  // Erase every other one (backward shifts across the long probe run); the rest stay found.
  for (std::size_t n = 0; n < keys.size(); n += 2) table.Erase(find(keys[n].first, keys[n].second));
  for (std::size_t n = 0; n < keys.size(); ++n) {
    const std::uint32_t i = find(keys[n].first, keys[n].second);
    CHECK((i == table.kNone) == (n % 2 == 0));
  }
}

TEST_CASE("a series table takes an empty key and refuses one longer than its limit") {
  SeriesTable<int> table;
  Insert(table, "", 1);
  CHECK(table.value(Find(table, "")) == 1);
  const std::string longest(SeriesTable<int>::kMaxKey, 'x');
  Insert(table, longest, 2);
  CHECK(table.value(Find(table, longest)) == 2);
  CHECK_THROWS_AS(Insert(table, longest + "x", 3), std::length_error);
  CHECK(table.size() == 2);
}

TEST_CASE("an insert without memory leaves the table as it was, and what it stored as garbage") {
  using telemetryd::testing::allocations_left;
  SeriesTable<int> table;
  // Past the first chunk of entries, so that every kind of allocation an insert makes (the probe
  // slots, an arena block, the first chunk's growth, a chunk) fails at some point.
  constexpr int kKeys = 5000;
  auto key_of = [](int i) { return std::to_string(i) + Text(static_cast<std::size_t>(i % 40)); };
  std::size_t failures = 0;
  std::size_t failures_with_garbage = 0;
  bool consistent = true;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = key_of(i);
    const std::uint64_t hash = SeriesTable<int>::Hash(key);
    for (long n = 0;; ++n) {
      const std::size_t arena = table.arena_bytes();
      const std::size_t garbage = table.garbage_bytes();
      bool failed = false;
      allocations_left = n;
      try {
        table.value(table.Insert(key, hash)) = i;
      } catch (const std::bad_alloc&) {
        failed = true;
      }
      allocations_left = -1;
      if (!failed) break;
      ++failures;
      if (table.arena_bytes() != arena) ++failures_with_garbage;
      consistent = consistent && table.size() == static_cast<std::size_t>(i) &&
                   table.Find(key, hash) == SeriesTable<int>::kNone &&
                   table.garbage_bytes() - garbage == table.arena_bytes() - arena;
    }
  }
  CHECK(consistent);
  CHECK(failures > 10);
  CHECK(failures_with_garbage > 0);
  REQUIRE(table.size() == static_cast<std::size_t>(kKeys));
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = key_of(i);
    const std::uint32_t index = table.Find(key, SeriesTable<int>::Hash(key));
    REQUIRE(index != SeriesTable<int>::kNone);
    CHECK(table.value(index) == i);
  }
}

TEST_CASE("erasing without memory for the arena's compaction keeps every key and value") {
  using telemetryd::testing::allocations_left;
  SeriesTable<int> table;
  // 2.4 MB of keys; three in four are erased, which leaves more garbage than live keys.
  constexpr int kKeys = 4000;
  constexpr int kWithoutMemory = 3600;  // the erases below this key find no memory
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(std::to_string(i) + Text(600));
  auto find = [&](int i) {
    const std::string& k = keys[static_cast<std::size_t>(i)];
    return table.Find(k, SeriesTable<int>::Hash(k));
  };
  auto insert = [&](int i) {
    const std::string& k = keys[static_cast<std::size_t>(i)];
    table.value(table.Insert(k, SeriesTable<int>::Hash(k))) = i;
  };
  auto erased = [](int i) { return i % 4 != 0; };
  auto check = [&](int erased_below) {
    for (int i = 0; i < kKeys; ++i) {
      const bool gone = erased(i) && i < erased_below;
      REQUIRE_MESSAGE((find(i) == SeriesTable<int>::kNone) == gone, i);
      if (!gone) REQUIRE(table.value(find(i)) == i);
    }
  };
  for (int i = 0; i < kKeys; ++i) insert(i);
  allocations_left = 0;
  for (int i = 0; i < kWithoutMemory; ++i) {
    if (erased(i)) table.Erase(find(i));
  }
  allocations_left = -1;
  check(kWithoutMemory);
  // With memory again, the next erase compacts; the free entries are taken again by new keys.
  for (int i = kWithoutMemory; i < kKeys; ++i) {
    if (erased(i)) table.Erase(find(i));
  }
  check(kKeys);
  const std::uint32_t end = table.end();
  for (int i = 0; i < kKeys; ++i) {
    if (erased(i)) insert(i);
  }
  CHECK(table.end() == end);
  check(0);
}
