// Tests for signing/message_signature: one call signs a message for every key type (ECDSA and RSA over its
// digest, Ed25519 over the message itself), and verify_message accepts exactly what it made.
#include <doctest/doctest.h>

#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/message_signature.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

TEST_CASE("message_signature: every key type signs a message that verifies, and nothing else does") {
  test::TempDir dir;
  auto message = as_bytes("kiln ledger head v1\nid\n3\nabc");
  for (auto type : {KeyType::ecdsa_p256, KeyType::ecdsa_p384, KeyType::ed25519, KeyType::rsa_2048}) {
    const std::string name(key_type_name(type));
    CAPTURE(name);
    auto path = dir.file(name + ".pem");
    write_file_atomic(path, as_bytes(generate_private_key_pem(type, std::nullopt)), 0600);
    auto signer = load_file_signer(path, std::nullopt);
    auto hash = type == KeyType::ecdsa_p384 ? HashAlg::sha384 : HashAlg::sha256;
    Bytes signature = sign_message(*signer, message, hash);
    CHECK(verify_message(signer->public_key_der(), message, hash, signature));
    // The convention: the digest for ECDSA and RSA, the message itself for Ed25519.
    Bytes input = type == KeyType::ed25519 ? Bytes(message.begin(), message.end()) : digest(hash, message);
    CHECK(verify_signature(signer->public_key_der(), input, hash, signature));
    CHECK_FALSE(verify_message(signer->public_key_der(), as_bytes("another message"), hash, signature));
    Bytes flipped = signature;
    flipped[flipped.size() / 2] ^= 0x01;
    CHECK_FALSE(verify_message(signer->public_key_der(), message, hash, flipped));
  }
}

TEST_CASE("message_signature: a key that cannot verify is false, not an exception") {
  CHECK_FALSE(verify_message(as_bytes("not a key"), as_bytes("m"), HashAlg::sha256, as_bytes("sig")));
}
