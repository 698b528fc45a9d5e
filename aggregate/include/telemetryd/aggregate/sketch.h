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
  void Merge(const QuantileSketch& other);
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
    void Add(std::int32_t index, std::uint64_t n);
    void Merge(const Store& other);
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
