// A FIFO ring buffer: the loop's ready queue. Growing doubles the storage; popping never frees it,
// so a steady-state loop allocates nothing.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace turboloop::core {

template <typename T>
class RingQueue {
 public:
  bool empty() const { return size_ == 0; }
  std::size_t size() const { return size_; }

  void push_back(T item) {
    if (size_ == slots_.size()) grow();
    slots_[(head_ + size_) & (slots_.size() - 1)] = std::move(item);
    ++size_;
  }

  // Precondition: !empty().
  T pop_front() {
    T item = std::move(slots_[head_]);
    slots_[head_] = T();
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
    return item;
  }

  // Visits every queued item, front first.
  template <typename Visit>
  void for_each(Visit&& visit) const {
    for (std::size_t i = 0; i < size_; ++i) visit(slots_[(head_ + i) & (slots_.size() - 1)]);
  }

  void clear() {
    while (!empty()) pop_front();
  }

 private:
  // The capacity stays a power of two so that wrapping is a mask.
  void grow() {
    std::vector<T> bigger(slots_.empty() ? 64 : slots_.size() * 2);
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<T> slots_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace turboloop::core
