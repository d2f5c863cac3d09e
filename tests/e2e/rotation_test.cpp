// End to end key rotation over the air (issue 17 item 2) with the real binaries: 20 emulated boards leave the
// factory trusting manifest key and boot key release.pem (1 of 1). Trust update 1 adds manifest keys m2, m3
// (threshold 2) and boot key boot2; trust update 2, signed by the new keys, retires release.pem as manifest
// key and as boot key. Both go through the service (checked against the product's current trust, recorded)
// and reach the boards at check-in. Afterwards a release signed only with the new keys installs on every
// board, one whose image is signed with the retired boot key is refused by every board, and a board that was
// switched off through both rotations catches up in order when it comes back, then installs the new release.
// Bad input (below threshold, replayed, older, another product, truncated, empty sets) is refused with its
// exit code and changes nothing.
#include <doctest/doctest.h>

#include <fstream>
#include <string>

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
  }, 30);
}

bool wait_outcome(const test::OtaFleet& fleet, const std::vector<std::string>& uids, const std::string& deployment,
                  const std::string& status) {
  return test::OtaFleet::wait_for([&] {
    for (const auto& uid : uids)
      if (fleet.agent_outcome(uid, deployment) != status) return false;
    return true;
  }, 30);
}

}  // namespace

TEST_CASE("rotation e2e: 20 boards rotate manifest and boot keys over the air; an offline board catches up") {
  test::OtaFleetOptions options;
  options.boards = 20;
  options.jobs = 8;
  options.check_in_interval = 0.3;
  test::OtaFleet fleet(options);
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
  REQUIRE(create("1", "2", "v1.cbor", v1_sets, product).exit_code == 0);
  auto unsigned_publish = fleet.kiln({"trust", "publish", f("v1.cbor")});
  CHECK(unsigned_publish.exit_code == 3);
  CHECK_MESSAGE(unsigned_publish.err.find("below threshold") != std::string::npos, unsigned_publish.err);
  REQUIRE(fleet.kiln({"trust", "sign", f("v1.cbor"), "--key", f("release.pem")}).exit_code == 0);
  auto verified = fleet.kiln({"trust", "verify", f("v1.cbor"), "--key", f("release.pem"), "--product", product});
  CHECK_MESSAGE(verified.exit_code == 0, verified.err);
  // Truncated, and for another product: refused, nothing recorded.
  auto bytes = read_file(f("v1.cbor"));
  write_file_atomic(f("v1.truncated.cbor"), ByteView(bytes.data(), bytes.size() - 7));
  auto truncated = fleet.kiln({"trust", "publish", f("v1.truncated.cbor")});
  CHECK(truncated.exit_code == 3);
  CHECK_MESSAGE(truncated.err.find("not a valid trust update") != std::string::npos, truncated.err);
  fleet.json({"product", "create", "Oven", "--boot-key", f("release.pem"), "--manifest-key", f("release.pem")});
  auto other = fleet.kiln({"trust", "publish", f("v1.cbor"), "--product", "Oven"});
  CHECK(other.exit_code == 3);
  CHECK_MESSAGE(other.err.find("for product \"" + product + "\"") != std::string::npos, other.err);
  CHECK(fleet.json({"product", "show", product})["manifest_keys"].size() == 1);

  auto published = fleet.json({"trust", "publish", f("v1.cbor")});
  CHECK(published["version"] == 1);
  auto after_v1 = fleet.json({"product", "show", product});
  CHECK(after_v1["manifest_keys"].size() == 3);
  CHECK(after_v1["manifest_threshold"] == 2);
  CHECK(after_v1["boot_keys"].size() == 2);
  auto replay = fleet.kiln({"trust", "publish", f("v1.cbor")});
  CHECK(replay.exit_code == 3);
  CHECK_MESSAGE(replay.err.find("older or replayed") != std::string::npos, replay.err);
  REQUIRE(wait_trust_version(fleet, online, 1));

  // Rotation 2: retire release.pem as manifest key and as boot key. One signature of the two now required
  // is refused; m2 and m3 sign it.
  const std::vector<std::string> v2_sets{"--manifest-key", f("m2.pem"), "--manifest-key", f("m3.pem"), "--boot-key",
                                         f("boot2.pem")};
  REQUIRE(create("2", "2", "v2.cbor", v2_sets, product).exit_code == 0);
  REQUIRE(fleet.kiln({"trust", "sign", f("v2.cbor"), "--key", f("release.pem")}).exit_code == 0);
  auto below = fleet.kiln({"trust", "publish", f("v2.cbor")});
  CHECK(below.exit_code == 3);
  CHECK_MESSAGE(below.err.find("1 valid signature from the trusted keys, 2 required") != std::string::npos, below.err);
  REQUIRE(create("2", "2", "v2.cbor", v2_sets, product).exit_code == 0);
  REQUIRE(fleet.kiln({"trust", "sign", f("v2.cbor"), "--key", f("m2.pem"), "--key", f("m3.pem")}).exit_code == 0);
  CHECK(fleet.json({"trust", "publish", f("v2.cbor")})["version"] == 2);
  // An older version, properly signed by the keys in force: refused.
  REQUIRE(create("1", "2", "old.cbor", v2_sets, product).exit_code == 0);
  REQUIRE(fleet.kiln({"trust", "sign", f("old.cbor"), "--key", f("m2.pem"), "--key", f("m3.pem")}).exit_code == 0);
  CHECK(fleet.kiln({"trust", "publish", f("old.cbor")}).exit_code == 3);
  REQUIRE(wait_trust_version(fleet, online, 2));
  auto info = board_state(fleet, online.front());
  CHECK(info["trust_version"] == 2);
  CHECK(info["manifest_keys"].size() == 2);
  CHECK(info["manifest_threshold"] == 2);
  CHECK(info["boot_key_hashes"].size() == 1);
  CHECK(trust_version(fleet, offline) == 0);

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
}
