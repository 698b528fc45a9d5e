// TagView: one key/value tag as views into text the caller keeps alive. The StatsD parser
// produces them and the aggregation engine takes them, so samples pass between the two as is.
#pragma once

#include <string_view>

namespace telemetryd {

struct TagView {
  std::string_view key;
  std::string_view value;  // empty for a bare tag such as "canary"
};

}  // namespace telemetryd
