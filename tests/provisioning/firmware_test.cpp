// Tests for provisioning/firmware: a station's image, SUIT envelope and keys checked against each other
// (real releases made with the signing code), the facts kept of them, and each mismatch refused with exit 3.
#include <doctest/doctest.h>
#include <openssl/evp.h>

#include <filesystem>

#include "core/error.hpp"
#include "core/files.hpp"
#include "provisioning/firmware.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_release.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

namespace {

// SHA-256 straight from OpenSSL, for comparison with kiln's chunked file hash.
Bytes openssl_sha256(const Bytes& data) {
  Bytes out(32);
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

}  // namespace

TEST_CASE("firmware: an image and its manifest that agree give the facts a station keeps") {
  test::TempDir dir;
  test::TestReleaseMaker releases(dir.path(), true);
  auto release = releases.make("fw", 7, 70000);  // more than one read chunk
  auto fw = check_firmware(release.image_file, release.envelope_file, {releases.manifest_key().public_key_der()}, 1,
                           releases.boot_key().public_key_der());
  auto image_bytes = read_file(release.image_file);
  auto envelope_bytes = read_file(release.envelope_file);
  CHECK(fw.image == release.image_file);
  CHECK(fw.image_size == image_bytes.size());
  CHECK(fw.image_sha256 == openssl_sha256(image_bytes));
  CHECK(file_sha256(release.image_file) == openssl_sha256(image_bytes));
  CHECK(fw.version == "1.0.0");  // no +build when the build number is 0, as boards report it
  CHECK(fw.sequence == 7);
  CHECK(fw.manifest == envelope_bytes);
  CHECK(fw.manifest_digest == openssl_sha256(envelope_bytes));
  CHECK(fw.manifest_keys == std::vector<Bytes>{releases.manifest_key().public_key_der()});
  CHECK(fw.manifest_threshold == 1);
  REQUIRE(fw.image_hash_tlv.size() == 32);
  CHECK(fw.image_hash_tlv != fw.image_sha256);  // the TLV hashes header and payload, not the whole file
  // A board reports either hash for this image.
  CHECK(fw.is_image(fw.image_sha256));
  CHECK(fw.is_image(fw.image_hash_tlv));
  CHECK_FALSE(fw.is_image(Bytes(32, 0)));
  CHECK_FALSE(fw.is_image(ByteView(fw.image_sha256).first(31)));
  CHECK_FALSE(fw.is_image(ByteView{}));
  // Without a boot key only the image's own hash is checked.
  auto unchecked = check_firmware(release.image_file, release.envelope_file, {releases.manifest_key().public_key_der()},
                                  1, std::nullopt);
  CHECK(unchecked.image_hash_tlv == fw.image_hash_tlv);
  StationFirmware empty;
  CHECK_FALSE(empty.is_image(ByteView{}));
}

TEST_CASE("firmware: a wrong boot key, a manifest of another image or key, and missing files are refused") {
  test::TempDir dir;
  test::TestReleaseMaker releases(dir.path(), true);
  auto release = releases.make("fw", 7);
  auto other = releases.make("other", 8);
  const std::vector<Bytes> manifest_key = {releases.manifest_key().public_key_der()};
  const Bytes boot_key = releases.boot_key().public_key_der();
  const std::vector<Bytes> boot_only = {boot_key};

  try {
    check_firmware(release.image_file, release.envelope_file, manifest_key, 1, manifest_key[0]);  // not the boot key
    FAIL("an image signed by another key was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
    CHECK(std::string(e.what()).starts_with("image " + release.image_file.string() +
                                            " does not verify with the boot key (key hash "));
    CHECK(e.hint() == "sign the image with the boot key, or pass the boot key it was signed with");
  }
  try {
    check_firmware(release.image_file, other.envelope_file, manifest_key, 1, boot_key);
    FAIL("another image's manifest was accepted");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
    CHECK(std::string(e.what()).starts_with("manifest " + other.envelope_file.string() + " does not fit: "));
  }
  CHECK(exit_code_of([&] { check_firmware(release.image_file, release.envelope_file, boot_only, 1, boot_key); }) ==
        ExitCode::verification_failed);  // the envelope is signed by the manifest key, not the boot key
  auto tampered = read_file(release.image_file);
  tampered[0x300] ^= 1;
  write_file_atomic(dir.file("tampered.bin"), tampered);
  CHECK(exit_code_of([&] { check_firmware(dir.file("tampered.bin"), release.envelope_file, manifest_key, 1, std::nullopt); }) ==
        ExitCode::verification_failed);
  CHECK(exit_code_of([&] { check_firmware(release.image_file, dir.file("absent.suit"), manifest_key, 1, boot_key); }) ==
        ExitCode::not_found);
  CHECK(exit_code_of([&] { file_sha256(dir.file("absent.bin")); }) == ExitCode::not_found);
}

TEST_CASE("firmware: with several manifest keys, the threshold counts the distinct signers") {
  test::TempDir dir;
  test::TestReleaseMaker releases(dir.path(), true);
  auto release = releases.make("fw", 3);  // signed by the manifest key only
  const std::vector<Bytes> both = {releases.boot_key().public_key_der(), releases.manifest_key().public_key_der()};
  auto fw = check_firmware(release.image_file, release.envelope_file, both, 1, std::nullopt);  // 1 of 2
  CHECK(fw.manifest_keys == both);
  CHECK(fw.sequence == 3);
  CHECK(exit_code_of([&] { check_firmware(release.image_file, release.envelope_file, both, 2, std::nullopt); }) ==
        ExitCode::verification_failed);  // 2 of 2: one signature is not enough
}
