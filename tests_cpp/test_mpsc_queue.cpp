// MpscQueue: many producers, one consumer, nothing lost or duplicated, per-producer order kept.
#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "core/mpsc_queue.hpp"

using turboloop::core::MpscQueue;

TEST_CASE("mpsc queue delivers every item from 8 producers exactly once, in order per producer") {
  constexpr int kProducers = 8;
  constexpr int kPerProducer = 20000;
  MpscQueue<std::pair<int, int>> queue;
  std::atomic<int> wakeups{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i)
        if (queue.push({p, i})) wakeups.fetch_add(1);
    });
  }
  std::vector<int> next(kProducers, 0);
  std::vector<std::pair<int, int>> batch;
  int received = 0;
  while (received < kProducers * kPerProducer) {
    queue.take_all(batch);
    for (auto [producer, index] : batch) {
      REQUIRE(index == next[producer]);
      ++next[producer];
      ++received;
    }
    batch.clear();
  }
  for (auto& thread : producers) thread.join();
  REQUIRE(queue.empty());
  for (int count : next) REQUIRE(count == kPerProducer);
  // A wake-up is asked for only when the queue goes from empty to non-empty.
  REQUIRE(wakeups.load() >= 1);
  REQUIRE(wakeups.load() <= received);
}

TEST_CASE("mpsc queue asks for a wake-up only on the first push into an empty queue") {
  MpscQueue<int> queue;
  REQUIRE(queue.push(1));
  REQUIRE_FALSE(queue.push(2));
  std::vector<int> batch;
  queue.take_all(batch);
  REQUIRE(batch == std::vector<int>{1, 2});
  REQUIRE(queue.push(3));
}
