// Tests for signing/ledger_signature: the exact messages a station key signs over its ledger, and the one
// signing rule (Ed25519 over the message, ECDSA over its SHA-256) checked by OpenSSL directly.
#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>

#include "core/files.hpp"
#include "signing/file_key.hpp"
#include "signing/ledger_signature.hpp"
#include "tests/support/crafted_keys.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;

namespace {

// What any verifier of docs/ledger-bundle.md does: OpenSSL's one-shot verify over the message, with SHA-256
// for ECDSA and no digest for Ed25519.
bool openssl_verifies(ByteView public_key_der, ByteView message, ByteView signature, bool ed25519) {
  const unsigned char* p = public_key_der.data();
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      d2i_PUBKEY(nullptr, &p, static_cast<long>(public_key_der.size())), EVP_PKEY_free);
  REQUIRE(key);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  REQUIRE(EVP_DigestVerifyInit(ctx.get(), nullptr, ed25519 ? nullptr : EVP_sha256(), nullptr, key.get()) == 1);
  return EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(), message.size()) == 1;
}

std::unique_ptr<Signer> rfc8032_test2_signer(const test::TempDir& dir) {
  write_file_atomic(dir.file("ed25519.pem"), as_bytes(test::rfc8032_test2_pem()), 0600);
  return load_file_signer(dir.file("ed25519.pem"), std::nullopt);
}

}  // namespace

TEST_CASE("ledger_signature: the head and chain messages are exactly the documented text") {
  CHECK(ledger_head_message("ledger-7", 3, "ab12") == "kiln ledger head v1\nledger-7\n3\nab12");
  CHECK(ledger_chain_message("ledger-7", {"h1", "h2", "h3"}) == "kiln ledger chain v1\nledger-7\n3\nh1\nh2\nh3");
  CHECK(ledger_chain_message("empty", {}) == "kiln ledger chain v1\nempty\n0");
}

TEST_CASE("ledger_signature: Ed25519 signs the message itself (RFC 8032 test 2 gives the RFC's signature)") {
  test::TempDir dir;
  auto signer = rfc8032_test2_signer(dir);
  CHECK(to_hex(sign_station_message(*signer, Bytes{0x72})) ==
        test::rfc8032_test2_signature_hex);
  const std::string head = ledger_head_message("ledger-7", 3, "ab12");
  auto message = as_bytes(head);
  Bytes signature = sign_station_message(*signer, message);
  CHECK(openssl_verifies(signer->public_key_der(), message, signature, true));
  CHECK(verify_station_message(signer->public_key_der(), message, signature));
}

TEST_CASE("ledger_signature: ECDSA signs the message's SHA-256; a tampered message or signature, or another key, is refused") {
  test::TempDir dir;
  write_file_atomic(dir.file("p256.pem"), as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
  write_file_atomic(dir.file("other.pem"), as_bytes(generate_private_key_pem(KeyType::ecdsa_p256, std::nullopt)), 0600);
  auto signer = load_file_signer(dir.file("p256.pem"), std::nullopt);
  auto other = load_file_signer(dir.file("other.pem"), std::nullopt);
  const std::string chain = ledger_chain_message("ledger-7", {"h1", "h2"});
  auto message = as_bytes(chain);
  Bytes signature = sign_station_message(*signer, message);
  CHECK(openssl_verifies(signer->public_key_der(), message, signature, false));
  CHECK(verify_station_message(signer->public_key_der(), message, signature));

  const std::string other_chain = ledger_chain_message("ledger-7", {"h1", "h3"});
  CHECK_FALSE(verify_station_message(signer->public_key_der(), as_bytes(other_chain), signature));
  Bytes flipped = signature;
  flipped[flipped.size() / 2] ^= 0x01;
  CHECK_FALSE(verify_station_message(signer->public_key_der(), message, flipped));
  CHECK_FALSE(verify_station_message(other->public_key_der(), message, signature));
  CHECK_FALSE(verify_station_message(as_bytes("not a key"), message, signature));
}
