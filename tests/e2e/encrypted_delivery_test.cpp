// End to end: confidential delivery per device. Boards provisioned with `[encryption] mode = "generate"` each
// hold their own image-encryption key; the ledger bundle carries the public halves into kiln-service. A release
// encrypted for the service's delivery key (kiln-service run --delivery-key) goes to each board with the content
// key wrapped to that board's key: every board installs it, and an image fetched as one board opens neither on
// another board nor with another board's key.
#include <doctest/doctest.h>

#include <fstream>
#include <set>

#include "core/files.hpp"
#include "signing/mcuboot_image.hpp"
#include "tests/support/ota_fleet.hpp"
#include "transport/http_client.hpp"

using namespace kiln;
using Json = nlohmann::json;

namespace {

std::string sha256_hex(const std::string& path) { return to_hex(digest(HashAlg::sha256, read_file(path))); }

}  // namespace

TEST_CASE("encrypted delivery e2e: a release encrypted for the service reaches each board wrapped to its own key") {
  test::OtaFleet fleet({.boards = 3,
                        .factory_firmware = false,
                        .delivery_key = true,
                        .profile_extra = "[encryption]\nmode = \"generate\"\n"});
  REQUIRE(fleet.uids().size() == 3);

  // The bundle carried each board's own image-encryption public key.
  std::set<std::string> keys;
  {
    std::ifstream in(fleet.file("units.jsonl"));
    for (std::string line; std::getline(in, line);) {
      auto unit = Json::parse(line);
      if (unit.contains("bundle_signature")) continue;
      REQUIRE(unit.contains("encryption_key"));
      CHECK(unit["encryption_key"].get<std::string>().find("BEGIN PUBLIC KEY") != std::string::npos);
      keys.insert(unit["encryption_key"].get<std::string>());
    }
  }
  CHECK(keys.size() == 3);

  // 1.1.0, encrypted for the service's delivery key (its public half: only the service opens it).
  std::string raw(48 * 1024 + 5, '\0');
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<char>((i * 131) ^ (i >> 7));
  std::ofstream(fleet.file("app-1.1.0.bin"), std::ios::binary) << raw;
  auto release = fleet.file("app-1.1.0.enc.bin");
  auto sign = fleet.kiln({"image", "sign", fleet.file("app-1.1.0.bin"), release, "-k", fleet.file("release.pem"),
                          "--version", "1.1.0", "--header-size", "0x200", "--slot-size", "0x1000000", "--pad-header",
                          "-E", fleet.file("delivery.pem")});
  REQUIRE_MESSAGE(sign.exit_code == 0, sign.err);
  auto deployment = fleet.deploy(release, fleet.make_manifest(release, 2));
  auto id = deployment["id"].get<std::string>();
  REQUIRE(fleet.wait_all_running("1.1.0", 120));
  CHECK(fleet.wait_service_status(id, "installed"));

  // Every board decrypted it into slot 0: the plaintext application.
  Bytes plain(raw.begin(), raw.end());
  plain.resize((plain.size() + 15) / 16 * 16, 0);
  for (const auto& uid : fleet.uids()) {
    CAPTURE(uid);
    Bytes primary = read_file(fleet.emu_dir() + "/" + uid + "/primary.bin");
    auto header = mcuboot::parse_header(primary);
    CHECK(Bytes(primary.begin() + header.header_size, primary.begin() + header.header_size + header.image_size) ==
          plain);
  }

  // What each board downloads, fetched as that board (mutual TLS with its certificate and key).
  auto release_sha = sha256_hex(release);
  auto fetch = [&](const std::string& uid) {
    transport::HttpConfig config;
    config.base_url = "https://127.0.0.1:" + std::to_string(fleet.service().agent_port());
    config.ca_file = fleet.service_dir() + "/ca.pem";
    config.client_cert = fleet.emu_dir() + "/" + uid + "/agent/client-chain.pem";
    config.client_key = fleet.emu_dir() + "/" + uid + "/device.key.pem";
    transport::HttpClient client(config);
    transport::HttpRequest request;
    request.path = "/v1/agent/images/" + release_sha + "/content";
    auto response = client.send(request);
    REQUIRE(response.status == 200);
    auto path = fleet.file("download-" + uid + ".bin");
    std::ofstream(path, std::ios::binary) << response.body;
    return path;
  };
  auto a = fetch(fleet.uids()[0]);
  auto b = fetch(fleet.uids()[1]);
  CHECK(sha256_hex(a) != sha256_hex(b));
  CHECK(read_file(a).size() == read_file(release).size());  // same key type: only the TLV's bytes differ
  // A ranged request gets the same bytes (the agent resumes downloads).
  {
    transport::HttpConfig config;
    config.base_url = "https://127.0.0.1:" + std::to_string(fleet.service().agent_port());
    config.ca_file = fleet.service_dir() + "/ca.pem";
    config.client_cert = fleet.emu_dir() + "/" + fleet.uids()[0] + "/agent/client-chain.pem";
    config.client_key = fleet.emu_dir() + "/" + fleet.uids()[0] + "/device.key.pem";
    transport::HttpClient client(config);
    transport::HttpRequest request;
    request.path = "/v1/agent/images/" + release_sha + "/content";
    request.headers.push_back("Range: bytes=1000-");
    auto response = client.send(request);
    CHECK(response.status == 206);
    Bytes whole = read_file(a);
    CHECK(response.body == std::string(whole.begin() + 1000, whole.end()));
  }

  auto key_of = [&](const std::string& uid) { return fleet.emu_dir() + "/" + uid + "/image-encryption.key.pem"; };
  // Board 0's image opens with board 0's key (the plaintext), not with board 1's, nor does the release itself.
  auto opened = fleet.kiln({"image", "decrypt", a, fleet.file("a.plain.bin"), "--key", key_of(fleet.uids()[0])});
  CHECK_MESSAGE(opened.exit_code == 0, opened.err);
  auto other = fleet.kiln({"image", "decrypt", a, fleet.file("a.other.bin"), "--key", key_of(fleet.uids()[1])});
  CHECK(other.exit_code == 3);
  CHECK_FALSE(std::filesystem::exists(fleet.file("a.other.bin")));
  auto original = fleet.kiln({"image", "decrypt", release, fleet.file("r.bin"), "--key", key_of(fleet.uids()[0])});
  CHECK(original.exit_code == 3);

  // Copied onto board 1 over its link, board 0's image is refused with the reason; board 1 keeps 1.1.0.
  auto copied = fleet.kiln({"board", "upload", a, "-b", fleet.uids()[1], "--reset"});
  CHECK(copied.exit_code == 4);
  CHECK_MESSAGE(copied.err.find("does not open this image") != std::string::npos, copied.err);
  CHECK(fleet.board_version(fleet.uids()[1]) == "1.1.0");
}

TEST_CASE("encrypted delivery e2e: a release encrypted for a key the boards do not hold is refused by each agent") {
  test::OtaFleet fleet({.boards = 2,
                        .factory_firmware = false,
                        .delivery_key = true,
                        .profile_extra = "[encryption]\nmode = \"generate\"\ntype = \"ecies-x25519\"\n"});
  // Encrypted for a key nobody but its maker holds: the service cannot re-wrap it and sends it as uploaded.
  REQUIRE(fleet.kiln({"key", "generate", "-t", "ecdsa-p256", "-o", fleet.file("stranger.pem")}).exit_code == 0);
  std::ofstream(fleet.file("app.bin"), std::ios::binary) << std::string(20000, 'k');
  auto image = fleet.file("app-1.2.0.enc.bin");
  auto sign = fleet.kiln({"image", "sign", fleet.file("app.bin"), image, "-k", fleet.file("release.pem"), "--version",
                          "1.2.0", "--header-size", "0x200", "--slot-size", "0x1000000", "--pad-header", "-E",
                          fleet.file("stranger.pem")});
  REQUIRE_MESSAGE(sign.exit_code == 0, sign.err);
  auto id = fleet.deploy(image, fleet.make_manifest(image, 2))["id"].get<std::string>();
  REQUIRE(fleet.wait_all_outcome(id, "refused", 60));
  CHECK(fleet.wait_service_status(id, "refused"));
  for (const auto& [device, row] : fleet.deployment_devices(id)) {
    const std::string device_id = device;  // a named copy: clang 14 lambdas cannot capture bindings
    CAPTURE(device_id);
    auto detail = test::OtaFleet::text(row, "detail");
    CHECK(detail.find("mcuboot") != std::string::npos);
    CHECK(detail.find("wrapped for an ECIES-P256 key") != std::string::npos);
  }
  for (const auto& uid : fleet.uids()) CHECK(fleet.board_version(uid) == "1.0.0");
}

TEST_CASE("encrypted delivery e2e: kiln-service refuses a delivery key others may read, or of the wrong type") {
  test::TempDir dir;
  auto init = test::run_process(test::bin_path("kiln-service"), {"init", "--dir", dir.file("svc")});
  REQUIRE_MESSAGE(init.exit_code == 0, init.err);
  REQUIRE(test::kiln({"key", "generate", "-t", "ecdsa-p256", "-o", dir.file("delivery.pem")}).exit_code == 0);
  std::filesystem::permissions(dir.file("delivery.pem"), std::filesystem::perms::group_read,
                               std::filesystem::perm_options::add);
  test::ProcessOptions quick;
  quick.timeout_seconds = 20;
  auto r = test::run_process(test::bin_path("kiln-service"),
                             {"run", "--dir", dir.file("svc"), "--listen", "127.0.0.1:0", "--delivery-key",
                              dir.file("delivery.pem")},
                             quick);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("may be read by others") != std::string::npos);
  CHECK(r.err.find("BEGIN") == std::string::npos);  // nothing of the key is shown

  REQUIRE(test::kiln({"key", "generate", "-t", "ed25519", "-o", dir.file("ed.pem")}).exit_code == 0);
  r = test::run_process(test::bin_path("kiln-service"),
                        {"run", "--dir", dir.file("svc"), "--listen", "127.0.0.1:0", "--delivery-key", dir.file("ed.pem")},
                        quick);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("cannot encrypt MCUboot images") != std::string::npos);
}

TEST_CASE("encrypted delivery e2e: the delivery key on a PKCS#11 token (SoftHSM2) re-wraps on the token") {
  test::OtaFleet fleet({.boards = 2,
                        .factory_firmware = false,
                        .delivery_key_on_token = true,
                        .profile_extra = "[encryption]\nmode = \"generate\"\n"});
  std::ofstream(fleet.file("app.bin"), std::ios::binary) << std::string(30000, 't');
  auto image = fleet.file("app-1.1.0.enc.bin");
  // The release engineer encrypts for the token key's public half.
  auto sign = fleet.kiln({"image", "sign", fleet.file("app.bin"), image, "-k", fleet.file("release.pem"), "--version",
                          "1.1.0", "--header-size", "0x200", "--slot-size", "0x1000000", "--pad-header", "-E",
                          fleet.delivery_key_ref()});
  REQUIRE_MESSAGE(sign.exit_code == 0, sign.err);
  auto id = fleet.deploy(image, fleet.make_manifest(image, 2))["id"].get<std::string>();
  REQUIRE(fleet.wait_all_running("1.1.0", 90));
  CHECK(fleet.wait_service_status(id, "installed"));
  // Each board got its own wrap: the release itself does not open with a board's key.
  auto key = fleet.emu_dir() + "/" + fleet.uids()[0] + "/image-encryption.key.pem";
  CHECK(fleet.kiln({"image", "decrypt", image, fleet.file("x.bin"), "--key", key}).exit_code == 3);
}
