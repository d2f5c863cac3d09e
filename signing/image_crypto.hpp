// MCUboot image encryption: the content key wrapped for a device key (RSA-OAEP, ECIES-P256, ECIES-X25519,
// as imgtool and MCUboot's docs/encrypted_images.md define them) and the AES-CTR body cipher.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/bytes.hpp"
#include "signing/key_ref.hpp"

namespace kiln::mcuboot {

// TLV types of a wrapped content key (unprotected area).
namespace tlv {
constexpr std::uint16_t enc_rsa2048 = 0x30;
constexpr std::uint16_t enc_kw = 0x31;
constexpr std::uint16_t enc_ec256 = 0x32;
constexpr std::uint16_t enc_x25519 = 0x33;
constexpr std::uint16_t enc_x25519_sha512 = 0x34;
}  // namespace tlv

// Header flags for encrypted images.
constexpr std::uint32_t flag_encrypted_aes128 = 0x04;
constexpr std::uint32_t flag_encrypted_aes256 = 0x08;

enum class EncryptionKeyKind { rsa_oaep_2048, ecies_p256, ecies_x25519 };
enum class HmacSha { sha256, sha512 };

std::string_view encryption_key_kind_name(EncryptionKeyKind kind);  // "RSA-OAEP-2048", "ECIES-P256", ...
bool is_encryption_tlv(std::uint16_t type);

// The public half of an image-encryption key.
struct EncryptionKey {
  EncryptionKeyKind kind = EncryptionKeyKind::ecies_p256;
  Bytes public_key_der;  // SubjectPublicKeyInfo
  std::string description;
};

// Classifies a public key; throws Error(usage) naming the key type for anything MCUboot cannot
// decrypt with (Ed25519, P-384, RSA other than 2048 bits), Error(verification_failed) for a malformed key.
EncryptionKey encryption_key_from_spki(ByteView spki_der, const std::string& description);
// KEYREF of the encryption key: a PEM file (private key, public key or certificate) or a pkcs11: URI.
EncryptionKey load_encryption_key(const std::string& keyref, const KeyOptions& options = {});

// The TLV carrying a content key wrapped for `key`: type and value (random ephemeral key for ECIES).
// hmac_sha512 only for X25519 (Error(usage) otherwise).
std::pair<std::uint16_t, Bytes> wrap_content_key(const EncryptionKey& key, ByteView content_key, HmacSha hmac);

// A private image-encryption key: opens the content key of an image made for its public half.
class ContentKeyOpener {
 public:
  virtual ~ContentKeyOpener() = default;
  virtual EncryptionKeyKind kind() const = 0;
  virtual std::string description() const = 0;
  virtual Bytes public_key_der() const = 0;
  // The content key from a TLV of `type` with `value`; `key_size` 16 or 32 (from the header flags).
  // Throws Error(verification_failed) when the TLV is malformed (wrong length, bad point) or the key
  // does not open it (MAC mismatch, OAEP failure, a TLV for another key type).
  virtual Bytes open(std::uint16_t type, ByteView value, std::size_t key_size) const = 0;
};

// A private key file (PEM, optionally passphrase-protected).
std::unique_ptr<ContentKeyOpener> load_content_key_opener(const std::string& keyref, const KeyOptions& options = {});

// A private key file read with no passphrase; messages name it `description` (not the path).
std::unique_ptr<ContentKeyOpener> load_content_key_opener_file(const std::string& path, const std::string& description);

// Random bytes from OpenSSL's DRBG.
Bytes random_bytes(std::size_t size);

// AES-128/256 in CTR mode from a zero counter, as MCUboot encrypts image bodies; streaming.
class AesCtr {
 public:
  explicit AesCtr(ByteView key);
  ~AesCtr();
  AesCtr(const AesCtr&) = delete;
  AesCtr& operator=(const AesCtr&) = delete;
  // Encrypts (or decrypts: the same operation) `in` into `out` (same size; may be the same buffer).
  void apply(ByteView in, std::uint8_t* out);

 private:
  void* ctx_;  // EVP_CIPHER_CTX*
};

}  // namespace kiln::mcuboot
