#include "telemetryd/aggregate/sketch.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace telemetryd::aggregate {
namespace {
// Values closer to zero than this are counted as zero: keeps the index range bounded.
constexpr double kMinMagnitude = 1e-9;
// Bucket stores never span more indexes than this (about 1e-9 to 1e12 at 1% accuracy).
constexpr std::int32_t kMaxBuckets = 4096;
}  // namespace

QuantileSketch::QuantileSketch(double relative_accuracy)
    : accuracy_(relative_accuracy),
      gamma_((1 + relative_accuracy) / (1 - relative_accuracy)),
      log_gamma_(std::log(gamma_)) {}

std::int32_t QuantileSketch::Index(double magnitude) const {
  return static_cast<std::int32_t>(std::ceil(std::log(magnitude) / log_gamma_));
}

double QuantileSketch::Value(std::int32_t index) const {
  // The midpoint (in relative terms) of bucket (gamma^(i-1), gamma^i].
  return 2 * std::pow(gamma_, index) / (gamma_ + 1);
}

std::int32_t QuantileSketch::Store::Reach(std::int32_t index) {
  if (counts.empty()) {
    offset = index;
    counts.assign(1, 0);
  } else if (index < offset) {
    const auto grow = static_cast<std::size_t>(offset - index);
    if (counts.size() + grow > static_cast<std::size_t>(kMaxBuckets)) {
      return offset;  // collapse the lowest values into the lowest bucket kept
    }
    counts.insert(counts.begin(), grow, 0);
    offset = index;
  } else if (index >= offset + static_cast<std::int32_t>(counts.size())) {
    const auto needed = static_cast<std::size_t>(index - offset) + 1;
    if (needed > static_cast<std::size_t>(kMaxBuckets)) {
      counts.resize(static_cast<std::size_t>(kMaxBuckets), 0);
      return offset + kMaxBuckets - 1;  // collapse the highest values
    }
    counts.resize(needed, 0);
  }
  return index;
}

void QuantileSketch::Store::Add(std::int32_t index, std::uint64_t n) {
  counts[static_cast<std::size_t>(Reach(index) - offset)] += n;
}

void QuantileSketch::Store::Cover(const Store& other) {
  std::size_t lo = 0;
  std::size_t hi = other.counts.size();
  while (lo < hi && other.counts[lo] == 0) ++lo;
  while (hi > lo && other.counts[hi - 1] == 0) --hi;
  if (lo == hi) return;
  Reach(other.offset + static_cast<std::int32_t>(lo));
  Reach(other.offset + static_cast<std::int32_t>(hi - 1));
}

void QuantileSketch::Store::AddCovered(const Store& other) noexcept {
  if (counts.empty()) return;  // other has no values: Cover would have made room
  const std::int32_t top = offset + static_cast<std::int32_t>(counts.size()) - 1;
  for (std::size_t i = 0; i < other.counts.size(); ++i) {
    if (other.counts[i] == 0) continue;
    const std::int32_t index = std::clamp(other.offset + static_cast<std::int32_t>(i), offset, top);
    counts[static_cast<std::size_t>(index - offset)] += other.counts[i];
  }
}

void QuantileSketch::Add(double value, std::uint64_t count) {
  if (!std::isfinite(value) || count == 0) return;
  const double magnitude = std::fabs(value);
  if (magnitude < kMinMagnitude) {
    zeros_ += count;
  } else if (value > 0) {
    positive_.Add(Index(magnitude), count);
  } else {
    negative_.Add(Index(magnitude), count);
  }
  count_ += count;
}

void QuantileSketch::Cover(const QuantileSketch& other) {
  positive_.Cover(other.positive_);
  negative_.Cover(other.negative_);
}

void QuantileSketch::Merge(const QuantileSketch& other) {
  Cover(other);
  positive_.AddCovered(other.positive_);
  negative_.AddCovered(other.negative_);
  zeros_ += other.zeros_;
  count_ += other.count_;
}

void QuantileSketch::Clear() noexcept {
  std::fill(positive_.counts.begin(), positive_.counts.end(), 0);
  std::fill(negative_.counts.begin(), negative_.counts.end(), 0);
  zeros_ = 0;
  count_ = 0;
}

double QuantileSketch::Quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // Rank of the wanted value, 0-based, as in "the value below which q of the values fall".
  const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_ - 1));
  std::uint64_t seen = 0;
  // Negative values from the most negative (highest index) up.
  for (std::size_t i = negative_.counts.size(); i-- > 0;) {
    seen += negative_.counts[i];
    if (seen > rank) return -Value(negative_.offset + static_cast<std::int32_t>(i));
  }
  seen += zeros_;
  if (seen > rank) return 0;
  for (std::size_t i = 0; i < positive_.counts.size(); ++i) {
    seen += positive_.counts[i];
    if (seen > rank) return Value(positive_.offset + static_cast<std::int32_t>(i));
  }
  return positive_.counts.empty()
             ? 0
             : Value(positive_.offset + static_cast<std::int32_t>(positive_.counts.size()) - 1);
}

std::size_t QuantileSketch::memory_bytes() const noexcept {
  return (positive_.counts.capacity() + negative_.counts.capacity()) * sizeof(std::uint64_t);
}

}  // namespace telemetryd::aggregate
