// Tests for provisioning/board_watch with emulated boards served in-process: the boards already in the emulator
// directory are provisioned (at most `jobs` at once) until max_boards have finished, each once; the operator is
// told how boards are watched; an emulator directory that cannot be watched is an error.
#include <doctest/doctest.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/files.hpp"
#include "provisioning/board_watch.hpp"
#include "tests/provisioning/station_fixture.hpp"

using namespace kiln;

TEST_CASE("board_watch: the boards in the emulator directory are provisioned once each, then the watch ends") {
  test::ServedBoards served(3);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  WatchOptions options;
  options.emu_dir = served.dir.path();
  options.usb = false;
  options.jobs = 2;
  options.max_boards = 3;
  std::vector<std::string> notices, reported;
  auto outcomes = watch_boards(
      *station, options, {}, [&](const ProvisionOutcome& o) { reported.push_back(o.uid); },
      [&](const std::string& message) { notices.push_back(message); });
  REQUIRE(outcomes.size() == 3);
  std::set<std::string> uids;
  for (const auto& o : outcomes) {
    const std::string error = o.error;
    CAPTURE(error);
    CHECK(o.result == BoardStatus::provisioned);
    uids.insert(o.uid);
  }
  std::set<std::string> expected;
  for (const auto& board : served.boards) expected.insert(board->uid());
  CHECK(uids == expected);
  CHECK(reported.size() == 3);  // each outcome reported as it finished
  REQUIRE(notices.size() == 1);
  CHECK(notices[0] == "watching for boards: USB (off), emulator directory " + served.dir.path().string());
  for (const auto& uid : expected) CHECK(station->ledger->latest_provisioned(uid));
}

TEST_CASE("board_watch: max_boards 0 returns at once; the emulator directory is made if missing") {
  test::ServedBoards served(1);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  WatchOptions options;
  options.emu_dir = files.dir.path() / "emu" / "boards";
  options.usb = false;
  options.max_boards = 0;
  auto outcomes = watch_boards(*station, options, {}, {});
  CHECK(outcomes.empty());
  CHECK(std::filesystem::is_directory(*options.emu_dir));
}

TEST_CASE("board_watch: an emulator directory that is a file cannot be watched") {
  test::ServedBoards served(1);
  test::StationFiles files(served.root.cert_path);
  auto station = files.open();
  write_file_atomic(files.dir.file("not-a-dir"), Bytes{1});
  WatchOptions options;
  options.emu_dir = files.dir.path() / "not-a-dir";
  options.usb = false;
  options.max_boards = 1;
  CHECK_THROWS_WITH_AS(watch_boards(*station, options, {}, {}),
                       ("cannot watch " + options.emu_dir->string() + ": Not a directory").c_str(), Error);
}
