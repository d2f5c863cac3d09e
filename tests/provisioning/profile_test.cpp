// Tests for the station profile: TOML round trip, defaults and refusals.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>

#include "core/error.hpp"
#include "provisioning/profile.hpp"

using namespace kiln;

namespace {

StationProfile sample() {
  StationProfile p;
  p.product = "Thermostat Pro";
  p.station_id = "line-1";
  p.ledger = "/var/lib/kiln/ledger.sqlite";
  p.quota = 1000;
  p.ca_key = "pkcs11:token=CA;object=ca";
  p.station_key = "/keys/station.pem";
  p.ca_certificate = "/keys/ca.pem";
  p.vendor_root = "/keys/vendor.pem";
  p.identity = IdentityMode::inject;
  p.boot_key_hash = std::string(64, 'a');
  p.service_url = "https://kiln.example";
  p.trust_anchor = "/keys/anchor.pem";
  return p;
}

}  // namespace

TEST_CASE("profile: writing then reading gives the same profile") {
  auto p = parse_profile(profile_to_toml(sample()), "/base");
  CHECK(p.product == "Thermostat Pro");
  CHECK(p.station_id == "line-1");
  CHECK(p.ledger == "/var/lib/kiln/ledger.sqlite");
  REQUIRE(p.quota);
  CHECK(*p.quota == 1000);
  CHECK(p.ca_key == "pkcs11:token=CA;object=ca");
  CHECK(p.station_key == "/keys/station.pem");
  CHECK(p.identity == IdentityMode::inject);
  CHECK(p.service_url == "https://kiln.example");
  CHECK(p.final_state == ManufacturingState::device_complete);
}

TEST_CASE("profile: relative paths are taken from the profile's directory") {
  auto p = parse_profile("[station]\nproduct = \"P\"\n[ca]\nkey = \"ca.key\"\ncertificate = \"ca.pem\"\n"
                         "[attestation]\nvendor_root = \"root.pem\"\n[install]\nboot_key_hash = \"" +
                             std::string(64, '0') + "\"\n",
                         "/station");
  CHECK(p.ca_key == "/station/ca.key");
  CHECK(p.station_key == "/station/ca.key");
  CHECK(p.vendor_root == "/station/root.pem");
  CHECK(p.trust_anchor == "/station/ca.pem");
  CHECK(p.final_state == ManufacturingState::module_complete);  // no service URL: device-complete is impossible
  CHECK_FALSE(p.quota);
}

TEST_CASE("profile: any string reads back exactly; text after a value is refused, naming the line") {
  auto odd = sample();
  odd.product = "Thermostat \"Pro\"\tline\nbreak \u00e9 \\";
  odd.ca_certificate = "/keys/C:\\ca \"1\".pem";
  odd.station_id = "#not-a-comment = [x]";
  auto text = profile_to_toml(odd);
  auto back = parse_profile(text, "/");
  CHECK(back.product == odd.product);
  CHECK(back.ca_certificate == odd.ca_certificate);
  CHECK(back.station_id == odd.station_id);
  CHECK(profile_to_toml(back) == text);
  // A fuzzer find (with CLI11's reader): trailing text after a closing quote came back with the quotes in it.
  CHECK_THROWS_WITH_AS(parse_profile("[station]\nproduct = \"P\"-\n", "/"), doctest::Contains("profile line 2"), Error);
  // Values of the wrong type name the key and its line.
  CHECK_THROWS_WITH_AS(parse_profile("[station]\nproduct = 7\n", "/"),
                       doctest::Contains("profile line 2: 'station.product' must be a string"), Error);
  CHECK_THROWS_WITH_AS(parse_profile("[station]\nquota = \"7\"\n", "/"),
                       doctest::Contains("'station.quota' must be an integer"), Error);
  CHECK_THROWS_WITH_AS(parse_profile("[firmware]\nmanifest_keys = [1, 2]\n", "/"),
                       doctest::Contains("'firmware.manifest_keys' must be an array of strings"), Error);
  CHECK_THROWS_WITH_AS(parse_profile("product = \"P\"\n", "/"), doctest::Contains("unknown key 'product'"), Error);
}

TEST_CASE("profile: refuses unknown keys, missing keys and bad values") {
  auto toml = profile_to_toml(sample());
  CHECK_THROWS_AS(parse_profile(toml + "[extra]\nthing = 1\n", "/"), Error);
  CHECK_THROWS_WITH_AS(parse_profile("[station]\nproduct = \"P\"\n", "/"), doctest::Contains("ca.key"), Error);
  auto bad_mode = toml;
  bad_mode.replace(bad_mode.find("\"inject\""), 8, "\"psk\"");
  CHECK_THROWS_WITH_AS(parse_profile(bad_mode, "/"), doctest::Contains("identity.mode"), Error);
  auto bad_url = toml;
  bad_url.replace(bad_url.find("https://kiln.example"), 20, "http://kiln.example!");
  CHECK_THROWS_WITH_AS(parse_profile(bad_url, "/"), doctest::Contains("https://"), Error);
}

TEST_CASE("profile: the firmware section reads back, and is refused when incomplete or not hex") {
  auto p = sample();
  p.firmware = FirmwareProfile{"app.signed.bin", "/fw/app.suit", {std::string(182, 'b')}, 1, std::string(64, 'c'),
                               std::string(64, 'd')};
  auto text = profile_to_toml(p);
  auto back = parse_profile(text, "/base");
  REQUIRE(back.firmware);
  CHECK(back.firmware->image == "/base/app.signed.bin");
  CHECK(back.firmware->manifest == "/fw/app.suit");
  CHECK(back.firmware->manifest_keys == std::vector<std::string>{std::string(182, 'b')});
  CHECK(back.firmware->manifest_threshold == 1);
  CHECK(back.firmware->image_sha256 == std::string(64, 'c'));
  CHECK(back.firmware->manifest_sha256 == std::string(64, 'd'));
  CHECK_FALSE(parse_profile(profile_to_toml(sample()), "/base").firmware);

  auto replaced = [&](const std::string& from, const std::string& to) {
    auto changed = text;
    changed.replace(changed.find(from), from.size(), to);
    return changed;
  };
  CHECK_THROWS_WITH_AS(parse_profile(replaced("image = \"", "imagex = \""), "/base"), doctest::Contains("imagex"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(replaced(std::string(64, 'c'), std::string(63, 'c')), "/base"),
                       doctest::Contains("firmware.image_sha256 must be hex"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(replaced(std::string(64, 'd'), std::string(64, 'z')), "/base"),
                       doctest::Contains("firmware.manifest_sha256"), Error);
  auto without_image = text.substr(0, text.find("image = \"")) + text.substr(text.find("image_sha256"));
  CHECK_THROWS_WITH_AS(parse_profile(without_image, "/base"), doctest::Contains("needs firmware.image"), Error);
}

TEST_CASE("profile: M-of-N manifest keys read back; the old single manifest_key is 1 of 1; bad thresholds refused") {
  auto p = sample();
  std::vector<std::string> keys{std::string(182, 'a'), std::string(182, 'b'), std::string(182, 'e')};
  p.firmware = FirmwareProfile{"app.signed.bin", "/fw/app.suit", keys, 2, std::string(64, 'c'), std::string(64, 'd')};
  auto text = profile_to_toml(p);
  CHECK(text.find("manifest_threshold = 2") != std::string::npos);
  auto back = parse_profile(text, "/base");
  REQUIRE(back.firmware);
  CHECK(back.firmware->manifest_keys == keys);
  CHECK(back.firmware->manifest_threshold == 2);

  auto replaced = [&](const std::string& from, const std::string& to) {
    auto changed = text;
    changed.replace(changed.find(from), from.size(), to);
    return changed;
  };
  CHECK_THROWS_WITH_AS(parse_profile(replaced("manifest_threshold = 2", "manifest_threshold = 4"), "/base"),
                       doctest::Contains("firmware.manifest_threshold must be an integer from 1 to 3"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(replaced("manifest_threshold = 2", "manifest_threshold = 0"), "/base"),
                       doctest::Contains("firmware.manifest_threshold"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(replaced(std::string(182, 'e'), std::string(182, 'a')), "/base"),
                       doctest::Contains("twice"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(replaced("manifest_keys = [", "manifest_keys = [\"zz\", "), "/base"),
                       doctest::Contains("firmware.manifest_keys must be hex"), Error);
  auto start = text.find("manifest_keys = [");
  auto without_keys = text.substr(0, start) + "manifest_keys = []\n" + text.substr(text.find("]\n", start) + 2);
  CHECK_THROWS_WITH_AS(parse_profile(without_keys, "/base"), doctest::Contains("'firmware.manifest_keys' is missing"),
                       Error);
  CHECK_THROWS_WITH_AS(parse_profile(replaced("manifest_threshold = 2\n", ""), "/base"),
                       doctest::Contains("'firmware.manifest_threshold' is missing"), Error);

  // A profile written before M of N.
  auto old = text.substr(0, start) + "manifest_key = \"" + std::string(182, 'b') + "\"\n" +
             text.substr(text.find("]\n", start) + 2);
  old.erase(old.find("manifest_threshold = 2\n"), std::string("manifest_threshold = 2\n").size());
  auto single = parse_profile(old, "/base");
  REQUIRE(single.firmware);
  CHECK(single.firmware->manifest_keys == std::vector<std::string>{std::string(182, 'b')});
  CHECK(single.firmware->manifest_threshold == 1);
}

TEST_CASE("profile: a table or key that appears twice is refused, naming the line") {
  auto toml = profile_to_toml(sample());
  // A second [ca] table further down (CLI11's reader merged it, and the last validity_days won).
  try {
    parse_profile(toml + "\n[ca]\nvalidity_days = 1\n", "/");
    FAIL("a duplicate table was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()).find("redefine existing table 'ca'") != std::string::npos);
    auto line = std::count(toml.begin(), toml.end(), '\n') + 2;  // the second [ca]
    CHECK(std::string(e.what()).find(fmt::format("profile line {}:", line)) != std::string::npos);
  }
  // A key set twice in one table, and the same key as a dotted key at the top.
  auto twice = toml;
  twice.replace(twice.find("[ca]\n"), 5, "[ca]\nkey = \"other.pem\"\n");
  CHECK_THROWS_WITH_AS(parse_profile(twice, "/"), doctest::Contains("line 14: not valid TOML"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(twice, "/"), doctest::Contains("redefine existing string 'key'"), Error);
  CHECK_THROWS_WITH_AS(parse_profile("ca.key = \"a.pem\"\n" + toml, "/"), doctest::Contains("redefine"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(toml + "[[station]]\nid = \"x\"\n", "/"), doctest::Contains("line"), Error);
}

TEST_CASE("profile: every number has a range") {
  auto toml = profile_to_toml(sample());
  auto with = [&](const std::string& from, const std::string& to) {
    auto changed = toml;
    changed.replace(changed.find(from), from.size(), to);
    return changed;
  };
  CHECK_THROWS_WITH_AS(parse_profile(with("validity_days = 3650", "validity_days = 99999999999999999999"), "/"),
                       doctest::Contains("not representable"), Error);
  for (const char* days : {"0", "-1", "36501"})
    CHECK_THROWS_WITH_AS(parse_profile(with("validity_days = 3650", std::string("validity_days = ") + days), "/"),
                         doctest::Contains("ca.validity_days must be an integer from 1 to 36500"), Error);
  CHECK(parse_profile(with("validity_days = 3650", "validity_days = 36500"), "/").validity_days == 36500);
  CHECK_THROWS_WITH_AS(parse_profile(with("quota = 1000", "quota = 1000000000000"), "/"),
                       doctest::Contains("station.quota"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(with("checkpoint_every = 16", "checkpoint_every = 0"), "/"),
                       doctest::Contains("station.checkpoint_every"), Error);
  CHECK_THROWS_WITH_AS(parse_profile(with("checkpoint_every = 16", "checkpoint_every = 100001"), "/"),
                       doctest::Contains("station.checkpoint_every"), Error);
}

TEST_CASE("profile: the encryption section reads back, and bad combinations are refused") {
  auto p = sample();
  p.encryption = EncryptionProfile{EncryptionKeyMode::generate, "ecies-x25519", {}};
  auto back = parse_profile(profile_to_toml(p), "/base");
  REQUIRE(back.encryption);
  CHECK(back.encryption->mode == EncryptionKeyMode::generate);
  CHECK(back.encryption->type == "ecies-x25519");
  p.encryption = EncryptionProfile{EncryptionKeyMode::install, "ecies-p256", "product-enc.pem"};
  back = parse_profile(profile_to_toml(p), "/base");
  REQUIRE(back.encryption);
  CHECK(back.encryption->mode == EncryptionKeyMode::install);
  CHECK(back.encryption->key == "/base/product-enc.pem");
  CHECK_FALSE(parse_profile(profile_to_toml(sample()), "/base").encryption);

  auto base = profile_to_toml(sample());
  auto refused = [&](const std::string& extra, const std::string& message) {
    try {
      parse_profile(base + extra, "/base");
      FAIL("accepted: " << extra);
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::usage);
      CHECK_MESSAGE(std::string(e.what()).find(message) != std::string::npos, e.what());
    }
  };
  refused("\n[encryption]\nmode = \"derive\"\n", "encryption.mode must be generate or install");
  refused("\n[encryption]\nmode = \"generate\"\ntype = \"ecies-p384\"\n", "encryption.type must be");
  refused("\n[encryption]\nmode = \"generate\"\nkey = \"k.pem\"\n", "encryption.key needs mode");
  refused("\n[encryption]\nmode = \"install\"\n", "encryption.key");
  refused("\n[encryption]\nmode = \"install\"\nkey = \"k.pem\"\ntype = \"ecies-p256\"\n", "encryption.type is for");
  refused("\n[encryption]\ntype = \"ecies-p256\"\n", "needs encryption.mode");
}
