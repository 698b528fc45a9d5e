// Private: a compact hash table from series key to value, used by shards and by the store.
// Entries live in one vector (stable indexes, reused through a free list); keys live in one string
// arena; the probe table holds 32-bit entry indexes. Per entry this costs the value plus 16 bytes
// and about 8 bytes of probe slots, instead of a node allocation per series.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace telemetryd::aggregate::detail {

// Spreads the bits of `x` over the whole word (xor-shift, multiply, xor-shift).
inline std::uint64_t MixBits(std::uint64_t x) noexcept {
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ULL;
  x ^= x >> 32;
  x *= 0xD6E8FEB86659FD93ULL;
  x ^= x >> 32;
  return x;
}

// The first `n` (at most 8) bytes at `p` as the low bytes of a word, the rest zero. No byte loop:
// 4 to 8 bytes are two overlapping 4-byte loads, 1 to 3 bytes the first, middle and last byte.
inline std::uint64_t LoadWord(const char* p, std::size_t n) noexcept {
  std::uint32_t lo = 0;
  std::uint32_t hi = 0;
  if (n == 8) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, 8);
    return w;
  }
  if (n >= 4) {
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + n - 4, 4);
    return lo | static_cast<std::uint64_t>(hi) << (8 * (n - 4));
  }
  if (n == 0) return 0;
  auto byte = [&](std::size_t i) {
    return static_cast<std::uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  };
  return byte(0) | byte(n / 2) | byte(n - 1);
}

// Whether `n` bytes at `a` and `b` are equal; inline for the short texts labels usually are.
inline bool SameBytes(const char* a, const char* b, std::size_t n) noexcept {
  if (n <= 8) return LoadWord(a, n) == LoadWord(b, n);
  if (n <= 16) {
    return LoadWord(a, 8) == LoadWord(b, 8) && LoadWord(a + n - 8, 8) == LoadWord(b + n - 8, 8);
  }
  return std::memcmp(a, b, n) == 0;
}

// Hashes a byte string given in pieces, with one multiply-mix per 8-byte word. The result depends
// only on the bytes in order, not on where the pieces split them, so a series key can be hashed
// from its parts where they lie instead of after copying them together (reading freshly written
// bytes back as words would also stall on store forwarding).
class KeyHasher {
 public:
  void Add(std::string_view s) noexcept {
    const char* p = s.data();
    std::size_t n = s.size();
    length_ += n;
    for (; n >= 8; n -= 8, p += 8) Push(LoadWord(p, 8), 8);
    if (n > 0) Push(LoadWord(p, n), static_cast<unsigned>(n));
  }
  void Add(char c) noexcept {
    ++length_;
    Push(static_cast<unsigned char>(c), 1);
  }
  [[nodiscard]] std::uint64_t Finish() const noexcept {
    std::uint64_t h = h_;
    if (pending_bytes_ > 0) h = Step(h, pending_);
    return MixBits(h ^ (length_ * kOdd));
  }

 private:
  static constexpr std::uint64_t kOdd = 0x9E3779B97F4A7C15ULL;
  static std::uint64_t Step(std::uint64_t h, std::uint64_t word) noexcept {
    h = (h ^ word) * kOdd;
    return h ^ (h >> 31);
  }
  // Appends `bytes` (1 to 8) bytes held in the low bytes of `word` (the others zero).
  void Push(std::uint64_t word, unsigned bytes) noexcept {
    if (pending_bytes_ == 0) {
      if (bytes == 8) {
        h_ = Step(h_, word);
      } else {
        pending_ = word;
        pending_bytes_ = bytes;
      }
      return;
    }
    pending_ |= word << (8 * pending_bytes_);
    const unsigned total = pending_bytes_ + bytes;
    if (total < 8) {
      pending_bytes_ = total;
      return;
    }
    h_ = Step(h_, pending_);
    pending_bytes_ = total - 8;
    pending_ = pending_bytes_ == 0 ? 0 : word >> (8 * (8 - (total - bytes)));
  }

  std::uint64_t h_ = 0;
  std::uint64_t pending_ = 0;  // the bytes of an unfinished word, low first
  unsigned pending_bytes_ = 0;
  std::uint64_t length_ = 0;
};

inline std::uint64_t HashKey(std::string_view s) noexcept {
  KeyHasher h;
  h.Add(s);
  return h.Finish();
}

template <typename V>
class SeriesTable {
 public:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;

  SeriesTable() { slots_.assign(16, 0); }

  static std::uint64_t Hash(std::string_view key) noexcept { return HashKey(key); }

  [[nodiscard]] std::uint32_t Find(std::string_view key, std::uint64_t hash) const noexcept {
    return FindIf(hash, [&](std::uint32_t index) { return this->key(index) == key; });
  }

  // The entry with `hash` for which `equal(index)` holds (it may read key() and value()), or kNone.
  template <typename Equal>
  [[nodiscard]] std::uint32_t FindIf(std::uint64_t hash, Equal&& equal) const noexcept {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const std::uint32_t slot = slots_[i];
      if (slot == 0) return kNone;
      if (entries_[slot - 1].hash == hash && equal(slot - 1)) return slot - 1;
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
