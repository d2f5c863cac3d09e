// kiln image sign: imgtool's sign, with its option names and meanings (the text is read by
// signing/imgtool_options, the image made by signing/mcuboot_sign).
#include <CLI/CLI.hpp>

#include "cli/context.hpp"
#include "cli/image_views.hpp"
#include "cli/output_file.hpp"
#include "cli/progress.hpp"
#include "commands/commands.hpp"
#include "signing/imgtool_options.hpp"

namespace kiln::commands {
namespace {

using namespace kiln::mcuboot;

struct SignArgs {
  std::string input, output, key, endian = "little";
  ImgtoolSignArgs imgtool;
  std::vector<std::pair<std::string, std::string>> custom_tlvs, custom_tlv_files;  // as CLI11 collects them
  bool force = false;
  cli::SecretSource passphrase;
};

}  // namespace

void add_image_sign(CLI::App* image, cli::Context& ctx) {
  auto a = std::make_shared<SignArgs>();
  auto* sign = image->add_subcommand("sign", "Create a signed (or, without --key, unsigned) MCUboot image");
  sign->add_option("INFILE", a->input, "Firmware to sign (.hex for Intel HEX, otherwise binary)")->required();
  sign->add_option("OUTFILE", a->output, "Image to write (.hex for Intel HEX, otherwise binary)")
      ->required()
      ->check(cli::output_file_validator());
  cli::add_force_flag(sign, a->force);
  sign->add_option("-k,--key", a->key, "Signing key: PEM file or pkcs11: URI (omit for an unsigned image)");
  sign->add_option("-v,--version", a->imgtool.version, "Image version MAJOR.MINOR.REVISION+BUILD (as in imgtool: inside image sign, -v is the version; use --verbose for verbose)")
      ->required();
  sign->add_option("-H,--header-size", a->imgtool.header_size, "Header size in bytes (e.g. 0x200)")->required();
  sign->add_option("-S,--slot-size", a->imgtool.slot_size, "Size of the slot the image is written to")->required();
  sign->add_flag("--pad-header", a->imgtool.pad_header, "Prepend --header-size erased bytes for the header");
  sign->add_option("--align", a->imgtool.align, "Flash write alignment (1, 2, 4, 8, 16, 32)")
      ->check(CLI::IsMember({"1", "2", "4", "8", "16", "32"}));
  sign->add_option("--max-align", a->imgtool.max_align, "Maximum flash alignment of the trailer (8, 16, 32)")
      ->check(CLI::IsMember({"8", "16", "32"}));
  sign->add_flag("--pad", a->imgtool.pad, "Pad the image to --slot-size and add the trailer magic");
  sign->add_flag("--confirm", a->imgtool.confirm, "Pad and mark the image confirmed (image_ok), implies --pad");
  sign->add_flag("--test", a->imgtool.test, "Pad with the trailer magic, not confirmed: a test swap (same as --pad)");
  sign->add_option("-M,--max-sectors", a->imgtool.max_sectors, "Sectors the swap status area allows for (default 128)");
  sign->add_flag("--overwrite-only", a->imgtool.overwrite_only, "Trailer for overwrite-only upgrades");
  sign->add_option("-s,--security-counter", a->imgtool.security_counter, "Security counter value, or auto (from version)");
  sign->add_option("-d,--dependencies", a->imgtool.dependencies, "Dependencies: \"(IMAGE_ID,VERSION), ...\"");
  auto repeatable_pair = [sign](const char* name, auto& target, const char* help) {
    return sign->add_option(name, target, help)->type_size(2)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  };
  auto* custom_tlv =
      repeatable_pair("--custom-tlv", a->custom_tlvs, "Protected TLV: TAG (0xa0..0xfffe) VALUE (0x-hex or text)");
  auto* custom_tlv_file =
      repeatable_pair("--custom-tlv-file", a->custom_tlv_files, "Protected TLV: TAG FILE (value = file contents)");
  sign->add_option("--public-key-format", a->imgtool.public_key_format, "hash (KEYHASH TLV) or full (PUBKEY TLV)")
      ->check(CLI::IsMember({"hash", "full"}));
  sign->add_option("-R,--erased-val", a->imgtool.erased_val, "Value of erased flash: 0 or 0xff")
      ->check(CLI::IsMember({"0", "0xff"}));
  sign->add_option("-L,--load-addr", a->imgtool.load_addr, "Load address for RAM-load images");
  sign->add_option("-F,--rom-fixed", a->imgtool.rom_fixed, "Fixed ROM address the image runs from");
  sign->add_option("-x,--hex-addr", a->imgtool.hex_addr, "Base address of a .hex output made from binary input");
  sign->add_flag("--non-bootable", a->imgtool.non_bootable, "Mark the image non-bootable");
  sign->add_option("--vid", a->imgtool.vid, "Vendor id: a UUID, or a domain name (UUIDv5)");
  sign->add_option("--cid", a->imgtool.cid, "Image class id: a UUID, or a name (UUIDv5 under --vid)");
  sign->add_option("--sha", a->imgtool.sha, "Image hash: auto, 256, 384, 512")
      ->check(CLI::IsMember({"auto", "256", "384", "512"}));
  sign->add_option("--boot-record", a->imgtool.boot_record, "Add a CBOR boot record with this software type (<= 12 chars)");
  sign->add_option("-e,--endian", a->endian, "Byte order; only little is supported")->check(CLI::IsMember({"little"}));
  sign->add_option("-E,--encrypt", a->imgtool.encrypt,
                   "Encrypt for this key (ECIES-P256, ECIES-X25519 or RSA-2048 public or private PEM, or pkcs11:)");
  sign->add_option("--encrypt-keylen", a->imgtool.encrypt_keylen, "AES content key size: 128 or 256")
      ->check(CLI::IsMember({"128", "256"}));
  sign->add_option("--hmac-sha", a->imgtool.hmac_sha, "ECIES HKDF/HMAC hash: auto, 256, 512 (512: X25519 only)")
      ->check(CLI::IsMember({"auto", "256", "512"}));
  sign->add_flag("-c,--clear", a->imgtool.clear, "With -E: encryption flags and key TLV, but the body left in plaintext");
  sign->add_flag("--save-enctlv", a->imgtool.save_enctlv, "Trailer room for the whole key TLV (BOOT_SWAP_SAVE_ENCTLV)");
  sign->add_option("--compression", a->imgtool.compression, "Compress the payload: disabled, lzma2, lzma2armthumb")
      ->check(CLI::IsMember({"disabled", "lzma2", "lzma2armthumb"}));
  sign->add_flag("--pure", a->imgtool.pure, "Ed25519 over the image itself (SIG_PURE TLV), not over its digest");
  sign->add_option("--sig-out", a->imgtool.sig_out, "Also write the signature, base64, to this file");
  sign->add_option("--vector-to-sign", a->imgtool.vector_to_sign,
                   "Write what an external signer must sign instead of the image: payload or digest")
      ->check(CLI::IsMember({"payload", "digest"}));
  sign->add_option("--fix-sig", a->imgtool.fix_sig, "Assemble the image with this externally made signature (base64)");
  sign->add_option("--fix-sig-pubkey", a->imgtool.fix_sig_pubkey, "Public key the --fix-sig signature verifies with");
  sign->add_flag("--pad-sig", a->imgtool.pad_sig, "Pad ECDSA signatures with zeros to 72/103 bytes (MCUboot < 1.5)");
  cli::add_passphrase_options(sign, a->passphrase);
  sign->callback([&ctx, a, sign, custom_tlv, custom_tlv_file] {
    // Protected TLVs keep the order they were given in, across both options. CLI11 records an
    // option in parse_order() once per value taken, so each TAG VALUE pair appears twice.
    std::size_t value_entries = 0, file_entries = 0;
    a->imgtool.custom_tlvs.clear();
    for (const CLI::Option* opt : sign->parse_order()) {
      if (opt == custom_tlv && value_entries++ % 2 == 0) {
        const auto& pair = a->custom_tlvs.at(value_entries / 2);
        a->imgtool.custom_tlvs.push_back({pair.first, pair.second, false});
      } else if (opt == custom_tlv_file && file_entries++ % 2 == 0) {
        const auto& pair = a->custom_tlv_files.at(file_entries / 2);
        a->imgtool.custom_tlvs.push_back({pair.first, pair.second, true});
      }
    }
    SignOptions options = sign_options(a->imgtool, ctx.key_options(a->passphrase));
    validate(options);  // usage errors before asking a token or key file for anything
    cli::check_overwrite(a->output, a->force);
    std::unique_ptr<Signer> signer;
    if (!a->key.empty()) signer = open_signer(a->key, ctx.key_options(a->passphrase));
    validate(options, signer.get());
    auto r = sign_image(a->input, a->output, options, signer.get(), cli::progress_callback(ctx, "signing"));
    ctx.render(cli::sign_result_json(a->output, r));
  });
}

}  // namespace kiln::commands
