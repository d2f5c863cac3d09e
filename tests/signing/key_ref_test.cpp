// Tests for signing/key_ref: a KEYREF is a pkcs11: URI or else a PEM file path; each goes to its loader
// and the key it yields really signs (file keys; tokens are covered by pkcs11_test with SoftHSM).
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/key_ref.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

TEST_CASE("key_ref: only the pkcs11: scheme names a token") {
  CHECK(is_pkcs11_uri("pkcs11:token=T;object=k"));
  CHECK(is_pkcs11_uri("pkcs11:"));
  CHECK_FALSE(is_pkcs11_uri("PKCS11:token=T"));  // RFC 7512 schemes are matched as kiln writes them
  CHECK_FALSE(is_pkcs11_uri("keys/pkcs11:token=T"));
  CHECK_FALSE(is_pkcs11_uri("pkcs11"));
  CHECK_FALSE(is_pkcs11_uri("ecdsa-p256.pem"));
  CHECK_FALSE(is_pkcs11_uri(""));
}

TEST_CASE("key_ref: a PEM path opens a file signer whose signatures verify with load_public_key") {
  const std::string path = test::vector("mcuboot/ecdsa-p256.pem");
  auto signer = open_signer(path);
  REQUIRE(signer);
  CHECK(signer->type() == KeyType::ecdsa_p256);
  CHECK(signer->description() == "ecdsa-p256.pem");
  auto spki = load_public_key(path);
  CHECK(spki == signer->public_key_der());
  auto hash = digest(HashAlg::sha256, as_bytes("kiln key_ref"));
  auto signature = signer->sign(hash, HashAlg::sha256);
  CHECK(verify_signature(spki, hash, HashAlg::sha256, signature));
  hash[0] ^= 1;
  CHECK_FALSE(verify_signature(spki, hash, HashAlg::sha256, signature));
}

TEST_CASE("key_ref: the passphrase in KeyOptions opens an encrypted PEM, and its absence is an authentication error") {
  test::TempDir dir;
  const std::string path = dir.file("enc.pem");
  write_file_atomic(path, as_bytes(generate_private_key_pem(KeyType::ed25519, std::string("s3cret"))));
  KeyOptions options;
  options.passphrase = "s3cret";
  auto signer = open_signer(path, options);
  CHECK(signer->type() == KeyType::ed25519);
  CHECK(load_public_key(path, options) == signer->public_key_der());
  CHECK(exit_code_of([&] { open_signer(path); }) == ExitCode::authentication);
  options.passphrase = "wrong";
  CHECK(exit_code_of([&] { open_signer(path, options); }) == ExitCode::authentication);
  CHECK(exit_code_of([&] { load_public_key(path, options); }) == ExitCode::authentication);
}

TEST_CASE("key_ref: a missing file and a pkcs11: URI without a module fail with their documented codes") {
  test::TempDir dir;
  CHECK(exit_code_of([&] { open_signer(dir.file("absent.pem")); }) == ExitCode::not_found);
  CHECK(exit_code_of([&] { load_public_key(dir.file("absent.pem")); }) == ExitCode::not_found);
  // The URI is not mistaken for a file name: it goes to the token loader, which needs a module.
  CHECK_THROWS_WITH_AS(open_signer("pkcs11:token=T;object=k"), "no PKCS#11 module to open pkcs11:token=T;object=k",
                       Error);
  CHECK_THROWS_WITH_AS(load_public_key("pkcs11:token=T;object=k"),
                       "no PKCS#11 module to open pkcs11:token=T;object=k", Error);
  KeyOptions options;
  options.pkcs11_module = dir.file("absent-module.so");
  CHECK(exit_code_of([&] { open_signer("pkcs11:token=T;object=k", options); }) == ExitCode::failure);
}

TEST_CASE("key_ref: output names a PEM key by its path and a token key by its URI without the PIN") {
  CHECK(keyref_display_name("keys/release.pem") == "keys/release.pem");
  auto shown = keyref_display_name("pkcs11:token=Factory;object=release?pin-value=123456");
  CHECK(shown.find("123456") == std::string::npos);
  CHECK(shown.find("Factory") != std::string::npos);
  CHECK(shown.find("release") != std::string::npos);
}
