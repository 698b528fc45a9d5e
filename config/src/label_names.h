// Private: the label names the configuration and the catalogs may give, checked at load so that a
// bad one fails there and not at every scrape.
#pragma once

#include <algorithm>
#include <string_view>

namespace telemetryd::config::detail {

// A Prometheus label name: [A-Za-z_][A-Za-z0-9_]*.
inline bool IsLabelName(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_';
  });
}

// Reserved: by Prometheus ("__..."), and by histogram buckets ("le") and summary quantiles
// ("quantile"), which Prometheus lints on every metric type.
inline bool IsReservedLabelName(std::string_view name) {
  return name.starts_with("__") || name == "le" || name == "quantile";
}

}  // namespace telemetryd::config::detail
