// Tests for the MCUboot format functions: versions, header, TLV areas, trailer and bounds-checked parsing.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/mcuboot_sign.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::mcuboot;

namespace {

std::string vector_path(const std::string& name) {
  return test::vector("mcuboot/" + name);
}

// A small, valid image built with the format functions: header, 16-byte payload, one protected
// TLV (SEC_CNT), unprotected SHA256 TLV.
Bytes small_image() {
  std::vector<Tlv> prot = {{tlv::security_counter, {1, 0, 0, 0}}};
  Bytes prot_area = encode_tlv_area(protected_tlv_info_magic, prot);
  ImageHeader h;
  h.header_size = 32;
  h.image_size = 16;
  h.protected_tlv_size = static_cast<std::uint16_t>(prot_area.size());
  h.version = {1, 2, 3, 4};
  Bytes image = encode_header(h);
  image.insert(image.end(), 16, 0xab);
  image.insert(image.end(), prot_area.begin(), prot_area.end());
  std::vector<Tlv> unprot = {{tlv::sha256, digest(HashAlg::sha256, image)}};
  Bytes area = encode_tlv_area(tlv_info_magic, unprot);
  image.insert(image.end(), area.begin(), area.end());
  return image;
}

template <typename F>
FormatError format_error(F&& f) {
  try {
    f();
  } catch (const FormatError& e) {
    return e;
  }
  FAIL("expected a FormatError");
  return FormatError(0, "");
}

}  // namespace

TEST_CASE("mcuboot: versions follow imgtool's X.Y.Z+B rule") {
  auto v = parse_version("1.2.3+4");
  CHECK(v.major == 1);
  CHECK(v.minor == 2);
  CHECK(v.revision == 3);
  CHECK(v.build == 4);
  CHECK(format_version(parse_version("3")) == "3.0.0+0");
  CHECK(format_version(parse_version("2.7.300+99")) == "2.7.300+99");
  for (const char* bad : {"", "1.", "01.2.3", "1.2+3", "256.0.0", "1.2.65536", "1.2.3.4", "a.b.c", "1.2.3+"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_version(bad), Error);
  }
}

TEST_CASE("mcuboot: security counter auto is (major << 24) + (minor << 16) + revision") {
  CHECK(auto_security_counter(parse_version("2.7.300+99")) == 0x0207012c);
}

TEST_CASE("mcuboot: dependencies parse imgtool's list and encode to 12 bytes") {
  auto deps = parse_dependencies("(1,1.2.3+0), (2, 0.1)");
  REQUIRE(deps.size() == 2);
  CHECK(deps[1].image_id == 2);
  CHECK(to_hex(encode_dependency(deps[0])) == "010000000102030000000000");
  CHECK_THROWS_AS(parse_dependencies("1,1.2.3"), Error);
  CHECK_THROWS_AS(parse_dependencies("(300,1.0.0)"), Error);
  CHECK_THROWS_AS(parse_dependencies("(1,1.0.0"), Error);
}

TEST_CASE("mcuboot: header encodes and parses back") {
  ImageHeader h;
  h.load_addr = 0x20000000;
  h.header_size = 0x200;
  h.protected_tlv_size = 12;
  h.image_size = 100003;
  h.flags = flag_non_bootable;
  h.version = {2, 7, 300, 99};
  Bytes bytes = encode_header(h);
  REQUIRE(bytes.size() == 32);
  CHECK(to_hex(ByteView(bytes).first(4)) == "3db8f396");
  auto back = parse_header(bytes);
  CHECK(back.load_addr == h.load_addr);
  CHECK(back.protected_tlv_size == 12);
  CHECK(back.image_size == 100003);
  CHECK(format_version(back.version) == "2.7.300+99");
}

TEST_CASE("mcuboot: trailer size is max_sectors*3*align + 4*max_align + 16, as imgtool") {
  CHECK(trailer_size({.align = 1}) == 128 * 3 + 32 + 16);
  CHECK(trailer_size({.align = 8}) == 3120);
  CHECK(trailer_size({.align = 8, .max_align = 32, .max_sectors = 64}) == 64 * 3 * 8 + 128 + 32);
  CHECK(trailer_size({.align = 4, .overwrite_only = true}) == 8 * 2 + 16);
  Bytes t = encode_trailer({.align = 8}, 0xff, true);
  CHECK(t.size() == 3120);
  CHECK(to_hex(ByteView(t).last(24)) == "01ffffffffffffff77c295f360d2ef7f3552500f2cb67980");
  Bytes t32 = encode_trailer({.align = 8, .max_align = 32}, 0xff, false);
  CHECK(to_hex(ByteView(t32).last(16)) == "20002de15d29410b8d77679c110f1f8a");
  auto info = parse_trailer(t32);
  CHECK(info.magic_found);
  CHECK(info.max_align == 32);
}

TEST_CASE("mcuboot: image plus trailer must fit the slot, even without --pad") {
  TrailerLayout layout{.align = 8};
  CHECK_NOTHROW(check_fits_slot(0x20000 - 3120, layout, 0x20000));
  try {
    check_fits_slot(0x20000 - 3119, layout, 0x20000);
    FAIL("expected the slot check to fail");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::usage);
    CHECK(std::string(e.what()).find("exceeds requested size 0x20000") != std::string::npos);
  }
}

TEST_CASE("mcuboot: parse_image reads a built image and the imgtool vectors") {
  auto parsed = parse_image(small_image());
  REQUIRE(parsed.protected_area);
  CHECK(parsed.protected_area->entries[0].type == tlv::security_counter);
  CHECK(parsed.unprotected_area.entries.size() == 1);
  CHECK(parsed.end == small_image().size());

  Bytes vector = read_file(vector_path("ed25519-customtlv.signed.bin"));
  auto v = parse_image(vector);
  REQUIRE(v.protected_area);
  CHECK(v.protected_area->entries.size() == 2);
  CHECK(v.protected_area->entries[1].type == 0xa5);
  CHECK(std::string(v.protected_area->entries[1].value.begin(), v.protected_area->entries[1].value.end()) == "hello");
  CHECK(v.unprotected_area.entries[2].type == tlv::ed25519);
  CHECK(v.end == vector.size());
}

TEST_CASE("mcuboot: bad input is a FormatError with offset and reason") {
  Bytes good = small_image();
  SUBCASE("shorter than a header") {
    auto e = format_error([&] { parse_image(ByteView(good).first(20)); });
    CHECK(e.code() == ExitCode::verification_failed);
    CHECK(e.reason().find("shorter than the 32-byte image header") != std::string::npos);
  }
  SUBCASE("wrong magic") {
    Bytes b = good;
    b[3] = 0;
    auto e = format_error([&] { parse_image(b); });
    CHECK(e.offset() == 0);
    CHECK(e.reason().find("wrong magic") != std::string::npos);
  }
  SUBCASE("truncated payload") {
    auto e = format_error([&] { parse_image(ByteView(good).first(40)); });
    CHECK(e.reason().find("truncated image") != std::string::npos);
  }
  SUBCASE("truncated unprotected TLV area") {
    auto e = format_error([&] { parse_image(ByteView(good).first(good.size() - 1)); });
    CHECK(e.reason().find("truncated unprotected TLV area") != std::string::npos);
  }
  SUBCASE("TLV length past the end of its area") {
    Bytes b = good;
    std::size_t sha_len = good.size() - 32 - 2;  // the SHA256 entry's length field
    b[sha_len] = 0x40;
    auto e = format_error([&] { parse_image(b); });
    CHECK(e.offset() == sha_len);
    CHECK(e.reason().find("runs past the end") != std::string::npos);
  }
  SUBCASE("protected size in the header lies") {
    Bytes b = good;
    b[10] = static_cast<std::uint8_t>(b[10] + 4);
    auto e = format_error([&] { parse_image(b); });
    CHECK(e.reason().find("protected TLV area is 12 bytes but the header says 16") != std::string::npos);
  }
  SUBCASE("protected area present but the header says none") {
    Bytes b = good;
    b[10] = 0;
    auto e = format_error([&] { parse_image(b); });
    CHECK(e.reason().find("no protected TLV area") != std::string::npos);
  }
  SUBCASE("header size smaller than the header") {
    Bytes b = good;
    b[8] = 16;
    auto e = format_error([&] { parse_image(b); });
    CHECK(e.offset() == 8);
  }
  SUBCASE("image size near 4 GiB does not wrap") {
    Bytes b = good;
    b[12] = b[13] = b[14] = b[15] = 0xff;
    auto e = format_error([&] { parse_image(b); });
    CHECK(e.reason().find("truncated image") != std::string::npos);
  }
}

TEST_CASE("mcuboot: inspect_image names a key of the wrong type") {
  Bytes ed25519_key = load_public_key_file(vector_path("ed25519.pem"), std::nullopt);
  auto report = inspect_image(vector_path("ecdsa-p256-basic.signed.bin"), ed25519_key);
  CHECK_FALSE(report.ok());
  CHECK(report.hash_ok);
  CHECK(report.failure.find("wrong key type") != std::string::npos);
  CHECK_THROWS_AS(verify_image(vector_path("ecdsa-p256-basic.signed.bin"), ed25519_key), Error);
}

TEST_CASE("mcuboot: uuid5 matches Python's uuid.uuid5") {
  // uuid.uuid5(uuid.NAMESPACE_DNS, 'python.org') == 886313e1-3b8a-5372-9b90-0c9aee199e5d
  CHECK(to_hex(uuid5(from_hex("6ba7b8109dad11d180b400c04fd430c8"), "python.org")) ==
        "886313e13b8a53729b900c9aee199e5d");
  CHECK(to_hex(uuid_from_text_or_name("00010203-0405-0607-0809-0a0b0c0d0e0f", {})) ==
        "000102030405060708090a0b0c0d0e0f");
}

TEST_CASE("mcuboot: sign_image reproduces imgtool's Ed25519 vector and inspect_image accepts it") {
  test::TempDir dir;
  auto signer = load_file_signer(vector_path("ed25519.pem"), std::nullopt);
  SignOptions options;
  options.version = parse_version("1.2.3+4");
  options.header_size = 0x200;
  options.pad_header = true;
  options.slot_size = 0x40000;
  auto result = sign_image(vector_path("app.bin"), dir.file("out.bin"), options, signer.get());
  CHECK(result.image_bytes == 100659);
  CHECK(read_file(dir.file("out.bin")) == read_file(vector_path("ed25519-basic.signed.bin")));
  auto report = verify_image(dir.file("out.bin"), signer->public_key_der());
  CHECK(report.signature_ok == true);
}

TEST_CASE("mcuboot: a multi-megabyte image with its header space in the input signs and verifies") {
  test::TempDir dir;
  Bytes firmware(3 * 1024 * 1024 + 123, 0);
  for (std::size_t i = 0x100; i < firmware.size(); ++i) firmware[i] = static_cast<std::uint8_t>(i ^ (i >> 9));
  write_file_atomic(dir.file("fw.bin"), firmware);
  auto signer = load_file_signer(vector_path("ecdsa-p256.pem"), std::nullopt);
  SignOptions options;
  options.version = parse_version("1.0.0");
  options.header_size = 0x100;  // no --pad-header: the first 0x100 input bytes are zero
  options.slot_size = 4 * 1024 * 1024;
  options.confirm = true;
  std::uint64_t last_done = 0;
  auto result = sign_image(dir.file("fw.bin"), dir.file("fw.signed.bin"), options, signer.get(),
                           [&](std::uint64_t done, std::uint64_t total) {
                             CHECK(done <= total);
                             last_done = done;
                           });
  CHECK(last_done == firmware.size());
  CHECK(result.header.image_size == firmware.size() - 0x100);
  CHECK(result.output_bytes == options.slot_size);
  auto report = verify_image(dir.file("fw.signed.bin"), signer->public_key_der());
  CHECK(report.image.trailer.magic_found);
  CHECK(report.image.trailer.image_ok == std::uint8_t{1});
  Bytes written = read_file(dir.file("fw.signed.bin"));
  CHECK(std::equal(firmware.begin() + 0x100, firmware.end(), written.begin() + 0x100));
}

TEST_CASE("mcuboot: sign_image refuses an input whose header space is not zero, leaving nothing") {
  test::TempDir dir;
  SignOptions options;
  options.header_size = 0x200;
  options.slot_size = 0x40000;
  CHECK_THROWS_AS(sign_image(vector_path("app.bin"), dir.file("out.bin"), options, nullptr), Error);
  CHECK(std::filesystem::is_empty(dir.path()));
}
