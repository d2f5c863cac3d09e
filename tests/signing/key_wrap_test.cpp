// Tests for signing/key_wrap: the transport-key wrap the station and the board share.
#include <doctest/doctest.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <string>

#include "core/error.hpp"
#include "signing/key_wrap.hpp"
#include "signing/openssl_ptr.hpp"

using namespace kiln;

namespace {

struct KeyPair {
  Bytes spki, pkcs8;
};

KeyPair new_key(const char* type, const char* curve = nullptr) {
  ossl::Ptr<EVP_PKEY> key(curve ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, curve)
                                : EVP_PKEY_Q_keygen(nullptr, nullptr, type));
  REQUIRE(key);
  KeyPair out;
  unsigned char* der = nullptr;
  int n = i2d_PUBKEY(key.get(), &der);
  REQUIRE(n > 0);
  out.spki.assign(der, der + n);
  OPENSSL_free(der);
  der = nullptr;
  n = i2d_PrivateKey(key.get(), &der);
  REQUIRE(n > 0);
  out.pkcs8.assign(der, der + n);
  OPENSSL_free(der);
  return out;
}

}  // namespace

TEST_CASE("key wrap: a wrapped key opens with the board's transport key and UID only") {
  auto transport = new_key("EC", "P-256");
  auto device = new_key("EC", "P-256");
  auto wrapped = wrap_device_key(transport.spki, "UID-1", device.pkcs8);
  CHECK(wrapped.iv.size() == 12);
  CHECK(wrapped.tag.size() == 16);
  CHECK(wrapped.ciphertext.size() == device.pkcs8.size());
  CHECK(wrapped.ciphertext != device.pkcs8);
  CHECK(unwrap_device_key(wrapped, transport.pkcs8, "UID-1") == device.pkcs8);
  // Two wraps of one key differ (fresh ephemeral key and IV).
  auto again = wrap_device_key(transport.spki, "UID-1", device.pkcs8);
  CHECK(again.ephemeral_public_key != wrapped.ephemeral_public_key);

  auto refused = [&](const WrappedKey& w, const Bytes& own, const std::string& uid, const char* what) {
    try {
      unwrap_device_key(w, own, uid);
      FAIL("must not unwrap: " << what);
    } catch (const Error& e) {
      CHECK_MESSAGE(e.code() == ExitCode::verification_failed, what);
    }
  };
  refused(wrapped, transport.pkcs8, "UID-2", "another UID (the AAD and the KDF info)");
  refused(wrapped, new_key("EC", "P-256").pkcs8, "UID-1", "another board's transport key");
  auto tampered = wrapped;
  tampered.ciphertext[0] ^= 1;
  refused(tampered, transport.pkcs8, "UID-1", "a flipped ciphertext bit");
  auto short_iv = wrapped;
  short_iv.iv.resize(8);
  refused(short_iv, transport.pkcs8, "UID-1", "a short IV");
  auto no_ciphertext = wrapped;
  no_ciphertext.ciphertext.clear();
  refused(no_ciphertext, transport.pkcs8, "UID-1", "no ciphertext");
  // Only a P-256 transport key wraps.
  auto ed = new_key("ED25519");
  CHECK_THROWS_WITH_AS(wrap_device_key(ed.spki, "UID-1", device.pkcs8),
                       doctest::Contains("not a P-256 public key"), Error);
  CHECK_THROWS_AS(wrap_device_key(Bytes{1, 2, 3}, "UID-1", device.pkcs8), Error);
}
