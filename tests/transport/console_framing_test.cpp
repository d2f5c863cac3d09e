// Tests for Zephyr SMP console framing: line layout, CRC, split frames, damage detection.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "transport/console_framing.hpp"
#include "transport/smp.hpp"

using namespace kiln;

TEST_CASE("console framing: CRC16-XMODEM check value") {
  CHECK(crc16_xmodem(as_bytes("123456789")) == 0x31C3);
}

TEST_CASE("console framing: one short packet is one marked base64 line") {
  Bytes packet = smp::encode_frame(smp::Header{}, {{"d", "hi"}});
  std::string lines = encode_console_frame(packet);
  REQUIRE(lines.size() > 3);
  CHECK(lines[0] == 0x06);
  CHECK(lines[1] == 0x09);
  CHECK(lines.back() == '\n');
  CHECK(lines.find('\n') == lines.size() - 1);
  ConsoleFrameDecoder decoder;
  decoder.feed(as_bytes(lines));
  CHECK(*decoder.next() == packet);
  CHECK_FALSE(decoder.next());
}

TEST_CASE("console framing: long packets continue on 0x04 0x14 lines of at most 127 bytes") {
  Bytes packet = smp::encode_frame(smp::Header{}, {{"data", smp::binary(Bytes(1000, 0x5a))}});
  std::string lines = encode_console_frame(packet);
  std::size_t start = 0, count = 0;
  while (start < lines.size()) {
    auto end = lines.find('\n', start);
    REQUIRE(end != std::string::npos);
    CHECK(end - start + 1 <= console_line_max);
    CHECK(lines[start] == (count == 0 ? 0x06 : 0x04));
    start = end + 1;
    ++count;
  }
  CHECK(count > 5);
  // Console noise between frames and byte-by-byte delivery do not matter.
  std::string stream = "boot banner\n" + lines + "log: hello\n" + lines;
  ConsoleFrameDecoder decoder;
  for (char c : stream) decoder.feed(as_bytes(std::string_view(&c, 1)));
  CHECK(*decoder.next() == packet);
  CHECK(*decoder.next() == packet);
}

TEST_CASE("console framing: damaged frames are reported, then decoding recovers") {
  Bytes packet = smp::encode_frame(smp::Header{}, {{"d", "payload"}});
  std::string lines = encode_console_frame(packet);
  std::string damaged = lines;
  damaged[6] = damaged[6] == 'A' ? 'B' : 'A';  // one base64 character changed
  ConsoleFrameDecoder decoder;
  decoder.feed(as_bytes(damaged));
  CHECK_THROWS_WITH_AS(decoder.next(), doctest::Contains("damaged serial frame"), Error);
  decoder.feed(as_bytes(lines));
  CHECK(*decoder.next() == packet);
  // A bad base64 line.
  decoder.feed(as_bytes("\x06\x09!!!!\n"));
  CHECK_THROWS_AS(decoder.next(), Error);
}
