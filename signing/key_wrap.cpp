// ECDH P-256 + HKDF-SHA256 + AES-256-GCM key wrapping (see the header).
#include "signing/key_wrap.hpp"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <fmt/format.h>

#include <memory>
#include <string_view>

#include "core/error.hpp"
#include "signing/kdf.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {
namespace {

struct CipherFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};

constexpr std::string_view wrap_info = "kiln key wrap v1";

[[noreturn]] void crypto_failure(const char* what) {
  throw Error(ExitCode::failure, fmt::format("key wrapping failed: {}", what)).with_detail(openssl_errors());
}

ossl::Ptr<EVP_PKEY> public_key_from_der(ByteView der) {
  const unsigned char* p = der.data();
  ossl::Ptr<EVP_PKEY> key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!key || !EVP_PKEY_is_a(key.get(), "EC"))
    throw Error(ExitCode::verification_failed, "the transport key is not a P-256 public key").with_detail(openssl_errors());
  return key;
}

Bytes shared_key(EVP_PKEY* own, EVP_PKEY* peer, const std::string& uid) {
  ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(own, nullptr));
  std::size_t secret_size = 0;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) <= 0 || EVP_PKEY_derive_set_peer(ctx.get(), peer) <= 0 ||
      EVP_PKEY_derive(ctx.get(), nullptr, &secret_size) <= 0)
    throw Error(ExitCode::verification_failed, "ECDH with the transport key failed").with_detail(openssl_errors());
  Bytes secret(secret_size);
  if (EVP_PKEY_derive(ctx.get(), secret.data(), &secret_size) <= 0) crypto_failure("ECDH");

  return hkdf(EVP_sha256(), secret, as_bytes(std::string(wrap_info) + uid), 32);
}

}  // namespace

WrappedKey wrap_device_key(ByteView transport_public_key, const std::string& uid, ByteView pkcs8_private_key) {
  auto peer = public_key_from_der(transport_public_key);
  ossl::Ptr<EVP_PKEY> ephemeral(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!ephemeral) crypto_failure("ephemeral key");
  WrappedKey wrapped;
  unsigned char* der = nullptr;
  int der_size = i2d_PUBKEY(ephemeral.get(), &der);
  if (der_size <= 0) crypto_failure("ephemeral key encoding");
  wrapped.ephemeral_public_key.assign(der, der + der_size);
  OPENSSL_free(der);
  Bytes key = shared_key(ephemeral.get(), peer.get(), uid);

  wrapped.iv.resize(12);
  wrapped.tag.resize(16);
  wrapped.ciphertext.resize(pkcs8_private_key.size());
  if (RAND_bytes(wrapped.iv.data(), 12) != 1) crypto_failure("random IV");
  std::unique_ptr<EVP_CIPHER_CTX, CipherFree> ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), wrapped.iv.data()) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(uid.data()),
                        static_cast<int>(uid.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), wrapped.ciphertext.data(), &n, pkcs8_private_key.data(),
                        static_cast<int>(pkcs8_private_key.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), wrapped.ciphertext.data() + n, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, wrapped.tag.data()) != 1)
    crypto_failure("AES-GCM");
  OPENSSL_cleanse(key.data(), key.size());
  return wrapped;
}

Bytes unwrap_device_key(const WrappedKey& wrapped, ByteView transport_private_key_pkcs8, const std::string& uid) {
  if (wrapped.iv.size() != 12 || wrapped.tag.size() != 16 || wrapped.ciphertext.empty())
    throw Error(ExitCode::verification_failed, "wrapped key has a bad IV, tag or ciphertext size");
  const unsigned char* p = transport_private_key_pkcs8.data();
  ossl::Ptr<EVP_PKEY> own(d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(transport_private_key_pkcs8.size())));
  if (!own) crypto_failure("transport private key");
  auto peer = public_key_from_der(wrapped.ephemeral_public_key);
  Bytes key = shared_key(own.get(), peer.get(), uid);
  Bytes plain(wrapped.ciphertext.size());
  std::unique_ptr<EVP_CIPHER_CTX, CipherFree> ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  Bytes tag = wrapped.tag;
  bool ok = ctx && EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), wrapped.iv.data()) == 1 &&
            EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(uid.data()),
                              static_cast<int>(uid.size())) == 1 &&
            EVP_DecryptUpdate(ctx.get(), plain.data(), &n, wrapped.ciphertext.data(),
                              static_cast<int>(wrapped.ciphertext.size())) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag.data()) == 1 &&
            EVP_DecryptFinal_ex(ctx.get(), plain.data() + n, &n) == 1;
  OPENSSL_cleanse(key.data(), key.size());
  if (!ok) {
    OPENSSL_cleanse(plain.data(), plain.size());
    throw Error(ExitCode::verification_failed, "wrapped key does not decrypt with this board's transport key")
        .with_detail(openssl_errors());
  }
  return plain;
}

}  // namespace kiln
