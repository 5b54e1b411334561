// RingQueue: FIFO order across growth and wrap-around.
#include <memory>

#include "catch.hpp"
#include "core/ring_queue.hpp"

using turboloop::core::RingQueue;

TEST_CASE("ring queue keeps FIFO order while it wraps and grows") {
  RingQueue<int> queue;
  int next_in = 0;
  int next_out = 0;
  // Interleave pushes and pops so the head wraps around the buffer several times.
  for (int round = 0; round < 50; ++round) {
    for (int i = 0; i < 37 + round * 5; ++i) queue.push_back(next_in++);
    for (int i = 0; i < 30 + round * 3; ++i) REQUIRE(queue.pop_front() == next_out++);
  }
  while (!queue.empty()) REQUIRE(queue.pop_front() == next_out++);
  REQUIRE(next_out == next_in);
  REQUIRE(queue.size() == 0);
}

TEST_CASE("ring queue releases what it pops and what it clears") {
  RingQueue<std::shared_ptr<int>> queue;
  auto tracked = std::make_shared<int>(7);
  queue.push_back(tracked);
  queue.push_back(tracked);
  REQUIRE(tracked.use_count() == 3);
  REQUIRE(*queue.pop_front() == 7);
  REQUIRE(tracked.use_count() == 2);
  queue.clear();
  REQUIRE(tracked.use_count() == 1);
  REQUIRE(queue.empty());
}

TEST_CASE("ring queue visits items front first") {
  RingQueue<int> queue;
  for (int i = 0; i < 100; ++i) queue.push_back(i);
  for (int i = 0; i < 90; ++i) queue.pop_front();
  for (int i = 100; i < 110; ++i) queue.push_back(i);
  int expected = 90;
  queue.for_each([&](int item) { REQUIRE(item == expected++); });
  REQUIRE(expected == 110);
}
