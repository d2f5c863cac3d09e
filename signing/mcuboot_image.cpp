// MCUboot image format: encoding and bounds-checked parsing of header, TLV areas and trailer.
#include "signing/mcuboot_image.hpp"

#include <fmt/format.h>
#include <charconv>

namespace kiln::mcuboot {
namespace {

struct TlvName {
  std::uint16_t type;
  const char* name;
};
constexpr TlvName tlv_names[] = {
    {tlv::keyhash, "KEYHASH"},
    {tlv::pubkey, "PUBKEY"},
    {tlv::sha256, "SHA256"},
    {tlv::sha384, "SHA384"},
    {tlv::sha512, "SHA512"},
    {tlv::rsa2048_pss, "RSA2048"},
    {0x21, "ECDSA224"},
    {tlv::ecdsa_sig, "ECDSA_SIG"},
    {tlv::rsa3072_pss, "RSA3072"},
    {tlv::ed25519, "ED25519"},
    {0x25, "SIG_PURE"},
    {0x30, "ENCRSA2048"},
    {0x31, "ENCKW"},
    {0x32, "ENCEC256"},
    {0x33, "ENCX25519"},
    {0x34, "ENCX25519_SHA512"},
    {tlv::dependency, "DEPENDENCY"},
    {tlv::security_counter, "SEC_CNT"},
    {tlv::boot_record, "BOOT_RECORD"},
    {0x70, "DECOMP_SIZE"},
    {0x71, "DECOMP_SHA"},
    {0x72, "DECOMP_SIGNATURE"},
    {0x73, "COMP_DEC_SIZE"},
    {tlv::uuid_vid, "UUID_VID"},
    {tlv::uuid_cid, "UUID_CID"},
};

constexpr std::uint8_t classic_boot_magic[boot_magic_size] = {0x77, 0xc2, 0x95, 0xf3, 0x60, 0xd2, 0xef, 0x7f,
                                                              0x35, 0x52, 0x50, 0x0f, 0x2c, 0xb6, 0x79, 0x80};
// The variant used when max_align != 8: two bytes of max_align, then these 14.
constexpr std::uint8_t aligned_boot_magic_tail[14] = {0x2d, 0xe1, 0x5d, 0x29, 0x41, 0x0b, 0x8d,
                                                      0x77, 0x67, 0x9c, 0x11, 0x0f, 0x1f, 0x8a};

std::size_t align_up(std::size_t value, std::size_t alignment) {
  return (value + alignment - 1) / alignment * alignment;
}

// A decimal number without leading zeros (imgtool's regex), or nullopt.
std::optional<std::uint64_t> parse_plain_decimal(std::string_view text) {
  if (text.empty() || text.size() > 10 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

Error version_error(std::string_view text, std::string_view why) {
  return Error(ExitCode::usage, fmt::format("invalid version '{}': {}", text, why),
               "write it as MAJOR.MINOR.REVISION+BUILD, e.g. 1.2.3+4 (major, minor <= 255, revision <= 65535)");
}

}  // namespace

std::string tlv_type_name(std::uint16_t type) {
  for (auto& n : tlv_names)
    if (n.type == type) return n.name;
  return fmt::format("0x{:02x}", type);
}

bool is_known_tlv_type(std::uint16_t type) {
  for (auto& n : tlv_names)
    if (n.type == type) return true;
  return false;
}

FormatError::FormatError(std::size_t offset, const std::string& reason)
    : Error(ExitCode::verification_failed, fmt::format("malformed MCUboot image at offset {:#x}: {}", offset, reason),
            "the file is truncated, corrupted, or not an MCUboot image"),
      offset_(offset),
      reason_(reason) {}

ImageVersion parse_version(std::string_view text) {
  std::string_view rest = text;
  std::string_view build_text;
  if (auto plus = rest.find('+'); plus != std::string_view::npos) {
    build_text = rest.substr(plus + 1);
    rest = rest.substr(0, plus);
  }
  std::vector<std::string_view> parts;
  while (true) {
    auto dot = rest.find('.');
    parts.push_back(rest.substr(0, dot));
    if (dot == std::string_view::npos) break;
    rest = rest.substr(dot + 1);
  }
  if (parts.size() > 3) throw version_error(text, "more than three dotted numbers");
  // imgtool only accepts +BUILD after all three numbers.
  const bool has_build = text.find('+') != std::string_view::npos;
  if (has_build && parts.size() != 3) throw version_error(text, "+BUILD needs MAJOR.MINOR.REVISION before it");
  std::uint64_t numbers[4] = {0, 0, 0, 0};
  for (std::size_t i = 0; i < parts.size(); ++i) {
    auto n = parse_plain_decimal(parts[i]);
    if (!n) throw version_error(text, fmt::format("'{}' is not a number (no leading zeros)", parts[i]));
    numbers[i] = *n;
  }
  if (has_build) {
    auto n = parse_plain_decimal(build_text);
    if (!n) throw version_error(text, fmt::format("build '{}' is not a number", build_text));
    numbers[3] = *n;
  }
  if (numbers[0] > 255 || numbers[1] > 255 || numbers[2] > 65535 || numbers[3] > 0xffffffffu)
    throw version_error(text, "a number is out of range");
  return {static_cast<std::uint8_t>(numbers[0]), static_cast<std::uint8_t>(numbers[1]),
          static_cast<std::uint16_t>(numbers[2]), static_cast<std::uint32_t>(numbers[3])};
}

std::string format_version(const ImageVersion& v) {
  return fmt::format("{}.{}.{}+{}", v.major, v.minor, v.revision, v.build);
}

std::uint32_t auto_security_counter(const ImageVersion& v) {
  return (std::uint32_t{v.major} << 24) + (std::uint32_t{v.minor} << 16) + v.revision;
}

std::vector<Dependency> parse_dependencies(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return Error(ExitCode::usage, fmt::format("invalid --dependencies '{}': {}", text, why),
                 "write them as \"(IMAGE_ID,VERSION), (IMAGE_ID,VERSION)\", e.g. \"(1,1.2.3+0)\"");
  };
  std::vector<Dependency> out;
  std::size_t pos = 0;
  auto skip_space = [&] {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == ',')) ++pos;
  };
  skip_space();
  while (pos < text.size()) {
    if (text[pos] != '(') throw bad("expected '('");
    auto close = text.find(')', pos);
    if (close == std::string_view::npos) throw bad("missing ')'");
    std::string_view inner = text.substr(pos + 1, close - pos - 1);
    auto comma = inner.find(',');
    if (comma == std::string_view::npos) throw bad("expected IMAGE_ID,VERSION inside the parentheses");
    std::string_view id_text = inner.substr(0, comma);
    std::string_view version_text = inner.substr(comma + 1);
    while (!version_text.empty() && version_text.front() == ' ') version_text.remove_prefix(1);
    while (!id_text.empty() && id_text.back() == ' ') id_text.remove_suffix(1);
    unsigned id = 0;
    auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
    if (id_text.empty() || ec != std::errc() || end != id_text.data() + id_text.size() || id > 255)
      throw bad(fmt::format("image id '{}' is not a number 0..255", id_text));
    out.push_back({static_cast<std::uint8_t>(id), parse_version(version_text)});
    pos = close + 1;
    skip_space();
  }
  if (out.empty()) throw bad("no dependency given");
  return out;
}

Bytes encode_dependency(const Dependency& d) {
  Bytes out = {d.image_id, 0, 0, 0, d.version.major, d.version.minor};
  put_le16(out, d.version.revision);
  put_le32(out, d.version.build);
  return out;
}

Bytes encode_header(const ImageHeader& h) {
  Bytes out;
  out.reserve(header_struct_size);
  put_le32(out, image_magic);
  put_le32(out, h.load_addr);
  put_le16(out, h.header_size);
  put_le16(out, h.protected_tlv_size);
  put_le32(out, h.image_size);
  put_le32(out, h.flags);
  out.push_back(h.version.major);
  out.push_back(h.version.minor);
  put_le16(out, h.version.revision);
  put_le32(out, h.version.build);
  put_le32(out, 0);
  return out;
}

ImageHeader parse_header(ByteView bytes) {
  if (bytes.size() < header_struct_size)
    throw FormatError(bytes.size(),
                      fmt::format("file is {} bytes, shorter than the 32-byte image header", bytes.size()));
  std::uint32_t magic = get_le32(bytes, 0);
  if (magic != image_magic)
    throw FormatError(0, fmt::format("wrong magic {:#010x} (expected {:#010x})", magic, image_magic));
  ImageHeader h;
  h.load_addr = get_le32(bytes, 4);
  h.header_size = get_le16(bytes, 8);
  h.protected_tlv_size = get_le16(bytes, 10);
  h.image_size = get_le32(bytes, 12);
  h.flags = get_le32(bytes, 16);
  h.version.major = bytes[20];
  h.version.minor = bytes[21];
  h.version.revision = get_le16(bytes, 22);
  h.version.build = get_le32(bytes, 24);
  if (h.header_size < header_struct_size)
    throw FormatError(8, fmt::format("header size {} is smaller than the 32-byte header itself", h.header_size));
  if (h.protected_tlv_size != 0 && h.protected_tlv_size < tlv_info_size)
    throw FormatError(10, fmt::format("protected TLV size {} cannot hold the 4-byte area info", h.protected_tlv_size));
  return h;
}

std::size_t tlv_area_size(std::span<const Tlv> entries) {
  if (entries.empty()) return 0;
  std::size_t size = tlv_info_size;
  for (auto& e : entries) size += tlv_entry_header_size + e.value.size();
  return size;
}

Bytes encode_tlv_area(std::uint16_t magic, std::span<const Tlv> entries) {
  Bytes out;
  std::size_t size = tlv_area_size(entries);
  if (size == 0) return out;
  if (size > 0xffff)
    throw Error(ExitCode::usage, fmt::format("TLV area of {} bytes exceeds the format's 65535-byte limit", size),
                "use smaller custom TLVs");
  out.reserve(size);
  put_le16(out, magic);
  put_le16(out, static_cast<std::uint16_t>(size));
  for (auto& e : entries) {
    put_le16(out, e.type);
    put_le16(out, static_cast<std::uint16_t>(e.value.size()));
    out.insert(out.end(), e.value.begin(), e.value.end());
  }
  return out;
}

TlvArea parse_tlv_area(ByteView bytes, std::size_t base, std::uint16_t expected_magic) {
  const char* which = expected_magic == protected_tlv_info_magic ? "protected" : "unprotected";
  if (bytes.size() < tlv_info_size)
    throw FormatError(base,
                      fmt::format("truncated {} TLV area: {} bytes left, the area info needs 4", which, bytes.size()));
  std::uint16_t magic = get_le16(bytes, 0);
  if (magic != expected_magic)
    throw FormatError(base,
                      fmt::format("{} TLV area has magic {:#06x} (expected {:#06x})", which, magic, expected_magic));
  TlvArea area;
  area.offset = base;
  area.total = get_le16(bytes, 2);
  if (area.total < tlv_info_size)
    throw FormatError(base + 2, fmt::format("{} TLV area length {} is smaller than its own info", which, area.total));
  if (area.total > bytes.size())
    throw FormatError(base + 2, fmt::format("truncated {} TLV area: it claims {} bytes but only {} remain", which,
                                            area.total, bytes.size()));
  std::size_t pos = tlv_info_size;
  while (pos < area.total) {
    if (area.total - pos < tlv_entry_header_size)
      throw FormatError(base + pos, fmt::format("{} TLV entry header runs past the end of its area", which));
    std::uint16_t type = get_le16(bytes, pos);
    std::uint16_t length = get_le16(bytes, pos + 2);
    std::size_t value_at = pos + tlv_entry_header_size;
    if (length > area.total - value_at)
      throw FormatError(base + pos + 2, fmt::format("TLV {} length {} runs past the end of the {} area ({} bytes left)",
                                                    tlv_type_name(type), length, which, area.total - value_at));
    area.entries.push_back({type, base + value_at, Bytes(bytes.begin() + value_at, bytes.begin() + value_at + length)});
    pos = value_at + length;
  }
  return area;
}

std::size_t trailer_size(const TrailerLayout& layout) {
  std::size_t magic_area = align_up(boot_magic_size, layout.max_align);
  if (layout.overwrite_only) return layout.max_align * 2 + magic_area;
  std::size_t keys = 2 * align_up(layout.enc_key_slot, layout.max_align) * (layout.enc_key_slot != 0);
  return layout.max_sectors * 3 * layout.align + keys + layout.max_align * 4 + magic_area;
}

Bytes boot_magic(std::size_t max_align) {
  if (max_align == default_max_align) return Bytes(std::begin(classic_boot_magic), std::end(classic_boot_magic));
  Bytes out;
  put_le16(out, static_cast<std::uint16_t>(max_align));
  out.insert(out.end(), std::begin(aligned_boot_magic_tail), std::end(aligned_boot_magic_tail));
  return out;
}

Bytes encode_trailer(const TrailerLayout& layout, std::uint8_t erased_value, bool confirm) {
  std::size_t size = trailer_size(layout);
  Bytes out(size - boot_magic_size, erased_value);
  Bytes magic = boot_magic(layout.max_align);
  out.insert(out.end(), magic.begin(), magic.end());
  if (confirm && !layout.overwrite_only) {
    std::size_t magic_area = align_up(boot_magic_size, layout.max_align);
    out[size - magic_area - layout.max_align] = 0x01;
  }
  return out;
}

void check_fits_slot(std::uint64_t image_bytes, const TrailerLayout& layout, std::uint64_t slot_size) {
  std::uint64_t trailer = trailer_size(layout);
  if (image_bytes + trailer > slot_size)
    throw Error(ExitCode::usage,
                fmt::format("image size ({:#x}) + trailer ({:#x}) exceeds requested size {:#x}", image_bytes, trailer,
                            slot_size),
                "raise --slot-size, or lower --max-sectors / --align if your flash allows");
}

TrailerInfo parse_trailer(ByteView tail) {
  TrailerInfo info;
  if (tail.size() < boot_magic_size) return info;
  ByteView magic = tail.subspan(tail.size() - boot_magic_size);
  std::size_t max_align = 0;
  if (std::equal(magic.begin(), magic.end(), std::begin(classic_boot_magic))) {
    max_align = default_max_align;
  } else if (std::equal(magic.begin() + 2, magic.end(), std::begin(aligned_boot_magic_tail))) {
    max_align = get_le16(magic, 0);
    if (max_align != 16 && max_align != 32) return info;
  } else {
    return info;
  }
  info.magic_found = true;
  info.max_align = max_align;
  std::size_t magic_area = align_up(boot_magic_size, max_align);
  auto byte_before_magic = [&](std::size_t slots) -> std::optional<std::uint8_t> {
    std::size_t back = magic_area + slots * max_align;
    if (back > tail.size()) return std::nullopt;
    return tail[tail.size() - back];
  };
  info.image_ok = byte_before_magic(1);
  info.copy_done = byte_before_magic(2);
  info.swap_info = byte_before_magic(3);
  return info;
}

ParsedImage parse_tlv_areas(const ImageHeader& header, ByteView after_payload) {
  ParsedImage parsed;
  parsed.header = header;
  std::size_t base = std::size_t{header.header_size} + header.image_size;
  std::size_t pos = 0;
  if (header.protected_tlv_size != 0) {
    auto area = parse_tlv_area(after_payload, base, protected_tlv_info_magic);
    if (area.total != header.protected_tlv_size)
      throw FormatError(base + 2, fmt::format("protected TLV area is {} bytes but the header says {}", area.total,
                                              header.protected_tlv_size));
    pos = area.total;
    parsed.protected_area = std::move(area);
  } else if (after_payload.size() >= 2 && get_le16(after_payload, 0) == protected_tlv_info_magic) {
    throw FormatError(10, "header says there is no protected TLV area, but one follows the payload");
  }
  parsed.unprotected_area = parse_tlv_area(after_payload.subspan(pos), base + pos, tlv_info_magic);
  parsed.end = base + pos + parsed.unprotected_area.total;
  return parsed;
}

ParsedImage parse_image(ByteView image) {
  ImageHeader header = parse_header(image);
  std::uint64_t payload_end = std::uint64_t{header.header_size} + header.image_size;
  if (payload_end > image.size())
    throw FormatError(12, fmt::format("truncated image: header size {} + image size {} = {} bytes, but the file has {}",
                                      header.header_size, header.image_size, payload_end, image.size()));
  ParsedImage parsed = parse_tlv_areas(header, image.subspan(static_cast<std::size_t>(payload_end)));
  if (parsed.end < image.size()) parsed.trailer = parse_trailer(image.subspan(parsed.end));
  return parsed;
}

std::optional<HashAlg> hash_alg_of_tlv(std::uint16_t type) {
  switch (type) {
    case tlv::sha256:
      return HashAlg::sha256;
    case tlv::sha384:
      return HashAlg::sha384;
    case tlv::sha512:
      return HashAlg::sha512;
    default:
      return std::nullopt;
  }
}

std::uint16_t hash_tlv_type(HashAlg hash) {
  switch (hash) {
    case HashAlg::sha256:
      return tlv::sha256;
    case HashAlg::sha384:
      return tlv::sha384;
    case HashAlg::sha512:
      return tlv::sha512;
  }
  return tlv::sha256;
}

std::uint16_t signature_tlv_type(KeyType type) {
  switch (type) {
    case KeyType::ecdsa_p256:
    case KeyType::ecdsa_p384:
      return tlv::ecdsa_sig;
    case KeyType::ed25519:
      return tlv::ed25519;
    case KeyType::rsa_2048:
      return tlv::rsa2048_pss;
    case KeyType::rsa_3072:
      return tlv::rsa3072_pss;
  }
  return tlv::ecdsa_sig;
}

const TlvEntry* find_tlv(const ParsedImage& image, std::uint16_t type) {
  for (const auto& e : image.unprotected_area.entries)
    if (e.type == type) return &e;
  if (image.protected_area)
    for (const auto& e : image.protected_area->entries)
      if (e.type == type) return &e;
  return nullptr;
}

}  // namespace kiln::mcuboot
