// Private: a compact hash table from series key to value, used by shards and by the store.
//
// Entries live in chunks of kChunk (stable indexes, reused through a free list); keys live in an
// arena of blocks, each key after its length (one byte below 128, else a varint); the probe table
// holds 32-bit slots. Per entry this costs the value plus 8 bytes (32 bits of the hash and the
// key's position), the key and its length byte, and about 8 bytes of probe slots, instead of a
// node allocation per series.
//
// A slot holds the entry's index + 1 in its low bits (as many as the slot count has: entries never
// outnumber half the slots) and, above them, the bits of the entry's hash that its position in
// the table does not already tell. A lookup reads an entry only when those bits agree: in a large
// table every entry read is a cache miss, and a probe past other series' slots costs none.
//
// Chunks and blocks instead of one growing vector and string: a large table grows by a chunk at a
// time, so it neither copies everything it holds on the thread that records nor keeps up to twice
// the memory it needs. The first chunk and the first blocks start small, so that the many small
// tables (one per metric) stay small.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include "probe_run.h"
#include "telemetryd/common/bytes.h"

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
// Always inlined: a call would cost more than the loads, and the callers' `n` is often known.
[[gnu::always_inline]] inline std::uint64_t LoadWord(const char* p, std::size_t n) noexcept {
  if (n == 8) return Load<std::uint64_t>(p);
  if (n >= 4) {
    return Load<std::uint32_t>(p) | static_cast<std::uint64_t>(Load<std::uint32_t>(p + n - 4))
                                        << (8 * (n - 4));
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
  // Add(c) then Add(s). With no bytes pending (a key's first label) and 7 bytes or more in `s`,
  // the first word is put together directly from `c` and the first 7 bytes of `s`.
  void Add(char c, std::string_view s) noexcept {
    if (pending_bytes_ != 0 || s.size() < 7) {
      Add(c);
      Add(s);
      return;
    }
    length_ += 8;
    h_ = Step(h_, static_cast<unsigned char>(c) | LoadWord(s.data(), 7) << 8);
    Add(s.substr(7));
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
  static constexpr unsigned kChunkBits = 12;  // 4,096 entries per chunk
  static constexpr std::uint32_t kChunk = 1U << kChunkBits;
  static constexpr unsigned kBlockBits = 20;  // arena blocks of up to 1 MiB, at most 4,095
  static constexpr std::size_t kFirstBlock = 16;

 public:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;
  // Keys longer than this are refused (Insert throws std::length_error).
  static constexpr std::size_t kMaxKey = (std::size_t{1} << kBlockBits) - 8;

  SeriesTable() { Rehash(16); }

  static std::uint64_t Hash(std::string_view key) noexcept { return HashKey(key); }

  [[nodiscard]] std::uint32_t Find(std::string_view key, std::uint64_t hash) const noexcept {
    return FindIf(hash, [&](std::uint32_t index) { return this->key(index) == key; });
  }

  // The entry with `hash` for which `equal(index)` holds (it may read key() and value()), or kNone.
  template <typename Equal>
  [[nodiscard]] std::uint32_t FindIf(std::uint64_t hash, Equal&& equal) const noexcept {
    const std::size_t mask = slots_.size() - 1;
    const std::uint32_t index_mask = IndexMask();
    const auto hash32 = static_cast<std::uint32_t>(hash);
    const std::uint32_t tag = Tag(hash32);
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const std::uint32_t slot = slots_[i];
      if (slot == 0) return kNone;
      if ((slot & ~index_mask) != tag) continue;
      const std::uint32_t index = (slot & index_mask) - 1;
      if (At(index).hash == hash32 && equal(index)) return index;
    }
  }

  // Starts loading the probe slot a FindIf of `hash` reads first.
  void PrefetchSlot(std::uint64_t hash) const noexcept {
    __builtin_prefetch(slots_.data() + (hash & (slots_.size() - 1)));
  }
  // Starts loading the entry in that slot (best after PrefetchSlot had time to bring it in).
  void PrefetchEntry(std::uint64_t hash) const noexcept {
    const std::uint32_t index = FirstCandidate(hash);
    if (index != kNone) PrefetchValue(index);
  }
  // Starts loading the key of the entry in that slot (best after PrefetchEntry had time).
  void PrefetchKey(std::uint64_t hash) const noexcept {
    const std::uint32_t index = FirstCandidate(hash);
    if (index != kNone) __builtin_prefetch(KeyStart(At(index).key_position));
  }
  // Starts loading the entry (and value) at `index`.
  void PrefetchValue(std::uint32_t index) const noexcept { __builtin_prefetch(&At(index)); }

  // `key` must not be in the table. May move values (growth of the first chunk): re-read after
  // inserting.
  std::uint32_t Insert(std::string_view key, std::uint64_t hash) {
    if (key.size() > kMaxKey) throw std::length_error("series key too long");
    if ((live_ + 1) * 2 > slots_.size()) Rehash(slots_.size() * 2);
    const std::size_t arena_before = arena_bytes_;
    const std::uint32_t position = AppendKey(blocks_, arena_bytes_, key);
    std::uint32_t index;
    if (free_ != kNone) {
      index = free_;
      free_ = At(index).hash;
    } else {
      try {
        index = AddEntry();
      } catch (...) {  // the key just stored is garbage, for the compaction to take back
        garbage_ += arena_bytes_ - arena_before;
        throw;
      }
    }
    Entry& e = At(index);
    e.hash = static_cast<std::uint32_t>(hash);
    e.key_position = position;
    e.value = V{};
    Place(index);
    ++live_;
    return index;
  }

  // Allocates nothing (the arena's compaction, which may, is given up when it finds no memory).
  void Erase(std::uint32_t index) noexcept {
    Entry& e = At(index);
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = e.hash & mask;
    const std::uint32_t index_mask = IndexMask();
    while ((slots_[i] & index_mask) != index + 1) i = (i + 1) & mask;
    EraseFromProbeRun(
        std::span<std::uint32_t>(slots_), i, [](std::uint32_t slot) { return slot == 0; },
        [&](std::uint32_t slot) { return At((slot & index_mask) - 1).hash & mask; });
    garbage_ += Stored(e);
    e.key_position = kDead;
    e.value = V{};
    e.hash = free_;
    free_ = index;
    --live_;
    if (garbage_ > (1U << 20) && garbage_ * 2 > arena_bytes_ && garbage_ >= compact_after_) {
      try {
        CompactArena();
        compact_after_ = 0;
      } catch (const std::exception&) {
        // No memory for the new blocks: tried again once the garbage has grown by a quarter, not
        // at every erase.
        compact_after_ = garbage_ + garbage_ / 4;
      }
    }
  }

  [[nodiscard]] bool live(std::uint32_t index) const noexcept {
    return At(index).key_position != kDead;
  }
  [[nodiscard]] std::string_view key(std::uint32_t index) const noexcept { return Key(At(index)); }
  V& value(std::uint32_t index) noexcept { return At(index).value; }
  const V& value(std::uint32_t index) const noexcept { return At(index).value; }
  // Iterate indexes [0, end()) and skip those not live().
  [[nodiscard]] std::uint32_t end() const noexcept { return entries_; }
  [[nodiscard]] std::size_t size() const noexcept { return live_; }
  // The bytes of the key arena, and those of them no live key uses (a compaction takes them back).
  [[nodiscard]] std::size_t arena_bytes() const noexcept { return arena_bytes_; }
  [[nodiscard]] std::size_t garbage_bytes() const noexcept { return garbage_; }

 private:
  static constexpr std::uint32_t kDead = 0xFFFFFFFFu;

  struct Entry {
    // The low 32 bits: enough for any table this size. A dead entry's: the next free index.
    std::uint32_t hash = 0;
    std::uint32_t key_position = kDead;  // block << kBlockBits | offset in the block
    V value{};
  };
  struct Block {
    std::unique_ptr<char[]> data;
    std::size_t used = 0;
    std::size_t capacity = 0;
  };

  const Entry& At(std::uint32_t index) const noexcept {
    return index < kChunk ? first_[index] : more_[(index >> kChunkBits) - 1][index & (kChunk - 1)];
  }
  Entry& At(std::uint32_t index) noexcept {
    return index < kChunk ? first_[index] : more_[(index >> kChunkBits) - 1][index & (kChunk - 1)];
  }

  // A new entry at the end: the first chunk doubles up to kChunk, later ones are whole.
  std::uint32_t AddEntry() {
    const std::uint32_t index = entries_;
    if (index < kChunk) {
      if (index == first_.size()) {
        first_.reserve(std::min<std::size_t>(kChunk, std::max<std::size_t>(1, first_.size() * 2)));
        first_.resize(first_.capacity());
      }
    } else if ((index & (kChunk - 1)) == 0) {
      more_.push_back(std::make_unique<Entry[]>(kChunk));
    }
    ++entries_;
    return index;
  }

  // Stores the key after its length in `blocks`, which hold `bytes`, and returns its position.
  static std::uint32_t AppendKey(std::vector<Block>& blocks, std::size_t& bytes,
                                 std::string_view key) {
    char length[8];
    std::size_t n = 0;
    for (std::size_t v = key.size();; v >>= 7) {
      length[n++] = static_cast<char>((v & 0x7F) | (v >= 0x80 ? 0x80 : 0));
      if (v < 0x80) break;
    }
    const std::size_t need = n + key.size();
    if (blocks.empty() || blocks.back().capacity - blocks.back().used < need) {
      if (blocks.size() >= (std::size_t{1} << (32 - kBlockBits)) - 1) {
        throw std::length_error("series key arena full");
      }
      const std::size_t previous = blocks.empty() ? kFirstBlock / 2 : blocks.back().capacity;
      Block block;
      block.capacity = std::max(need, std::min(previous * 2, std::size_t{1} << kBlockBits));
      block.data = std::make_unique_for_overwrite<char[]>(block.capacity);
      blocks.push_back(std::move(block));
    }
    Block& block = blocks.back();
    const auto position =
        static_cast<std::uint32_t>(((blocks.size() - 1) << kBlockBits) | block.used);
    std::memcpy(block.data.get() + block.used, length, n);
    if (!key.empty()) std::memcpy(block.data.get() + block.used + n, key.data(), key.size());
    block.used += need;
    bytes += need;
    return position;
  }

  // Where the key at `position` starts in `blocks`, its length first.
  static const char* KeyStart(const std::vector<Block>& blocks, std::uint32_t position) noexcept {
    return blocks[position >> kBlockBits].data.get() + (position & ((1U << kBlockBits) - 1));
  }
  [[nodiscard]] const char* KeyStart(std::uint32_t position) const noexcept {
    return KeyStart(blocks_, position);
  }
  // The key stored at `p`, after its length.
  static std::string_view DecodeKey(const char* p) noexcept {
    if (static_cast<unsigned char>(*p) < 0x80) {
      return std::string_view(p + 1, static_cast<unsigned char>(*p));
    }
    std::size_t n = 0;
    for (unsigned shift = 0;; shift += 7) {
      const auto byte = static_cast<unsigned char>(*p++);
      n |= static_cast<std::size_t>(byte & 0x7F) << shift;
      if (byte < 0x80) break;
    }
    return std::string_view(p, n);
  }
  [[nodiscard]] std::string_view Key(const Entry& e) const noexcept {
    return DecodeKey(KeyStart(e.key_position));
  }
  // Arena bytes an entry's key takes, its length included.
  [[nodiscard]] std::size_t Stored(const Entry& e) const noexcept {
    const std::string_view key = Key(e);
    return static_cast<std::size_t>(key.data() + key.size() - KeyStart(e.key_position));
  }

  // The entry in the slot where a lookup of `hash` starts, if its hash bits there agree, else
  // kNone.
  [[nodiscard]] std::uint32_t FirstCandidate(std::uint64_t hash) const noexcept {
    const std::uint32_t slot = slots_[hash & (slots_.size() - 1)];
    if (slot == 0 || (slot & ~IndexMask()) != Tag(static_cast<std::uint32_t>(hash))) return kNone;
    return (slot & IndexMask()) - 1;
  }

  // The index + 1 part of a slot: as many bits as the slot count has (2^32 slots at most), the
  // same as the mask of a probe position.
  [[nodiscard]] std::uint32_t IndexMask() const noexcept {
    return static_cast<std::uint32_t>(slots_.size() - 1);
  }
  // The bits of a slot above the index: those of `hash32` that a probe position does not take.
  [[nodiscard]] std::uint32_t Tag(std::uint32_t hash32) const noexcept {
    return hash32 & ~IndexMask();
  }

  void Place(std::uint32_t index) noexcept {
    const std::size_t mask = slots_.size() - 1;
    const std::uint32_t hash32 = At(index).hash;
    std::size_t i = hash32 & mask;
    while (slots_[i] != 0) i = (i + 1) & mask;
    slots_[i] = Tag(hash32) | (index + 1);
  }

  // `size` slots, a power of two: entries (at most half as many) get indexes + 1 below it. When
  // the new slots find no memory, the table stays as it was.
  void Rehash(std::size_t size) {
    if (size > (std::size_t{1} << 32)) throw std::length_error("series table full");
    std::vector<std::uint32_t> slots(size, 0);
    slots_.swap(slots);
    for (std::uint32_t i = 0; i < entries_; ++i) {
      if (live(i)) Place(i);
    }
  }

  // Copies the live keys into new blocks. All or nothing: the entries and blocks change only once
  // every key has its new place.
  void CompactArena() {
    std::vector<Block> blocks;
    std::size_t bytes = 0;
    std::vector<std::uint32_t> positions(entries_, kDead);
    for (std::uint32_t i = 0; i < entries_; ++i) {
      const Entry& e = At(i);
      if (e.key_position != kDead) positions[i] = AppendKey(blocks, bytes, Key(e));
    }
    for (std::uint32_t i = 0; i < entries_; ++i) At(i).key_position = positions[i];
    blocks_.swap(blocks);
    arena_bytes_ = bytes;
    garbage_ = 0;
  }

  std::vector<Entry> first_;                    // entries [0, kChunk)
  std::vector<std::unique_ptr<Entry[]>> more_;  // then kChunk at a time
  std::uint32_t entries_ = 0;                   // entries handed out, live or free
  std::uint32_t free_ = kNone;                  // the last erased entry, first of the free list
  std::vector<std::uint32_t> slots_;            // the hash's tag | entry index + 1; 0 is empty
  std::vector<Block> blocks_;
  std::size_t live_ = 0;
  std::size_t arena_bytes_ = 0;
  std::size_t garbage_ = 0;
  std::size_t compact_after_ = 0;  // garbage at which a compaction that failed is tried again
};

}  // namespace telemetryd::aggregate::detail
