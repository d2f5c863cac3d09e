// kiln image: sign, verify and inspect MCUboot images (imgtool's option names and meanings).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <openssl/evp.h>

#include <cctype>
#include <charconv>

#include "cli/context.hpp"
#include "cli/output_file.hpp"
#include "cli/progress.hpp"
#include "commands/commands.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/key_ref.hpp"
#include "signing/mcuboot_sign.hpp"

namespace kiln::commands {
namespace {

using namespace kiln::mcuboot;

// Python's int(text, 0), as imgtool reads sizes and addresses: 0x.., 0o.., 0b.. or decimal.
std::uint64_t parse_number(const std::string& text, std::string_view option, std::uint64_t max) {
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

std::optional<HashAlg> parse_sha(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (text == "256") return HashAlg::sha256;
  if (text == "384") return HashAlg::sha384;
  return HashAlg::sha512;
}

// imgtool's --custom-tlv value: 0x-prefixed hex bytes, otherwise the UTF-8 string itself.
Bytes custom_tlv_value(const std::string& value) {
  if (value.starts_with("0x")) {
    if ((value.size() - 2) % 2 != 0)
      throw Error(ExitCode::usage, fmt::format("custom TLV value '{}' has an odd number of hex digits", value));
    return from_hex(value);
  }
  return Bytes(value.begin(), value.end());
}

// The library reports (done, total); the bar is made at the first report, once the total is known.
Progress progress_bar(const cli::Context& ctx, std::string label) {
  auto bar = std::make_shared<std::unique_ptr<cli::ProgressBar>>();
  return [&ctx, label = std::move(label), bar](std::uint64_t done, std::uint64_t total) {
    if (!*bar) *bar = std::make_unique<cli::ProgressBar>(ctx, label, total);
    (*bar)->update(done);
    if (done >= total) (*bar)->finish();
  };
}

struct SignArgs {
  std::string input, output, key;
  std::string version, header_size, slot_size, align = "1", max_align = "8", max_sectors;
  std::string security_counter, dependencies, erased_val = "0xff", load_addr, rom_fixed, hex_addr;
  std::string sha = "auto", public_key_format = "hash", vid, cid, boot_record, endian = "little";
  std::vector<std::pair<std::string, std::string>> custom_tlvs, custom_tlv_files;
  // Both options, interleaved as on the command line: file=true for --custom-tlv-file.
  struct CustomTlvArg {
    std::string tag, value;
    bool file;
  };
  std::vector<CustomTlvArg> custom_in_order;
  std::string encrypt, encrypt_keylen = "128", hmac_sha = "auto", compression = "disabled";
  std::string sig_out, vector_to_sign, fix_sig, fix_sig_pubkey;
  bool clear = false, save_enctlv = false, pure = false, pad_sig = false;
  bool pad_header = false, pad = false, confirm = false, test = false, non_bootable = false, overwrite_only = false,
       force = false;
  cli::SecretSource passphrase;
};

// imgtool's --fix-sig file: base64 of the signature (whitespace ignored, as Python's b64decode does).
Bytes read_base64_signature(const std::string& path) {
  std::string text = read_text_file(path);
  std::string clean;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) clean.push_back(c);
  Bytes out(clean.size());
  int n = clean.empty() ? 0
                        : EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(clean.data()),
                                          static_cast<int>(clean.size()));
  if (n <= 0 || clean.size() % 4 != 0)
    throw Error(ExitCode::failure, fmt::format("{} does not hold a base64 signature", path),
                "write the signature as base64 (openssl base64 -A), as imgtool's --fix-sig reads it");
  std::size_t padding = clean.ends_with("==") ? 2 : clean.ends_with("=") ? 1 : 0;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

SignOptions sign_options(const SignArgs& a, const cli::Context& ctx) {
  SignOptions o;
  o.version = parse_version(a.version);
  o.header_size = static_cast<std::uint16_t>(parse_number(a.header_size, "--header-size", 0xffff));
  o.pad_header = a.pad_header;
  o.slot_size = parse_number(a.slot_size, "--slot-size", 0xffffffff);
  o.trailer.align = parse_number(a.align, "--align", 32);
  o.trailer.max_align = parse_number(a.max_align, "--max-align", 32);
  if (!a.max_sectors.empty()) o.trailer.max_sectors = parse_number(a.max_sectors, "--max-sectors", 0xffff);
  o.trailer.overwrite_only = a.overwrite_only;
  o.pad = a.pad || a.test;
  o.confirm = a.confirm;
  o.erased_value = a.erased_val == "0" ? 0x00 : 0xff;
  if (a.security_counter == "auto")
    o.security_counter = auto_security_counter(o.version);
  else if (!a.security_counter.empty())
    o.security_counter = static_cast<std::uint32_t>(parse_number(a.security_counter, "--security-counter", 0xffffffff));
  if (!a.dependencies.empty()) o.dependencies = parse_dependencies(a.dependencies);
  if (!a.boot_record.empty()) o.boot_record_sw_type = a.boot_record;
  if (!a.vid.empty()) o.vendor_id = a.vid;
  if (!a.cid.empty()) o.class_id = a.cid;
  for (const auto& c : a.custom_in_order)
    o.custom_tlvs.push_back({static_cast<std::uint16_t>(parse_number(c.tag, "custom TLV tag", 0xffff)),
                             c.file ? read_file(c.value) : custom_tlv_value(c.value)});
  o.public_key_full = a.public_key_format == "full";
  o.hash = parse_sha(a.sha);
  if (!a.load_addr.empty())
    o.load_addr = static_cast<std::uint32_t>(parse_number(a.load_addr, "--load-addr", 0xffffffff));
  if (!a.rom_fixed.empty())
    o.rom_fixed = static_cast<std::uint32_t>(parse_number(a.rom_fixed, "--rom-fixed", 0xffffffff));
  o.non_bootable = a.non_bootable;
  if (!a.hex_addr.empty()) o.hex_addr = static_cast<std::uint32_t>(parse_number(a.hex_addr, "--hex-addr", 0xffffffff));
  if (!a.encrypt.empty()) {
    SignOptions::Encryption e;
    e.key = load_encryption_key(a.encrypt, ctx.key_options(a.passphrase));
    e.key_bits = a.encrypt_keylen == "256" ? 256 : 128;
    e.hmac = a.hmac_sha == "512" ? HmacSha::sha512 : HmacSha::sha256;
    e.clear = a.clear;
    o.encryption = std::move(e);
  } else if (a.clear || a.encrypt_keylen != "128" || a.hmac_sha != "auto") {
    throw Error(ExitCode::usage, "-c/--clear, --encrypt-keylen and --hmac-sha need -E/--encrypt KEY");
  }
  o.save_enctlv = a.save_enctlv;
  o.compression = a.compression == "lzma2"           ? Compression::lzma2
                  : a.compression == "lzma2armthumb" ? Compression::lzma2_arm_thumb
                                                     : Compression::none;
  o.pure = a.pure;
  if (a.vector_to_sign == "payload") o.vector_to_sign = SignOptions::Vector::payload;
  if (a.vector_to_sign == "digest") o.vector_to_sign = SignOptions::Vector::digest;
  if (!a.fix_sig.empty()) {
    if (a.fix_sig_pubkey.empty())
      throw Error(ExitCode::usage, "public key of the fixed signature is not specified",
                  "pass --fix-sig-pubkey FILE with --fix-sig");
    o.fixed_signature = SignOptions::FixedSignature{read_base64_signature(a.fix_sig),
                                                    load_public_key(a.fix_sig_pubkey, ctx.key_options(a.passphrase))};
  } else if (!a.fix_sig_pubkey.empty()) {
    if (a.vector_to_sign.empty())
      throw Error(ExitCode::usage, "--fix-sig-pubkey needs --fix-sig FILE (or --vector-to-sign)");
    o.signer_public_key = load_public_key(a.fix_sig_pubkey, ctx.key_options(a.passphrase));
  }
  o.pad_sig = a.pad_sig;
  if (!a.sig_out.empty()) o.sig_out = a.sig_out;
  return o;
}

cli::Json header_json(const ImageHeader& h) {
  cli::Json flags = cli::Json::array();
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
cli::Json tlv_json(const TlvEntry& e) {
  cli::Json j = {{"type", fmt::format("{:#04x}", e.type)},
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

cli::Json tlvs_json(const std::optional<TlvArea>& area) {
  cli::Json out = cli::Json::array();
  if (area)
    for (const auto& e : area->entries) out.push_back(tlv_json(e));
  return out;
}

cli::Json optional_byte(const std::optional<std::uint8_t>& b) {
  return b ? cli::Json(fmt::format("{:#04x}", *b)) : cli::Json(nullptr);
}

cli::Json report_json(const std::string& file, const std::string& keyref, const ImageReport& r) {
  const auto& t = r.image.trailer;
  cli::Json trailer = {{"magic", t.magic_found}};
  if (t.magic_found) {
    trailer["max_align"] = t.max_align;
    trailer["image_ok"] = optional_byte(t.image_ok);
    trailer["confirmed"] = t.image_ok == std::uint8_t{0x01};
    trailer["copy_done"] = optional_byte(t.copy_done);
    trailer["swap_info"] = optional_byte(t.swap_info);
  }
  std::string result = !r.ok()                ? "failed"
                       : !r.unchecked.empty() ? "partly-checked"
                       : keyref.empty()       ? "hash-ok"
                                              : "ok";
  return {{"file", file},
          {"size", r.file_size},
          {"header", header_json(r.image.header)},
          {"protected_tlvs", tlvs_json(r.image.protected_area)},
          {"tlvs", tlvs_json(r.image.unprotected_area)},
          {"image_end", r.image.end},
          {"trailer", trailer},
          {"hash",
           {{"algorithm", r.hash ? std::string(hash_name(*r.hash)) : ""},
            {"digest", to_hex(r.computed_digest)},
            {"matches", r.hash_ok}}},
          {"key_hash", r.embedded_key_hash ? cli::Json(to_hex(*r.embedded_key_hash)) : cli::Json(nullptr)},
          {"verification",
           {{"key", keyref.empty() ? cli::Json(nullptr) : cli::Json(keyref)},
            {"key_hash", r.key_hash ? cli::Json(*r.key_hash) : cli::Json(nullptr)},
            {"key_hash_matches", r.key_hash_ok ? cli::Json(*r.key_hash_ok) : cli::Json(nullptr)},
            {"signature_valid", r.signature_ok ? cli::Json(*r.signature_ok) : cli::Json(nullptr)},
            {"result", result},
            {"reason", r.failure},
            {"unchecked", r.unchecked}}},
          {"encryption",
           r.encryption_tlv ? cli::Json{{"key_tlv", tlv_type_name(*r.encryption_tlv)}, {"decrypted", r.decrypted}}
                            : cli::Json(nullptr)},
          {"compression",
           r.decompressed_size ? cli::Json{{"decompressed_size", *r.decompressed_size},
                                           {"decompressed_ok", r.decompressed_ok ? cli::Json(*r.decompressed_ok)
                                                                                 : cli::Json(nullptr)}}
                               : cli::Json(nullptr)}};
}

struct CheckArgs {
  std::string file, key, decrypt_key;
  bool hash_only = false;
  cli::SecretSource passphrase;
};

std::optional<Bytes> public_key_for(const cli::Context& ctx, const CheckArgs& a) {
  if (a.key.empty()) return std::nullopt;
  return load_public_key(a.key, ctx.key_options(a.passphrase));
}

void add_sign(CLI::App* image, cli::Context& ctx) {
  auto a = std::make_shared<SignArgs>();
  auto* sign = image->add_subcommand("sign", "Create a signed (or, without --key, unsigned) MCUboot image");
  sign->add_option("INFILE", a->input, "Firmware to sign (.hex for Intel HEX, otherwise binary)")->required();
  sign->add_option("OUTFILE", a->output, "Image to write (.hex for Intel HEX, otherwise binary)")
      ->required()
      ->check(cli::output_file_validator());
  cli::add_force_flag(sign, a->force);
  sign->add_option("-k,--key", a->key, "Signing key: PEM file or pkcs11: URI (omit for an unsigned image)");
  sign->add_option("-v,--version", a->version, "Image version MAJOR.MINOR.REVISION+BUILD (as in imgtool: inside image sign, -v is the version; use --verbose for verbose)")
      ->required();
  sign->add_option("-H,--header-size", a->header_size, "Header size in bytes (e.g. 0x200)")->required();
  sign->add_option("-S,--slot-size", a->slot_size, "Size of the slot the image is written to")->required();
  sign->add_flag("--pad-header", a->pad_header, "Prepend --header-size erased bytes for the header");
  sign->add_option("--align", a->align, "Flash write alignment (1, 2, 4, 8, 16, 32)")
      ->check(CLI::IsMember({"1", "2", "4", "8", "16", "32"}));
  sign->add_option("--max-align", a->max_align, "Maximum flash alignment of the trailer (8, 16, 32)")
      ->check(CLI::IsMember({"8", "16", "32"}));
  sign->add_flag("--pad", a->pad, "Pad the image to --slot-size and add the trailer magic");
  sign->add_flag("--confirm", a->confirm, "Pad and mark the image confirmed (image_ok), implies --pad");
  sign->add_flag("--test", a->test, "Pad with the trailer magic, not confirmed: a test swap (same as --pad)");
  sign->add_option("-M,--max-sectors", a->max_sectors, "Sectors the swap status area allows for (default 128)");
  sign->add_flag("--overwrite-only", a->overwrite_only, "Trailer for overwrite-only upgrades");
  sign->add_option("-s,--security-counter", a->security_counter, "Security counter value, or auto (from version)");
  sign->add_option("-d,--dependencies", a->dependencies, "Dependencies: \"(IMAGE_ID,VERSION), ...\"");
  auto repeatable_pair = [sign](const char* name, auto& target, const char* help) {
    return sign->add_option(name, target, help)->type_size(2)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  };
  auto* custom_tlv =
      repeatable_pair("--custom-tlv", a->custom_tlvs, "Protected TLV: TAG (0xa0..0xfffe) VALUE (0x-hex or text)");
  auto* custom_tlv_file =
      repeatable_pair("--custom-tlv-file", a->custom_tlv_files, "Protected TLV: TAG FILE (value = file contents)");
  sign->add_option("--public-key-format", a->public_key_format, "hash (KEYHASH TLV) or full (PUBKEY TLV)")
      ->check(CLI::IsMember({"hash", "full"}));
  sign->add_option("-R,--erased-val", a->erased_val, "Value of erased flash: 0 or 0xff")
      ->check(CLI::IsMember({"0", "0xff"}));
  sign->add_option("-L,--load-addr", a->load_addr, "Load address for RAM-load images");
  sign->add_option("-F,--rom-fixed", a->rom_fixed, "Fixed ROM address the image runs from");
  sign->add_option("-x,--hex-addr", a->hex_addr, "Base address of a .hex output made from binary input");
  sign->add_flag("--non-bootable", a->non_bootable, "Mark the image non-bootable");
  sign->add_option("--vid", a->vid, "Vendor id: a UUID, or a domain name (UUIDv5)");
  sign->add_option("--cid", a->cid, "Image class id: a UUID, or a name (UUIDv5 under --vid)");
  sign->add_option("--sha", a->sha, "Image hash: auto, 256, 384, 512")
      ->check(CLI::IsMember({"auto", "256", "384", "512"}));
  sign->add_option("--boot-record", a->boot_record, "Add a CBOR boot record with this software type (<= 12 chars)");
  sign->add_option("-e,--endian", a->endian, "Byte order; only little is supported")->check(CLI::IsMember({"little"}));
  sign->add_option("-E,--encrypt", a->encrypt,
                   "Encrypt for this key (ECIES-P256, ECIES-X25519 or RSA-2048 public or private PEM, or pkcs11:)");
  sign->add_option("--encrypt-keylen", a->encrypt_keylen, "AES content key size: 128 or 256")
      ->check(CLI::IsMember({"128", "256"}));
  sign->add_option("--hmac-sha", a->hmac_sha, "ECIES HKDF/HMAC hash: auto, 256, 512 (512: X25519 only)")
      ->check(CLI::IsMember({"auto", "256", "512"}));
  sign->add_flag("-c,--clear", a->clear, "With -E: encryption flags and key TLV, but the body left in plaintext");
  sign->add_flag("--save-enctlv", a->save_enctlv, "Trailer room for the whole key TLV (BOOT_SWAP_SAVE_ENCTLV)");
  sign->add_option("--compression", a->compression, "Compress the payload: disabled, lzma2, lzma2armthumb")
      ->check(CLI::IsMember({"disabled", "lzma2", "lzma2armthumb"}));
  sign->add_flag("--pure", a->pure, "Ed25519 over the image itself (SIG_PURE TLV), not over its digest");
  sign->add_option("--sig-out", a->sig_out, "Also write the signature, base64, to this file");
  sign->add_option("--vector-to-sign", a->vector_to_sign,
                   "Write what an external signer must sign instead of the image: payload or digest")
      ->check(CLI::IsMember({"payload", "digest"}));
  sign->add_option("--fix-sig", a->fix_sig, "Assemble the image with this externally made signature (base64)");
  sign->add_option("--fix-sig-pubkey", a->fix_sig_pubkey, "Public key the --fix-sig signature verifies with");
  sign->add_flag("--pad-sig", a->pad_sig, "Pad ECDSA signatures with zeros to 72/103 bytes (MCUboot < 1.5)");
  cli::add_passphrase_options(sign, a->passphrase);
  sign->callback([&ctx, a, sign, custom_tlv, custom_tlv_file] {
    // Protected TLVs keep the order they were given in, across both options. CLI11 records an
    // option in parse_order() once per value taken, so each TAG VALUE pair appears twice.
    std::size_t value_entries = 0, file_entries = 0;
    for (const CLI::Option* opt : sign->parse_order()) {
      if (opt == custom_tlv && value_entries++ % 2 == 0) {
        auto& [tag, value] = a->custom_tlvs.at(value_entries / 2);
        a->custom_in_order.push_back({tag, value, false});
      } else if (opt == custom_tlv_file && file_entries++ % 2 == 0) {
        auto& [tag, file] = a->custom_tlv_files.at(file_entries / 2);
        a->custom_in_order.push_back({tag, file, true});
      }
    }
    SignOptions options = sign_options(*a, ctx);
    validate(options);  // usage errors before asking a token or key file for anything
    cli::check_overwrite(a->output, a->force);
    std::unique_ptr<Signer> signer;
    if (!a->key.empty()) signer = open_signer(a->key, ctx.key_options(a->passphrase));
    validate(options, signer.get());
    auto r = sign_image(a->input, a->output, options, signer.get(), progress_bar(ctx, "signing"));
    if (r.vector) {
      ctx.render(cli::Json{{"output", a->output},
                           {"vector", *r.vector == SignOptions::Vector::digest ? "digest" : "payload"},
                           {"hash", hash_name(r.hash)},
                           {"digest", to_hex(r.digest)},
                           {"output_bytes", r.output_bytes}});
      return;
    }
    ctx.render(cli::Json{{"output", a->output},
                         {"encrypted", r.encryption_tlv ? cli::Json(tlv_type_name(*r.encryption_tlv)) : cli::Json(false)},
                         {"compressed", r.compressed},
                         {"version", format_version(r.header.version)},
                         {"signed", r.key_type.has_value()},
                         {"key_type", r.key_type ? cli::Json(key_type_name(*r.key_type)) : cli::Json(nullptr)},
                         {"key_hash", r.key_type ? cli::Json(to_hex(r.key_hash)) : cli::Json(nullptr)},
                         {"hash", hash_name(r.hash)},
                         {"digest", to_hex(r.digest)},
                         {"header_size", r.header.header_size},
                         {"image_size", r.header.image_size},
                         {"protected_tlv_size", r.header.protected_tlv_size},
                         {"image_bytes", r.image_bytes},
                         {"output_bytes", r.output_bytes}});
  });
}

void add_check(CLI::App* image, cli::Context& ctx, bool verify_only) {
  auto a = std::make_shared<CheckArgs>();
  auto* cmd = verify_only
                  ? image->add_subcommand("verify", "Check an image's hash, key hash and signature (exit 3 if bad)")
                  : image->add_subcommand("info", "Show an image's header, TLVs, trailer and verification result");
  cmd->add_option("FILE", a->file, "MCUboot image (.hex for Intel HEX, otherwise binary)")->required();
  auto* key_option = cmd->add_option("-k,--key", a->key, "Key to verify with: PEM (private or public) or pkcs11: URI");
  if (verify_only)
    cmd->add_flag("--hash-only", a->hash_only,
                  "Check only the image's structure and hash: proves nothing about who made it")
        ->excludes(key_option);
  cmd->add_option("--decrypt-key", a->decrypt_key,
                  "Private key of an encrypted image (PEM file or pkcs11: URI): the hash is checked over the plaintext, "
                  "as the bootloader does");
  cli::add_passphrase_options(cmd, a->passphrase);
  cmd->callback([&ctx, a, verify_only] {
    // Without a key any self-consistent image passes: that must be asked for, never a default.
    if (verify_only && a->key.empty() && !a->hash_only)
      throw Error(ExitCode::usage, "kiln image verify needs the key the image must be signed with",
                  "pass --key KEYREF (the public key is enough), or --hash-only to check the hash alone");
    auto key = public_key_for(ctx, *a);
    std::unique_ptr<ContentKeyOpener> opener;
    if (!a->decrypt_key.empty()) opener = load_content_key_opener(a->decrypt_key, ctx.key_options(a->passphrase));
    auto progress = progress_bar(ctx, "verifying");
    if (verify_only) {
      auto r = verify_image(a->file, key, progress, opener.get());
      for (const auto& what : r.unchecked) ctx.warn(fmt::format("not checked: {}", what));
      ctx.render(cli::Json{{"file", a->file},
                           {"result", !r.unchecked.empty() ? "partly-checked" : a->key.empty() ? "hash-ok" : "ok"},
                           {"unchecked", r.unchecked},
                           {"decrypted", r.decrypted},
                           {"decompressed_ok", r.decompressed_ok ? cli::Json(*r.decompressed_ok) : cli::Json(nullptr)},
                           {"version", format_version(r.image.header.version)},
                           {"hash", hash_name(*r.hash)},
                           {"digest", to_hex(r.computed_digest)},
                           {"key_hash", r.key_hash ? cli::Json(*r.key_hash) : cli::Json(nullptr)}});
      return;
    }
    auto r = inspect_image(a->file, key, progress, opener.get());
    ctx.render(report_json(a->file, a->key, r));
    if (!r.ok()) throw Error(ExitCode::verification_failed, fmt::format("{}: {}", a->file, r.failure));
  });
}

struct DecryptArgs {
  std::string input, output, key;
  bool force = false;
  cli::SecretSource passphrase;
};

void add_decrypt(CLI::App* image, cli::Context& ctx) {
  auto a = std::make_shared<DecryptArgs>();
  auto* cmd = image->add_subcommand(
      "decrypt", "Write an encrypted image with its body decrypted (exit 3 if the key does not open it)");
  cmd->add_option("INFILE", a->input, "Encrypted MCUboot image")->required();
  cmd->add_option("OUTFILE", a->output, "Image to write: the same image with a plaintext body")
      ->required()
      ->check(cli::output_file_validator());
  cmd->add_option("--key", a->key,
                  "Private encryption key: a PEM file, or a pkcs11: URI (the key agreement or RSA decryption runs on "
                  "the token)")
      ->required();
  cli::add_force_flag(cmd, a->force);
  cli::add_passphrase_options(cmd, a->passphrase);
  cmd->callback([&ctx, a] {
    cli::check_overwrite(a->output, a->force);
    auto opener = load_content_key_opener(a->key, ctx.key_options(a->passphrase));
    auto r = decrypt_image(a->input, a->output, *opener, progress_bar(ctx, "decrypting"));
    ctx.render(cli::Json{{"output", a->output},
                         {"key_tlv", tlv_type_name(r.encryption_tlv)},
                         {"version", format_version(r.header.version)},
                         {"image_size", r.header.image_size},
                         {"output_bytes", r.output_bytes}});
  });
}

}  // namespace

void add_image(CLI::App& app, cli::Context& ctx) {
  auto* image = app.add_subcommand("image", "Sign, verify and inspect MCUboot images; upload them to the service");
  image->require_subcommand(1);
  add_image_service_verbs(image, ctx);
  add_sign(image, ctx);
  add_check(image, ctx, true);
  add_check(image, ctx, false);
  add_decrypt(image, ctx);
}

}  // namespace kiln::commands
