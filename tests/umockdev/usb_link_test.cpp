// The real libusb code path against a umockdev-emulated USB board: in-process SmpClient and the
// kiln binary end to end over usb:. Runs under umockdev-wrapper (LD_PRELOAD of the umockdev preload).
#include <doctest/doctest.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/files.hpp"
#include "emulator/board.hpp"
#include "tests/support/link_checks.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/umockdev/usb_board.hpp"
#include "transport/board_address.hpp"
#include "transport/board_api.hpp"
#include "transport/provisioning_group.hpp"

using namespace kiln;
using nlohmann::json;

namespace {

bool under_umockdev() {
  const char* preload = std::getenv("LD_PRELOAD");
  return preload && std::string(preload).find("umockdev") != std::string::npos;
}

struct UsbFixture {
  test::TempDir dir;
  emu::VendorRoot root = emu::load_or_create_vendor_root(dir.path());
  std::unique_ptr<emu::Board> board = emu::Board::create(dir.path(), root, {}, 0);
  test::UsbBoard usb{*board};
};

}  // namespace

TEST_CASE("usb: runs under the umockdev preload") {
  REQUIRE_MESSAGE(under_umockdev(), "run this test through umockdev-wrapper (ctest does)");
}

TEST_CASE("usb: discovery finds the board by VID/PID with its serial number as UID hint") {
  REQUIRE(under_umockdev());
  UsbFixture f;
  auto boards = discover_boards({});
  REQUIRE(boards.size() == 1);
  CHECK(boards[0].text() == "usb:1-1");
  CHECK(boards[0].uid_hint == f.board->uid());
  CHECK(select_board(f.board->uid(), {}).text() == "usb:1-1");
}

TEST_CASE("usb: SMP over libusb bulk transfers: echo, identity and a windowed upload") {
  REQUIRE(under_umockdev());
  UsbFixture f;
  SmpClient client(open_link(*parse_board_address("usb:1-1")));
  CHECK(client.board() == "usb:1-1");
  CHECK(echo(client, "over usb") == "over usb");
  CHECK(read_identity(client).uid == f.board->uid());
  test::check_upload_lands_in_slot_1(client, f.dir.path(), 6, 0, 1, 40000);
}

TEST_CASE("usb: unplugging mid-conversation is a clear error naming the board") {
  REQUIRE(under_umockdev());
  UsbFixture f;
  SmpClient client(open_link(*parse_board_address("usb:1-1")));
  echo(client, "before");
  f.usb.unplug();
  try {
    echo(client, "after");
    FAIL("no error after unplug");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::board);
    CHECK(std::string(e.what()).find("usb:1-1") != std::string::npos);
  }
}

TEST_CASE("usb: kiln board list, info and upload end to end over usb:") {
  REQUIRE(under_umockdev());
  UsbFixture f;
  auto list = test::kiln({"-o", "json", "board", "list"});
  REQUIRE_MESSAGE(list.exit_code == 0, list.err);
  auto boards = json::parse(list.out);
  REQUIRE(boards.size() == 1);
  CHECK(boards[0]["address"] == "usb:1-1");
  CHECK(boards[0]["uid"] == f.board->uid());
  CHECK(boards[0]["state"] == "blank");

  auto info = test::kiln({"-o", "json", "board", "info", "-b", "usb:1-1"});
  REQUIRE_MESSAGE(info.exit_code == 0, info.err);
  CHECK(json::parse(info.out)["uid"] == f.board->uid());

  auto image = f.dir.file("fw.bin");
  write_file_atomic(image, emu::make_test_image(8, 1, 0, 100000));
  auto upload = test::kiln({"-o", "json", "board", "upload", image, "-b", f.board->uid(), "--confirm", "--reset"});
  REQUIRE_MESSAGE(upload.exit_code == 0, upload.err);
  auto images = test::kiln({"-o", "json", "board", "images", "-b", "usb:1-1"});
  REQUIRE_MESSAGE(images.exit_code == 0, images.err);
  auto slots = json::parse(images.out);
  CHECK(slots[0]["version"] == "8.1.0");
  CHECK(slots[0]["active"] == true);
}

TEST_CASE("usb: kiln board upload unplugged mid-way fails naming the board; after replug it resumes") {
  REQUIRE(under_umockdev());
  UsbFixture f;
  auto image = f.dir.file("fw.bin");
  write_file_atomic(image, emu::make_test_image(9, 0, 0, 300000));
  f.usb.unplug_after_bytes(120000);
  auto cut = test::kiln({"board", "upload", image, "-b", "usb:1-1"});
  CHECK(cut.exit_code == 4);
  CHECK(cut.err.find("usb:1-1") != std::string::npos);
  CHECK(cut.err.find("disconnected") != std::string::npos);
  f.usb.replug();
  auto again = test::kiln({"-o", "json", "board", "upload", image, "-b", "usb:1-1"});
  REQUIRE_MESSAGE(again.exit_code == 0, again.err);
  auto result = json::parse(again.out);
  CHECK(result["resumed_from"].get<std::uint64_t>() > 0);
  CHECK(result["slots"][1]["version"] == "9.0.0");
}

TEST_CASE("usb: kiln factory watch provisions a USB board plugged in after it started") {
  REQUIRE(under_umockdev());
  test::TempDir dir;
  emu::VendorRoot root = emu::load_or_create_vendor_root(dir.path());
  auto board = emu::Board::create(dir.path(), root, {}, 0);
  test::UsbBoard usb(*board, false);  // the bus exists, the board is not plugged in yet

  auto ok = [&](const std::vector<std::string>& args) {
    auto r = test::kiln(args);
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  };
  std::string d = dir.path().string();
  ok({"key", "generate", "-t", "ecdsa-p256", "-o", d + "/ca.key.pem"});
  ok({"key", "generate", "-t", "ecdsa-p256", "-o", d + "/boot.pem"});
  auto ca = test::run_process("/usr/bin/openssl", {"req", "-x509", "-new", "-key", d + "/ca.key.pem", "-subj",
                                                   "/CN=USB line CA", "-days", "30", "-out", d + "/ca.pem"});
  REQUIRE_MESSAGE(ca.exit_code == 0, ca.err);
  auto vendor = test::run_process(test::bin_path("kiln-board-emu"), {"--dir", d, "--print-vendor-root"});
  REQUIRE(vendor.exit_code == 0);
  write_file_atomic(dir.path() / "vendor.pem", as_bytes(vendor.out), 0644, AtomicFile::Overwrite::allow);
  ok({"factory", "init", "--ca-key", d + "/ca.key.pem", "--ca-cert", d + "/ca.pem", "--vendor-root", d + "/vendor.pem",
      "--boot-key", d + "/boot.pem", "--product", "Thermostat", "-o", d + "/station.toml"});

  // The board is plugged in once the station says it is watching (its hotplug callback is registered by then).
  test::ProcessOptions options;
  options.unset_env.push_back("KILN_EMU_DIR");
  auto station = test::start_kiln({"-o", "jsonl", "factory", "watch", "--count", "1", "--profile", d + "/station.toml"},
                                  options);
  auto watching = station->wait_for_line(
      [](const std::string& l) { return l.find("watching for boards") != std::string::npos; }, 30, true);
  REQUIRE_MESSAGE(watching, station->wait(5).err);
  usb.plug_in();
  auto watched = station->wait(60);
  REQUIRE_MESSAGE(watched.exit_code == 0, watched.err);
  // The station says how it noticed the board: libusb's hotplug event (umockdev delivers the add
  // uevent to libusb's monitor in the kiln process), not the re-scan that backs it up every 5 s.
  CHECK_MESSAGE(watched.err.find("watching for boards: USB (hotplug)") != std::string::npos, watched.err);
  CHECK_MESSAGE(watched.err.find("usb:1-1 arrived (hotplug event)") != std::string::npos, watched.err);
  bool provisioned = false;
  std::istringstream lines(watched.out);
  for (std::string line; std::getline(lines, line);) {
    auto event = json::parse(line);
    if (event["step"] == "done" && event["result"] == "provisioned") {
      CHECK(event["board"] == "usb:1-1");
      CHECK(event["uid"] == board->uid());
      provisioned = true;
    }
  }
  CHECK(provisioned);
  CHECK(board->manufacturing_state() == ManufacturingState::module_complete);
}
