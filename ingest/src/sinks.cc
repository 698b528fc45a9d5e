#include "telemetryd/ingest/sinks.h"

#include <array>
#include <charconv>

#include "telemetryd/wire/term.h"

namespace telemetryd::ingest {
namespace {

void AppendNumber(std::string& out, double value) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

constexpr std::string_view kTypeNames[] = {"c", "g", "ms", "h", "d", "s"};

}  // namespace

void CountingSink::OnEvent(const wire::FrameInfo& /*frame*/, const wire::Event& event) noexcept {
  events_.Add();
  measurements_.Add(event.measurements.size());
}

void CountingSink::OnStatsd(const StatsdSample& /*sample*/) noexcept { samples_.Add(); }

std::string FormatEvent(const wire::Event& event) {
  std::string out(event.name);
  for (const auto& m : event.measurements) {
    out += ' ';
    out += m.key;
    out += '=';
    if (m.value.is_float) {
      AppendNumber(out, m.value.float_value);
    } else {
      out += std::to_string(m.value.int_value);
    }
  }
  for (const auto& f : event.metadata) {
    out += ' ';
    out += f.key();
    out += '=';
    out += wire::ToText(wire::ToTerm(f.value));
  }
  if (event.has_time) out += " @" + std::to_string(event.system_time);
  return out;
}

std::string FormatSample(const StatsdSample& sample) {
  std::string out(sample.name);
  out += ':';
  if (sample.type == StatsdType::kSet) {
    out += sample.set_member;
  } else {
    if (sample.gauge_delta && sample.value >= 0) out += '+';
    AppendNumber(out, sample.value);
  }
  out += '|';
  out += kTypeNames[static_cast<std::size_t>(sample.type)];
  if (sample.sample_rate != 1.0) {
    out += "|@";
    AppendNumber(out, sample.sample_rate);
  }
  std::array<StatsdTag, kStatsdMaxTags> scratch;
  const auto tags = SplitStatsdTags(sample.tag_text, scratch);
  if (!tags.empty()) {
    out += "|#";
    for (std::size_t i = 0; i < tags.size(); ++i) {
      if (i != 0) out += ',';
      out += tags[i].key;
      if (!tags[i].value.empty()) {
        out += ':';
        out += tags[i].value;
      }
    }
  }
  return out;
}

void DebugSink::OnEvent(const wire::FrameInfo& /*frame*/, const wire::Event& event) noexcept {
  try {
    const std::string line = "event " + FormatEvent(event) + "\n";
    std::fwrite(line.data(), 1, line.size(), out_);
  } catch (...) {
  }
}

void DebugSink::OnStatsd(const StatsdSample& sample) noexcept {
  try {
    const std::string line = "statsd " + FormatSample(sample) + "\n";
    std::fwrite(line.data(), 1, line.size(), out_);
  } catch (...) {
  }
}

}  // namespace telemetryd::ingest
