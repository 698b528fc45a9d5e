// libFuzzer target for StatsdLineParser. The visitor reads every byte of every view it is given,
// so ASan reports any view that points outside the input, and it traps on results the header
// promises cannot happen. It also traps when the parser's fast path for common lines makes other
// calls than the general parser alone.
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "../tests/statsd_call_log.h"
#include "telemetryd/ingest/statsd.h"

namespace {

using telemetryd::ingest::kStatsdErrorCount;
using telemetryd::ingest::kStatsdMaxLineBytes;
using telemetryd::ingest::kStatsdMaxNameBytes;
using telemetryd::ingest::kStatsdMaxTags;
using telemetryd::ingest::SplitStatsdTags;
using telemetryd::ingest::StatsdError;
using telemetryd::ingest::StatsdErrorName;
using telemetryd::ingest::StatsdLineParser;
using telemetryd::ingest::StatsdSample;
using telemetryd::ingest::StatsdTag;
using telemetryd::ingest::StatsdType;
using telemetryd::ingest::StatsdVisitor;

class TouchingVisitor final : public StatsdVisitor {
 public:
  explicit TouchingVisitor(std::string_view input) noexcept : input_(input) {}

  void OnSample(const StatsdSample& sample) noexcept override {
    ++samples_;
    Check(!sample.name.empty() && sample.name.size() <= kStatsdMaxNameBytes);
    Touch(sample.name);
    Check(static_cast<std::uint8_t>(sample.type) <= static_cast<std::uint8_t>(StatsdType::kSet));
    Check(sample.sample_rate > 0.0 && sample.sample_rate <= 1.0);
    if (sample.type == StatsdType::kSet) {
      Check(!sample.set_member.empty());
      Touch(sample.set_member);
    } else {
      Check(std::isfinite(sample.value));
      Check(sample.set_member.empty());
    }
    Check(!sample.gauge_delta || sample.type == StatsdType::kGauge);
    // The checked tag text splits into tags with non-empty keys.
    Touch(sample.tag_text);
    std::array<StatsdTag, kStatsdMaxTags> scratch;
    for (const StatsdTag& tag : SplitStatsdTags(sample.tag_text, scratch)) {
      Check(!tag.key.empty());
      Touch(tag.key);
      Touch(tag.value);
    }
    sink_ = sink_ + (sample.value > 0.0 ? 1U : 0U);
  }

  void OnError(StatsdError error, std::string_view line) noexcept override {
    Check(static_cast<std::size_t>(error) < kStatsdErrorCount);
    Check(StatsdErrorName(error) != "unknown");
    Check(!line.empty());
    Check(error == StatsdError::kLineTooLong || line.size() <= kStatsdMaxLineBytes);
    Touch(line);
  }

  std::size_t samples() const noexcept { return samples_; }

 private:
  static void Check(bool ok) noexcept {
    if (!ok) __builtin_trap();
  }

  // Reads every byte, and checks the view lies inside the input: an empty view may point anywhere.
  void Touch(std::string_view text) noexcept {
    if (text.empty()) return;
    Check(text.data() >= input_.data() &&
          text.data() + text.size() <= input_.data() + input_.size());
    std::size_t sum = 0;
    for (const char ch : text) sum += static_cast<unsigned char>(ch);
    sink_ = sink_ + sum;
  }

  std::string_view input_;
  std::size_t samples_ = 0;
  // Keeps the reads from being optimised away.
  volatile std::size_t sink_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  StatsdLineParser parser;
  TouchingVisitor visitor(input);
  const std::size_t delivered = parser.Parse(input, visitor);
  if (delivered != visitor.samples()) __builtin_trap();
  StatsdLineParser general(kStatsdMaxLineBytes, false);
  telemetryd::ingest::testing::StatsdCallLog fast_calls(input);
  telemetryd::ingest::testing::StatsdCallLog general_calls(input);
  if (parser.Parse(input, fast_calls) != general.Parse(input, general_calls) ||
      fast_calls.calls != general_calls.calls) {
    __builtin_trap();
  }
  return 0;
}
