// The kiln provisioning SMP group (64): command ids, error codes, manufacturing states and typed
// client calls. docs/board-protocol.md is the firmware engineer's view of the same contract.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "signing/key_wrap.hpp"  // WrappedKey, wrap_device_key, unwrap_device_key
#include "transport/smp_client.hpp"

namespace kiln {

namespace provisioning_command {
constexpr std::uint8_t identity = 0;        // read
constexpr std::uint8_t generate_key = 1;    // write: key pair inside the secure element + CSR
constexpr std::uint8_t install_chain = 2;   // write: device certificate chain (leaf first)
constexpr std::uint8_t install_config = 3;  // write: boot-key hash, service URL, trust anchor
constexpr std::uint8_t inject_key = 4;      // write: device key wrapped to the transport key
constexpr std::uint8_t sign_challenge = 5;  // write: ECDSA P-256 over SHA-256(challenge)
constexpr std::uint8_t set_state = 6;       // write: advance the manufacturing state (one way)
constexpr std::uint8_t record = 7;          // read: the whole provisioning record
constexpr std::uint8_t install_manifest = 8;  // write: SUIT envelope of the running firmware
constexpr std::uint8_t generate_encryption_key = 9;  // write: image-encryption key pair inside the secure element
constexpr std::uint8_t inject_encryption_key = 10;   // write: image-encryption key wrapped to the transport key
}  // namespace provisioning_command

// Group error codes (err: {group: 64, rc: N}).
namespace provisioning_rc {
constexpr int locked = 1;               // the manufacturing state forbids this change
constexpr int no_device_key = 2;        // needs a device key (generate or inject one first)
constexpr int chain_mismatch = 3;       // leaf certificate does not hold the device public key / bad DER
constexpr int unwrap_failed = 4;        // wrapped key does not decrypt or is not a P-256 key
constexpr int invalid_transition = 5;   // state is not after the current one
constexpr int precondition = 6;         // next state needs data not yet installed (see docs)
constexpr int invalid_argument = 7;     // a value has the wrong size or form
constexpr int manifest_refused = 8;     // signature, image digest/size or sequence check failed (`reason`)
constexpr int no_manifest_key = 9;      // install the manifest key (64:3 manifest_key) first
}  // namespace provisioning_rc
std::string_view provisioning_rc_name(int rc);

enum class ManufacturingState { blank, module_complete, device_complete };
std::string_view manufacturing_state_name(ManufacturingState state);  // "blank", "module-complete", ...
// Throws Error(usage) listing the valid names.
ManufacturingState parse_manufacturing_state(std::string_view name);

struct FirmwareSlot {
  std::uint32_t slot = 0;
  std::string version;
  Bytes hash;
};

struct BoardIdentity {
  std::string uid;
  ManufacturingState state = ManufacturingState::blank;
  std::vector<Bytes> attestation_chain;  // DER: silicon attestation certificate, then the vendor root
  Bytes transport_key;                   // DER SPKI of the P-256 key-wrapping (ECDH) key
  Bytes transport_key_signature;         // ECDSA by the attestation key over SHA-256(transport_key)
  // ECDSA by the attestation key over SHA-256(identity statement for the station's nonce): the
  // answer to this read's challenge. Empty when the request carried no nonce (or an old board).
  Bytes attestation_signature;
  std::vector<FirmwareSlot> firmware;
  std::vector<Bytes> manifest_keys;  // DER SPKI of the SUIT signers the board trusts, empty when none
  std::uint64_t manifest_threshold = 0;  // how many of them must sign (M of N), 0 when none installed
  std::uint64_t sequence = 0;  // installed manifest's sequence number, 0 when none
  Bytes manifest_digest;       // SHA-256 of the installed SUIT envelope, empty when none
  // Key rotation (docs/key-rotation.md): the trust version installed (nullopt: a board that knows no trust
  // updates), the product its first update bound it to, and the MCUboot key hashes it accepts.
  std::optional<std::uint64_t> trust_version;
  std::string trust_product;
  std::vector<Bytes> boot_key_hashes;
};

struct ServiceConfig {
  std::optional<Bytes> boot_key_hash;      // 32 bytes: SHA-256 of the MCUboot signing key SPKI
  std::optional<std::string> service_url;  // https://...
  std::optional<std::string> trust_anchor_pem;
  // DER SPKI (P-256 ECDSA or Ed25519) of each SUIT signer it trusts, and how many distinct ones must
  // have signed a manifest (M of N, 1 <= M <= N). Empty: none installed.
  std::vector<Bytes> manifest_keys;
  std::uint64_t manifest_threshold = 0;
};

struct ProvisioningRecord {
  std::string uid;
  ManufacturingState state = ManufacturingState::blank;
  std::optional<std::string> key_origin;  // "generated" or "injected"
  Bytes device_public_key;                // DER SPKI, empty before a key exists
  std::vector<Bytes> certificate_chain;
  ServiceConfig config;
  std::uint64_t sequence = 0;  // installed manifest's sequence number, 0 when none
  Bytes manifest_digest;       // SHA-256 of the installed SUIT envelope, empty when none
  Bytes encryption_public_key; // DER SPKI of the image-encryption key, empty when none
};

// The board's firmware record after it accepted a SUIT envelope (64:8).
struct InstalledManifest {
  std::uint64_t sequence = 0;
  Bytes digest;  // SHA-256 of the envelope
};

// What a board's attestation key signs (ECDSA over its SHA-256), so a signature answers one
// station challenge about one UID and one key: label || u16 len(nonce) || nonce || u16 len(uid) ||
// uid || key (DER SPKI), lengths big-endian. docs/board-protocol.md, "Attestation statements".
constexpr std::string_view identity_statement_label = "kiln identity attestation v1";  // key: the transport key
constexpr std::string_view key_statement_label = "kiln key attestation v1";            // key: the device key
Bytes attestation_statement(std::string_view label, ByteView nonce, std::string_view uid, ByteView key_spki);
// A station nonce is 16 to 64 bytes.
constexpr std::size_t min_nonce_size = 16;
constexpr std::size_t max_nonce_size = 64;

// With a nonce, the board also signs the identity statement with its attestation key.
BoardIdentity read_identity(SmpClient& client, ByteView nonce = {});
// The 64:0 response body as a BoardIdentity. Throws Error for a missing or mistyped field.
BoardIdentity parse_identity(const smp::Body& response);
// Returns the PKCS#10 CSR (DER) for a P-256 key generated inside the secure element.
Bytes generate_device_key(SmpClient& client, const std::string& common_name = {});
struct AttestedKey {
  Bytes csr;              // PKCS#10, DER
  Bytes public_key;       // DER SPKI the board reports
  Bytes key_attestation;  // attestation key over the key statement (nonce, uid, public_key)
};
// Generates the device key inside the secure element; the attestation key vouches for it.
AttestedKey generate_attested_device_key(SmpClient& client, const std::string& common_name, ByteView nonce);
void install_certificate_chain(SmpClient& client, const std::vector<Bytes>& chain_der);
void install_service_config(SmpClient& client, const ServiceConfig& config);
// Returns the DER SPKI of the installed key.
Bytes inject_device_key(SmpClient& client, const WrappedKey& wrapped);
// The image-encryption key (docs/board-protocol.md, 64:9 and 64:10): generated inside the secure element
// (`type` "ecies-p256", "ecies-x25519" or "rsa-oaep-2048"), or a product key wrapped to the transport key
// (wrap_device_key over its PKCS#8 DER). Both return the key's DER SPKI.
Bytes generate_encryption_key(SmpClient& client, const std::string& type);
Bytes inject_encryption_key(SmpClient& client, const WrappedKey& wrapped);
// DER ECDSA signature by the device key over SHA-256(challenge).
Bytes sign_challenge(SmpClient& client, ByteView challenge);
struct ChallengeAnswer {
  Bytes signature;        // device key over SHA-256(challenge)
  Bytes key_attestation;  // attestation key over the key statement (challenge as nonce, uid, device key)
};
ChallengeAnswer sign_challenge_attested(SmpClient& client, ByteView challenge);
// With dry_run the board checks the transition and its preconditions without changing state.
ManufacturingState set_manufacturing_state(SmpClient& client, ManufacturingState next, bool dry_run);
ProvisioningRecord read_provisioning_record(SmpClient& client);
// The board verifies the envelope against its manifest key and the image it runs (or has pending),
// then records its sequence number. A refusal throws Error(verification_failed) with the board's reason.
InstalledManifest install_manifest(SmpClient& client, ByteView envelope);

}  // namespace kiln
