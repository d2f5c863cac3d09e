// The JSON views `kiln board` renders: a board's identity, its image slots and an upload's result.
#pragma once

#include <string>

#include "cli/output.hpp"
#include "transport/board_api.hpp"
#include "transport/provisioning_group.hpp"

namespace kiln::cli {

// "sha256:<hex>" of DER bytes (a certificate or a public key).
std::string fingerprint(ByteView der);
Json slot_json(const ImageSlot& slot);
Json identity_json(const std::string& address, const BoardIdentity& identity);
Json install_result_json(const std::string& address, const std::string& file, const InstallResult& result,
                         bool confirm);

}  // namespace kiln::cli
