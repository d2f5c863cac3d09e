// The far end of a serial port in tests (a board for kiln's serial link, a host for the emulator's pty board):
// whole SMP packets read back through Zephyr's console framing.
#pragma once

#include <doctest/doctest.h>

#include <poll.h>
#include <unistd.h>

#include <cstdint>

#include "core/bytes.hpp"
#include "transport/console_framing.hpp"

namespace kiln::test {

// Reads `fd` until `decoder` yields a whole packet (each read waits 5 s at most: a test never hangs).
inline Bytes read_console_packet(int fd, ConsoleFrameDecoder& decoder) {
  while (true) {
    if (auto packet = decoder.next()) return *packet;
    pollfd pfd{fd, POLLIN, 0};
    REQUIRE(::poll(&pfd, 1, 5000) == 1);
    std::uint8_t chunk[4096];
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    REQUIRE(n > 0);
    decoder.feed(ByteView(chunk, static_cast<std::size_t>(n)));
  }
}

}  // namespace kiln::test
