#include "binding/write_queue.hpp"

#include <limits.h>
#include <sys/uio.h>

#include <algorithm>
#include <vector>

#include "core/socket_io.hpp"

namespace turboloop::binding {
namespace {

// The most chunks one sendmsg() takes (asyncio's SC_IOV_MAX; Linux's is 1024).
constexpr std::size_t kMaxChunks = IOV_MAX;

// Room for the pieces of one send(): on the stack for the few a send usually has (one, mostly),
// on the heap beyond.
template <typename T>
class Pieces {
 public:
  explicit Pieces(std::size_t count) {
    if (count > kOnStack) heap_.resize(count);
  }
  T* data() { return heap_.empty() ? stack_ : heap_.data(); }
  T& operator[](std::size_t i) { return data()[i]; }

 private:
  static constexpr std::size_t kOnStack = 8;
  T stack_[kOnStack];
  std::vector<T> heap_;
};

// The buffers of the chunks one send() has acquired, released however it ends.
struct HeldViews {
  explicit HeldViews(std::size_t capacity) : views(capacity) {}
  ~HeldViews() {
    for (std::size_t i = 0; i < count; ++i) PyBuffer_Release(&views[i]);
  }
  Pieces<Py_buffer> views;
  std::size_t count = 0;
};

// A chunk of which `sent` bytes of `piece` went out.
void keep_rest(WriteQueue::Chunk& chunk, const iovec& piece, std::size_t sent) {
  if (PyByteArray_Check(chunk.data.ptr())) {
    const char* rest = static_cast<const char*>(piece.iov_base) + sent;
    PyObject* copy = PyBytes_FromStringAndSize(rest, static_cast<Py_ssize_t>(piece.iov_len - sent));
    if (copy == nullptr) throw py::error_already_set();
    chunk.data = py::reinterpret_steal<py::object>(copy);
    chunk.offset = 0;
  } else {
    chunk.offset += sent;
  }
}

}  // namespace

ssize_t WriteQueue::send(int fd) {
  if (chunks_.size() == 1 && PyBytes_CheckExact(chunks_.front().data.ptr())) return send_bytes(fd);
  const std::size_t count = std::min(chunks_.size(), kMaxChunks);
  HeldViews held(count);
  Pieces<iovec> pieces(count);
  for (std::size_t i = 0; i < count; ++i) {
    const Chunk& chunk = chunks_[i];
    Py_buffer& view = held.views[i];
    if (PyObject_GetBuffer(chunk.data.ptr(), &view, PyBUF_SIMPLE) < 0) throw py::error_already_set();
    ++held.count;
    const std::size_t length = static_cast<std::size_t>(view.len);
    const std::size_t offset = std::min(chunk.offset, length);
    pieces[i] = {static_cast<char*>(view.buf) + offset, length - offset};
  }
  const ssize_t sent = core::send_pieces(fd, pieces.data(), count);
  if (sent < 0) return sent;
  size_ -= std::min(static_cast<std::size_t>(sent), size_);
  // Drop what went out (and chunks emptied since they were written); a chunk sent in part keeps
  // its rest. Of a bytearray, as asyncio's b[n:], that rest is a copy: a later change to the
  // bytearray is not sent.
  std::size_t left = static_cast<std::size_t>(sent);
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t length = pieces[i].iov_len;
    if (left < length) {
      if (left > 0) keep_rest(chunks_.front(), pieces[i], left);
      break;
    }
    left -= length;
    chunks_.pop_front();
  }
  return sent;
}

// The one chunk, a bytes object: sent from its bytes (no buffer to acquire), as most sends are.
ssize_t WriteQueue::send_bytes(int fd) {
  Chunk& chunk = chunks_.front();
  const auto length = static_cast<std::size_t>(PyBytes_GET_SIZE(chunk.data.ptr()));
  const ssize_t sent = core::send_some(fd, PyBytes_AS_STRING(chunk.data.ptr()) + chunk.offset, length - chunk.offset);
  if (sent <= 0) return sent;
  size_ -= std::min(static_cast<std::size_t>(sent), size_);
  chunk.offset += static_cast<std::size_t>(sent);
  if (chunk.offset == length) chunks_.pop_front();
  return sent;
}

}  // namespace turboloop::binding
