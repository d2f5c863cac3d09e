// Link over USB bulk endpoints (vendor interface class 0xFF) through libusb-1.0.
#include <fmt/format.h>

#include "core/error.hpp"
#include "transport/board_address.hpp"

namespace kiln {

std::unique_ptr<Link> open_usb_link(const BoardAddress& address) {
  throw Error(ExitCode::board, fmt::format("board {}: the USB link is not available in this build", address.text()),
              "use an emulated (emu:) or serial (serial:) board");
}

}  // namespace kiln
