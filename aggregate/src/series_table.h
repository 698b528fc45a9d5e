// Private: a compact hash table from series key to value, used by shards and by the store.
// Entries live in one vector (stable indexes, reused through a free list); keys live in one string
// arena; the probe table holds 32-bit entry indexes. Per entry this costs the value plus 16 bytes
// and about 8 bytes of probe slots, instead of a node allocation per series.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace telemetryd::aggregate::detail {

template <typename V>
class SeriesTable {
 public:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;

  SeriesTable() { slots_.assign(16, 0); }

  static std::uint64_t Hash(std::string_view key) noexcept {
    return std::hash<std::string_view>{}(key);
  }

  [[nodiscard]] std::uint32_t Find(std::string_view key, std::uint64_t hash) const noexcept {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const std::uint32_t slot = slots_[i];
      if (slot == 0) return kNone;
      const Entry& e = entries_[slot - 1];
      if (e.hash == hash && Key(e) == key) return slot - 1;
    }
  }

  // `key` must not be in the table. May move values (vector growth): re-read after inserting.
  std::uint32_t Insert(std::string_view key, std::uint64_t hash) {
    if ((live_ + 1) * 2 > slots_.size()) Rehash(slots_.size() * 2);
    std::uint32_t index;
    if (!free_.empty()) {
      index = free_.back();
      free_.pop_back();
    } else {
      index = static_cast<std::uint32_t>(entries_.size());
      entries_.emplace_back();
    }
    Entry& e = entries_[index];
    e.hash = hash;
    e.key_offset = static_cast<std::uint32_t>(arena_.size());
    e.key_length = static_cast<std::uint32_t>(key.size());
    e.value = V{};
    arena_.append(key);
    Place(index);
    ++live_;
    return index;
  }

  void Erase(std::uint32_t index) {
    Entry& e = entries_[index];
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = e.hash & mask;
    while (slots_[i] != index + 1) i = (i + 1) & mask;
    slots_[i] = 0;
    // Backward shift: pull later members of the probe run into the hole.
    for (std::size_t j = (i + 1) & mask; slots_[j] != 0; j = (j + 1) & mask) {
      const std::size_t home = entries_[slots_[j] - 1].hash & mask;
      const bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (!between) {
        slots_[i] = slots_[j];
        slots_[j] = 0;
        i = j;
      }
    }
    garbage_ += e.key_length;
    e.key_length = kDead;
    e.value = V{};
    free_.push_back(index);
    --live_;
    if (garbage_ > (1U << 20) && garbage_ * 2 > arena_.size()) CompactArena();
  }

  [[nodiscard]] bool live(std::uint32_t index) const noexcept {
    return entries_[index].key_length != kDead;
  }
  [[nodiscard]] std::string_view key(std::uint32_t index) const noexcept {
    return Key(entries_[index]);
  }
  V& value(std::uint32_t index) noexcept { return entries_[index].value; }
  const V& value(std::uint32_t index) const noexcept { return entries_[index].value; }
  // Iterate indexes [0, end()) and skip those not live().
  [[nodiscard]] std::uint32_t end() const noexcept {
    return static_cast<std::uint32_t>(entries_.size());
  }
  [[nodiscard]] std::size_t size() const noexcept { return live_; }

 private:
  static constexpr std::uint32_t kDead = 0xFFFFFFFFu;
  struct Entry {
    std::uint64_t hash = 0;
    std::uint32_t key_offset = 0;
    std::uint32_t key_length = kDead;
    V value{};
  };

  [[nodiscard]] std::string_view Key(const Entry& e) const noexcept {
    return std::string_view(arena_.data() + e.key_offset, e.key_length);
  }

  void Place(std::uint32_t index) noexcept {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = entries_[index].hash & mask;
    while (slots_[i] != 0) i = (i + 1) & mask;
    slots_[i] = index + 1;
  }

  void Rehash(std::size_t size) {
    slots_.assign(size, 0);
    for (std::uint32_t i = 0; i < entries_.size(); ++i) {
      if (live(i)) Place(i);
    }
  }

  void CompactArena() {
    std::string fresh;
    fresh.reserve(arena_.size() - garbage_);
    for (Entry& e : entries_) {
      if (e.key_length == kDead) continue;
      const auto offset = static_cast<std::uint32_t>(fresh.size());
      fresh.append(arena_, e.key_offset, e.key_length);
      e.key_offset = offset;
    }
    arena_ = std::move(fresh);
    garbage_ = 0;
  }

  std::vector<Entry> entries_;
  std::vector<std::uint32_t> free_;
  std::vector<std::uint32_t> slots_;  // entry index + 1; 0 is empty
  std::string arena_;
  std::size_t live_ = 0;
  std::size_t garbage_ = 0;
};

}  // namespace telemetryd::aggregate::detail
