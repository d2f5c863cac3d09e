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
  // Without a threshold each key must have made one of the signatures; with one, at least `threshold`
  // distinct keys of the set must have (M of N: count_trusted_signatures).
  std::vector<TrustedKey> keys;
  std::optional<std::size_t> threshold;
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

// The M-of-N rule: how many DISTINCT trusted keys made a valid signature. A key listed twice (same DER)
// counts once, so does a key that signed twice; signatures no trusted key verifies (an unknown key, or a
// bad signature) count for nothing and are reported as `untrusted`.
struct SignatureCount {
  std::size_t valid = 0;           // distinct trusted keys with a valid signature
  std::size_t required = 0;        // the threshold M
  std::size_t trusted = 0;         // distinct keys in the trusted set (N)
  std::size_t untrusted = 0;       // signatures no trusted key verifies
  std::vector<std::string> signers;  // names of the trusted keys that signed, in signature order
  bool met() const { return required > 0 && valid >= required; }
  // e.g. "1 valid signature from the trusted keys, 2 required (threshold 2 of 3); 1 signature by an unknown key ignored"
  std::string describe() const;
};

struct VerifyReport {
  Digest manifest_digest;
  std::uint64_t sequence_number = 0;
  std::vector<SignatureCheck> signatures;
  std::vector<std::string> severable_checked;  // carried in the envelope and matching their digests
  std::vector<std::string> severed;            // held by digest only
  std::vector<ImageCheck> images;
  std::optional<SignatureCount> count;  // set when VerifyOptions::threshold was
};

// Counts the envelope's signatures against a trusted key set (digest and structure are checked first; throws
// Error(verification_failed) for a malformed envelope or a manifest that does not match its digest, or a
// trusted key that is no valid public key). Never throws for a count below the threshold: check met().
SignatureCount count_trusted_signatures(ByteView envelope, const std::vector<TrustedKey>& keys, std::size_t threshold);

// The threshold a key set of n keys may have: 1 <= m <= n (n >= 1). Throws Error(usage) naming `what` otherwise.
void check_threshold(std::size_t m, std::size_t n, const std::string& what);

// Throws Error(verification_failed) with the reason on the first failed check, including malformed input.
VerifyReport verify_envelope(ByteView input, const VerifyOptions& options);

// Every image-digest (with the image-size set beside it, if any) the manifest's sequences declare.
struct DeclaredImage {
  Digest digest;
  std::optional<std::uint64_t> size;
};
std::vector<DeclaredImage> declared_images(const Envelope& envelope);

}  // namespace kiln::suit
