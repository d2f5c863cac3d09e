// Tests for signing/crypto: key type and hash names, SHA-2 against FIPS 180 "abc" vectors, signature
// verification against RFC 8032 and against signatures OpenSSL makes here with other paddings, public
// key checks with their exit codes, and the ECDSA DER <-> r||s conversions.
#include <doctest/doctest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include <algorithm>

#include "core/error.hpp"
#include "signing/file_key.hpp"
#include "signing/key_export.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"
#include "tests/support/crafted_keys.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

namespace {

// An RSA signature over `digest_bytes` made by OpenSSL directly, with the padding and salt given.
Bytes rsa_sign(EVP_PKEY* key, ByteView digest_bytes, int padding, int salt_length) {
  ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(key, nullptr));
  REQUIRE(EVP_PKEY_sign_init(ctx.get()) == 1);
  REQUIRE(EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) == 1);
  REQUIRE(EVP_PKEY_CTX_set_rsa_padding(ctx.get(), padding) == 1);
  if (padding == RSA_PKCS1_PSS_PADDING) REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), salt_length) == 1);
  std::size_t len = 0;
  REQUIRE(EVP_PKEY_sign(ctx.get(), nullptr, &len, digest_bytes.data(), digest_bytes.size()) == 1);
  Bytes out(len);
  REQUIRE(EVP_PKEY_sign(ctx.get(), out.data(), &len, digest_bytes.data(), digest_bytes.size()) == 1);
  out.resize(len);
  return out;
}

}  // namespace

TEST_CASE("crypto: key type names round-trip and an unknown one is a usage error listing the valid ones") {
  for (auto type : {KeyType::ecdsa_p256, KeyType::ecdsa_p384, KeyType::ed25519, KeyType::rsa_2048, KeyType::rsa_3072})
    CHECK(parse_key_type(key_type_name(type)) == type);
  CHECK(key_type_name(KeyType::ecdsa_p384) == "ecdsa-p384");
  CHECK(key_type_name(KeyType::rsa_3072) == "rsa-3072");
  CHECK(exit_code_of([] { parse_key_type("ECDSA-P256"); }) == ExitCode::usage);
  try {
    parse_key_type("rsa-4096");
    FAIL("rsa-4096 was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "unknown key type 'rsa-4096'");
    CHECK(e.hint() == "use one of ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072");
  }
  CHECK(is_ecdsa(KeyType::ecdsa_p384));
  CHECK_FALSE(is_ecdsa(KeyType::ed25519));
  CHECK(is_rsa(KeyType::rsa_3072));
  CHECK_FALSE(is_rsa(KeyType::ecdsa_p256));
}

TEST_CASE("crypto: SHA-2 digests match FIPS 180's \"abc\" vectors, one-shot and streamed") {
  CHECK(hash_name(HashAlg::sha384) == "sha384");
  CHECK(hash_size(HashAlg::sha256) == 32);
  CHECK(hash_size(HashAlg::sha384) == 48);
  CHECK(hash_size(HashAlg::sha512) == 64);
  CHECK(to_hex(digest(HashAlg::sha256, as_bytes("abc"))) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(to_hex(digest(HashAlg::sha384, as_bytes("abc"))) ==
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7");
  CHECK(to_hex(digest(HashAlg::sha512, as_bytes("abc"))) ==
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
  Hasher streamed(HashAlg::sha256);
  CHECK(streamed.alg() == HashAlg::sha256);
  streamed.update(as_bytes("a"));
  streamed.update(ByteView{});
  streamed.update(as_bytes("bc"));
  CHECK(streamed.finish() == digest(HashAlg::sha256, as_bytes("abc")));
  CHECK(to_hex(digest(HashAlg::sha256, ByteView{})) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("crypto: Ed25519 verification accepts RFC 8032 test 2 and nothing altered") {
  auto spki = from_hex("302a300506032b65700321003d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c");
  auto signature = from_hex(
      "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00");
  Bytes message{0x72};
  CHECK(public_key_type(spki) == KeyType::ed25519);
  CHECK(verify_signature(spki, message, HashAlg::sha256, signature));
  CHECK(verify_signature(spki, message, HashAlg::sha512, signature));  // pure EdDSA: the hash is ignored
  Bytes other{0x73};
  CHECK_FALSE(verify_signature(spki, other, HashAlg::sha256, signature));
  auto flipped = signature;
  flipped[63] ^= 0x01;
  CHECK_FALSE(verify_signature(spki, message, HashAlg::sha256, flipped));
  CHECK_FALSE(verify_signature(spki, message, HashAlg::sha256, ByteView(signature).first(63)));
}

TEST_CASE("crypto: RSA verification takes PSS with the digest's salt length only, as MCUboot") {
  auto key = load_private_key_file(test::vector("mcuboot/rsa-2048.pem"), std::nullopt);
  auto spki = spki_der(key.get());
  auto hash = digest(HashAlg::sha256, as_bytes("firmware"));
  CHECK(verify_signature(spki, hash, HashAlg::sha256, rsa_sign(key.get(), hash, RSA_PKCS1_PSS_PADDING, 32)));
  CHECK_FALSE(verify_signature(spki, hash, HashAlg::sha256, rsa_sign(key.get(), hash, RSA_PKCS1_PSS_PADDING, 20)));
  CHECK_FALSE(verify_signature(spki, hash, HashAlg::sha256, rsa_sign(key.get(), hash, RSA_PKCS1_PADDING, 0)));
  // A verify failure leaves nothing on the OpenSSL queue for the next caller.
  CHECK(ERR_peek_error() == 0);
}

TEST_CASE("crypto: ECDSA signatures from the file signer verify; another digest or key does not") {
  auto p256 = load_file_signer(test::vector("mcuboot/ecdsa-p256.pem"), std::nullopt);
  auto p384 = load_file_signer(test::vector("mcuboot/ecdsa-p384.pem"), std::nullopt);
  auto hash = digest(HashAlg::sha256, as_bytes("firmware"));
  auto signature = p256->sign(hash, HashAlg::sha256);
  CHECK(verify_signature(p256->public_key_der(), hash, HashAlg::sha256, signature));
  CHECK_FALSE(verify_signature(p384->public_key_der(), hash, HashAlg::sha256, signature));
  auto other = digest(HashAlg::sha256, as_bytes("firmwarf"));
  CHECK_FALSE(verify_signature(p256->public_key_der(), other, HashAlg::sha256, signature));
  // The signature anyone can make for the point at infinity is refused before any verification.
  CHECK(exit_code_of([&] {
          verify_signature(test::infinity_spki(), hash, HashAlg::sha256, test::forge_ecdsa_for_infinity(hash));
        }) == ExitCode::verification_failed);
}

TEST_CASE("crypto: malformed or invalid public keys are verification failures; unsupported ones are failures") {
  auto p256 = load_public_key_file(test::vector("mcuboot/ecdsa-p256.pem"), std::nullopt);
  CHECK(public_key_type(p256) == KeyType::ecdsa_p256);
  Bytes trailing = p256;
  trailing.push_back(0x00);
  CHECK(exit_code_of([&] { check_public_key(trailing); }) == ExitCode::verification_failed);
  CHECK(exit_code_of([&] { check_public_key(ByteView(p256).first(p256.size() - 1)); }) ==
        ExitCode::verification_failed);
  CHECK(exit_code_of([] { check_public_key(test::off_curve_spki()); }) == ExitCode::verification_failed);
  CHECK_THROWS_WITH_AS(check_public_key(test::infinity_spki()),
                       "the public key is invalid (the point at infinity, or a point not in the curve's group)", Error);

  ossl::Ptr<EVP_PKEY> k1(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "secp256k1"));
  REQUIRE(k1);
  CHECK_THROWS_WITH_AS(public_key_type(spki_der(k1.get())), "EC curve secp256k1 is not supported", Error);
  CHECK(exit_code_of([&] { public_key_type(spki_der(k1.get())); }) == ExitCode::failure);
  ossl::Ptr<EVP_PKEY> x25519(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  REQUIRE(x25519);
  CHECK_THROWS_WITH_AS(public_key_type(spki_der(x25519.get())), "unsupported public key algorithm", Error);
  ossl::Ptr<EVP_PKEY> rsa1024(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{1024}));
  REQUIRE(rsa1024);
  CHECK_THROWS_WITH_AS(public_key_type(spki_der(rsa1024.get())), "RSA keys of 1024 bits are not supported", Error);
}

TEST_CASE("crypto: ECDSA DER and r||s convert both ways, with DER's sign byte and the curve's width") {
  // SEQUENCE { INTEGER 1, INTEGER 0x80 }: 0x80 needs a leading zero in DER.
  auto der = from_hex("30070201010202" "0080");
  auto raw = ecdsa_der_to_raw(der, 32);
  REQUIRE(raw.size() == 64);
  CHECK(raw[31] == 0x01);
  CHECK(raw[63] == 0x80);
  CHECK(std::all_of(raw.begin(), raw.begin() + 31, [](std::uint8_t b) { return b == 0; }));
  CHECK(ecdsa_raw_to_der(raw) == der);
  // A real P-384 signature: 48-byte coordinates, and back to the very same DER.
  auto p384 = load_file_signer(test::vector("mcuboot/ecdsa-p384.pem"), std::nullopt);
  auto hash = digest(HashAlg::sha384, as_bytes("abc"));
  auto signature = p384->sign(hash, HashAlg::sha384);
  auto raw384 = ecdsa_der_to_raw(signature, 48);
  CHECK(raw384.size() == 96);
  CHECK(ecdsa_raw_to_der(raw384) == signature);
  // Errors: not DER, a coordinate wider than the curve, an odd raw length.
  CHECK_THROWS_WITH_AS(ecdsa_der_to_raw(as_bytes("nope"), 32), "malformed DER ECDSA signature", Error);
  CHECK_THROWS_WITH_AS(ecdsa_der_to_raw(signature, 32), "ECDSA signature does not fit the curve size", Error);
  CHECK_THROWS_WITH_AS(ecdsa_raw_to_der(Bytes(63, 1)), "raw ECDSA signature has odd length 63", Error);
  CHECK(exit_code_of([] { ecdsa_raw_to_der(Bytes{}); }) == ExitCode::failure);
}
