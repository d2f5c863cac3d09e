// Zephyr SMP console framing: base64 lines with CRC16-XMODEM, encoder and hostile-input-safe decoder.
#include "transport/console_framing.hpp"

#include <fmt/format.h>

#include "core/base64.hpp"
#include "core/error.hpp"

namespace kiln {
namespace {

constexpr std::uint8_t first_marker[2] = {0x06, 0x09};
constexpr std::uint8_t continuation_marker[2] = {0x04, 0x14};
constexpr std::size_t raw_bytes_per_line = (console_line_max - 3) / 4 * 3;  // 93 bytes -> 124 base64 chars


}  // namespace

std::uint16_t crc16_xmodem(ByteView bytes) {
  std::uint16_t crc = 0;
  for (std::uint8_t b : bytes) {
    crc = static_cast<std::uint16_t>(crc ^ (b << 8));
    for (int i = 0; i < 8; ++i) crc = static_cast<std::uint16_t>(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
  }
  return crc;
}

std::string encode_console_frame(ByteView smp_packet) {
  Bytes raw;
  std::size_t total = smp_packet.size() + 2;
  if (total > 0xFFFF) throw Error(ExitCode::failure, "SMP packet too large for console framing");
  raw.push_back(static_cast<std::uint8_t>(total >> 8));
  raw.push_back(static_cast<std::uint8_t>(total));
  raw.insert(raw.end(), smp_packet.begin(), smp_packet.end());
  std::uint16_t crc = crc16_xmodem(smp_packet);
  raw.push_back(static_cast<std::uint8_t>(crc >> 8));
  raw.push_back(static_cast<std::uint8_t>(crc));

  std::string out;
  for (std::size_t off = 0; off < raw.size(); off += raw_bytes_per_line) {
    const std::uint8_t* marker = off == 0 ? first_marker : continuation_marker;
    out.push_back(static_cast<char>(marker[0]));
    out.push_back(static_cast<char>(marker[1]));
    std::size_t n = std::min(raw_bytes_per_line, raw.size() - off);
    out += to_base64(ByteView(raw.data() + off, n));
    out.push_back('\n');
  }
  return out;
}

void ConsoleFrameDecoder::feed(ByteView bytes) {
  for (std::uint8_t b : bytes) {
    if (b == '\n') {
      if (!line_overflow_) take_line(line_);
      line_.clear();
      line_overflow_ = false;
      continue;
    }
    if (line_.size() >= 2 * console_line_max) {  // never buffer an endless line
      line_overflow_ = true;
      continue;
    }
    line_.push_back(static_cast<char>(b));
  }
}

void ConsoleFrameDecoder::take_line(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.size() < 2) return;
  bool first = static_cast<std::uint8_t>(line[0]) == first_marker[0] && static_cast<std::uint8_t>(line[1]) == first_marker[1];
  bool continuation = static_cast<std::uint8_t>(line[0]) == continuation_marker[0] &&
                      static_cast<std::uint8_t>(line[1]) == continuation_marker[1];
  if (!first && !continuation) return;  // console output, not SMP
  if (continuation && !in_frame_) return;
  auto decoded = line.size() > 2 ? from_base64(line.substr(2)) : std::nullopt;  // a marker alone is no frame
  if (!decoded) {
    in_frame_ = false;
    error_ = "bad base64 in a console frame";
    return;
  }
  if (first) {
    if (decoded->size() < 2) {
      error_ = "console frame too short for its length field";
      return;
    }
    expected_ = (static_cast<std::size_t>((*decoded)[0]) << 8) | (*decoded)[1];
    frame_.assign(decoded->begin() + 2, decoded->end());
    in_frame_ = true;
    if (expected_ < 2) {
      in_frame_ = false;
      error_ = fmt::format("console frame length {} cannot hold a CRC", expected_);
      return;
    }
  } else {
    frame_.insert(frame_.end(), decoded->begin(), decoded->end());
  }
  if (frame_.size() < expected_) return;
  in_frame_ = false;
  if (frame_.size() > expected_) {
    error_ = fmt::format("console frame has {} bytes but its length field says {}", frame_.size(), expected_);
    return;
  }
  ByteView packet = ByteView(frame_).first(expected_ - 2);
  std::uint16_t crc = static_cast<std::uint16_t>((frame_[expected_ - 2] << 8) | frame_[expected_ - 1]);
  if (crc16_xmodem(packet) != crc) {
    error_ = fmt::format("console frame CRC mismatch (got {:04x}, computed {:04x})", crc, crc16_xmodem(packet));
    return;
  }
  ready_.emplace_back(packet.begin(), packet.end());
}

std::optional<Bytes> ConsoleFrameDecoder::next() {
  if (error_) {
    std::string message = *error_;
    error_.reset();
    throw Error(ExitCode::board, "damaged serial frame: " + message, "check the cable and the baud rate; retry");
  }
  if (ready_.empty()) return std::nullopt;
  Bytes packet = std::move(ready_.front());
  ready_.erase(ready_.begin());
  return packet;
}

}  // namespace kiln
