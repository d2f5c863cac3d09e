// Link: one way to move whole SMP packets to and from a board (Unix socket, serial, USB).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "core/bytes.hpp"

namespace kiln {

class Link {
 public:
  virtual ~Link() = default;
  // Sends one whole SMP packet. Throws Error(board) if the board is gone.
  virtual void send(ByteView packet) = 0;
  // The next whole SMP packet, or nullopt when `timeout` passes first. Throws Error(board) on
  // disconnect or on a frame the link layer can tell is damaged (bad CRC, bad header).
  virtual std::optional<Bytes> receive(std::chrono::milliseconds timeout) = 0;
  // "emu:/tmp/b/0a1b.sock", "usb:1-2", "serial:/dev/ttyACM0": names the board in messages.
  virtual std::string address() const = 0;
};

// Cuts a byte stream into SMP packets using the header's length field.
class PacketAssembler {
 public:
  void append(ByteView bytes) { buffer_.insert(buffer_.end(), bytes.begin(), bytes.end()); }
  // The next complete packet, if buffered. Throws Error(board) on a header that cannot be valid.
  std::optional<Bytes> next();
  bool empty() const { return buffer_.empty(); }

 private:
  Bytes buffer_;
};

// Connects to an emulated board's Unix socket.
std::unique_ptr<Link> open_socket_link(const std::string& socket_path);

}  // namespace kiln
