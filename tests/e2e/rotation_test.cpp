// End to end key rotation over the air (issue 17 item 2) with the real binaries: 20 emulated boards leave the
// factory trusting manifest key and boot key release.pem (1 of 1). Trust update 1 adds manifest keys m2, m3
// (threshold 2) and boot key boot2; trust update 2, signed by the new keys, retires release.pem as manifest
// key and as boot key. Both travel through the normal deployment path (`kiln deployment create --trust-update`):
// checked by the service against the product's current trust before any board sees them, then handed out by
// the deployment's waves to the boards of its group only. Update 1 goes out in two waves (the second opens on
// a resume); a first deployment of update 2 is aborted after its first wave and reaches no other board; a
// board moved to another group gets nothing until a deployment to that group. Afterwards a release signed only
// with the new keys installs on every board, one whose image is signed with the retired boot key is refused by
// every board, and a board that was switched off through both rotations catches up in order when it comes
// back. Bad input (below threshold, replayed, older, another product, truncated, empty sets) is refused with
// its exit code and changes nothing.
#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <thread>

#include "core/files.hpp"
#include "tests/support/ota_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

// The board's state file (readable while the board is switched off): its keys, boot-key set and trust version.
Json board_state(const test::OtaFleet& fleet, const std::string& uid) {
  std::ifstream in(fleet.emu_dir() + "/" + uid + "/state.json");
  auto state = Json::parse(in, nullptr, false);
  return state.is_object() ? state : Json::object();
}

std::uint64_t trust_version(const test::OtaFleet& fleet, const std::string& uid) {
  return board_state(fleet, uid).value("trust_version", std::uint64_t{0});
}

bool wait_trust_version(const test::OtaFleet& fleet, const std::vector<std::string>& uids, std::uint64_t version) {
  return test::OtaFleet::wait_for([&] {
    for (const auto& uid : uids)
      if (trust_version(fleet, uid) != version) return false;
    return true;
  }, 60);
}

bool wait_outcome(const test::OtaFleet& fleet, const std::vector<std::string>& uids, const std::string& deployment,
                  const std::string& status) {
  return test::OtaFleet::wait_for([&] {
    for (const auto& uid : uids)
      if (fleet.agent_outcome(uid, deployment) != status) return false;
    return true;
  }, 60);
}

// The boards of `uids` in (or not in) `rows` (kiln deployment devices: the admitted ones).
std::vector<std::string> split(const std::vector<std::string>& uids, const std::map<std::string, Json>& rows,
                               bool admitted) {
  std::vector<std::string> out;
  for (const auto& uid : uids)
    if ((rows.count(uid) > 0) == admitted) out.push_back(uid);
  return out;
}

}  // namespace

TEST_CASE("rotation e2e: 20 boards rotate manifest and boot keys through trust deployments; an offline board catches up") {
  test::OtaFleet fleet({.boards = 20, .check_in_interval = 0.3, .jobs = 8});
  const std::string product = fleet.options().product;
  const auto f = [&](const std::string& name) { return fleet.file(name); };
  for (const char* name : {"m2.pem", "m3.pem", "boot2.pem"})
    REQUIRE(fleet.kiln({"key", "generate", "-t", "ecdsa-p256", "-o", f(name)}).exit_code == 0);

  // One board is switched off for both rotations.
  const std::string offline = fleet.uids().at(0);
  std::vector<std::string> online(fleet.uids().begin() + 1, fleet.uids().end());
  fleet.restart_emulator({"--power-off", offline});

  // Bad input when the update is created: exit 2, nothing written.
  const std::vector<std::string> v1_sets{"--manifest-key", f("release.pem"), "--manifest-key", f("m2.pem"),
                                         "--manifest-key", f("m3.pem"), "--boot-key", f("release.pem"),
                                         "--boot-key", f("boot2.pem")};
  auto create = [&](const std::string& version, const std::string& threshold, const std::string& out,
                    const std::vector<std::string>& sets, const std::string& for_product) {
    std::vector<std::string> args{"trust", "create", "--product", for_product, "--version", version,
                                  "--manifest-threshold", threshold, "-o", f(out), "--force"};
    args.insert(args.end(), sets.begin(), sets.end());
    return fleet.kiln(args);
  };
  CHECK(create("1", "4", "bad.cbor", v1_sets, product).exit_code == 2);  // threshold above N
  CHECK(create("1", "1", "bad.cbor", {"--boot-key", f("boot2.pem")}, product).exit_code == 2);  // no manifest key
  CHECK(create("1", "1", "bad.cbor", {"--manifest-key", f("m2.pem")}, product).exit_code == 2);  // no boot key
  CHECK(create("0", "2", "bad.cbor", v1_sets, product).exit_code == 2);
  CHECK_FALSE(std::filesystem::exists(f("bad.cbor")));

  // Rotation 1: {release, m2, m3} 2 of 3, boot keys {release, boot2}, signed by the key in force (release).
  const std::string group = fleet.options().group;
  auto deploy_args = [&](const std::string& file, const std::vector<std::string>& extra, const std::string& to) {
    std::vector<std::string> args{"deployment", "create", "--group", to.empty() ? group : to, "--trust-update", f(file)};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  auto deploy = [&](const std::string& file, const std::vector<std::string>& extra = {}, const std::string& to = "") {
    return fleet.kiln(deploy_args(file, extra, to));
  };
  auto deployed = [&](const std::string& file, const std::vector<std::string>& extra = {},
                      const std::string& to = "") { return fleet.json(deploy_args(file, extra, to)); };
  REQUIRE(create("1", "2", "v1.cbor", v1_sets, product).exit_code == 0);
  auto unsigned_deploy = deploy("v1.cbor");
  CHECK(unsigned_deploy.exit_code == 3);
  CHECK_MESSAGE(unsigned_deploy.err.find("below threshold") != std::string::npos, unsigned_deploy.err);
  REQUIRE(fleet.kiln({"trust", "sign", f("v1.cbor"), "--key", f("release.pem")}).exit_code == 0);
  auto verified = fleet.kiln({"trust", "verify", f("v1.cbor"), "--key", f("release.pem"), "--product", product});
  CHECK_MESSAGE(verified.exit_code == 0, verified.err);
  // Truncated, and for another product: refused, nothing recorded, no deployment.
  auto bytes = read_file(f("v1.cbor"));
  write_file_atomic(f("v1.truncated.cbor"), ByteView(bytes.data(), bytes.size() - 7));
  auto truncated = deploy("v1.truncated.cbor");
  CHECK(truncated.exit_code == 3);
  CHECK_MESSAGE(truncated.err.find("not a valid trust update") != std::string::npos, truncated.err);
  fleet.json({"product", "create", "Oven", "--boot-key", f("release.pem"), "--manifest-key", f("release.pem")});
  fleet.json({"group", "create", "Oven/Lab"});
  auto other = deploy("v1.cbor", {}, "Oven/Lab");
  CHECK(other.exit_code == 3);
  CHECK_MESSAGE(other.err.find("for product \"" + product + "\"") != std::string::npos, other.err);
  CHECK(fleet.json({"product", "show", product})["manifest_keys"].size() == 1);
  CHECK(fleet.json({"deployment", "list"}).empty());
  // A dry run plans it and records nothing.
  auto plan = fleet.json({"deployment", "create", "--group", group, "--trust-update", f("v1.cbor"), "--dry-run"});
  CHECK(plan["would_create"] == true);
  CHECK(plan["trust_version"] == 1);
  CHECK(fleet.json({"product", "show", product})["manifest_keys"].size() == 1);

  // Staged: wave 1 (half the group) first; once half of it has the update the rollout pauses for a person.
  auto v1_deployment = deployed("v1.cbor", {"--rollout", "50%,100%", "--wave-success", "50%", "--wave-success-then",
                                            "pause"});
  const std::string v1_id = v1_deployment["id"].get<std::string>();
  CHECK(v1_deployment["trust_version"] == 1);
  CHECK(v1_deployment["carries"] == "trust_update");
  auto after_v1 = fleet.json({"product", "show", product});
  CHECK(after_v1["manifest_keys"].size() == 3);
  CHECK(after_v1["manifest_threshold"] == 2);
  CHECK(after_v1["boot_keys"].size() == 2);
  auto shown = fleet.kiln({"deployment", "show", v1_id});
  CHECK_MESSAGE(shown.out.find("trust update, version 1") != std::string::npos, shown.out);
  REQUIRE(test::OtaFleet::wait_for([&] { return fleet.deployment(v1_id)["awaiting_approval"] == true; }, 60));
  auto first_wave = split(online, fleet.deployment_devices(v1_id), true);
  auto second_wave = split(online, fleet.deployment_devices(v1_id), false);
  CAPTURE(first_wave.size());
  for (const auto& uid : second_wave) CHECK(trust_version(fleet, uid) == 0);  // its wave is not open
  auto replay = deploy("v1.cbor");
  CHECK(replay.exit_code == 3);
  CHECK_MESSAGE(replay.err.find("already has trust deployment " + v1_id) != std::string::npos, replay.err);
  REQUIRE(fleet.kiln({"deployment", "resume", v1_id}).exit_code == 0);
  REQUIRE(wait_trust_version(fleet, online, 1));
  CHECK(fleet.wait_service_status(v1_id, "installed", static_cast<int>(online.size())));
  CHECK(fleet.json({"device", "show", online.front()})["trust_version"] == 1);

  // A board moved to another group of the product gets nothing from the group's deployments.
  const std::string lab = online.back();
  online.pop_back();
  fleet.json({"group", "create", product + "/Lab"});
  fleet.json({"device", "assign", lab, "--group", product + "/Lab"});

  // Rotation 2: retire release.pem as manifest key and as boot key. One signature of the two now required
  // is refused; m2 and m3 sign it.
  const std::vector<std::string> v2_sets{"--manifest-key", f("m2.pem"), "--manifest-key", f("m3.pem"), "--boot-key",
                                         f("boot2.pem")};
  REQUIRE(create("2", "2", "v2.cbor", v2_sets, product).exit_code == 0);
  REQUIRE(fleet.kiln({"trust", "sign", f("v2.cbor"), "--key", f("release.pem")}).exit_code == 0);
  auto below = deploy("v2.cbor");
  CHECK(below.exit_code == 3);
  CHECK_MESSAGE(below.err.find("1 valid signature from the trusted keys, 2 required") != std::string::npos, below.err);
  REQUIRE(create("2", "2", "v2.cbor", v2_sets, product).exit_code == 0);
  REQUIRE(fleet.kiln({"trust", "sign", f("v2.cbor"), "--key", f("m2.pem"), "--key", f("m3.pem")}).exit_code == 0);

  // A first deployment of it is aborted after its first wave (20%): no board outside that wave gets it.
  auto aborted = deployed("v2.cbor", {"--rollout", "20%,100%", "--step-after", "1h"});
  const std::string aborted_id = aborted["id"].get<std::string>();
  CHECK(fleet.json({"deployment", "show", v1_id})["state"] == "superseded");
  auto targeted = split(online, fleet.deployment_devices(aborted_id), true);
  auto untargeted = split(online, fleet.deployment_devices(aborted_id), false);
  REQUIRE(wait_trust_version(fleet, targeted, 2));
  auto abort = fleet.kiln({"deployment", "abort", aborted_id});
  CHECK_MESSAGE(abort.exit_code == 0, abort.err);  // a trust update is not taken back: nothing to revert
  std::this_thread::sleep_for(std::chrono::seconds(2));  // several check-ins of every board
  for (const auto& uid : untargeted) CHECK(trust_version(fleet, uid) == 1);

  // Deployed again to the whole group: every board of it; the board in the other group still has 1.
  auto v2_deployment = deployed("v2.cbor");
  const std::string v2_id = v2_deployment["id"].get<std::string>();
  REQUIRE(wait_trust_version(fleet, online, 2));
  CHECK(trust_version(fleet, lab) == 1);
  // An older version, properly signed by the keys in force: refused.
  REQUIRE(create("1", "2", "old.cbor", v2_sets, product).exit_code == 0);
  REQUIRE(fleet.kiln({"trust", "sign", f("old.cbor"), "--key", f("m2.pem"), "--key", f("m3.pem")}).exit_code == 0);
  CHECK(deploy("old.cbor").exit_code == 3);
  // The recorded update deployed to the other group too; then the board goes back.
  auto lab_deployment = deployed("v2.cbor", {}, product + "/Lab");
  REQUIRE(wait_trust_version(fleet, {lab}, 2));
  CHECK(fleet.wait_service_status(lab_deployment["id"].get<std::string>(), "installed", 1));
  fleet.json({"device", "assign", lab, "--group", group});
  online.push_back(lab);

  auto info = board_state(fleet, online.front());
  CHECK(info["trust_version"] == 2);
  CHECK(info["manifest_keys"].size() == 2);
  CHECK(info["manifest_threshold"] == 2);
  CHECK(info["boot_key_hashes"].size() == 1);
  CHECK(trust_version(fleet, offline) == 0);
  // kiln board info shows the same.
  auto board_info = fleet.json({"board", "info", "-b", online.front()});
  CHECK(board_info["trust_version"] == 2);
  CHECK(board_info["trust_product"] == product);
  CHECK(board_info["manifest_keys"].size() == 2);
  CHECK(board_info["manifest_threshold"] == 2);
  CHECK(board_info["boot_key_hashes"].size() == 1);

  // Images signed with the new boot key carry it in full (PUBKEY TLV): the boards hold only its hash.
  auto sign_image = [&](const std::string& version, const std::string& key) {
    auto raw = f("app-" + version + ".bin");
    std::ofstream(raw, std::ios::binary) << std::string(4096, static_cast<char>(version.back()));
    auto out = f("app-" + version + "-" + key + ".signed.bin");
    auto r = fleet.kiln({"image", "sign", raw, out, "-k", f(key), "--version", version, "--header-size", "0x200",
                         "--slot-size", "0x1000000", "--pad-header", "--public-key-format", "full"});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return out;
  };
  auto manifest = [&](const std::string& image, int sequence, const std::vector<std::string>& keys) {
    auto out = fleet.make_manifest(image, static_cast<std::uint64_t>(sequence), keys.front());
    for (std::size_t i = 1; i < keys.size(); ++i)
      REQUIRE(fleet.kiln({"manifest", "sign", out, "--key", f(keys[i])}).exit_code == 0);
    return out;
  };

  // A release whose manifest carries a retired manifest key's signature: the service refuses it (exit 3).
  auto other_image = sign_image("1.8.0", "boot2.pem");
  auto retired_manifest = manifest(other_image, 2, {"release.pem", "m2.pem"});
  auto uploaded = fleet.json({"image", "upload", other_image, "--manifest", retired_manifest});
  auto refused = fleet.kiln({"deployment", "create", "--group", fleet.options().group, "--image",
                             uploaded["id"].get<std::string>(), "--rollout", "100%"});
  CHECK(refused.exit_code == 3);

  // An image signed with the retired boot key reaches the boards (the service is told to allow it): every
  // board refuses it.
  fleet.json({"product", "update", product, "--boot-key", f("release.pem"), "--boot-key", f("boot2.pem")});
  auto old_boot = sign_image("1.9.0", "release.pem");
  auto old_deployment =
      fleet.deploy(old_boot, manifest(old_boot, 2, {"m2.pem", "m3.pem"}), {"--halt-on-failure", "never"});
  auto old_id = old_deployment["id"].get<std::string>();
  REQUIRE(wait_outcome(fleet, online, old_id, "refused"));
  auto rows = fleet.deployment_devices(old_id);
  for (const auto& uid : online) {
    CAPTURE(uid);
    CHECK_MESSAGE(rows[uid]["detail"].get<std::string>().find("mcuboot") != std::string::npos, rows[uid].dump());
  }
  fleet.json({"product", "update", product, "--boot-key", f("boot2.pem")});

  // Signed only with the new keys: installs on every board that is on.
  auto new_image = sign_image("2.0.0", "boot2.pem");
  auto good = fleet.deploy(new_image, manifest(new_image, 3, {"m2.pem", "m3.pem"}));
  auto good_id = good["id"].get<std::string>();
  REQUIRE(wait_outcome(fleet, online, good_id, "installed"));

  // The switched-off board comes back: trust 1 then 2 (each checked against the set in force at that step), then
  // the release signed with the new keys.
  fleet.restart_emulator();
  REQUIRE(wait_trust_version(fleet, {offline}, 2));
  REQUIRE(wait_outcome(fleet, {offline}, good_id, "installed"));
  CHECK(fleet.board_version(offline) == "2.0.0");
  // The trust deployment counts every board of the group now (the offline one too): completed.
  CHECK(fleet.wait_service_status(v2_id, "installed", 20));
  CHECK(fleet.deployment(v2_id)["state"] == "completed");
}
