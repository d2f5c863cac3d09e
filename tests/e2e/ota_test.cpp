// End to end in CI: 50 emulated boards running the update agent, provisioned by the real `kiln
// factory` (firmware 1.0.1, sequence 1), imported, claimed and grouped on a real kiln-service; then
// one staged deployment that every board installs wave by wave, an image signed with the wrong key
// that every board refuses, an older sequence number that every board refuses, and a failing version
// whose first wave rolls back and halts the deployment by itself. The final state of every board is
// read from the board (`kiln board info` over its link) and from the service (`kiln device list`).
#include <doctest/doctest.h>

#include <set>

#include "tests/support/ota_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {
constexpr int fleet_size = 50;

// Devices in each per-device status of a deployment, as the service counts them.
int count_status(const Json& deployment, const std::string& status) {
  return deployment["device_status"].value(status, 0);
}
}  // namespace

TEST_CASE("ota e2e: 50 boards, a staged deployment, wrong key and older sequence refused, a failing version halts") {
  test::OtaFleetOptions options;
  options.boards = fleet_size;
  options.check_in_interval = 1.0;
  options.jobs = 16;
  options.emulator_args = {"--fail-version", "1.3.0"};
  test::OtaFleet fleet(options);
  REQUIRE(fleet.uids().size() == fleet_size);

  // 1. A staged deployment of 1.1.0 (sequence 2): 10%, then 50%, then everyone, a wave every 2 s.
  auto v110 = fleet.sign_image("1.1.0");
  auto staged = fleet.deploy(v110, fleet.make_manifest(v110, 2),
                             {"--rollout", "10%,50%,100%", "--step-after", "2s", "--halt-on-failure", "5%"});
  auto staged_id = staged["id"].get<std::string>();
  CHECK(staged["state"] == "active");
  REQUIRE(fleet.wait_all_running("1.1.0", 180));
  CHECK(fleet.wait_service_status(staged_id, "installed", fleet_size, 60));
  CHECK(test::OtaFleet::wait_for([&] { return fleet.deployment(staged_id)["state"] == "completed"; }));
  auto completed = fleet.deployment(staged_id);
  CHECK(count_status(completed, "installed") == fleet_size);
  CHECK(count_status(completed, "refused") == 0);
  // Three waves opened, admitting cumulatively more of the group; the last one admitted everyone.
  REQUIRE(completed["waves"].is_array());
  REQUIRE(completed["waves"].size() == 3);
  int previous = 0;
  for (const auto& wave : completed["waves"]) {
    CHECK(wave.value("admitted", -1) >= previous);
    previous = wave.value("admitted", -1);
  }
  CHECK(completed["waves"].back().value("admitted", -1) == fleet_size);
  CHECK(completed.value("admitted", -1) == fleet_size);

  // 2. An image signed with a key the boards do not trust (the manifest itself is properly signed), and
  // 3. a correctly signed 1.2.1 whose manifest carries an older sequence number (1 < 2): the service refuses
  //    both at creation (exit 3), before any board sees them; the older one names the boards that run 2.
  auto create = [&](const std::string& image, const std::string& manifest) {
    auto uploaded = fleet.json({"image", "upload", image, "--manifest", manifest});
    return fleet.kiln({"deployment", "create", "--group", options.group, "--image", uploaded["id"].get<std::string>()});
  };
  auto rogue = fleet.sign_image("1.2.0", "other.pem");
  auto rogue_r = create(rogue, fleet.make_manifest(rogue, 3));
  CHECK(rogue_r.exit_code == 3);
  CHECK(rogue_r.err.find("not a boot key of product Thermo") != std::string::npos);
  auto v121 = fleet.sign_image("1.2.1");
  auto older_r = create(v121, fleet.make_manifest(v121, 1));
  CHECK(older_r.exit_code == 3);
  // The boards that would refuse it are named (the first 20, then how many more).
  int named = 0;
  for (const auto& uid : fleet.uids()) named += older_r.err.find(uid) != std::string::npos;
  CHECK(named == 20);
  CHECK_MESSAGE(older_r.err.find("and 30 more") != std::string::npos, older_r.err);

  // 4. 1.3.0 fails its health check after the test boot. Waves of 10% then 100% after 10 minutes, halt
  //    above 5%: the first wave rolls back, the service halts the deployment by itself, and the rest of
  //    the fleet is never offered it.
  auto v130 = fleet.sign_image("1.3.0");
  auto failing_id = fleet.deploy(v130, fleet.make_manifest(v130, 4),
                                 {"--rollout", "10%,100%", "--step-after", "10m", "--halt-on-failure", "5%",
                                  "--halt-min-executed", "1"})["id"]
                        .get<std::string>();
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.deployment(failing_id)["state"] == "halted"; }, 90));
  auto halted = fleet.deployment(failing_id);
  INFO("halted: " << halted.dump());
  CHECK(count_status(halted, "rolled_back") >= 1);
  CHECK(count_status(halted, "installed") == 0);
  CHECK(test::OtaFleet::text(halted, "halt_reason").find("above 5%") != std::string::npos);
  // Halted in the first wave: the boards that took 1.3.0 before the halt roll it back (the boards and
  // the service agree on how many), and the boards outside that wave never heard of it.
  CHECK(test::OtaFleet::wait_for([&] {
    int rolled_back = 0;
    for (const auto& uid : fleet.uids()) rolled_back += fleet.agent_outcome(uid, failing_id) == "rolled_back";
    return rolled_back == count_status(fleet.deployment(failing_id), "rolled_back");
  }));
  int untouched = 0;
  for (const auto& uid : fleet.uids()) {
    auto outcome = fleet.agent_outcome(uid, failing_id);
    CAPTURE(uid);
    CHECK((outcome.empty() || outcome == "rolled_back"));
    untouched += outcome.empty();
  }
  CHECK(untouched >= fleet_size / 2);

  // The final state of every board, from the board and from the service: 1.1.0 confirmed, sequence 2.
  // (A board still finishing its 1.3.0 test boot when the deployment halted gets a moment to roll back.)
  for (const auto& uid : fleet.uids()) {
    CAPTURE(uid);
    CHECK(test::OtaFleet::wait_for(
        [&] { return fleet.board_version(uid) == "1.1.0" && fleet.board_record(uid)["sequence"] == 2; }, 30));
  }
  CHECK(test::OtaFleet::wait_for([&] {
    auto devices = fleet.service_devices();
    if (devices.size() != static_cast<std::size_t>(fleet_size)) return false;
    for (const auto& uid : fleet.uids())
      if (test::OtaFleet::text(devices[uid], "version") != "1.1.0") return false;
    return true;
  }));
}
