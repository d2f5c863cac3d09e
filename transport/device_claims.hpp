// What `kiln device claim` and `assign` need beyond the API calls: a device's key named by a template, the
// UIDs named on the command line and in a file, and the error that names every unclaimed device.
#pragma once

#include <string>
#include <vector>

#include "transport/service_api.hpp"

namespace kiln::transport {

// `keyref_template` with each {uid} replaced by `uid` (keys/{uid}.pem -> keys/A1B2.pem).
std::string device_keyref(const std::string& keyref_template, const std::string& uid);
// `ids` as given, then those read from `from_file` ("-": standard input; empty: none) that are not there yet.
std::vector<std::string> merge_device_ids(const std::vector<std::string>& ids, const std::string& from_file);
// Exit 8 (partial) naming every row whose result is failed, with its error; returns when all were claimed.
void require_all_claimed(const Json& rows);

}  // namespace kiln::transport
