// Delivering one encrypted MCUboot release to many devices (docs/encrypted-delivery.md): the body is
// encrypted once under a content key; each device gets the same bytes with the content key wrapped to its
// own image-encryption key. The key TLV is in the unprotected area, outside the hash and signature.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "core/bytes.hpp"
#include "signing/image_crypto.hpp"
#include "signing/mcuboot_image.hpp"

namespace kiln::mcuboot {

// Where an encrypted image's content-key TLV sits. The per-device form of the image is
// file[0, area_offset) + a new unprotected area + file[area_offset + area_size, file_size).
struct KeyTlvLocation {
  ImageHeader header;
  std::uint64_t file_size = 0;
  std::uint64_t area_offset = 0;  // the unprotected area's info header
  std::uint64_t area_size = 0;    // the whole area, info header included
  std::uint16_t key_type = 0;     // the content-key TLV
  Bytes key_value;
  std::vector<Tlv> area_entries;  // every TLV of the unprotected area, in order (the key TLV included)
};
// Throws FormatError for a malformed image, Error(usage) for one that is not encrypted.
KeyTlvLocation locate_key_tlv(const std::filesystem::path& image);

// The unprotected area with the content key (opened with `opener`) wrapped for `device_key` in place of
// the one it has. Throws Error(verification_failed) when `opener` does not open it.
Bytes rewrapped_area(const KeyTlvLocation& at, const ContentKeyOpener& opener, const EncryptionKey& device_key);

// Streams the image with its unprotected area replaced by `area` to `sink`; returns the bytes sent.
// `from`: skip the first `from` bytes (a ranged download).
std::uint64_t stream_with_area(const std::filesystem::path& image, const KeyTlvLocation& at, ByteView area,
                               const std::function<void(ByteView)>& sink, std::uint64_t from = 0);

// The SHA-256 and size of an encrypted image without its content-key TLV: the same for every wrap of the
// same release, so a SUIT manifest declares it for an encrypted image (kiln manifest create does). For a
// slot whose body the bootloader already decrypted (`reencrypt`: the key that opens its TLV), the body is
// encrypted again on the fly first. nullopt for an image that is not encrypted.
struct KeylessDigest {
  Bytes sha256;
  std::uint64_t size = 0;
};
std::optional<KeylessDigest> keyless_digest(const std::filesystem::path& image,
                                            const ContentKeyOpener* reencrypt = nullptr);

}  // namespace kiln::mcuboot
