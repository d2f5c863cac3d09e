#include "cli/image_views.hpp"

#include <fmt/format.h>

namespace kiln::cli {
namespace {

using namespace kiln::mcuboot;

Json header_json(const ImageHeader& h) {
  Json flags = Json::array();
  if (h.flags & flag_non_bootable) flags.push_back("NON_BOOTABLE");
  if (h.flags & flag_ram_load) flags.push_back("RAM_LOAD");
  if (h.flags & flag_rom_fixed) flags.push_back("ROM_FIXED");
  if (h.flags & flag_encrypted_aes128) flags.push_back("ENCRYPTED_AES128");
  if (h.flags & flag_encrypted_aes256) flags.push_back("ENCRYPTED_AES256");
  if (h.flags & flag_compressed_lzma1) flags.push_back("COMPRESSED_LZMA1");
  if (h.flags & flag_compressed_lzma2) flags.push_back("COMPRESSED_LZMA2");
  if (h.flags & flag_compressed_arm_thumb) flags.push_back("COMPRESSED_ARM_THUMB");
  return {{"magic", fmt::format("{:#010x}", image_magic)},
          {"load_addr", fmt::format("{:#x}", h.load_addr)},
          {"header_size", h.header_size},
          {"protected_tlv_size", h.protected_tlv_size},
          {"image_size", h.image_size},
          {"flags", fmt::format("{:#x}", h.flags)},
          {"flag_names", flags},
          {"version", format_version(h.version)}};
}

// A TLV with its value, plus a readable form for the types kiln understands.
Json tlv_json(const TlvEntry& e) {
  Json j = {{"type", fmt::format("{:#04x}", e.type)},
            {"name", tlv_type_name(e.type)},
            {"offset", e.offset},
            {"length", e.value.size()},
            {"value", to_hex(e.value)}};
  if (e.type == tlv::security_counter && e.value.size() == 4) j["security_counter"] = get_le32(e.value, 0);
  if (e.type == tlv::dependency && e.value.size() == 12) {
    ImageVersion v{e.value[4], e.value[5], get_le16(e.value, 6), get_le32(e.value, 8)};
    j["dependency"] = {{"image_id", e.value[0]}, {"min_version", format_version(v)}};
  }
  return j;
}

Json tlvs_json(const std::optional<TlvArea>& area) {
  Json out = Json::array();
  if (area)
    for (const auto& e : area->entries) out.push_back(tlv_json(e));
  return out;
}

template <typename T>
Json optional_json(const std::optional<T>& value) {
  return value ? Json(*value) : Json(nullptr);
}

Json optional_byte(const std::optional<std::uint8_t>& b) {
  return b ? Json(fmt::format("{:#04x}", *b)) : Json(nullptr);
}

Json trailer_json(const TrailerInfo& t) {
  Json trailer = {{"magic", t.magic_found}};
  if (t.magic_found) {
    trailer["max_align"] = t.max_align;
    trailer["image_ok"] = optional_byte(t.image_ok);
    trailer["confirmed"] = t.image_ok == std::uint8_t{0x01};
    trailer["copy_done"] = optional_byte(t.copy_done);
    trailer["swap_info"] = optional_byte(t.swap_info);
  }
  return trailer;
}

// ok: signature checked; hash-ok: no key given; partly-checked: something could not be checked.
std::string result_word(const std::string& keyref, const ImageReport& r) {
  return !r.ok()                ? "failed"
         : !r.unchecked.empty() ? "partly-checked"
         : keyref.empty()       ? "hash-ok"
                                : "ok";
}

}  // namespace

Json sign_result_json(const std::string& output, const SignResult& r) {
  if (r.vector)
    return {{"output", output},
            {"vector", *r.vector == SignOptions::Vector::digest ? "digest" : "payload"},
            {"hash", hash_name(r.hash)},
            {"digest", to_hex(r.digest)},
            {"output_bytes", r.output_bytes}};
  return {{"output", output},
          {"encrypted", r.encryption_tlv ? Json(tlv_type_name(*r.encryption_tlv)) : Json(false)},
          {"compressed", r.compressed},
          {"version", format_version(r.header.version)},
          {"signed", r.key_type.has_value()},
          {"key_type", r.key_type ? Json(key_type_name(*r.key_type)) : Json(nullptr)},
          {"key_hash", r.key_type ? Json(to_hex(r.key_hash)) : Json(nullptr)},
          {"hash", hash_name(r.hash)},
          {"digest", to_hex(r.digest)},
          {"header_size", r.header.header_size},
          {"image_size", r.header.image_size},
          {"protected_tlv_size", r.header.protected_tlv_size},
          {"image_bytes", r.image_bytes},
          {"output_bytes", r.output_bytes}};
}

Json image_report_json(const std::string& file, const std::string& keyref, const ImageReport& r) {
  return {{"file", file},
          {"size", r.file_size},
          {"header", header_json(r.image.header)},
          {"protected_tlvs", tlvs_json(r.image.protected_area)},
          {"tlvs", tlvs_json(r.image.unprotected_area)},
          {"image_end", r.image.end},
          {"trailer", trailer_json(r.image.trailer)},
          {"hash",
           {{"algorithm", r.hash ? std::string(hash_name(*r.hash)) : ""},
            {"digest", to_hex(r.computed_digest)},
            {"matches", r.hash_ok}}},
          {"key_hash", r.embedded_key_hash ? Json(to_hex(*r.embedded_key_hash)) : Json(nullptr)},
          {"verification",
           {{"key", keyref.empty() ? Json(nullptr) : Json(keyref)},
            {"key_hash", optional_json(r.key_hash)},
            {"key_hash_matches", optional_json(r.key_hash_ok)},
            {"signature_valid", optional_json(r.signature_ok)},
            {"result", result_word(keyref, r)},
            {"reason", r.failure},
            {"unchecked", r.unchecked}}},
          {"encryption",
           r.encryption_tlv ? Json{{"key_tlv", tlv_type_name(*r.encryption_tlv)}, {"decrypted", r.decrypted}}
                            : Json(nullptr)},
          {"compression", r.decompressed_size ? Json{{"decompressed_size", *r.decompressed_size},
                                                     {"decompressed_ok", optional_json(r.decompressed_ok)}}
                                              : Json(nullptr)}};
}

Json verify_result_json(const std::string& file, const std::string& keyref, const ImageReport& r) {
  return {{"file", file},
          {"result", result_word(keyref, r)},
          {"unchecked", r.unchecked},
          {"decrypted", r.decrypted},
          {"decompressed_ok", optional_json(r.decompressed_ok)},
          {"version", format_version(r.image.header.version)},
          {"hash", r.hash ? Json(hash_name(*r.hash)) : Json(nullptr)},
          {"digest", to_hex(r.computed_digest)},
          {"key_hash", optional_json(r.key_hash)}};
}

Json decrypt_result_json(const std::string& output, const DecryptResult& r) {
  return {{"output", output},
          {"key_tlv", tlv_type_name(r.encryption_tlv)},
          {"version", format_version(r.header.version)},
          {"image_size", r.header.image_size},
          {"output_bytes", r.output_bytes}};
}

}  // namespace kiln::cli
