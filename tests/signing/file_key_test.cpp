// Tests for signing/file_key: generated PKCS#8 keys (plain and encrypted) load and sign; an RFC 8032 key
// signs exactly the RFC's signature; public keys come out the same from a private PEM, a public PEM, a
// certificate and a DER file; each unreadable, encrypted, invalid or unsupported key fails with its code.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "tests/support/crafted_keys.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certificates.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

namespace {

std::string write(const test::TempDir& dir, const std::string& name, const std::string& text) {
  write_file_atomic(dir.file(name), as_bytes(text), 0600);
  return dir.file(name);
}

}  // namespace

TEST_CASE("file_key: generated keys are PKCS#8 PEM, of the asked type, and sign what verifies") {
  test::TempDir dir;
  for (auto type : {KeyType::ecdsa_p256, KeyType::ecdsa_p384, KeyType::ed25519, KeyType::rsa_2048}) {
    const std::string name = std::string(key_type_name(type));
    CAPTURE(name);
    auto pem = generate_private_key_pem(type, std::nullopt);
    CHECK(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    auto path = write(dir, name + ".pem", pem);
    auto signer = load_file_signer(path, std::nullopt);
    CHECK(signer->type() == type);
    CHECK(signer->description() == name + ".pem");
    CHECK(load_public_key_file(path, std::nullopt) == signer->public_key_der());
    HashAlg hash = type == KeyType::ecdsa_p384 ? HashAlg::sha384 : HashAlg::sha256;
    auto input = type == KeyType::ed25519 ? Bytes{1, 2, 3} : digest(hash, as_bytes("image"));
    CHECK(verify_signature(signer->public_key_der(), input, hash, signer->sign(input, hash)));
  }
  // Two generations never give the same key.
  CHECK(generate_private_key_pem(KeyType::ed25519, std::nullopt) != generate_private_key_pem(KeyType::ed25519, std::nullopt));
}

TEST_CASE("file_key: Ed25519 from RFC 8032 test 2 signs exactly the RFC's signature") {
  test::TempDir dir;
  auto path = write(dir, "rfc8032.pem", test::rfc8032_test2_pem());
  auto signer = load_file_signer(path, std::nullopt);
  CHECK(to_hex(signer->public_key_der()) == std::string("302a300506032b6570032100") + test::rfc8032_test2_public_hex);
  CHECK(to_hex(signer->sign(Bytes{0x72}, HashAlg::sha256)) ==
        test::rfc8032_test2_signature_hex);
}

TEST_CASE("file_key: a digest of the wrong length for the hash is refused, naming both") {
  test::TempDir dir;
  auto signer = load_file_signer(write(dir, "k.pem", generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)),
                                 std::nullopt);
  CHECK_THROWS_WITH_AS(signer->sign(as_bytes("abc"), HashAlg::sha256), "digest is 3 bytes, sha256 needs 32", Error);
  CHECK_THROWS_WITH_AS(signer->sign(digest(HashAlg::sha256, as_bytes("x")), HashAlg::sha384),
                       "digest is 32 bytes, sha384 needs 48", Error);
}

TEST_CASE("file_key: encrypted keys need the right passphrase (authentication errors otherwise)") {
  test::TempDir dir;
  auto pem = generate_private_key_pem(KeyType::ecdsa_p256, std::string("correct horse"));
  CHECK(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
  auto path = write(dir, "enc.pem", pem);
  CHECK(load_file_signer(path, std::string("correct horse"))->type() == KeyType::ecdsa_p256);
  CHECK(load_public_key_file(path, std::string("correct horse")).size() == 91);  // P-256 SPKI
  CHECK_THROWS_WITH_AS(load_file_signer(path, std::nullopt), (path + " is encrypted and no passphrase was given").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(load_file_signer(path, std::string("battery staple")), ("wrong passphrase for " + path).c_str(),
                       Error);
  CHECK(exit_code_of([&] { load_file_signer(path, std::nullopt); }) == ExitCode::authentication);
  CHECK(exit_code_of([&] { load_public_key_file(path, std::string("nope")); }) == ExitCode::authentication);
}

TEST_CASE("file_key: the public key is the same from a private PEM, a public PEM, a certificate and DER") {
  test::TempDir dir;
  test::TestKey key;
  auto from_private = load_public_key_file(write(dir, "key.pem", key.private_pem()), std::nullopt);
  auto from_public = load_public_key_file(write(dir, "pub.pem", key.public_pem()), std::nullopt);
  auto cert = test::issue_certificate(key, "kiln test", nullptr, key, true);
  auto from_cert = load_public_key_file(write(dir, "cert.pem", cert), std::nullopt);
  write_file_atomic(dir.file("pub.der"), from_public);
  auto from_der = load_public_key_file(dir.file("pub.der"), std::nullopt);
  CHECK(from_private == from_public);
  CHECK(from_cert == from_public);
  CHECK(from_der == from_public);
  CHECK(public_key_type(from_public) == KeyType::ecdsa_p256);
}

TEST_CASE("file_key: files that hold no usable key fail with their code and the file's name") {
  test::TempDir dir;
  auto junk = write(dir, "junk.pem", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n");
  CHECK_THROWS_WITH_AS(load_public_key_file(junk, std::nullopt), (junk + " holds no key or certificate kiln can read").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(load_file_signer(junk, std::nullopt), (junk + " does not hold a private key in PEM form").c_str(),
                       Error);
  CHECK(exit_code_of([&] { load_file_signer(junk, std::nullopt); }) == ExitCode::failure);
  auto pub = write(dir, "pub.pem", test::TestKey().public_pem());
  CHECK(exit_code_of([&] { load_file_signer(pub, std::nullopt); }) == ExitCode::failure);  // public only
  CHECK(exit_code_of([&] { load_file_signer(dir.file("absent.pem"), std::nullopt); }) == ExitCode::not_found);

  // Crafted keys: a scalar of 0, the order n, and halves that do not match are verification failures.
  auto zero = write(dir, "zero.pem", test::sec1_pem(Bytes(32, 0), std::nullopt));
  auto order = write(dir, "n.pem", test::sec1_pem(test::p256_order_plus(0), std::nullopt));
  auto mismatched = write(dir, "mismatch.pem", test::mismatched_pem(test::TestKey().private_pem(),
                                                                    test::TestKey().private_pem()));
  for (const auto& path : {zero, order, mismatched}) {
    CAPTURE(path);
    CHECK(exit_code_of([&] { load_file_signer(path, std::nullopt); }) == ExitCode::verification_failed);
    CHECK(exit_code_of([&] { load_public_key_file(path, std::nullopt); }) == ExitCode::verification_failed);
  }
  auto infinity = write(dir, "inf.pem", test::pem_of("PUBLIC KEY", test::infinity_spki()));
  CHECK_THROWS_WITH_AS(
      load_public_key_file(infinity, std::nullopt),
      (infinity + ": the public key is invalid (the point at infinity, or a point not in the curve's group)").c_str(),
      Error);
}

TEST_CASE("file_key: an X25519 key is read by load_any_public_key_file but is no signing key") {
  test::TempDir dir;
  kiln::ossl::Ptr<EVP_PKEY> x25519(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  REQUIRE(x25519);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, x25519.get(), nullptr, nullptr, 0, nullptr, nullptr);
  auto path = write(dir, "x25519.pem", test::bio_text(bio));
  BIO_free(bio);
  CHECK(load_private_key_file(path, std::nullopt));
  auto spki = load_any_public_key_file(path, std::nullopt);
  CHECK(spki.size() == 44);
  CHECK(to_hex(ByteView(spki).first(12)) == "302a300506032b656e032100");  // id-X25519
  CHECK_THROWS_WITH_AS(load_public_key_file(path, std::nullopt), (path + ": unsupported public key algorithm").c_str(),
                       Error);
  CHECK(exit_code_of([&] { load_file_signer(path, std::nullopt); }) == ExitCode::failure);
}
