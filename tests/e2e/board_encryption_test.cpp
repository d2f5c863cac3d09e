// End to end: kiln-board-emu boards hold an image-encryption key in their secure element and decrypt
// encrypted MCUboot images (imgtool's vectors and kiln's own) while MCUboot swaps them in; an image a board
// cannot open is refused over SMP with the reason, and the board keeps running what it ran.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"
#include "core/files.hpp"
#include "signing/mcuboot_image.hpp"
#include "tests/support/emulator_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using nlohmann::json;

namespace {

std::string more(const std::string& name) { return test::vector("mcuboot-more/" + name); }

test::ProcessOptions emu_env(const test::TempDir& dir) {
  test::ProcessOptions options;
  options.env["KILN_EMU_DIR"] = dir.file("emu");
  return options;
}

json slots(const test::TempDir& dir) {
  auto r = test::kiln({"-o", "json", "board", "images"}, emu_env(dir));
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

// The payload of the image in the board's slot 0 (what MCUboot wrote there).
Bytes primary_payload(const test::TempDir& dir, const std::string& uid) {
  Bytes primary = read_file(dir.file("emu") + "/" + uid + "/primary.bin");
  auto header = mcuboot::parse_header(primary);
  return Bytes(primary.begin() + header.header_size, primary.begin() + header.header_size + header.image_size);
}

// The offset of the first TLV of `type` in the unprotected area of `image` (its value).
std::size_t tlv_value_offset(const Bytes& image, std::uint16_t type) {
  auto parsed = mcuboot::parse_image(image);
  for (const auto& e : parsed.unprotected_area.entries)
    if (e.type == type) return e.offset;
  FAIL("no TLV ", type);
  return 0;
}

}  // namespace

TEST_CASE("board encryption: imgtool's P-256, X25519 and RSA-2048 encrypted vectors install and boot decrypted") {
  for (auto [image, key] : {std::pair{"enc-p256-aes128.signed.bin", "enc-p256.pem"},
                            std::pair{"enc-x25519-aes128.signed.bin", "enc-x25519.pem"},
                            std::pair{"enc-rsa2048-aes128.signed.bin", "enc-rsa2048.pem"}}) {
    const std::string vector = image;  // a named copy: clang 14 lambdas cannot capture bindings
    CAPTURE(vector);
    test::TempDir dir;
    test::EmulatorProcess emu(dir.file("emu"), 1, {"--encryption-key", more(key)});
    auto r = test::kiln({"board", "upload", more(image), "--confirm", "--reset"}, emu_env(dir));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    auto s = slots(dir);
    REQUIRE(s.size() >= 1);
    CHECK(s[0]["active"] == true);
    CHECK(s[0]["version"] == "1.0.0");
    CHECK(s[0]["hash"] == to_hex(digest(HashAlg::sha256, read_file(more(image)))));
    // MCUboot decrypted it into slot 0: the plaintext application, not the ciphertext.
    CHECK(primary_payload(dir, emu.uids()[0]) == test::padded_more_app());
    // The key never leaves: the provisioning record shows the public half only.
    auto info = test::kiln({"-o", "json", "board", "info"}, emu_env(dir));
    CHECK(info.exit_code == 0);
    CHECK(info.out.find("PRIVATE") == std::string::npos);
  }
}

TEST_CASE("board encryption: the --clear vector (encryption flags, plaintext body) boots as it is") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--encryption-key", more("enc-p256.pem")});
  auto r = test::kiln({"board", "upload", more("enc-p256-clear.signed.bin"), "--confirm", "--reset"}, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(slots(dir)[0]["hash"] == to_hex(digest(HashAlg::sha256, read_file(more("enc-p256-clear.signed.bin")))));
  CHECK(primary_payload(dir, emu.uids()[0]) == test::padded_more_app());
}

TEST_CASE("board encryption: a kiln-encrypted image (AES-256, ECIES-P256) boots; a kiln-compressed one too") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--encryption-key", more("enc-p256.pem")});
  auto sign = test::kiln({"image", "sign", "-k", more("ed25519.pem"), "--version", "2.1.0", "--header-size", "0x200",
                          "--pad-header", "--slot-size", "0x40000", "-E", more("enc-p256.pem"), "--encrypt-keylen",
                          "256", more("app.bin"), dir.file("enc.bin")});
  REQUIRE_MESSAGE(sign.exit_code == 0, sign.err);
  auto r = test::kiln({"board", "upload", dir.file("enc.bin"), "--confirm", "--reset"}, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(slots(dir)[0]["version"] == "2.1.0");
  CHECK(primary_payload(dir, emu.uids()[0]) == test::padded_more_app());

  r = test::kiln({"board", "upload", more("ed25519-lzma2.signed.bin"), "--confirm", "--reset"}, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(slots(dir)[0]["version"] == "1.0.0");
}

TEST_CASE("board encryption: an image the board cannot open is refused over SMP with the reason") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--encryption-key", more("enc-p256.pem")});
  auto running = slots(dir)[0]["hash"];

  SUBCASE("encrypted for another key type") {
    auto r = test::kiln({"board", "upload", more("enc-x25519-aes128.signed.bin"), "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("wrapped for an ECIES-X25519 key") != std::string::npos);
  }
  SUBCASE("encrypted for another P-256 key") {
    auto sign = test::kiln({"key", "generate", "--type", "ecdsa-p256", "-o", dir.file("other.pem")});
    REQUIRE(sign.exit_code == 0);
    sign = test::kiln({"image", "sign", "-k", more("ed25519.pem"), "--version", "3.0.0", "--header-size", "0x200",
                       "--pad-header", "--slot-size", "0x40000", "-E", dir.file("other.pem"), more("app.bin"),
                       dir.file("other.bin")});
    REQUIRE_MESSAGE(sign.exit_code == 0, sign.err);
    auto r = test::kiln({"board", "upload", dir.file("other.bin"), "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("MAC does not match") != std::string::npos);
  }
  SUBCASE("the encryption TLV was altered") {
    Bytes image = read_file(more("enc-p256-aes128.signed.bin"));
    image[tlv_value_offset(image, 0x32) + 70] ^= 0x01;  // inside the MAC
    write_file_atomic(dir.file("altered.bin"), image);
    auto r = test::kiln({"board", "upload", dir.file("altered.bin"), "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("does not open this image") != std::string::npos);
  }
  SUBCASE("the encryption TLV's ephemeral point is not on the curve") {
    Bytes image = read_file(more("enc-p256-aes128.signed.bin"));
    image[tlv_value_offset(image, 0x32) + 10] ^= 0x5a;
    write_file_atomic(dir.file("point.bin"), image);
    auto r = test::kiln({"board", "upload", dir.file("point.bin"), "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("not a valid point") != std::string::npos);
  }
  SUBCASE("the encrypted payload was altered") {
    Bytes image = read_file(more("enc-p256-aes128.signed.bin"));
    image[0x200 + 100] ^= 0x01;
    write_file_atomic(dir.file("payload.bin"), image);
    auto r = test::kiln({"board", "upload", dir.file("payload.bin"), "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("hash mismatch") != std::string::npos);
  }
  SUBCASE("a hostile LZMA stream") {
    Bytes image = read_file(more("ed25519-lzma2.signed.bin"));
    auto header = mcuboot::parse_header(image);
    for (std::size_t i = header.header_size + 2u; i < header.header_size + 64u; ++i) image[i] = 0xff;
    write_file_atomic(dir.file("lzma.bin"), image);
    auto r = test::kiln({"board", "upload", dir.file("lzma.bin"), "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("invalid value") != std::string::npos);
  }
  SUBCASE("a compressed image that says it decompresses beyond the slot") {
    Bytes image = read_file(more("ed25519-lzma2.signed.bin"));
    auto parsed = mcuboot::parse_image(image);
    REQUIRE(parsed.protected_area);
    for (const auto& e : parsed.protected_area->entries)
      if (e.type == 0x70)
        for (std::size_t i = 0; i < 4; ++i) image[e.offset + i] = i == 3 ? 0x7f : 0xff;
    write_file_atomic(dir.file("huge.bin"), image);
    auto r = test::kiln({"board", "upload", dir.file("huge.bin"), "--reset"}, emu_env(dir));
    CHECK(r.exit_code == 4);
    CHECK(r.err.find("more than the") != std::string::npos);
  }
  // Whatever it was, the board still answers and still runs what it ran; slot 1 holds nothing.
  auto after = slots(dir);
  CHECK(after.size() == 1);
  CHECK(after[0]["hash"] == running);
  CHECK(test::kiln({"board", "echo", "still-here"}, emu_env(dir)).exit_code == 0);
}

TEST_CASE("board encryption: a board without an image-encryption key refuses encrypted images") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1);
  auto r = test::kiln({"board", "upload", more("enc-p256-aes128.signed.bin"), "--reset"}, emu_env(dir));
  CHECK(r.exit_code == 4);
  CHECK(r.err.find("holds no image-encryption key") != std::string::npos);
}

TEST_CASE("board encryption: --encryption-key refuses a key MCUboot cannot decrypt with") {
  test::TempDir dir;
  auto r = test::run_process(test::bin_path("kiln-board-emu"),
                             {"--dir", dir.file("emu"), "--encryption-key", more("ed25519.pem")});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("ED25519") != std::string::npos);
  CHECK(r.err.find("cannot encrypt MCUboot images") != std::string::npos);
}

namespace {

// A firmware that compresses well (and is not a multiple of 16 bytes).
Bytes compressible_firmware() {
  Bytes fw;
  for (std::size_t i = 0; i < 40000 + 7; ++i) fw.push_back(static_cast<std::uint8_t>((i / 64) % 7 + (i % 3)));
  return fw;
}

Bytes slot_file(const test::TempDir& dir, const std::string& uid, const std::string& name) {
  return read_file(dir.file("emu") + "/" + uid + "/" + name);
}

void sign_image(const test::TempDir& dir, const std::string& input, const std::string& output,
                const std::string& version, std::vector<std::string> extra) {
  std::vector<std::string> args{"image", "sign", "-k", more("ed25519.pem"), "--version", version, "--header-size",
                                "0x200", "--pad-header", "--slot-size", "0x40000"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(input);
  args.push_back(output);
  auto r = test::kiln(args, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
}

}  // namespace

TEST_CASE("board compression: MCUboot decompresses a compressed image into slot 0 at the swap") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--encryption-key", more("enc-p256.pem")});
  const std::string uid = emu.uids()[0];
  Bytes firmware = compressible_firmware();
  write_file_atomic(dir.file("fw.bin"), firmware);

  SUBCASE("kiln's lzma2 and lzma2armthumb images") for (std::string mode : {"lzma2", "lzma2armthumb"}) {
    CAPTURE(mode);
    const std::string compressed = dir.file("fw-" + mode + ".bin"), plain = dir.file("fw-plain-" + mode + ".bin");
    sign_image(dir, dir.file("fw.bin"), compressed, "3.0.0", {"--compression", mode});
    sign_image(dir, dir.file("fw.bin"), plain, "3.0.0", {});
    Bytes uploaded = read_file(compressed);
    REQUIRE(uploaded.size() < read_file(plain).size());  // it did compress
    REQUIRE((mcuboot::parse_header(uploaded).flags & 0x400u) != 0);
    auto r = test::kiln({"board", "upload", compressed, "--confirm"}, emu_env(dir));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    auto s = slots(dir);
    REQUIRE(s.size() == 2);
    CHECK(s[1]["compressed"] == true);  // slot 1 holds it as uploaded until the swap
    r = test::kiln({"board", "reset"}, emu_env(dir));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    s = slots(dir);
    CHECK(s[0]["active"] == true);
    CHECK(s[0]["version"] == "3.0.0");
    CHECK(s[0]["compressed"] == false);  // what slot 0 holds now
    // Slot 0 holds the decompressed image: the firmware itself, and exactly the image signed without
    // compression (DECOMP_SHA and DECOMP_SIGNATURE became its hash and signature), which verifies.
    CHECK(primary_payload(dir, uid) == firmware);
    Bytes primary = slot_file(dir, uid, "primary.bin");
    CHECK((mcuboot::parse_header(primary).flags & 0xE00u) == 0);
    CHECK(primary == read_file(plain));
    auto v = test::kiln({"image", "verify", dir.file("emu") + "/" + uid + "/primary.bin", "--key", more("ed25519.pem")});
    CHECK_MESSAGE(v.exit_code == 0, v.err);
  }

  SUBCASE("imgtool's compressed vector") {
    auto r = test::kiln({"board", "upload", more("ed25519-lzma2.signed.bin"), "--confirm", "--reset"}, emu_env(dir));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK(slots(dir)[0]["version"] == "1.0.0");
    CHECK(primary_payload(dir, uid) == read_file(more("compressible.bin")));
    auto v = test::kiln({"image", "verify", dir.file("emu") + "/" + uid + "/primary.bin", "--key", more("ed25519.pem")});
    CHECK_MESSAGE(v.exit_code == 0, v.err);
  }

  SUBCASE("encrypted and compressed: decrypted, then decompressed") {
    const std::string image = dir.file("fw-enc-lzma2.bin");
    sign_image(dir, dir.file("fw.bin"), image, "4.0.0", {"--compression", "lzma2", "-E", more("enc-p256.pem")});
    REQUIRE((mcuboot::parse_header(read_file(image)).flags & 0x400u) != 0);
    auto r = test::kiln({"board", "upload", image, "--confirm", "--reset"}, emu_env(dir));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    CHECK(slots(dir)[0]["version"] == "4.0.0");
    Bytes padded = firmware;
    padded.resize((padded.size() + 15) / 16 * 16, 0);
    CHECK(primary_payload(dir, uid) == padded);
    auto v = test::kiln({"image", "verify", dir.file("emu") + "/" + uid + "/primary.bin", "--key", more("ed25519.pem")});
    CHECK_MESSAGE(v.exit_code == 0, v.err);
  }
}

TEST_CASE("board encryption: a test image that reverts goes back to slot 1 encrypted, as it was uploaded") {
  test::TempDir dir;
  test::EmulatorProcess emu(dir.file("emu"), 1, {"--encryption-key", more("enc-p256.pem")});
  const std::string uid = emu.uids()[0];
  const std::string v1 = more("enc-p256-aes128.signed.bin"), v2 = dir.file("v2.bin");
  sign_image(dir, more("app.bin"), v2, "2.0.0", {"-E", more("enc-p256.pem")});

  auto r = test::kiln({"board", "upload", v1, "--confirm", "--reset"}, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  // A test swap: v2 runs decrypted, and v1 goes to slot 1 as it was uploaded (re-encrypted).
  r = test::kiln({"board", "upload", v2, "--reset"}, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  auto s = slots(dir);
  CHECK(s[0]["version"] == "2.0.0");
  CHECK(s[0]["encrypted"] == false);
  REQUIRE(s.size() == 2);
  CHECK(s[1]["encrypted"] == true);
  CHECK(primary_payload(dir, uid) == test::padded_more_app());
  CHECK(slot_file(dir, uid, "secondary.bin") == read_file(v1));
  // Not confirmed: the next reset reverts. Slot 1 gets back exactly the encrypted bytes of v2.
  r = test::kiln({"board", "reset"}, emu_env(dir));
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  s = slots(dir);
  CHECK(s[0]["version"] == "1.0.0");
  REQUIRE(s.size() == 2);
  CHECK(s[1]["version"] == "2.0.0");
  CHECK(s[1]["encrypted"] == true);
  CHECK(primary_payload(dir, uid) == test::padded_more_app());
  Bytes secondary = slot_file(dir, uid, "secondary.bin");
  CHECK(secondary == read_file(v2));
  CHECK(secondary != slot_file(dir, uid, "primary.bin"));
}
