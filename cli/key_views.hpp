// The JSON views `kiln key` renders: a key's facts, a key just made, a signature written by sign-digest.
#pragma once

#include <string>

#include "cli/output.hpp"
#include "signing/key_generate.hpp"
#include "signing/key_info.hpp"

namespace kiln::cli {

// {"key", "type", "bits", "fingerprint", "mcuboot_key_hash"}; the key named as keyref_display_name does.
Json key_info_json(const std::string& keyref, const KeyInfo& info);
// key_info_json, and for a PEM file whether it is encrypted.
Json generated_key_json(const GeneratedKey& key);
// {"key", "type", "output", "signature_bytes"}.
Json signature_json(const std::string& keyref, KeyType type, const std::string& output, std::size_t signature_bytes);

}  // namespace kiln::cli
