// The JSON views of trust updates.
#include "cli/trust_views.hpp"

namespace kiln::cli {

Json trust_update_json(const std::string& file, const trust::TrustUpdate& update, std::size_t signatures) {
  Json keys = Json::array();
  for (const auto& key : update.manifest_keys) keys.push_back(trust::key_fingerprint(key));
  Json hashes = Json::array();
  for (const auto& hash : update.boot_key_hashes) hashes.push_back(to_hex(hash));
  return Json{{"file", file},
              {"product", update.product},
              {"version", update.version},
              {"manifest_keys", keys},
              {"manifest_threshold", update.manifest_threshold},
              {"boot_key_hashes", hashes},
              {"boot_keys", update.boot_keys.size()},
              {"signatures", signatures}};
}

}  // namespace kiln::cli
