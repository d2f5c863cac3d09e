// End-to-end tests of `kiln image`: imgtool's vectors byte for byte, every key type checked by openssl, bad input.
#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/bytes.hpp"
#include "core/base64.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/signer.hpp"
#include "tests/support/crafted_keys.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

// An imgtool vector, checked against its pinned SHA-256 (tests/data/vectors.sha256).
std::string vec(const std::string& name) {
  return test::vector("mcuboot/" + name);
}

using Case = test::ImgtoolCase;
std::vector<Case> read_cases() { return test::imgtool_cases("mcuboot/CASES.txt"); }

bool deterministic(const Case& c) {
  for (std::size_t i = 0; i + 1 < c.args.size(); ++i)
    if (c.args[i] == "-k" || c.args[i] == "--key") return c.args[i + 1].find("ed25519") != std::string::npos;
  return true;  // unsigned
}

std::string key_of(const Case& c) {
  for (std::size_t i = 0; i + 1 < c.args.size(); ++i)
    if (c.args[i] == "-k" || c.args[i] == "--key") return c.args[i + 1];
  return {};
}

// A temp dir holding the vectors' inputs, so CASES.txt's relative names work unchanged.
struct Workspace {
  test::TempDir dir;
  Workspace() {
    for (auto& [name, hash] : test::pinned_vectors()) {
      fs::path path(name);
      if (path.parent_path() == "mcuboot" && (path.extension() == ".pem" || path.filename() == "app.bin"))
        fs::copy_file(test::vector(name), dir.path() / path.filename());
    }
  }
  std::string file(const std::string& name) const { return dir.file(name); }
};

test::ProcessResult kiln_in(const Workspace& ws, std::vector<std::string> args) {
  test::ProcessOptions options;
  options.cwd = ws.dir.path().string();
  return test::kiln(args, options);
}

std::vector<std::string> sign_args(const Case& c) {
  std::vector<std::string> args = {"image", "sign"};
  args.insert(args.end(), c.args.begin(), c.args.end());
  return args;
}

test::ProcessResult openssl(const std::vector<std::string>& args) {
  return test::run_process("/usr/bin/openssl", args);
}

std::vector<std::string> dir_entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// Signature and hashed region of an image, found by walking the format by hand (not with kiln's parser).
struct Pieces {
  Bytes hashed_region, hash_tlv, key_tlv, signature;
  std::uint16_t key_tlv_type = 0;
};
Pieces split_image(const Bytes& image) {
  Pieces p;
  std::size_t header_size = get_le16(image, 8), protected_size = get_le16(image, 10);
  std::size_t payload_end = header_size + get_le32(image, 12);
  p.hashed_region.assign(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(payload_end + protected_size));
  std::size_t pos = payload_end + protected_size;
  REQUIRE(get_le16(image, pos) == 0x6907);
  std::size_t end = pos + get_le16(image, pos + 2);
  for (pos += 4; pos < end;) {
    std::uint16_t type = get_le16(image, pos), length = get_le16(image, pos + 2);
    Bytes value(image.begin() + static_cast<std::ptrdiff_t>(pos + 4),
                image.begin() + static_cast<std::ptrdiff_t>(pos + 4 + length));
    if (type >= 0x10 && type <= 0x12)
      p.hash_tlv = value;
    else if (type == 0x01 || type == 0x02)
      p.key_tlv = value, p.key_tlv_type = type;
    else if (type >= 0x20 && type <= 0x24)
      p.signature = value;
    pos += 4 + length;
  }
  return p;
}

}  // namespace

TEST_CASE("image sign: every CASES.txt line reproduces imgtool's output (byte for byte where deterministic)") {
  Workspace ws;
  auto cases = read_cases();
  REQUIRE(cases.size() >= 14);
  for (const auto& c : cases) {
    CAPTURE(c.output);
    auto r = kiln_in(ws, sign_args(c));
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    Bytes ours = read_file(ws.file(c.output));
    Bytes theirs = test::vector_bytes("mcuboot/" + c.output);
    // The vector passed its pinned SHA-256, so it is imgtool's image: no "damaged vector" leniency here.
    REQUIRE(get_le32(theirs, 0) == 0x96f3b83d);
    if (deterministic(c)) {
      CHECK(ours == theirs);
    } else {
      // ECDSA and RSA-PSS signatures are randomised: everything but the signature must match,
      // and both images must verify with the key.
      CHECK(split_image(ours).hashed_region == split_image(theirs).hashed_region);
      CHECK(split_image(ours).hash_tlv == split_image(theirs).hash_tlv);
      CHECK(split_image(ours).key_tlv == split_image(theirs).key_tlv);
      auto mine = kiln_in(ws, {"image", "verify", c.output, "--key", key_of(c)});
      CHECK_MESSAGE(mine.exit_code == 0, mine.err);
    }
  }
}

TEST_CASE("image verify: imgtool's ECDSA P-256, P-384, RSA-2048 and Ed25519 vectors verify") {
  for (std::string type : {"ecdsa-p256", "ecdsa-p384", "rsa-2048", "ed25519"}) {
    CAPTURE(type);
    auto r = test::kiln({"-o", "json", "image", "verify", vec(type + "-basic.signed.bin"), "--key",
                         vec(type + ".pem")});
    REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["result"] == "ok");
    CHECK(j["version"] == "1.2.3+4");
    CHECK(j["hash"] == (type == "ecdsa-p384" ? "sha384" : "sha256"));
  }
}

TEST_CASE("image sign: images kiln signs with every key type verify with kiln and with openssl") {
  test::TempDir dir;
  Bytes firmware(70000);
  for (std::size_t i = 0; i < firmware.size(); ++i) firmware[i] = static_cast<std::uint8_t>(i * 31 + 7);
  write_file_atomic(dir.file("fw.bin"), firmware);
  for (std::string type : {"ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048", "rsa-3072"}) {
    CAPTURE(type);
    std::string key = dir.file(type + ".pem"), image = dir.file(type + ".signed.bin");
    REQUIRE(test::kiln({"key", "generate", "--type", type, "-o", key}).exit_code == 0);
    auto s = test::kiln({"image", "sign", "-k", key, "--version", "2.0.1+9", "--header-size", "0x200", "--slot-size",
                         "0x20000", "--pad-header", dir.file("fw.bin"), image});
    REQUIRE_MESSAGE(s.exit_code == 0, s.err);
    auto v = test::kiln({"image", "verify", image, "--key", key});
    CHECK_MESSAGE(v.exit_code == 0, v.err);

    // The independent oracle: openssl hashes the region and checks the signature itself.
    Pieces p = split_image(read_file(image));
    std::string hash = type == "ecdsa-p384" ? "-sha384" : "-sha256";
    write_file_atomic(dir.file("region.bin"), p.hashed_region);
    write_file_atomic(dir.file("sig.bin"), p.signature);
    REQUIRE(openssl({"dgst", hash, "-binary", "-out", dir.file("digest.bin"), dir.file("region.bin")}).exit_code == 0);
    CHECK(read_file(dir.file("digest.bin")) == p.hash_tlv);
    REQUIRE(openssl({"pkey", "-in", key, "-pubout", "-out", dir.file("pub.pem")}).exit_code == 0);
    std::vector<std::string> verify = {
        "pkeyutl",  "-verify",          "-pubin", "-inkey", dir.file("pub.pem"), "-in", dir.file("digest.bin"),
        "-sigfile", dir.file("sig.bin")};
    if (type == "ed25519") verify.push_back("-rawin");  // Ed25519 signs the digest as its message
    if (type.starts_with("rsa"))
      verify.insert(verify.end(), {"-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:32", "-pkeyopt",
                                   "digest:sha256"});
    auto o = openssl(verify);
    CHECK_MESSAGE(o.exit_code == 0, o.out << o.err);
    CHECK(o.out.find("Signature Verified Successfully") != std::string::npos);

    // KEYHASH = hash of SubjectPublicKeyInfo (EC, Ed25519) or PKCS#1 RSAPublicKey (RSA), as imgtool.
    std::vector<std::string> der =
        type.starts_with("rsa")
            ? std::vector<std::string>{"rsa",      "-in", key,    "-RSAPublicKey_out",
                                       "-outform", "DER", "-out", dir.file("pub.der")}
            : std::vector<std::string>{"pkey", "-in", key, "-pubout", "-outform", "DER", "-out", dir.file("pub.der")};
    REQUIRE(openssl(der).exit_code == 0);
    REQUIRE(openssl({"dgst", hash, "-binary", "-out", dir.file("keyhash.bin"), dir.file("pub.der")}).exit_code == 0);
    CHECK(p.key_tlv_type == 0x01);
    CHECK(read_file(dir.file("keyhash.bin")) == p.key_tlv);
  }
}

TEST_CASE("image verify: a changed payload byte is a hash mismatch (exit 3)") {
  test::TempDir dir;
  Bytes image = read_file(vec("ed25519-basic.signed.bin"));
  image[0x200 + 1000] ^= 0x01;
  write_file_atomic(dir.file("bad.bin"), image);
  auto r = test::kiln({"image", "verify", dir.file("bad.bin"), "--key", vec("ed25519.pem")});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("hash mismatch") != std::string::npos);
}

TEST_CASE("image verify: another key of the same type is a key hash mismatch (exit 3)") {
  test::TempDir dir;
  REQUIRE(test::kiln({"key", "generate", "--type", "ed25519", "-o", dir.file("other.pem")}).exit_code == 0);
  auto r = test::kiln({"image", "verify", vec("ed25519-basic.signed.bin"), "--key", dir.file("other.pem")});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("key hash mismatch") != std::string::npos);
}

TEST_CASE("image verify: a forged signature with the right key hash is a bad signature (exit 3)") {
  test::TempDir dir;
  Bytes image = read_file(vec("ed25519-basic.signed.bin"));
  image[image.size() - 5] ^= 0x40;  // inside the ED25519 TLV, the last TLV
  write_file_atomic(dir.file("forged.bin"), image);
  auto r = test::kiln({"image", "verify", dir.file("forged.bin"), "--key", vec("ed25519.pem")});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("bad signature") != std::string::npos);
}

TEST_CASE("image verify: a key of the wrong type is named as such (exit 3)") {
  auto r =
      test::kiln({"image", "verify", vec("ecdsa-p256-basic.signed.bin"), "--key", vec("ed25519.pem")});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("wrong key type") != std::string::npos);
}

TEST_CASE("image verify: truncated TLV area and wrong magic give the offset and reason (exit 3)") {
  test::TempDir dir;
  Bytes image = read_file(vec("ed25519-basic.signed.bin"));
  write_file_atomic(dir.file("short.bin"), ByteView(image).first(image.size() - 10));
  auto r = test::kiln({"image", "verify", dir.file("short.bin"), "--hash-only"});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("truncated unprotected TLV area") != std::string::npos);
  CHECK(r.err.find("offset 0x") != std::string::npos);

  image[0] = 0;
  write_file_atomic(dir.file("magic.bin"), image);
  r = test::kiln({"image", "verify", dir.file("magic.bin"), "--hash-only"});
  CHECK(r.exit_code == 3);
  CHECK(r.err.find("wrong magic") != std::string::npos);
}

TEST_CASE("image info: every field in JSON, with the trailer of a confirmed image") {
  auto r = test::kiln({"-o", "json", "image", "info", vec("ed25519-pad-confirm.signed.bin"), "--key",
                       vec("ed25519.pem")});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["size"] == 0x20000);
  CHECK(j["header"]["version"] == "3.1.4+0");
  CHECK(j["header"]["header_size"] == 0x200);
  CHECK(j["header"]["image_size"] == 100003);
  CHECK(j["tlvs"].size() == 3);
  CHECK(j["tlvs"][2]["name"] == "ED25519");
  CHECK(j["trailer"]["magic"] == true);
  CHECK(j["trailer"]["confirmed"] == true);
  CHECK(j["hash"]["matches"] == true);
  CHECK(j["key_hash"] == "009bfbaa15b2a5e1ac8b2bf101e4d24e2bbd4ae1c4c1a6fab89e5793d80974e3");
  CHECK(j["verification"]["signature_valid"] == true);
  CHECK(j["verification"]["result"] == "ok");

  r = test::kiln({"-o", "json", "image", "info", vec("ed25519-deps.signed.bin")});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  j = nlohmann::json::parse(r.out);
  CHECK(j["protected_tlvs"][0]["name"] == "DEPENDENCY");
  CHECK(j["protected_tlvs"][0]["dependency"]["min_version"] == "1.2.3+0");
  CHECK(j["verification"]["result"] == "hash-ok");
}

TEST_CASE("image sign: too big for the slot fails like imgtool and leaves no output") {
  Workspace ws;
  auto r = kiln_in(ws, {"image", "sign", "-k", "ed25519.pem", "--version", "1.0.0", "--header-size", "0x200",
                        "--slot-size", "0x18a00", "--pad-header", "app.bin", "big.bin"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("exceeds requested size") != std::string::npos);
  CHECK_FALSE(fs::exists(ws.file("big.bin")));
}

TEST_CASE("image sign: failures leave no partial output file") {
  Workspace ws;
  auto before = dir_entries(ws.dir.path());
  auto sign = [&](const std::string& key, const std::string& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"image", "sign",    "-k",           key,       "--version", "1.0.0", "-H", "0x200",
                                     "-S",    "0x40000", "--pad-header", "app.bin", out};
    args.insert(args.end(), extra.begin(), extra.end());
    return kiln_in(ws, args);
  };
  SUBCASE("output directory cannot be written") {
    write_file_atomic(ws.file("notadir"), as_bytes("x"));
    before = dir_entries(ws.dir.path());
    auto r = sign("ed25519.pem", "notadir/out.bin");
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("notadir/out.bin") != std::string::npos);
  }
  SUBCASE("key file holds no key") {
    write_file_atomic(ws.file("junk.pem"), as_bytes("not a key\n"));
    before = dir_entries(ws.dir.path());
    auto r = sign("junk.pem", "out.bin");
    CHECK(r.exit_code == 1);
  }
  SUBCASE("key of a type MCUboot cannot check (secp256k1)") {
    REQUIRE(
        openssl({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:secp256k1", "-out", ws.file("k1.pem")})
            .exit_code == 0);
    before = dir_entries(ws.dir.path());
    auto r = sign("k1.pem", "out.bin");
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("secp256k1 is not supported") != std::string::npos);
  }
  SUBCASE("encrypted key without a passphrase is an authentication error") {
    write_file_atomic(ws.file("pass.txt"), as_bytes("s3cret\n"));
    REQUIRE(kiln_in(ws, {"key", "generate", "--type", "ecdsa-p256", "-o", "enc.pem", "--passphrase-file", "pass.txt"})
                .exit_code == 0);
    before = dir_entries(ws.dir.path());
    auto r = sign("enc.pem", "out.bin");
    CHECK(r.exit_code == 6);
    CHECK(r.err.find("encrypted") != std::string::npos);
    CHECK(r.err.find("--passphrase-file") != std::string::npos);
    auto ok = sign("enc.pem", "ok.bin", {"--passphrase-file", "pass.txt"});
    CHECK_MESSAGE(ok.exit_code == 0, ok.err);
    fs::remove(ws.file("ok.bin"));
  }
  SUBCASE("input does not start with header-size zeros and --pad-header is missing") {
    auto r = kiln_in(ws, {"image", "sign", "--version", "1.0.0", "-H", "0x200", "-S", "0x40000", "app.bin", "out.bin"});
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("does not start with zeros") != std::string::npos);
  }
  CHECK(dir_entries(ws.dir.path()) == before);
}

TEST_CASE("image sign: Intel HEX in and out, verified as HEX") {
  Workspace ws;
  // app.bin at 0x8000200 as HEX, via kiln itself (binary -> HEX needs --hex-addr).
  auto r = kiln_in(ws, {"image", "sign", "--version", "1.0.0", "-H", "0x200", "-S", "0x40000", "--pad-header", "-x",
                        "0x8000000", "app.bin", "unsigned.hex"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  std::string hex = read_text_file(ws.file("unsigned.hex"));
  CHECK(hex.starts_with(":020000040800F2\n:10000000"));
  CHECK(hex.ends_with(":00000001FF\n"));
  r = kiln_in(ws, {"image", "verify", "unsigned.hex", "--hash-only"});
  CHECK_MESSAGE(r.exit_code == 0, r.err);
  // HEX input (made by objcopy) signs to the same bytes imgtool makes from the binary.
  REQUIRE(test::run_process("/usr/bin/objcopy", {"-I", "binary", "-O", "ihex", "--change-addresses", "0x8000200",
                                                 ws.file("app.bin"), ws.file("app.hex")})
              .exit_code == 0);
  r = kiln_in(ws, {"image", "sign", "-k", "ed25519.pem", "--version", "1.2.3+4", "--header-size", "0x200",
                   "--slot-size", "0x40000", "--pad-header", "app.hex", "signed.hex"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(read_text_file(ws.file("signed.hex")).starts_with(":020000040800F2\n"));
  REQUIRE(test::run_process("/usr/bin/objcopy",
                            {"-I", "ihex", "-O", "binary", ws.file("signed.hex"), ws.file("signed.bin")})
              .exit_code == 0);
  CHECK(read_file(ws.file("signed.bin")) == read_file(vec("ed25519-basic.signed.bin")));
  // Binary output without a base address for HEX is refused.
  r = kiln_in(ws, {"image", "sign", "--version", "1.0.0", "-H", "0x200", "-S", "0x40000", "--pad-header", "app.bin",
                   "nobase.hex"});
  CHECK(r.exit_code == 2);
  CHECK_FALSE(fs::exists(ws.file("nobase.hex")));
}

TEST_CASE("image sign: imgtool's other options land in the header, protected TLVs and trailer") {
  Workspace ws;
  write_file_atomic(ws.file("tlv.txt"), as_bytes("hello-file"));
  auto r = kiln_in(ws, {"image",
                        "sign",
                        "-k",
                        "ecdsa-p256.pem",
                        "-v",
                        "1.2.3",
                        "-H",
                        "0x200",
                        "-S",
                        "0x40000",
                        "--pad-header",
                        "--boot-record",
                        "SPE",
                        "--vid",
                        "example.com",
                        "--cid",
                        "app",
                        "--custom-tlv",
                        "0xb1",
                        "0x0102",
                        "--custom-tlv-file",
                        "0xb0",
                        "tlv.txt",
                        "--custom-tlv",
                        "0xb2",
                        "two",
                        "--sha",
                        "512",
                        "-s",
                        "auto",
                        "-L",
                        "0x20000000",
                        "--max-align",
                        "16",
                        "--align",
                        "16",
                        "--pad",
                        "app.bin",
                        "t.bin"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  r = kiln_in(ws, {"-o", "json", "image", "info", "t.bin", "-k", "ecdsa-p256.pem"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["size"] == 0x40000);
  CHECK(j["header"]["load_addr"] == "0x20000000");
  CHECK(j["header"]["flag_names"] == nlohmann::json::array({"RAM_LOAD"}));
  std::vector<std::string> names;
  for (auto& t : j["protected_tlvs"]) names.push_back(t["name"]);
  CHECK(names == std::vector<std::string>{"SEC_CNT", "BOOT_RECORD", "UUID_VID", "UUID_CID", "0xb1", "0xb0", "0xb2"});
  CHECK(j["protected_tlvs"][0]["security_counter"] == 0x01020003);
  // Python: uuid.uuid5(uuid.NAMESPACE_DNS, "example.com"), then uuid.uuid5(that, "app").
  CHECK(j["protected_tlvs"][2]["value"] == "cfbff0d193755685968c48ce8b15ae17");
  CHECK(j["protected_tlvs"][3]["value"] == "721de51c7dcf59f4bbab73915b2462c7");
  CHECK(j["protected_tlvs"][4]["value"] == "0102");
  CHECK(j["protected_tlvs"][5]["value"] == to_hex(as_bytes("hello-file")));
  CHECK(j["protected_tlvs"][6]["value"] == to_hex(as_bytes("two")));
  // CBOR boot record: {1: "SPE", 4: "1.2.3", 5: key hash, 6: "SHA512", 2: zeros}.
  CHECK(std::string(j["protected_tlvs"][1]["value"]).starts_with("a50163535045046531"));
  CHECK(j["tlvs"][0]["name"] == "SHA512");
  CHECK(j["trailer"]["magic"] == true);
  CHECK(j["trailer"]["max_align"] == 16);
  CHECK(j["verification"]["result"] == "ok");
}

TEST_CASE("image sign: conflicting or invalid options are usage errors") {
  Workspace ws;
  std::vector<std::string> base = {"image", "sign", "-v", "1.0.0", "-H", "0x200", "-S", "0x40000", "--pad-header"};
  auto run = [&](std::vector<std::string> extra) {
    auto args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"app.bin", "out.bin"});
    return kiln_in(ws, args);
  };
  auto r = run({"-L", "0x1000", "-F", "0x2000"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--rom-fixed and --load-addr") != std::string::npos);
  r = run({"--custom-tlv", "0x10", "x"});
  CHECK(r.exit_code == 2);
  r = run({"--custom-tlv", "0xa0", "x", "--custom-tlv", "0xa0", "y"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("already exists") != std::string::npos);
  r = run({"--custom-tlv", "0xa0", "0x123"});
  CHECK(r.exit_code == 2);
  r = run({"-d", "1,1.0.0"});
  CHECK(r.exit_code == 2);
  r = run({"-E", "ed25519.pem"});  // an Ed25519 key signs; it cannot encrypt
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("cannot encrypt") != std::string::npos);
  r = kiln_in(ws,
              {"image", "sign", "-v", "1.2.3.4", "-H", "0x200", "-S", "0x40000", "--pad-header", "app.bin", "o.bin"});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("invalid version") != std::string::npos);
  CHECK_FALSE(fs::exists(ws.file("out.bin")));
  CHECK_FALSE(fs::exists(ws.file("o.bin")));
}

TEST_CASE("image sign: a key on a PKCS#11 token (SoftHSM2) signs an image that verifies") {
  test::TempDir dir;
  const std::string module = "/usr/lib/softhsm/libsofthsm2.so";
  REQUIRE(fs::exists(module));
  fs::create_directories(dir.path() / "tokens");
  write_file_atomic(dir.file("softhsm2.conf"), as_bytes("directories.tokendir = " + dir.file("tokens") + "\n"));
  test::ProcessOptions env;
  env.env["SOFTHSM2_CONF"] = dir.file("softhsm2.conf");
  REQUIRE(test::run_process("/usr/bin/softhsm2-util",
                            {"--init-token", "--free", "--label", "T", "--pin", "1234", "--so-pin", "5678"}, env)
              .exit_code == 0);
  REQUIRE(test::run_process("/usr/bin/pkcs11-tool",
                            {"--module", module, "--login", "--pin", "1234", "--keypairgen", "--key-type",
                             "EC:prime256v1", "--id", "01", "--label", "signkey"},
                            env)
              .exit_code == 0);
  env.env["KILN_PKCS11_MODULE"] = module;
  env.env["KILN_PKCS11_PIN"] = "1234";
  const std::string uri = "pkcs11:token=T;object=signkey";
  auto s = test::kiln({"image", "sign", "-k", uri, "-v", "1.0.0", "-H", "0x200", "-S", "0x40000", "--pad-header",
                       vec("app.bin"), dir.file("hsm.bin")},
                      env);
  REQUIRE_MESSAGE(s.exit_code == 0, s.err);
  auto v = test::kiln({"image", "verify", dir.file("hsm.bin"), "-k", uri}, env);
  CHECK_MESSAGE(v.exit_code == 0, v.err);
  // And with the public key alone, as a device would.
  auto pub = test::kiln({"key", "export-public", uri, "-o", dir.file("pub.pem")}, env);
  REQUIRE_MESSAGE(pub.exit_code == 0, pub.err);
  v = test::kiln({"image", "verify", dir.file("hsm.bin"), "-k", dir.file("pub.pem")});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
}

TEST_CASE("image sign/verify: crafted keys anyone can forge for are refused (scalar 0, n, n+1, mismatched halves)") {
  test::TempDir dir;
  write_file_atomic(dir.file("fw.bin"), Bytes(3000, 0x5a));
  REQUIRE(test::kiln({"key", "generate", "--type", "ecdsa-p256", "-o", dir.file("a.pem")}).exit_code == 0);
  REQUIRE(test::kiln({"key", "generate", "--type", "ecdsa-p256", "-o", dir.file("b.pem")}).exit_code == 0);
  const Bytes zero(32, 0);
  const Bytes infinity{0x00};
  std::vector<std::pair<std::string, std::string>> keys = {
      {"zero.pem", test::sec1_pem(zero, infinity)},  // what a scalar-0 key writes as its public half
      {"zero-nopub.pem", test::sec1_pem(zero, std::nullopt)},
      {"n.pem", test::sec1_pem(test::p256_order_plus(0), std::nullopt)},
      {"n1.pem", test::sec1_pem(test::p256_order_plus(1), std::nullopt)},
      {"mismatch.pem", test::mismatched_pem(read_text_file(dir.file("a.pem")), read_text_file(dir.file("b.pem")))}};
  std::vector<std::string> sign = {"image", "sign", "--version", "1.0.0", "-H", "0x20", "--pad-header",
                                   "-S",    "0x10000", dir.file("fw.bin")};
  for (const auto& [name, pem] : keys) {
    const std::string case_name = name;  // a named copy: clang 14 lambdas cannot capture bindings
    CAPTURE(case_name);
    write_file_atomic(dir.file(name), as_bytes(pem));
    ::chmod(dir.file(name).c_str(), 0600);
    auto args = sign;
    args.insert(args.end(), {dir.file(name + ".img"), "-k", dir.file(name)});
    auto r = test::kiln(args);
    CHECK(r.exit_code == 3);
    CHECK(r.err.find("invalid private key") != std::string::npos);
    CHECK_FALSE(fs::exists(dir.file(name + ".img")));  // nothing is written
    for (const char* verb : {"show", "export-public"}) {
      auto shown = test::kiln({"key", verb, dir.file(name)});
      CHECK(shown.exit_code == 3);
    }
  }
  // The genuine key still signs, and verify checks with it.
  auto args = sign;
  args.insert(args.end(), {dir.file("good.img"), "-k", dir.file("a.pem")});
  REQUIRE(test::kiln(args).exit_code == 0);
  CHECK(test::kiln({"image", "verify", dir.file("good.img"), "-k", dir.file("a.pem")}).exit_code == 0);
}

TEST_CASE("image verify: an image forged for the point at infinity is refused, whatever form the key takes") {
  test::TempDir dir;
  write_file_atomic(dir.file("fw.bin"), Bytes(3000, 0x33));
  // An unsigned image, then what a forger adds: KEYHASH of the infinity key and an ECDSA
  // signature (r = x(G), s = digest) that verifies under that key without any private key.
  REQUIRE(test::kiln({"image", "sign", "--version", "1.0.0", "-H", "0x20", "--pad-header", "-S", "0x10000",
                      dir.file("fw.bin"), dir.file("unsigned.bin")})
              .exit_code == 0);
  Bytes image = read_file(dir.file("unsigned.bin"));
  auto parsed = mcuboot::parse_image(image);
  Bytes image_digest = digest(HashAlg::sha256, ByteView(image).first(mcuboot::hashed_size(parsed.header)));
  std::vector<mcuboot::Tlv> tlvs;
  for (const auto& e : parsed.unprotected_area.entries) tlvs.push_back({e.type, e.value});
  Bytes spki = test::infinity_spki();
  tlvs.push_back({mcuboot::tlv::keyhash, digest(HashAlg::sha256, spki)});
  tlvs.push_back({mcuboot::tlv::ecdsa_sig, test::forge_ecdsa_for_infinity(image_digest)});
  Bytes forged(image.begin(), image.begin() + static_cast<std::ptrdiff_t>(parsed.unprotected_area.offset));
  Bytes area = mcuboot::encode_tlv_area(mcuboot::tlv_info_magic, tlvs);
  forged.insert(forged.end(), area.begin(), area.end());
  write_file_atomic(dir.file("forged.bin"), forged);

  write_file_atomic(dir.file("inf.der"), spki);
  write_file_atomic(dir.file("inf.pem"), as_bytes(test::pem_of("PUBLIC KEY", spki)));
  write_file_atomic(dir.file("off.pem"), as_bytes(test::pem_of("PUBLIC KEY", test::off_curve_spki())));
  // The private key whose scalar is 0: its public half is the point at infinity.
  write_file_atomic(dir.file("zero.pem"), as_bytes(test::sec1_pem(Bytes(32, 0), std::nullopt)));
  for (const char* key : {"zero.pem", "inf.der", "inf.pem", "off.pem"}) {
    CAPTURE(key);
    auto r = test::kiln({"image", "verify", dir.file("forged.bin"), "-k", dir.file(key)});
    CHECK(r.exit_code == 3);
    CHECK(r.err.find("invalid") != std::string::npos);
    CHECK(test::kiln({"image", "info", dir.file("forged.bin"), "-k", dir.file(key)}).exit_code == 3);
    CHECK(test::kiln({"key", "show", dir.file(key)}).exit_code == 3);
    CHECK(test::kiln({"key", "export-public", dir.file(key), "--format", "pem"}).exit_code == 3);
  }
}

TEST_CASE("image verify: without --key it needs an explicit --hash-only (exit 2 with a hint)") {
  auto image = vec("ed25519-basic.signed.bin");
  auto r = test::kiln({"image", "verify", image});
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("--hash-only") != std::string::npos);
  CHECK(r.out.empty());
  r = test::kiln({"-o", "json", "image", "verify", image, "--hash-only"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(nlohmann::json::parse(r.out)["result"] == "hash-ok");
  CHECK(test::kiln({"image", "verify", image, "--hash-only", "-k", vec("ed25519.pem")}).exit_code == 2);
}

TEST_CASE("image sign: an Intel HEX address gap is checked against the slot before any memory is used") {
  test::TempDir dir;
  // 16 bytes at 0x0 and 16 bytes at 0x10000000: a ~150-byte file that spans 256 MiB.
  std::string hex = ":10000000000102030405060708090A0B0C0D0E0F78\n"
                    ":020000041000EA\n"
                    ":10000000000102030405060708090A0B0C0D0E0F78\n"
                    ":00000001FF\n";
  write_file_atomic(dir.file("gap.hex"), as_bytes(hex));
  // 128 MiB of address space: the old allocation of the whole span cannot even start.
  // Under AddressSanitizer (its shadow memory needs terabytes of address space) the same bound is the
  // sanitizer's largest allocation instead.
  auto limited = [&](const std::string& command) {
    if (test::sanitized_build())
      return test::run_process("/bin/sh", {"-c", "ASAN_OPTIONS=\"${ASAN_OPTIONS}:max_allocation_size_mb=128:"
                                                 "allocator_may_return_null=1\" exec " + command});
    return test::run_process("/bin/sh", {"-c", "ulimit -v 131072; exec " + command});
  };
  std::string kiln = std::string(KILN_BIN_DIR) + "/kiln";
  auto r = limited(kiln + " image sign --version 1.0.0 -H 0x20 --pad-header -S 0x40000 " + dir.file("gap.hex") + " " +
                   dir.file("out.bin"));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("spans 0x0..0x10000010") != std::string::npos);
  CHECK(r.err.find("more than --slot-size 0x40000") != std::string::npos);
  CHECK(r.err.find("between 0x10 and 0x10000000") != std::string::npos);
  CHECK_FALSE(fs::exists(dir.file("out.bin")));
  // Verify has no slot size: a fixed bound applies, with the same early check.
  r = limited(kiln + " image verify --hash-only " + dir.file("gap.hex"));
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("MiB limit") != std::string::npos);
}

TEST_CASE("image sign: devices, FIFOs and '-' are written in place, never replaced by a renamed file") {
  test::TempDir dir;
  auto input = vec("app.bin");
  std::vector<std::string> sign = {"image", "sign", "--version", "1.2.3", "-H", "0x20", "--pad-header", "-S", "0x40000",
                                   "-k", vec("ed25519.pem"), input};
  auto with = [&](const std::string& out) {
    auto args = sign;
    args.push_back(out);
    return args;
  };
  REQUIRE(test::kiln(with(dir.file("ref.bin"))).exit_code == 0);
  std::string reference = read_text_file(dir.file("ref.bin"));

  // A FIFO: its reader gets the image, and the FIFO stays a FIFO.
  REQUIRE(::mkfifo(dir.file("pipe").c_str(), 0600) == 0);
  test::ProcessResult r;
  auto piped = test::read_fifo_while(dir.file("pipe"), [&] { r = test::kiln(with(dir.file("pipe"))); });
  CHECK(r.exit_code == 0);
  CHECK(piped == reference);
  struct stat st {};
  REQUIRE(::stat(dir.file("pipe").c_str(), &st) == 0);
  CHECK(S_ISFIFO(st.st_mode));

  // "-": the image alone on stdout; the result goes to stderr.
  auto to_stdout = with("-");
  to_stdout.insert(to_stdout.begin(), {"-o", "json"});
  r = test::kiln(to_stdout);
  CHECK(r.exit_code == 0);
  CHECK(r.out == reference);
  CHECK(r.err.find("\"output\"") != std::string::npos);
  CHECK_FALSE(fs::exists("-"));

  // A character device of our own (as root): still a device afterwards, nothing left beside it.
  if (::mknod(dir.file("null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0) {
    CHECK(test::kiln(with(dir.file("null"))).exit_code == 0);
    REQUIRE(::stat(dir.file("null").c_str(), &st) == 0);
    CHECK(S_ISCHR(st.st_mode));
    int entries = 0;
    for ([[maybe_unused]] auto& e : fs::directory_iterator(dir.path())) ++entries;
    CHECK(entries == 3);  // ref.bin, pipe, null, and nothing else
  }
}

// ---- mcuboot-more: imgtool's outputs for the release options (issue 16; kiln reproduces them in image_release_test) ----
// Until kiln signs these itself, each vector is checked against its pin, parsed with kiln's MCUboot parser,
// and its hash and signature recomputed by hand from the inputs beside it; plain ones are reproduced by kiln.

namespace {

std::string more(const std::string& name) {
  return test::vector("mcuboot-more/" + name);
}

Bytes base64_decode(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  auto decoded = from_base64(text);
  REQUIRE(decoded);
  return *decoded;
}

Bytes prefix(const Bytes& bytes, std::uint64_t size) {
  REQUIRE(size <= bytes.size());
  return Bytes(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(size));
}

}  // namespace

TEST_CASE("image: mcuboot-more plain vectors (--sig-out, --vector-to-sign, --fix-sig) match kiln's own signing") {
  Workspace ws;
  for (auto name : {"ed25519.pem", "ecdsa-p256.pem"})
    fs::copy_file(more(name), ws.dir.path() / ("more-" + std::string(name)));
  fs::copy_file(more("app.bin"), ws.dir.path() / "more-app.bin", fs::copy_options::overwrite_existing);
  auto ed_pub = load_public_key_file(more("ed25519.pem"), std::nullopt);

  // --sig-out only writes the signature beside the image: the image is plain signing, byte for byte.
  auto r = kiln_in(ws, {"image", "sign", "-k", "more-ed25519.pem", "--version", "1.0.0", "--header-size", "0x200",
                        "--slot-size", "0x40000", "--pad-header", "more-app.bin", "ed.bin"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  Bytes sigout = read_file(more("ed25519-sigout.signed.bin"));
  CHECK(read_file(ws.file("ed.bin")) == sigout);
  auto parsed = mcuboot::parse_image(sigout);
  const auto* sig = mcuboot::find_tlv(parsed, mcuboot::tlv::ed25519);
  const auto* hash = mcuboot::find_tlv(parsed, mcuboot::tlv::sha256);
  REQUIRE(sig);
  REQUIRE(hash);
  CHECK(base64_decode(read_text_file(more("ed25519-sigout.b64"))) == sig->value);

  // --vector-to-sign payload: the hashed region; digest: its SHA-256 (the same for ECDSA, no key TLV is hashed).
  Bytes payload = read_file(more("ed25519-vts-payload.bin"));
  CHECK(payload == prefix(sigout, mcuboot::hashed_size(parsed.header)));
  CHECK(read_file(more("ed25519-vts-digest.bin")) == digest(HashAlg::sha256, payload));
  CHECK(read_file(more("ecdsa-p256-vts-digest.bin")) == hash->value);
  CHECK(read_file(more("ed25519-vts-digest.bin")) == hash->value);
  CHECK(verify_signature(ed_pub, hash->value, HashAlg::sha256, sig->value));

  // --fix-sig: ext.sig.b64 (openssl over the ECDSA digest) inside the image; kiln verifies it with the key,
  // and kiln's own ECDSA image of the same input hashes the same region.
  Bytes fixsig = read_file(more("ecdsa-p256-fixsig.signed.bin"));
  auto fixed = mcuboot::parse_image(fixsig);
  const auto* ecdsa = mcuboot::find_tlv(fixed, mcuboot::tlv::ecdsa_sig);
  REQUIRE(ecdsa);
  CHECK(ecdsa->value == base64_decode(read_text_file(more("ext.sig.b64"))));
  CHECK(mcuboot::find_tlv(fixed, mcuboot::tlv::sha256)->value == read_file(more("ecdsa-p256-vts-digest.bin")));
  auto ec_pub = load_public_key_file(more("ecdsa-p256.pub.pem"), std::nullopt);
  CHECK(ec_pub == load_public_key_file(more("ecdsa-p256.pem"), std::nullopt));
  CHECK(verify_signature(ec_pub, digest(HashAlg::sha256, prefix(fixsig, mcuboot::hashed_size(fixed.header))),
                         HashAlg::sha256, ecdsa->value));
  auto v = test::kiln({"image", "verify", more("ecdsa-p256-fixsig.signed.bin"), "--key", more("ecdsa-p256.pub.pem")});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
  r = kiln_in(ws, {"image", "sign", "-k", "more-ecdsa-p256.pem", "--version", "1.0.0", "--header-size", "0x200",
                   "--slot-size", "0x40000", "--pad-header", "more-app.bin", "ec.bin"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  CHECK(split_image(read_file(ws.file("ec.bin"))).hashed_region == split_image(fixsig).hashed_region);
  CHECK(split_image(read_file(ws.file("ec.bin"))).key_tlv == split_image(fixsig).key_tlv);
}

TEST_CASE("image: mcuboot-more --pure and --compression vectors parse and their Ed25519 signatures check") {
  auto ed_pub = load_public_key_file(more("ed25519.pem"), std::nullopt);
  // --pure: Ed25519 over the hashed region itself (no digest), a SIG_PURE TLV, SHA-512 of the region.
  Bytes pure = read_file(more("ed25519-pure.signed.bin"));
  auto parsed = mcuboot::parse_image(pure);
  CHECK(mcuboot::format_version(parsed.header.version).starts_with("1.0.0"));
  Bytes region = prefix(pure, mcuboot::hashed_size(parsed.header));
  CHECK(Bytes(region.begin() + 0x200, region.end()) == read_file(more("app.bin")));
  REQUIRE(mcuboot::find_tlv(parsed, 0x25));  // SIG_PURE
  REQUIRE(mcuboot::find_tlv(parsed, mcuboot::tlv::sha512));
  CHECK(mcuboot::find_tlv(parsed, mcuboot::tlv::sha512)->value == digest(HashAlg::sha512, region));
  REQUIRE(mcuboot::find_tlv(parsed, mcuboot::tlv::ed25519));
  CHECK(verify_signature(ed_pub, region, HashAlg::sha512, mcuboot::find_tlv(parsed, mcuboot::tlv::ed25519)->value));

  // --compression lzma2: the compressed image verifies like any other (kiln checks hash, key and signature),
  // and its protected TLVs describe the decompressed image (0x70 size of compressible.bin, 0x71 its image's
  // SHA-256, 0x72 its Ed25519 signature: not checked until kiln can decompress).
  auto v = test::kiln({"image", "verify", more("ed25519-lzma2.signed.bin"), "--key", more("ed25519.pem")});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
  auto lzma = mcuboot::parse_image(read_file(more("ed25519-lzma2.signed.bin")));
  Bytes plain = read_file(more("compressible.bin"));
  CHECK(lzma.header.image_size < plain.size());
  REQUIRE(mcuboot::find_tlv(lzma, 0x70));
  CHECK(get_le32(mcuboot::find_tlv(lzma, 0x70)->value, 0) == plain.size());
  REQUIRE(mcuboot::find_tlv(lzma, 0x71));
  CHECK(mcuboot::find_tlv(lzma, 0x71)->value.size() == 32);
  REQUIRE(mcuboot::find_tlv(lzma, 0x72));
  CHECK(mcuboot::find_tlv(lzma, 0x72)->value.size() == 64);
}

TEST_CASE("image: mcuboot-more encrypted vectors: the signature covers the plaintext, the payload is not it") {
  auto ed_pub = load_public_key_file(more("ed25519.pem"), std::nullopt);
  Bytes plain = test::padded_more_app();
  struct Enc {
    const char* name;
    std::uint16_t key_tlv;  // ENC_RSA2048 0x30, ENC_EC256 0x32, ENC_X25519 0x33
    bool encrypted;
  };
  for (auto [name, key_tlv, encrypted] : {Enc{"enc-p256-aes128.signed.bin", 0x32, true},
                                          Enc{"enc-x25519-aes128.signed.bin", 0x33, true},
                                          Enc{"enc-rsa2048-aes128.signed.bin", 0x30, true},
                                          Enc{"enc-p256-clear.signed.bin", 0x32, false}}) {
    const std::string case_name = name;  // a named copy: clang 14 lambdas cannot capture bindings
    CAPTURE(case_name);
    Bytes image = read_file(more(name));
    auto parsed = mcuboot::parse_image(image);
    CHECK((parsed.header.flags & 0x4) != 0);  // ENCRYPTED_AES128
    REQUIRE(parsed.header.image_size == plain.size());
    Bytes payload(image.begin() + parsed.header.header_size,
                  image.begin() + parsed.header.header_size + parsed.header.image_size);
    CHECK((payload == plain) == !encrypted);
    REQUIRE(mcuboot::find_tlv(parsed, key_tlv));
    // The hash is over header + plaintext (+ protected TLVs, none here): recompute it from app.bin.
    Bytes hashed(image.begin(), image.begin() + parsed.header.header_size);
    hashed.insert(hashed.end(), plain.begin(), plain.end());
    REQUIRE(parsed.header.protected_tlv_size == 0);
    const auto* hash = mcuboot::find_tlv(parsed, mcuboot::tlv::sha256);
    REQUIRE(hash);
    CHECK(hash->value == digest(HashAlg::sha256, hashed));
    REQUIRE(mcuboot::find_tlv(parsed, mcuboot::tlv::ed25519));
    CHECK(verify_signature(ed_pub, hash->value, HashAlg::sha256, mcuboot::find_tlv(parsed, mcuboot::tlv::ed25519)->value));
    // The wrapped content key: EC256 = 65-byte ephemeral point + 32 MAC + 16 key; X25519 = 32 + 32 + 16;
    // RSA-2048 = one 256-byte OAEP block.
    CHECK(mcuboot::find_tlv(parsed, key_tlv)->value.size() == (key_tlv == 0x32 ? 113u : key_tlv == 0x33 ? 80u : 256u));
  }
}

namespace {

EVP_PKEY* private_key_of(const std::string& path) {
  std::string pem = read_text_file(path);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(key);
  return key;
}

Bytes aes128_ctr(ByteView key, ByteView data) {
  Bytes out(data.size());
  unsigned char iv[16] = {};
  EVP_CIPHER_CTX* aes = EVP_CIPHER_CTX_new();
  REQUIRE(EVP_DecryptInit_ex(aes, EVP_aes_128_ctr(), nullptr, key.data(), iv) == 1);
  int n = 0;
  REQUIRE(EVP_DecryptUpdate(aes, out.data(), &n, data.data(), static_cast<int>(data.size())) == 1);
  EVP_CIPHER_CTX_free(aes);
  return out;
}

// MCUboot's ECIES: ECDH with the ephemeral key, HKDF-SHA256 ("MCUBoot_ECIES_v1") -> AES key + HMAC key,
// HMAC-SHA256 over the wrapped key must match, AES-128-CTR unwraps it.
Bytes ecies_unwrap(const std::string& pem_path, const Bytes& tlv, std::size_t point_size) {
  EVP_PKEY* mine = private_key_of(pem_path);
  EVP_PKEY* ephemeral = nullptr;
  if (point_size == 32) {
    ephemeral = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, tlv.data(), 32);
  } else {
    Bytes spki = from_hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    spki.insert(spki.end(), tlv.begin(), tlv.begin() + 65);
    const unsigned char* p = spki.data();
    ephemeral = d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size()));
  }
  REQUIRE(ephemeral);
  EVP_PKEY_CTX* dh = EVP_PKEY_CTX_new(mine, nullptr);
  REQUIRE(EVP_PKEY_derive_init(dh) == 1);
  REQUIRE(EVP_PKEY_derive_set_peer(dh, ephemeral) == 1);
  Bytes shared(64);
  std::size_t shared_size = shared.size();
  REQUIRE(EVP_PKEY_derive(dh, shared.data(), &shared_size) == 1);
  shared.resize(shared_size);
  EVP_PKEY_CTX_free(dh);
  EVP_PKEY_free(ephemeral);
  EVP_PKEY_free(mine);
  EVP_PKEY_CTX* kdf = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  REQUIRE(EVP_PKEY_derive_init(kdf) == 1);
  REQUIRE(EVP_PKEY_CTX_set_hkdf_md(kdf, EVP_sha256()) == 1);
  REQUIRE(EVP_PKEY_CTX_set1_hkdf_key(kdf, shared.data(), static_cast<int>(shared.size())) == 1);
  std::string info = "MCUBoot_ECIES_v1";
  REQUIRE(EVP_PKEY_CTX_add1_hkdf_info(kdf, reinterpret_cast<const unsigned char*>(info.data()),
                                      static_cast<int>(info.size())) == 1);
  Bytes derived(48);
  std::size_t derived_size = derived.size();
  REQUIRE(EVP_PKEY_derive(kdf, derived.data(), &derived_size) == 1);
  EVP_PKEY_CTX_free(kdf);
  Bytes mac(tlv.begin() + static_cast<std::ptrdiff_t>(point_size),
            tlv.begin() + static_cast<std::ptrdiff_t>(point_size + 32));
  Bytes wrapped(tlv.begin() + static_cast<std::ptrdiff_t>(point_size + 32), tlv.end());
  unsigned char tag[32];
  unsigned int tag_size = 0;
  HMAC(EVP_sha256(), derived.data() + 16, 32, wrapped.data(), wrapped.size(), tag, &tag_size);
  CHECK(Bytes(tag, tag + tag_size) == mac);
  return aes128_ctr(ByteView(derived.data(), 16), wrapped);
}

Bytes payload_of(const Bytes& image, const mcuboot::ParsedImage& parsed) {
  return Bytes(image.begin() + parsed.header.header_size,
               image.begin() + parsed.header.header_size + parsed.header.image_size);
}

}  // namespace

TEST_CASE("image: the P-256 and X25519 encrypted vectors decrypt with enc-p256.pem and enc-x25519.pem to app.bin") {
  for (auto [name, pem, tlv, point] : {std::tuple{"enc-p256-aes128.signed.bin", "enc-p256.pem", 0x32, 65},
                                       std::tuple{"enc-x25519-aes128.signed.bin", "enc-x25519.pem", 0x33, 32}}) {
    const std::string case_name = name;  // a named copy: clang 14 lambdas cannot capture bindings
    CAPTURE(case_name);
    Bytes image = read_file(more(name));
    auto parsed = mcuboot::parse_image(image);
    REQUIRE(mcuboot::find_tlv(parsed, static_cast<std::uint16_t>(tlv)));
    Bytes key = ecies_unwrap(more(pem), mcuboot::find_tlv(parsed, static_cast<std::uint16_t>(tlv))->value,
                             static_cast<std::size_t>(point));
    REQUIRE(key.size() == 16);
    CHECK(aes128_ctr(key, payload_of(image, parsed)) == test::padded_more_app());
  }
}

// RSA-OAEP (SHA-256) unwraps the AES-128 content key; AES-128-CTR from a zero counter decrypts the payload.
TEST_CASE("image: the RSA-2048 encrypted vector decrypts with enc-rsa2048.pem to app.bin") {
  Bytes image = read_file(more("enc-rsa2048-aes128.signed.bin"));
  auto parsed = mcuboot::parse_image(image);
  Bytes wrapped = mcuboot::find_tlv(parsed, 0x30)->value;
  std::string pem = read_text_file(more("enc-rsa2048.pem"));
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(key);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(key, nullptr);
  REQUIRE(EVP_PKEY_decrypt_init(ctx) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1);
  Bytes content_key(256);
  std::size_t length = content_key.size();
  REQUIRE(EVP_PKEY_decrypt(ctx, content_key.data(), &length, wrapped.data(), wrapped.size()) == 1);
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(key);
  REQUIRE(length == 16);
  Bytes payload(image.begin() + parsed.header.header_size,
                image.begin() + parsed.header.header_size + parsed.header.image_size);
  Bytes plain(payload.size());
  unsigned char iv[16] = {};
  EVP_CIPHER_CTX* aes = EVP_CIPHER_CTX_new();
  REQUIRE(EVP_DecryptInit_ex(aes, EVP_aes_128_ctr(), nullptr, content_key.data(), iv) == 1);
  int out = 0;
  REQUIRE(EVP_DecryptUpdate(aes, plain.data(), &out, payload.data(), static_cast<int>(payload.size())) == 1);
  EVP_CIPHER_CTX_free(aes);
  CHECK(plain == test::padded_more_app());
}

TEST_CASE("image sign: small.bin (a payload smaller than a flash sector) signs, verifies and carries it unchanged") {
  test::TempDir dir;
  auto r = test::kiln({"image", "sign", "-k", vec("ed25519.pem"), "--version", "1.0.0", "--header-size", "0x200",
                       "--slot-size", "0x40000", "--pad-header", vec("small.bin"), dir.file("small.signed.bin")});
  REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  Bytes image = read_file(dir.file("small.signed.bin"));
  auto parsed = mcuboot::parse_image(image);
  Bytes small = read_file(vec("small.bin"));
  REQUIRE(parsed.header.image_size == small.size());
  CHECK(Bytes(image.begin() + 0x200, image.begin() + 0x200 + static_cast<std::ptrdiff_t>(small.size())) == small);
  auto v = test::kiln({"image", "verify", dir.file("small.signed.bin"), "--key", vec("ed25519.pem")});
  CHECK_MESSAGE(v.exit_code == 0, v.err);
}
