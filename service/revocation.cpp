// Revocation (issue 17): devices, tokens and factory CAs. Every check reads the store on each request (no
// per-process cache), so a revocation holds on every service instance sharing the store at once.
#include <algorithm>

#include <fmt/format.h>

#include "service/factory_trust.hpp"
#include "service/handlers.hpp"
#include "service/rollout.hpp"

namespace kiln::service {
namespace {

// The optional {"reason": "..."} of a revocation (an empty body is none).
std::string revocation_reason(const Call& call) {
  if (call.request.body.empty()) return {};
  return optional_string(parse_object(call.request.body), "reason", 1024).value_or("");
}

Json text_or_null(const std::optional<std::string>& text) {
  return text && !text->empty() ? Json(*text) : Json(nullptr);
}

Json token_json(const TokenInfo& t) {
  return Json{{"id", t.id},
              {"name", t.name},
              {"role", t.role},
              {"created_at", t.created_at},
              {"revoked_at", text_or_null(t.revoked_at)}};
}

// A token of the tenant by ID, else by name (one live token, or else one token, of that name).
TokenInfo find_token_ref(const std::vector<TokenInfo>& tokens, const std::string& ref) {
  for (auto& t : tokens)
    if (t.id == ref) return t;
  std::vector<TokenInfo> named, live;
  for (auto& t : tokens) {
    if (t.name != ref) continue;
    named.push_back(t);
    if (!t.revoked_at) live.push_back(t);
  }
  if (live.size() == 1) return live.front();
  if (live.empty() && named.size() == 1) return named.front();
  if (named.empty()) throw ApiError{404, "not_found", fmt::format("token {} not found", ref)};
  throw ApiError{409, "ambiguous",
                 fmt::format("{} tokens are named '{}': name one by its ID (kiln token list)", named.size(), ref)};
}

}  // namespace

std::optional<std::int64_t> refuse_revoked_device(Store& store, const ServiceConfig& config,
                                                  const std::string& device_id) {
  auto device = store.device_identity(device_id);
  if (!device) return std::nullopt;
  if (!device->revoked_at) return device->tenant_id;
  auto reason = device->revoked_reason && !device->revoked_reason->empty() ? *device->revoked_reason
                                                                           : std::string("no reason given");
  auto message = fmt::format("device {} was revoked at {} ({}): its certificate is refused", device_id,
                             *device->revoked_at, reason);
  if (config.log) config.log("agent: refused " + message);
  throw ApiError{403, "device_revoked", message};
}

Reply revoke_device(Call& call) {
  const auto& id = call.params[0];
  auto reason = revocation_reason(call);
  auto device = call.store.find_device(call.who.tenant_id, id);
  if (!device) throw ApiError{404, "not_found", fmt::format("device {} not found", id)};
  auto now = now_iso8601();
  // The revocation, the deployments it leaves and their rollout decisions commit together.
  auto tx = call.store.begin();
  auto left = leave_open_deployments(call.store, call.who.tenant_id, id, DeviceStatus::revoked,
                                     reason.empty() ? "device revoked" : "device revoked: " + reason,
                                     [&] { call.store.revoke_device(id, reason, now); });
  tx->commit();
  if (call.config.log && !device->revoked_at)
    call.config.log(fmt::format("device {} revoked by {}{}", id, call.who.token_name,
                                reason.empty() ? std::string() : " (" + reason + ")"));
  auto out = device_json(*call.store.find_device(call.who.tenant_id, id));
  out["deployments_left"] = left;
  return {200, out};
}

Reply list_tokens(Call& call) {
  Json items = Json::array();
  for (auto& t : call.store.list_tokens(call.who.tenant_id)) items.push_back(token_json(t));
  return {200, Json{{"items", items}}};
}

Reply revoke_token(Call& call) {
  auto tokens = call.store.list_tokens(call.who.tenant_id);
  auto token = find_token_ref(tokens, call.params[0]);
  if (!token.revoked_at && token.role == "admin") {
    auto live_admins = std::count_if(tokens.begin(), tokens.end(),
                                     [](const TokenInfo& t) { return t.role == "admin" && !t.revoked_at; });
    if (live_admins <= 1)
      throw ApiError{409, "last_admin_token",
                     fmt::format("token {} ({}) is the tenant's last admin token: create another admin token first "
                                 "(kiln-service token create --role admin), then revoke this one",
                                 token.id, token.name)};
  }
  call.store.revoke_token(call.who.tenant_id, token.id, now_iso8601());
  for (auto& t : call.store.list_tokens(call.who.tenant_id))
    if (t.id == token.id) return {200, token_json(t)};
  throw ApiError{404, "not_found", fmt::format("token {} not found", token.id)};
}

Reply revoke_factory_ca(Call& call) {
  auto reason = revocation_reason(call);
  auto ca = find_factory_ca(call.store, call.who.tenant_id, call.params[0]);
  call.store.revoke_factory_ca(call.who.tenant_id, ca.id, reason, now_iso8601());
  ca = find_factory_ca(call.store, call.who.tenant_id, ca.id);
  if (call.config.log)
    call.config.log(fmt::format("factory CA {} ({}) revoked by {}{}", ca.id.substr(0, 16), ca.subject,
                                call.who.token_name, reason.empty() ? std::string() : " (" + reason + ")"));
  return {200, Json{{"id", ca.id},
                    {"subject", ca.subject},
                    {"stations", ca.stations},
                    {"revoked_at", text_or_null(ca.revoked_at)},
                    {"revoked_reason", text_or_null(ca.revoked_reason)}}};
}

}  // namespace kiln::service
