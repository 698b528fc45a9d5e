#include <doctest/doctest.h>

#include <string>

#include "telemetryd/common/expected.h"

using telemetryd::Error;
using telemetryd::Expected;

TEST_CASE("Expected holds a value or an error") {
  Expected<int> good = 42;
  REQUIRE(good.has_value());
  CHECK(*good == 42);

  Expected<int> bad = Error{"x.bad", "it broke"};
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().code == "x.bad");
  CHECK(bad.error().with_prefix("file.yaml:3:1: ").message == "file.yaml:3:1: it broke");
}
