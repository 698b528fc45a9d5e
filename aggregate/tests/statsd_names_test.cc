// The table of StatsD names (a private header of the engine) against a map: names added and
// forgotten in crowded probe runs, also runs that wrap around the end of the table.
#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <random>

#include "../src/statsd_names.h"

using telemetryd::aggregate::detail::StatsdNames;

TEST_CASE("StatsD names: forgetting a name keeps every other name findable") {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 200; ++round) {
    StatsdNames names;
    std::map<std::uint64_t, unsigned> expected;  // StatsdNames::Key -> type
    // Few distinct high halves crowd the names into a few long runs; the highest ones have their
    // home at the table's last slots, so their runs wrap around.
    const std::uint64_t highs[] = {0x00000000, 0x40000000, 0xFFFFFFF0, 0xFFFFFFFF};
    auto random_hash = [&] { return highs[rng() % 4] << 32 | (rng() & 0xFFFFFFF8U) | 0x8; };
    const int operations = 20 + static_cast<int>(rng() % 400);
    for (int op = 0; op < operations; ++op) {
      if (expected.empty() || rng() % 3 != 0) {
        const std::uint64_t hash = random_hash();
        if (names.Find(hash) != nullptr) continue;
        const auto type = static_cast<unsigned>(rng() % 5);
        names.Add(hash, type);
        expected[StatsdNames::Key(hash)] = type;
      } else {
        auto it = expected.begin();
        std::advance(it, static_cast<long>(rng() % expected.size()));
        StatsdNames::Entry* entry = names.Find(it->first);
        REQUIRE(entry != nullptr);
        names.Erase(entry);
        CHECK(names.Find(it->first) == nullptr);
        expected.erase(it);
      }
      REQUIRE(names.size() == expected.size());
    }
    bool all_found = true;
    for (const auto& [key, type] : expected) {
      const StatsdNames::Entry* entry = names.Find(key);
      all_found = all_found && entry != nullptr && entry->type() == type;
    }
    CHECK(all_found);
  }
}

TEST_CASE("StatsD names: the names without series are forgotten, the others stay findable") {
  std::mt19937_64 rng(11);
  for (int round = 0; round < 200; ++round) {
    StatsdNames names;
    std::map<std::uint64_t, std::uint32_t> series;  // StatsdNames::Key -> series
    const std::uint64_t highs[] = {0x00000000, 0x80000000, 0xFFFFFFF8, 0xFFFFFFFF};
    const int count = 1 + static_cast<int>(rng() % 300);
    for (int i = 0; i < count; ++i) {
      const std::uint64_t hash = highs[rng() % 4] << 32 | (rng() & 0xFFFFFFF8U) | 0x8;
      if (names.Find(hash) != nullptr) continue;
      names.Add(hash, 1);
      const auto n = static_cast<std::uint32_t>(rng() % 3);
      names.Find(hash)->series = n;
      series[StatsdNames::Key(hash)] = n;
    }
    std::size_t empty = 0;
    for (const auto& [key, n] : series) empty += n == 0 ? 1 : 0;
    CHECK(names.EraseEmpty() == empty);
    CHECK(names.size() == series.size() - empty);
    bool right = true;
    for (const auto& [key, n] : series) {
      const StatsdNames::Entry* entry = names.Find(key);
      right = right && (n == 0 ? entry == nullptr : entry != nullptr && entry->series == n);
    }
    CHECK(right);
  }
}
