// Station profile (TOML): what a factory station does to every board, and with which keys.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "provisioning/station_ca.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln {

enum class IdentityMode { csr, inject };
std::string_view identity_mode_name(IdentityMode mode);

// The firmware step: what every board must run, pinned by digest (kiln factory init checked that
// the three agree).
struct FirmwareProfile {
  std::filesystem::path image;     // signed MCUboot image
  std::filesystem::path manifest;  // SUIT envelope describing it
  std::vector<std::string> manifest_keys;  // hex DER SPKI of each SUIT signer, installed on the board
  std::uint64_t manifest_threshold = 1;    // M of N: how many distinct ones must sign a manifest
  std::string image_sha256;        // hex: the files must still be these at every run
  std::string manifest_sha256;
};

// The image-encryption key step: the board holds a key pair for MCUboot image encryption in its secure
// element. `generate`: each board makes its own (its public half goes into the ledger and bundle);
// `install`: the product's key (a PEM private key file) is wrapped to the board's transport key and installed.
enum class EncryptionKeyMode { generate, install };
struct EncryptionProfile {
  EncryptionKeyMode mode = EncryptionKeyMode::generate;
  std::string type = "ecies-p256";  // generate: ecies-p256, ecies-x25519 or rsa-oaep-2048
  std::filesystem::path key;        // install: the product's private image-encryption key (PEM, 0600)
};

// The range of every number in a profile (docs/factory-guide.md): a value outside is refused (exit 2).
struct ProfileRange {
  std::int64_t min;
  std::int64_t max;
};
namespace profile_range {
constexpr ProfileRange validity_days{min_validity_days, max_validity_days};  // one day to 100 years
constexpr ProfileRange quota{0, 1'000'000'000};             // certificates
constexpr ProfileRange checkpoint_every{1, 100'000};        // unit rows
}  // namespace profile_range

struct StationProfile {
  std::string product;
  std::string station_id;
  std::filesystem::path ledger;          // SQLite station ledger
  std::optional<std::int64_t> quota;     // certificates this station may issue
  int checkpoint_every = 16;             // unit rows between signed ledger checkpoints
  std::string station_key;               // KEYREF signing ledger checkpoints and exports (default: CA key)
  std::string ca_key;                    // KEYREF
  std::filesystem::path ca_certificate;
  int validity_days = 3650;
  std::filesystem::path vendor_root;     // silicon vendor root the attestation must chain to
  IdentityMode identity = IdentityMode::csr;
  std::string boot_key_hash;             // hex SHA-256 (MCUboot KEYHASH) of the boot key
  std::optional<std::string> service_url;
  std::filesystem::path trust_anchor;    // PEM installed as the device's service trust anchor
  ManufacturingState final_state = ManufacturingState::device_complete;
  std::optional<FirmwareProfile> firmware;  // no firmware step without it
  std::optional<EncryptionProfile> encryption;  // no encryption-key step without it
};

// Writes the profile as TOML (atomically; refuses to overwrite unless `overwrite`).
std::string profile_to_toml(const StationProfile& profile);
void write_profile(const std::filesystem::path& path, const StationProfile& profile, bool overwrite);
// Reads and checks a profile; relative paths are taken from the profile's directory.
// Throws Error(usage) naming the key for a missing or invalid value.
StationProfile read_profile(const std::filesystem::path& path);
StationProfile parse_profile(const std::string& toml, const std::filesystem::path& base_dir);
// SHA-256 (hex) of the profile file: every ledger row names the profile it was made with.
std::string profile_hash(const std::filesystem::path& path);

}  // namespace kiln
