// The MCUboot image format as pure functions over bytes: header, TLV areas, trailer, version rules.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "signing/signer.hpp"

namespace kiln::mcuboot {

constexpr std::uint32_t image_magic = 0x96f3b83d;
constexpr std::size_t header_struct_size = 32;
constexpr std::uint16_t tlv_info_magic = 0x6907;            // unprotected area
constexpr std::uint16_t protected_tlv_info_magic = 0x6908;  // protected area (hashed)
constexpr std::size_t tlv_info_size = 4;
constexpr std::size_t tlv_entry_header_size = 4;
constexpr std::size_t default_max_sectors = 128;
constexpr std::size_t default_max_align = 8;
constexpr std::size_t boot_magic_size = 16;

// Header flags (bootutil/image.h).
constexpr std::uint32_t flag_non_bootable = 0x10;
constexpr std::uint32_t flag_ram_load = 0x20;
constexpr std::uint32_t flag_rom_fixed = 0x100;

// TLV types as MCUboot's code defines them (not its design doc: UUID_VID/CID are 0x74/0x75).
namespace tlv {
constexpr std::uint16_t keyhash = 0x01;
constexpr std::uint16_t pubkey = 0x02;
constexpr std::uint16_t sha256 = 0x10;
constexpr std::uint16_t sha384 = 0x11;
constexpr std::uint16_t sha512 = 0x12;
constexpr std::uint16_t rsa2048_pss = 0x20;
constexpr std::uint16_t ecdsa_sig = 0x22;
constexpr std::uint16_t rsa3072_pss = 0x23;
constexpr std::uint16_t ed25519 = 0x24;
constexpr std::uint16_t dependency = 0x40;
constexpr std::uint16_t security_counter = 0x50;
constexpr std::uint16_t boot_record = 0x60;
constexpr std::uint16_t uuid_vid = 0x74;
constexpr std::uint16_t uuid_cid = 0x75;
constexpr std::uint16_t vendor_min = 0xa0;  // custom TLVs: 0x00a0..0xfffe
constexpr std::uint16_t vendor_max = 0xfffe;
}  // namespace tlv

// "SHA256", "ED25519", "0xa5"... for messages and `image info`.
std::string tlv_type_name(std::uint16_t type);
bool is_known_tlv_type(std::uint16_t type);

// A structural problem in an image: where it is and what is wrong. Exit code: verification_failed.
class FormatError : public Error {
 public:
  FormatError(std::size_t offset, const std::string& reason);
  std::size_t offset() const { return offset_; }
  const std::string& reason() const { return reason_; }

 private:
  std::size_t offset_;
  std::string reason_;
};

struct ImageVersion {
  std::uint8_t major = 0;
  std::uint8_t minor = 0;
  std::uint16_t revision = 0;
  std::uint32_t build = 0;
};
// imgtool's X[.Y[.Z[+B]]] without leading zeros; throws Error(usage) naming the bad text.
ImageVersion parse_version(std::string_view text);
std::string format_version(const ImageVersion& version);
// --security-counter auto: (major << 24) + (minor << 16) + revision.
std::uint32_t auto_security_counter(const ImageVersion& version);

struct Dependency {
  std::uint8_t image_id = 0;
  ImageVersion version;
};
// imgtool's "(id,version), (id,version)".
std::vector<Dependency> parse_dependencies(std::string_view text);
Bytes encode_dependency(const Dependency& dependency);

struct ImageHeader {
  std::uint32_t load_addr = 0;
  std::uint16_t header_size = 0;
  std::uint16_t protected_tlv_size = 0;  // including the 4-byte info, 0 when there is no area
  std::uint32_t image_size = 0;          // payload only
  std::uint32_t flags = 0;
  ImageVersion version;
};
// 32 bytes, little-endian.
Bytes encode_header(const ImageHeader& header);
// Reads and checks the 32-byte header at the start of `bytes` (magic, header size >= 32).
ImageHeader parse_header(ByteView bytes);
// Bytes covered by the image hash: header, payload and protected TLV area.
inline std::uint64_t hashed_size(const ImageHeader& h) {
  return std::uint64_t{h.header_size} + h.image_size + h.protected_tlv_size;
}

struct Tlv {
  std::uint16_t type = 0;
  Bytes value;
};
// Info header + entries; empty when `entries` is empty (imgtool writes no empty area).
Bytes encode_tlv_area(std::uint16_t magic, std::span<const Tlv> entries);
std::size_t tlv_area_size(std::span<const Tlv> entries);

struct TlvEntry {
  std::uint16_t type = 0;
  std::size_t offset = 0;  // of the value, from the start of the image
  Bytes value;
};
struct TlvArea {
  std::size_t offset = 0;   // of the info header, from the start of the image
  std::uint16_t total = 0;  // as the info header says (bytes incl. the info)
  std::vector<TlvEntry> entries;
};
// Parses the area whose info header starts at `bytes[0]` with the expected magic.
// `base` is the area's offset in the image, used for error offsets.
TlvArea parse_tlv_area(ByteView bytes, std::size_t base, std::uint16_t expected_magic);

// Trailer geometry (imgtool's _trailer_size) and contents.
struct TrailerLayout {
  std::size_t align = 1;  // flash write size: 1, 2, 4, 8, 16, 32
  std::size_t max_align = default_max_align;
  std::size_t max_sectors = default_max_sectors;
  bool overwrite_only = false;
  // Encrypted images: bytes the bootloader keeps per slot for the content key (imgtool: the key, or
  // the whole encryption TLV with --save-enctlv, aligned to max_align); two slots' worth. 0 otherwise.
  std::size_t enc_key_slot = 0;
};
std::size_t trailer_size(const TrailerLayout& layout);
// The boot magic for this max_align (the classic 16 bytes for 8, the aligned variant otherwise).
Bytes boot_magic(std::size_t max_align);
// The trailer bytes that end a padded slot: erased fill, image_ok if confirmed, magic.
Bytes encode_trailer(const TrailerLayout& layout, std::uint8_t erased_value, bool confirm);
// Throws Error(usage) with imgtool's message when image + trailer does not fit the slot.
void check_fits_slot(std::uint64_t image_bytes, const TrailerLayout& layout, std::uint64_t slot_size);

struct TrailerInfo {
  bool magic_found = false;
  std::size_t max_align = default_max_align;
  std::optional<std::uint8_t> image_ok, copy_done, swap_info;  // raw bytes when the magic is there
};
// Looks at the last bytes of a slot-sized image for the boot magic.
TrailerInfo parse_trailer(ByteView slot_tail);

// A whole image in memory, parsed without trusting any length field.
struct ParsedImage {
  ImageHeader header;
  std::optional<TlvArea> protected_area;
  TlvArea unprotected_area;
  std::size_t end = 0;  // offset just past the unprotected area
  TrailerInfo trailer;  // from the bytes after `end`, if any
};
ParsedImage parse_image(ByteView image);
// The first TLV of `type`: the unprotected area first, then the protected one; nullptr when there is none.
const TlvEntry* find_tlv(const ParsedImage& image, std::uint16_t type);
// The TLV areas of an image whose header is already parsed: `after_payload` starts at offset
// header_size + image_size and holds at least the TLV areas (more is fine). No trailer.
ParsedImage parse_tlv_areas(const ImageHeader& header, ByteView after_payload);

// Hash algorithm and TLV type for a hash TLV, or nullopt for other types.
std::optional<HashAlg> hash_alg_of_tlv(std::uint16_t type);
std::uint16_t hash_tlv_type(HashAlg hash);
// Signature TLV type MCUboot expects for a key type.
std::uint16_t signature_tlv_type(KeyType type);

}  // namespace kiln::mcuboot
