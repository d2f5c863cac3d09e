// Tests for signing/image_crypto: which keys can encrypt MCUboot images, wrapping a content key for each kind
// and opening it again with the private half, what an opener refuses, and the AES-CTR body cipher.
#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <functional>
#include <string>

#include "core/error.hpp"
#include "signing/image_crypto.hpp"
#include "signing/key_export.hpp"
#include "signing/openssl_ptr.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
using namespace kiln::mcuboot;

namespace {

ossl::Ptr<EVP_PKEY> generate(const char* type, const char* curve_or_bits = nullptr) {
  EVP_PKEY* key = nullptr;
  if (std::string(type) == "RSA")
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(std::stoul(curve_or_bits)));
  else if (curve_or_bits)
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, type, curve_or_bits);
  else
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, type);
  REQUIRE(key);
  return ossl::Ptr<EVP_PKEY>(key);
}


// The private key as a PEM file in `dir`; its path.
std::string private_pem(const test::TempDir& dir, const std::string& name, EVP_PKEY* key) {
  auto path = dir.file(name);
  std::FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f);
  REQUIRE(PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  std::fclose(f);
  return path;
}

}  // namespace

TEST_CASE("image crypto: P-256, X25519 and RSA-2048 keys encrypt; other keys are usage errors naming why") {
  auto p256 = generate("EC", "P-256");
  CHECK(encryption_key_from_spki(spki_der(p256.get()), "k").kind == EncryptionKeyKind::ecies_p256);
  CHECK(encryption_key_from_spki(spki_der(generate("X25519").get()), "k").kind == EncryptionKeyKind::ecies_x25519);
  auto rsa = generate("RSA", "2048");
  CHECK(encryption_key_from_spki(spki_der(rsa.get()), "k").kind == EncryptionKeyKind::rsa_oaep_2048);
  CHECK(encryption_key_kind_name(EncryptionKeyKind::ecies_x25519) == "ECIES-X25519");

  auto refused = [](const Bytes& der, const std::string& why) {
    try {
      encryption_key_from_spki(der, "the key");
      FAIL("must be refused: " << why);
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::usage);
      CHECK_MESSAGE(std::string(e.what()).find(why) != std::string::npos, e.what());
    }
  };
  refused(spki_der(generate("ED25519").get()), "cannot encrypt MCUboot images");
  refused(spki_der(generate("EC", "P-384").get()), "MCUboot's ECIES uses P-256 only");
  refused(spki_der(generate("RSA", "1024").get()), "1024-bit RSA key");
  CHECK(test::exit_code_of([] { encryption_key_from_spki(Bytes{0x30, 0x03, 1, 2, 3}, "junk"); }) == ExitCode::verification_failed);

  CHECK(is_encryption_tlv(tlv::enc_rsa2048));
  CHECK(is_encryption_tlv(tlv::enc_x25519_sha512));
  CHECK_FALSE(is_encryption_tlv(0x10));
  CHECK_FALSE(is_encryption_tlv(0x35));
}

TEST_CASE("image crypto: a content key wrapped for each kind opens with the private half, and only with it") {
  test::TempDir dir;
  struct Kind {
    const char* name;
    ossl::Ptr<EVP_PKEY> key;
    std::uint16_t tlv;
    HmacSha hmac;
  };
  Kind kinds[] = {{"p256", generate("EC", "P-256"), tlv::enc_ec256, HmacSha::sha256},
                  {"x25519", generate("X25519"), tlv::enc_x25519, HmacSha::sha256},
                  {"x25519-512", generate("X25519"), tlv::enc_x25519_sha512, HmacSha::sha512},
                  {"rsa", generate("RSA", "2048"), tlv::enc_rsa2048, HmacSha::sha256}};
  for (auto& k : kinds) {
    CAPTURE(k.name);
    auto public_key = encryption_key_from_spki(spki_der(k.key.get()), k.name);
    auto opener = load_content_key_opener_file(private_pem(dir, std::string(k.name) + ".pem", k.key.get()), k.name);
    CHECK(opener->kind() == public_key.kind);
    CHECK(opener->public_key_der() == public_key.public_key_der);
    CHECK(opener->description() == k.name);
    for (std::size_t size : {std::size_t{16}, std::size_t{32}}) {
      auto content = random_bytes(size);
      auto wrapped = wrap_content_key(public_key, content, k.hmac);
      CHECK(wrapped.first == k.tlv);
      CHECK(opener->open(wrapped.first, wrapped.second, size) == content);
      // A different wrap each time (random ephemeral key, OAEP's random padding).
      CHECK(wrap_content_key(public_key, content, k.hmac).second != wrapped.second);
      // A flipped byte in the wrapped key, or the wrong key size, is verification_failed.
      auto tampered = wrapped.second;
      tampered.back() ^= 1;
      CHECK(test::exit_code_of([&] { opener->open(wrapped.first, tampered, size); }) == ExitCode::verification_failed);
      if (k.tlv != tlv::enc_rsa2048) {
        CHECK(test::exit_code_of([&] { opener->open(wrapped.first, wrapped.second, size == 16 ? 32 : 16); }) ==
              ExitCode::verification_failed);
        auto truncated = wrapped.second;
        truncated.pop_back();
        CHECK(test::exit_code_of([&] { opener->open(wrapped.first, truncated, size); }) == ExitCode::verification_failed);
      }
    }
  }
  // Another key of the same kind does not open it; a TLV for another kind or an unknown TLV is refused.
  auto p256 = encryption_key_from_spki(spki_der(kinds[0].key.get()), "p256");
  auto wrapped = wrap_content_key(p256, random_bytes(16), HmacSha::sha256);
  auto stranger = load_content_key_opener_file(private_pem(dir, "other.pem", generate("EC", "P-256").get()), "other");
  try {
    stranger->open(wrapped.first, wrapped.second, 16);
    FAIL("another key must not open it");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::verification_failed);
    CHECK(std::string(e.what()).find("other does not open this image") != std::string::npos);
  }
  auto x25519 = load_content_key_opener_file(private_pem(dir, "x.pem", kinds[1].key.get()), "x");
  CHECK_THROWS_WITH_AS(x25519->open(wrapped.first, wrapped.second, 16), doctest::Contains("wrapped for an ECIES-P256 key"),
                       Error);
  CHECK_THROWS_WITH_AS(x25519->open(0x31, wrapped.second, 16), doctest::Contains("which kiln cannot open"), Error);
  // HMAC-SHA512 is X25519's only.
  CHECK(test::exit_code_of([&] { wrap_content_key(p256, random_bytes(16), HmacSha::sha512); }) == ExitCode::usage);
}

TEST_CASE("image crypto: AES-CTR from a zero counter, streaming, is its own inverse") {
  // AES-128 with the zero key on the zero block: the FIPS-197 known answer, the first keystream block.
  Bytes zero_key(16, 0), zeros(16, 0), out(16);
  AesCtr(zero_key).apply(zeros, out.data());
  CHECK(to_hex(out) == "66e94bd4ef8a2c3b884cfa59ca342b2e");

  auto key = random_bytes(32);
  auto plain = random_bytes(1000);
  Bytes once(plain.size());
  AesCtr(key).apply(plain, once.data());
  CHECK(once != plain);
  // The same stream in uneven pieces (not block-aligned) gives the same bytes.
  Bytes pieces(plain.size());
  AesCtr streaming(key);
  std::size_t at = 0;
  for (std::size_t step : {std::size_t{1}, std::size_t{15}, std::size_t{17}, std::size_t{300}, std::size_t{667}}) {
    streaming.apply(ByteView(plain).subspan(at, step), pieces.data() + at);
    at += step;
  }
  CHECK(at == plain.size());
  CHECK(pieces == once);
  // In place, and back again.
  AesCtr(key).apply(once, once.data());
  CHECK(once == plain);
  CHECK(random_bytes(32) != random_bytes(32));
  CHECK(random_bytes(0).empty());
}
