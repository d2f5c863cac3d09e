// Board addresses (usb:, serial:, emu:, or a UID), discovery of attached boards, opening links.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/link.hpp"

namespace kiln {

struct BoardAddress {
  enum class Kind { emulator, usb, serial };
  Kind kind = Kind::emulator;
  std::string location;  // socket path, "BUS-PORT.PORT", or device path
  std::string uid_hint;  // emulator: socket name; USB: serial-number string; may be empty
  std::string text() const;  // "emu:/tmp/d/0a1b.sock"
};

// "emu:PATH", "usb:BUS-PORT[.PORT...]", "serial:DEVICE"; nullopt for anything else (a UID).
// Throws Error(usage) for a known prefix with a bad location.
std::optional<BoardAddress> parse_board_address(std::string_view text);

struct DiscoveryOptions {
  std::optional<std::filesystem::path> emu_dir;          // KILN_EMU_DIR or config emu-dir
  // Glob patterns for serial boards ("/dev/ttyACM*"), from KILN_SERIAL_PORTS or config serial-ports
  // (comma-separated). Empty by default: an unrelated serial device must not count as a board.
  std::vector<std::string> serial_patterns;
  std::vector<std::pair<std::uint16_t, std::uint16_t>> usb_ids = default_usb_ids();
  static std::vector<std::pair<std::uint16_t, std::uint16_t>> default_usb_ids();
};

// "1209:4b4e,2fe3:0100" (hex VID:PID pairs) as in the config key usb-ids; throws Error(usage).
std::vector<std::pair<std::uint16_t, std::uint16_t>> parse_usb_ids(std::string_view text);

// Emulated boards (sockets, and with kiln-board-emu --serial the <uid>.tty pty links, in emu_dir)
// and USB boards matching usb_ids.
std::vector<BoardAddress> discover_boards(const DiscoveryOptions& options);

// The one board a command acts on: --board as an address or UID, or the only attached board.
// Throws Error(usage) listing the boards when several are attached and none was chosen,
// Error(board) when none is attached or the UID matches nothing.
BoardAddress select_board(const std::optional<std::string>& board, const DiscoveryOptions& options);

std::unique_ptr<Link> open_link(const BoardAddress& address);

// What `kiln board list` shows per board; a board that does not answer keeps its error.
struct BoardSummary {
  BoardAddress address;
  std::string uid;
  std::string state;     // manufacturing state name, empty when unreachable
  std::string firmware;  // version in the primary slot
  std::string error;     // empty when the board answered
};
std::vector<BoardSummary> survey_boards(const DiscoveryOptions& options, std::chrono::milliseconds timeout);

// USB and serial links (usb_link.cpp, serial_link.cpp).
std::unique_ptr<Link> open_usb_link(const BoardAddress& address);
// USB devices with one of the VID:PID pairs; the serial-number string becomes the UID hint.
std::vector<BoardAddress> discover_usb_boards(const std::vector<std::pair<std::uint16_t, std::uint16_t>>& usb_ids);
std::unique_ptr<Link> open_serial_link(const std::string& device);

// USB boards as they come and go: libusb hotplug events where the platform has them
// (LIBUSB_CAP_HAS_HOTPLUG), else a re-enumeration every `poll_interval`. poll() never blocks; it
// returns the boards attached since the previous call (the first call: every board attached now).
// A board unplugged and plugged in again is returned again.
class UsbBoardWatch {
 public:
  explicit UsbBoardWatch(std::vector<std::pair<std::uint16_t, std::uint16_t>> usb_ids,
                         std::chrono::milliseconds poll_interval = std::chrono::milliseconds(1000));
  ~UsbBoardWatch();
  UsbBoardWatch(const UsbBoardWatch&) = delete;
  UsbBoardWatch& operator=(const UsbBoardWatch&) = delete;

  bool hotplug() const;  // false: polling
  std::vector<BoardAddress> poll();
  // How the boards of the last non-empty poll() were noticed: "hotplug event" or "re-scan".
  const char* last_cause() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace kiln
