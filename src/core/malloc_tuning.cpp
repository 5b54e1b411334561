// Until it has seen a large block freed, glibc's malloc returns the top of its heap to the kernel
// as soon as 128 KiB of it are free, and maps each block over 128 KiB afresh. A server whose
// messages are ~100 KiB (a StreamReader's buffer growing, a received chunk, a slice of it) then
// pays a brk() and a page fault per 4 KiB for most messages: perf showed 20 faults per 100 KiB
// streams echo, half the server's time. So the loop starts malloc where glibc's adaptive
// thresholds would end up for such a process, at their ceilings: blocks up to 32 MiB come from the
// heap, and the heap's free top is kept until it passes 64 MiB.
#include "core/malloc_tuning.hpp"

#include <string_view>

#if defined(__GLIBC__)
#include <malloc.h>
#include <unistd.h>
#endif

namespace turboloop::core {
namespace {

bool sets_malloc(std::string_view entry) {
  for (std::string_view name : {"MALLOC_TRIM_THRESHOLD_=", "MALLOC_MMAP_THRESHOLD_=", "MALLOC_TOP_PAD_=",
                                "MALLOC_MMAP_MAX_=", "MALLOC_ARENA_MAX="}) {
    if (entry.substr(0, name.size()) == name) return true;
  }
  constexpr std::string_view tunables = "GLIBC_TUNABLES=";
  return entry.substr(0, tunables.size()) == tunables && entry.find("glibc.malloc.") != std::string_view::npos;
}

bool opts_out(std::string_view entry) {
  const std::string_view name = kMallocTuningVariable;
  return entry.size() > name.size() && entry.substr(0, name.size()) == name && entry[name.size()] == '=' &&
         entry.substr(name.size() + 1) == "0";
}

}  // namespace

bool malloc_tuning_allowed(const char* const* environment) {
  if (environment == nullptr) return true;
  for (; *environment != nullptr; ++environment) {
    const std::string_view entry = *environment;
    if (opts_out(entry) || sets_malloc(entry)) return false;
  }
  return true;
}

bool tune_malloc_for_io() {
#if defined(__GLIBC__)
  static const bool tuned = [] {
    if (!malloc_tuning_allowed(environ)) return false;
    // glibc's DEFAULT_MMAP_THRESHOLD_MAX, and twice it, as its dynamic rule sets the trim threshold.
    constexpr int mmap_threshold = 4 * 1024 * 1024 * static_cast<int>(sizeof(long));
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold) == 1;
  }();
  return tuned;
#else
  return false;
#endif
}

}  // namespace turboloop::core
