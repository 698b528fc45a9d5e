// Test support: one event for every event of the given catalogs, with every declared measurement
// and metadata key, sent in span order (starts, then stops and exceptions, then the rest).
#pragma once

#include <cstddef>
#include <vector>

#include "telemetryd/aggregate/catalog.h"
#include "telemetryd/client/client.h"

namespace telemetryd::test {

// Measurements are 2 (monotonic_time 1 s at starts and 4 s at stops, in nanoseconds; the VSR
// leadership stop's duration 0, as documented). Returns the number of events sent.
std::size_t SendEveryCatalogEvent(client::Client& client,
                                  const std::vector<aggregate::CatalogSpec>& catalogs);

}  // namespace telemetryd::test
