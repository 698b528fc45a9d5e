#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <new>
#include <string>

#include "support/failing_allocations.h"
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

namespace {

// What `write` sends to stderr, read back from a temporary file standing in for it.
template <typename Write>
std::string CaptureStderr(Write&& write) {
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  REQUIRE(::dup2(::fileno(file), STDERR_FILENO) >= 0);
  write();
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::string text;
  std::rewind(file);
  for (int c = std::fgetc(file); c != EOF; c = std::fgetc(file)) text += static_cast<char>(c);
  std::fclose(file);
  return text;
}

}  // namespace

TEST_CASE("a rate-limited site makes its message only when it writes, else writes its fallback") {
  log::RateLimitedLog site(log::Level::kWarn, 60'000);
  int made = 0;
  auto make = [&] {
    ++made;
    return std::string("listener: made ") + std::to_string(made);
  };
  const std::string first = CaptureStderr([&] {
    site(make, "fallback");
    site(make, "fallback");  // within the interval: neither made nor written
  });
  CHECK(made == 1);
  CHECK(first.find("listener: made 1") != std::string::npos);
  CHECK(first.find("fallback") == std::string::npos);

  log::RateLimitedLog other(log::Level::kWarn, 60'000);
  const std::string second = CaptureStderr(
      [&] { other([]() -> std::string { throw std::bad_alloc(); }, "no memory for the message"); });
  CHECK(second.find("no memory for the message") != std::string::npos);
}

TEST_CASE("a line is written whole when no memory is left, a rate-limited one too") {
  log::RateLimitedLog site(log::Level::kError, 60'000);
  const std::string text = CaptureStderr([&] {
    telemetryd::testing::allocations_left = 0;  // every allocation fails
    log::Write(log::Level::kWarn, "flush: out of memory");
    site("scrape: out of memory");
    telemetryd::testing::allocations_left = -1;
  });
  CHECK(text == "<4>warn flush: out of memory\n<3>error scrape: out of memory\n");
}
