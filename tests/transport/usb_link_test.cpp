// Tests for transport/usb_link without a USB board (tests/umockdev/usb_link_test.cpp speaks to an emulated
// one): a location nothing is plugged into is a board error naming it, discovery and the watch find nothing
// for IDs no device has, and the watch scans first, then waits for its interval.
#include <doctest/doctest.h>

#include <chrono>
#include <string>

#include "core/error.hpp"
#include "transport/board_address.hpp"
#include "transport/link.hpp"

using namespace kiln;

namespace {

// A vendor and product ID no real device uses.
const std::vector<std::pair<std::uint16_t, std::uint16_t>> nobody = {{0xfffe, 0xfffd}};

}  // namespace

TEST_CASE("usb link: a location with no device is exit 4 naming the address") {
  auto address = parse_board_address("usb:250-9.9.9");
  REQUIRE(address);
  try {
    open_usb_link(*address);
    FAIL("nothing is plugged in at usb:250-9.9.9");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::board);
    std::string what = e.what();
    // Without USB at all (a container), libusb says so; with USB, nothing is at that port.
    bool named = what == "no USB device at usb:250-9.9.9" || what.starts_with("cannot use USB: ");
    CHECK_MESSAGE(named, what);
    if (what.starts_with("no USB device")) CHECK(e.hint() == "run 'kiln board list'");
  }
}

TEST_CASE("usb link: discovery and the watch find no board for IDs no device has") {
  CHECK(discover_usb_boards(nobody).empty());
  CHECK(discover_usb_boards({}).empty());
  UsbBoardWatch watch(nobody, std::chrono::milliseconds(50));
  CHECK(watch.poll().empty());  // the first poll scans
  CHECK(watch.poll().empty());  // too soon: no scan, nothing new
  CHECK(std::string(watch.last_cause()) == "re-scan");
}
