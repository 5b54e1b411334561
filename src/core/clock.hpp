// The loop's clocks: CLOCK_MONOTONIC (the same clock as Python's time.monotonic()) in seconds
// and in nanoseconds, and a cheaper tick counter for timing every callback.
#pragma once

#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace turboloop::core {

double monotonic_seconds();
std::int64_t monotonic_ns();

// A fast, monotonic tick count of unspecified unit (the CPU's timestamp counter where there is
// one: a third of the cost of clock_gettime). Convert with TickRate.
inline std::uint64_t ticks() {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#elif defined(__aarch64__)
  std::uint64_t value;
  asm volatile("mrs %0, cntvct_el0" : "=r"(value));
  return value;
#else
  return static_cast<std::uint64_t>(monotonic_ns());
#endif
}

// Converts ticks to seconds, calibrated against the monotonic clock since construction: the
// longer it has lived, the more exact the rate.
class TickRate {
 public:
  TickRate() : start_ns_(monotonic_ns()), start_ticks_(ticks()) {}

  double seconds(std::uint64_t tick_count) const {
    const std::int64_t elapsed_ns = monotonic_ns() - start_ns_;
    const std::uint64_t elapsed_ticks = ticks() - start_ticks_;
    if (elapsed_ticks == 0 || elapsed_ns <= 0) return 0.0;
    return static_cast<double>(tick_count) * (static_cast<double>(elapsed_ns) * 1e-9) /
           static_cast<double>(elapsed_ticks);
  }

 private:
  std::int64_t start_ns_;
  std::uint64_t start_ticks_;
};

}  // namespace turboloop::core
