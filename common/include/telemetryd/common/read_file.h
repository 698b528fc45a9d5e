// Reading the operator's files (the configuration, catalogs) whole, with a bound: a directory, a
// device that never ends (/dev/zero) or a runaway file is an error, not an endless read.
// Thread-safety: free function, no shared state.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "telemetryd/common/expected.h"

namespace telemetryd {

// The most a configuration or catalog file may hold.
inline constexpr std::size_t kMaxConfigFileBytes = 16 << 20;

// The bytes of the file at `path`, at most `max_bytes` of them. Errors carry `code` and say which
// file and why; `what` names the kind of file ("configuration file").
Expected<std::string> ReadBoundedFile(const std::string& path, std::size_t max_bytes,
                                      const std::string& code, std::string_view what);

}  // namespace telemetryd
