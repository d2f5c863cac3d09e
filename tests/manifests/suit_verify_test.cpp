// Tests for manifests/suit_verify: each check refuses with exit code 3 and a reason.
#include <doctest/doctest.h>

#include "core/error.hpp"
#include "manifests/cose.hpp"
#include "manifests/suit_create.hpp"
#include "manifests/suit_verify.hpp"
#include "signing/key_ref.hpp"
#include "tests/manifests/test_keys.hpp"
#include "tests/support/crafted_keys.hpp"

using namespace kiln;

namespace {

suit::VerifyOptions with_draft_key() {
  suit::VerifyOptions options;
  options.keys.push_back({"draft_public_key.pem", load_public_key(test::suit_vector("draft_public_key.pem"))});
  return options;
}

std::string verify_error(const Bytes& input, const suit::VerifyOptions& options) {
  try {
    suit::verify_envelope(input, options);
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("verify: every signed draft envelope verifies with the draft's key, example 2 full and severed") {
  for (const char* name :
       {"example0.signed.suit", "example1.signed.suit", "example2.signed.suit", "example2.severed-signed.suit",
        "example3.signed.suit", "example4.signed.suit", "example5.signed.suit"}) {
    CAPTURE(name);
    auto report = suit::verify_envelope(test::read_suit_vector(name), with_draft_key());
    REQUIRE(report.signatures.size() == 1);
    CHECK(report.signatures[0].algorithm == "ES256");
    CHECK(report.signatures[0].key == "draft_public_key.pem");
  }
  auto full = suit::verify_envelope(test::read_suit_vector("example2.signed.suit"), with_draft_key());
  CHECK(full.severable_checked == std::vector<std::string>{"install", "text"});
  auto severed = suit::verify_envelope(test::read_suit_vector("example2.severed-signed.suit"), with_draft_key());
  CHECK(severed.severed == std::vector<std::string>{"install", "text"});
}

TEST_CASE("verify: unsigned envelopes need allow_unsigned, and their digests are still checked") {
  for (const char* name : {"example0.unsigned.suit", "example2.severed.suit", "example5.unsigned.suit"}) {
    CAPTURE(name);
    Bytes input = test::read_suit_vector(name);
    CHECK(verify_error(input, with_draft_key()).find("not signed") != std::string::npos);
    suit::VerifyOptions options;
    options.allow_unsigned = true;
    CHECK_NOTHROW(suit::verify_envelope(input, options));
  }
}

TEST_CASE("verify: a different key, a changed manifest, a changed severable element are refused") {
  test::TempDir dir;
  auto other = test::make_signer(dir, KeyType::ecdsa_p256, "other.pem");
  suit::VerifyOptions wrong_key;
  wrong_key.keys.push_back({"other.pem", other->public_key_der()});
  Bytes ex2 = test::read_suit_vector("example2.signed.suit");
  CHECK(verify_error(ex2, wrong_key).find("no signature in the envelope verifies with key other.pem") !=
        std::string::npos);

  // The reference-uri "https://git.io/JJYoj" lives inside the manifest: change one letter.
  Bytes changed = ex2;
  auto at = std::search(changed.begin(), changed.end(), std::begin("JJYoj"), std::end("JJYoj") - 1);
  REQUIRE(at != changed.end());
  *at = 'K';
  CHECK(verify_error(changed, with_draft_key()).find("manifest digest does not match") != std::string::npos);

  // The URI inside the severable install sequence in the envelope.
  Bytes install = ex2;
  const std::string uri = "very/long/path";
  auto in_install = std::search(install.begin(), install.end(), uri.begin(), uri.end());
  REQUIRE(in_install != install.end());
  *in_install = 'V';
  CHECK(verify_error(install, with_draft_key()).find("severable install does not match its digest") !=
        std::string::npos);

  Bytes garbage = ex2;
  garbage.resize(100);
  CHECK(verify_error(garbage, with_draft_key()).find("not a valid SUIT envelope") != std::string::npos);
}

TEST_CASE("verify: the sequence floor refuses rollbacks") {
  Bytes ex2 = test::read_suit_vector("example2.signed.suit");
  auto options = with_draft_key();
  options.min_sequence = 2;
  CHECK(suit::verify_envelope(ex2, options).sequence_number == 2);
  options.min_sequence = 3;
  CHECK(verify_error(ex2, options).find("manifest-sequence-number 2 is below the minimum 3") != std::string::npos);
}

TEST_CASE("verify: images must match a declared digest and size") {
  test::TempDir dir;
  write_file_atomic(dir.file("app.bin"), as_bytes("firmware image v1"));
  write_file_atomic(dir.file("other.bin"), as_bytes("firmware image v2"));
  auto signer = test::make_signer(dir, KeyType::ed25519, "ed.pem");
  suit::CreateOptions create;
  create.components.push_back({dir.file("app.bin"), "https://updates.example.com/app.bin"});
  create.vendor_id = suit::vendor_id_from_domain("example.com");
  create.sequence_number = 7;
  suit::Envelope envelope = suit::create_envelope(suit::describe(create), {}, {signer.get()});
  Bytes encoded = suit::encode_envelope(envelope);

  suit::VerifyOptions options;
  options.keys.push_back({"ed.pem", signer->public_key_der()});
  options.images.push_back(dir.file("app.bin"));
  auto report = suit::verify_envelope(encoded, options);
  REQUIRE(report.images.size() == 1);
  CHECK(report.images[0].size == 17);
  CHECK(report.signatures[0].algorithm == "EdDSA");

  options.images = {dir.file("other.bin")};
  CHECK(verify_error(encoded, options).find("other.bin (sha256") != std::string::npos);

  // Same digest, wrong declared size.
  auto description = suit::describe(create);
  description["components"][0].erase("file");
  description["components"][0]["install-digest"] = {
      {"algorithm-id", "sha256"}, {"digest-bytes", to_hex(digest(HashAlg::sha256, as_bytes("firmware image v1")))}};
  description["components"][0]["install-size"] = 99;
  Bytes wrong_size = suit::encode_envelope(suit::create_envelope(description, {}, {signer.get()}));
  options.images = {dir.file("app.bin")};
  CHECK(verify_error(wrong_size, options).find("has the declared digest but 17 bytes, the manifest says 99") !=
        std::string::npos);
}

namespace {

// example0 signed by "the key" at infinity: an ES256 signature anyone can make (see crafted_keys.hpp).
Bytes envelope_forged_for_infinity(bool attach_payload) {
  auto envelope = suit::parse_envelope(test::read_suit_vector("example0.unsigned.suit"));
  auto wrapper = suit::authentication(envelope);
  cose::Sign1 sign1;
  sign1.protected_header = cbor::encode(
      cbor::Value::map({{cbor::Value::integer(cose::header_alg), cbor::Value::integer(cose::alg_es256)}}));
  Bytes to_be_signed = cose::sig_structure(sign1.protected_header, wrapper.digest_encoded);
  sign1.signature = ecdsa_der_to_raw(test::forge_ecdsa_for_infinity(digest(HashAlg::sha256, to_be_signed)), 32);
  if (attach_payload) sign1.payload = wrapper.digest_encoded;
  wrapper.authentication_blocks.push_back(cose::to_value(sign1));
  suit::set_authentication(envelope, wrapper);
  return suit::encode_envelope(envelope);
}

}  // namespace

TEST_CASE("verify: a trusted key at infinity or off the curve is refused by name, not trusted") {
  Bytes forged = envelope_forged_for_infinity(false);
  for (const auto& [name, spki] : {std::pair{"inf.pem", test::infinity_spki()}, {"off.pem", test::off_curve_spki()}}) {
    CAPTURE(name);
    suit::VerifyOptions options;
    options.keys.push_back({name, spki});
    auto error = verify_error(forged, options);
    CHECK(error.find(std::string("key ") + name + " cannot be trusted") != std::string::npos);
    CHECK(error.find("invalid") != std::string::npos);
  }
  // The forged signature itself is what a verifier without the key check accepts.
  auto wrapper = suit::authentication(suit::parse_envelope(forged));
  auto sign1 = cose::parse_sign1(wrapper.authentication_blocks.at(0), "forged");
  CHECK_THROWS_AS(cose::verify_detached(sign1, test::infinity_spki(), wrapper.digest_encoded), Error);
}

TEST_CASE("verify: a COSE_Sign1 with an attached payload is refused (SUIT signatures are detached)") {
  test::TempDir dir;
  auto signer = test::make_signer(dir, KeyType::ecdsa_p256, "k.pem");
  auto envelope = suit::parse_envelope(test::read_suit_vector("example0.unsigned.suit"));
  suit::add_signature(envelope, *signer);
  // Attach the very payload the signature covers: still not what SUIT allows.
  auto wrapper = suit::authentication(envelope);
  auto sign1 = cose::parse_sign1(wrapper.authentication_blocks.at(0), "signature");
  sign1.payload = wrapper.digest_encoded;
  wrapper.authentication_blocks.at(0) = cose::to_value(sign1);
  suit::set_authentication(envelope, wrapper);
  Bytes attached = suit::encode_envelope(envelope);

  suit::VerifyOptions options;
  options.keys.push_back({"k.pem", signer->public_key_der()});
  auto error = verify_error(attached, options);
  CHECK(error.find("attached payload") != std::string::npos);
  CHECK_THROWS_WITH_AS(suit::authentication(suit::parse_envelope(attached)), doctest::Contains("attached payload"),
                       Error);
  CHECK_THROWS_WITH_AS(cose::verify_detached(sign1, signer->public_key_der(), wrapper.digest_encoded),
                       doctest::Contains("attached payload"), Error);
}

TEST_CASE("threshold: distinct trusted keys with a valid signature are counted, in any signing order") {
  test::TempDir dir;
  auto a = test::make_signer(dir, KeyType::ecdsa_p256, "a.pem");
  auto b = test::make_signer(dir, KeyType::ecdsa_p256, "b.pem");
  auto c = test::make_signer(dir, KeyType::ecdsa_p256, "c.pem");
  auto stranger = test::make_signer(dir, KeyType::ecdsa_p256, "stranger.pem");
  std::vector<suit::TrustedKey> keys{
      {"a", a->public_key_der()}, {"b", b->public_key_der()}, {"c", c->public_key_der()}};
  suit::Envelope base = suit::parse_envelope(test::read_suit_vector("example0.unsigned.suit"));

  suit::Envelope one = base;
  suit::add_signature(one, *a);
  auto count1 = suit::count_trusted_signatures(suit::encode_envelope(one), keys, 2);
  CHECK(count1.valid == 1);
  CHECK_FALSE(count1.met());
  CHECK(count1.describe() == "1 valid signature from the trusted keys, 2 required (threshold 2 of 3)");

  // The same key twice, and a key outside the set: still one.
  suit::Envelope same = one;
  suit::add_signature(same, *a);
  suit::add_signature(same, *stranger);
  auto count_same = suit::count_trusted_signatures(suit::encode_envelope(same), keys, 2);
  CHECK(count_same.valid == 1);
  CHECK(count_same.untrusted == 1);
  CHECK_FALSE(count_same.met());
  CHECK(count_same.describe().find("1 signature by no trusted key ignored") != std::string::npos);

  // Two distinct keys, either order, the second one added from an offline signer's signature.
  for (bool c_first : {false, true}) {
    CAPTURE(c_first);
    suit::Envelope two = base;
    if (c_first) suit::add_signature(two, *c);
    Bytes vector = suit::signature_vector(two, b->public_key_der(), true);  // the digest an HSM signs
    suit::add_external_signature(two, b->public_key_der(), b->sign(vector, HashAlg::sha256));
    if (!c_first) suit::add_signature(two, *c);
    Bytes encoded = suit::encode_envelope(two);
    auto count2 = suit::count_trusted_signatures(encoded, keys, 2);
    CHECK(count2.valid == 2);
    CHECK(count2.met());
    suit::VerifyOptions options;
    options.keys = keys;
    options.threshold = 2;
    auto report = suit::verify_envelope(encoded, options);
    REQUIRE(report.count);
    CHECK(report.count->valid == 2);
    options.threshold = 3;
    CHECK(verify_error(encoded, options).find("2 valid signatures from the trusted keys, 3 required (threshold 3 of 3)") !=
          std::string::npos);
  }

  // A key listed twice is one key: 2 of {a, a} cannot be met by a alone.
  std::vector<suit::TrustedKey> doubled{{"a", a->public_key_der()}, {"a again", a->public_key_der()}};
  auto count_doubled = suit::count_trusted_signatures(suit::encode_envelope(same), doubled, 2);
  CHECK(count_doubled.valid == 1);
  CHECK(count_doubled.trusted == 1);
  CHECK_FALSE(count_doubled.met());
}

TEST_CASE("threshold: a bad signature by a trusted key does not count") {
  test::TempDir dir;
  auto a = test::make_signer(dir, KeyType::ecdsa_p256, "a.pem");
  auto b = test::make_signer(dir, KeyType::ecdsa_p256, "b.pem");
  std::vector<suit::TrustedKey> keys{{"a", a->public_key_der()}, {"b", b->public_key_der()}};
  suit::Envelope envelope = suit::parse_envelope(test::read_suit_vector("example0.unsigned.suit"));
  suit::add_signature(envelope, *a);
  cose::Sign1 by_b = suit::add_signature(envelope, *b);
  Bytes encoded = suit::encode_envelope(envelope);
  CHECK(suit::count_trusted_signatures(encoded, keys, 2).valid == 2);
  // Flip the last byte of b's signature in the encoded envelope.
  auto at = std::search(encoded.begin(), encoded.end(), by_b.signature.begin(), by_b.signature.end());
  REQUIRE(at != encoded.end());
  at[static_cast<std::ptrdiff_t>(by_b.signature.size()) - 1] ^= 0x01;
  auto count = suit::count_trusted_signatures(encoded, keys, 2);
  CHECK(count.valid == 1);
  CHECK(count.untrusted == 1);
  CHECK_FALSE(count.met());
}

TEST_CASE("threshold: M must be between 1 and the number of keys, and the key set not empty") {
  CHECK_NOTHROW(suit::check_threshold(1, 1, "x"));
  CHECK_NOTHROW(suit::check_threshold(2, 3, "x"));
  for (const auto& bad : std::vector<std::pair<std::size_t, std::size_t>>{{0, 3}, {4, 3}, {1, 0}}) {
    CAPTURE(bad.first);
    CAPTURE(bad.second);
    try {
      suit::check_threshold(bad.first, bad.second, "x");
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::usage);
    }
  }
}
