// glibc's malloc, tuned for a process that allocates and frees message-sized blocks (see the .cpp).
#pragma once

namespace turboloop::core {

// The environment variable that turns the tuning off: TURBOLOOP_MALLOC_TUNING=0.
inline constexpr const char* kMallocTuningVariable = "TURBOLOOP_MALLOC_TUNING";

// Whether the process leaves malloc's thresholds to us: false when `environment` (a
// null-terminated "NAME=value" array, as environ) opts out or sets any of glibc's malloc settings.
bool malloc_tuning_allowed(const char* const* environment);

// Tunes glibc's malloc once per process when malloc_tuning_allowed(environ); returns whether its
// thresholds are now ours. Always false when the C library is not glibc.
bool tune_malloc_for_io();

}  // namespace turboloop::core
