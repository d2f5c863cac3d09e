// Unit tests for imgtool's sign options read from text: numbers as Python's int(text, 0), custom TLV values,
// --fix-sig files and the combinations imgtool refuses.
#include <doctest/doctest.h>

#include <fstream>

#include "core/error.hpp"
#include "tests/support/errors.hpp"
#include "signing/imgtool_options.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::mcuboot;

namespace {

ImgtoolSignArgs minimal() {
  ImgtoolSignArgs a;
  a.version = "1.2.3+4";
  a.header_size = "0x200";
  a.slot_size = "0x20000";
  return a;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

TEST_CASE("imgtool numbers: decimal, 0x, 0o and 0b prefixes, as Python's int(text, 0)") {
  struct Case {
    const char* text;
    std::uint64_t value;
  };
  for (const Case& c : {Case{"512", 512}, Case{"0x200", 0x200}, Case{"0X1f", 0x1f}, Case{"0o17", 017},
                        Case{"0b101", 5}, Case{"0", 0}, Case{"0xffffffff", 0xffffffff}}) {
    const std::string text = c.text;
    CAPTURE(text);
    CHECK(parse_imgtool_number(c.text, "--slot-size", 0xffffffff) == c.value);
  }
}

TEST_CASE("imgtool numbers: junk, empty digits and values above the option's maximum are usage errors") {
  for (const char* text : {"", "0x", "12a", "0x1g", "-1", "1.5", " 1", "0x100000000"}) {
    const std::string shown = text;
    CAPTURE(shown);
    CHECK(test::exit_code_of([&] { parse_imgtool_number(text, "--slot-size", 0xffffffff); }) == ExitCode::usage);
  }
  CHECK(test::exit_code_of([] { parse_imgtool_number("33", "--align", 32); }) == ExitCode::usage);
  try {
    parse_imgtool_number("0x10000", "--header-size", 0xffff);
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("--header-size '0x10000'") != std::string::npos);
  }
}

TEST_CASE("custom TLV values: 0x-prefixed hex is bytes, anything else is the text itself") {
  CHECK(custom_tlv_value("0x01ff") == Bytes{0x01, 0xff});
  CHECK(custom_tlv_value("abc") == Bytes{'a', 'b', 'c'});
  CHECK(custom_tlv_value("0x").empty());
  CHECK(test::exit_code_of([] { custom_tlv_value("0x123"); }) == ExitCode::usage);
}

TEST_CASE("--fix-sig files: base64 with whitespace ignored; anything else is refused") {
  test::TempDir dir;
  write_text(dir.path() / "sig.b64", "AQID\nBA==\n");
  CHECK(read_base64_signature((dir.path() / "sig.b64").string()) == Bytes{1, 2, 3, 4});
  write_text(dir.path() / "one.b64", "AQ==");
  CHECK(read_base64_signature((dir.path() / "one.b64").string()) == Bytes{1});
  for (const char* bad : {"", "not base64!", "AQI"}) {
    write_text(dir.path() / "bad.b64", bad);
    CHECK(test::exit_code_of([&] { read_base64_signature((dir.path() / "bad.b64").string()); }) == ExitCode::failure);
  }
}

TEST_CASE("sign options: imgtool's spellings map to SignOptions") {
  auto a = minimal();
  a.sha = "384";
  a.compression = "lzma2armthumb";
  a.test = true;
  a.erased_val = "0";
  a.security_counter = "auto";
  a.max_sectors = "0x40";
  a.load_addr = "0x20000000";
  a.public_key_format = "full";
  a.custom_tlvs = {{"0xa0", "0x0102", false}, {"0xa1", "hi", false}};
  SignOptions o = sign_options(a, {});
  CHECK(o.version.major == 1);
  CHECK(o.version.minor == 2);
  CHECK(o.version.revision == 3);
  CHECK(o.version.build == 4);
  CHECK(o.header_size == 0x200);
  CHECK(o.slot_size == 0x20000);
  CHECK(o.hash == HashAlg::sha384);
  CHECK(o.compression == Compression::lzma2_arm_thumb);
  CHECK(o.pad);  // --test pads, like --pad
  CHECK_FALSE(o.confirm);
  CHECK(o.erased_value == 0x00);
  CHECK(o.security_counter == auto_security_counter(o.version));
  CHECK(o.trailer.max_sectors == 0x40);
  CHECK(o.load_addr == 0x20000000);
  CHECK(o.public_key_full);
  REQUIRE(o.custom_tlvs.size() == 2);
  CHECK(o.custom_tlvs[0].type == 0xa0);
  CHECK(o.custom_tlvs[0].value == Bytes{1, 2});
  CHECK(o.custom_tlvs[1].value == Bytes{'h', 'i'});
  CHECK_FALSE(o.encryption);
  CHECK_FALSE(o.vector_to_sign);

  auto defaults = sign_options(minimal(), {});
  CHECK_FALSE(defaults.hash);  // auto: the key decides
  CHECK(defaults.erased_value == 0xff);
  CHECK(defaults.compression == Compression::none);
  CHECK_FALSE(defaults.pad);
  CHECK_FALSE(defaults.security_counter);
}

TEST_CASE("sign options: combinations imgtool refuses are usage errors, before any key is read") {
  std::vector<std::pair<std::string, std::function<void(ImgtoolSignArgs&)>>> cases = {
      {"--clear without -E", [](ImgtoolSignArgs& a) { a.clear = true; }},
      {"--encrypt-keylen without -E", [](ImgtoolSignArgs& a) { a.encrypt_keylen = "256"; }},
      {"--hmac-sha without -E", [](ImgtoolSignArgs& a) { a.hmac_sha = "512"; }},
      {"--fix-sig without its key", [](ImgtoolSignArgs& a) { a.fix_sig = "/nonexistent/sig.b64"; }},
      {"--fix-sig-pubkey alone", [](ImgtoolSignArgs& a) { a.fix_sig_pubkey = "/nonexistent/key.pem"; }},
      {"unknown --sha", [](ImgtoolSignArgs& a) { a.sha = "1"; }},
      {"unknown --compression", [](ImgtoolSignArgs& a) { a.compression = "zstd"; }},
      {"unknown --vector-to-sign", [](ImgtoolSignArgs& a) { a.vector_to_sign = "image"; }},
      {"bad --erased-val", [](ImgtoolSignArgs& a) { a.erased_val = "0x00"; }},
      {"bad custom TLV tag", [](ImgtoolSignArgs& a) { a.custom_tlvs = {{"tag", "x", false}}; }},
      {"header size above 16 bits", [](ImgtoolSignArgs& a) { a.header_size = "0x10000"; }},
  };
  for (const auto& c : cases) {
    const std::string& name = c.first;
    CAPTURE(name);
    auto a = minimal();
    c.second(a);
    CHECK(test::exit_code_of([&] { sign_options(a, {}); }) == ExitCode::usage);
  }
}

TEST_CASE("sign options: -E loads the encryption key, and --vector-to-sign takes the signer's public key") {
  auto a = minimal();
  a.encrypt = test::vector("mcuboot-more/enc-p256.pem");
  a.encrypt_keylen = "256";
  auto o = sign_options(a, {});
  REQUIRE(o.encryption);
  CHECK(o.encryption->key_bits == 256);
  CHECK(o.encryption->hmac == HmacSha::sha256);

  auto v = minimal();
  v.vector_to_sign = "digest";
  v.fix_sig_pubkey = test::vector("mcuboot/ed25519.pem");
  auto ov = sign_options(v, {});
  CHECK(ov.vector_to_sign == SignOptions::Vector::digest);
  REQUIRE(ov.signer_public_key);
  CHECK(*ov.signer_public_key == load_public_key(test::vector("mcuboot/ed25519.pem")));
}
