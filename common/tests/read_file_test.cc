#include "telemetryd/common/read_file.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using telemetryd::ReadBoundedFile;

TEST_CASE("a bounded read takes a whole file, and refuses directories, endless and large files") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("read_file_test." + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string small = (dir / "small.yaml").string();
  std::string content(100'000, 'x');
  content += "\nend\n";
  std::ofstream(small, std::ios::binary) << content;

  const auto whole = ReadBoundedFile(small, content.size(), "test.read", "test file");
  REQUIRE(whole.has_value());
  CHECK(*whole == content);

  const auto over = ReadBoundedFile(small, content.size() - 1, "test.read", "test file");
  REQUIRE_FALSE(over.has_value());
  CHECK(over.error().code == "test.read");
  CHECK(over.error().message == small + ": holds more than " + std::to_string(content.size() - 1) +
                                    " bytes, too large for a test file");

  const auto endless = ReadBoundedFile("/dev/zero", 1 << 20, "test.read", "test file");
  REQUIRE_FALSE(endless.has_value());
  CHECK(endless.error().message.find("holds more than 1048576 bytes") != std::string::npos);

  const auto directory = ReadBoundedFile(dir.string(), 1 << 20, "test.read", "test file");
  REQUIRE_FALSE(directory.has_value());
  CHECK(directory.error().message == dir.string() + ": is a directory, not a test file");

  const auto missing =
      ReadBoundedFile((dir / "missing.yaml").string(), 1 << 20, "test.read", "test file");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().message.find("cannot read the file") != std::string::npos);

  const std::string empty = (dir / "empty.yaml").string();
  std::ofstream(empty, std::ios::binary).flush();
  const auto nothing = ReadBoundedFile(empty, 1 << 20, "test.read", "test file");
  REQUIRE(nothing.has_value());
  CHECK(nothing->empty());
  fs::remove_all(dir);
}
