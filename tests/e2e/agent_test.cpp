// End to end: the update agent in kiln-board-emu against a real kiln-service, with boards
// provisioned by the real `kiln factory`: install, refusals at creation (wrong key, older sequence), rollback
// of a failing version, and a download cut mid-way that resumes after an emulator restart.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "tests/support/ota_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;

TEST_CASE("agent e2e: boards install a deployment; wrong key and older sequence are refused; a failing version rolls back") {
  test::OtaFleetOptions options;
  options.boards = 3;
  options.emulator_args = {"--fail-version", "1.3.0"};
  test::OtaFleet fleet(options);

  // The agents check in: the service learns what each board runs.
  REQUIRE(test::OtaFleet::wait_for([&] {
    auto devices = fleet.service_devices();
    if (devices.size() != fleet.uids().size()) return false;
    for (const auto& [id, row] : devices)
      if (test::OtaFleet::text(row, "version") != fleet.initial_version()) return false;
    return true;
  }));
  // The factory installed the manifest of the firmware it programmed (sequence 1).
  for (const auto& uid : fleet.uids()) CHECK(fleet.board_record(uid)["sequence"] == 1);

  // 1. A good update: every board installs it, confirms it, and records sequence 2.
  auto v110 = fleet.sign_image("1.1.0");
  auto m110 = fleet.make_manifest(v110, 2);
  auto first = fleet.deploy(v110, m110)["id"].get<std::string>();
  REQUIRE(fleet.wait_all_running("1.1.0"));
  CHECK(fleet.wait_all_outcome(first, "installed"));
  for (const auto& uid : fleet.uids()) {
    CAPTURE(uid);
    auto record = fleet.board_record(uid);
    CHECK(record["sequence"] == 2);
    CHECK(record.contains("manifest_digest"));
    auto images = Json::parse(fleet.kiln({"-o", "json", "board", "images", "-b", uid}).out);
    for (const auto& slot : images)
      if (slot.value("slot", -1) == 0) CHECK(slot.value("confirmed", false));
  }
  CHECK(test::OtaFleet::wait_for([&] {
    for (const auto& [id, row] : fleet.service_devices())
      if (test::OtaFleet::text(row, "version") != "1.1.0") return false;
    return true;
  }));
  CHECK(fleet.wait_service_status(first, "installed"));
  CHECK(fleet.deployment(first)["state"] == "completed");

  // 2.-4. What the boards would refuse, the service refuses at creation (exit 3, the reason on stderr):
  //    an image signed with another key, a manifest signed by another key, an older sequence number.
  //    (The boards' own refusals are tested in tests/emulator/update_check_test.cpp.)
  auto refused = [&](const std::string& image, const std::string& manifest) {
    auto uploaded = fleet.json({"image", "upload", image, "--manifest", manifest});
    auto r = fleet.kiln({"deployment", "create", "--group", fleet.options().group, "--image",
                         uploaded["id"].get<std::string>()});
    CHECK(r.exit_code == 3);
    CHECK(r.out.empty());
    return r.err;
  };
  auto before = fleet.json({"deployment", "list"}).size();
  auto rogue = fleet.sign_image("1.2.0", "other.pem");
  CHECK(refused(rogue, fleet.make_manifest(rogue, 3)).find("not a boot key of product") != std::string::npos);
  auto v121 = fleet.sign_image("1.2.1");
  CHECK(refused(v121, fleet.make_manifest(v121, 4, "other.pem")).find("does not verify against the manifest keys") !=
        std::string::npos);
  auto v122 = fleet.sign_image("1.2.2");
  auto older = refused(v122, fleet.make_manifest(v122, 1));
  CHECK(older.find("sequence number 1 is not above") != std::string::npos);
  for (const auto& uid : fleet.uids()) CHECK(older.find(uid) != std::string::npos);  // the boards that would refuse
  CHECK(fleet.json({"deployment", "list"}).size() == before);
  for (const auto& uid : fleet.uids()) {
    CHECK(fleet.board_version(uid) == "1.1.0");
    CHECK(fleet.board_record(uid)["sequence"] == 2);
  }

  // 5. 1.3.0 fails its health check after the test boot: MCUboot reverts, the board reports rolled_back,
  //    and the service halts the deployment by itself.
  auto v130 = fleet.sign_image("1.3.0");
  auto failing =
      fleet.deploy(v130, fleet.make_manifest(v130, 5), {"--halt-on-failure", "10%", "--halt-min-executed", "1"})["id"].get<std::string>();
  CHECK(test::OtaFleet::wait_for([&] { return fleet.deployment(failing)["state"] == "halted"; }));
  auto halted = fleet.deployment(failing);
  CHECK(halted["device_status"]["rolled_back"].get<int>() >= 1);
  CHECK(test::OtaFleet::text(halted, "halt_reason").find("failed") != std::string::npos);
  // Boards that took it before the halt rolled it back (the board and the service agree); the others never got it.
  CHECK(test::OtaFleet::wait_for([&] {
    int rolled_back = 0;
    for (const auto& uid : fleet.uids()) rolled_back += fleet.agent_outcome(uid, failing) == "rolled_back";
    return rolled_back == fleet.deployment(failing)["device_status"].value("rolled_back", -1);
  }));
  for (const auto& uid : fleet.uids()) {
    auto outcome = fleet.agent_outcome(uid, failing);
    CHECK((outcome.empty() || outcome == "rolled_back"));
  }
  for (const auto& uid : fleet.uids()) {
    CAPTURE(uid);
    CHECK(fleet.board_version(uid) == "1.1.0");
    CHECK(fleet.board_record(uid)["sequence"] == 2);
  }

  // 6. The fleet still takes the next good update.
  auto v140 = fleet.sign_image("1.4.0");
  auto last = fleet.deploy(v140, fleet.make_manifest(v140, 6))["id"].get<std::string>();
  REQUIRE(fleet.wait_all_running("1.4.0"));
  CHECK(fleet.wait_all_outcome(last, "installed"));
  CHECK(fleet.wait_service_status(last, "installed"));
  for (const auto& uid : fleet.uids()) CHECK(fleet.board_record(uid)["sequence"] == 6);
}

TEST_CASE("agent e2e: abort sends boards back to the previous deployment's manifest, below the installed sequence") {
  test::OtaFleetOptions options;
  options.boards = 2;
  test::OtaFleet fleet(options);
  auto v2 = fleet.sign_image("2.1.0");
  auto m2 = fleet.make_manifest(v2, 10);
  auto a = fleet.deploy(v2, m2)["id"].get<std::string>();
  REQUIRE(fleet.wait_all_running("2.1.0"));
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.board_record(fleet.uids().front())["sequence"] == 10; }));
  auto a_digest = fleet.board_record(fleet.uids().front())["manifest_digest"];

  auto v3 = fleet.sign_image("2.2.0");
  auto b = fleet.deploy(v3, fleet.make_manifest(v3, 11))["id"].get<std::string>();
  REQUIRE(fleet.wait_all_running("2.2.0"));
  CHECK(test::OtaFleet::wait_for([&] { return fleet.board_record(fleet.uids().front())["sequence"] == 11; }));

  // Abort: the service offers deployment A again as a revert; its envelope is the board's previous
  // record, so the lower sequence is accepted.
  CHECK(fleet.json({"deployment", "abort", b})["state"] == "aborted");
  REQUIRE(fleet.wait_all_running("2.1.0"));
  // Slot 0 runs 2.1.0 from the test boot on; the firmware record follows once the agent confirms it.
  for (const auto& uid : fleet.uids()) {
    CAPTURE(uid);
    CHECK(test::OtaFleet::wait_for([&] {
      auto record = fleet.board_record(uid);
      return record["sequence"] == 10 && record["manifest_digest"] == a_digest;
    }));
  }
  CHECK(fleet.wait_service_status(a, "installed"));
}

TEST_CASE("agent e2e: a download cut mid-way is kept, survives an emulator restart, and resumes with Range") {
  test::OtaFleetOptions options;
  options.boards = 1;
  options.proxy = true;
  test::OtaFleet fleet(options);
  const auto uid = fleet.uids().front();
  const std::size_t payload = 768 * 1024;
  auto image = fleet.sign_image("2.0.0", "release.pem", payload);
  auto manifest = fleet.make_manifest(image, 7);

  // Let about a third of the image through, then cut the link.
  fleet.proxy().cut_responses_after(fleet.proxy().response_bytes() + 256 * 1024);
  auto deployment = fleet.deploy(image, manifest)["id"].get<std::string>();
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.proxy().cut_happened(); }));
  auto agent_dir = std::filesystem::path(fleet.emu_dir()) / uid / "agent";
  std::uintmax_t partial = 0;
  REQUIRE(test::OtaFleet::wait_for([&] {
    for (const auto& entry : std::filesystem::directory_iterator(agent_dir))
      if (entry.path().filename().string().rfind("image-", 0) == 0) partial = entry.file_size();
    return partial > 0;
  }));
  CHECK(partial < payload);

  // Power-cycle the board while the link is down, then restore the link.
  fleet.restart_emulator();
  auto before = fleet.proxy().response_bytes();
  fleet.proxy().allow();
  REQUIRE(fleet.wait_all_running("2.0.0"));
  CHECK(fleet.wait_all_outcome(deployment, "installed"));
  // Only the missing part crossed the link again (plus check-ins and TLS handshakes).
  CHECK(fleet.proxy().response_bytes() - before < static_cast<std::int64_t>(payload));
  CHECK(fleet.board_record(uid)["sequence"] == 7);
}

TEST_CASE("agent e2e: power lost while the image is written to slot 1; after power-up the agent finishes the update") {
  test::OtaFleetOptions options;
  options.boards = 1;
  // Provisioning without the firmware step writes no flash: the first flash bytes are the agent's copy into slot 1.
  options.factory_firmware = false;
  options.emulator_args = {"--power-loss-at", "100000"};
  options.proxy = true;
  test::OtaFleet fleet(options);
  const auto uid = fleet.uids().front();
  auto image = fleet.sign_image("3.0.0", "release.pem", 300 * 1024);
  auto deployment = fleet.deploy(image, fleet.make_manifest(image, 12))["id"].get<std::string>();
  auto status = fleet.emulator().wait_exit(60);
  REQUIRE(status.has_value());
  CHECK(*status == 75);

  fleet.options().emulator_args.clear();
  // Where the cut landed: with the service out of reach the restarted agent cannot resume yet, so the
  // board still runs what it ran before (the cut install never ran); then let it finish.
  fleet.proxy().block();
  fleet.restart_emulator();
  CHECK(fleet.board_version(uid) == fleet.initial_version());
  fleet.proxy().allow();
  REQUIRE(fleet.wait_all_running("3.0.0"));
  CHECK(fleet.wait_all_outcome(deployment, "installed"));
  CHECK(fleet.board_record(uid)["sequence"] == 12);
  CHECK(fleet.wait_service_status(deployment, "installed"));
}

TEST_CASE("agent e2e: power lost during MCUboot's swap into the test boot; after power-up the agent installs again") {
  test::OtaFleetOptions options;
  options.boards = 1;
  options.factory_firmware = false;  // provisioning writes no flash
  test::OtaFleet fleet(options);
  const auto uid = fleet.uids().front();
  auto image = fleet.sign_image("3.1.0", "release.pem", 200 * 1024);
  auto image_size = std::filesystem::file_size(image);
  // The agent writes the image to slot 1 (image_size bytes), then the swap copies it to slot 0: cut
  // the power halfway through that copy.
  fleet.options().emulator_args = {"--power-loss-at", std::to_string(image_size + image_size / 2)};
  fleet.restart_emulator();
  auto deployment = fleet.deploy(image, fleet.make_manifest(image, 13))["id"].get<std::string>();
  auto status = fleet.emulator().wait_exit(60);
  REQUIRE(status.has_value());
  CHECK(*status == 75);
  {
    std::ifstream in(std::filesystem::path(fleet.emu_dir()) / uid / "agent" / "state.json");
    auto state = nlohmann::json::parse(in);
    CHECK(state["job"]["phase"] == "testing");  // the cut came after the agent asked for the test boot
  }

  fleet.options().emulator_args.clear();
  fleet.restart_emulator();
  REQUIRE(fleet.wait_all_running("3.1.0"));
  CHECK(fleet.wait_all_outcome(deployment, "installed"));
  CHECK(fleet.board_record(uid)["sequence"] == 13);
  auto images = nlohmann::json::parse(fleet.kiln({"-o", "json", "board", "images", "-b", uid}).out);
  for (const auto& slot : images)
    if (slot.value("slot", -1) == 0) CHECK(slot.value("confirmed", false));
}
