// A min-heap of timers keyed by (when, insertion order): equal deadlines fire in the order they were
// scheduled, as asyncio's heapq of TimerHandles does in practice.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace turboloop::core {

template <typename T>
class TimerHeap {
 public:
  bool empty() const { return entries_.empty(); }
  std::size_t size() const { return entries_.size(); }

  void push(double when, T item) {
    entries_.push_back(Entry{when, next_sequence_++, std::move(item)});
    std::push_heap(entries_.begin(), entries_.end(), later);
  }

  // Precondition: !empty().
  double top_when() const { return entries_.front().when; }
  const T& top() const { return entries_.front().item; }

  // Precondition: !empty().
  T pop() {
    std::pop_heap(entries_.begin(), entries_.end(), later);
    T item = std::move(entries_.back().item);
    entries_.pop_back();
    return item;
  }

  // Drops every item for which `dead(item)` holds, calling `on_drop(item)` first, and rebuilds.
  template <typename Dead, typename OnDrop>
  void remove_if(Dead&& dead, OnDrop&& on_drop) {
    auto kept = std::remove_if(entries_.begin(), entries_.end(), [&](Entry& entry) {
      if (!dead(entry.item)) return false;
      on_drop(entry.item);
      return true;
    });
    entries_.erase(kept, entries_.end());
    std::make_heap(entries_.begin(), entries_.end(), later);
  }

  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (const Entry& entry : entries_) visit(entry.item);
  }

  void clear() { entries_.clear(); }

 private:
  struct Entry {
    double when;
    std::uint64_t sequence;
    T item;
  };

  // std heap functions build a max-heap; ordering by "fires later" puts the earliest on top.
  static bool later(const Entry& a, const Entry& b) {
    if (a.when != b.when) return a.when > b.when;
    return a.sequence > b.sequence;
  }

  std::vector<Entry> entries_;
  std::uint64_t next_sequence_ = 0;
};

}  // namespace turboloop::core
