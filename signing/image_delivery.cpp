// Per-device re-wrapping of encrypted MCUboot images and their wrap-independent digest.
#include "signing/image_delivery.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/signer.hpp"

namespace kiln::mcuboot {
namespace {

constexpr std::uint32_t encrypted_flags = flag_encrypted_aes128 | flag_encrypted_aes256;

std::uint64_t size_of(const std::filesystem::path& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(ExitCode::not_found, fmt::format("cannot read {}: {}", path.string(), ec.message()));
  return size;
}

}  // namespace

KeyTlvLocation locate_key_tlv(const std::filesystem::path& image) {
  KeyTlvLocation at;
  at.file_size = size_of(image);
  at.header = parse_header(read_file_range(image, 0, header_struct_size));
  if (!(at.header.flags & encrypted_flags))
    throw Error(ExitCode::usage, fmt::format("{} is not an encrypted image (no ENCRYPTED flag)", image.string()));
  std::uint64_t payload_end = std::uint64_t{at.header.header_size} + at.header.image_size;
  if (payload_end > at.file_size)
    throw FormatError(12, fmt::format("truncated image: the payload ends at {} but the file has {} bytes", payload_end,
                                      at.file_size));
  ParsedImage parsed = parse_tlv_areas(at.header, read_file_range(image, payload_end, 2 * 0xffff));
  at.area_offset = parsed.unprotected_area.offset;
  at.area_size = parsed.unprotected_area.total;
  bool found = false;
  for (const auto& e : parsed.unprotected_area.entries) {
    at.area_entries.push_back({e.type, e.value});
    if (is_encryption_tlv(e.type) && !found) {
      found = true;
      at.key_type = e.type;
      at.key_value = e.value;
    }
  }
  if (!found)
    throw FormatError(static_cast<std::size_t>(at.area_offset),
                      "the header says the image is encrypted but no TLV carries its key");
  return at;
}

Bytes rewrapped_area(const KeyTlvLocation& at, const ContentKeyOpener& opener, const EncryptionKey& device_key) {
  std::size_t key_size = (at.header.flags & flag_encrypted_aes256) ? 32 : 16;
  Bytes content_key = opener.open(at.key_type, at.key_value, key_size);
  struct Wipe {
    Bytes& b;
    ~Wipe() { OPENSSL_cleanse(b.data(), b.size()); }
  } wipe{content_key};
  HmacSha hmac = at.key_type == tlv::enc_x25519_sha512 && device_key.kind == EncryptionKeyKind::ecies_x25519
                     ? HmacSha::sha512
                     : HmacSha::sha256;
  auto [type, value] = wrap_content_key(device_key, content_key, hmac);
  std::vector<Tlv> entries;
  for (const auto& e : at.area_entries) entries.push_back(is_encryption_tlv(e.type) ? Tlv{type, value} : e);
  return encode_tlv_area(tlv_info_magic, entries);
}

std::uint64_t stream_with_area(const std::filesystem::path& image, const KeyTlvLocation& at, ByteView area,
                               const std::function<void(ByteView)>& sink, std::uint64_t from) {
  // Three pieces: the file before the area, the new area, the file after the old area.
  const std::uint64_t tail_at = at.area_offset + at.area_size;
  std::uint64_t sent = 0, position = 0;
  auto file_piece = [&](std::uint64_t begin, std::uint64_t end) {
    // The piece covers [position, position + end - begin) of the output.
    std::uint64_t length = end - begin;
    if (from < position + length) {
      std::uint64_t offset = begin + (from > position ? from - position : 0);
      while (offset < end) {
        Bytes chunk = read_file_range(image, offset, static_cast<std::size_t>(std::min<std::uint64_t>(end - offset, 64 * 1024)));
        if (chunk.empty()) throw Error(ExitCode::failure, fmt::format("{} ended early", image.string()));
        sink(chunk);
        sent += chunk.size();
        offset += chunk.size();
      }
    }
    position += length;
  };
  file_piece(0, at.area_offset);
  if (from < position + area.size()) {
    std::uint64_t skip = from > position ? from - position : 0;
    ByteView part = area.subspan(static_cast<std::size_t>(skip));
    sink(part);
    sent += part.size();
  }
  position += area.size();
  file_piece(tail_at, at.file_size);
  return sent;
}

std::optional<KeylessDigest> keyless_digest(const std::filesystem::path& image, const ContentKeyOpener* reencrypt) {
  Bytes head = read_file_range(image, 0, header_struct_size);
  if (head.size() < header_struct_size || get_le32(head, 0) != image_magic) return std::nullopt;
  ImageHeader header = parse_header(head);
  if (!(header.flags & encrypted_flags)) return std::nullopt;
  KeyTlvLocation at = locate_key_tlv(image);
  std::vector<Tlv> kept;
  for (const auto& e : at.area_entries)
    if (!is_encryption_tlv(e.type)) kept.push_back(e);
  Bytes area = encode_tlv_area(tlv_info_magic, kept);
  std::optional<AesCtr> cipher;
  Bytes content_key;
  struct Wipe {
    Bytes& b;
    ~Wipe() { OPENSSL_cleanse(b.data(), b.size()); }
  } wipe{content_key};
  if (reencrypt) {
    content_key = reencrypt->open(at.key_type, at.key_value, (header.flags & flag_encrypted_aes256) ? 32 : 16);
    cipher.emplace(content_key);
  }
  const std::uint64_t body_begin = header.header_size, body_end = body_begin + header.image_size;
  Hasher hasher(HashAlg::sha256);
  KeylessDigest out;
  std::uint64_t output_at = 0;
  Bytes buffer;
  stream_with_area(image, at, area, [&](ByteView piece) {
    // Only bytes before the area can be body bytes (the area follows the payload).
    if (cipher && output_at < body_end && output_at + piece.size() > body_begin) {
      buffer.assign(piece.begin(), piece.end());
      std::uint64_t lo = std::max(output_at, body_begin), hi = std::min<std::uint64_t>(output_at + piece.size(), body_end);
      cipher->apply(ByteView(buffer).subspan(static_cast<std::size_t>(lo - output_at), static_cast<std::size_t>(hi - lo)),
                    buffer.data() + (lo - output_at));
      hasher.update(buffer);
    } else {
      hasher.update(piece);
    }
    output_at += piece.size();
  });
  out.sha256 = hasher.finish();
  out.size = output_at;
  return out;
}

}  // namespace kiln::mcuboot
