// Signing and verifying MCUboot image files: one streaming pass, constant memory, atomic output.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "signing/image_compression.hpp"
#include "signing/image_crypto.hpp"
#include "signing/mcuboot_image.hpp"
#include "signing/signer.hpp"
#include "signing/uuid.hpp"  // uuid5

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

  // -E/--encrypt: AES-CTR body with a random content key wrapped for `key`; hash and signature cover
  // the plaintext (padded with zeros to 16 bytes).
  struct Encryption {
    EncryptionKey key;
    std::size_t key_bits = 128;         // --encrypt-keylen 128|256
    HmacSha hmac = HmacSha::sha256;     // --hmac-sha (512: X25519 only)
    bool clear = false;                 // -c/--clear: flags and key TLV, plaintext body
  };
  std::optional<Encryption> encryption;
  bool save_enctlv = false;                     // trailer keeps the whole TLV per slot
  Compression compression = Compression::none;  // needs pad_header (as imgtool)
  bool pure = false;                            // Ed25519 over the image itself (SIG_PURE), SHA-512
  enum class Vector { payload, digest };
  std::optional<Vector> vector_to_sign;         // write what must be signed instead of the image
  std::optional<Bytes> signer_public_key;       // --vector-to-sign without a Signer: the key that will sign
  struct FixedSignature {
    Bytes signature;       // as the external signer made it (DER for ECDSA)
    Bytes public_key_der;  // the key it must verify with
  };
  std::optional<FixedSignature> fixed_signature;  // --fix-sig + --fix-sig-pubkey
  bool pad_sig = false;                           // ECDSA signature padded with zeros to 72/103 bytes
  std::optional<std::filesystem::path> sig_out;   // base64 of the signature, written after the image
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
  Bytes signature;                 // the signature TLV's value (empty for unsigned images)
  std::optional<std::uint16_t> encryption_tlv;  // type of the wrapped-key TLV
  bool compressed = false;                      // false also when compression did not shrink it
  std::uint64_t uncompressed_size = 0;          // payload bytes before compression
  std::optional<SignOptions::Vector> vector;    // what was written instead of an image
};

// The sign settings checked against each other (e.g. --rom-fixed with --load-addr); throws Error(usage).
void validate(const SignOptions& options);
// The settings checked against the signing key: imgtool's rule that an ECDSA or RSA signing key needs
// an encryption key of its own type, --pure only with Ed25519, a key and --fix-sig not both.
void validate(const SignOptions& options, const Signer* signer);

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
  // Encrypted images: the key TLV, and whether the plaintext was available to hash.
  std::optional<std::uint16_t> encryption_tlv;
  bool decrypted = false;
  // Compressed images: what the protected TLVs say of the decompressed image, and whether it was checked.
  std::optional<std::uint32_t> decompressed_size;
  std::optional<bool> decompressed_ok;
  std::vector<std::string> unchecked;  // what could not be checked (e.g. "hash over the plaintext: no --decrypt-key")
  std::string failure;  // the precise reason verification failed; empty when it passed
  bool ok() const { return failure.empty(); }
};

// Decrypts an encrypted image: writes the same bytes with the body in plaintext (header, TLVs and trailer
// unchanged, like imgtool's --clear output, so hash and signature still hold: they cover the plaintext).
// A compressed body stays compressed. Throws Error(verification_failed), writing nothing, when `opener`
// does not open it, the image is malformed, or the decrypted body does not match the image's hash.
struct DecryptResult {
  ImageHeader header;
  std::uint16_t encryption_tlv = 0;
  std::uint64_t output_bytes = 0;
};
DecryptResult decrypt_image(const std::filesystem::path& input, const std::filesystem::path& output,
                            const ContentKeyOpener& opener, const Progress& progress = {});

// Decompresses a compressed image as MCUboot does when it installs one: writes the image it decompresses
// to (compression flags cleared, the decompressed size, the protected TLVs without the compression ones,
// DECOMP_SHA and DECOMP_SIGNATURE as its hash and signature), so it verifies as an uncompressed image. An
// encrypted body is decrypted first with `opener` (without one, the body must already be plaintext); the
// output then has a plaintext body and keeps its header's encryption flag, as a decrypted image does.
// Decompression is bounded by DECOMP_SIZE (and kiln's dictionary limit). Throws Error(verification_failed),
// writing nothing, when the image is malformed or the result does not match DECOMP_SHA.
struct DecompressResult {
  std::uint64_t output_bytes = 0;
  std::uint64_t decompressed_size = 0;
};
DecompressResult decompress_image(const std::filesystem::path& input, const std::filesystem::path& output,
                                  const ContentKeyOpener* opener = nullptr);

// Parses and checks an image file. Structural errors throw FormatError (verification_failed);
// verification results are recorded in the report. `public_key_der` is the key to verify with.
// `decrypt`: the image's private encryption key, for checking the hash over the plaintext.
ImageReport inspect_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                          const Progress& progress = {}, const ContentKeyOpener* decrypt = nullptr);

// inspect_image, then throws Error(verification_failed) with the reason when it did not pass.
ImageReport verify_image(const std::filesystem::path& file, const std::optional<Bytes>& public_key_der,
                         const Progress& progress = {}, const ContentKeyOpener* decrypt = nullptr);

// A UUID written as text, or (for names) uuid5 under `name_space`.
Bytes uuid_from_text_or_name(std::string_view text, ByteView name_space);

}  // namespace kiln::mcuboot
