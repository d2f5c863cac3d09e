// End to end: kiln factory against kiln-board-emu processes — run --all, faults, kill -9 of the
// station, quota, vendor-root refusal, ledger tamper, and openssl verify of every issued chain.
#include <doctest/doctest.h>

#include <csignal>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/files.hpp"
#include "tests/support/emulator_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/service_process.hpp"
#include "tests/support/smp_proxy.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/board_address.hpp"
#include "transport/provisioning_group.hpp"
#include "transport/smp_client.hpp"

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
  // `factory run --all` with the line's profile.
  test::ProcessResult run_all() const { return kiln({"factory", "run", "--all", "--profile", profile}); }
  // Appends `text` (a TOML table) to the station profile.
  void append_to_profile(const std::string& text) const { std::ofstream(profile, std::ios::app) << "\n" << text; }
  void setup(const std::vector<std::string>& extra_init = {}) {
    REQUIRE(kiln({"key", "generate", "-t", "ecdsa-p256", "-o", dir.file("ca.key.pem")}).exit_code == 0);
    REQUIRE(kiln({"key", "generate", "-t", "ecdsa-p256", "-o", dir.file("boot.pem")}).exit_code == 0);
    auto ca = test::run_process("/usr/bin/openssl", {"req", "-x509", "-new", "-key", dir.file("ca.key.pem"), "-subj",
                                                     "/CN=Line 1 CA", "-days", "30", "-out", dir.file("ca.pem")});
    REQUIRE_MESSAGE(ca.exit_code == 0, ca.err);
    test::write_vendor_root(emu_dir, dir.file("vendor.pem"));
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
  // Each request takes ~100 ms. The station is killed (SIGKILL) when the first board's certificate step reports
  // ok: a certificate is issued and recorded as reserved, and that board's install and ledger steps are ahead.
  auto killed = test::kill_factory_run_at(line.emu_dir, line.profile, 2, "certificate");
  // Where it landed: mid-run. At most the other job's board finished; the ledger holds fewer than 6 units.
  int done = 0;
  for (const auto& e : line.lines(killed.out)) done += e["step"] == "done";
  CHECK(done <= 1);
  auto before = json::parse(line.kiln({"-o", "json", "factory", "ledger", "stats", "--profile", line.profile}).out);
  CHECK(before["units_provisioned"].get<int>() <= 1);
  INFO(before.dump());
  CHECK(before["certificates_issued"].get<int>() + before["certificates_reserved"].get<int>() >= 1);
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
  test::write_vendor_root(other.path().string(), line.dir.file("vendor.pem"));
  auto first_board = emulator.uids().front();
  auto refused = line.kiln({"factory", "provision", "--board", first_board, "--profile", line.profile});
  CHECK(refused.exit_code == 3);
  CHECK(refused.err.find("vendor root") != std::string::npos);

  // Edit a row behind the station's back: verify names it and export refuses.
  auto edit = test::run_process("/usr/bin/sqlite3", {line.dir.file("station-ledger.sqlite"),
                                                     "UPDATE ledger SET content = replace(content, 'Thermostat', "
                                                     "'Toaster') WHERE seq = 2"});  // row 1 binds the station
  REQUIRE_MESSAGE(edit.exit_code == 0, edit.err);
  auto verify = line.kiln({"factory", "ledger", "verify", "--profile", line.profile});
  CHECK(verify.exit_code == 3);
  CHECK(verify.err.find("row 2 was edited") != std::string::npos);
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
  // The boards appear once the station says it is watching (not after a fixed delay).
  test::ProcessOptions options;
  options.env["KILN_EMU_DIR"] = line.emu_dir;
  auto station = test::start_kiln({"-o", "jsonl", "factory", "watch", "--count", "2", "--profile", line.profile}, options);
  auto watching = station->wait_for_line(
      [](const std::string& l) { return l.find("watching for boards") != std::string::npos; }, 30, true);
  REQUIRE_MESSAGE(watching, station->wait(5).err);
  auto emulator = std::make_unique<test::EmulatorProcess>(line.emu_dir, 2);
  auto watched = station->wait(60);
  REQUIRE_MESSAGE(watched.exit_code == 0, watched.err);
  std::set<std::string> provisioned;
  for (const auto& e : line.lines(watched.out))
    if (e["step"] == "done" && e["result"] == "provisioned") provisioned.insert(e["uid"].get<std::string>());
  CHECK(provisioned.size() == 2);
  CHECK(provisioned.count(emulator->uids().at(0)) == 1);
  CHECK(line.kiln({"factory", "ledger", "verify", "--profile", line.profile}).exit_code == 0);
}

TEST_CASE("factory e2e: a proxy board replaying a genuine board's attestation is refused with exit 3") {
  Line line;
  line.setup();
  test::EmulatorProcess emulator(line.emu_dir, 2);
  std::string genuine = emulator.sockets().at(0), counterfeit = emulator.sockets().at(1);
  std::string genuine_uid = emulator.uids().at(0);
  // What the attacker captured from the genuine board: its identity answer to some challenge.
  smp::Body captured;
  {
    SmpClient client(open_link(BoardAddress{BoardAddress::Kind::emulator, genuine, genuine_uid}));
    captured = client.call_raw({smp::Op::read, smp::group::kiln_provisioning, provisioning_command::identity,
                                {{"nonce", smp::binary(Bytes(32, 0x42))}}});
  }
  std::filesystem::create_directories(line.dir.file("proxy"));
  test::SmpProxy proxy(
      line.dir.file("proxy/board.sock"), counterfeit,
      [&](const smp::Header& h, const smp::Body&) -> std::optional<smp::Body> {
        if (h.group == smp::group::kiln_provisioning && h.command == provisioning_command::identity) return captured;
        return std::nullopt;
      },
      [&](const smp::Header& h, smp::Body& response) {
        if (h.group == smp::group::kiln_provisioning && h.command == provisioning_command::record)
          response["uid"] = genuine_uid;
      });
  auto refused = line.kiln({"factory", "provision", "--board", proxy.address(), "--profile", line.profile});
  CHECK(refused.exit_code == 3);
  CHECK(refused.err.find(genuine_uid) != std::string::npos);
  CHECK(refused.err.find("replayed") != std::string::npos);
  // The genuine board still provisions, and it is the only certificate for its UID.
  auto real = line.kiln({"-o", "json", "factory", "provision", "--board", "emu:" + genuine, "--profile", line.profile});
  REQUIRE_MESSAGE(real.exit_code == 0, real.err);
  auto stats = json::parse(line.kiln({"-o", "json", "factory", "ledger", "stats", "--profile", line.profile}).out);
  CHECK(stats["certificates_issued"] == 1);
}

TEST_CASE("factory e2e: a second certificate for a UID is refused (exit 7) unless --reprovision, which is recorded") {
  Line line;
  line.setup();
  std::string uid;
  {
    // The certificate is issued and recorded, then installing it fails (64:2).
    test::EmulatorProcess emulator(line.emu_dir, 1, {"--fail-command", "64:2"});
    uid = emulator.uids().at(0);
    auto failed = line.run_all();
    CHECK(failed.exit_code == 4);  // one board: its own failure's code
  }
  // The unit returns with an empty secure element (or a clone claims its UID: the station cannot tell).
  auto board_dir = std::filesystem::path(line.emu_dir) / uid;
  std::filesystem::remove(board_dir / "device.key.pem");
  {
    std::ifstream in(board_dir / "state.json");
    auto state = json::parse(in);
    state.erase("key_origin");
    std::ofstream(board_dir / "state.json") << state.dump(2);
  }
  test::EmulatorProcess emulator(line.emu_dir, 1);
  auto refused = line.kiln({"factory", "provision", "--board", uid, "--profile", line.profile});
  CHECK(refused.exit_code == 7);
  CHECK(refused.err.find("--reprovision") != std::string::npos);
  CHECK(refused.err.find(uid) != std::string::npos);

  auto again = line.kiln({"-o", "json", "factory", "run", "--all", "--reprovision", "--profile", line.profile});
  REQUIRE_MESSAGE(again.exit_code == 0, again.err);
  auto verify = line.kiln({"-o", "json", "factory", "ledger", "verify", "--profile", line.profile});
  REQUIRE_MESSAGE(verify.exit_code == 0, verify.err);
  CHECK(json::parse(verify.out)["reprovisions"] == 1);
  line.exported_and_verified();
  std::ifstream in(line.dir.file("units.jsonl"));
  std::string first;
  std::getline(in, first);
  auto unit = json::parse(first);
  CHECK(unit["uid"] == uid);
  CHECK(unit["reprovisioned"] == true);
}

TEST_CASE("factory e2e: a second station in the same directory keeps its hands off the first one's ledger") {
  Line line;
  line.setup();
  test::EmulatorProcess emulator(line.emu_dir, 2);
  auto first_run = line.kiln({"factory", "provision", "--board", emulator.uids().at(0), "--profile", line.profile});
  REQUIRE_MESSAGE(first_run.exit_code == 0, first_run.err);

  // Another station (its own CA key) initialised in the same directory: the default ledger is taken.
  REQUIRE(line.kiln({"key", "generate", "-t", "ecdsa-p256", "-o", line.dir.file("ca2.key.pem")}).exit_code == 0);
  auto ca2 = test::run_process("/usr/bin/openssl", {"req", "-x509", "-new", "-key", line.dir.file("ca2.key.pem"), "-subj",
                                                    "/CN=Line 2 CA", "-days", "30", "-out", line.dir.file("ca2.pem")});
  REQUIRE(ca2.exit_code == 0);
  std::vector<std::string> init{"factory", "init", "--ca-key", line.dir.file("ca2.key.pem"), "--ca-cert",
                                line.dir.file("ca2.pem"), "--vendor-root", line.dir.file("vendor.pem"), "--boot-key",
                                line.dir.file("boot.pem"), "--product", "Thermostat", "--service",
                                "https://kiln.example:8443", "-o", line.dir.file("station2.toml")};
  auto second_init = line.kiln(init);
  CHECK(second_init.exit_code == 7);
  CHECK(second_init.err.find("--ledger") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(line.dir.file("station2.toml")));

  // Forced onto it anyway (a profile edited by hand): the run refuses before touching a board.
  init.push_back("--ledger");
  init.push_back(line.dir.file("line2.sqlite"));
  REQUIRE(line.kiln(init).exit_code == 0);
  std::string profile2 = read_text_file(line.dir.file("station2.toml"));
  auto at = profile2.find(line.dir.file("line2.sqlite"));
  REQUIRE(at != std::string::npos);
  profile2.replace(at, line.dir.file("line2.sqlite").size(), line.dir.file("station-ledger.sqlite"));
  std::ofstream(line.dir.file("station2.toml")) << profile2;
  auto second_run = line.kiln({"factory", "provision", "--board", emulator.uids().at(1), "--profile",
                               line.dir.file("station2.toml")});
  CHECK(second_run.exit_code == 7);
  CHECK(second_run.err.find("another station key") != std::string::npos);
  CHECK(second_run.err.find("station.ledger") != std::string::npos);

  // The first station's ledger is untouched: it verifies and exports.
  auto verify = line.kiln({"-o", "json", "factory", "ledger", "verify", "--profile", line.profile});
  REQUIRE_MESSAGE(verify.exit_code == 0, verify.err);
  CHECK(json::parse(verify.out)["units"] == 1);
  CHECK(line.exported_and_verified().size() == 1);
}

TEST_CASE("factory e2e: a ledger with its tail deleted no longer verifies or exports") {
  Line line;
  line.setup();
  {  // a checkpoint every 2 unit rows, so the ledger has rows sealed by earlier checkpoints
    std::string profile = read_text_file(line.profile);
    auto at = profile.find("checkpoint_every = 16");
    REQUIRE(at != std::string::npos);
    profile.replace(at, std::string("checkpoint_every = 16").size(), "checkpoint_every = 2");
    std::ofstream(line.profile) << profile;
  }
  // Before the first run there is no ledger: stats says so (exit 9) and creates no empty one.
  CHECK(line.kiln({"factory", "ledger", "stats", "--profile", line.profile}).exit_code == 9);
  CHECK_FALSE(std::filesystem::exists(line.dir.file("station-ledger.sqlite")));
  test::EmulatorProcess emulator(line.emu_dir, 3);
  auto run = line.run_all();
  REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  std::string ledger = line.dir.file("station-ledger.sqlite"), pristine = line.dir.file("pristine.sqlite");
  auto sql = [&](const std::string& database, const std::string& statement) {
    auto result = test::run_process("/usr/bin/sqlite3", {database, statement});
    REQUIRE_MESSAGE(result.exit_code == 0, result.err);
    return result.out;
  };
  auto layout = sql(ledger, "SELECT group_concat(kind, ',') FROM (SELECT kind FROM ledger ORDER BY seq)");
  CAPTURE(layout);
  REQUIRE(line.kiln({"factory", "ledger", "verify", "--profile", line.profile}).exit_code == 0);
  sql(ledger, ".backup '" + pristine + "'");
  // The last checkpoint, and the one (or the station row) before it.
  const std::string last_checkpoint = "(SELECT max(seq) FROM ledger WHERE kind = 'checkpoint')";
  const std::string earlier_seal =
      "(SELECT max(seq) FROM ledger WHERE kind IN ('checkpoint', 'station') AND seq < " + last_checkpoint + ")";
  struct Cut {
    std::string sql;
    std::string problem;
  };
  for (const auto& cut : {
           Cut{"DELETE FROM ledger WHERE seq = (SELECT max(seq) FROM ledger)", "deleted from its end"},  // one row
           Cut{"DELETE FROM ledger WHERE seq >= (SELECT max(seq) - 1 FROM ledger)", "deleted from its end"},  // several
           // every row after a checkpoint (rows the last checkpoint sealed, and that checkpoint)
           Cut{"DELETE FROM ledger WHERE seq > " + earlier_seal, "deleted from its end"},
           // and the head with them
           Cut{"DELETE FROM ledger WHERE seq > " + earlier_seal + "; DELETE FROM head", "head is missing"},
           // every row: the head left behind covers rows that are gone
           Cut{"DELETE FROM ledger", "every row, its station binding included, was deleted"},
           // every row and the head: an empty file proves nothing
           Cut{"DELETE FROM ledger; DELETE FROM head", "has no rows, no station row and no signed head"},
       }) {
    CAPTURE(cut.sql);
    sql(pristine, ".backup '" + ledger + "'");
    REQUIRE(line.kiln({"factory", "ledger", "verify", "--profile", line.profile}).exit_code == 0);
    sql(ledger, cut.sql);
    auto verify = line.kiln({"-o", "json", "factory", "ledger", "verify", "--profile", line.profile});
    CHECK(verify.exit_code == 3);
    CHECK_MESSAGE(verify.err.find(cut.problem) != std::string::npos, verify.err);
    if (!verify.out.empty()) CHECK(json::parse(verify.out)["head_verified"] == false);
    CHECK(line.kiln({"factory", "ledger", "export", "--profile", line.profile, "-o", line.dir.file("u.jsonl")})
              .exit_code == 3);
  }
}

TEST_CASE("factory e2e: kiln-service refuses the bundle of a ledger that went back (older export, restored copy)") {
  Line line;
  line.setup();
  test::EmulatorProcess emulator(line.emu_dir, 4);
  // A service whose tenant trusts this station (its key is the line CA's, registered for stations).
  auto data = line.dir.path() / "svc";
  auto init = test::run_process(test::bin_path("kiln-service"), {"init", "--dir", data.string()});
  REQUIRE_MESSAGE(init.exit_code == 0, init.err);
  test::ServiceProcess service(data);
  auto on_service = [&](std::vector<std::string> args) {
    test::ProcessOptions options;
    options.env["KILN_EMU_DIR"] = line.emu_dir;
    options.env["XDG_CONFIG_HOME"] = line.dir.file("xdg");
    options.env["KILN_SERVICE"] = service.url();
    options.env["KILN_CA_FILE"] = (data / "ca.pem").string();
    auto token = read_text_file(data / "admin.token");
    options.env["KILN_TOKEN"] = token.substr(0, token.find('\n'));
    return test::run_kiln(args, options);
  };
  auto added = on_service({"device", "ca", "add", "--stations", line.dir.file("ca.pem"), "--key", line.dir.file("ca.key.pem")});
  REQUIRE_MESSAGE(added.exit_code == 0, added.err);
  REQUIRE(on_service({"product", "create", "Thermostat"}).exit_code == 0);
  auto devices = [&] {
    auto listed = on_service({"-o", "json", "device", "list"});
    REQUIRE_MESSAGE(listed.exit_code == 0, listed.err);
    return json::parse(listed.out).size();
  };
  auto export_to = [&](const std::string& name) {
    auto exported = line.kiln({"factory", "ledger", "export", "--profile", line.profile, "-o", line.dir.file(name)});
    REQUIRE_MESSAGE(exported.exit_code == 0, exported.err);
    return line.dir.file(name);
  };
  std::string ledger = line.dir.file("station-ledger.sqlite"), copy = line.dir.file("copy.sqlite");
  auto sqlite = [&](const std::string& database, const std::string& statement) {
    auto result = test::run_process("/usr/bin/sqlite3", {database, statement});
    REQUIRE_MESSAGE(result.exit_code == 0, result.err);
  };

  // One board, an export, and a copy of the ledger as it is then; two more boards, a second export.
  auto provision = [&](std::size_t board) {
    auto run = line.kiln({"factory", "provision", "--board", emulator.uids().at(board), "--profile", line.profile});
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
  };
  provision(0);
  auto older = export_to("older.jsonl");
  sqlite(ledger, ".backup '" + copy + "'");
  provision(1);
  provision(2);
  auto newer = export_to("newer.jsonl");

  auto imported = on_service({"-o", "json", "device", "import", newer});
  REQUIRE_MESSAGE(imported.exit_code == 0, imported.err);
  CHECK(devices() == 3);
  // The older bundle is validly signed but shorter than the ledger already imported: refused (exit 7).
  auto shorter = on_service({"device", "import", older});
  CHECK(shorter.exit_code == 7);
  CHECK_MESSAGE(shorter.err.find("rows were deleted from the station's ledger or it was restored from an older copy") !=
                    std::string::npos,
                shorter.err);
  CHECK(devices() == 3);

  // The station's ledger restored from the copy (rows 2 and 3 gone with their head) and written on: its
  // rows and its head are the station's own, so it verifies on the station; the service, which
  // remembers the head it imported, refuses its export, the new unit included.
  sqlite(copy, ".backup '" + ledger + "'");
  provision(3);
  auto verify = line.kiln({"factory", "ledger", "verify", "--profile", line.profile});
  CHECK(verify.exit_code == 0);
  auto restored = on_service({"device", "import", export_to("restored.jsonl")});
  CHECK(restored.exit_code == 7);
  CHECK(restored.err.find("older copy") != std::string::npos);
  CHECK(devices() == 3);

  // The bundle imported before imports again (idempotent).
  auto again = on_service({"-o", "json", "device", "import", newer});
  CHECK_MESSAGE(again.exit_code == 0, again.err);
  CHECK(devices() == 3);
}

TEST_CASE("factory e2e: [encryption] installs the product's image-encryption key, or each board makes its own") {
  SUBCASE("install: every board holds the product key and boots images encrypted for it") {
    Line line;
    line.setup();
    std::string product_key = KILN_VECTORS_DIR "/mcuboot-more/enc-p256.pem";
    line.append_to_profile("[encryption]\nmode = \"install\"\nkey = \"" + product_key + "\"\n");
    test::EmulatorProcess emulator(line.emu_dir, 2);
    auto run = line.kiln({"-o", "jsonl", "factory", "run", "--all", "--profile", line.profile});
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
    int steps = 0;
    for (const auto& e : line.lines(run.out))
      if (e["step"] == "encryption-key") {
        CHECK(e["result"] == "ok");
        ++steps;
      }
    CHECK(steps == 2);
    auto pub = test::run_process("/usr/bin/openssl", {"pkey", "-in", product_key, "-pubout"});
    REQUIRE(pub.exit_code == 0);
    auto exported = line.kiln({"factory", "ledger", "export", "--profile", line.profile, "-o", line.dir.file("u.jsonl")});
    REQUIRE_MESSAGE(exported.exit_code == 0, exported.err);
    std::ifstream in(line.dir.file("u.jsonl"));
    int units = 0;
    for (std::string text; std::getline(in, text);) {
      auto unit = json::parse(text);
      if (unit.contains("bundle_signature")) continue;
      CHECK(unit.value("encryption_key", "") == pub.out);
      ++units;
    }
    CHECK(units == 2);
    for (const auto& uid : emulator.uids()) {
      auto up = line.kiln({"board", "upload", "-b", uid, "--confirm", "--reset",
                           KILN_VECTORS_DIR "/mcuboot-more/enc-p256-aes128.signed.bin"});
      CHECK_MESSAGE(up.exit_code == 0, up.err);
    }
    // A re-run finds the key in place.
    auto again = line.kiln({"-o", "json", "factory", "run", "--all", "--profile", line.profile});
    CHECK(again.exit_code == 0);
  }
  SUBCASE("generate: each board's own key, in the ledger and the bundle") {
    Line line;
    line.setup();
    line.append_to_profile("[encryption]\nmode = \"generate\"\ntype = \"ecies-x25519\"\n");
    test::EmulatorProcess emulator(line.emu_dir, 3);
    auto run = line.run_all();
    REQUIRE_MESSAGE(run.exit_code == 0, run.err);
    auto exported = line.kiln({"factory", "ledger", "export", "--profile", line.profile, "-o", line.dir.file("u.jsonl")});
    REQUIRE_MESSAGE(exported.exit_code == 0, exported.err);
    std::ifstream in(line.dir.file("u.jsonl"));
    std::set<std::string> keys;
    for (std::string text; std::getline(in, text);) {
      auto unit = json::parse(text);
      if (unit.contains("bundle_signature")) continue;
      REQUIRE(unit.contains("encryption_key"));
      keys.insert(unit["encryption_key"].get<std::string>());
      // An X25519 public key (OID 1.3.101.110), not the device's P-256 identity key.
      std::ofstream(line.dir.file("k.pem")) << unit["encryption_key"].get<std::string>();
      auto text_out = test::run_process("/usr/bin/openssl", {"pkey", "-pubin", "-in", line.dir.file("k.pem"), "-text", "-noout"});
      CHECK(text_out.out.find("X25519") != std::string::npos);
    }
    CHECK(keys.size() == 3);
    auto verify = line.kiln({"-o", "json", "factory", "ledger", "verify", "--profile", line.profile});
    CHECK(verify.exit_code == 0);
  }
  SUBCASE("a profile with an unknown mode or a key for generate is refused (exit 2)") {
    Line line;
    line.setup();
    line.append_to_profile("[encryption]\nmode = \"derive\"\n");
    test::EmulatorProcess emulator(line.emu_dir, 1);
    auto r = line.run_all();
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("encryption.mode must be generate or install") != std::string::npos);
  }
}
