// End to end with emulated boards and their update agents: the rollout controls that depend on what boards
// do — a retry with backoff after a download cut by the network (the fault is seen to land: attempt 1 ends
// download_interrupted, attempt 2 installs), and a maintenance window that holds boards until it opens. The
// two run side by side in two groups of one fleet, so the test waits for the window only once. Bad values
// of the new options exit 2. A second case retries after the power was lost while a board wrote the image to
// slot 1 (kiln-board-emu --power-loss-at): attempt 1 ends power_loss when the board is powered up again,
// attempt 2 installs.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "core/time.hpp"
#include "tests/support/ota_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

std::string hh_mm(std::int64_t t) { return fmt::format("{:02}:{:02}", (t / 3600) % 24, (t / 60) % 60); }

// The board agent's saved job (agent/state.json), null without one.
Json agent_job(test::OtaFleet& fleet, const std::string& uid) {
  std::ifstream in(std::filesystem::path(fleet.emu_dir()) / uid / "agent" / "state.json");
  if (!in) return nullptr;
  auto state = Json::parse(in, nullptr, false);
  return state.is_object() ? state.value("job", Json(nullptr)) : Json(nullptr);
}

// The board's own state (state.json in its directory: slots, pending swap; the emulator writes it atomically).
Json board_state(test::OtaFleet& fleet, const std::string& uid) {
  std::ifstream in(std::filesystem::path(fleet.emu_dir()) / uid / "state.json");
  return in ? Json::parse(in, nullptr, false) : Json(nullptr);
}

// Bad values of the new options exit 2 (before anything is sent); device update sets and clears a zone.
void check_options(test::OtaFleet& fleet) {
  const std::vector<std::vector<std::string>> bad = {
      {"--retry", "0"},
      {"--retry", "11"},
      {"--retry", "three"},
      {"--retry", "2", "--retry-backoff", "0s"},
      {"--retry", "2", "--retry-backoff", "-5s"},
      {"--retry", "2", "--retry-backoff", "1m", "--retry-backoff-max", "30s"},
      {"--retry-backoff", "30s"},
      {"--window", "Mon-Fri 01:00-01:00"},
      {"--window", "Someday 01:00-02:00"},
      {"--window", "Mon-Fri 1-4"},
      {"--window", "Mon-Fri 01:00-04:00", "--window-tz", "Mars/Olympus_Mons"},
      {"--window-tz", "UTC"},
  };
  for (auto& extra : bad) {
    std::vector<std::string> args{"deployment", "create", "--group", "Thermo/Field Test", "--image", std::string(64, 'a')};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = fleet.kiln(args);
    CHECK_MESSAGE(r.exit_code == 2, extra.front(), " ", extra.back(), ": ", r.err);
  }
  auto uid = fleet.uids().front();
  CHECK(fleet.kiln({"device", "update", uid, "--time-zone", "Europe/Nowhere"}).exit_code == 2);
  CHECK(fleet.json({"device", "update", uid, "--time-zone", "Europe/Berlin"})["time_zone"] == "Europe/Berlin");
  CHECK(fleet.json({"device", "show", uid})["time_zone"] == "Europe/Berlin");
  CHECK(fleet.json({"device", "update", uid, "--time-zone", "none"})["time_zone"].is_null());
}

}  // namespace

TEST_CASE("rollout agents e2e: a retry installs after a cut download; a maintenance window holds boards until it opens") {
  test::OtaFleetOptions options;
  options.boards = 3;
  options.proxy = true;
  test::OtaFleet fleet(options);
  const auto uids = fleet.uids();
  const std::string retry_uid = uids[0];
  const std::vector<std::string> night(uids.begin() + 1, uids.end());
  fleet.json({"group", "create", "Thermo/Night"});
  std::vector<std::string> assign{"device", "assign"};
  assign.insert(assign.end(), night.begin(), night.end());
  assign.insert(assign.end(), {"--group", "Thermo/Night"});
  fleet.json(assign);
  check_options(fleet);

  // 1. The night group's deployment: a window that opens at the next whole minute (UTC, at least 8 s away).
  auto opens = (unix_now() / 60 + 1) * 60;
  if (opens - unix_now() < 8) opens += 60;
  const auto window = fmt::format("Mon-Sun {}-{}", hh_mm(opens), hh_mm(opens + 600));
  auto night_image = fleet.sign_image("2.1.0", "release.pem", 64 * 1024);
  auto night_upload = fleet.json({"image", "upload", night_image, "--manifest", fleet.make_manifest(night_image, 9)});
  auto night_dep = fleet.json({"deployment", "create", "--group", "Thermo/Night", "--image",
                               night_upload["id"].get<std::string>(), "--window", window, "--window-tz", "UTC"});
  const auto night_id = night_dep["id"].get<std::string>();
  CHECK(night_dep["schedule"]["windows"] == Json::array({window}));
  CHECK(night_dep["schedule"]["time_zone"] == "UTC");
  CHECK(night_dep["window_open"] == false);
  CHECK(night_dep["next_window_at"] == iso8601(opens));
  auto table = fleet.kiln({"deployment", "show", night_id});
  CHECK(table.out.find(window + " (UTC)") != std::string::npos);
  // Held: each night board checks in after the deployment was created and is offered nothing.
  const auto created = night_dep["created_at"].get<std::string>();
  REQUIRE(test::OtaFleet::wait_for([&] {
    for (const auto& uid : night)
      if (test::OtaFleet::text(fleet.json({"device", "show", uid}), "last_seen") <= created) return false;
    return true;
  }, 30));
  auto rows = fleet.deployment_devices(night_id);
  REQUIRE(unix_now() < opens);  // still before the window: the hold above is the window's
  for (const auto& uid : night) {
    CHECK(rows[uid]["status"] == "waiting_window");
    CHECK(test::OtaFleet::text(rows[uid], "detail").find("the next opens at " + iso8601(opens)) != std::string::npos);
    CHECK(fleet.agent_outcome(uid, night_id).empty());
    CHECK(agent_job(fleet, uid).is_null());
  }
  CHECK(fleet.deployment(night_id)["waiting_window"] == 2);

  // 2. Meanwhile, the field group's deployment retries transient failures: cut the download a third in.
  const std::size_t payload = 768 * 1024;
  auto image = fleet.sign_image("2.0.0", "release.pem", payload);
  auto manifest = fleet.make_manifest(image, 7);
  fleet.proxy().cut_responses_after(fleet.proxy().response_bytes() + 256 * 1024);
  auto dep = fleet.deploy(image, manifest, {"--retry", "2", "--retry-backoff", "3s", "--retry-backoff-max", "3s"});
  const auto id = dep["id"].get<std::string>();
  CHECK(dep["retry"] == Json{{"retries", 2}, {"backoff_seconds", 3}, {"backoff_max_seconds", 3}});
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.proxy().cut_happened(); }, 60));
  // The fault landed on the board: its agent ended attempt 1 (keeping the partial image) before the link is back.
  REQUIRE(test::OtaFleet::wait_for([&] { return agent_job(fleet, retry_uid).value("failed_attempt", 0) == 1; }, 30));
  fleet.proxy().allow();
  // ... and on the service: attempt 1 failed with the transient reason, the device waits to retry.
  Json row;
  REQUIRE(test::OtaFleet::wait_for([&] {
    row = fleet.deployment_devices(id)[retry_uid];
    return row["status"] == "retrying";
  }, 30));
  CHECK(row["attempt"] == 1);
  CHECK(test::OtaFleet::text(row, "detail").find("download_interrupted") != std::string::npos);
  CHECK(test::OtaFleet::text(row, "detail").find("attempt 1 of 3") != std::string::npos);
  CHECK(fleet.deployment(id)["failures"] == 0);  // waiting to retry is not a failure
  // Attempt 2, after the backoff, resumes the download and installs.
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.agent_outcome(retry_uid, id) == "installed"; }, 60));
  CHECK(fleet.wait_service_status(id, "installed", 1));
  row = fleet.deployment_devices(id)[retry_uid];
  CHECK(row["status"] == "installed");
  CHECK(row["attempt"] == 2);
  auto report = fleet.json({"deployment", "report", id});
  for (const auto& item : report)
    if (item["device"] == retry_uid) CHECK(item["attempts"] == 2);
  CHECK(fleet.board_version(retry_uid) == "2.0.0");
  CHECK(fleet.board_record(retry_uid)["sequence"] == 7);
  CHECK(fleet.deployment(id)["failures"] == 0);

  // 3. The window opens: the night boards install, none before it opened.
  for (const auto& uid : night)
    CHECK(test::OtaFleet::wait_for([&] { return fleet.agent_outcome(uid, night_id) == "installed"; }, 90));
  CHECK(fleet.wait_service_status(night_id, "installed", 2));
  for (const auto& item : fleet.json({"deployment", "report", night_id})) {
    INFO(item.dump());
    CHECK(item["state"] == "installed");
    CHECK(item["started_at"].get<std::string>() >= iso8601(opens));
  }
  for (const auto& uid : night) CHECK(fleet.board_version(uid) == "2.1.0");
}

TEST_CASE("rollout agents e2e: a retry installs after the power was lost while the board wrote the image to slot 1") {
  test::OtaFleetOptions options;
  options.boards = 1;
  // Provisioning without the firmware step writes no flash: the first flash bytes are the agent's copy of the
  // image into slot 1, and the power goes 100000 bytes into it (the emulator process exits 75).
  options.factory_firmware = false;
  const std::uint64_t cut_at = 100000;
  options.emulator_args = {"--power-loss-at", std::to_string(cut_at)};
  test::OtaFleet fleet(options);
  const auto uid = fleet.uids().front();
  const auto primary_before = board_state(fleet, uid)["primary_hash"];
  REQUIRE(primary_before.is_string());
  auto image = fleet.sign_image("2.2.0", "release.pem", 300 * 1024);
  REQUIRE(std::filesystem::file_size(image) > cut_at);
  auto dep = fleet.deploy(image, fleet.make_manifest(image, 11), {"--retry", "2", "--retry-backoff", "1s"});
  const auto id = dep["id"].get<std::string>();
  CHECK(dep["retry"]["retries"] == 2);
  CHECK(dep["retry"]["backoff_seconds"] == 1);

  // 1. The fault lands: the board loses power while it installs, and its emulator exits.
  auto status = fleet.emulator().wait_exit(60);
  REQUIRE(status.has_value());
  REQUIRE(*status == 75);
  // The agent's job stopped in its installing phase of attempt 1, not yet failed ...
  auto job = agent_job(fleet, uid);
  REQUIRE(job.is_object());
  CHECK(job["deployment"] == id);
  CHECK(job["phase"] == "installing");
  CHECK(job["attempt"] == 1);
  CHECK_FALSE(job.contains("failed_attempt"));
  // ... slot 1 holds the first cut_at bytes, marked for no boot; slot 0 still holds the old image.
  auto board = board_state(fleet, uid);
  CHECK(std::filesystem::file_size(std::filesystem::path(fleet.emu_dir()) / uid / "secondary.bin") == cut_at);
  CHECK(board["pending"] == "none");
  CHECK(board["secondary_hash"] == "");
  CHECK(board["primary_hash"] == primary_before);
  // ... and the service last heard that it was installing (attempt 1).
  auto row = fleet.deployment_devices(id)[uid];
  CHECK(row["status"] == "installing");
  CHECK(row["attempt"] == 1);

  // 2. Power back on. At its first check-in the agent reports attempt 1 failed with reason power_loss; the
  // service holds the device retrying for the backoff and offers attempt 2 at a check-in after it. The
  // restarted board checks in every 5 s (not 0.3 s), so the retrying state stays in view for the poll below.
  fleet.options().emulator_args.clear();
  fleet.options().check_in_interval = 5;
  fleet.restart_emulator();
  REQUIRE(test::OtaFleet::wait_for([&] {
    row = fleet.deployment_devices(id)[uid];
    return row["status"] == "retrying";
  }, 30));
  CHECK(row["attempt"] == 1);
  CHECK(row["retry_at"].is_string());
  CHECK(test::OtaFleet::text(row, "detail").find("power_loss") != std::string::npos);
  CHECK(test::OtaFleet::text(row, "detail").find("attempt 1 of 3") != std::string::npos);
  CHECK(agent_job(fleet, uid).value("failed_attempt", 0) == 1);
  CHECK(fleet.deployment(id)["failures"] == 0);  // waiting to retry is not a failure

  // 3. Attempt 2 installs the image the agent kept, and the deployment completes with no failure counted.
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.agent_outcome(uid, id) == "installed"; }, 60));
  CHECK(fleet.wait_service_status(id, "installed", 1));
  row = fleet.deployment_devices(id)[uid];
  CHECK(row["status"] == "installed");
  CHECK(row["attempt"] == 2);
  bool reported = false;
  for (const auto& item : fleet.json({"deployment", "report", id}))
    if (item["device"] == uid) {
      reported = true;
      CHECK(item["state"] == "installed");
      CHECK(item["attempts"] == 2);
    }
  CHECK(reported);
  CHECK(fleet.board_version(uid) == "2.2.0");
  CHECK(fleet.board_record(uid)["sequence"] == 11);
  CHECK(test::OtaFleet::wait_for([&] { return fleet.deployment(id)["state"] == "completed"; }, 30));
  CHECK(fleet.deployment(id)["failures"] == 0);
}
