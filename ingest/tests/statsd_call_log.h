// A StatsdVisitor that keeps every call it gets, each view as its place in the input and numbers
// as their bits: two parsers that make the same calls keep equal logs. For the test and the fuzz
// target that compare the fast path for common lines with the general parser.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <string_view>
#include <vector>

#include "telemetryd/ingest/statsd.h"

namespace telemetryd::ingest::testing {

class StatsdCallLog final : public StatsdVisitor {
 public:
  explicit StatsdCallLog(std::string_view input) noexcept : input_(input) {}
  void OnSample(const StatsdSample& s) noexcept override {
    calls.push_back({1, Place(s.name), s.name.size(), static_cast<std::uint64_t>(s.type),
                     std::bit_cast<std::uint64_t>(s.value), Place(s.set_member),
                     s.set_member.size(), s.gauge_delta ? 1U : 0U,
                     std::bit_cast<std::uint64_t>(s.sample_rate), Place(s.tag_text),
                     s.tag_text.size()});
  }
  void OnError(StatsdError error, std::string_view line) noexcept override {
    calls.push_back({2, static_cast<std::uint64_t>(error), Place(line), line.size()});
  }
  std::vector<std::array<std::uint64_t, 11>> calls;

 private:
  std::uint64_t Place(std::string_view view) const noexcept {
    return view.empty() ? 0 : static_cast<std::uint64_t>(view.data() - input_.data());
  }
  std::string_view input_;
};

}  // namespace telemetryd::ingest::testing
