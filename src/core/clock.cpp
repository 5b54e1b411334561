// The loop's clock (see clock.hpp).
#include "core/clock.hpp"

#include <time.h>

namespace turboloop::core {

double monotonic_seconds() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

}  // namespace turboloop::core
