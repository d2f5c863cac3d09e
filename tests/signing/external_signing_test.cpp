// Tests for signing/external_signing: sign_vector picks the hash by digest length, presigned signatures are
// checked (DER or raw r||s, whatever its first byte), VectorRecorder hands out what must be signed, and
// sign_vector_file writes the signature binary or base64.
#include <doctest/doctest.h>

#include <filesystem>

#include "core/base64.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/external_signing.hpp"
#include "signing/file_key.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/vectors.hpp"

using namespace kiln;
using kiln::test::exit_code_of;

namespace {

std::unique_ptr<Signer> vector_signer(const std::string& name) {
  return load_file_signer(test::vector("mcuboot/" + name), std::nullopt);
}

}  // namespace

TEST_CASE("external_signing: sign_vector takes the hash a digest's length names") {
  auto p256 = vector_signer("ecdsa-p256.pem");
  for (auto hash : {HashAlg::sha256, HashAlg::sha384, HashAlg::sha512}) {
    const std::string name = std::string(hash_name(hash));
    CAPTURE(name);
    auto d = digest(hash, as_bytes("manifest"));
    auto signature = sign_vector(*p256, d);
    CHECK(verify_signature(p256->public_key_der(), d, hash, signature));
  }
  auto rsa = vector_signer("rsa-2048.pem");
  auto d384 = digest(HashAlg::sha384, as_bytes("image"));
  auto rsa_signature = sign_vector(*rsa, d384);
  CHECK(rsa_signature.size() == 256);
  CHECK(verify_signature(rsa->public_key_der(), d384, HashAlg::sha384, rsa_signature));
  CHECK_FALSE(verify_signature(rsa->public_key_der(), d384, HashAlg::sha256, rsa_signature));

  CHECK_THROWS_WITH_AS(sign_vector(*p256, Bytes(20, 1)),
                       "the input is 20 bytes: a ecdsa-p256 key signs a SHA-256, SHA-384 or SHA-512 digest (32, 48 "
                       "or 64 bytes)",
                       Error);
  CHECK(exit_code_of([&] { sign_vector(*rsa, Bytes{}); }) == ExitCode::usage);
}

TEST_CASE("external_signing: Ed25519 signs the vector itself, of any length") {
  auto ed = vector_signer("ed25519.pem");
  Bytes payload(1000, 0x42);
  auto signature = sign_vector(*ed, payload);
  CHECK(signature.size() == 64);
  CHECK(verify_signature(ed->public_key_der(), payload, HashAlg::sha256, signature));
  CHECK(sign_vector(*ed, payload) == signature);  // deterministic
}

TEST_CASE("external_signing: a presigned signature is handed out only over the input it verifies") {
  auto p256 = vector_signer("ecdsa-p256.pem");
  auto d = digest(HashAlg::sha256, as_bytes("image body"));
  auto der = p256->sign(d, HashAlg::sha256);
  auto presigned = presigned_signer(p256->public_key_der(), der, "sig.der");
  CHECK(presigned->type() == KeyType::ecdsa_p256);
  CHECK(presigned->description() == "sig.der");
  CHECK(presigned->public_key_der() == p256->public_key_der());
  CHECK(presigned->sign(d, HashAlg::sha256) == der);
  auto other = digest(HashAlg::sha256, as_bytes("another body"));
  CHECK_THROWS_WITH_AS(presigned->sign(other, HashAlg::sha256),
                       "the signature sig.der does not verify over what must be signed with the given ecdsa-p256 "
                       "public key",
                       Error);
  CHECK(exit_code_of([&] { presigned->sign(other, HashAlg::sha256); }) == ExitCode::verification_failed);
  // Garbage is a verification failure too, not an OpenSSL error escaping.
  auto garbage = presigned_signer(p256->public_key_der(), as_bytes("not a signature"), "junk");
  CHECK(exit_code_of([&] { garbage->sign(d, HashAlg::sha256); }) == ExitCode::verification_failed);
  // Another key's public half: refused.
  auto p384 = vector_signer("ecdsa-p384.pem");
  auto wrong = presigned_signer(p384->public_key_der(), der, "sig.der");
  CHECK(exit_code_of([&] { wrong->sign(d, HashAlg::sha256); }) == ExitCode::verification_failed);
}

TEST_CASE("external_signing: raw r||s is accepted as DER would be, whatever its first byte") {
  auto p256 = vector_signer("ecdsa-p256.pem");
  // One raw signature in 256 starts with 0x30, DER's SEQUENCE tag: find one (bounded; ~256 tries on average).
  bool seen_0x30 = false, seen_other = false;
  for (std::uint32_t i = 0; i < 5000 && !(seen_0x30 && seen_other); ++i) {
    Bytes message;
    put_le32(message, i);
    auto d = digest(HashAlg::sha256, message);
    auto raw = ecdsa_der_to_raw(p256->sign(d, HashAlg::sha256), 32);
    bool starts_0x30 = raw[0] == 0x30;
    if ((starts_0x30 && seen_0x30) || (!starts_0x30 && seen_other)) continue;
    (starts_0x30 ? seen_0x30 : seen_other) = true;
    const int first_byte = raw[0];
    CAPTURE(first_byte);
    auto presigned = presigned_signer(p256->public_key_der(), raw, "sig.raw");
    Bytes der;
    CHECK_NOTHROW(der = presigned->sign(d, HashAlg::sha256));
    CHECK(ecdsa_raw_to_der(raw) == der);
  }
  CHECK(seen_0x30);
  CHECK(seen_other);
}

TEST_CASE("external_signing: VectorRecorder records the input and returns a well-formed placeholder") {
  auto p384 = vector_signer("ecdsa-p384.pem");
  VectorRecorder recorder(p384->public_key_der());
  CHECK(recorder.type() == KeyType::ecdsa_p384);
  CHECK(recorder.description() == "the offline signer");
  auto d = digest(HashAlg::sha384, as_bytes("tbs"));
  auto placeholder = recorder.sign(d, HashAlg::sha384);
  CHECK(recorder.recorded() == d);
  CHECK(recorder.recorded_hash() == HashAlg::sha384);
  CHECK(ecdsa_der_to_raw(placeholder, 48).size() == 96);  // DER that parses
  CHECK_FALSE(verify_signature(p384->public_key_der(), d, HashAlg::sha384, placeholder));
  // The recorded vector, signed offline, is what a presigned signer then accepts.
  auto offline = sign_vector(*p384, recorder.recorded());
  CHECK(presigned_signer(p384->public_key_der(), offline, "sig")->sign(d, HashAlg::sha384) == offline);

  VectorRecorder ed(vector_signer("ed25519.pem")->public_key_der());
  CHECK(ed.sign(as_bytes("payload"), HashAlg::sha512) == Bytes(64, 0));
  CHECK(ed.recorded() == Bytes(as_bytes("payload").begin(), as_bytes("payload").end()));
  VectorRecorder rsa(vector_signer("rsa-2048.pem")->public_key_der());
  CHECK(rsa.sign(d, HashAlg::sha384).size() == 256);
  CHECK(exit_code_of([] { VectorRecorder bad(Bytes{0x30, 0x00}); }) == ExitCode::verification_failed);
}

TEST_CASE("external_signing: sign_vector_file writes the signature as binary or as imgtool's base64") {
  test::TempDir dir;
  auto p256 = vector_signer("ecdsa-p256.pem");
  auto d = digest(HashAlg::sha256, as_bytes("image"));
  write_file_atomic(dir.file("vector.bin"), d);
  auto binary = sign_vector_file(*p256, dir.file("vector.bin"), dir.file("sig.der"), false);
  CHECK(read_file(dir.file("sig.der")) == binary);
  CHECK(verify_signature(p256->public_key_der(), d, HashAlg::sha256, binary));
  auto encoded = sign_vector_file(*p256, dir.file("vector.bin"), dir.file("sig.b64"), true);
  CHECK(read_text_file(dir.file("sig.b64")) == to_base64(encoded));
  CHECK(verify_signature(p256->public_key_der(), d, HashAlg::sha256, encoded));
  write_file_atomic(dir.file("short.bin"), Bytes(20, 1));
  CHECK(exit_code_of([&] { sign_vector_file(*p256, dir.file("short.bin"), dir.file("none.der"), false); }) ==
        ExitCode::usage);
  CHECK_FALSE(std::filesystem::exists(dir.file("none.der")));
}
