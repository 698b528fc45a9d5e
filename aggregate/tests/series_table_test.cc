#include <doctest/doctest.h>

#include <map>
#include <random>
#include <string>

#include "../src/series_table.h"

using telemetryd::aggregate::detail::SeriesTable;

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
