// `kiln factory init`: a station profile made from what the operator names, cross-checked before it is
// written (the CA key signs for the CA certificate, the vendor root is a certificate, the firmware's files
// match each other, the ledger is not bound to another station key).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "provisioning/profile.hpp"
#include "signing/key_ref.hpp"

namespace kiln {

struct StationSetup {
  std::string ca_key, ca_cert, vendor_root, boot_key, product;
  std::string service;            // empty: no service URL installed (final state module-complete by default)
  std::string identity = "csr";   // csr or inject
  std::string station_id;         // empty: "station"
  std::string ledger;             // empty: station-ledger.sqlite beside the profile
  std::string station_key;        // empty: the CA key
  std::string trust_anchor;       // empty: the CA certificate
  std::string final_state;        // empty: device-complete with a service, module-complete without
  std::string image, manifest;              // the firmware step: both and at least one manifest key, or none
  std::vector<std::string> manifest_keys;    // KEYREFs of the SUIT signers installed on each board (N)
  std::optional<std::uint64_t> manifest_threshold;  // M; required when there is more than one key
  std::optional<std::int64_t> quota;
  int validity_days = 3650;
};

// The profile these choices mean, with absolute paths; the keys' public parts are read (boot key hash,
// firmware pinned by digest: exit 3 naming a mismatch). Usage errors name the option.
StationProfile build_station_profile(const StationSetup& setup, const std::filesystem::path& profile_path,
                                     const KeyOptions& keys);

// What the station will need, checked now: exit 2 when the CA key does not belong to the CA certificate,
// exit 7 when the ledger already belongs to another station key.
void check_station_profile(const StationProfile& profile, const KeyOptions& keys);

// build, check, then write the profile (refusing to overwrite without `force`, exit 7), after checking that
// what is written reads back. Returns the profile written.
StationProfile init_station(const StationSetup& setup, const std::filesystem::path& profile_path,
                            const KeyOptions& keys, bool force);

}  // namespace kiln
