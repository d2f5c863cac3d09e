// What `kiln key` prints about keys and signatures.
#include "cli/key_views.hpp"

#include "signing/key_ref.hpp"

namespace kiln::cli {

Json key_info_json(const std::string& keyref, const KeyInfo& info) {
  return {{"key", keyref_display_name(keyref)},
          {"type", std::string(key_type_name(info.type))},
          {"bits", info.bits},
          {"fingerprint", "sha256:" + info.fingerprint},
          {"mcuboot_key_hash", info.mcuboot_key_hash}};
}

Json generated_key_json(const GeneratedKey& key) {
  auto out = key_info_json(key.keyref, key.info);
  if (!key.on_token) out["encrypted"] = key.encrypted;
  return out;
}

Json signature_json(const std::string& keyref, KeyType type, const std::string& output, std::size_t signature_bytes) {
  return {{"key", keyref_display_name(keyref)},
          {"type", std::string(key_type_name(type))},
          {"output", output},
          {"signature_bytes", signature_bytes}};
}

}  // namespace kiln::cli
