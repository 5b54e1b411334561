// Non-blocking socket reads, writes and sendfile as the transports and sock_* methods need them:
// errors as negative errno values, EINTR retried, and one scratch buffer that reads land in before
// their bytes are copied out.
#pragma once

#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstddef>

namespace turboloop::core {

// asyncio's max_size: the most one transport read takes from a socket.
constexpr std::size_t kMaxRead = 256 * 1024;

// The scratch buffer, kMaxRead bytes. Callers must not let two reads overlap (the binding holds
// the GIL from the read until the copy). Static storage, never given back to the kernel: reads
// into freshly mapped pages made the kernel's copy several times slower (page faults, measured
// with perf on 100 KiB echoes).
inline char* read_scratch() {
  static char buffer[kMaxRead];
  return buffer;
}

// recv(), or -errno; a read that would block returns -EAGAIN.
inline ssize_t receive(int fd, void* into, std::size_t size) {
  ssize_t count;
  do {
    count = recv(fd, into, size, 0);
  } while (count < 0 && errno == EINTR);
  if (count >= 0) return count;
  return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

// send(), or -errno; a send that would block returns 0. MSG_NOSIGNAL: a closed peer gives EPIPE,
// never SIGPIPE, whether or not the embedding program ignores that signal as Python does.
inline ssize_t send_some(int fd, const void* bytes, std::size_t size) {
  ssize_t count;
  do {
    count = send(fd, bytes, size, MSG_NOSIGNAL);
  } while (count < 0 && errno == EINTR);
  if (count >= 0) return count;
  return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
}

// sendmsg() of `count` pieces, or -errno; a send that would block returns 0. MSG_NOSIGNAL, as
// send_some().
inline ssize_t send_pieces(int fd, iovec* pieces, std::size_t count) {
  msghdr message{};
  message.msg_iov = pieces;
  message.msg_iovlen = count;
  ssize_t sent;
  do {
    sent = sendmsg(fd, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent >= 0) return sent;
  return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
}

// sendfile(): up to `size` bytes of `file` from `*offset` to the socket, advancing `*offset`
// (the file's own position is left alone); the count (0 at the end of the file), or -errno; a
// send that would block returns -EAGAIN.
inline ssize_t send_file(int fd, int file, off_t* offset, std::size_t size) {
  ssize_t count;
  do {
    count = sendfile(fd, file, offset, size);
  } while (count < 0 && errno == EINTR);
  if (count >= 0) return count;
  return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

}  // namespace turboloop::core
