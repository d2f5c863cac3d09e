// Tests for cli/board_views: the board list (a board that did not answer shows its error), image slots, an
// upload that found the image already running, the manufacturing state read or changed, and the refusal to
// advance the state without --yes when nobody can be asked.
#include <doctest/doctest.h>

#include "cli/board_views.hpp"
#include "core/error.hpp"
#include "tests/support/captured_output.hpp"

using namespace kiln;
using namespace kiln::cli;

TEST_CASE("board_views: one record per board, a silent board's error as its status") {
  std::vector<BoardSummary> boards = {
      {BoardAddress{BoardAddress::Kind::emulator, "/run/a.sock", "A1"}, "A1", "blank", "1.2.3", ""},
      {BoardAddress{BoardAddress::Kind::emulator, "/run/b.sock", "B2"}, "B2", "", "", "timed out"}};
  auto rows = Json::parse(test::capture_output("json", [&](const Context& ctx) { render_boards(ctx, boards); }).out);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0] == Json{{"address", boards[0].address.text()}, {"uid", "A1"}, {"state", "blank"},
                        {"firmware", "1.2.3"}, {"status", "ok"}});
  CHECK(rows[1]["status"] == "timed out");
  CHECK(rows[1]["state"] == "");
}

TEST_CASE("board_views: a record per slot; an image already running is said on stderr") {
  ImageSlot slot;
  slot.slot = 1;
  slot.version = "2.0.0";
  slot.hash = {0xab, 0xcd};
  slot.pending = true;
  auto slots = test::capture_output("jsonl", [&](const Context& ctx) { render_slots(ctx, {slot, slot}); }).out;
  CHECK(slots == json_text(slot_json(slot)) + "\n" + json_text(slot_json(slot)) + "\n");

  InstallResult result;
  result.already_running = true;
  auto said = test::capture_output("json", [&](const Context& ctx) { render_install(ctx, "emu:a", "app.bin", result, true); });
  CHECK(said.err == "board emu:a already runs app.bin: nothing uploaded; it is confirmed\n");
  CHECK(Json::parse(said.out)["mark"] == "confirmed");
  result.already_running = false;
  said = test::capture_output("json", [&](const Context& ctx) { render_install(ctx, "emu:a", "app.bin", result, false); });
  CHECK(said.err.empty());
  CHECK(Json::parse(said.out)["mark"] == "test");
}

TEST_CASE("board_views: the state read, reached, or what a dry run would reach") {
  BoardIdentity id;
  id.uid = "A1";
  id.state = ManufacturingState::module_complete;
  CHECK(board_state_json("emu:a", id) == Json{{"address", "emu:a"}, {"uid", "A1"}, {"state", "module-complete"}});
  CHECK(state_change_json("emu:a", ManufacturingState::device_complete, false) ==
        Json{{"address", "emu:a"}, {"state", "device-complete"}, {"dry_run", false}});
  CHECK(state_change_json("emu:a", ManufacturingState::device_complete, true) ==
        Json{{"address", "emu:a"}, {"would_become", "device-complete"}, {"dry_run", true}});
}

TEST_CASE("board_views: advancing the state without --yes is refused when stdin is not a terminal (exit 7)") {
  ExitCode code = ExitCode::ok;
  std::string message;
  test::capture_output("json", [&](const Context& ctx) {
    try {
      confirm_state_change(ctx, "emu:a", "device-complete");
    } catch (const Error& e) {
      code = e.code();
      message = e.what();
    }
  });
  CHECK(code == ExitCode::conflict);
  CHECK(message == "refusing to advance board emu:a to device-complete without --yes");
}
