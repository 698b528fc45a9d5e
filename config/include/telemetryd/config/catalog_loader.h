// Catalogs (docs/catalogs.md): YAML files that describe a system's :telemetry events and the
// metrics derived from them, loaded into the validated aggregate::CatalogSpec model. Every problem
// is reported as "file:line:column: path: message", one per line of Error::message, so that a
// catalog author sees all of them at once. Thread-safety: the functions are reentrant.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "telemetryd/aggregate/catalog.h"
#include "telemetryd/common/expected.h"

namespace telemetryd::config {

// Parses one catalog; `source` names it in messages and becomes CatalogSpec::source.
// Error codes: "catalog.syntax" (not YAML), "catalog.invalid" (fails validation).
Expected<aggregate::CatalogSpec> ParseCatalog(std::string_view yaml, const std::string& source);

// ParseCatalog on a file's contents; "catalog.read" when the file cannot be read.
Expected<aggregate::CatalogSpec> LoadCatalogFile(const std::string& path);

// Loads every catalog named: a file, or a directory whose *.yaml files load in name order (a file
// reached twice loads once). Also rejects what a single catalog cannot see: an event declared, a
// metric name or a system used by two catalogs. The errors of every file are reported together;
// the code is "catalog.syntax" or "catalog.read" when every error is of that kind, otherwise
// "catalog.invalid".
Expected<std::vector<aggregate::CatalogSpec>> LoadCatalogs(const std::vector<std::string>& paths);

}  // namespace telemetryd::config
