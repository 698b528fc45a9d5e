#include "telemetryd/exporters/prometheus_metrics.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <map>
#include <new>

#include "telemetryd/common/log.h"
#include "telemetryd/common/radix_sort.h"
#include "telemetryd/wire/format.h"

namespace telemetryd::exporters {
namespace {

using aggregate::MetricType;
using aggregate::Unit;

constexpr int kScrapeNice = 10;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// `room`: the bytes the caller will add (a leading '_' is one), so that the name takes one
// allocation, or none when it fits the string's own buffer.
std::string Sanitize(std::string_view text, bool allow_colon, std::size_t room) {
  std::string out;
  out.reserve(text.size() + room);
  out.resize(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || (allow_colon && c == ':');
    out[i] = ok ? c : '_';
  }
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out.insert(out.begin(), '_');
  return out;
}

// Drops a unit the name already spells in a short form, so "duration_us" becomes
// "duration_seconds" rather than "duration_us_seconds".
void StripUnitSuffix(std::string& name, std::initializer_list<std::string_view> suffixes) {
  for (const auto suffix : suffixes) {
    if (EndsWith(name, suffix)) {
      name.resize(name.size() - suffix.size());
      return;
    }
  }
}

}  // namespace

std::string LabelName(std::string_view text) {
  std::string out = Sanitize(text, false, 1);
  // Names starting with "__" are reserved for Prometheus itself.
  while (out.size() > 1 && out[0] == '_' && out[1] == '_') out.erase(0, 1);
  return out;
}

std::string ExposedLabelName(std::string_view text) {
  std::string out = LabelName(text);
  // The exported_ prefix, as Prometheus renames a scraped label that clashes with its own.
  // Prometheus lints "le" and "quantile" on every metric type, not only where they clash.
  if (out == "le" || out == "quantile") out.insert(0, "exported_");
  return out;
}

std::string LabelValue(std::string_view text) {
  if (wire::IsValidUtf8(text)) return std::string(text);
  std::string out;
  for (std::size_t i = 0; i < text.size();) {
    // Copy the longest valid prefix one code point at a time; replace a bad byte with U+FFFD.
    std::size_t len = 1;
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0xF0) {
      len = 4;
    } else if (c >= 0xE0) {
      len = 3;
    } else if (c >= 0xC0) {
      len = 2;
    }
    if (i + len <= text.size() && wire::IsValidUtf8(text.substr(i, len))) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string HelpText(std::string text) {
  if (!wire::IsValidUtf8(text)) text = LabelValue(text);
  if (text.find('\\') == std::string::npos && text.find('\n') == std::string::npos) return text;
  std::string out;
  out.reserve(text.size() + 8);
  for (const char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

PrometheusName NameFor(const aggregate::MetricInfo& metric) {
  PrometheusName p;
  // Room for a leading '_' and the suffixes appended below ("_seconds_total" at most).
  p.name = Sanitize(metric.name, true, 16);
  switch (metric.unit) {
    case Unit::kSecond:
    case Unit::kMillisecond:
    case Unit::kMicrosecond:
    case Unit::kNanosecond:
    case Unit::kNative:
      p.scale = metric.unit == Unit::kMillisecond   ? 1e-3
                : metric.unit == Unit::kMicrosecond ? 1e-6
                : metric.unit == Unit::kNanosecond  ? 1e-9
                                                    : 1;
      StripUnitSuffix(p.name, {"_seconds", "_milliseconds", "_microseconds", "_nanoseconds", "_ms",
                               "_us", "_ns", "_s"});
      p.name += "_seconds";
      break;
    case Unit::kByte:
    case Unit::kKilobyte:
    case Unit::kMegabyte:
      p.scale = metric.unit == Unit::kKilobyte   ? 1024
                : metric.unit == Unit::kMegabyte ? 1048576
                                                 : 1;
      StripUnitSuffix(p.name, {"_bytes", "_kilobytes", "_megabytes", "_kb", "_mb"});
      p.name += "_bytes";
      break;
    case Unit::kNone:
      break;
  }
  switch (metric.type) {
    case MetricType::kCounter:
      p.type = prometheus::MetricType::Counter;
      StripUnitSuffix(p.name, {"_total"});
      p.name += "_total";
      break;
    case MetricType::kSum:
    case MetricType::kLastValue:
      p.type = prometheus::MetricType::Gauge;  // a sum of measurements may go down
      break;
    case MetricType::kDistribution:
      p.type = prometheus::MetricType::Histogram;
      break;
    case MetricType::kSummary:
      p.type = prometheus::MetricType::Summary;
      break;
  }
  return p;
}

Status CheckNames(const std::vector<aggregate::MetricInfo>& metrics) {
  std::map<std::string, std::string> seen;
  std::string errors;
  for (const auto& m : metrics) {
    const PrometheusName p = NameFor(m);
    // A histogram or summary also owns name_sum, name_count and name_bucket.
    std::vector<std::string> owned = {p.name};
    if (p.type == prometheus::MetricType::Histogram || p.type == prometheus::MetricType::Summary) {
      owned.push_back(p.name + "_sum");
      owned.push_back(p.name + "_count");
      if (p.type == prometheus::MetricType::Histogram) owned.push_back(p.name + "_bucket");
    }
    for (const auto& name : owned) {
      const auto [it, inserted] = seen.emplace(name, m.name);
      if (!inserted && it->second != m.name) {
        errors += (errors.empty() ? "" : "\n") + std::string("metrics ") + it->second + " and " +
                  m.name + " would both be exposed to Prometheus as " + name;
      }
    }
  }
  if (!errors.empty()) return Error{"prometheus.name_clash", errors};
  return Ok{};
}

FamilyBuilder::FamilyBuilder(std::vector<prometheus::MetricFamily>& out) : out_(out) {}

FamilyBuilder::~FamilyBuilder() = default;

void FamilyBuilder::Start(std::size_t metrics) {
  // A million StatsD names are a million families: no regrowth on the way.
  out_.reserve(out_.size() + metrics);
  names_.reserve(names_.size() + metrics);
}

void FamilyBuilder::Metric(const aggregate::MetricInfo& info, std::size_t series) {
  CloseFamily();
  if (series == 0) return;
  PrometheusName p = NameFor(info);
  const std::size_t hash = std::hash<std::string>{}(p.name);
  prometheus::MetricFamily& family = out_.emplace_back();
  family.name = std::move(p.name);
  if (!info.description.empty()) {
    family.help = HelpText(info.description);
  } else if (info.system == "statsd") {
    std::string help;
    help.reserve(info.name.size() + 16);
    help.append("StatsD metric ").append(info.name).push_back('.');
    family.help = HelpText(std::move(help));
  } else {
    family.help = HelpText(info.name);
  }
  family.type = p.type;
  family.metric.reserve(series);
  names_.push_back(static_cast<std::uint64_t>(hash >> 32) << 32 | (out_.size() - 1));
  info_ = &info;
  name_ = std::move(p);
  label_names_.clear();
  expected_ = series;
  may_repeat_ = false;
  labels_before_ = label_clashes_;
  series_before_ = series_clashes_;
  family_ = &family;
}

void FamilyBuilder::CloseFamily() {
  if (family_ == nullptr) return;
  if (may_repeat_) DropRepeatedSeries();  // fewer series than announced
  if (label_clashes_ != labels_before_ || series_clashes_ != series_before_) {
    family_clashes_.push_back({static_cast<std::uint32_t>(family_ - out_.data()),
                               label_clashes_ - labels_before_, series_clashes_ - series_before_});
  }
  family_ = nullptr;
}

void FamilyBuilder::Finish() {
  CloseFamily();
  // Sorted by the names' hashes, families of one name are neighbours, the first made first: a
  // million names cost a radix sort and a pass, and no name is read unless two hashes agree.
  SortByHighHalf(names_);
  auto family_of = [](std::uint64_t entry) { return static_cast<std::uint32_t>(entry); };
  std::vector<std::uint32_t> dropped;
  for (std::size_t a = 0; a < names_.size();) {
    const std::size_t b = EndOfHighRun(names_, a);
    for (std::size_t k = a + 1; k < b; ++k) {
      const std::string& name = out_[family_of(names_[k])].name;
      for (std::size_t j = a; j < k; ++j) {
        if (out_[family_of(names_[j])].name == name) {
          dropped.push_back(family_of(names_[k]));
          break;
        }
      }
    }
    a = b;
  }
  // Leave out the later families of each name, with the clashes counted within them. (A family
  // kept now is never left out later: any other family of its name comes after it.)
  std::sort(dropped.begin(), dropped.end());
  auto is_dropped = [&](std::uint32_t family) {
    return std::binary_search(dropped.begin(), dropped.end(), family);
  };
  for (const auto& c : family_clashes_) {
    if (!is_dropped(c.family)) continue;
    label_clashes_ -= c.labels;
    series_clashes_ -= c.series;
  }
  family_clashes_.clear();
  if (dropped.empty()) return;
  clashes_ += dropped.size();
  // A family's index once the dropped ones before it are gone.
  auto moved = [&](std::uint32_t family) {
    return family - static_cast<std::uint32_t>(
                        std::lower_bound(dropped.begin(), dropped.end(), family) - dropped.begin());
  };
  std::erase_if(names_, [&](std::uint64_t entry) { return is_dropped(family_of(entry)); });
  for (auto& entry : names_) entry = (entry >> 32) << 32 | moved(family_of(entry));
  std::size_t kept = dropped.front();
  for (std::size_t i = dropped.front(); i < out_.size(); ++i) {
    if (is_dropped(static_cast<std::uint32_t>(i))) continue;
    out_[kept++] = std::move(out_[i]);
  }
  out_.erase(out_.begin() + static_cast<std::ptrdiff_t>(kept), out_.end());
}

void FamilyBuilder::Series(std::span<const aggregate::LabelRef> labels,
                           const aggregate::SeriesPoint& s) {
  if (family_ == nullptr) return;
  prometheus::ClientMetric& cm = family_->metric.emplace_back();
  cm.label.reserve(labels.size());
  ++series_number_;
  for (const auto& [key, v] : labels) {
    const std::string_view k = key;  // a lambda may not capture a structured binding (clang 14)
    // Label names repeat in every series of a metric: sanitize each once.
    auto it = std::find_if(label_names_.begin(), label_names_.end(),
                           [&](const auto& n) { return n.key == k; });
    if (it == label_names_.end()) it = AddLabelNaming(k);
    // Two labels of a series exposed under one name: the first stays (mapping labels come first,
    // then the tags in byte order of their keys).
    LabelNaming& first = label_names_[it->first];
    if (first.seen == series_number_) {
      ++label_clashes_;
      may_repeat_ = true;
      continue;
    }
    first.seen = series_number_;
    if (wire::IsValidUtf8(v)) {
      cm.label.push_back({it->name, std::string(v)});
    } else {
      may_repeat_ = true;
      cm.label.push_back({it->name, LabelValue(v)});
    }
  }
  const double scale = name_.scale;
  switch (name_.type) {
    case prometheus::MetricType::Counter:
      cm.counter.value = s.value * scale;
      break;
    case prometheus::MetricType::Gauge:
      cm.gauge.value = s.value * scale;
      break;
    case prometheus::MetricType::Histogram: {
      cm.histogram.sample_count = s.count;
      cm.histogram.sample_sum = s.sum * scale;
      cm.histogram.bucket.reserve(s.bucket_counts.size());
      std::uint64_t cumulative = 0;
      for (std::size_t b = 0; b < s.bucket_counts.size(); ++b) {
        cumulative += s.bucket_counts[b];
        prometheus::ClientMetric::Bucket bucket;
        bucket.cumulative_count = cumulative;
        bucket.upper_bound = b < info_->buckets.size() ? info_->buckets[b] * scale
                                                       : std::numeric_limits<double>::infinity();
        cm.histogram.bucket.push_back(bucket);
      }
      break;
    }
    case prometheus::MetricType::Summary:
      cm.summary.sample_count = s.count;
      cm.summary.sample_sum = s.sum * scale;
      for (std::size_t q = 0; q < s.quantile_values.size() && q < info_->quantiles.size(); ++q) {
        cm.summary.quantile.push_back({info_->quantiles[q], s.quantile_values[q] * scale});
      }
      break;
    default:
      cm.untyped.value = s.value;
      break;
  }
  if (may_repeat_ && family_->metric.size() == expected_) DropRepeatedSeries();
}

std::vector<FamilyBuilder::LabelNaming>::iterator FamilyBuilder::AddLabelNaming(
    std::string_view key) {
  LabelNaming naming{std::string(key), ExposedLabelName(key)};
  naming.first = static_cast<std::uint32_t>(label_names_.size());
  for (std::size_t i = 0; i < label_names_.size(); ++i) {
    if (label_names_[i].name == naming.name) {
      naming.first = static_cast<std::uint32_t>(i);
      may_repeat_ = true;  // {a-b="x"} and {a_b="x"} would be one series
      break;
    }
  }
  return label_names_.insert(label_names_.end(), std::move(naming));
}

void FamilyBuilder::DropRepeatedSeries() {
  may_repeat_ = false;
  auto& series = family_->metric;
  for (auto& cm : series) std::sort(cm.label.begin(), cm.label.end());
  std::vector<std::size_t> order(series.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  // Of series with the same labels, the first visited stays.
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return series[a].label < series[b].label; });
  std::vector<bool> repeated(series.size(), false);
  for (std::size_t i = 1; i < order.size(); ++i) {
    repeated[order[i]] = series[order[i]].label == series[order[i - 1]].label;
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < series.size(); ++i) {
    if (repeated[i]) continue;
    if (kept != i) series[kept] = std::move(series[i]);
    ++kept;
  }
  series_clashes_ += series.size() - kept;
  series.erase(series.begin() + static_cast<std::ptrdiff_t>(kept), series.end());
}

std::vector<prometheus::MetricFamily> ToFamilies(const std::vector<aggregate::MetricPoints>& points,
                                                 std::uint64_t* clashes) {
  std::vector<prometheus::MetricFamily> out;
  FamilyBuilder builder(out);
  aggregate::VisitPoints(points, builder);
  if (clashes != nullptr) *clashes += builder.clashes();
  return out;
}

std::vector<prometheus::MetricFamily> AggregateCollector::Collect() const {
  // Scrapes yield to ingest: this thread (a civetweb worker, which also serializes the response)
  // runs at a lower priority, so that an ingest worker sharing its core is never starved by a
  // large scrape. Linux applies nice values per thread.
  thread_local const bool lowered = [] {
    errno = 0;
    const int current = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    if (errno == 0 && current < kScrapeNice) {
      ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kScrapeNice);
    }
    return true;
  }();
  (void)lowered;
  const auto start = std::chrono::steady_clock::now();
  // Out of memory for the snapshot or its families, the scrape carries the daemon's own metrics
  // only (which count it) rather than end the process: what was aggregated stays in the engine,
  // for the next scrape. What the exposer then needs to serialize is prometheus-cpp's to find.
  try {
    std::vector<prometheus::MetricFamily> families;
    FamilyBuilder builder(families);
    snapshot_().Visit(builder);
    clashes_.store(builder.clashes());
    label_clashes_.store(builder.label_clashes());
    series_clashes_.store(builder.series_clashes());
    last_duration_.store(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return families;
  } catch (const std::bad_alloc&) {
    failures_.fetch_add(1);
    static log::RateLimitedLog no_memory(log::Level::kError);
    no_memory(
        "scrape: out of memory for the aggregated metrics; this scrape has only telemetryd's own "
        "(telemetryd_scrape_failures_total)");
    return {};
  }
}

}  // namespace telemetryd::exporters
