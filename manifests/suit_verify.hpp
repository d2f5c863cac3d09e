// Checking a SUIT envelope: manifest digest, COSE signatures, severable elements, images, sequence floor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/bytes.hpp"
#include "manifests/suit_envelope.hpp"

namespace kiln::suit {

struct TrustedKey {
  std::string name;  // for messages: the KEYREF
  Bytes public_key_der;
};

struct VerifyOptions {
  std::vector<TrustedKey> keys;  // each must have made one of the signatures
  bool allow_unsigned = false;   // accept an envelope without signatures (digests are still checked)
  std::vector<std::filesystem::path> images;
  std::optional<std::uint64_t> min_sequence;
};

struct SignatureCheck {
  std::string algorithm;
  std::string key;  // the trusted key that verified it, empty if none did
};

struct ImageCheck {
  std::filesystem::path path;
  Digest digest;
  std::uint64_t size = 0;
};

struct VerifyReport {
  Digest manifest_digest;
  std::uint64_t sequence_number = 0;
  std::vector<SignatureCheck> signatures;
  std::vector<std::string> severable_checked;  // carried in the envelope and matching their digests
  std::vector<std::string> severed;            // held by digest only
  std::vector<ImageCheck> images;
};

// Throws Error(verification_failed) with the reason on the first failed check, including malformed input.
VerifyReport verify_envelope(ByteView input, const VerifyOptions& options);

// Every image-digest (with the image-size set beside it, if any) the manifest's sequences declare.
struct DeclaredImage {
  Digest digest;
  std::optional<std::uint64_t> size;
};
std::vector<DeclaredImage> declared_images(const Envelope& envelope);

}  // namespace kiln::suit
