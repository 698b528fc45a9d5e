#include <doctest/doctest.h>

#include "telemetryd/common/log.h"

using namespace telemetryd;

TEST_CASE("RateLimitedLog lets one line through per interval and counts the rest") {
  log::SetLevel(log::Level::kDebug);
  log::RateLimitedLog site(log::Level::kDebug, 60'000);
  const auto before = log::SuppressedTotal();
  CHECK(site.ShouldWrite());
  CHECK_FALSE(site.ShouldWrite());
  CHECK_FALSE(site.ShouldWrite());
  CHECK(log::SuppressedTotal() - before == 2);
  log::SetLevel(log::Level::kInfo);
}

TEST_CASE("ParseLevel accepts the four level names only") {
  log::Level level{};
  CHECK(log::ParseLevel("warn", level));
  CHECK(level == log::Level::kWarn);
  CHECK_FALSE(log::ParseLevel("verbose", level));
}
