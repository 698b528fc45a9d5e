#include "telemetryd/common/read_file.h"

#include <filesystem>
#include <fstream>

namespace telemetryd {

Expected<std::string> ReadBoundedFile(const std::string& path, std::size_t max_bytes,
                                      const std::string& code, std::string_view what) {
  // A directory opens as a stream that reads nothing, which would parse as an empty file.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return Error{code, path + ": is a directory, not a " + std::string(what)};
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error{code, path + ": cannot read the file"};
  std::string text;
  char chunk[65536];
  while (in.read(chunk, sizeof chunk) || in.gcount() > 0) {
    const auto n = static_cast<std::size_t>(in.gcount());
    if (text.size() + n > max_bytes) {
      return Error{code, path + ": holds more than " + std::to_string(max_bytes) +
                             " bytes, too large for a " + std::string(what)};
    }
    text.append(chunk, n);
  }
  if (in.bad()) return Error{code, path + ": cannot read the file"};
  return text;
}

}  // namespace telemetryd
