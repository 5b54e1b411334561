// A multi-producer, single-consumer queue: any thread pushes, the loop thread takes everything at
// once. A mutex guards a vector; the consumer swaps it out, so it holds the lock only for a swap.
#pragma once

#include <mutex>
#include <utility>
#include <vector>

namespace turboloop::core {

template <typename T>
class MpscQueue {
 public:
  // Returns true when the queue was empty before: the caller should wake the consumer.
  bool push(T item) {
    std::lock_guard<std::mutex> lock(mutex_);
    items_.push_back(std::move(item));
    return items_.size() == 1;
  }

  // Moves every queued item, oldest first, into `out` (which the caller reuses between calls).
  void take_all(std::vector<T>& out) {
    std::lock_guard<std::mutex> lock(mutex_);
    out.swap(items_);
  }

  // Visits every queued item under the lock (for garbage-collector traversal).
  template <typename Visit>
  void for_each(Visit&& visit) const {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const T& item : items_) visit(item);
  }

  bool empty() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return items_.empty();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<T> items_;
};

}  // namespace turboloop::core
