#include "provisioning/station_setup.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.hpp"
#include "manifests/suit_verify.hpp"
#include "provisioning/firmware.hpp"
#include "provisioning/ledger.hpp"
#include "provisioning/station_ca.hpp"
#include "signing/file_key.hpp"
#include "signing/key_info.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

std::string absolute_keyref(const std::string& keyref) {
  return is_pkcs11_uri(keyref) ? keyref : fs::absolute(keyref).string();
}

// The firmware step's files, checked against each other and pinned by digest (exit 3 naming a mismatch).
std::optional<FirmwareProfile> firmware_from(const StationSetup& s, const KeyOptions& keys) {
  if (s.image.empty() && s.manifest.empty() && s.manifest_keys.empty() && !s.manifest_threshold) return std::nullopt;
  if (s.image.empty() || s.manifest.empty() || s.manifest_keys.empty())
    throw Error(ExitCode::usage, "the firmware step needs --image, --manifest and --manifest-key together",
                "name all three, or none for a station without a firmware step");
  // M of N: with several keys the threshold is the operator's decision, never a default.
  if (s.manifest_keys.size() > 1 && !s.manifest_threshold)
    throw Error(ExitCode::usage,
                fmt::format("{} manifest keys need --manifest-threshold M (how many must sign a release)",
                            s.manifest_keys.size()),
                fmt::format("for example --manifest-threshold {} for {} of {}", s.manifest_keys.size() / 2 + 1,
                            s.manifest_keys.size() / 2 + 1, s.manifest_keys.size()));
  std::uint64_t threshold = s.manifest_threshold.value_or(1);
  suit::check_threshold(threshold, s.manifest_keys.size(), "--manifest-threshold");
  std::vector<Bytes> ders;
  for (const auto& keyref : s.manifest_keys) {
    Bytes der = load_public_key(keyref, keys);
    if (std::find(ders.begin(), ders.end(), der) != ders.end())
      throw Error(ExitCode::usage, fmt::format("--manifest-key {} names a key already given", keyref),
                  "each manifest key counts once: name N different keys");
    ders.push_back(std::move(der));
  }
  auto firmware = check_firmware(s.image, s.manifest, ders, threshold, load_public_key(s.boot_key, keys));
  std::vector<std::string> hex;
  for (const auto& der : ders) hex.push_back(to_hex(der));
  return FirmwareProfile{fs::absolute(s.image),        fs::absolute(s.manifest),
                         hex,                          threshold,
                         to_hex(firmware.image_sha256), to_hex(firmware.manifest_digest)};
}

}  // namespace

StationProfile build_station_profile(const StationSetup& s, const fs::path& profile_path, const KeyOptions& keys) {
  if (s.identity != "csr" && s.identity != "inject")
    throw Error(ExitCode::usage, fmt::format("--identity {} is not csr or inject", s.identity));
  StationProfile p;
  p.product = s.product;
  p.station_id = s.station_id.empty() ? "station" : s.station_id;
  fs::path out_dir = fs::absolute(profile_path).parent_path();
  p.ledger = s.ledger.empty() ? out_dir / "station-ledger.sqlite" : fs::absolute(s.ledger);
  p.quota = s.quota;
  p.ca_key = absolute_keyref(s.ca_key);
  p.station_key = s.station_key.empty() ? p.ca_key : absolute_keyref(s.station_key);
  p.ca_certificate = fs::absolute(s.ca_cert);
  p.validity_days = s.validity_days;
  p.vendor_root = fs::absolute(s.vendor_root);
  p.identity = s.identity == "inject" ? IdentityMode::inject : IdentityMode::csr;
  p.boot_key_hash = describe_public_key(load_public_key(s.boot_key, keys)).mcuboot_key_hash;
  if (!s.service.empty()) p.service_url = s.service;
  p.trust_anchor = s.trust_anchor.empty() ? p.ca_certificate : fs::absolute(s.trust_anchor);
  p.final_state = s.final_state.empty()
                      ? (p.service_url ? ManufacturingState::device_complete : ManufacturingState::module_complete)
                      : parse_manufacturing_state(s.final_state);
  p.firmware = firmware_from(s, keys);
  return p;
}

void check_station_profile(const StationProfile& profile, const KeyOptions& keys) {
  auto ca = open_signer(profile.ca_key, keys);
  if (ca->public_key_der() != load_public_key_file(profile.ca_certificate, std::nullopt))
    throw Error(ExitCode::usage,
                fmt::format("CA key {} does not belong to {}", profile.ca_key, profile.ca_certificate.string()),
                "pass the key the CA certificate was made for (openssl x509 -noout -pubkey shows its public part)");
  read_certificate_file(profile.vendor_root.string());
  // A ledger already bound to another station key stays with that station (exit 7).
  if (fs::exists(profile.ledger)) {
    auto station_key = open_signer(profile.station_key, keys)->public_key_der();
    Ledger existing(profile.ledger);
    if (auto owner = existing.station_public_key(); owner && *owner != station_key)
      throw Error(ExitCode::conflict,
                  fmt::format("ledger {} belongs to another station key (sha256 {}…): this profile's station key "
                              "could not append to it",
                              profile.ledger.string(), to_hex(digest(HashAlg::sha256, *owner)).substr(0, 16)),
                  "choose another ledger for this station: --ledger PATH (station.ledger in the profile)");
  }
}

StationProfile init_station(const StationSetup& setup, const fs::path& profile_path, const KeyOptions& keys,
                            bool force) {
  auto profile = build_station_profile(setup, profile_path, keys);
  check_station_profile(profile, keys);
  parse_profile(profile_to_toml(profile), fs::absolute(profile_path).parent_path());  // what we write, we can read
  write_profile(profile_path, profile, force);
  return profile;
}

}  // namespace kiln
