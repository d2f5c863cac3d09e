// The JSON views of MCUboot image results that `kiln image` renders (table, json, yaml, csv all start here).
#pragma once

#include <string>

#include "cli/output.hpp"
#include "signing/mcuboot_sign.hpp"

namespace kiln::cli {

// `image sign`: what was written (or, with --vector-to-sign, what must be signed).
Json sign_result_json(const std::string& output, const mcuboot::SignResult& result);
// `image info`: header, TLVs, trailer and the verification result; `keyref` is the key checked with, or empty.
Json image_report_json(const std::string& file, const std::string& keyref, const mcuboot::ImageReport& report);
// `image verify`: the result in brief.
Json verify_result_json(const std::string& file, const std::string& keyref, const mcuboot::ImageReport& report);
// `image decrypt`.
Json decrypt_result_json(const std::string& output, const mcuboot::DecryptResult& result);

}  // namespace kiln::cli
