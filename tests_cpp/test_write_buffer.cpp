// WriteBuffer: bytes come out in the order they went in, whatever the pattern of partial sends.
#include "catch.hpp"

#include <random>
#include <string>

#include "core/write_buffer.hpp"

using turboloop::core::WriteBuffer;

TEST_CASE("appended bytes are sent front first and consumed in pieces") {
  WriteBuffer buffer;
  REQUIRE(buffer.empty());
  buffer.append("hello ", 6);
  buffer.append("world", 5);
  REQUIRE(buffer.size() == 11);
  REQUIRE(std::string(buffer.front(), buffer.size()) == "hello world");
  buffer.consume(6);
  REQUIRE(std::string(buffer.front(), buffer.size()) == "world");
  buffer.append("!", 1);
  REQUIRE(std::string(buffer.front(), buffer.size()) == "world!");
  buffer.consume(100);  // more than held: everything, no more
  REQUIRE(buffer.empty());
  buffer.append("again", 5);
  REQUIRE(std::string(buffer.front(), buffer.size()) == "again");
  buffer.clear();
  REQUIRE(buffer.size() == 0);
}

TEST_CASE("random appends and partial sends keep every byte in order") {
  std::mt19937 random(12345);
  WriteBuffer buffer;
  std::string sent;
  std::string expected;
  unsigned char next = 0;
  for (int step = 0; step < 20000; ++step) {
    if (random() % 2 == 0) {
      std::string chunk(random() % 300, '\0');
      for (char& byte : chunk) byte = static_cast<char>(next++);
      expected += chunk;
      buffer.append(chunk.data(), chunk.size());
    } else if (!buffer.empty()) {
      const std::size_t count = 1 + random() % buffer.size();
      sent.append(buffer.front(), count);
      buffer.consume(count);
    }
  }
  sent.append(buffer.front(), buffer.size());
  REQUIRE(sent == expected);
}
