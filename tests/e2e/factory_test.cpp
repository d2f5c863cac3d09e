// End to end: kiln factory against kiln-board-emu processes — run --all, faults, kill -9 of the
// station, quota, vendor-root refusal, ledger tamper, and openssl verify of every issued chain.
#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/emulator_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using nlohmann::json;

namespace {

// A station directory: CA, boot key, an emulator directory and a profile.
struct Line {
  test::TempDir dir;
  std::string emu_dir = dir.file("emu");
  std::string profile = dir.file("station.toml");

  test::ProcessResult kiln(std::vector<std::string> args, int timeout_seconds = 120) const {
    return kiln_on(emu_dir, std::move(args), timeout_seconds);
  }
  test::ProcessResult kiln_on(const std::string& boards, std::vector<std::string> args, int timeout_seconds = 120) const {
    test::ProcessOptions options;
    options.env["KILN_EMU_DIR"] = boards;
    options.timeout_seconds = timeout_seconds;
    return test::run_kiln(args, options);
  }
  void setup(const std::vector<std::string>& extra_init = {}) {
    REQUIRE(kiln({"key", "generate", "-t", "ecdsa-p256", "-o", dir.file("ca.key.pem")}).exit_code == 0);
    REQUIRE(kiln({"key", "generate", "-t", "ecdsa-p256", "-o", dir.file("boot.pem")}).exit_code == 0);
    auto ca = test::run_process("/usr/bin/openssl", {"req", "-x509", "-new", "-key", dir.file("ca.key.pem"), "-subj",
                                                     "/CN=Line 1 CA", "-days", "30", "-out", dir.file("ca.pem")});
    REQUIRE_MESSAGE(ca.exit_code == 0, ca.err);
    auto root = test::run_process(test::bin_path("kiln-board-emu"), {"--dir", emu_dir, "--print-vendor-root"});
    REQUIRE(root.exit_code == 0);
    std::ofstream(dir.file("vendor.pem")) << root.out;
    std::vector<std::string> init{"factory", "init", "--ca-key", dir.file("ca.key.pem"), "--ca-cert", dir.file("ca.pem"),
                                  "--vendor-root", dir.file("vendor.pem"), "--boot-key", dir.file("boot.pem"),
                                  "--product", "Thermostat", "--service", "https://kiln.example:8443", "-o", profile};
    init.insert(init.end(), extra_init.begin(), extra_init.end());
    auto made = kiln(init);
    REQUIRE_MESSAGE(made.exit_code == 0, made.err);
  }
  std::vector<json> lines(const std::string& text) const {
    std::vector<json> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.push_back(json::parse(line));
    return out;
  }
  // Board UID -> manufacturing state, from the board itself via the emulator's state files.
  std::map<std::string, std::string> board_states() const {
    std::map<std::string, std::string> states;
    for (const auto& entry : std::filesystem::directory_iterator(emu_dir)) {
      auto state_file = entry.path() / "state.json";
      if (!entry.is_directory() || !std::filesystem::exists(state_file)) continue;
      std::ifstream in(state_file);
      auto state = json::parse(in);
      states[entry.path().filename().string()] = state.dump();
    }
    return states;
  }
  // UIDs in the exported bundle, checking each chain with openssl verify on the way.
  std::set<std::string> exported_and_verified() const {
    auto exported = kiln({"factory", "ledger", "export", "--profile", profile, "-o", dir.file("units.jsonl")});
    REQUIRE_MESSAGE(exported.exit_code == 0, exported.err);
    std::ifstream in(dir.file("units.jsonl"));
    std::set<std::string> uids;
    for (std::string line; std::getline(in, line);) {
      auto unit = json::parse(line);
      if (unit.contains("bundle_signature")) continue;
      CHECK_FALSE(uids.count(unit["uid"].get<std::string>()));
      uids.insert(unit["uid"].get<std::string>());
      std::ofstream(dir.file("leaf.pem")) << unit["certificate"].get<std::string>();
      auto verified = test::run_process("/usr/bin/openssl", {"verify", "-CAfile", dir.file("ca.pem"), dir.file("leaf.pem")});
      CHECK_MESSAGE(verified.exit_code == 0, verified.err);
    }
    return uids;
  }
};

}  // namespace

TEST_CASE("factory e2e: run --all provisions every board, streams events, and the ledger verifies and exports") {
  Line line;
  line.setup();
  test::EmulatorProcess emulator(line.emu_dir, 4);

  auto dry = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile, "--dry-run"});
  REQUIRE_MESSAGE(dry.exit_code == 0, dry.err);
  for (const auto& board : json::parse(dry.out)) CHECK(board["result"] == "dry-run");

  auto run = line.kiln({"-o", "jsonl", "factory", "run", "--all", "--jobs", "4", "--profile", line.profile});
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  auto events = line.lines(run.out);
  std::map<std::string, int> done;
  for (const auto& e : events) {
    CHECK(e.contains("board"));
    CHECK(e.contains("duration_ms"));
    if (e["step"] == "done") done[e["uid"]]++;
    if (e["step"] == "final-state") CHECK(e["result"] == "ok");
  }
  CHECK(done.size() == 4);

  auto verify = line.kiln({"-o", "json", "factory", "ledger", "verify", "--profile", line.profile});
  REQUIRE_MESSAGE(verify.exit_code == 0, verify.err);
  CHECK(json::parse(verify.out)["units"] == 4);
  CHECK(json::parse(verify.out)["unsealed_rows"] == 0);
  CHECK(line.exported_and_verified().size() == 4);

  auto stats = line.kiln({"-o", "json", "factory", "ledger", "stats", "--profile", line.profile});
  REQUIRE(stats.exit_code == 0);
  CHECK(json::parse(stats.out)["units_provisioned"] == 4);
  CHECK(json::parse(stats.out)["yield"] == 1.0);

  auto again = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile});
  REQUIRE(again.exit_code == 0);
  for (const auto& board : json::parse(again.out)) CHECK(board["result"] == "already-provisioned");
}

TEST_CASE("factory e2e: a board failing its final state is named (exit 8) and a re-run completes it") {
  Line line;
  line.setup();
  std::string failing_uid;
  {
    // 64:6 is set-state: every board's last step fails, after its ledger row.
    test::EmulatorProcess emulator(line.emu_dir, 3, {"--fail-command", "64:6"});
    auto run = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile});
    CHECK(run.exit_code == 8);
    CHECK(run.err.find("3 of 3 boards failed") != std::string::npos);
    CHECK(run.err.find("final-state") != std::string::npos);
  }
  for (const auto& [uid, state] : line.board_states()) CHECK(state.find("device-complete") == std::string::npos);
  test::EmulatorProcess emulator(line.emu_dir, 3);
  auto rerun = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile});
  REQUIRE_MESSAGE(rerun.exit_code == 0, rerun.err);
  auto stats = json::parse(line.kiln({"-o", "json", "factory", "ledger", "stats", "--profile", line.profile}).out);
  CHECK(stats["certificates_issued"] == 3);  // the re-run reused every certificate
  CHECK(stats["failures_per_step"]["final-state"] == 3);
  CHECK(line.exported_and_verified().size() == 3);
}

TEST_CASE("factory e2e: kill -9 of the station mid-run, then a re-run completes every board") {
  Line line;
  line.setup();
  test::EmulatorProcess emulator(line.emu_dir, 6, {"--latency-us", "50000"});
  // Each request takes ~100 ms: a 1-second budget kills the station (SIGKILL) mid-run.
  auto killed = line.kiln({"-o", "jsonl", "factory", "run", "--all", "--jobs", "2", "--profile", line.profile}, 1);
  CHECK(killed.exit_code == 128 + SIGKILL);
  auto rerun = line.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "6", "--profile", line.profile});
  REQUIRE_MESSAGE(rerun.exit_code == 0, rerun.err);
  auto verify = line.kiln({"factory", "ledger", "verify", "--profile", line.profile});
  CHECK_MESSAGE(verify.exit_code == 0, verify.err);
  CHECK(line.exported_and_verified().size() == 6);
  auto stats = json::parse(line.kiln({"-o", "json", "factory", "ledger", "stats", "--profile", line.profile}).out);
  CHECK(stats["units_provisioned"] == 6);
  CHECK(stats["certificates_issued"].get<int>() <= 6 + 2);  // at most the two in flight when killed were lost
}

TEST_CASE("factory e2e: quota, vendor-root mismatch and a tampered ledger are refused with their exit codes") {
  Line line;
  line.setup({"--quota", "2"});
  test::EmulatorProcess emulator(line.emu_dir, 3);
  auto run = line.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "1", "--profile", line.profile});
  CHECK(run.exit_code == 8);
  CHECK(run.err.find("1 of 3 boards failed") != std::string::npos);
  CHECK(run.err.find("(certificate)") != std::string::npos);

  // A profile naming another vendor's root: exit 3 before anything is written.
  test::TempDir other;
  auto root = test::run_process(test::bin_path("kiln-board-emu"), {"--dir", other.path().string(), "--print-vendor-root"});
  std::ofstream(line.dir.file("vendor.pem")) << root.out;
  auto first_board = emulator.uids().front();
  auto refused = line.kiln({"factory", "provision", "--board", first_board, "--profile", line.profile});
  CHECK(refused.exit_code == 3);
  CHECK(refused.err.find("vendor root") != std::string::npos);

  // Edit a row behind the station's back: verify names it and export refuses.
  auto edit = test::run_process("/usr/bin/sqlite3", {line.dir.file("station-ledger.sqlite"),
                                                     "UPDATE ledger SET content = replace(content, 'Thermostat', "
                                                     "'Toaster') WHERE seq = 1"});
  REQUIRE_MESSAGE(edit.exit_code == 0, edit.err);
  auto verify = line.kiln({"factory", "ledger", "verify", "--profile", line.profile});
  CHECK(verify.exit_code == 3);
  CHECK(verify.err.find("row 1 was edited") != std::string::npos);
  CHECK(line.kiln({"factory", "ledger", "export", "--profile", line.profile, "-o", line.dir.file("u.jsonl")}).exit_code == 3);
}

TEST_CASE("factory e2e: two station processes sharing one ledger never issue more certificates than the quota") {
  Line line;
  line.setup({"--quota", "3"});
  // Two lines of boards, one station process each, both started at once on the same profile and
  // ledger. Latency keeps every attempt open long enough for the two to overlap.
  std::string other_dir = line.dir.file("emu2");
  std::filesystem::create_directories(other_dir);
  for (const char* file : {"vendor-root.pem", "vendor-root.key.pem"})  // same silicon vendor on both lines
    std::filesystem::copy_file(std::filesystem::path(line.emu_dir) / file, std::filesystem::path(other_dir) / file);
  test::EmulatorProcess first(line.emu_dir, 3, {"--latency-us", "20000"});
  test::EmulatorProcess second(other_dir, 3, {"--latency-us", "20000"});
  test::ProcessResult a, b;
  std::thread station_a([&] {
    a = line.kiln({"-o", "json", "factory", "run", "--all", "--jobs", "3", "--profile", line.profile, "--operator", "a"});
  });
  std::thread station_b([&] {
    b = line.kiln_on(other_dir, {"-o", "json", "factory", "run", "--all", "--jobs", "3", "--profile", line.profile,
                                 "--operator", "b"});
  });
  station_a.join();
  station_b.join();
  int provisioned = 0, refused = 0;
  for (const auto* run : {&a, &b}) {
    CHECK((run->exit_code == 0 || run->exit_code == 8));
    if (run->out.empty()) continue;
    for (const auto& board : json::parse(run->out)) {
      if (board["result"] == "provisioned") ++provisioned;
      if (board.value("failed_step", "") == "certificate") ++refused;
    }
  }
  CHECK(provisioned == 3);
  CHECK_MESSAGE(refused == 3, a.out, b.out, a.err, b.err);
  auto stats = json::parse(line.kiln({"-o", "json", "factory", "ledger", "stats", "--profile", line.profile}).out);
  CHECK(stats["certificates_issued"] == 3);
  CHECK(stats["certificates_reserved"] == 0);  // every reservation was consumed or released
  CHECK(line.kiln({"factory", "ledger", "verify", "--profile", line.profile}).exit_code == 0);
  CHECK(line.exported_and_verified().size() == 3);
}

TEST_CASE("factory e2e: watch provisions boards that appear after it started, then stops after --count") {
  Line line;
  line.setup();
  std::filesystem::create_directories(line.emu_dir);
  // The boards appear half a second after the station starts watching.
  std::unique_ptr<test::EmulatorProcess> emulator;
  std::thread plug_in([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    emulator = std::make_unique<test::EmulatorProcess>(line.emu_dir, 2);
  });
  auto watched = line.kiln({"-o", "jsonl", "factory", "watch", "--count", "2", "--profile", line.profile}, 60);
  plug_in.join();
  REQUIRE_MESSAGE(watched.exit_code == 0, watched.err);
  std::set<std::string> provisioned;
  for (const auto& e : line.lines(watched.out))
    if (e["step"] == "done" && e["result"] == "provisioned") provisioned.insert(e["uid"].get<std::string>());
  CHECK(provisioned.size() == 2);
  CHECK(provisioned.count(emulator->uids().at(0)) == 1);
  CHECK(line.kiln({"factory", "ledger", "verify", "--profile", line.profile}).exit_code == 0);
}
