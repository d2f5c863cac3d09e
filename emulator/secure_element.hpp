// The emulated secure element: silicon attestation key and certificate (chained to an emulated
// silicon-vendor root), a transport key for key injection, and the device key that never leaves.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "signing/image_crypto.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln::emu {

// The emulated silicon vendor's root CA, created once per emulator directory
// (vendor-root.pem and vendor-root.key.pem).
struct VendorRoot {
  std::filesystem::path cert_path;
  std::filesystem::path key_path;
  std::string cert_pem() const;
};
VendorRoot load_or_create_vendor_root(const std::filesystem::path& emu_dir);

// Files under the board directory: silicon.key.pem, attestation.der, transport.key.pem, device.key.pem,
// image-encryption.key.pem (MCUboot's image-encryption key: ECIES-P256, ECIES-X25519 or RSA-OAEP-2048).
class SecureElement {
 public:
  // Creates the silicon key, attestation certificate and transport key on first use.
  SecureElement(std::filesystem::path board_dir, const std::string& uid, const VendorRoot& root);

  std::vector<Bytes> attestation_chain() const;  // attestation certificate, then the vendor root (DER)
  Bytes transport_public_key() const;            // DER SPKI
  Bytes transport_key_signature() const;         // attestation key, ECDSA over SHA-256(transport SPKI)
  // The attestation key answers a station's nonce (see attestation_statement): for the identity
  // (UID and transport key) and for the device key.
  Bytes attest_identity(ByteView nonce) const;
  Bytes attest_device_key(ByteView nonce) const;

  bool has_device_key() const;
  Bytes device_public_key() const;               // DER SPKI; throws if there is none
  // Generates a fresh P-256 device key and returns a CSR (DER) with CN = common_name.
  Bytes generate_device_key(const std::string& common_name);
  // Unwraps and stores an injected key; returns its DER SPKI. Throws Error(verification_failed).
  Bytes inject_device_key(const WrappedKey& wrapped);
  Bytes sign_with_device_key(ByteView message) const;  // DER ECDSA over SHA-256(message)

  // The image-encryption key pair: the bootloader opens the content key of encrypted images with it.
  bool has_encryption_key() const;
  Bytes encryption_public_key() const;  // DER SPKI; throws if there is none
  // Generates a fresh key of `kind` inside the element; returns its DER SPKI.
  Bytes generate_encryption_key(mcuboot::EncryptionKeyKind kind);
  // Installs a given private key (PKCS#8 DER): unwrapped from the transport key, or at emulator start
  // (--encryption-key, the emulated factory). Returns its DER SPKI. Throws Error(verification_failed)
  // for a key MCUboot cannot decrypt with.
  Bytes install_encryption_key(ByteView pkcs8_der);
  Bytes inject_encryption_key(const WrappedKey& wrapped);
  // Opens content keys inside the element (the private key is never returned).
  std::unique_ptr<mcuboot::ContentKeyOpener> encryption_key_opener() const;

 private:
  std::filesystem::path dir_;
  std::string uid_;
};

}  // namespace kiln::emu
