// imgtool sign's options as written on a command line (text, with imgtool's spellings and defaults),
// turned into SignOptions: numbers as Python's int(text, 0), custom TLV values, --fix-sig files, keys.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "signing/key_ref.hpp"
#include "signing/mcuboot_sign.hpp"

namespace kiln::mcuboot {

struct ImgtoolSignArgs {
  std::string version, header_size, slot_size, align = "1", max_align = "8", max_sectors;
  std::string security_counter, dependencies, erased_val = "0xff", load_addr, rom_fixed, hex_addr;
  std::string sha = "auto", public_key_format = "hash", vid, cid, boot_record;
  struct CustomTlv {
    std::string tag, value;
    bool file = false;  // --custom-tlv-file: value names a file whose contents are the TLV's value
  };
  std::vector<CustomTlv> custom_tlvs;  // both options, in command-line order
  std::string encrypt, encrypt_keylen = "128", hmac_sha = "auto", compression = "disabled";
  std::string sig_out, vector_to_sign, fix_sig, fix_sig_pubkey;
  bool clear = false, save_enctlv = false, pure = false, pad_sig = false;
  bool pad_header = false, pad = false, confirm = false, test = false, non_bootable = false, overwrite_only = false;
};

// Python's int(text, 0), as imgtool reads sizes and addresses: 0x.., 0o.., 0b.. or decimal, up to `max`.
// Usage error (exit 2) naming `option` otherwise.
std::uint64_t parse_imgtool_number(std::string_view text, std::string_view option, std::uint64_t max);

// imgtool's --custom-tlv value: 0x-prefixed hex bytes, otherwise the UTF-8 string itself.
Bytes custom_tlv_value(const std::string& value);

// imgtool's --fix-sig file: base64 of the signature (whitespace ignored, as Python's b64decode does).
Bytes read_base64_signature(const std::string& path);

// The SignOptions these arguments mean; keys (-E, --fix-sig-pubkey) are loaded with `keys`.
// Usage errors (exit 2) for values and combinations imgtool refuses.
SignOptions sign_options(const ImgtoolSignArgs& args, const KeyOptions& keys);

}  // namespace kiln::mcuboot
