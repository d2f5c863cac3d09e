// SMP console framing as Zephyr's SMP over UART: length + packet + CRC16-XMODEM, base64 in lines
// of at most 127 bytes, first line marked 0x06 0x09, continuation lines 0x04 0x14.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"

namespace kiln {

constexpr std::size_t console_line_max = 127;  // marker + base64 + '\n'

std::uint16_t crc16_xmodem(ByteView bytes);

// The lines (each ending in '\n') that carry one SMP packet.
std::string encode_console_frame(ByteView smp_packet);

// Feeds raw serial bytes; yields whole SMP packets. Console text between frames is ignored.
// Throws Error(board) on a frame with bad base64, a length that lies, or a CRC mismatch
// (the decoder is ready for the next frame afterwards).
class ConsoleFrameDecoder {
 public:
  void feed(ByteView bytes);
  std::optional<Bytes> next();

 private:
  void take_line(std::string_view line);
  std::string line_;
  bool line_overflow_ = false;
  bool in_frame_ = false;
  std::size_t expected_ = 0;  // decoded bytes after the length field: packet + CRC
  Bytes frame_;
  std::vector<Bytes> ready_;
  std::optional<std::string> error_;
};

}  // namespace kiln
