// MCUboot content-key wrapping (RSA-OAEP-SHA256, ECIES with HKDF + AES-CTR + HMAC) and AES-CTR, with OpenSSL 3 EVP.
#include "signing/image_crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "signing/file_key.hpp"
#include "signing/kdf.hpp"
#include "signing/key_export.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/pkcs11.hpp"

namespace kiln::mcuboot {
namespace {

constexpr std::string_view ecies_info = "MCUBoot_ECIES_v1";
constexpr std::size_t p256_point_size = 65;
constexpr std::size_t x25519_point_size = 32;
constexpr std::size_t rsa2048_size = 256;
// DER SubjectPublicKeyInfo prefix of an uncompressed P-256 point (the 65 bytes follow).
constexpr std::uint8_t p256_spki_prefix[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d,
                                             0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01,
                                             0x07, 0x03, 0x42, 0x00};

Error crypto_failure(std::string what) {
  return Error(ExitCode::failure, std::move(what)).with_detail(openssl_errors());
}

Error not_opened(std::string why) {
  return Error(ExitCode::verification_failed, std::move(why),
               "decrypt with the private key whose public half the image was encrypted for");
}

const EVP_MD* hmac_md(HmacSha hmac) {
  return hmac == HmacSha::sha512 ? EVP_sha512() : EVP_sha256();
}

std::size_t hmac_size(HmacSha hmac) {
  return hmac == HmacSha::sha512 ? 64 : 32;
}

Bytes hkdf(ByteView secret, HmacSha hmac, std::size_t length) {
  return kiln::hkdf(hmac_md(hmac), secret, as_bytes(ecies_info), length);
}

Bytes hmac(HmacSha alg, ByteView key, ByteView data) {
  Bytes out(EVP_MAX_MD_SIZE);
  std::size_t out_size = 0;
  const char* name = alg == HmacSha::sha512 ? "SHA512" : "SHA256";
  if (!EVP_Q_mac(nullptr, "HMAC", nullptr, name, nullptr, key.data(), key.size(), data.data(), data.size(),
                 out.data(), out.size(), &out_size))
    throw crypto_failure("HMAC failed");
  out.resize(out_size);
  return out;
}

Bytes ctr_once(ByteView key, ByteView data) {
  AesCtr aes(key);
  Bytes out(data.size());
  aes.apply(data, out.data());
  return out;
}

Bytes ecdh(EVP_PKEY* mine, EVP_PKEY* peer) {
  ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(mine, nullptr));
  std::size_t size = 0;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), peer) != 1 ||
      EVP_PKEY_derive(ctx.get(), nullptr, &size) != 1)
    throw not_opened("the key agreement with the image's ephemeral key failed");
  Bytes out(size);
  if (EVP_PKEY_derive(ctx.get(), out.data(), &size) != 1)
    throw not_opened("the key agreement with the image's ephemeral key failed");
  out.resize(size);
  return out;
}

// The raw public value as MCUboot carries it: the uncompressed point (P-256) or the 32 bytes (X25519).
Bytes raw_public(EVP_PKEY* key, EncryptionKeyKind kind) {
  if (kind == EncryptionKeyKind::ecies_x25519) {
    Bytes out(x25519_point_size);
    std::size_t size = out.size();
    if (EVP_PKEY_get_raw_public_key(key, out.data(), &size) != 1) throw crypto_failure("cannot encode an X25519 key");
    return out;
  }
  Bytes out(p256_point_size);
  std::size_t size = 0;
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out.data(), out.size(), &size) != 1 ||
      size != p256_point_size)
    throw crypto_failure("cannot encode a P-256 point");
  return out;
}

ossl::Ptr<EVP_PKEY> peer_from_raw(ByteView raw, EncryptionKeyKind kind) {
  if (kind == EncryptionKeyKind::ecies_x25519)
    return ossl::Ptr<EVP_PKEY>(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, raw.data(), raw.size()));
  Bytes spki(std::begin(p256_spki_prefix), std::end(p256_spki_prefix));
  spki.insert(spki.end(), raw.begin(), raw.end());
  const unsigned char* p = spki.data();
  ossl::Ptr<EVP_PKEY> key(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  if (key) {
    ossl::Ptr<EVP_PKEY_CTX> check(EVP_PKEY_CTX_new(key.get(), nullptr));
    if (!check || EVP_PKEY_public_check(check.get()) != 1) key.reset();
  }
  return key;
}

EncryptionKeyKind kind_of(EVP_PKEY* key, const std::string& description) {
  int id = EVP_PKEY_get_base_id(key);
  if (id == EVP_PKEY_X25519) return EncryptionKeyKind::ecies_x25519;
  if (id == EVP_PKEY_RSA || id == EVP_PKEY_RSA_PSS) {
    if (EVP_PKEY_get_bits(key) == 2048) return EncryptionKeyKind::rsa_oaep_2048;
    throw Error(ExitCode::usage,
                fmt::format("{} is a {}-bit RSA key: MCUboot decrypts RSA-OAEP only with 2048-bit keys", description,
                            EVP_PKEY_get_bits(key)),
                "encrypt for an RSA-2048, ECIES-P256 or ECIES-X25519 key");
  }
  if (id == EVP_PKEY_EC) {
    char curve[64] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, &length) == 1 &&
        std::string_view(curve) == "prime256v1")
      return EncryptionKeyKind::ecies_p256;
    throw Error(ExitCode::usage,
                fmt::format("{} is an EC key on {}: MCUboot's ECIES uses P-256 only", description,
                            length ? curve : "an unknown curve"),
                "encrypt for an RSA-2048, ECIES-P256 or ECIES-X25519 key");
  }
  const char* name = EVP_PKEY_get0_type_name(key);
  throw Error(ExitCode::usage,
              fmt::format("{} is an {} key, which cannot encrypt MCUboot images", description, name ? name : "unknown"),
              "encrypt for an RSA-2048, ECIES-P256 or ECIES-X25519 key (Ed25519 keys sign, X25519 keys encrypt)");
}

std::size_t wrapped_size(EncryptionKeyKind kind, HmacSha hmac, std::size_t key_size) {
  switch (kind) {
    case EncryptionKeyKind::rsa_oaep_2048:
      return rsa2048_size;
    case EncryptionKeyKind::ecies_p256:
      return p256_point_size + hmac_size(hmac) + key_size;
    case EncryptionKeyKind::ecies_x25519:
      return x25519_point_size + hmac_size(hmac) + key_size;
  }
  return 0;
}

// Opens content keys; how the private key agrees on a secret or decrypts RSA-OAEP is the subclass's
// (a key file in memory, or a key on a PKCS#11 token).
class OpenerBase : public ContentKeyOpener {
 public:
  OpenerBase(Bytes public_der, std::string description)
      : description_(std::move(description)), public_der_(std::move(public_der)) {
    kind_ = kind_of(decode_public_key(public_der_).get(), description_);
  }
  EncryptionKeyKind kind() const override { return kind_; }
  std::string description() const override { return description_; }
  Bytes public_key_der() const override { return public_der_; }

  Bytes open(std::uint16_t type, ByteView value, std::size_t key_size) const override {
    std::optional<EncryptionKeyKind> wanted;
    HmacSha hmac_alg = HmacSha::sha256;
    if (type == tlv::enc_rsa2048) wanted = EncryptionKeyKind::rsa_oaep_2048;
    if (type == tlv::enc_ec256) wanted = EncryptionKeyKind::ecies_p256;
    if (type == tlv::enc_x25519) wanted = EncryptionKeyKind::ecies_x25519;
    if (type == tlv::enc_x25519_sha512) {
      wanted = EncryptionKeyKind::ecies_x25519;
      hmac_alg = HmacSha::sha512;
    }
    if (!wanted)
      throw not_opened(fmt::format("the image's content key is wrapped with TLV {:#04x}, which kiln cannot open", type));
    if (*wanted != kind_)
      throw not_opened(fmt::format("the image's content key is wrapped for an {} key, {} is an {} key",
                                   encryption_key_kind_name(*wanted), description_,
                                   encryption_key_kind_name(kind_)));
    std::size_t expected = wrapped_size(kind_, hmac_alg, key_size);
    if (value.size() != expected)
      throw Error(ExitCode::verification_failed,
                  fmt::format("the encryption TLV is {} bytes, an {} TLV for a {}-bit content key has {}",
                              value.size(), encryption_key_kind_name(kind_), key_size * 8, expected),
                  "the image is truncated or was altered");
    if (kind_ == EncryptionKeyKind::rsa_oaep_2048) return open_rsa(value, key_size);
    std::size_t point = kind_ == EncryptionKeyKind::ecies_p256 ? p256_point_size : x25519_point_size;
    auto peer = peer_from_raw(value.first(point), kind_);
    if (!peer)
      throw Error(ExitCode::verification_failed, "the encryption TLV's ephemeral public key is not a valid point",
                  "the image is truncated or was altered");
    Bytes shared = agree(peer.get(), value.first(point));
    Bytes derived = hkdf(shared, hmac_alg, key_size + hmac_size(hmac_alg));
    OPENSSL_cleanse(shared.data(), shared.size());
    ByteView mac = value.subspan(point, hmac_size(hmac_alg));
    ByteView wrapped = value.subspan(point + hmac_size(hmac_alg));
    Bytes expected_mac = hmac(hmac_alg, ByteView(derived).subspan(key_size), wrapped);
    if (CRYPTO_memcmp(expected_mac.data(), mac.data(), mac.size()) != 0) {
      OPENSSL_cleanse(derived.data(), derived.size());
      throw not_opened(fmt::format("{} does not open this image: the wrapped content key's MAC does not match",
                                   description_));
    }
    Bytes key = ctr_once(ByteView(derived).first(key_size), wrapped);
    OPENSSL_cleanse(derived.data(), derived.size());
    return key;
  }

 protected:
  // The raw ECDH shared secret with the image's ephemeral key (`peer`, whose raw public value is `raw`).
  virtual Bytes agree(EVP_PKEY* peer, ByteView raw) const = 0;
  // RSA-OAEP (SHA-256, MGF1-SHA256) decryption; nullopt when it does not decrypt.
  virtual std::optional<Bytes> rsa_decrypt(ByteView ciphertext) const = 0;

 private:
  Bytes open_rsa(ByteView value, std::size_t key_size) const {
    auto out = rsa_decrypt(value);
    if (!out)
      throw not_opened(fmt::format("{} does not open this image: RSA-OAEP decryption of the content key failed",
                                   description_));
    if (out->size() != key_size) {
      std::size_t size = out->size();
      OPENSSL_cleanse(out->data(), out->size());
      throw not_opened(fmt::format("the RSA-OAEP content key is {} bytes, the header's flag says {}", size, key_size));
    }
    return std::move(*out);
  }

  std::string description_;
  Bytes public_der_;
  EncryptionKeyKind kind_ = EncryptionKeyKind::ecies_p256;
};

class FileOpener final : public OpenerBase {
 public:
  FileOpener(ossl::Ptr<EVP_PKEY> key, std::string description)
      : OpenerBase(spki_der(key.get()), std::move(description)), key_(std::move(key)) {}

 protected:
  Bytes agree(EVP_PKEY* peer, ByteView) const override { return ecdh(key_.get(), peer); }

  std::optional<Bytes> rsa_decrypt(ByteView value) const override {
    ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(key_.get(), nullptr));
    if (!ctx || EVP_PKEY_decrypt_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1)
      throw crypto_failure("cannot set up RSA-OAEP");
    Bytes out(rsa2048_size);
    std::size_t size = out.size();
    if (EVP_PKEY_decrypt(ctx.get(), out.data(), &size, value.data(), value.size()) != 1) {
      openssl_errors();
      return std::nullopt;
    }
    out.resize(size);
    return out;
  }

 private:
  ossl::Ptr<EVP_PKEY> key_;
};

// A private image-encryption key on a PKCS#11 token: ECDH and RSA-OAEP run on the token.
class Pkcs11Opener final : public OpenerBase {
 public:
  explicit Pkcs11Opener(std::unique_ptr<Pkcs11DecryptionKey> key)
      : OpenerBase(key->public_key_der(), key->description()), key_(std::move(key)) {}

 protected:
  Bytes agree(EVP_PKEY*, ByteView raw) const override {
    return key_->derive(raw, kind() == EncryptionKeyKind::ecies_p256 ? 32 : x25519_point_size);
  }
  std::optional<Bytes> rsa_decrypt(ByteView value) const override { return key_->decrypt_rsa_oaep_sha256(value); }

 private:
  std::unique_ptr<Pkcs11DecryptionKey> key_;
};

}  // namespace

std::string_view encryption_key_kind_name(EncryptionKeyKind kind) {
  switch (kind) {
    case EncryptionKeyKind::rsa_oaep_2048:
      return "RSA-OAEP-2048";
    case EncryptionKeyKind::ecies_p256:
      return "ECIES-P256";
    case EncryptionKeyKind::ecies_x25519:
      return "ECIES-X25519";
  }
  return "unknown";
}

bool is_encryption_tlv(std::uint16_t type) {
  return type >= tlv::enc_rsa2048 && type <= tlv::enc_x25519_sha512;
}

EncryptionKey encryption_key_from_spki(ByteView spki_der, const std::string& description) {
  ossl::Ptr<EVP_PKEY> key = decode_public_key(spki_der);
  EncryptionKey out;
  out.kind = kind_of(key.get(), description);
  out.public_key_der.assign(spki_der.begin(), spki_der.end());
  out.description = description;
  return out;
}

EncryptionKey load_encryption_key(const std::string& keyref, const KeyOptions& options) {
  Bytes spki = is_pkcs11_uri(keyref) ? load_public_key(keyref, options)
                                     : load_any_public_key_file(keyref, options.passphrase);
  return encryption_key_from_spki(spki, keyref);
}

std::pair<std::uint16_t, Bytes> wrap_content_key(const EncryptionKey& key, ByteView content_key, HmacSha hmac_alg) {
  if (hmac_alg == HmacSha::sha512 && key.kind != EncryptionKeyKind::ecies_x25519)
    throw Error(ExitCode::usage, "--hmac-sha 512 works only with an ECIES-X25519 encryption key",
                "use --hmac-sha auto (SHA-256) for P-256 and RSA keys");
  ossl::Ptr<EVP_PKEY> recipient = decode_public_key(key.public_key_der);
  if (key.kind == EncryptionKeyKind::rsa_oaep_2048) {
    ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(recipient.get(), nullptr));
    std::size_t size = 0;
    if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1 ||
        EVP_PKEY_encrypt(ctx.get(), nullptr, &size, content_key.data(), content_key.size()) != 1)
      throw crypto_failure("RSA-OAEP encryption of the content key failed");
    Bytes out(size);
    if (EVP_PKEY_encrypt(ctx.get(), out.data(), &size, content_key.data(), content_key.size()) != 1)
      throw crypto_failure("RSA-OAEP encryption of the content key failed");
    out.resize(size);
    return {tlv::enc_rsa2048, out};
  }
  const bool x25519 = key.kind == EncryptionKeyKind::ecies_x25519;
  ossl::Ptr<EVP_PKEY> ephemeral(x25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519")
                                       : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!ephemeral) throw crypto_failure("cannot generate an ephemeral key");
  Bytes shared = ecdh(ephemeral.get(), recipient.get());
  Bytes derived = hkdf(shared, hmac_alg, content_key.size() + hmac_size(hmac_alg));
  OPENSSL_cleanse(shared.data(), shared.size());
  Bytes wrapped = ctr_once(ByteView(derived).first(content_key.size()), content_key);
  Bytes mac = hmac(hmac_alg, ByteView(derived).subspan(content_key.size()), wrapped);
  OPENSSL_cleanse(derived.data(), derived.size());
  Bytes value = raw_public(ephemeral.get(), key.kind);
  value.insert(value.end(), mac.begin(), mac.end());
  value.insert(value.end(), wrapped.begin(), wrapped.end());
  std::uint16_t type = !x25519 ? tlv::enc_ec256 : hmac_alg == HmacSha::sha512 ? tlv::enc_x25519_sha512 : tlv::enc_x25519;
  return {type, value};
}

std::unique_ptr<ContentKeyOpener> load_content_key_opener(const std::string& keyref, const KeyOptions& options) {
  if (is_pkcs11_uri(keyref)) return std::make_unique<Pkcs11Opener>(open_pkcs11_decryption_key(keyref, options));
  return std::make_unique<FileOpener>(load_private_key_file(keyref, options.passphrase), keyref);
}

std::unique_ptr<ContentKeyOpener> load_content_key_opener_file(const std::string& path, const std::string& description) {
  return std::make_unique<FileOpener>(load_private_key_file(path, std::nullopt), description);
}

Bytes random_bytes(std::size_t size) {
  Bytes out(size);
  if (RAND_priv_bytes(out.data(), static_cast<int>(out.size())) != 1)
    throw crypto_failure("the random number generator failed");
  return out;
}

AesCtr::AesCtr(ByteView key) : ctx_(EVP_CIPHER_CTX_new()) {
  const EVP_CIPHER* cipher = key.size() == 32 ? EVP_aes_256_ctr() : key.size() == 16 ? EVP_aes_128_ctr() : nullptr;
  unsigned char iv[16] = {};
  if (!ctx_ || !cipher ||
      EVP_EncryptInit_ex(static_cast<EVP_CIPHER_CTX*>(ctx_), cipher, nullptr, key.data(), iv) != 1) {
    EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(ctx_));
    throw crypto_failure("cannot set up AES-CTR");
  }
}

AesCtr::~AesCtr() {
  EVP_CIPHER_CTX_free(static_cast<EVP_CIPHER_CTX*>(ctx_));
}

void AesCtr::apply(ByteView in, std::uint8_t* out) {
  std::size_t done = 0;
  while (done < in.size()) {
    int n = static_cast<int>(std::min<std::size_t>(in.size() - done, 1u << 30));
    int written = 0;
    if (EVP_EncryptUpdate(static_cast<EVP_CIPHER_CTX*>(ctx_), out + done, &written, in.data() + done, n) != 1 ||
        written != n)
      throw crypto_failure("AES-CTR failed");
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace kiln::mcuboot
