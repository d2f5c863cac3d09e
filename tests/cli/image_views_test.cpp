// Tests for cli/image_views: the JSON `kiln image info/verify/sign/decrypt` render, from inspect_image on
// imgtool's vectors (expected offsets, of TLV values as documented, TLVs and hashes read from the files by a separate script) and from
// hand-made results.
#include <doctest/doctest.h>

#include "cli/image_views.hpp"
#include "signing/file_key.hpp"
#include "signing/mcuboot_sign.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::cli;
using namespace kiln::mcuboot;

namespace {

std::string image(const std::string& name) { return test::vector("mcuboot/" + name); }

// "ab" 31 more times: 32 bytes of 0xab in hex, written out independently of to_hex.
std::string ab62() {
  std::string out;
  for (int i = 0; i < 31; ++i) out += "ab";
  return out;
}

Bytes ed25519_key() { return load_public_key_file(image("ed25519.pem"), std::nullopt); }

}  // namespace

TEST_CASE("image_views: image info of a signed image with a security counter") {
  auto report = inspect_image(image("ed25519-seccnt42.signed.bin"), ed25519_key());
  auto j = image_report_json("fw.bin", "ed25519.pem", report);
  CHECK(j["file"] == "fw.bin");
  CHECK(j["size"] == 100671);
  CHECK(j["header"] == Json{{"magic", "0x96f3b83d"},       {"load_addr", "0x0"}, {"header_size", 512},
                            {"protected_tlv_size", 12},    {"image_size", 100003}, {"flags", "0x0"},
                            {"flag_names", Json::array()}, {"version", "1.0.0+0"}});
  REQUIRE(j["protected_tlvs"].size() == 1);
  CHECK(j["protected_tlvs"][0] == Json{{"type", "0x50"}, {"name", "SEC_CNT"}, {"offset", 100523}, {"length", 4},
                                       {"value", "2a000000"}, {"security_counter", 42}});
  REQUIRE(j["tlvs"].size() == 3);
  CHECK(j["tlvs"][0]["name"] == "SHA256");
  CHECK(j["tlvs"][0]["offset"] == 100535);
  CHECK(j["tlvs"][1]["name"] == "KEYHASH");
  CHECK(j["tlvs"][1]["value"] == "009bfbaa15b2a5e1ac8b2bf101e4d24e2bbd4ae1c4c1a6fab89e5793d80974e3");
  CHECK(j["tlvs"][2] == Json{{"type", "0x24"}, {"name", "ED25519"}, {"offset", 100607}, {"length", 64},
                             {"value", "73bf5cb9add893663ce818660f62ac215ac36ea01a9aeacacc7ea977126abb59dc53a17e868c8079"
                                        "1b342b3fa1df96ab4f12becbeebd82d0ab4ef9195b4ca403"}});
  CHECK(j["image_end"] == 100671);
  CHECK(j["trailer"] == Json{{"magic", false}});
  CHECK(j["hash"] == Json{{"algorithm", "sha256"},
                          {"digest", "e1f0056888afe0d48e25b9143608f2e9b7ed781f8501c31539381bbd06de8212"},
                          {"matches", true}});
  CHECK(j["key_hash"] == "009bfbaa15b2a5e1ac8b2bf101e4d24e2bbd4ae1c4c1a6fab89e5793d80974e3");
  CHECK(j["verification"] == Json{{"key", "ed25519.pem"},
                                  {"key_hash", "009bfbaa15b2a5e1ac8b2bf101e4d24e2bbd4ae1c4c1a6fab89e5793d80974e3"},
                                  {"key_hash_matches", true},
                                  {"signature_valid", true},
                                  {"result", "ok"},
                                  {"reason", ""},
                                  {"unchecked", Json::array()}});
  CHECK(j["encryption"].is_null());
  CHECK(j["compression"].is_null());
}

TEST_CASE("image_views: a dependency, a confirmed trailer and the NON_BOOTABLE flag in words") {
  auto deps = image_report_json("d.bin", "", inspect_image(image("ed25519-deps.signed.bin"), std::nullopt));
  REQUIRE(deps["protected_tlvs"].size() == 1);
  CHECK(deps["protected_tlvs"][0]["name"] == "DEPENDENCY");
  CHECK(deps["protected_tlvs"][0]["value"] == "010000000102030000000000");
  CHECK(deps["protected_tlvs"][0]["dependency"] == Json{{"image_id", 1}, {"min_version", "1.2.3+0"}});
  CHECK(deps["verification"]["key"].is_null());
  CHECK(deps["verification"]["result"] == "hash-ok");  // no key: only the hash was checked
  CHECK(deps["verification"]["signature_valid"].is_null());

  auto confirmed = image_report_json("c.bin", "", inspect_image(image("ed25519-pad-confirm.signed.bin"), std::nullopt));
  CHECK(confirmed["size"] == 131072);
  CHECK(confirmed["header"]["version"] == "3.1.4+0");
  CHECK(confirmed["trailer"]["magic"] == true);
  CHECK(confirmed["trailer"]["max_align"] == 8);
  CHECK(confirmed["trailer"]["image_ok"] == "0x01");
  CHECK(confirmed["trailer"]["confirmed"] == true);

  auto nonboot = image_report_json("n.bin", "", inspect_image(image("ed25519-nonboot.signed.bin"), std::nullopt));
  CHECK(nonboot["header"]["flags"] == "0x10");
  CHECK(nonboot["header"]["flag_names"] == Json::array({"NON_BOOTABLE"}));
}

TEST_CASE("image_views: verify says failed with the reason for another key, and briefs the result") {
  auto p256 = load_public_key_file(image("ecdsa-p256.pem"), std::nullopt);
  auto report = inspect_image(image("ed25519-basic.signed.bin"), p256);
  REQUIRE_FALSE(report.ok());
  auto brief = verify_result_json("fw.bin", "ecdsa-p256.pem", report);
  CHECK(brief["file"] == "fw.bin");
  CHECK(brief["result"] == "failed");
  CHECK(brief["version"] == "1.2.3+4");
  CHECK(brief["hash"] == "sha256");
  CHECK(brief["decrypted"] == false);
  CHECK(brief["decompressed_ok"].is_null());
  CHECK(brief["key_hash"] == "85c70615bb7659fd8014d385ac8b9f41fd946820037bd590d0e7cb642c463d22");
  auto info = image_report_json("fw.bin", "ecdsa-p256.pem", report);
  CHECK(info["verification"]["key_hash_matches"] == false);
  CHECK(info["verification"]["reason"] == report.failure);
  CHECK_FALSE(report.failure.empty());

  auto good = verify_result_json("fw.bin", "ed25519.pem", inspect_image(image("ed25519-basic.signed.bin"), ed25519_key()));
  CHECK(good["result"] == "ok");
  ImageReport partly = inspect_image(image("ed25519-basic.signed.bin"), ed25519_key());
  partly.unchecked.push_back("hash over the plaintext: no --decrypt-key");
  CHECK(verify_result_json("fw.bin", "ed25519.pem", partly)["result"] == "partly-checked");
}

TEST_CASE("image_views: sign results, for an image and for a vector to sign, and decrypt results") {
  SignResult r;
  r.header.header_size = 0x200;
  r.header.image_size = 1000;
  r.header.protected_tlv_size = 0;
  r.header.version = ImageVersion{1, 2, 3, 4};
  r.hash = HashAlg::sha256;
  r.digest = Bytes(32, 0xab);
  r.key_type = KeyType::ed25519;
  r.key_hash = Bytes{0x01, 0x02};
  r.image_bytes = 1600;
  r.output_bytes = 0x40000;
  r.encryption_tlv = tlv::enc_x25519;
  auto j = sign_result_json("out.bin", r);
  CHECK(j == Json{{"output", "out.bin"},  {"encrypted", "ENCX25519"}, {"compressed", false},
                  {"version", "1.2.3+4"}, {"signed", true},            {"key_type", "ed25519"},
                  {"key_hash", "0102"},   {"hash", "sha256"},          {"digest", "ab" + ab62()},
                  {"header_size", 512},   {"image_size", 1000},        {"protected_tlv_size", 0},
                  {"image_bytes", 1600},  {"output_bytes", 262144}});
  r.key_type.reset();
  r.encryption_tlv.reset();
  auto unsigned_image = sign_result_json("u.bin", r);
  CHECK(unsigned_image["signed"] == false);
  CHECK(unsigned_image["key_type"].is_null());
  CHECK(unsigned_image["key_hash"].is_null());
  CHECK(unsigned_image["encrypted"] == false);

  r.vector = SignOptions::Vector::digest;
  r.output_bytes = 32;
  CHECK(sign_result_json("v.bin", r) == Json{{"output", "v.bin"}, {"vector", "digest"}, {"hash", "sha256"},
                                             {"digest", "ab" + ab62()}, {"output_bytes", 32}});
  r.vector = SignOptions::Vector::payload;
  CHECK(sign_result_json("v.bin", r)["vector"] == "payload");

  DecryptResult d;
  d.header.version = ImageVersion{2, 0, 1, 0};
  d.header.image_size = 4096;
  d.encryption_tlv = tlv::enc_ec256;
  d.output_bytes = 5000;
  CHECK(decrypt_result_json("plain.bin", d) == Json{{"output", "plain.bin"}, {"key_tlv", "ENCEC256"},
                                                    {"version", "2.0.1+0"}, {"image_size", 4096},
                                                    {"output_bytes", 5000}});
}
