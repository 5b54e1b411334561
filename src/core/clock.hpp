// The loop's clock: CLOCK_MONOTONIC in seconds, the same clock as Python's time.monotonic().
#pragma once

namespace turboloop::core {

double monotonic_seconds();

}  // namespace turboloop::core
