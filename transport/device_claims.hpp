// What the `kiln device` commands need beyond single API calls: a device's key named by a template, the UIDs
// named on the command line and in a file, the error that names every unclaimed device, many devices moved
// to a group, and a device's own time zone as `device update --time-zone` gives it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/service_api.hpp"

namespace kiln::transport {

// `keyref_template` with each {uid} replaced by `uid` (keys/{uid}.pem -> keys/A1B2.pem).
std::string device_keyref(const std::string& keyref_template, const std::string& uid);
// `ids` as given, then those read from `from_file` ("-": standard input; empty: none) that are not there yet.
std::vector<std::string> merge_device_ids(const std::vector<std::string>& ids, const std::string& from_file);
// merge_device_ids, with Error(usage) "which devices?" and `how` (how to name them) when there are none.
std::vector<std::string> named_device_ids(
    const std::vector<std::string>& ids, const std::string& from_file,
    const std::string& how = "name them as arguments, or with --from-file FILE (- for stdin)");
// A claim_devices row's "result": one enum, one string mapping each way.
enum class ClaimResult { claimed, failed };
std::string claim_result_name(ClaimResult result);
std::optional<ClaimResult> parse_claim_result(std::string_view text);
// Exit 8 (partial) naming every row not claimed (failed, or a result this kiln does not know), with its error;
// returns when all were claimed.
void require_all_claimed(const Json& rows);

// `device assign`: the devices moved to `group` in batches of `batch_size` (at most assign_batch_size), one
// request each; `each` hears the service's answer for every device in order, batch by batch (memory stays that of
// one batch, a million devices or not). A batch is moved all or none: the first batch the service refuses throws
// its error, naming the device (exit 8, partial, when batches before it moved: they stay moved). `progress` (if
// set) hears the count of named devices done after each batch.
void assign_devices_each(ServiceApi& api, const std::vector<std::string>& ids, const std::string& group,
                         const std::function<void(Json device)>& each,
                         const std::function<void(std::uint64_t done)>& progress = {},
                         std::size_t batch_size = assign_batch_size);
// The same, the answers collected in one array.
Json assign_devices(ServiceApi& api, const std::vector<std::string>& ids, const std::string& group,
                    const std::function<void(std::uint64_t done)>& progress = {},
                    std::size_t batch_size = assign_batch_size);
// `device update --time-zone`: an IANA time zone (kept), or "none" (nullopt: the deployment's zone applies);
// anything else is Error(usage) naming the option.
std::optional<std::string> device_time_zone(const std::string& text);

// Ownership (docs/security.md "Ownership transfer"). unclaim: the device is unclaimed and leaves its group
// and unfinished deployments. create_transfer: a signed voucher for `ids` that tenant `to_tenant` may redeem
// within `expires_in` seconds. accept_transfer: redeems a voucher file's text: the service checks it and
// issues one challenge per device, `sign` signs each challenge message as the device (board or key), and
// every device moves to the caller's tenant or none does.
Json unclaim_device(ServiceApi& api, const std::string& id);
Json create_transfer(ServiceApi& api, const std::string& to_tenant, const std::vector<std::string>& ids,
                     std::int64_t expires_in);
Json accept_transfer(ServiceApi& api, const std::string& voucher_text,
                     const std::function<Bytes(const std::string& id, const std::string& message)>& sign);

}  // namespace kiln::transport
