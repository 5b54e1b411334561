// malloc tuning: who may opt out, and what the tuning changes in glibc's malloc.
#include <cstdlib>

#include "catch.hpp"
#include "core/malloc_tuning.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#include <unistd.h>
#endif

using turboloop::core::malloc_tuning_allowed;
using turboloop::core::tune_malloc_for_io;

TEST_CASE("malloc tuning is allowed unless the environment opts out or sets malloc itself") {
  const char* plain[] = {"HOME=/root", "PATH=/usr/bin", nullptr};
  REQUIRE(malloc_tuning_allowed(plain));
  REQUIRE(malloc_tuning_allowed(nullptr));

  const char* opted_out[] = {"HOME=/root", "TURBOLOOP_MALLOC_TUNING=0", nullptr};
  REQUIRE_FALSE(malloc_tuning_allowed(opted_out));
  const char* opted_in[] = {"TURBOLOOP_MALLOC_TUNING=1", nullptr};
  REQUIRE(malloc_tuning_allowed(opted_in));
  const char* longer_name[] = {"TURBOLOOP_MALLOC_TUNING_X=0", nullptr};
  REQUIRE(malloc_tuning_allowed(longer_name));

  for (const char* setting : {"MALLOC_TRIM_THRESHOLD_=0", "MALLOC_MMAP_THRESHOLD_=65536", "MALLOC_TOP_PAD_=1",
                              "MALLOC_ARENA_MAX=2", "GLIBC_TUNABLES=glibc.malloc.trim_threshold=1"}) {
    const char* environment[] = {"HOME=/root", setting, nullptr};
    INFO(setting);
    REQUIRE_FALSE(malloc_tuning_allowed(environment));
  }
  const char* other_tunables[] = {"GLIBC_TUNABLES=glibc.pthread.rseq=0", nullptr};
  REQUIRE(malloc_tuning_allowed(other_tunables));
}

#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
TEST_CASE("tuned malloc takes a 16 MiB block from the heap and keeps the freed top") {
  if (!malloc_tuning_allowed(environ)) {
    WARN("the environment sets malloc itself: nothing to check");
    return;
  }
  REQUIRE(tune_malloc_for_io());
  REQUIRE(tune_malloc_for_io());  // once per process; later calls report the same

  const std::size_t mapped_before = mallinfo2().hblks;
  void* block = std::malloc(16 << 20);
  REQUIRE(block != nullptr);
  REQUIRE(mallinfo2().hblks == mapped_before);  // untuned glibc maps it (over 128 KiB, and over any block freed so far)

  void* const break_with_block = sbrk(0);
  std::free(block);
  REQUIRE(sbrk(0) == break_with_block);  // untuned glibc gives the free top back at once
}
#endif
