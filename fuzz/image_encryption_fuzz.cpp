// libFuzzer target for encrypted and compressed MCUboot images: the encryption TLVs (ECIES-P256, ECIES-X25519)
// opened with fixed test keys, the LZMA2 decoder, and per-device delivery (locating the key TLV, re-wrapping it,
// the digest without it). Any bytes must give a result or a kiln::Error, never a
// crash, and a hostile LZMA2 stream must not make the decoder allocate or produce more than its limits.
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>

#include "core/error.hpp"
#include "fuzz/scratch_dir.hpp"
#include "signing/image_compression.hpp"
#include "signing/image_crypto.hpp"
#include "signing/image_delivery.hpp"
#include "signing/mcuboot_sign.hpp"

using namespace kiln::mcuboot;

namespace {

// Test keys only (the mcuboot-more vectors' enc-p256.pem and enc-x25519.pem): never use them for anything else.
constexpr const char* P256_PEM =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdJMSw0CKYtW/R7Bb\n"
    "xzds5w4l2sIQdECAq1gcpiqcwWyhRANCAAQjZIN7hF1h6HOARVLzPMSTPj3Q44bt\n"
    "n00waDODIsVCiLqvRcsokdKWzcQZ6t1fqiB4xVh4/rd1VvS7jGg3ufON\n"
    "-----END PRIVATE KEY-----\n";
constexpr const char* X25519_PEM =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VuBCIEIJj79UFevhKHKTGJ57DNBawRNWipu+9+vfxw9yAy3cVw\n"
    "-----END PRIVATE KEY-----\n";

struct Keys {
  std::filesystem::path dir;
  std::unique_ptr<ContentKeyOpener> p256, x25519;
  std::filesystem::path image;
  Keys() {
    dir = kiln::fuzz::scratch_dir();
    auto write = [&](const char* name, const std::string& text) {
      std::ofstream(dir / name) << text;
      return (dir / name).string();
    };
    p256 = load_content_key_opener(write("p256.pem", P256_PEM));
    x25519 = load_content_key_opener(write("x25519.pem", X25519_PEM));
    image = dir / "image.bin";
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Keys keys;
  kiln::ByteView bytes(data, size);
  // The decoder alone, with a small output limit that it must respect.
  constexpr std::uint64_t limit = 1 << 20;
  std::uint64_t produced = 0;
  std::optional<std::uint64_t> decoded;
  try {
    decoded = decompress(bytes, size > 0 && (data[size - 1] & 1), limit,
                         [&](kiln::ByteView piece) { produced += piece.size(); });
  } catch (const kiln::Error&) {
  }
  if (produced > limit || (decoded && *decoded != produced)) std::abort();
  // The whole image path: parse, open the key TLV, decrypt, decompress, hash.
  {
    std::ofstream out(keys.image, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  for (const ContentKeyOpener* opener : {keys.p256.get(), keys.x25519.get(), static_cast<ContentKeyOpener*>(nullptr)}) {
    std::optional<ImageReport> report;
    try {
      report = inspect_image(keys.image, std::nullopt, {}, opener);
    } catch (const kiln::Error&) {
    }
    if (report && report->decompressed_ok && !report->decompressed_size) std::abort();
  }
  // Per-device delivery as kiln-service does it: the key TLV, a re-wrap to the X25519 key, the device image.
  // Whatever was located and re-wrapped streams (the image is the one just located) with the new area in
  // place of the old: a throw there is a finding, not a refusal.
  std::optional<KeyTlvLocation> at;
  std::optional<kiln::Bytes> area;
  try {
    at = locate_key_tlv(keys.image);
    static const EncryptionKey device = encryption_key_from_spki(keys.x25519->public_key_der(), "device");
    area = rewrapped_area(*at, *keys.p256, device);
  } catch (const kiln::Error&) {
  }
  if (at && at->area_offset + at->area_size > at->file_size) std::abort();
  if (at && area) {
    std::uint64_t streamed = stream_with_area(keys.image, *at, *area, [](kiln::ByteView) {});
    if (streamed != at->file_size - at->area_size + area->size()) std::abort();
  }
  for (const ContentKeyOpener* opener : {keys.p256.get(), static_cast<ContentKeyOpener*>(nullptr)}) {
    try {
      (void)keyless_digest(keys.image, opener);
    } catch (const kiln::Error&) {
    }
  }
  return 0;
}
