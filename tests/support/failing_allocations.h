// A replacement of operator new for the unit tests of code that must stay consistent when memory
// runs out: allocations that fail on demand. Its definition (failing_allocations.cc) is linked
// only into the test binaries that link the telemetryd_failing_allocations object library.
#pragma once

namespace telemetryd::testing {

// On this thread, the allocation after `allocations_left` more fails (std::bad_alloc, or nullptr
// for the nothrow form). -1: never.
extern thread_local long allocations_left;

}  // namespace telemetryd::testing
