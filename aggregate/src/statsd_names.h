// Private: the StatsD names an engine has seen, by the hash of the name.
//
// StatsD series are not held per name: they live in one store table per StatsD type (a
// "carrier" metric), keyed by name and labels. What is per name is only what a name's series
// share: the type it was first seen with (a later sample of another type is a conflict), and how
// many series it holds in the store (its share of max_series_per_metric). That is one 12-byte slot
// per name here, with no copy of the name: names are compared by their 61-bit hash, so two names
// only share a slot when their hashes collide (about one chance in 10^7 over a million names).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "probe_run.h"

namespace telemetryd::aggregate::detail {

class StatsdNames {
 public:
  // One name: 12 bytes, the tag (hash bits 63..3, type + 1 in bits 2..0; 0 is empty) in two
  // halves, and the name's store series count (kept by the caller).
  struct Entry {
    std::uint32_t tag_low = 0;
    std::uint32_t tag_high = 0;
    std::uint32_t series = 0;
    [[nodiscard]] std::uint64_t Tag() const noexcept {
      return std::uint64_t{tag_high} << 32 | tag_low;
    }
    // As given to Add.
    [[nodiscard]] unsigned type() const noexcept { return static_cast<unsigned>(tag_low & 7) - 1; }
  };
  static_assert(sizeof(Entry) == 12);
  static constexpr unsigned kTypes = 7;  // type numbers 0 to 6

  // The name key of a hash: what this table compares (hash bits 63..3, never 0).
  static std::uint64_t Key(std::uint64_t hash) noexcept {
    const std::uint64_t key = hash & ~std::uint64_t{7};
    return key == 0 ? 8 : key;
  }

  // The name with `hash`, or nullptr. Valid until the next Add.
  Entry* Find(std::uint64_t hash) noexcept {
    if (slots_.empty()) return nullptr;
    const std::uint64_t want = Key(hash);
    for (std::size_t i = Home(want);; i = Next(i)) {
      Entry& e = slots_[i];
      const std::uint64_t tag = e.Tag();
      if (tag == 0) return nullptr;
      if ((tag & ~std::uint64_t{7}) == want) return &e;
    }
  }

  // Adds a name that Find did not find, with type `type` (below kTypes); returns its entry, valid
  // until the next Add. May throw std::bad_alloc.
  Entry* Add(std::uint64_t hash, unsigned type) { return Insert(Entry{}, Key(hash) | (type + 1)); }

  // Adds the names of `other` that this table does not hold, with their types and counts, while
  // it holds fewer than `max`; returns how many of them found no room. May throw std::bad_alloc.
  std::size_t Merge(const StatsdNames& other, std::size_t max) {
    std::size_t no_room = 0;
    for (const Entry& e : other.slots_) {
      if (e.Tag() == 0 || Find(e.Tag()) != nullptr) continue;
      if (size_ >= max) {
        ++no_room;
        continue;
      }
      Insert(e, e.Tag());
    }
    return no_room;
  }

  // Forgets the name of `entry` (from Find). Entries after it in its probe run move back into
  // the hole, so pointers from Find are invalid afterwards.
  void Erase(Entry* entry) noexcept {
    EraseFromProbeRun(
        std::span<Entry>(slots_), static_cast<std::size_t>(entry - slots_.data()),
        [](const Entry& e) { return e.Tag() == 0; },
        [this](const Entry& e) { return Home(e.Tag()); });
    --size_;
  }

  // Forgets every name that holds no series; returns how many.
  std::size_t EraseEmpty() noexcept {
    std::size_t erased = 0;
    for (std::size_t i = 0; i < slots_.size();) {
      if (slots_[i].Tag() != 0 && slots_[i].series == 0) {
        Erase(&slots_[i]);
        ++erased;
        continue;  // another entry may have moved into slot i
      }
      ++i;
    }
    return erased;
  }

  // Sets every name's series count to 0.
  void ClearSeries() noexcept {
    for (Entry& e : slots_) e.series = 0;
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }

 private:
  // Any table size below 2^32, not only powers of two: the home slot is the tag's high half
  // scaled to the size.
  [[nodiscard]] std::size_t Home(std::uint64_t tag) const noexcept {
    return static_cast<std::size_t>(((tag >> 32) * slots_.size()) >> 32);
  }
  [[nodiscard]] std::size_t Next(std::size_t i) const noexcept {
    return i + 1 == slots_.size() ? 0 : i + 1;
  }
  Entry* Insert(const Entry& e, std::uint64_t tag) {
    if ((size_ + 1) * 5 > slots_.size() * 4) Grow();
    ++size_;
    return Place(e, tag);
  }
  Entry* Place(Entry e, std::uint64_t tag) noexcept {
    e.tag_low = static_cast<std::uint32_t>(tag);
    e.tag_high = static_cast<std::uint32_t>(tag >> 32);
    std::size_t i = Home(tag);
    while (slots_[i].Tag() != 0) i = Next(i);
    slots_[i] = e;
    return &slots_[i];
  }
  // Grows by half (a table of a million names does not double at once), at most 80% full.
  void Grow() {
    std::vector<Entry> old(slots_.size() < 64 ? 64 : slots_.size() + slots_.size() / 2);
    old.swap(slots_);
    for (const Entry& e : old) {
      if (e.Tag() != 0) Place(e, e.Tag());
    }
  }

  std::vector<Entry> slots_;
  std::size_t size_ = 0;
};

}  // namespace telemetryd::aggregate::detail
