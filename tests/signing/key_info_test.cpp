// Tests for signing/key_info: type, size, fingerprint and MCUboot key hash of the shared vector keys.
// Expected hashes are independent: the KEYHASH TLVs imgtool wrote into the signed vectors, and
// `openssl pkey -pubout -outform DER | sha256sum` for the fingerprints.
#include <doctest/doctest.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "signing/file_key.hpp"
#include "signing/key_info.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;

namespace {

Bytes vector_public_key(const std::string& name) {
  return load_public_key_file(test::vector("mcuboot/" + name), std::nullopt);
}

}  // namespace

TEST_CASE("key_info: EC and Ed25519 keys hash their SubjectPublicKeyInfo, as imgtool's KEYHASH") {
  auto p256 = vector_public_key("ecdsa-p256.pem");
  CHECK(mcuboot_public_key_bytes(p256) == p256);
  auto info = describe_public_key(p256);
  CHECK(info.type == KeyType::ecdsa_p256);
  CHECK(info.bits == 256);
  CHECK(info.fingerprint == "85c70615bb7659fd8014d385ac8b9f41fd946820037bd590d0e7cb642c463d22");
  CHECK(info.mcuboot_key_hash == info.fingerprint);  // the KEYHASH TLV of ecdsa-p256-basic.signed.bin

  auto ed = describe_public_key(vector_public_key("ed25519.pem"));
  CHECK(ed.type == KeyType::ed25519);
  CHECK(ed.bits == 256);  // OpenSSL's ED25519_BITS
  CHECK(ed.fingerprint == "009bfbaa15b2a5e1ac8b2bf101e4d24e2bbd4ae1c4c1a6fab89e5793d80974e3");
  CHECK(ed.mcuboot_key_hash == ed.fingerprint);

  auto p384 = vector_public_key("ecdsa-p384.pem");
  auto p384_info = describe_public_key(p384);
  CHECK(p384_info.type == KeyType::ecdsa_p384);
  CHECK(p384_info.bits == 384);
  CHECK(p384_info.fingerprint == "516cf2f7d33cf6bd582f79f47864fd41ede73633224203e86e9a64a66be8e12e");
  // imgtool hashes the same bytes with SHA-384 for a P-384 image: its KEYHASH TLV.
  CHECK(to_hex(digest(HashAlg::sha384, mcuboot_public_key_bytes(p384))) ==
        "2f07eb5e751df68225990b45a23012deeebac09b8bb7c6189df652fb9a7c2c41dbd6f30ad81e258e3b67f4b2c246c294");
}

TEST_CASE("key_info: an RSA key is hashed as PKCS#1 RSAPublicKey, not SubjectPublicKeyInfo") {
  auto rsa = vector_public_key("rsa-2048.pem");
  auto info = describe_public_key(rsa);
  CHECK(info.type == KeyType::rsa_2048);
  CHECK(info.bits == 2048);
  CHECK(info.fingerprint == "becac589b01e5f986f1e6ac89b9ac0d4b93eefa1fe92f83be11e5e378561603f");
  // The KEYHASH TLV of rsa-2048-basic.signed.bin (= openssl rsa -RSAPublicKey_out -outform DER | sha256sum).
  CHECK(info.mcuboot_key_hash == "128ff605b18d0af0e2f60715c2f90a71598b47faed9e14de7a587125e1bff5d5");
  auto pkcs1 = mcuboot_public_key_bytes(rsa);
  CHECK(pkcs1.size() == 270);  // SEQUENCE { INTEGER n (257 bytes), INTEGER 65537 }
  CHECK(to_hex(ByteView(pkcs1).first(4)) == "3082010a");
  CHECK(to_hex(ByteView(pkcs1).last(5)) == "0203010001");
  // The SPKI wraps the same PKCS#1 key after its algorithm identifier.
  CHECK(std::equal(pkcs1.begin(), pkcs1.end(), rsa.end() - static_cast<std::ptrdiff_t>(pkcs1.size())));
}

TEST_CASE("key_info: bytes that are no public key are refused as a verification failure") {
  auto p256 = vector_public_key("ecdsa-p256.pem");
  Bytes truncated(p256.begin(), p256.end() - 10);
  CHECK(test::exit_code_of([&] { describe_public_key(truncated); }) == ExitCode::verification_failed);
  CHECK(test::exit_code_of([&] { describe_public_key(as_bytes("not a key")); }) == ExitCode::verification_failed);
}
