// A socket transport's pending output, kept as asyncio's _SelectorSocketTransport keeps it from
// 3.12 on: the written objects themselves (a bytearray changed before it is sent goes out as
// changed; what write() could not send at once stays exported through a memoryview), sent from the
// front with one sendmsg() of many chunks, and asyncio's count of their bytes. On an asyncio that
// copies what it buffers (3.11), the transport pushes copies instead.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <deque>

#include "binding/common.hpp"

namespace turboloop::binding {

class WriteQueue {
 public:
  // asyncio's _buffer_size: bytes counted when pushed, less those sent.
  std::size_t size() const { return size_; }
  bool empty() const { return chunks_.empty(); }

  // Queues `data` (a bytes-like object) from byte `offset` on, counting `count` bytes.
  void push(py::object data, std::size_t offset, std::size_t count) {
    chunks_.push_back({std::move(data), offset});
    size_ += count;
  }

  // One sendmsg() of the front chunks: the bytes sent (0 when the socket would block), or -errno.
  // A chunk whose buffer cannot be had (a non-contiguous memoryview) raises its Python error.
  // Chunks emptied since they were pushed (a bytearray cleared) are dropped.
  ssize_t send(int fd);

  void clear() {
    chunks_.clear();
    size_ = 0;
  }

  // The queued objects, for the garbage collector.
  template <typename Visit>
  int visit(Visit&& visit) const {
    for (const Chunk& chunk : chunks_)
      if (int result = visit(chunk.data.ptr())) return result;
    return 0;
  }

  struct Chunk {
    py::object data;
    std::size_t offset;  // bytes of it already sent
  };

 private:
  ssize_t send_bytes(int fd);

  std::deque<Chunk> chunks_;
  std::size_t size_ = 0;
};

}  // namespace turboloop::binding
