#include "transport/device_claims.hpp"

#include <algorithm>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/maintenance_window.hpp"
#include "core/name_table.hpp"
#include "transport/http_client.hpp"

namespace kiln::transport {

std::string device_keyref(const std::string& keyref_template, const std::string& uid) {
  std::string keyref = keyref_template;
  for (auto at = keyref.find("{uid}"); at != std::string::npos; at = keyref.find("{uid}", at + uid.size()))
    keyref.replace(at, 5, uid);
  return keyref;
}

std::vector<std::string> merge_device_ids(const std::vector<std::string>& ids, const std::string& from_file) {
  std::vector<std::string> out = ids;
  if (!from_file.empty()) {
    // A set of what is in, not a search of the list per line: a million lines would take hours.
    std::unordered_set<std::string> seen(out.begin(), out.end());
    for (auto& id : read_device_ids(from_file))
      if (seen.insert(id).second) out.push_back(id);
  }
  return out;
}

std::vector<std::string> named_device_ids(const std::vector<std::string>& ids, const std::string& from_file,
                                          const std::string& how) {
  auto named = merge_device_ids(ids, from_file);
  if (named.empty()) throw Error(ExitCode::usage, "which devices?", how);
  return named;
}

void assign_devices_each(ServiceApi& api, const std::vector<std::string>& ids, const std::string& group,
                         const std::function<void(Json device)>& each,
                         const std::function<void(std::uint64_t done)>& progress, std::size_t batch_size) {
  batch_size = std::clamp<std::size_t>(batch_size, 1, assign_batch_size);
  for (std::size_t first = 0; first < ids.size(); first += batch_size) {
    std::vector<std::string> batch(ids.begin() + static_cast<std::ptrdiff_t>(first),
                                   ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), first + batch_size)));
    Json answer;
    try {
      answer = assign_device_batch(api, batch, group);
    } catch (const Error& e) {
      if (first == 0) throw;
      // Earlier batches moved: partial work (docs/exit-codes.md). A refusal naming a device moved nothing of its
      // batch; any other failure (the service unreachable, a 5xx) may have come after the batch was applied.
      bool refused = e.code() == ExitCode::not_found || e.code() == ExitCode::conflict;
      throw Error(ExitCode::partial,
                  refused ? fmt::format("{} devices were moved, then a batch of {} was refused: {}", first,
                                        batch.size(), e.what())
                          : fmt::format("{} devices were moved, then a batch of {} failed and may or may not have "
                                        "been applied: {}",
                                        first, batch.size(), e.what()),
                  refused ? "fix that device and run the same command again: assigning a device to the group it "
                            "is in changes nothing"
                          : (e.hint().empty() ? std::string() : e.hint() + "; then ") +
                                "run the same command again: assigning a device to the group it is in changes nothing")
          .with_detail(e.detail());
    }
    for (auto& device : answer.at("devices")) each(std::move(device));
    if (progress) progress(first + batch.size());  // named IDs done (one named twice is moved once)
  }
}

Json assign_devices(ServiceApi& api, const std::vector<std::string>& ids, const std::string& group,
                    const std::function<void(std::uint64_t done)>& progress, std::size_t batch_size) {
  Json moved = Json::array();
  assign_devices_each(
      api, ids, group, [&](Json device) { moved.push_back(std::move(device)); }, progress, batch_size);
  return moved;
}

std::optional<std::string> device_time_zone(const std::string& text) {
  if (text == "none") return std::nullopt;
  if (!known_time_zone(text))
    throw Error(ExitCode::usage,
                fmt::format("--time-zone wants an IANA time zone such as Europe/Berlin or UTC (or none), not '{}'", text));
  return text;
}
namespace {

constexpr NameTable<ClaimResult, 2> claim_result_names{{
    {ClaimResult::claimed, "claimed"},
    {ClaimResult::failed, "failed"},
}};

}  // namespace

std::string claim_result_name(ClaimResult result) { return std::string(name_in(claim_result_names, result)); }

std::optional<ClaimResult> parse_claim_result(std::string_view text) { return value_in(claim_result_names, text); }

void require_all_claimed(const Json& rows) {
  std::vector<std::string> failed;
  for (const auto& row : rows) {
    auto text = row.value("result", "");
    if (parse_claim_result(text) == ClaimResult::claimed) continue;
    auto error = row.contains("error") && row["error"].is_string() ? row["error"].get<std::string>()
                                                                  : fmt::format("result '{}'", text);
    failed.push_back(fmt::format("{} ({})", row["uid"].get<std::string>(), error));
  }
  if (failed.empty()) return;
  throw Error(ExitCode::partial,
              fmt::format("{} of {} devices were not claimed: {}", failed.size(), rows.size(), fmt::join(failed, "; ")),
              "fix those and run the same command again: claiming a claimed device again succeeds");
}

Json unclaim_device(ServiceApi& api, const std::string& id) {
  return api.post("/v1/devices/" + url_encode(id) + "/unclaim", Json::object());
}

Json create_transfer(ServiceApi& api, const std::string& to_tenant, const std::vector<std::string>& ids,
                     std::int64_t expires_in) {
  return api.post("/v1/device-transfers", {{"to_tenant", to_tenant}, {"devices", ids}, {"expires_in", expires_in}});
}

Json accept_transfer(ServiceApi& api, const std::string& voucher_text,
                     const std::function<Bytes(const std::string& id, const std::string& message)>& sign) {
  auto challenges = api.post("/v1/device-transfers/challenge", {{"voucher", voucher_text}});
  Json proofs = Json::array();
  for (const auto& c : challenges["challenges"]) {
    auto id = c["device"].get<std::string>();
    proofs.push_back(
        {{"device", id}, {"nonce", c["nonce"]}, {"signature", to_hex(sign(id, c["message"].get<std::string>()))}});
  }
  return api.post("/v1/device-transfers/accept", {{"voucher", voucher_text}, {"proofs", proofs}});
}

}  // namespace kiln::transport
