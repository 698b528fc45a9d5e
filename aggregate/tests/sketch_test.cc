#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "telemetryd/aggregate/sketch.h"

using telemetryd::aggregate::QuantileSketch;

namespace {
// The exact value at the same rank definition the sketch uses.
double Exact(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}
}  // namespace

TEST_CASE("quantiles are within the relative accuracy of the exact ones") {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(0.0, 2.0);
  std::vector<double> values;
  QuantileSketch sketch(0.01);
  for (int i = 0; i < 100'000; ++i) {
    values.push_back(dist(rng));
    sketch.Add(values.back());
  }
  for (const double q : {0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    const double exact = Exact(values, q);
    CAPTURE(q);
    CHECK(std::fabs(sketch.Quantile(q) - exact) <= 0.01 * exact * (1 + 1e-9));
  }
  CHECK(sketch.count() == 100'000);
}

TEST_CASE("merging two sketches equals one sketch of all values") {
  QuantileSketch a;
  QuantileSketch b;
  QuantileSketch all;
  for (int i = 1; i <= 1000; ++i) {
    (i % 2 == 0 ? a : b).Add(i * 0.5);
    all.Add(i * 0.5);
  }
  a.Merge(b);
  for (const double q : {0.25, 0.5, 0.75, 0.99}) CHECK(a.Quantile(q) == all.Quantile(q));
}

TEST_CASE("negative values and zeros are ordered correctly") {
  QuantileSketch s;
  for (const double v : {-10.0, -1.0, 0.0, 0.0, 1.0, 10.0, 100.0}) s.Add(v);
  CHECK(s.Quantile(0) == doctest::Approx(-10).epsilon(0.01));
  CHECK(s.Quantile(0.5) == 0);
  CHECK(s.Quantile(1) == doctest::Approx(100).epsilon(0.01));
  s.Clear();
  CHECK(s.empty());
  CHECK(s.Quantile(0.5) == 0);
}
