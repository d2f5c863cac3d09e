// The firmware a station loads on every board: a signed MCUboot image, the SUIT envelope that
// describes it and the manifest signer's public key, checked against each other once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"

namespace kiln {

struct StationFirmware {
  std::filesystem::path image;
  std::uint64_t image_size = 0;
  Bytes image_sha256;    // of the file: what the board reports as the slot hash after an upload
  Bytes image_hash_tlv;  // MCUboot's image hash TLV: what real firmware reports as the slot hash
  std::string version;   // major.minor.revision[+build]
  Bytes manifest;        // the SUIT envelope
  Bytes manifest_digest; // SHA-256 of the envelope (the board's installed firmware record)
  std::vector<Bytes> manifest_keys;   // DER SPKI of each SUIT signer the board will trust
  std::uint64_t manifest_threshold = 1;  // how many distinct ones must have signed (M of N)
  std::uint64_t sequence = 0;

  // Whether a slot hash reported by a board is this image.
  bool is_image(ByteView slot_hash) const;
};

// SHA-256 of a file, read in chunks.
Bytes file_sha256(const std::filesystem::path& path);

// Reads the three and checks they agree: the MCUboot image verifies with `boot_key` (DER SPKI;
// without it only the image's hash is checked), at least `manifest_threshold` distinct keys of
// `manifest_keys` signed the envelope, and the manifest declares this image's digest and size. Throws
// Error(verification_failed) naming the mismatch.
StationFirmware check_firmware(const std::filesystem::path& image, const std::filesystem::path& manifest,
                               const std::vector<Bytes>& manifest_keys, std::uint64_t manifest_threshold,
                               const std::optional<Bytes>& boot_key);

}  // namespace kiln
