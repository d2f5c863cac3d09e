// Tests for emulator/secure_element: the vendor root and attestation chain, the transport key and what the
// attestation key signs, the device key (generated or injected, P-256 only, for this board only), and the
// image-encryption key (generated, installed or injected; only kinds MCUboot decrypts with).
#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <filesystem>
#include <string>

#include "core/error.hpp"
#include "emulator/secure_element.hpp"
#include "signing/image_crypto.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"
#include "tests/support/temp_dir.hpp"
#include "transport/provisioning_group.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

ossl::Ptr<EVP_PKEY> public_key(const Bytes& spki) {
  const unsigned char* p = spki.data();
  ossl::Ptr<EVP_PKEY> key(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  REQUIRE(key);
  return key;
}

ossl::Ptr<X509> certificate(const Bytes& der) {
  const unsigned char* p = der.data();
  ossl::Ptr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  REQUIRE(cert);
  return cert;
}

// ECDSA-SHA256 over `message` by `key` verifies.
bool verifies(EVP_PKEY* key, ByteView message, const Bytes& signature) {
  ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
  return EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) == 1 &&
         EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(), message.size()) == 1;
}

Bytes pkcs8_of(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  int n = i2d_PrivateKey(key, &der);
  REQUIRE(n > 0);
  Bytes out(der, der + n);
  OPENSSL_free(der);
  return out;
}

ossl::Ptr<EVP_PKEY> generate(const char* type, const char* curve = nullptr) {
  ossl::Ptr<EVP_PKEY> key(curve ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, curve) : EVP_PKEY_Q_keygen(nullptr, nullptr, type));
  REQUIRE(key);
  return key;
}

struct Element {
  test::TempDir dir;
  emu::VendorRoot root = emu::load_or_create_vendor_root(dir.path());
  emu::SecureElement se{dir.path() / "board", "UID-7", root};
};

}  // namespace

TEST_CASE("secure element: the attestation chain ends at the vendor root; its key signs the transport key") {
  Element e;
  auto chain = e.se.attestation_chain();
  REQUIRE(chain.size() == 2);
  auto leaf = certificate(chain[0]);
  auto root = certificate(chain[1]);
  CHECK(X509_verify(leaf.get(), X509_get0_pubkey(root.get())) == 1);
  CHECK(X509_verify(root.get(), X509_get0_pubkey(root.get())) == 1);
  auto transport = e.se.transport_public_key();
  CHECK(verifies(X509_get0_pubkey(leaf.get()), transport, e.se.transport_key_signature()));
  // The identity statement binds the nonce, the UID and the transport key.
  Bytes nonce(16, 3);
  auto identity = e.se.attest_identity(nonce);
  CHECK(verifies(X509_get0_pubkey(leaf.get()),
                 attestation_statement(identity_statement_label, nonce, "UID-7", transport), identity));
  CHECK_FALSE(verifies(X509_get0_pubkey(leaf.get()),
                       attestation_statement(identity_statement_label, nonce, "UID-8", transport), identity));
  // Opened again from its directory, it is the same element; the root is created once per directory.
  emu::SecureElement again(e.dir.path() / "board", "UID-7", emu::load_or_create_vendor_root(e.dir.path()));
  CHECK(again.transport_public_key() == transport);
  CHECK(again.attestation_chain() == chain);
  // Keys are written 0600.
  for (const char* file : {"silicon.key.pem", "transport.key.pem"})
    CHECK((fs::status(e.dir.path() / "board" / file).permissions() & (fs::perms::group_all | fs::perms::others_all)) ==
          fs::perms::none);
}

TEST_CASE("secure element: a generated device key gives a CSR, signs, and is attested; none before") {
  Element e;
  CHECK_FALSE(e.se.has_device_key());
  CHECK_THROWS_WITH_AS(e.se.device_public_key(), "secure element holds no device key", Error);
  CHECK_THROWS_AS(e.se.sign_with_device_key(as_bytes("x")), Error);
  auto csr_der = e.se.generate_device_key("");
  const unsigned char* p = csr_der.data();
  ossl::Ptr<X509_REQ> csr(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr_der.size())));
  REQUIRE(csr);
  CHECK(X509_REQ_verify(csr.get(), X509_REQ_get0_pubkey(csr.get())) == 1);
  char cn[64] = {};
  X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(csr.get()), NID_commonName, cn, sizeof cn);
  CHECK(std::string(cn) == "UID-7");  // no common name given: the UID
  auto device = public_key(e.se.device_public_key());
  CHECK(EVP_PKEY_eq(device.get(), X509_REQ_get0_pubkey(csr.get())) == 1);
  CHECK(verifies(device.get(), as_bytes("challenge"), e.se.sign_with_device_key(as_bytes("challenge"))));
  Bytes nonce(32, 9);
  auto leaf = certificate(e.se.attestation_chain()[0]);
  CHECK(verifies(X509_get0_pubkey(leaf.get()),
                 attestation_statement(key_statement_label, nonce, "UID-7", e.se.device_public_key()),
                 e.se.attest_device_key(nonce)));
}

TEST_CASE("secure element: an injected device key must be a P-256 key wrapped for this board") {
  Element e;
  auto key = generate("EC", "P-256");
  auto spki = e.se.inject_device_key(wrap_device_key(e.se.transport_public_key(), "UID-7", pkcs8_of(key.get())));
  CHECK(EVP_PKEY_eq(public_key(spki).get(), key.get()) == 1);
  CHECK(e.se.device_public_key() == spki);
  CHECK(verifies(key.get(), as_bytes("m"), e.se.sign_with_device_key(as_bytes("m"))));

  auto refused = [&](const WrappedKey& wrapped, const char* why) {
    try {
      e.se.inject_device_key(wrapped);
      FAIL("injected: " << why);
    } catch (const Error& err) {
      CHECK_MESSAGE(err.code() == ExitCode::verification_failed, why);
    }
    CHECK_MESSAGE(e.se.device_public_key() == spki, why);  // the key it held stays
  };
  refused(wrap_device_key(e.se.transport_public_key(), "UID-8", pkcs8_of(key.get())), "wrapped for another UID");
  refused(wrap_device_key(e.se.transport_public_key(), "UID-7", pkcs8_of(generate("ED25519").get())), "an Ed25519 key");
  refused(wrap_device_key(e.se.transport_public_key(), "UID-7", pkcs8_of(generate("EC", "P-384").get())), "a P-384 key");
  // 256 bits, but not P-256: the board's ECDSA is P-256 only.
  refused(wrap_device_key(e.se.transport_public_key(), "UID-7", pkcs8_of(generate("EC", "secp256k1").get())),
          "a secp256k1 key");
  refused(wrap_device_key(e.se.transport_public_key(), "UID-7", as_bytes("not a key")), "not a key");
}

TEST_CASE("secure element: the image-encryption key opens content keys wrapped for its public half") {
  Element e;
  CHECK_FALSE(e.se.has_encryption_key());
  CHECK_THROWS_AS(e.se.encryption_public_key(), Error);
  for (auto kind : {mcuboot::EncryptionKeyKind::ecies_p256, mcuboot::EncryptionKeyKind::ecies_x25519}) {
    auto spki = e.se.generate_encryption_key(kind);
    CHECK(e.se.encryption_public_key() == spki);
    auto opener = e.se.encryption_key_opener();
    CHECK(opener->kind() == kind);
    auto content = mcuboot::random_bytes(16);
    auto wrapped = mcuboot::wrap_content_key(mcuboot::encryption_key_from_spki(spki, "k"), content, mcuboot::HmacSha::sha256);
    CHECK(opener->open(wrapped.first, wrapped.second, 16) == content);
  }
  // Installed or injected: only what MCUboot decrypts with; the key it held stays otherwise.
  auto held = e.se.encryption_public_key();
  try {
    e.se.install_encryption_key(pkcs8_of(generate("ED25519").get()));
    FAIL("an Ed25519 key cannot encrypt images");
  } catch (const Error& err) {
    CHECK(err.code() == ExitCode::verification_failed);
  }
  CHECK_THROWS_AS(e.se.install_encryption_key(as_bytes("junk")), Error);
  CHECK(e.se.encryption_public_key() == held);
  auto p256 = generate("EC", "P-256");
  auto injected = e.se.inject_encryption_key(wrap_device_key(e.se.transport_public_key(), "UID-7", pkcs8_of(p256.get())));
  CHECK(EVP_PKEY_eq(public_key(injected).get(), p256.get()) == 1);
  CHECK_THROWS_AS(
      e.se.inject_encryption_key(wrap_device_key(e.se.transport_public_key(), "UID-9", pkcs8_of(p256.get()))), Error);
}
