// TimerHeap: earliest deadline first, ties in insertion order, removal keeps the heap valid.
#include <random>
#include <vector>

#include "catch.hpp"
#include "core/timer_heap.hpp"

using turboloop::core::TimerHeap;

TEST_CASE("timer heap pops by deadline, ties in insertion order") {
  TimerHeap<int> heap;
  heap.push(2.0, 20);
  heap.push(1.0, 10);
  heap.push(2.0, 21);
  heap.push(0.5, 5);
  heap.push(2.0, 22);
  std::vector<int> order;
  while (!heap.empty()) order.push_back(heap.pop());
  REQUIRE(order == std::vector<int>{5, 10, 20, 21, 22});
}

TEST_CASE("timer heap orders many random deadlines") {
  TimerHeap<int> heap;
  std::mt19937 random(42);
  std::uniform_real_distribution<double> deadline(0.0, 100.0);
  for (int i = 0; i < 10000; ++i) heap.push(deadline(random), i);
  double last = -1.0;
  while (!heap.empty()) {
    const double when = heap.top_when();
    REQUIRE(when >= last);
    last = when;
    heap.pop();
  }
}

TEST_CASE("timer heap removes matching items and stays ordered") {
  TimerHeap<int> heap;
  for (int i = 0; i < 200; ++i) heap.push(static_cast<double>(200 - i), i);
  int dropped = 0;
  heap.remove_if([](int item) { return item % 2 == 0; }, [&](int&) { ++dropped; });
  REQUIRE(dropped == 100);
  REQUIRE(heap.size() == 100);
  int previous = 1000;
  while (!heap.empty()) {
    const int item = heap.pop();
    REQUIRE(item % 2 == 1);
    REQUIRE(item < previous);  // later items have earlier deadlines
    previous = item;
  }
}
