// Private: deletion from an open-addressing table with linear probing, shared by the tables of
// aggregate/ (series, StatsD names, open spans).
#pragma once

#include <cstddef>
#include <span>

namespace telemetryd::aggregate::detail {

// Empties slot `hole` of a wrapping linear-probing table, then moves later members of its probe
// run back into the hole (backward shift), so that every lookup still finds them without
// tombstones. `empty(slot)` tells an empty slot (an empty one is Slot{}); `home(slot)` is the slot
// where a member's lookup starts.
template <typename Slot, typename Empty, typename Home>
void EraseFromProbeRun(std::span<Slot> slots, std::size_t hole, Empty&& empty,
                       Home&& home) noexcept {
  const std::size_t n = slots.size();
  auto next = [n](std::size_t i) { return i + 1 == n ? 0 : i + 1; };
  slots[hole] = Slot{};
  for (std::size_t j = next(hole); !empty(slots[j]); j = next(j)) {
    const std::size_t h = home(slots[j]);
    // The member at j stays when its home lies cyclically in (hole, j]: lookups reach it there.
    const bool stays = hole <= j ? (h > hole && h <= j) : (h > hole || h <= j);
    if (!stays) {
      slots[hole] = slots[j];
      slots[j] = Slot{};
      hole = j;
    }
  }
}

}  // namespace telemetryd::aggregate::detail
