// Tests for signing/mcuboot_sign: sign_image called directly (no CLI) with SignOptions built by hand, compared byte
// for byte with imgtool's outputs in ../shared/vectors/mcuboot and mcuboot-more (CASES.txt names the arguments);
// randomized signatures (ECDSA, RSA-PSS) compared outside the signature and verified; the option checks and bad
// input failing with the library's Error and its exit code.
#include <doctest/doctest.h>

#include <cbor.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/base64.hpp"
#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/image_crypto.hpp"
#include "signing/imgtool_options.hpp"
#include "signing/intel_hex.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/mcuboot_sign.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::mcuboot;
namespace fs = std::filesystem;

namespace {

std::string mcuboot_vector(const std::string& name) {
  return test::vector("mcuboot/" + name);
}
std::string more_vector(const std::string& name) {
  return test::vector("mcuboot-more/" + name);
}

std::unique_ptr<Signer> key(const std::string& path) {
  return load_file_signer(path, std::nullopt);
}

// imgtool's common arguments in CASES.txt: --version V --header-size 0x200 --slot-size 0x40000 --pad-header.
SignOptions base_options(const std::string& version = "1.0.0") {
  SignOptions o;
  o.version = parse_version(version);
  o.header_size = 0x200;
  o.slot_size = 0x40000;
  o.pad_header = true;
  return o;
}

// Signs `input` into a file of `dir` and returns the file's bytes (and the result through `out`).
Bytes sign_to_bytes(const test::TempDir& dir, const std::string& input, const SignOptions& options,
                    const Signer* signer, SignResult* out = nullptr, const std::string& name = "out.bin") {
  std::string output = dir.file(name);
  SignResult result = sign_image(input, output, options, signer);
  if (out) *out = result;
  return read_file(output);
}

bool is_signature_type(std::uint16_t type) {
  return type == tlv::ecdsa_sig || type == tlv::rsa2048_pss || type == tlv::rsa3072_pss || type == tlv::ed25519;
}

// For randomized signatures: everything imgtool wrote but the signature is the same, and ours verifies with `pem`.
void check_same_but_signature(const Bytes& ours, const Bytes& theirs, const std::string& pem, const fs::path& file) {
  ParsedImage a = parse_image(ours);
  ParsedImage b = parse_image(theirs);
  REQUIRE(hashed_size(a.header) == hashed_size(b.header));
  auto hashed = static_cast<std::ptrdiff_t>(hashed_size(a.header));
  CHECK(Bytes(ours.begin(), ours.begin() + hashed) == Bytes(theirs.begin(), theirs.begin() + hashed));
  REQUIRE(a.unprotected_area.entries.size() == b.unprotected_area.entries.size());
  for (std::size_t i = 0; i < a.unprotected_area.entries.size(); ++i) {
    const TlvEntry& x = a.unprotected_area.entries[i];
    const TlvEntry& y = b.unprotected_area.entries[i];
    CHECK(x.type == y.type);
    if (!is_signature_type(x.type)) CHECK(to_hex(x.value) == to_hex(y.value));
  }
  ImageReport report = verify_image(file, load_public_key_file(pem, std::nullopt));
  CHECK(report.signature_ok == std::optional<bool>(true));
  CHECK(report.key_hash_ok == std::optional<bool>(true));
}

std::string error_message(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("mcuboot_sign: Ed25519 images match imgtool byte for byte, option by option") {
  test::TempDir dir;
  auto ed = key(mcuboot_vector("ed25519.pem"));
  const std::string app = mcuboot_vector("app.bin");

  SUBCASE("basic: version with build number, header padded with 0xff") {
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, base_options("1.2.3+4"), ed.get(), &r);
    CHECK(out == read_file(mcuboot_vector("ed25519-basic.signed.bin")));
    CHECK(r.header.version.build == 4);
    CHECK(r.header.header_size == 0x200);
    CHECK(r.header.image_size == fs::file_size(app));
    CHECK(r.key_type == std::optional<KeyType>(KeyType::ed25519));
    CHECK(r.hash == HashAlg::sha256);
    CHECK(r.signature.size() == 64);
    CHECK(r.output_bytes == out.size());
    CHECK(r.image_bytes == out.size());
    CHECK(r.protected_tlvs.empty());
    ParsedImage parsed = parse_image(out);
    const TlvEntry* sha = find_tlv(parsed, tlv::sha256);
    REQUIRE(sha != nullptr);
    CHECK(sha->value == r.digest);
    CHECK(std::all_of(out.begin() + 32, out.begin() + 0x200, [](std::uint8_t b) { return b == 0xff; }));
  }
  SUBCASE("--header-size 0x400 --align 4") {
    SignOptions o = base_options("0.0.1");
    o.header_size = 0x400;
    o.trailer.align = 4;
    CHECK(sign_to_bytes(dir, app, o, ed.get()) == read_file(mcuboot_vector("ed25519-align4.signed.bin")));
  }
  SUBCASE("--security-counter auto") {
    SignOptions o = base_options("2.7.300+99");
    o.security_counter = auto_security_counter(o.version);
    CHECK(*o.security_counter == (2u << 24) + (7u << 16) + 300u);
    SignResult r;
    CHECK(sign_to_bytes(dir, app, o, ed.get(), &r) == read_file(mcuboot_vector("ed25519-seccnt.signed.bin")));
    REQUIRE(r.protected_tlvs.size() == 1);
    CHECK(r.protected_tlvs[0].type == tlv::security_counter);
  }
  SUBCASE("--security-counter 42") {
    SignOptions o = base_options();
    o.security_counter = 42;
    CHECK(sign_to_bytes(dir, app, o, ed.get()) == read_file(mcuboot_vector("ed25519-seccnt42.signed.bin")));
  }
  SUBCASE("-d (1,1.2.3+0)") {
    SignOptions o = base_options();
    o.dependencies = parse_dependencies("(1,1.2.3+0)");
    REQUIRE(o.dependencies.size() == 1);
    CHECK(sign_to_bytes(dir, app, o, ed.get()) == read_file(mcuboot_vector("ed25519-deps.signed.bin")));
  }
  SUBCASE("--custom-tlv 0xa0 0x1234 --custom-tlv 0xa5 hello") {
    SignOptions o = base_options();
    o.custom_tlvs = {{0xa0, custom_tlv_value("0x1234")}, {0xa5, custom_tlv_value("hello")}};
    CHECK(o.custom_tlvs[0].value == Bytes{0x12, 0x34});
    CHECK(sign_to_bytes(dir, app, o, ed.get()) == read_file(mcuboot_vector("ed25519-customtlv.signed.bin")));
  }
  SUBCASE("--public-key-format full") {
    SignOptions o = base_options();
    o.public_key_full = true;
    Bytes out = sign_to_bytes(dir, app, o, ed.get());
    CHECK(out == read_file(mcuboot_vector("ed25519-fullkey.signed.bin")));
    ParsedImage parsed = parse_image(out);
    CHECK(find_tlv(parsed, tlv::pubkey) != nullptr);
    CHECK(find_tlv(parsed, tlv::keyhash) == nullptr);
  }
  SUBCASE("--slot-size 0x20000 --align 8 --confirm: padded to the slot with the trailer") {
    SignOptions o = base_options("3.1.4");
    o.slot_size = 0x20000;
    o.trailer.align = 8;
    o.confirm = true;
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, o, ed.get(), &r);
    CHECK(out == read_file(mcuboot_vector("ed25519-pad-confirm.signed.bin")));
    CHECK(out.size() == 0x20000);
    CHECK(r.output_bytes == 0x20000);
    CHECK(r.image_bytes < r.output_bytes);
    ParsedImage parsed = parse_image(out);
    CHECK(parsed.trailer.magic_found);
    CHECK(parsed.trailer.image_ok == std::optional<std::uint8_t>(0x01));
  }
  SUBCASE("-R 0: erased value zero for header padding") {
    SignOptions o = base_options();
    o.erased_value = 0;
    Bytes out = sign_to_bytes(dir, app, o, ed.get());
    CHECK(out == read_file(mcuboot_vector("ed25519-erased0.signed.bin")));
    CHECK(std::all_of(out.begin() + 32, out.begin() + 0x200, [](std::uint8_t b) { return b == 0; }));
  }
  SUBCASE("--non-bootable") {
    SignOptions o = base_options();
    o.non_bootable = true;
    SignResult r;
    CHECK(sign_to_bytes(dir, app, o, ed.get(), &r) == read_file(mcuboot_vector("ed25519-nonboot.signed.bin")));
    CHECK(r.header.flags == flag_non_bootable);
  }
  SUBCASE("the largest version and the smallest header: fields at their byte offsets, and it verifies") {
    SignOptions o = base_options("255.255.65535+4294967295");
    o.header_size = 32;
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, o, ed.get(), &r);
    CHECK(get_le32(out, 0) == image_magic);
    CHECK(get_le16(out, 8) == 32);
    CHECK(get_le32(out, 12) == fs::file_size(app));
    CHECK(out[20] == 255);
    CHECK(out[21] == 255);
    CHECK(get_le16(out, 22) == 65535);
    CHECK(get_le32(out, 24) == 4294967295u);
    const Bytes payload = read_file(app);
    CHECK(Bytes(out.begin() + 32, out.begin() + 64) == Bytes(payload.begin(), payload.begin() + 32));
    CHECK(verify_image(dir.file("out.bin"), ed->public_key_der()).ok());
    CHECK(test::exit_code_of([] { parse_version("256.0.0"); }) == ExitCode::usage);
  }
  SUBCASE("no key: an unsigned image with only the hash TLV") {
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, base_options("1.2.3"), nullptr, &r);
    CHECK(out == read_file(mcuboot_vector("unsigned-basic.bin")));
    CHECK(!r.key_type);
    CHECK(r.signature.empty());
    CHECK(parse_image(out).unprotected_area.entries.size() == 1);
  }
}

TEST_CASE("mcuboot_sign: ECDSA P-256/P-384 and RSA-2048 images match imgtool but for the (random) signature") {
  test::TempDir dir;
  const std::string app = mcuboot_vector("app.bin");
  struct Case {
    const char* pem;
    const char* vector;
    HashAlg hash;
    std::uint16_t sig_tlv;
  };
  for (const Case& c : {Case{"ecdsa-p256.pem", "ecdsa-p256-basic.signed.bin", HashAlg::sha256, tlv::ecdsa_sig},
                        Case{"ecdsa-p384.pem", "ecdsa-p384-basic.signed.bin", HashAlg::sha384, tlv::ecdsa_sig},
                        Case{"rsa-2048.pem", "rsa-2048-basic.signed.bin", HashAlg::sha256, tlv::rsa2048_pss}}) {
    CAPTURE(c.vector);
    auto signer = key(mcuboot_vector(c.pem));
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, base_options("1.2.3+4"), signer.get(), &r);
    CHECK(r.hash == c.hash);  // SHA-384 for P-384, as imgtool
    ParsedImage parsed = parse_image(out);
    const TlvEntry* sig = find_tlv(parsed, c.sig_tlv);
    REQUIRE(sig != nullptr);
    CHECK(sig->value == r.signature);
    check_same_but_signature(out, read_file(mcuboot_vector(c.vector)), mcuboot_vector(c.pem), dir.file("out.bin"));
  }
}

TEST_CASE("mcuboot_sign: --pad-sig pads an ECDSA signature with zeros to 72 bytes, and it still verifies") {
  test::TempDir dir;
  auto signer = key(mcuboot_vector("ecdsa-p256.pem"));
  SignOptions o = base_options();
  o.pad_sig = true;
  SignResult r;
  sign_to_bytes(dir, mcuboot_vector("app.bin"), o, signer.get(), &r);
  CHECK(r.signature.size() == 72);
  ImageReport report = verify_image(dir.file("out.bin"), signer->public_key_der());
  CHECK(report.signature_ok == std::optional<bool>(true));
}

TEST_CASE("mcuboot_sign: the options beyond plain signing match imgtool (mcuboot-more)") {
  test::TempDir dir;
  auto ed = key(more_vector("ed25519.pem"));
  const std::string app = more_vector("app.bin");

  SUBCASE("--pure: SHA-512 and Ed25519 over the image itself") {
    SignOptions o = base_options();
    o.pure = true;
    SignResult r;
    CHECK(sign_to_bytes(dir, app, o, ed.get(), &r) == read_file(more_vector("ed25519-pure.signed.bin")));
    CHECK(r.hash == HashAlg::sha512);
  }
  SUBCASE("--compression lzma2") {
    SignOptions o = base_options();
    o.compression = Compression::lzma2;
    SignResult r;
    const std::string input = more_vector("compressible.bin");
    CHECK(sign_to_bytes(dir, input, o, ed.get(), &r) == read_file(more_vector("ed25519-lzma2.signed.bin")));
    CHECK(r.compressed);
    CHECK(r.uncompressed_size == fs::file_size(input));
    CHECK((r.header.flags & flag_compressed_lzma2) != 0);
  }
  SUBCASE("--compression on input that does not shrink: the plain image, as imgtool") {
    SignOptions o = base_options();
    o.compression = Compression::lzma2;
    SignOptions plain = base_options();
    SignResult r;
    Bytes compressed = sign_to_bytes(dir, app, o, ed.get(), &r, "c.bin");
    if (!r.compressed) CHECK(compressed == sign_to_bytes(dir, app, plain, ed.get(), nullptr, "p.bin"));
    // app.bin is firmware-like random data: a plain image either way.
    CHECK(!r.compressed);
  }
  SUBCASE("--vector-to-sign payload") {
    SignOptions o = base_options();
    o.vector_to_sign = SignOptions::Vector::payload;
    SignResult r;
    CHECK(sign_to_bytes(dir, app, o, ed.get(), &r) == read_file(more_vector("ed25519-vts-payload.bin")));
    CHECK(r.vector == std::optional<SignOptions::Vector>(SignOptions::Vector::payload));
  }
  SUBCASE("--vector-to-sign digest, Ed25519 and ECDSA P-256") {
    SignOptions o = base_options();
    o.vector_to_sign = SignOptions::Vector::digest;
    SignResult r;
    CHECK(sign_to_bytes(dir, app, o, ed.get(), &r) == read_file(more_vector("ed25519-vts-digest.bin")));
    CHECK(r.output_bytes == 32);
    auto ec = key(more_vector("ecdsa-p256.pem"));
    CHECK(sign_to_bytes(dir, app, o, ec.get(), nullptr, "ec.bin") ==
          read_file(more_vector("ecdsa-p256-vts-digest.bin")));
    // Without a signer, the public key that will sign stands in for it (the vector is the same).
    SignOptions by_key = o;
    by_key.signer_public_key = load_public_key_file(more_vector("ecdsa-p256.pub.pem"), std::nullopt);
    CHECK(sign_to_bytes(dir, app, by_key, nullptr, nullptr, "pub.bin") ==
          read_file(more_vector("ecdsa-p256-vts-digest.bin")));
  }
  SUBCASE("--sig-out: the image, and the signature in base64 beside it") {
    SignOptions o = base_options();
    o.sig_out = dir.path() / "sig.b64";
    SignResult r;
    CHECK(sign_to_bytes(dir, app, o, ed.get(), &r) == read_file(more_vector("ed25519-sigout.signed.bin")));
    CHECK(read_text_file(dir.path() / "sig.b64") == read_text_file(more_vector("ed25519-sigout.b64")));
    CHECK(to_base64(r.signature) == read_text_file(dir.path() / "sig.b64"));
  }
  SUBCASE("--fix-sig --fix-sig-pubkey: an external signature assembled into the image") {
    SignOptions o = base_options();
    o.fixed_signature =
        SignOptions::FixedSignature{read_base64_signature(more_vector("ext.sig.b64")),
                                    load_public_key_file(more_vector("ecdsa-p256.pub.pem"), std::nullopt)};
    SignResult r;
    CHECK(sign_to_bytes(dir, app, o, nullptr, &r) == read_file(more_vector("ecdsa-p256-fixsig.signed.bin")));
    CHECK(r.key_type == std::optional<KeyType>(KeyType::ecdsa_p256));
  }
  SUBCASE("--fix-sig with a signature that does not verify: verification_failed, nothing written") {
    SignOptions o = base_options();
    Bytes sig = read_base64_signature(more_vector("ext.sig.b64"));
    sig[sig.size() - 1] ^= 1;
    o.fixed_signature =
        SignOptions::FixedSignature{sig, load_public_key_file(more_vector("ecdsa-p256.pub.pem"), std::nullopt)};
    std::string out = dir.file("bad.bin");
    CHECK(test::exit_code_of([&] { sign_image(app, out, o, nullptr); }) == ExitCode::verification_failed);
    CHECK(!fs::exists(out));
    // The right signature but another key: the same.
    o.fixed_signature->signature = read_base64_signature(more_vector("ext.sig.b64"));
    o.fixed_signature->public_key_der = load_public_key_file(more_vector("enc-p256.pem"), std::nullopt);
    CHECK(test::exit_code_of([&] { sign_image(app, out, o, nullptr); }) == ExitCode::verification_failed);
    CHECK(!fs::exists(out));
  }
}

TEST_CASE("mcuboot_sign: encrypted images (-E) decrypt to the payload, imgtool's and kiln's alike") {
  test::TempDir dir;
  auto ed = key(more_vector("ed25519.pem"));
  const std::string app = more_vector("app.bin");
  const Bytes padded = test::padded_more_app();
  struct Case {
    const char* enc_pem;
    const char* vector;
    std::uint16_t tlv_type;
  };
  for (const Case& c : {Case{"enc-p256.pem", "enc-p256-aes128.signed.bin", tlv::enc_ec256},
                        Case{"enc-x25519.pem", "enc-x25519-aes128.signed.bin", tlv::enc_x25519},
                        Case{"enc-rsa2048.pem", "enc-rsa2048-aes128.signed.bin", tlv::enc_rsa2048}}) {
    CAPTURE(c.vector);
    auto opener = load_content_key_opener(more_vector(c.enc_pem));
    // imgtool's image: decrypts to app.bin padded to 16 bytes.
    DecryptResult theirs = decrypt_image(more_vector(c.vector), dir.file("theirs.bin"), *opener);
    CHECK(theirs.encryption_tlv == c.tlv_type);
    Bytes clear = read_file(dir.file("theirs.bin"));
    ImageHeader h = parse_header(clear);
    CHECK(Bytes(clear.begin() + h.header_size, clear.begin() + h.header_size + h.image_size) == padded);

    // Ours: the body is not the plaintext, the header and protected TLVs are imgtool's, and it decrypts.
    SignOptions o = base_options();
    o.encryption = SignOptions::Encryption{load_encryption_key(more_vector(c.enc_pem))};
    SignResult r;
    Bytes ours = sign_to_bytes(dir, app, o, ed.get(), &r);
    CHECK(r.encryption_tlv == std::optional<std::uint16_t>(c.tlv_type));
    CHECK((r.header.flags & flag_encrypted_aes128) != 0);
    CHECK(r.header.image_size == padded.size());
    Bytes body(ours.begin() + 0x200, ours.begin() + 0x200 + static_cast<std::ptrdiff_t>(padded.size()));
    CHECK(body != padded);
    Bytes their_raw = read_file(more_vector(c.vector));
    CHECK(Bytes(ours.begin(), ours.begin() + 32) == Bytes(their_raw.begin(), their_raw.begin() + 32));
    decrypt_image(dir.file("out.bin"), dir.file("ours.bin"), *opener);
    Bytes ours_clear = read_file(dir.file("ours.bin"));
    CHECK(Bytes(ours_clear.begin() + 0x200, ours_clear.begin() + 0x200 + static_cast<std::ptrdiff_t>(padded.size())) ==
          padded);
    // The hash covers the plaintext: with the decryption key the whole image checks.
    ImageReport report = verify_image(dir.file("out.bin"), ed->public_key_der(), {}, opener.get());
    CHECK(report.decrypted);
    CHECK(report.hash_ok);
    // Another device's key does not open it.
    auto other = load_content_key_opener(
        more_vector(c.enc_pem == std::string("enc-p256.pem") ? "enc-x25519.pem" : "enc-p256.pem"));
    CHECK(test::exit_code_of([&] { decrypt_image(dir.file("out.bin"), dir.file("x.bin"), *other); }) ==
          ExitCode::verification_failed);
    CHECK(!fs::exists(dir.file("x.bin")));
  }
}

TEST_CASE("mcuboot_sign: -E with -c (clear) writes the key TLV and flags over a plaintext body, as imgtool") {
  test::TempDir dir;
  auto ed = key(more_vector("ed25519.pem"));
  SignOptions o = base_options();
  o.encryption = SignOptions::Encryption{load_encryption_key(more_vector("enc-p256.pem"))};
  o.encryption->clear = true;
  Bytes ours = sign_to_bytes(dir, more_vector("app.bin"), o, ed.get());
  Bytes theirs = read_file(more_vector("enc-p256-clear.signed.bin"));
  // All but the random wrapped key is imgtool's: header, plaintext body, protected TLVs, hash, key hash, signature.
  ParsedImage a = parse_image(ours);
  ParsedImage b = parse_image(theirs);
  auto hashed = static_cast<std::ptrdiff_t>(hashed_size(a.header));
  CHECK(Bytes(ours.begin(), ours.begin() + hashed) == Bytes(theirs.begin(), theirs.begin() + hashed));
  REQUIRE(a.unprotected_area.entries.size() == b.unprotected_area.entries.size());
  for (std::size_t i = 0; i < a.unprotected_area.entries.size(); ++i) {
    CHECK(a.unprotected_area.entries[i].type == b.unprotected_area.entries[i].type);
    if (!is_encryption_tlv(a.unprotected_area.entries[i].type))
      CHECK(a.unprotected_area.entries[i].value == b.unprotected_area.entries[i].value);
  }
}

TEST_CASE("mcuboot_sign: load address, ROM-fixed, HEX output and header size without --pad-header") {
  test::TempDir dir;
  auto ed = key(mcuboot_vector("ed25519.pem"));
  const std::string app = mcuboot_vector("app.bin");

  SUBCASE("--load-addr sets RAM_LOAD and the header's load address") {
    SignOptions o = base_options();
    o.load_addr = 0x20000000;
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, o, ed.get(), &r);
    CHECK(r.header.flags == flag_ram_load);
    CHECK(parse_header(out).load_addr == 0x20000000);
    CHECK(get_le32(out, 4) == 0x20000000);
    CHECK(verify_image(dir.file("out.bin"), ed->public_key_der()).ok());
  }
  SUBCASE("--rom-fixed sets ROM_FIXED and its address; with --load-addr it is a usage error") {
    SignOptions o = base_options();
    o.rom_fixed = 0x8000;
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, o, ed.get(), &r);
    CHECK(r.header.flags == flag_rom_fixed);
    CHECK(parse_header(out).load_addr == 0x8000);
    o.load_addr = 0x20000000;
    CHECK(contains(error_message([&] { validate(o); }), "--rom-fixed and --load-addr"));
    CHECK(test::exit_code_of([&] { sign_image(app, dir.file("x.bin"), o, ed.get()); }) == ExitCode::usage);
  }
  SUBCASE(".hex output at --hex-addr holds the same image as the binary output") {
    SignOptions o = base_options("1.2.3+4");
    o.hex_addr = 0x10000;
    SignResult r;
    sign_image(app, dir.file("out.hex"), o, ed.get());
    HexImage hex = parse_intel_hex(read_text_file(dir.file("out.hex")));
    CHECK(hex.base_address == 0x10000);
    CHECK(hex.data == read_file(mcuboot_vector("ed25519-basic.signed.bin")));
  }
  SUBCASE(".hex output from binary input without --hex-addr: usage error naming --hex-addr") {
    SignOptions o = base_options();
    std::string message = error_message([&] { sign_image(app, dir.file("out.hex"), o, ed.get()); });
    CHECK(contains(message, "no address"));
    CHECK(test::exit_code_of([&] { sign_image(app, dir.file("out.hex"), o, ed.get()); }) == ExitCode::usage);
  }
  SUBCASE(
      ".hex input: read at its address, header room made below it; padded output puts the trailer at the slot end") {
    Bytes payload = read_file(app);
    std::vector<HexSegment> segments = {{0x10200, payload}};
    write_file_atomic(dir.file("in.hex"), as_bytes(format_intel_hex(segments)));
    SignOptions o = base_options("1.2.3+4");
    sign_image(dir.file("in.hex"), dir.file("out.hex"), o, ed.get());
    HexImage hex = parse_intel_hex(read_text_file(dir.file("out.hex")));
    CHECK(hex.base_address == 0x10000);
    CHECK(hex.data == read_file(mcuboot_vector("ed25519-basic.signed.bin")));
    o.pad = true;
    sign_image(dir.file("in.hex"), dir.file("padded.hex"), o, ed.get());
    HexImage padded = parse_intel_hex(read_text_file(dir.file("padded.hex")), o.slot_size);
    CHECK(padded.data.size() == o.slot_size);  // gap filled with 0xff up to the trailer
    CHECK(parse_trailer(padded.data).magic_found);
  }
  SUBCASE("without --pad-header the input's first header_size bytes must be zero, and the header goes there") {
    Bytes input(0x200, 0);
    Bytes payload = read_file(app);
    input.insert(input.end(), payload.begin(), payload.end());
    write_file_atomic(dir.file("zeros.bin"), input);
    SignOptions o = base_options();
    o.pad_header = false;
    SignResult r;
    Bytes out = sign_to_bytes(dir, dir.file("zeros.bin"), o, ed.get(), &r);
    CHECK(r.header.image_size == payload.size());
    CHECK(std::all_of(out.begin() + 32, out.begin() + 0x200, [](std::uint8_t b) { return b == 0; }));
    CHECK(Bytes(out.begin() + 0x200, out.begin() + 0x200 + static_cast<std::ptrdiff_t>(payload.size())) == payload);
    CHECK(verify_image(dir.file("out.bin"), ed->public_key_der()).ok());

    input[0x1ff] = 1;
    write_file_atomic(dir.file("nonzero.bin"), input);
    CHECK(contains(error_message([&] { sign_image(dir.file("nonzero.bin"), dir.file("x.bin"), o, ed.get()); }),
                   "does not start with zeros"));
    CHECK(!fs::exists(dir.file("x.bin")));
  }
  SUBCASE("an input smaller than the header without --pad-header: usage error") {
    write_file_atomic(dir.file("tiny.bin"), Bytes(0x100, 0));
    SignOptions o = base_options();
    o.pad_header = false;
    CHECK(test::exit_code_of([&] { sign_image(dir.file("tiny.bin"), dir.file("x.bin"), o, ed.get()); }) ==
          ExitCode::usage);
    CHECK(contains(error_message([&] { sign_image(dir.file("tiny.bin"), dir.file("x.bin"), o, ed.get()); }),
                   "smaller than --header-size"));
  }
  SUBCASE("--pad without --confirm: trailer magic, image_ok left erased") {
    SignOptions o = base_options();
    o.slot_size = 0x20000;
    o.pad = true;
    Bytes out = sign_to_bytes(dir, app, o, ed.get());
    CHECK(out.size() == 0x20000);
    TrailerInfo t = parse_image(out).trailer;
    CHECK(t.magic_found);
    CHECK(t.image_ok == std::optional<std::uint8_t>(0xff));
  }
}

TEST_CASE("mcuboot_sign: --boot-record, --vid/--cid, --sha and progress") {
  test::TempDir dir;
  auto ed = key(mcuboot_vector("ed25519.pem"));
  const std::string app = mcuboot_vector("app.bin");

  SUBCASE("--boot-record: imgtool's CBOR map with type, version, signer id and zeroed measurement") {
    SignOptions o = base_options("1.2.3");
    o.boot_record_sw_type = "BL2";
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, o, ed.get(), &r);
    ParsedImage parsed = parse_image(out);
    const TlvEntry* rec = find_tlv(parsed, tlv::boot_record);
    REQUIRE(rec != nullptr);
    cbor_load_result load{};
    cbor_item_t* item = cbor_load(rec->value.data(), rec->value.size(), &load);
    REQUIRE(item != nullptr);
    REQUIRE(cbor_isa_map(item));
    REQUIRE(cbor_map_size(item) == 5);
    cbor_pair* pairs = cbor_map_handle(item);
    std::vector<int> keys;
    for (std::size_t i = 0; i < 5; ++i) keys.push_back(cbor_get_uint8(pairs[i].key));
    CHECK(keys == std::vector<int>{1, 4, 5, 6, 2});
    CHECK(std::string(reinterpret_cast<const char*>(cbor_string_handle(pairs[0].value)),
                      cbor_string_length(pairs[0].value)) == "BL2");
    CHECK(std::string(reinterpret_cast<const char*>(cbor_string_handle(pairs[1].value)),
                      cbor_string_length(pairs[1].value)) == "1.2.3");
    CHECK(Bytes(cbor_bytestring_handle(pairs[2].value),
                cbor_bytestring_handle(pairs[2].value) + cbor_bytestring_length(pairs[2].value)) == r.key_hash);
    CHECK(Bytes(cbor_bytestring_handle(pairs[4].value),
                cbor_bytestring_handle(pairs[4].value) + cbor_bytestring_length(pairs[4].value)) == Bytes(32, 0));
    cbor_decref(&item);
    CHECK(verify_image(dir.file("out.bin"), ed->public_key_der()).ok());
  }
  SUBCASE("--boot-record longer than 12 characters: usage error") {
    SignOptions o = base_options();
    o.boot_record_sw_type = "ABCDEFGHIJKLM";
    CHECK(test::exit_code_of([&] { sign_image(app, dir.file("x.bin"), o, ed.get()); }) == ExitCode::usage);
    o.boot_record_sw_type = "ABCDEFGHIJKL";
    CHECK(test::exit_code_of([&] { sign_image(app, dir.file("x.bin"), o, ed.get()); }) == ExitCode::ok);
  }
  SUBCASE("--vid/--cid: UUIDs as written, names as uuid5 (Python's values)") {
    // uuid.uuid5(uuid.NAMESPACE_DNS, "python.org") == 886313e1-3b8a-5372-9b90-0c9aee199e5d
    CHECK(to_hex(uuid5(from_hex("6ba7b8109dad11d180b400c04fd430c8"), "python.org")) ==
          "886313e13b8a53729b900c9aee199e5d");
    CHECK(to_hex(uuid_from_text_or_name("12345678-9abc-def0-1234-56789abcdef0", {})) ==
          "123456789abcdef0123456789abcdef0");
    SignOptions o = base_options();
    o.vendor_id = "python.org";
    o.class_id = "12345678-9abc-def0-1234-56789abcdef0";
    Bytes out = sign_to_bytes(dir, app, o, ed.get());
    ParsedImage parsed = parse_image(out);
    const TlvEntry* vid = find_tlv(parsed, tlv::uuid_vid);
    const TlvEntry* cid = find_tlv(parsed, tlv::uuid_cid);
    REQUIRE(vid != nullptr);
    REQUIRE(cid != nullptr);
    CHECK(to_hex(vid->value) == "886313e13b8a53729b900c9aee199e5d");
    CHECK(to_hex(cid->value) == "123456789abcdef0123456789abcdef0");
    // A class name is a uuid5 under the vendor's UUID.
    o.class_id = "board";
    out = sign_to_bytes(dir, app, o, ed.get());
    parsed = parse_image(out);
    cid = find_tlv(parsed, tlv::uuid_cid);
    REQUIRE(cid != nullptr);
    CHECK(cid->value == uuid5(from_hex("886313e13b8a53729b900c9aee199e5d"), "board"));
  }
  SUBCASE("--sha 384 with Ed25519: SHA384 TLV and key hash, still verifies") {
    SignOptions o = base_options();
    o.hash = HashAlg::sha384;
    SignResult r;
    Bytes out = sign_to_bytes(dir, app, o, ed.get(), &r);
    CHECK(r.digest.size() == 48);
    CHECK(find_tlv(parse_image(out), tlv::sha384) != nullptr);
    CHECK(find_tlv(parse_image(out), tlv::sha256) == nullptr);
    ImageReport report = verify_image(dir.file("out.bin"), ed->public_key_der());
    CHECK(report.hash == std::optional<HashAlg>(HashAlg::sha384));
  }
  SUBCASE("progress reaches the input's size") {
    std::uint64_t last = 0, total = 0;
    int calls = 0;
    sign_image(app, dir.file("out.bin"), base_options(), ed.get(), [&](std::uint64_t done, std::uint64_t of) {
      last = done;
      total = of;
      ++calls;
    });
    CHECK(calls >= 1);
    CHECK(total == fs::file_size(app));
    CHECK(last == total);
  }
}

TEST_CASE("mcuboot_sign: option checks fail with usage errors naming the option, before writing anything") {
  test::TempDir dir;
  auto ed = key(mcuboot_vector("ed25519.pem"));
  auto ec = key(mcuboot_vector("ecdsa-p256.pem"));
  const std::string app = mcuboot_vector("app.bin");
  const std::string out = dir.file("x.bin");
  struct Bad {
    const char* what;
    std::function<void(SignOptions&)> change;
    const char* message;
  };
  std::vector<Bad> bad = {
      {"header too small", [](SignOptions& o) { o.header_size = 0x10; }, "smaller than the 32-byte image header"},
      {"align 3", [](SignOptions& o) { o.trailer.align = 3; }, "--align 3"},
      {"max-align 4", [](SignOptions& o) { o.trailer.max_align = 4; }, "--max-align 4"},
      {"align above max-align",
       [](SignOptions& o) {
         o.trailer.align = 16;
         o.trailer.max_align = 8;
       },
       "larger than --max-align"},
      {"slot size 0", [](SignOptions& o) { o.slot_size = 0; }, "--slot-size"},
      {"cid without vid", [](SignOptions& o) { o.class_id = "x"; }, "--cid needs --vid"},
      {"save-enctlv without encrypt", [](SignOptions& o) { o.save_enctlv = true; }, "--save-enctlv"},
      {"compression without pad-header",
       [](SignOptions& o) {
         o.compression = Compression::lzma2;
         o.pad_header = false;
       },
       "--pad-header"},
      {"compression with pure",
       [](SignOptions& o) {
         o.compression = Compression::lzma2;
         o.pure = true;
       },
       "--pure"},
      {"compression with vector-to-sign",
       [](SignOptions& o) {
         o.compression = Compression::lzma2;
         o.vector_to_sign = SignOptions::Vector::digest;
       },
       "external signing"},
      {"custom TLV below 0xa0",
       [](SignOptions& o) {
         o.custom_tlvs = {{0x50, {1}}};
       },
       "between 0x00a0 and 0xfffe"},
      {"custom TLV twice",
       [](SignOptions& o) {
         o.custom_tlvs = {{0xa0, {1}}, {0xa0, {2}}};
       },
       "already exists"},
      {"slot too small for the image", [](SignOptions& o) { o.slot_size = 0x1000; }, "exceeds requested size 0x1000"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.what);
    SignOptions o = base_options();
    b.change(o);
    std::string message = error_message([&] { sign_image(app, out, o, ed.get()); });
    CHECK_MESSAGE(contains(message, b.message), message);
    CHECK(test::exit_code_of([&] { sign_image(app, out, o, ed.get()); }) == ExitCode::usage);
    CHECK(!fs::exists(out));
  }

  SUBCASE("checks against the key") {
    SignOptions o = base_options();
    o.pure = true;
    CHECK(contains(error_message([&] { validate(o, ec.get()); }), "--pure signs with Ed25519 only"));
    CHECK(test::exit_code_of([&] { sign_image(app, out, o, ec.get()); }) == ExitCode::usage);
    o = base_options();
    o.sig_out = dir.path() / "sig.b64";
    CHECK(contains(error_message([&] { validate(o, nullptr); }), "--sig-out needs a signature"));
    o = base_options();
    o.encryption = SignOptions::Encryption{load_encryption_key(more_vector("enc-rsa2048.pem"))};
    CHECK(contains(error_message([&] { validate(o, ec.get()); }), "same type of key"));
    CHECK(test::exit_code_of([&] { validate(o, ed.get()); }) == ExitCode::ok);  // Ed25519 goes with any
    o.encryption->hmac = HmacSha::sha512;
    CHECK(contains(error_message([&] { validate(o); }), "--hmac-sha 512"));
    o = base_options();
    o.fixed_signature = SignOptions::FixedSignature{Bytes(64, 0), ed->public_key_der()};
    CHECK(contains(error_message([&] { validate(o, ed.get()); }), "fixed signature at the same time"));
    o.vector_to_sign = SignOptions::Vector::digest;
    CHECK(contains(error_message([&] { validate(o); }), "two steps"));
    CHECK(!fs::exists(out));
  }
}

TEST_CASE("mcuboot_sign: verify_image rejects a truncated image, a damaged one and the wrong key") {
  test::TempDir dir;
  const std::string signed_path = mcuboot_vector("ed25519-basic.signed.bin");
  const Bytes good = read_file(signed_path);
  Bytes ed_pub = load_public_key_file(mcuboot_vector("ed25519.pem"), std::nullopt);
  Bytes ec_pub = load_public_key_file(mcuboot_vector("ecdsa-p256.pem"), std::nullopt);
  CHECK(verify_image(signed_path, ed_pub).ok());

  SUBCASE("truncated: a FormatError (verification_failed), at every cut") {
    for (std::size_t cut : {std::size_t{0}, std::size_t{16}, std::size_t{0x200}, good.size() / 2, good.size() - 1}) {
      CAPTURE(cut);
      write_file_atomic(dir.file("cut.bin"), ByteView(good.data(), cut));
      CHECK(test::exit_code_of([&] { verify_image(dir.file("cut.bin"), ed_pub); }) == ExitCode::verification_failed);
    }
  }
  SUBCASE("a flipped payload byte: hash mismatch") {
    Bytes bad = good;
    bad[0x300] ^= 1;
    write_file_atomic(dir.file("bad.bin"), bad);
    ImageReport report = inspect_image(dir.file("bad.bin"), ed_pub);
    CHECK(!report.hash_ok);
    CHECK(!report.ok());
    CHECK(test::exit_code_of([&] { verify_image(dir.file("bad.bin"), ed_pub); }) == ExitCode::verification_failed);
  }
  SUBCASE("the wrong key: key hash mismatch") {
    ImageReport report = inspect_image(signed_path, ec_pub);
    CHECK(report.hash_ok);
    CHECK(report.key_hash_ok == std::optional<bool>(false));
    CHECK(!report.ok());
    CHECK(test::exit_code_of([&] { verify_image(signed_path, ec_pub); }) == ExitCode::verification_failed);
  }
  SUBCASE("the input file missing: an Error, nothing written") {
    auto ed = key(mcuboot_vector("ed25519.pem"));
    CHECK(test::exit_code_of([&] { sign_image(dir.file("none.bin"), dir.file("x.bin"), base_options(), ed.get()); }) !=
          ExitCode::ok);
    CHECK(!fs::exists(dir.file("x.bin")));
  }
}
