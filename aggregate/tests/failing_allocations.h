// The aggregate tests' replacement of operator new (engine_test.cc): allocations that fail on
// demand, for code that must stay consistent when memory runs out.
#pragma once

namespace telemetryd::aggregate::testing {

// On this thread, the allocation after `allocations_left` more fails (std::bad_alloc, or nullptr
// for the nothrow form). -1: never.
extern thread_local long allocations_left;

}  // namespace telemetryd::aggregate::testing
