// Tests for manifests/cose: COSE_Sign1 with detached payload for ES256, ES384 and EdDSA.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "manifests/cose.hpp"
#include "signing/key_ref.hpp"
#include "tests/manifests/test_keys.hpp"

using namespace kiln;

TEST_CASE("cose: Sig_structure is [\"Signature1\", protected, h'', payload]") {
  CHECK(to_hex(cose::sig_structure(from_hex("a10126"), from_hex("0102"))) ==
        "846a5369676e61747572653143a10126404201"
        "02");
}

TEST_CASE("cose: sign and verify a detached payload with every supported key type") {
  test::TempDir dir;
  const Bytes payload = from_hex("822f5820" + std::string(64, '1'));
  for (auto [type, alg] :
       {std::pair{KeyType::ecdsa_p256, cose::alg_es256}, std::pair{KeyType::ecdsa_p384, cose::alg_es384},
        std::pair{KeyType::ed25519, cose::alg_eddsa}}) {
    CAPTURE(key_type_name(type));
    auto signer = test::make_signer(dir, type, std::string(key_type_name(type)) + ".pem");
    cose::Sign1 sign1 = cose::sign_detached(*signer, payload);
    CHECK(cose::algorithm(sign1) == alg);
    CHECK_FALSE(sign1.payload.has_value());
    CHECK(sign1.signature.size() == (type == KeyType::ecdsa_p384 ? 96u : 64u));
    CHECK(cose::verify_detached(sign1, signer->public_key_der(), payload));
    Bytes other = payload;
    other.back() ^= 1;
    CHECK_FALSE(cose::verify_detached(sign1, signer->public_key_der(), other));
    // Through the CBOR form and back.
    cose::Sign1 reparsed = cose::parse_sign1(cbor::decode(cbor::encode(cose::to_value(sign1)), "cose"), "cose");
    CHECK(cose::verify_detached(reparsed, signer->public_key_der(), payload));
  }
}

TEST_CASE("cose: a signature checked against a key of another type is refused with a reason") {
  test::TempDir dir;
  auto ec = test::make_signer(dir, KeyType::ecdsa_p256, "ec.pem");
  auto ed = test::make_signer(dir, KeyType::ed25519, "ed.pem");
  cose::Sign1 sign1 = cose::sign_detached(*ec, from_hex("00"));
  CHECK_THROWS_WITH_AS(cose::verify_detached(sign1, ed->public_key_der(), from_hex("00")),
                       doctest::Contains("cannot come from a ed25519 key"), Error);
}

TEST_CASE("cose: RSA keys cannot sign SUIT manifests") {
  CHECK_THROWS_AS(cose::algorithm_for_key(KeyType::rsa_2048), Error);
}

TEST_CASE("cose: the draft's example 0 signature verifies with the draft's public key") {
  Bytes envelope = test::read_suit_vector("example0.signed.suit");
  // Offsets from the draft's example 0: the COSE_Sign1 bstr content at 47, the SUIT_Digest at 9.
  cbor::Value sign1_value = cbor::decode(ByteView(envelope).subspan(47, 74), "cose");
  cose::Sign1 sign1 = cose::parse_sign1(sign1_value, "cose");
  Bytes key = load_public_key(test::suit_vector("draft_public_key.pem"));
  CHECK(cose::verify_detached(sign1, key, ByteView(envelope).subspan(9, 36)));
  CHECK_FALSE(cose::verify_detached(sign1, key, ByteView(envelope).subspan(10, 36)));
}
