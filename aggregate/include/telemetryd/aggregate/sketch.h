// QuantileSketch: a mergeable quantile sketch with relative error (the DDSketch construction).
// Every value x is counted in the bucket ceil(log_gamma(|x|)) with gamma = (1 + a) / (1 - a), so
// any quantile it returns is within a relative error `a` (default 1%) of a value whose rank is the
// requested one. Sketches with the same accuracy merge exactly by adding bucket counts.
// Thread-safety: a value type; not for concurrent use.
#pragma once

#include <cstdint>
#include <vector>

namespace telemetryd::aggregate {

class QuantileSketch {
 public:
  explicit QuantileSketch(double relative_accuracy = 0.01);

  void Add(double value, std::uint64_t count = 1);
  // Adds other's values. Allocates only to widen the bucket range, before anything is added: when
  // that throws, the values this sketch holds are unchanged.
  void Merge(const QuantileSketch& other);
  // Widens the bucket range so that Merge(other) allocates nothing: for merging one sketch into
  // several, all or none.
  void Cover(const QuantileSketch& other);
  void Clear() noexcept;

  // q in [0, 1]; 0 when empty.
  [[nodiscard]] double Quantile(double q) const;
  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] bool empty() const noexcept { return count_ == 0; }
  [[nodiscard]] double relative_accuracy() const noexcept { return accuracy_; }
  // Heap bytes held by the bucket stores.
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

 private:
  // Dense counts for bucket indexes [offset, offset + counts.size()).
  struct Store {
    std::int32_t offset = 0;
    std::vector<std::uint64_t> counts;
    // Widens the range to take `index` (within kMaxBuckets); returns where its values go.
    std::int32_t Reach(std::int32_t index);
    void Add(std::int32_t index, std::uint64_t n);
    // Widens the range to take other's counts.
    void Cover(const Store& other);
    // Adds other's counts, each within the range (values beyond it go to its edge buckets).
    void AddCovered(const Store& other) noexcept;
  };

  [[nodiscard]] std::int32_t Index(double magnitude) const;
  [[nodiscard]] double Value(std::int32_t index) const;

  double accuracy_;
  double gamma_;
  double log_gamma_;
  Store positive_;
  Store negative_;
  std::uint64_t zeros_ = 0;
  std::uint64_t count_ = 0;
};

}  // namespace telemetryd::aggregate
