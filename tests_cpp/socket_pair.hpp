// A connected pair of non-blocking Unix stream sockets for a test, closed when it goes (a test
// that closes one end itself sets it to -1).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include "catch.hpp"

struct SocketPair {
  int fds[2];
  SocketPair() { REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0); }
  ~SocketPair() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }
};
