// The JSON views of trust updates (docs/key-rotation.md) that `kiln trust` renders.
#pragma once

#include <string>

#include "cli/output.hpp"
#include "manifests/trust_update.hpp"

namespace kiln::cli {

// product, version, manifest keys (fingerprints), threshold, boot-key hashes, signature count.
Json trust_update_json(const std::string& file, const trust::TrustUpdate& update, std::size_t signatures);

}  // namespace kiln::cli
