// End to end M-of-N release policy (issue 17 item 1) with the real binaries: boards provisioned by
// `kiln factory` with three manifest keys and threshold 2, the product registered on the service with the
// same. A manifest signed by one key (even twice) fails `kiln manifest verify --threshold 2` and
// `kiln deployment create` (exit 3, dry run too); the board's own update check refuses it naming the count,
// over SMP (64:8) and through its agent when the service is told a lower threshold. One signed by two keys,
// the second added with the offline --vector-to-sign / --signature flow (openssl as the offline signer),
// verifies and installs on every board.
#include <doctest/doctest.h>

#include <string>

#include "core/files.hpp"
#include "signing/key_ref.hpp"
#include "tests/support/ota_fleet.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

const std::string one_of_three = "1 valid signature from the trusted keys, 2 required (threshold 2 of 3)";

// 64:8 on a board: its update check against its installed key set; the reason when refused.
std::string board_install_manifest(test::OtaFleet& fleet, const std::string& uid, const std::string& envelope) {
  SmpClient client(open_socket_link(fleet.emu_dir() + "/" + uid + ".sock"));
  SmpRequest request;
  request.op = smp::Op::write;
  request.group = 64;
  request.command = 8;
  request.body = smp::Body{{"envelope", smp::binary(read_file(envelope))}};
  smp::Body body = client.call_raw(request);
  return body.contains("err") ? body.value("reason", std::string("refused without a reason")) : std::string();
}

}  // namespace

TEST_CASE("threshold e2e: 2 of 3 manifest keys: one signature is refused everywhere, two install") {
  test::OtaFleet fleet({.boards = 2, .manifest_keys = 3, .manifest_threshold = 2});
  const auto key = [&](int i) { return fleet.file(test::OtaFleet::manifest_key_file(i)); };
  const std::vector<std::string> trusted{"--key", key(1), "--key", key(2), "--key", key(3)};

  // The factory installed the set and the threshold; the board reports them.
  auto info = fleet.json({"board", "info", "-b", fleet.uids().at(0)});
  CHECK(info["manifest_keys"].size() == 3);
  CHECK(info["manifest_threshold"] == 2);
  auto product = fleet.json({"product", "show", fleet.options().product});
  CHECK(product["manifest_threshold"] == 2);
  CHECK(product["manifest_keys"].size() == 3);

  // One key, and the same key a second time: one valid signature.
  auto image = fleet.sign_image("1.1.0");
  auto one = fleet.make_manifest(image, 2);
  auto again = fleet.kiln({"manifest", "sign", one, "--key", key(1)});
  REQUIRE_MESSAGE(again.exit_code == 0, again.err);
  std::vector<std::string> verify{"manifest", "verify", one};
  verify.insert(verify.end(), trusted.begin(), trusted.end());
  verify.insert(verify.end(), {"--threshold", "2"});
  auto offline = fleet.kiln(verify);
  CHECK(offline.exit_code == 3);
  CHECK_MESSAGE(offline.err.find(one_of_three) != std::string::npos, offline.err);
  verify.back() = "4";
  CHECK(fleet.kiln(verify).exit_code == 2);  // a threshold above the number of keys

  // The service refuses it before any device sees it, dry run or not.
  auto uploaded = fleet.json({"image", "upload", image, "--manifest", one});
  std::vector<std::string> create{"deployment", "create", "--group", fleet.options().group, "--image",
                                  uploaded["id"].get<std::string>(), "--rollout", "100%"};
  auto dry = create;
  dry.push_back("--dry-run");
  auto refused_dry = fleet.kiln(dry);
  CHECK(refused_dry.exit_code == 3);
  const std::string dry_output = refused_dry.out + refused_dry.err;
  CHECK_MESSAGE(dry_output.find(one_of_three) != std::string::npos, dry_output);
  auto refused = fleet.kiln(create);
  CHECK(refused.exit_code == 3);
  CHECK_MESSAGE(refused.err.find(one_of_three) != std::string::npos, refused.err);
  auto none = fleet.json({"deployment", "list"});
  CHECK((none.is_array() ? none.size() : none["items"].size()) == 0);

  // The board's own check refuses it with the count: over SMP, and through the agent once the service is told
  // (wrongly) that the product needs one signature.
  auto smp_reason = board_install_manifest(fleet, fleet.uids().at(0), one);
  CHECK_MESSAGE(smp_reason.rfind("signature: " + one_of_three, 0) == 0, smp_reason);
  auto lowered = fleet.json({"product", "update", fleet.options().product, "--manifest-threshold", "1"});
  CHECK(lowered["manifest_threshold"] == 1);
  auto wrong = fleet.json(create);
  auto wrong_id = wrong["id"].get<std::string>();
  REQUIRE(fleet.wait_all_outcome(wrong_id, "refused", 30));
  for (const auto& device : fleet.deployment_devices(wrong_id)) {
    const Json& row = device.second;
    CAPTURE(device.first);
    CHECK(row["status"] == "refused");
    CHECK_MESSAGE(row["detail"].get<std::string>().find(one_of_three) != std::string::npos, row.dump());
  }
  CHECK(fleet.json({"product", "update", fleet.options().product, "--manifest-threshold", "2"})["manifest_threshold"] ==
        2);

  // Two keys: the second signature made offline (openssl holds manifest key 2) and added with --signature.
  auto image2 = fleet.sign_image("1.2.0");
  auto two = fleet.make_manifest(image2, 3);
  auto vector = fleet.kiln({"manifest", "sign", two, "--vector-to-sign", "payload", "--signer-public-key", key(2), "-o",
                            fleet.file("tbs.bin")});
  REQUIRE_MESSAGE(vector.exit_code == 0, vector.err);
  auto openssl = test::run_process("/usr/bin/openssl", {"dgst", "-sha256", "-sign", key(2), "-out",
                                                        fleet.file("tbs.sig"), fleet.file("tbs.bin")});
  REQUIRE_MESSAGE(openssl.exit_code == 0, openssl.err);
  auto added = fleet.kiln({"manifest", "sign", two, "--signature", fleet.file("tbs.sig"), "--signer-public-key", key(2)});
  REQUIRE_MESSAGE(added.exit_code == 0, added.err);
  std::vector<std::string> verify_two{"-o", "json", "manifest", "verify", two};
  verify_two.insert(verify_two.end(), trusted.begin(), trusted.end());
  verify_two.insert(verify_two.end(), {"--threshold", "2"});
  auto verified = fleet.kiln(verify_two);
  REQUIRE_MESSAGE(verified.exit_code == 0, verified.err);
  CHECK(Json::parse(verified.out)["threshold"]["valid"] == 2);

  // The factory: several keys need an explicit threshold within 1..N, and the station's manifest must meet it.
  auto one_key = fleet.make_manifest(image2, 4);
  auto factory_init = [&](const std::string& manifest, const std::vector<std::string>& extra) {
    std::vector<std::string> args{"factory", "init", "--ca-key", fleet.file("station-ca.key.pem"), "--ca-cert",
                                  fleet.file("station-ca.pem"), "--vendor-root", fleet.file("vendor-root.pem"),
                                  "--boot-key", key(1), "--product", fleet.options().product, "--image", image2,
                                  "--manifest", manifest, "--manifest-key", key(1), "--manifest-key", key(2),
                                  "--manifest-key", key(3), "-o", fleet.file("other-station.toml"), "--force"};
    args.insert(args.end(), extra.begin(), extra.end());
    return fleet.kiln(args);
  };
  auto no_threshold = factory_init(two, {});
  CHECK(no_threshold.exit_code == 2);
  CHECK_MESSAGE(no_threshold.err.find("--manifest-threshold") != std::string::npos, no_threshold.err);
  CHECK(factory_init(two, {"--manifest-threshold", "4"}).exit_code == 2);
  auto under = factory_init(one_key, {"--manifest-threshold", "2"});
  CHECK(under.exit_code == 3);
  CHECK_MESSAGE(under.err.find(one_of_three) != std::string::npos, under.err);
  auto station = factory_init(two, {"--manifest-threshold", "2"});
  CHECK_MESSAGE(station.exit_code == 0, station.err);

  auto deployment = fleet.deploy(image2, two);
  auto id = deployment["id"].get<std::string>();
  REQUIRE(fleet.wait_all_outcome(id, "installed", 40));
  CHECK(fleet.wait_all_running("1.2.0", 20));
  for (const auto& uid : fleet.uids()) CHECK(fleet.board_record(uid)["sequence"] == 3);
}
