// A transport's pending output: bytes appended at the back, sent from the front. One contiguous
// block with a start offset, so a partial send costs no move; the sent prefix is reclaimed when it
// outgrows what is left (amortised O(1) per byte), not on every send as a bytearray's del [:n].
#pragma once

#include <cstddef>
#include <cstring>
#include <vector>

namespace turboloop::core {

class WriteBuffer {
 public:
  std::size_t size() const { return data_.size() - start_; }
  bool empty() const { return size() == 0; }

  // The bytes not yet sent.
  const char* front() const { return data_.data() + start_; }

  void append(const char* bytes, std::size_t count) {
    if (start_ > 0 && start_ >= size()) compact();
    data_.insert(data_.end(), bytes, bytes + count);
  }

  // Drops the first `count` bytes (at most size()), once they are sent.
  void consume(std::size_t count) {
    start_ += count < size() ? count : size();
    if (start_ == data_.size()) clear();
  }

  void clear() {
    data_.clear();
    start_ = 0;
  }

 private:
  void compact() {
    data_.erase(data_.begin(), data_.begin() + static_cast<std::ptrdiff_t>(start_));
    start_ = 0;
  }

  std::vector<char> data_;
  std::size_t start_ = 0;
};

}  // namespace turboloop::core
