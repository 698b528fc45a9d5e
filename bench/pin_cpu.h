// Pins the calling process to one core, for the end-to-end tools: the generator and the server
// under test must not share a core.
#pragma once

#include <sched.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace telemetryd::bench {

// False (with a message on stderr naming `program`) when the core cannot be used.
inline bool PinToCpu(int cpu, const char* program) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<unsigned>(cpu), &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) {
    std::fprintf(stderr, "%s: cpu %d: %s\n", program, cpu, std::strerror(errno));
    return false;
  }
  return true;
}

}  // namespace telemetryd::bench
