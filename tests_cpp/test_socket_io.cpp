// send_pieces(): one sendmsg() of many pieces, in order; a full socket gives 0, a closed peer
// -EPIPE (never SIGPIPE).
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "catch.hpp"
#include "core/socket_io.hpp"
#include "socket_pair.hpp"

using turboloop::core::receive;
using turboloop::core::send_pieces;

namespace {

iovec piece(const std::string& text) { return {const_cast<char*>(text.data()), text.size()}; }

}  // namespace

TEST_CASE("send_pieces sends the pieces in order, as one stream") {
  SocketPair pair;
  const std::string one = "hello", two = ", ", three = "world";
  std::vector<iovec> pieces = {piece(one), piece(two), piece(three)};
  REQUIRE(send_pieces(pair.fds[0], pieces.data(), pieces.size()) == 12);
  char received[32];
  REQUIRE(receive(pair.fds[1], received, sizeof received) == 12);
  REQUIRE(std::string(received, 12) == "hello, world");
}

TEST_CASE("send_pieces gives 0 when the socket can take no more, and the count it took before") {
  SocketPair pair;
  const std::string block(64 * 1024, 'x');
  std::vector<iovec> pieces = {piece(block), piece(block)};
  std::size_t total = 0;
  ssize_t sent;
  while ((sent = send_pieces(pair.fds[0], pieces.data(), pieces.size())) > 0) {
    REQUIRE(static_cast<std::size_t>(sent) <= 2 * block.size());
    total += static_cast<std::size_t>(sent);
  }
  REQUIRE(sent == 0);
  REQUIRE(total > 0);
}

TEST_CASE("send_pieces to a closed peer is -EPIPE, not SIGPIPE") {
  SocketPair pair;
  close(pair.fds[1]);
  pair.fds[1] = -1;
  const std::string text = "lost";
  iovec one = piece(text);
  REQUIRE(send_pieces(pair.fds[0], &one, 1) == -EPIPE);
}
