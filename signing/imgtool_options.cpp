#include "signing/imgtool_options.hpp"

#include <fmt/format.h>

#include <cctype>
#include <charconv>

#include "core/base64.hpp"
#include "core/error.hpp"
#include "core/files.hpp"

namespace kiln::mcuboot {
namespace {

std::optional<HashAlg> parse_sha(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (text == "256") return HashAlg::sha256;
  if (text == "384") return HashAlg::sha384;
  if (text == "512") return HashAlg::sha512;
  throw Error(ExitCode::usage, fmt::format("--sha '{}' is not one of auto, 256, 384, 512", text));
}

std::uint32_t number32(const std::string& text, std::string_view option) {
  return static_cast<std::uint32_t>(parse_imgtool_number(text, option, 0xffffffff));
}

Compression parse_compression(const std::string& text) {
  if (text == "disabled") return Compression::none;
  if (text == "lzma2") return Compression::lzma2;
  if (text == "lzma2armthumb") return Compression::lzma2_arm_thumb;
  throw Error(ExitCode::usage, fmt::format("--compression '{}' is not one of disabled, lzma2, lzma2armthumb", text));
}

void encryption_options(const ImgtoolSignArgs& a, const KeyOptions& keys, SignOptions& o) {
  if (a.encrypt.empty()) {
    if (a.clear || a.encrypt_keylen != "128" || a.hmac_sha != "auto")
      throw Error(ExitCode::usage, "-c/--clear, --encrypt-keylen and --hmac-sha need -E/--encrypt KEY");
    return;
  }
  if (a.encrypt_keylen != "128" && a.encrypt_keylen != "256")
    throw Error(ExitCode::usage, fmt::format("--encrypt-keylen '{}' is not 128 or 256", a.encrypt_keylen));
  if (a.hmac_sha != "auto" && a.hmac_sha != "256" && a.hmac_sha != "512")
    throw Error(ExitCode::usage, fmt::format("--hmac-sha '{}' is not one of auto, 256, 512", a.hmac_sha));
  SignOptions::Encryption e;
  e.key = load_encryption_key(a.encrypt, keys);
  e.key_bits = a.encrypt_keylen == "256" ? 256 : 128;
  e.hmac = a.hmac_sha == "512" ? HmacSha::sha512 : HmacSha::sha256;
  e.clear = a.clear;
  o.encryption = std::move(e);
}

void external_signing_options(const ImgtoolSignArgs& a, const KeyOptions& keys, SignOptions& o) {
  if (a.vector_to_sign == "payload") o.vector_to_sign = SignOptions::Vector::payload;
  else if (a.vector_to_sign == "digest") o.vector_to_sign = SignOptions::Vector::digest;
  else if (!a.vector_to_sign.empty())
    throw Error(ExitCode::usage, fmt::format("--vector-to-sign '{}' is not payload or digest", a.vector_to_sign));
  if (!a.fix_sig.empty()) {
    if (a.fix_sig_pubkey.empty())
      throw Error(ExitCode::usage, "public key of the fixed signature is not specified",
                  "pass --fix-sig-pubkey FILE with --fix-sig");
    o.fixed_signature =
        SignOptions::FixedSignature{read_base64_signature(a.fix_sig), load_public_key(a.fix_sig_pubkey, keys)};
  } else if (!a.fix_sig_pubkey.empty()) {
    if (a.vector_to_sign.empty())
      throw Error(ExitCode::usage, "--fix-sig-pubkey needs --fix-sig FILE (or --vector-to-sign)");
    o.signer_public_key = load_public_key(a.fix_sig_pubkey, keys);
  }
  o.pad_sig = a.pad_sig;
  if (!a.sig_out.empty()) o.sig_out = a.sig_out;
}

}  // namespace

std::uint64_t parse_imgtool_number(std::string_view text, std::string_view option, std::uint64_t max) {
  std::string_view digits = text;
  int base = 10;
  if (digits.size() > 2 && digits[0] == '0') {
    char p = static_cast<char>(std::tolower(static_cast<unsigned char>(digits[1])));
    base = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 10;
    if (base != 10) digits.remove_prefix(2);
  }
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || value > max)
    throw Error(ExitCode::usage, fmt::format("{} '{}' is not a number up to {:#x}", option, text, max),
                "write it in decimal or with a 0x prefix");
  return value;
}

Bytes custom_tlv_value(const std::string& value) {
  if (value.starts_with("0x")) {
    if ((value.size() - 2) % 2 != 0)
      throw Error(ExitCode::usage, fmt::format("custom TLV value '{}' has an odd number of hex digits", value));
    return from_hex(value);
  }
  return Bytes(value.begin(), value.end());
}

Bytes read_base64_signature(const std::string& path) {
  std::string text = read_text_file(path);
  std::string clean;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) clean.push_back(c);
  auto signature = from_base64(clean);
  if (!signature || signature->empty())
    throw Error(ExitCode::failure, fmt::format("{} does not hold a base64 signature", path),
                "write the signature as base64 (openssl base64 -A), as imgtool's --fix-sig reads it");
  return *signature;
}

SignOptions sign_options(const ImgtoolSignArgs& a, const KeyOptions& keys) {
  SignOptions o;
  o.version = parse_version(a.version);
  o.header_size = static_cast<std::uint16_t>(parse_imgtool_number(a.header_size, "--header-size", 0xffff));
  o.pad_header = a.pad_header;
  o.slot_size = number32(a.slot_size, "--slot-size");
  o.trailer.align = parse_imgtool_number(a.align, "--align", 32);
  o.trailer.max_align = parse_imgtool_number(a.max_align, "--max-align", 32);
  if (!a.max_sectors.empty()) o.trailer.max_sectors = parse_imgtool_number(a.max_sectors, "--max-sectors", 0xffff);
  o.trailer.overwrite_only = a.overwrite_only;
  o.pad = a.pad || a.test;
  o.confirm = a.confirm;
  if (a.erased_val != "0" && a.erased_val != "0xff")
    throw Error(ExitCode::usage, fmt::format("--erased-val '{}' is not 0 or 0xff", a.erased_val));
  o.erased_value = a.erased_val == "0" ? 0x00 : 0xff;
  if (a.security_counter == "auto")
    o.security_counter = auto_security_counter(o.version);
  else if (!a.security_counter.empty())
    o.security_counter = number32(a.security_counter, "--security-counter");
  if (!a.dependencies.empty()) o.dependencies = parse_dependencies(a.dependencies);
  if (!a.boot_record.empty()) o.boot_record_sw_type = a.boot_record;
  if (!a.vid.empty()) o.vendor_id = a.vid;
  if (!a.cid.empty()) o.class_id = a.cid;
  for (const auto& c : a.custom_tlvs)
    o.custom_tlvs.push_back({static_cast<std::uint16_t>(parse_imgtool_number(c.tag, "custom TLV tag", 0xffff)),
                             c.file ? read_file(c.value) : custom_tlv_value(c.value)});
  if (a.public_key_format != "hash" && a.public_key_format != "full")
    throw Error(ExitCode::usage, fmt::format("--public-key-format '{}' is not hash or full", a.public_key_format));
  o.public_key_full = a.public_key_format == "full";
  o.hash = parse_sha(a.sha);
  if (!a.load_addr.empty()) o.load_addr = number32(a.load_addr, "--load-addr");
  if (!a.rom_fixed.empty()) o.rom_fixed = number32(a.rom_fixed, "--rom-fixed");
  o.non_bootable = a.non_bootable;
  if (!a.hex_addr.empty()) o.hex_addr = number32(a.hex_addr, "--hex-addr");
  encryption_options(a, keys, o);
  o.save_enctlv = a.save_enctlv;
  o.compression = parse_compression(a.compression);
  o.pure = a.pure;
  external_signing_options(a, keys, o);
  return o;
}

}  // namespace kiln::mcuboot
