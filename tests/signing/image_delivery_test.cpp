// Tests for signing/image_delivery on imgtool's encrypted vectors (mcuboot-more/enc-*): where the key TLV is
// (offsets computed independently from the file layout), a per-device rewrap that the device's key opens and
// that decrypts (with OpenSSL's AES-128-CTR directly) to app.bin, ranged streaming, and the wrap-independent
// digest (expected values computed by dropping the key TLV from the file with a separate script).
#include <doctest/doctest.h>
#include <openssl/evp.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/image_delivery.hpp"
#include "signing/signer.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using namespace kiln::mcuboot;
using kiln::test::exit_code_of;

namespace {

Bytes aes128_ctr(ByteView key, ByteView data) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  unsigned char iv[16] = {};
  REQUIRE(EVP_EncryptInit_ex(ctx, EVP_aes_128_ctr(), nullptr, key.data(), iv) == 1);
  Bytes out(data.size());
  int len = 0;
  REQUIRE(EVP_EncryptUpdate(ctx, out.data(), &len, data.data(), static_cast<int>(data.size())) == 1);
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

Bytes streamed(const std::string& image, const KeyTlvLocation& at, ByteView area, std::uint64_t from = 0) {
  Bytes out;
  auto sent = stream_with_area(image, at, area, [&](ByteView piece) { out.insert(out.end(), piece.begin(), piece.end()); },
                               from);
  CHECK(sent == out.size());
  return out;
}

}  // namespace

TEST_CASE("image_delivery: locate_key_tlv finds the content-key TLV of an ECIES-P256 image") {
  auto image = test::vector("mcuboot-more/enc-p256-aes128.signed.bin");
  auto at = locate_key_tlv(image);
  CHECK(at.file_size == 100789);
  CHECK(at.header.header_size == 0x200);
  CHECK(at.header.image_size == 100016);
  CHECK(at.area_offset == 100528);  // header + payload; no protected area
  CHECK(at.area_size == 261);
  CHECK(at.key_type == tlv::enc_ec256);
  CHECK(at.key_value.size() == 113);  // ephemeral point (65) + HMAC (32) + wrapped key (16)
  auto file = read_file(image);
  REQUIRE(file.size() == at.file_size);
  CHECK(std::search(file.begin() + 100528, file.end(), at.key_value.begin(), at.key_value.end()) != file.end());
  std::size_t key_entries = 0;
  for (const auto& e : at.area_entries) key_entries += is_encryption_tlv(e.type) ? 1 : 0;
  CHECK(key_entries == 1);
  CHECK(at.area_entries.size() >= 3);  // hash, signature and the key at least

  auto x25519 = locate_key_tlv(test::vector("mcuboot-more/enc-x25519-aes128.signed.bin"));
  CHECK(x25519.key_type == tlv::enc_x25519);
  CHECK(x25519.key_value.size() == 80);  // ephemeral key (32) + HMAC (32) + wrapped key (16)
  CHECK(x25519.area_size == 228);
}

TEST_CASE("image_delivery: an image that is not encrypted, or missing, is refused with its code") {
  CHECK_THROWS_WITH_AS(locate_key_tlv(test::vector("mcuboot/ed25519-basic.signed.bin")),
                       (test::vector("mcuboot/ed25519-basic.signed.bin") + " is not an encrypted image (no ENCRYPTED flag)")
                           .c_str(),
                       Error);
  CHECK(exit_code_of([] { locate_key_tlv(test::vector("mcuboot/ed25519-basic.signed.bin")); }) == ExitCode::usage);
  test::TempDir dir;
  CHECK(exit_code_of([&] { locate_key_tlv(dir.file("absent.bin")); }) == ExitCode::not_found);
  // Truncated inside the payload.
  auto file = read_file(test::vector("mcuboot-more/enc-p256-aes128.signed.bin"));
  file.resize(50000);
  write_file_atomic(dir.file("cut.bin"), file);
  CHECK_THROWS(locate_key_tlv(dir.file("cut.bin")));
  CHECK(keyless_digest(test::vector("mcuboot/ed25519-basic.signed.bin")) == std::nullopt);
  CHECK(keyless_digest(test::vector("mcuboot/app.bin")) == std::nullopt);  // not an MCUboot image at all
}

TEST_CASE("image_delivery: a rewrap for another device's key opens and decrypts to the same app") {
  auto image = test::vector("mcuboot-more/enc-p256-aes128.signed.bin");
  auto at = locate_key_tlv(image);
  auto release_key = load_content_key_opener_file(test::vector("mcuboot-more/enc-p256.pem"), "release key");
  auto device_opener = load_content_key_opener_file(test::vector("mcuboot-more/enc-x25519.pem"), "device key");
  auto device_key = encryption_key_from_spki(device_opener->public_key_der(), "device key");
  auto area = rewrapped_area(at, *release_key, device_key);
  auto rewrapped = streamed(image, at, area);
  auto original = read_file(image);
  // Everything before the area is the same bytes (header, encrypted body); the area differs.
  CHECK(std::equal(original.begin(), original.begin() + 100528, rewrapped.begin()));
  CHECK(rewrapped.size() == 100528 + area.size());
  CHECK(get_le16(area, 0) == 0x6907);
  CHECK(get_le16(area, 2) == area.size());

  test::TempDir dir;
  write_file_atomic(dir.file("device.bin"), rewrapped);
  auto device_at = locate_key_tlv(dir.file("device.bin"));
  CHECK(device_at.key_type == tlv::enc_x25519);
  CHECK(device_at.area_entries.size() == at.area_entries.size());
  auto content_key = device_opener->open(device_at.key_type, device_at.key_value, 16);
  CHECK(content_key == release_key->open(at.key_type, at.key_value, 16));
  auto body = aes128_ctr(content_key, ByteView(rewrapped).subspan(0x200, 100016));
  CHECK(body == test::padded_more_app());
  // The release key no longer opens the device's copy.
  CHECK(exit_code_of([&] { release_key->open(device_at.key_type, device_at.key_value, 16); }) ==
        ExitCode::verification_failed);
  // A key that does not open the release's TLV cannot rewrap it.
  CHECK(exit_code_of([&] { rewrapped_area(at, *device_opener, device_key); }) == ExitCode::verification_failed);

  // The keyless digest is the same for both wraps: what a SUIT manifest declares for every device.
  auto release_digest = keyless_digest(image);
  auto device_digest = keyless_digest(dir.file("device.bin"));
  REQUIRE(release_digest);
  REQUIRE(device_digest);
  CHECK(to_hex(release_digest->sha256) == "909c845e7317d03f673374f04ca423426972fe7367b0b3ba4eff7eb9b2b3b3c1");
  CHECK(release_digest->size == 100672);
  CHECK(device_digest->sha256 == release_digest->sha256);
  CHECK(device_digest->size == release_digest->size);
}

TEST_CASE("image_delivery: ranged streaming sends exactly the suffix, from any offset") {
  auto image = test::vector("mcuboot-more/enc-x25519-aes128.signed.bin");
  auto at = locate_key_tlv(image);
  Bytes area{0x07, 0x69, 0x08, 0x00, 0xaa, 0xbb, 0xcc, 0xdd};  // any bytes: streaming does not look at them
  auto whole = streamed(image, at, area);
  REQUIRE(whole.size() == at.area_offset + area.size());
  CHECK(std::equal(area.begin(), area.end(), whole.end() - static_cast<std::ptrdiff_t>(area.size())));
  for (std::uint64_t from : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{65536}, at.area_offset - 1, at.area_offset,
                             at.area_offset + 3, whole.size() - 1, std::uint64_t{whole.size()}, std::uint64_t{whole.size() + 10}}) {
    CAPTURE(from);
    auto part = streamed(image, at, area, from);
    Bytes expected = from < whole.size() ? Bytes(whole.begin() + static_cast<std::ptrdiff_t>(from), whole.end()) : Bytes{};
    CHECK(part == expected);
  }
}

TEST_CASE("image_delivery: a slot the bootloader decrypted digests as its encrypted form once re-encrypted") {
  auto clear = test::vector("mcuboot-more/enc-p256-clear.signed.bin");
  auto opener = load_content_key_opener_file(test::vector("mcuboot-more/enc-p256.pem"), "release key");
  auto plain = keyless_digest(clear);
  REQUIRE(plain);
  CHECK(to_hex(plain->sha256) == "913017656cf56a3311cb5669fc85985085b9950d164b5a55672b33b0b6a6c129");
  CHECK(plain->size == 100672);
  // Expected: the file with the body AES-128-CTR encrypted under its own content key and the key TLV dropped,
  // built here byte by byte.
  auto at = locate_key_tlv(clear);
  auto file = read_file(clear);
  CHECK(Bytes(file.begin() + 0x200, file.begin() + 0x200 + 100016) == test::padded_more_app());
  auto content_key = opener->open(at.key_type, at.key_value, 16);
  Bytes expected(file.begin(), file.begin() + 0x200);
  auto body = aes128_ctr(content_key, ByteView(file).subspan(0x200, 100016));
  expected.insert(expected.end(), body.begin(), body.end());
  Bytes kept;
  for (const auto& e : at.area_entries) {
    if (is_encryption_tlv(e.type)) continue;
    put_le16(kept, e.type);
    put_le16(kept, static_cast<std::uint16_t>(e.value.size()));
    kept.insert(kept.end(), e.value.begin(), e.value.end());
  }
  put_le16(expected, 0x6907);
  put_le16(expected, static_cast<std::uint16_t>(kept.size() + 4));
  expected.insert(expected.end(), kept.begin(), kept.end());
  auto reencrypted = keyless_digest(clear, opener.get());
  REQUIRE(reencrypted);
  CHECK(reencrypted->size == expected.size());
  CHECK(reencrypted->sha256 == digest(HashAlg::sha256, expected));
  CHECK(reencrypted->sha256 != plain->sha256);
}
