// FdWatchers against real descriptors: readiness reported by its poll, modification,
// errors at registration, and descriptors closed or reused while watched.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>

#include "catch.hpp"
#include "core/fd_watchers.hpp"
#include "core/uv_loop.hpp"
#include "socket_pair.hpp"

using turboloop::core::FdWatchers;
using turboloop::core::UvLoop;

namespace {

// Polls once (without blocking unless told) and returns what is ready, by descriptor.
std::map<int, unsigned> poll_ready(FdWatchers& watchers, double timeout = 0.0) {
  watchers.poll(timeout);
  std::map<int, unsigned> ready;
  watchers.take_ready([&](int fd, unsigned events) { ready[fd] = events; });
  return ready;
}

}  // namespace

TEST_CASE("a watched socket is reported readable once data arrives, and writable") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  SocketPair pair;
  REQUIRE(watchers.watch(pair.fds[0], FdWatchers::kReadable) == 0);
  REQUIRE(poll_ready(watchers).empty());

  REQUIRE(write(pair.fds[1], "x", 1) == 1);
  auto ready = poll_ready(watchers, 1.0);
  REQUIRE(ready == std::map<int, unsigned>{{pair.fds[0], FdWatchers::kReadable}});

  // Level-triggered, as a selector: still readable until the data is read.
  REQUIRE(poll_ready(watchers) == ready);
  char byte;
  REQUIRE(read(pair.fds[0], &byte, 1) == 1);
  REQUIRE(poll_ready(watchers).empty());

  REQUIRE(watchers.watch(pair.fds[0], FdWatchers::kReadable | FdWatchers::kWritable) == 0);
  REQUIRE(watchers.watched(pair.fds[0]) == (FdWatchers::kReadable | FdWatchers::kWritable));
  REQUIRE(poll_ready(watchers, 1.0) == std::map<int, unsigned>{{pair.fds[0], FdWatchers::kWritable}});

  REQUIRE(watchers.watch(pair.fds[0], 0) == 0);
  REQUIRE(watchers.watched(pair.fds[0]) == 0);
  REQUIRE(poll_ready(watchers).empty());
}

TEST_CASE("a hang-up counts as both readable and writable, filtered by what is watched") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  SocketPair pair;
  REQUIRE(watchers.watch(pair.fds[0], FdWatchers::kReadable) == 0);
  close(pair.fds[1]);
  pair.fds[1] = -1;
  REQUIRE(poll_ready(watchers, 1.0) == std::map<int, unsigned>{{pair.fds[0], FdWatchers::kReadable}});
}

TEST_CASE("registration errors come at once, as from a selector") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  std::FILE* file = std::tmpfile();
  REQUIRE(file != nullptr);
  REQUIRE(watchers.watch(fileno(file), FdWatchers::kReadable) == -EPERM);
  REQUIRE(watchers.watched(fileno(file)) == 0);
  std::fclose(file);
  REQUIRE(watchers.watch(12345, FdWatchers::kReadable) == -EBADF);
  // Stopping what was never watched is not an error.
  REQUIRE(watchers.watch(12345, 0) == 0);
}

TEST_CASE("a descriptor closed while watched drops out, and its reused number can be watched again") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  int first[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, first) == 0);
  REQUIRE(watchers.watch(first[0], FdWatchers::kReadable) == 0);
  REQUIRE(write(first[1], "x", 1) == 1);
  const int number = first[0];
  close(first[0]);
  close(first[1]);
  REQUIRE(poll_ready(watchers).empty());

  SocketPair second;
  REQUIRE(second.fds[0] == number);  // the lowest free number is reused
  REQUIRE(watchers.watch(second.fds[0], FdWatchers::kReadable | FdWatchers::kWritable) == 0);
  REQUIRE(poll_ready(watchers, 1.0) == std::map<int, unsigned>{{number, FdWatchers::kWritable}});
}

TEST_CASE("a descriptor closed while watched keeps an unchanged registration, as a selector's") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
  REQUIRE(watchers.watch(fds[0], FdWatchers::kReadable) == 0);
  close(fds[0]);
  close(fds[1]);
  REQUIRE(watchers.watch(fds[0], FdWatchers::kReadable) == 0);
  REQUIRE(watchers.watched(fds[0]) == FdWatchers::kReadable);
  // Other events need the kernel, which has no such descriptor: the registration is dropped.
  REQUIRE(watchers.watch(fds[0], FdWatchers::kReadable | FdWatchers::kWritable) == -EBADF);
  REQUIRE(watchers.watched(fds[0]) == 0);
}

TEST_CASE("narrowing stops the events left out, and never fails on a closed descriptor") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  SocketPair open;
  REQUIRE(write(open.fds[1], "x", 1) == 1);
  REQUIRE(watchers.watch(open.fds[0], FdWatchers::kReadable | FdWatchers::kWritable) == 0);
  watchers.narrow(open.fds[0], FdWatchers::kWritable);
  REQUIRE(watchers.watched(open.fds[0]) == FdWatchers::kWritable);
  REQUIRE(poll_ready(watchers) == std::map<int, unsigned>{{open.fds[0], FdWatchers::kWritable}});
  watchers.narrow(open.fds[0], 0);
  REQUIRE(watchers.watched(open.fds[0]) == 0);
  REQUIRE(poll_ready(watchers).empty());

  int closed[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, closed) == 0);
  REQUIRE(watchers.watch(closed[0], FdWatchers::kReadable | FdWatchers::kWritable) == 0);
  close(closed[0]);
  close(closed[1]);
  watchers.narrow(closed[0], FdWatchers::kWritable);
  REQUIRE(watchers.watched(closed[0]) == FdWatchers::kWritable);
  // As a selector's key: the same events again need no system call, more events fail.
  REQUIRE(watchers.watch(closed[0], FdWatchers::kWritable) == 0);
  REQUIRE(watchers.watch(closed[0], FdWatchers::kReadable | FdWatchers::kWritable) == -EBADF);
  REQUIRE(watchers.watched(closed[0]) == 0);
}

TEST_CASE("many descriptors ready at once are all reported in one take") {
  UvLoop loop;
  FdWatchers watchers(loop.raw());
  constexpr int kPairs = 64;
  SocketPair pairs[kPairs];
  for (auto& pair : pairs) {
    REQUIRE(watchers.watch(pair.fds[0], FdWatchers::kReadable) == 0);
    REQUIRE(write(pair.fds[1], "x", 1) == 1);
  }
  REQUIRE(poll_ready(watchers, 1.0).size() == kPairs);
}
