// Signing and verifying MCUboot image files: one streaming pass, constant memory, atomic output.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "signing/mcuboot_image.hpp"
#include "signing/signer.hpp"

namespace kiln::mcuboot {

// imgtool's sign options, with its meanings.
struct SignOptions {
  ImageVersion version;
  std::uint16_t header_size = 0;
  bool pad_header = false;  // prepend header_size erased bytes instead of overwriting zeros
  std::uint64_t slot_size = 0;
  TrailerLayout trailer;  // align, max_align, max_sectors, overwrite_only
  bool pad = false;       // fill to slot_size and write the trailer (boot magic)
  bool confirm = false;   // implies pad; sets image_ok
  std::uint8_t erased_value = 0xff;
  std::optional<std::uint32_t> security_counter;
  std::vector<Dependency> dependencies;
  std::optional<std::string> boot_record_sw_type;
  std::optional<std::string> vendor_id;  // --vid: UUID or domain name
  std::optional<std::string> class_id;   // --cid: UUID or class name (needs --vid)
  std::vector<Tlv> custom_tlvs;          // protected, tags 0xa0..0xfffe, in command-line order
  bool public_key_full = false;          // PUBKEY instead of KEYHASH
  std::optional<HashAlg> hash;           // nullopt: SHA-384 for ECDSA P-384, SHA-256 otherwise
  std::uint32_t load_addr = 0;           // sets RAM_LOAD
  std::optional<std::uint32_t> rom_fixed;
  bool non_bootable = false;
  std::optional<std::uint32_t> hex_addr;  // base address for HEX output from binary input
};

// Reports bytes processed so far of a known total. Called once per chunk.
using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

struct SignResult {
  ImageHeader header;
  HashAlg hash = HashAlg::sha256;
  Bytes digest;
  std::optional<KeyType> key_type;  // nullopt: unsigned image
  Bytes key_hash;                   // of the MCUboot key bytes, with `hash`
  std::vector<Tlv> protected_tlvs;
  std::uint64_t image_bytes = 0;   // header + payload + TLV areas
  std::uint64_t output_bytes = 0;  // as written (padded to the slot with --pad)
};

// The sign settings checked against each other (e.g. --rom-fixed with --load-addr); throws Error(usage).
void validate(const SignOptions& options);

// Reads `input` once in chunks (binary) or into memory (.hex), writes `output` through a temp file
// renamed at the end. `signer` may be null for an unsigned image carrying only the hash TLV.
SignResult sign_image(const std::filesystem::path& input, const std::filesystem::path& output,
                      const SignOptions& options, const Signer* signer, const Progress& progress = {});

// Everything `image info` shows and `image verify` decides on.
struct ImageReport {
  std::uint64_t file_size = 0;
  ParsedImage image;
  std::optional<HashAlg> hash;  // from the image's hash TLV
  Bytes computed_digest;
  bool hash_ok = false;
  std::optional<Bytes> embedded_key_hash;  // KEYHASH, or the hash of PUBKEY
  std::optional<std::uint16_t> signature_type;
  // Only when a key was given:
  std::optional<std::string> key_hash;  // of the given key, hex
  std::optional<bool> key_hash_ok;
  std::optional<bool> signature_ok;
  std::string failure;  // the precise reason verification failed; empty when it passed
  bool ok() const { return failure.empty(); }
};

// Parses and checks an image file. Structural errors throw FormatError (verification_failed);
// verification results are recorded in the report. `public_key_der` is the key to verify with.
ImageReport inspect_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                          const Progress& progress = {});

// inspect_image, then throws Error(verification_failed) with the reason when it did not pass.
ImageReport verify_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                         const Progress& progress = {});

// RFC 4122 name-based (SHA-1) UUID, as Python's uuid.uuid5.
Bytes uuid5(ByteView name_space, std::string_view name);
// A UUID written as text, or (for names) uuid5 under `name_space`.
Bytes uuid_from_text_or_name(std::string_view text, ByteView name_space);

}  // namespace kiln::mcuboot
