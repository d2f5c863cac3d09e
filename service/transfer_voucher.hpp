// Device-transfer vouchers (issue 17, docs/security.md "Ownership transfer"): what the current owner of
// devices signs (through the service) so that another tenant may take them over. A voucher is JSON:
//   {"version": 1, "id": "xfer_…", "from_tenant": "acme", "to_tenant": "globex", "devices": ["UID", …],
//    "issued_at": "2026-…Z", "expires_at": "2026-…Z", "key_id": "<SHA-256 of the signer's SPKI, hex>",
//    "signature": "<base64 Ed25519>"}
// The signature covers voucher_signed_bytes: "kiln-device-transfer-v1\n" followed by nlohmann's compact
// dump of the voucher object without "signature" (members sorted by name, UTF-8 as is, integers only):
// a function of the voucher's values, so re-indenting the file changes nothing and editing any value
// breaks the signature.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/bytes.hpp"

namespace kiln::service {

constexpr int transfer_voucher_version = 1;
constexpr std::size_t max_voucher_devices = 1000;
constexpr std::size_t max_voucher_bytes = 256 * 1024;

struct TransferVoucher {
  int version = transfer_voucher_version;
  std::string id, from_tenant, to_tenant;
  std::vector<std::string> devices;
  std::string issued_at, expires_at;  // core/time.hpp form
  std::string key_id;                 // hex SHA-256 of the signing key's DER SubjectPublicKeyInfo
  Bytes signature;                    // Ed25519 over voucher_signed_bytes
};

// Parses a voucher file's text. Strict: exactly the members above with their types (an id "xfer_" + 32 hex
// digits, tenants of 1..128 bytes, 1..1000 unique device UIDs, timestamps in core/time.hpp form, a 64-byte
// signature). Throws Error(verification_failed) saying what is wrong (a truncated or edited file); never
// checks the signature (that needs the service's record of the voucher).
TransferVoucher parse_transfer_voucher(std::string_view text);
std::string voucher_signed_bytes(const TransferVoucher& voucher);
nlohmann::json voucher_json(const TransferVoucher& voucher);

// The service's voucher-signing key: Ed25519, a PKCS#8 PEM file of mode 0600 in the data directory
// (voucher-key.pem), created on first use. Every voucher's record keeps the public half, so any instance
// sharing the store verifies any instance's vouchers.
class VoucherKey {
 public:
  // Loads the key at `path`, creating it (0600) when the file does not exist.
  static std::shared_ptr<const VoucherKey> load_or_create(const std::string& path);
  // A key that lives only in memory (unit tests, a service without a data directory).
  static std::shared_ptr<const VoucherKey> ephemeral();
  explicit VoucherKey(const std::string& pem);
  ~VoucherKey();
  VoucherKey(const VoucherKey&) = delete;
  VoucherKey& operator=(const VoucherKey&) = delete;

  Bytes public_key_der() const;
  std::string key_id() const;  // hex SHA-256 of public_key_der
  Bytes sign(std::string_view message) const;

 private:
  void* key_;  // EVP_PKEY*
};

// Whether `signature` is `public_key_der`'s Ed25519 signature over the voucher's signed bytes.
bool voucher_signature_valid(const TransferVoucher& voucher, ByteView public_key_der);

}  // namespace kiln::service
