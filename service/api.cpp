// The API front: schema, tokens, routing, authentication, idempotency replay, JSON errors.
#include "service/api.hpp"

#include <openssl/rand.h>

#include <algorithm>
#include <functional>
#include <set>
#include <chrono>
#include <unordered_map>

#include <fmt/format.h>

#include "core/bytes.hpp"
#include "core/device_uid.hpp"
#include "core/error.hpp"
#include "core/sqlite.hpp"
#include "core/utf8.hpp"
#include "service/blob_file.hpp"
#include "service/factory_trust.hpp"
#include "service/handlers.hpp"
#include "service/store.hpp"
#include "signing/message_signature.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

// Seconds a client is told to wait (Retry-After) when the store is unavailable.
constexpr int retry_after_seconds = 5;

// How long an Idempotency-Key is remembered (docs/openapi.yaml).
constexpr std::int64_t idempotency_seconds = 24 * 3600;

using Handler = Reply (*)(Call&);
using RawHandler = Response (*)(Call&);

Reply whoami(Call& call) {
  std::string tenant = call.store.tenant_name(call.who.tenant_id);
  return {200, Json{{"tenant", tenant}, {"role", role_name(call.who.role)}, {"token", call.who.token_name}}};
}

Reply create_token_route(Call& call);

struct Route {
  RouteInfo info;
  Handler handler = nullptr;
  RawHandler raw = nullptr;
  // The answer carries a secret shown once (a new token): it is never stored for an idempotent replay.
  bool secret_response = false;
  // The handler reads a large body from its spooled file (request_content); other handlers get `body`.
  bool streams_body = false;
  // The handler opens its own units of work instead of running in one (a large import applies its units in
  // batches, so that devices get the store between them); its audit entry is written once it has answered.
  bool own_units = false;
  // Runs first in an Access::telemetry unit, which waits for no writer, and again in a write unit only when it
  // writes more than the device's telemetry (an agent check-in that decides something).
  bool telemetry_first = false;
};

const std::vector<Role> anyone = {Role::admin, Role::operator_, Role::factory, Role::reader};
const std::vector<Role> operators = {Role::admin, Role::operator_};
const std::vector<Role> factory = {Role::admin, Role::operator_, Role::factory};
const std::vector<Role> admins = {Role::admin};
const std::vector<Role> devices = {};

const std::vector<Route>& routes() {
  static const std::vector<Route> table = {
      {{"GET", "/v1/whoami", anyone}, whoami},
      {{"POST", "/v1/tokens", admins}, create_token_route, nullptr, true},
      {{"GET", "/v1/tokens", admins}, list_tokens},
      {{"DELETE", "/v1/tokens/{}", admins}, revoke_token},
      {{"POST", "/v1/products", operators}, create_product},
      {{"GET", "/v1/products", anyone}, list_products},
      {{"GET", "/v1/products/{}", anyone}, show_product},
      {{"PATCH", "/v1/products/{}", operators}, update_product},
      {{"DELETE", "/v1/products/{}", operators}, delete_product},
      {{"POST", "/v1/products/{}/trust-updates", operators}, publish_trust_update},
      {{"GET", "/v1/products/{}/trust-updates", anyone}, list_trust_updates},
      {{"POST", "/v1/groups", operators}, create_group},
      {{"GET", "/v1/groups", anyone}, list_groups},
      {{"GET", "/v1/groups/{}", anyone}, show_group},
      {{"PATCH", "/v1/groups/{}", operators}, update_group},
      {{"DELETE", "/v1/groups/{}", operators}, delete_group},
      {{"POST", "/v1/devices/import", factory}, import_devices, nullptr, false, false, true},
      {{"GET", "/v1/devices", anyone}, list_devices},
      {{"GET", "/v1/devices/count", anyone}, count_devices},
      {{"GET", "/v1/devices/{}", anyone}, show_device},
      {{"POST", "/v1/devices/assign", operators}, assign_devices},
      {{"POST", "/v1/devices/{}/assign", operators}, assign_device},
      {{"PATCH", "/v1/devices/{}", operators}, update_device},
      {{"POST", "/v1/devices/{}/claim-challenge", factory}, claim_challenge},
      {{"POST", "/v1/devices/{}/claim", factory}, claim_device},
      {{"POST", "/v1/devices/{}/revoke", operators}, revoke_device},
      {{"POST", "/v1/devices/{}/unclaim", operators}, unclaim_device},
      {{"POST", "/v1/device-transfers", admins}, create_transfer},
      {{"POST", "/v1/device-transfers/challenge", operators}, transfer_challenge},
      {{"POST", "/v1/device-transfers/accept", operators}, accept_transfer},
      {{"POST", "/v1/images", operators}, create_image},
      {{"GET", "/v1/images", anyone}, list_images},
      {{"GET", "/v1/images/{}", anyone}, show_image},
      {{"DELETE", "/v1/images/{}", operators}, delete_image},
      {{"PUT", "/v1/images/{}/content", operators}, upload_image_chunk, nullptr, false, true},
      {{"GET", "/v1/images/{}/content", anyone}, nullptr, download_image},
      {{"POST", "/v1/images/{}/manifest", operators}, link_image_manifest},
      {{"POST", "/v1/deployments", operators}, create_deployment},
      {{"GET", "/v1/deployments", anyone}, list_deployments},
      {{"GET", "/v1/deployments/{}", anyone}, show_deployment},
      {{"GET", "/v1/deployments/{}/devices", anyone}, list_deployment_devices},
      {{"GET", "/v1/deployments/{}/report", anyone}, deployment_report},
      {{"POST", "/v1/deployments/{}/pause", operators}, pause_deployment},
      {{"POST", "/v1/deployments/{}/resume", operators}, resume_deployment},
      {{"POST", "/v1/deployments/{}/abort", operators}, abort_deployment},
      {{"DELETE", "/v1/deployments/{}", operators}, delete_deployment},
      {{"GET", "/v1/audit", admins}, list_audit},
      {{"POST", "/v1/factory-cas/challenge", admins}, factory_ca_challenge},
      {{"POST", "/v1/factory-cas", admins}, register_factory_ca},
      {{"GET", "/v1/factory-cas", anyone}, list_factory_cas},
      {{"POST", "/v1/factory-cas/{}/revoke", admins}, revoke_factory_ca},
      {{"POST", "/v1/agent/check-in", devices}, agent_check_in, nullptr, false, false, false, true},
      {{"GET", "/v1/agent/images/{}/content", devices}, nullptr, agent_download_image},
      {{"GET", "/v1/agent/deployments/{}/manifest", devices}, nullptr, agent_deployment_manifest},
      {{"POST", "/v1/agent/status", devices}, agent_report_status},
  };
  return table;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    auto pos = s.find(sep, start);
    parts.emplace_back(s.substr(start, pos == std::string_view::npos ? std::string_view::npos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return parts;
}

std::map<std::string, std::string> parse_query(std::string_view query) {
  std::map<std::string, std::string> out;
  if (query.empty()) return out;
  for (auto& pair : split(query, '&')) {
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    std::string key = percent_decode(pair.substr(0, eq), true);
    std::string value = eq == std::string::npos ? "" : percent_decode(std::string_view(pair).substr(eq + 1), true);
    out[key] = value;
  }
  return out;
}

// Matches "/v1/devices/{}/claim" against decoded segments; fills params.
bool match(const std::string& pattern, const std::vector<std::string>& segments, std::vector<std::string>& params) {
  auto want = split(pattern, '/');
  if (want.size() != segments.size()) return false;
  std::vector<std::string> found;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (want[i] == "{}") {
      if (segments[i].empty()) return false;
      found.push_back(segments[i]);
    } else if (want[i] != segments[i]) {
      return false;
    }
  }
  params = std::move(found);
  return true;
}

Response json_response(int status, const Json& body) {
  Response r;
  r.status = status;
  // Messages may quote request bytes (paths, IDs) that are not UTF-8: replace, never throw.
  r.body = body.dump(-1, ' ', false, Json::error_handler_t::replace);
  return r;
}

Response error_response(int status, const std::string& code, const std::string& message) {
  return json_response(status, Json{{"error", {{"code", code}, {"message", message}}}});
}

std::string header(const Request& request, const std::string& name) {
  auto it = request.headers.find(name);
  return it == request.headers.end() ? std::string() : it->second;
}

}  // namespace

// The route of a request: found (with its path parameters), or only its path known (for another method).
struct RouteMatch {
  const Route* route = nullptr;
  std::vector<std::string> params;
  bool path_known = false;
};

std::string role_name(Role role) {
  switch (role) {
    case Role::admin: return "admin";
    case Role::operator_: return "operator";
    case Role::factory: return "factory";
    case Role::reader: return "reader";
  }
  return "reader";
}

std::optional<Role> parse_role(std::string_view name) {
  if (name == "admin") return Role::admin;
  if (name == "operator") return Role::operator_;
  if (name == "factory") return Role::factory;
  if (name == "reader") return Role::reader;
  return std::nullopt;
}

const std::vector<RouteInfo>& route_table() {
  static const std::vector<RouteInfo> infos = [] {
    std::vector<RouteInfo> out;
    for (auto& r : routes()) out.push_back(r.info);
    return out;
  }();
  return infos;
}

std::optional<std::string> Call::query_value(const std::string& name) const {
  auto it = query.find(name);
  if (it == query.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

Json parse_object(const std::string& body) {
  Json value;
  try {
    value = Json::parse(body);
  } catch (const Json::parse_error& e) {
    throw ApiError{400, "malformed_json", fmt::format("request body is not valid JSON: {}", e.what())};
  }
  if (!value.is_object()) throw ApiError{400, "invalid_request", "request body must be a JSON object"};
  return value;
}

std::string required_string(const Json& object, const char* field, std::size_t max_length) {
  auto it = object.find(field);
  if (it == object.end()) throw ApiError{400, "invalid_request", fmt::format("field '{}' is required", field)};
  if (!it->is_string()) throw ApiError{400, "invalid_request", fmt::format("field '{}' must be a string", field)};
  auto value = it->get<std::string>();
  if (value.empty() || value.size() > max_length)
    throw ApiError{400, "invalid_request", fmt::format("field '{}' must be 1..{} characters", field, max_length)};
  return value;
}

std::vector<std::string> device_ids_field(const Json& object, std::size_t max) {
  auto it = object.find("devices");
  if (it == object.end() || !it->is_array() || it->empty() || it->size() > max)
    throw ApiError{400, "invalid_request", fmt::format("field 'devices' must be an array of 1 to {} device UIDs", max)};
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const auto& d = (*it)[i];
    if (!d.is_string() || !is_device_uid(d.get_ref<const std::string&>()))
      throw ApiError{400, "invalid_request",
                     fmt::format("field 'devices' must hold device UIDs ({}); element {} is not one", device_uid_alphabet, i)};
    if (seen.insert(d.get<std::string>()).second) out.push_back(d.get<std::string>());
  }
  return out;
}

std::optional<std::string> optional_string(const Json& object, const char* field, std::size_t max_length) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) throw ApiError{400, "invalid_request", fmt::format("field '{}' must be a string", field)};
  auto value = it->get<std::string>();
  if (value.size() > max_length)
    throw ApiError{400, "invalid_request", fmt::format("field '{}' is longer than {} characters", field, max_length)};
  return value;
}


std::optional<std::string> timestamp_query(const Call& call, const std::string& name) {
  auto value = call.query_value(name);
  if (!value) return std::nullopt;
  auto time = normalize_timestamp(*value);
  if (!time)
    throw ApiError{400, "invalid_request",
                   fmt::format("{} must be an ISO 8601 time such as 2026-01-31T12:00:00Z or 2026-01-31 (got '{}')",
                               name, value->substr(0, 64))};
  return time;
}

std::string random_hex(std::size_t count) {
  Bytes raw(count);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) throw ApiError{500, "internal", "no randomness"};
  return to_hex(raw);
}

bool verify_message_signature(ByteView public_key_der, std::string_view message, ByteView signature) {
  return verify_message(public_key_der, as_bytes(message), HashAlg::sha256, signature);
}

std::string random_id(const char* prefix) {
  Bytes raw(8);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) throw ApiError{500, "internal", "no randomness"};
  return std::string(prefix) + to_hex(raw);
}

std::string new_token() {
  Bytes raw(32);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1)
    throw Error(ExitCode::failure, "cannot generate a token: the random generator failed");
  return "kiln_" + to_hex(raw);
}

std::string token_hash(std::string_view token) { return to_hex(digest(HashAlg::sha256, as_bytes(token))); }

namespace {

Reply create_token_route(Call& call) {
  auto body = parse_object(call.request.body);
  auto role_text = required_string(body, "role", 16);
  auto role = parse_role(role_text);
  if (!role) throw ApiError{400, "invalid_request", "role must be admin, operator, factory or reader"};
  auto name = optional_string(body, "name", 128).value_or(role_text);
  std::string token = new_token();
  auto id = random_id("tok_");
  call.store.add_token(token_hash(token), {call.who.tenant_id, role_text, name, id}, now_iso8601());
  return {201, Json{{"id", id}, {"name", name}, {"role", role_text}, {"token", token}}};
}

}  // namespace

namespace {

// What the audit entry of a write needs from its dispatch: set once the caller is known.
struct AuditNote {
  bool known = false;
  Principal who;
  std::string pattern;
  std::vector<std::string> params;
};

bool sane_request_id(const std::string& id) {
  return !id.empty() && id.size() <= 128 &&
         id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:") == std::string::npos;
}

// The batch route of device assign: logged one entry per device moved (audit_targets).
constexpr std::string_view batch_assign_route = "/v1/devices/assign";

// The object a write acted on: the route's ID, else the "id" of what it created, else (agent status
// reports) the deployment reported on, else (a refused batch assign) the group as the request named it.
std::string raw_audit_target(const AuditNote& note, const Request& request, const Response& response) {
  if (!note.params.empty()) return note.params.front();
  auto answer = Json::parse(response.body, nullptr, false);
  if (response.status < 300 && answer.is_object()) {
    if (auto it = answer.find("id"); it != answer.end() && it->is_string()) return it->get<std::string>();
    if (auto it = answer.find("name"); it != answer.end() && it->is_string()) return it->get<std::string>();
  }
  auto body = Json::parse(request.body, nullptr, false);
  if (body.is_object()) {
    if (auto it = body.find("deployment"); it != body.end() && it->is_string()) return it->get<std::string>().substr(0, 64);
    if (auto it = body.find("group"); note.pattern == batch_assign_route && it != body.end() && it->is_string())
      return it->get<std::string>();
  }
  return {};
}

// What a write's audit entries name: one target, except a batch assign that moved devices, which is logged
// once per device (its UID the target), so that `audit list --target UID` finds who moved a board.
std::vector<std::string> audit_targets(const AuditNote& note, const Request& request, const Response& response) {
  if (note.pattern == batch_assign_route && response.status < 300) {
    std::vector<std::string> ids;
    auto answer = Json::parse(response.body, nullptr, false);
    if (answer.is_object() && answer["devices"].is_array())
      for (const auto& device : answer["devices"])
        if (device.is_object() && device["id"].is_string()) ids.push_back(device["id"].get<std::string>());
    if (!ids.empty()) return ids;
  }
  return {raw_audit_target(note, request, response)};
}

// Text as the store can keep it whatever the request held: valid UTF-8 (bad bytes replaced), no NUL
// bytes, at most 256 bytes.
std::string storable(std::string raw) {
  std::erase(raw, '\0');
  if (raw.size() > 256) raw.resize(256);
  return to_valid_utf8(raw);
}

}  // namespace

struct Service::Impl {
  ServiceConfig config;
  std::unique_ptr<Store> store;
  std::mutex cache_mutex;  // guards verified_devices and last_idempotency_purge (requests run in parallel)
  // Device certificates already checked (SHA-256 of the leaf DER -> device): a keep-alive agent must not
  // pay for an X.509 chain verification per request. Emptied by any write made with a token (a CA
  // registration or an import can change the answer) and when it grows large.
  std::unordered_map<std::string, Principal> verified_devices;
  std::int64_t last_idempotency_purge = 0;  // unix seconds of the last sweep of expired idempotency keys

  Principal authenticate_agent(const Request& request) {
    if (request.client_certificates.empty()) return authenticate_device(*store, request.client_certificates);
    std::string key = to_hex(digest(HashAlg::sha256, as_bytes(request.client_certificates[0])));
    {
      std::lock_guard lock(cache_mutex);
      if (auto it = verified_devices.find(key); it != verified_devices.end()) return it->second;
    }
    Principal who = authenticate_device(*store, request.client_certificates);
    std::lock_guard lock(cache_mutex);
    if (verified_devices.size() > 100000) verified_devices.clear();
    verified_devices.emplace(key, who);
    return who;
  }

  explicit Impl(ServiceConfig c)
      : config(std::move(c)), store(open_store(config.database, config.store_password_file)) {}

  // A bearer token (a revoked one is not found), else a station's client certificate (mutual TLS, role
  // factory). `why` says what failed; `forbidden`: the station's CA was revoked (403, not 401).
  std::optional<Principal> authenticate(const Request& request, std::string& why, bool& forbidden) {
    auto auth = header(request, "authorization");
    if (auth.starts_with("Bearer ")) {
      auto token = store->find_token(token_hash(std::string_view(auth).substr(7)));
      if (!token) return std::nullopt;
      return Principal{token->tenant_id, parse_role(token->role).value_or(Role::reader), token->name, {}};
    }
    if (request.client_certificates.empty()) return std::nullopt;
    return authenticate_station(request, why, forbidden);
  }

  // Stations present a certificate chained to a factory CA their tenant registered; they act with the
  // factory role. Device certificates chain to the same CAs but serve only the agent endpoints.
  std::optional<Principal> authenticate_station(const Request& request, std::string& why, bool& forbidden) {
    const auto& leaf = request.client_certificates.front();
    auto name = certificate_common_name(leaf);
    auto device = store->device_identity(name);
    if (device && device->public_key == to_hex(certificate_public_key(leaf))) {
      why = fmt::format("client certificate CN={} is device {}'s certificate: devices may only call /v1/agent endpoints",
                        name, name);
      return std::nullopt;
    }
    auto station = find_station(*store, request.client_certificates, why);
    if (!station) {
      if (auto revoked = revoked_station_ca(*store, request.client_certificates)) {
        forbidden = true;
        why = fmt::format("client certificate CN={} chains to station CA {} ({}), revoked at {}{}: station logins "
                          "under it are refused",
                          name, revoked->id.substr(0, 16), revoked->subject, revoked->revoked_at.value_or("?"),
                          revoked->revoked_reason && !revoked->revoked_reason->empty()
                              ? " (" + *revoked->revoked_reason + ")"
                              : std::string());
        if (config.log) config.log("station: refused " + why);
      }
      return std::nullopt;
    }
    return Principal{station->tenant_id, Role::factory, "station:" + station->name, {}};
  }

  // The audit entry of a write (every method but GET and HEAD) by a known caller, refused or not; agent
  // check-ins (a heartbeat every minute per device) are not logged. In the request's unit of work.
  void record_audit(const AuditNote& note, const Request& request, const Response& response,
                    const std::string& request_id) {
    if (!note.known || request.method == "GET" || request.method == "HEAD") return;
    if (note.pattern == "/v1/agent/check-in") return;
    AuditEntry entry;
    entry.at = now_iso8601();
    bool agent = !note.who.device_id.empty();
    entry.actor = storable(agent ? note.who.device_id : note.who.token_name);
    entry.role = agent ? "device" : role_name(note.who.role);
    entry.action = audit_action(request.method, note.pattern);
    entry.method = request.method;
    entry.route = note.pattern;
    entry.status = response.status;
    entry.request_id = request_id;
    for (auto& target : audit_targets(note, request, response)) {
      entry.target = storable(std::move(target));
      store->add_audit(note.who.tenant_id, entry);
    }
  }

  // Who calls a route and whether they may: the checks made before any handler runs (dispatch) and before a
  // streamed body is stored (handle), so an unknown or refused caller's upload is never written to disk (it
  // would let anyone fill the blob directory 64 MiB per request). With a refusal, nothing runs.
  struct Admission {
    std::optional<Principal> who;
    std::optional<Response> refusal;
  };
  Admission admit(const Request& request, const Route& route) {
    const auto& allowed = route.info.roles;
    Admission admission;
    std::string why;
    bool forbidden = false;
    auto& who = admission.who;
    who = allowed.empty() ? authenticate_agent(request) : authenticate(request, why, forbidden);
    // Revocation is read from the store on every request (no cache): it holds on every instance at once.
    if (allowed.empty() && who) {
      if (auto tenant = refuse_revoked_device(*store, config, who->device_id)) who->tenant_id = *tenant;
    }
    if (!who && forbidden)
      admission.refusal = error_response(403, "ca_revoked", why);
    else if (!who)
      admission.refusal =
          error_response(401, "unauthenticated", why.empty() ? "missing, unknown or revoked bearer token" : why);
    else if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), who->role) == allowed.end())
      admission.refusal = error_response(
          403, "forbidden", fmt::format("role {} may not {} {}", role_name(who->role), request.method, route.info.pattern));
    return admission;
  }

  // Whether a streamed body may be stored: the route exists and admit() lets its caller in.
  bool admits_body(const Request& request, const RouteMatch& match) {
    if (!match.route) return false;
    auto unit = store->begin(Store::Access::read);
    return !admit(request, *match.route).refusal;
  }

  static RouteMatch match_route(const std::string& method, std::string_view path) {
    std::vector<std::string> segments;
    for (auto& s : split(path, '/')) segments.push_back(percent_decode(s, false));
    RouteMatch found;
    for (auto& route : routes()) {
      std::vector<std::string> p;
      if (!match(route.info.pattern, segments, p)) continue;
      found.path_known = true;
      if (route.info.method == method) {
        found.route = &route;
        found.params = std::move(p);
        break;
      }
    }
    return found;
  }

  // The request's route, matched once: handle() reads whether it opens its own units, dispatch() runs it.
  static RouteMatch match_route(const Request& request) {
    return match_route(request.method, std::string_view(request.target).substr(0, request.target.find('?')));
  }

  Response dispatch(const Request& request, const RouteMatch& match, AuditNote& note) {
    auto qpos = request.target.find('?');
    std::string_view path = std::string_view(request.target).substr(0, qpos);
    std::string_view query = qpos == std::string::npos ? std::string_view() : std::string_view(request.target).substr(qpos + 1);
    auto [found, params, path_known] = match;
    if (!found) {
      if (path_known) return error_response(405, "method_not_allowed", fmt::format("{} is not allowed on {}", request.method, path));
      return error_response(404, "not_found", fmt::format("no such endpoint: {}", path));
    }

    auto [who, refusal] = admit(request, *found);
    // A write by an admitted caller may change what a device certificate proves (a CA revoked, a device
    // re-imported): devices are verified again. A refused caller cannot make every agent pay for that.
    if (!found->info.roles.empty() && request.method != "GET" && who && !refusal) {
      std::lock_guard lock(cache_mutex);
      verified_devices.clear();
    }
    if (who) note = AuditNote{true, *who, found->info.pattern, params};
    if (refusal) return std::move(*refusal);

    // A body that came as a stream, for a handler that reads `body`: bounded by the HTTP layer's request limit.
    Request loaded;
    if (request.body_file && !found->streams_body) {
      loaded = request;
      loaded.body = request.body_file->read_all();
      loaded.body_file.reset();
    }
    const Request& handled = request.body_file && !found->streams_body ? loaded : request;
    Call call{*store, config, handled, *who, std::move(params), parse_query(query)};
    auto key = header(request, "idempotency-key");
    bool replayable = request.method == "POST" && !key.empty();
    std::string request_sha256;
    if (replayable) {
      if (key.size() > 128) return error_response(400, "invalid_request", "Idempotency-Key is longer than 128 characters");
      auto now = unix_now();
      auto oldest = iso8601(now - idempotency_seconds);
      bool purge = false;
      {
        std::lock_guard lock(cache_mutex);
        purge = now - last_idempotency_purge >= 60;
        if (purge) last_idempotency_purge = now;
      }
      if (purge) store->forget_idempotency_before(oldest);
      Hasher hasher(HashAlg::sha256);
      for (std::string_view part :
           {std::string_view(request.method), std::string_view("\n"), std::string_view(request.target),
            std::string_view("\n"), std::string_view(request.body)})
        hasher.update(as_bytes(part));
      request_sha256 = to_hex(hasher.finish());
      if (auto seen = store->find_idempotency(who->tenant_id, key, oldest)) {
        bool same = !seen->request_sha256 ? seen->method == request.method && seen->path == path
                                          : *seen->request_sha256 == request_sha256;
        if (!same)
          return error_response(422, "idempotency_key_reused",
                                "this Idempotency-Key was used in the last 24 hours for a different request (method, "
                                "path or body differ): send a new key for a new request");
        if (seen->secret)
          return error_response(409, "idempotency_conflict",
                                "the request with this Idempotency-Key already succeeded; its answer held a secret, "
                                "which is shown only once and never stored: create another (and retire the first)");
        Response r;
        r.status = seen->status;
        r.body = seen->body;
        r.headers["Idempotent-Replayed"] = "true";
        return r;
      }
    }
    if (found->raw) return found->raw(call);
    Reply reply = found->handler(call);
    Response r = json_response(reply.status, reply.body);
    if (replayable && r.status < 500) {
      bool secret = found->secret_response && r.status < 300;
      store->remember_idempotency(
          who->tenant_id, key,
          {request.method, std::string(path), r.status, secret ? std::string() : r.body, request_sha256, secret},
          now_iso8601());
    }
    return r;
  }
};

Service::Service(ServiceConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Service::~Service() = default;

namespace {

// The database is down, restarting or busy past its timeout: nothing was applied; the client tries again.
Response unavailable(const Error& e) {
  auto r = error_response(503, "store_unavailable", e.what());
  r.headers["Retry-After"] = std::to_string(retry_after_seconds);
  return r;
}

// The answer to one request: handler errors become their JSON error responses.
Response answer(std::function<Response()> dispatch) {
  try {
    return dispatch();
  } catch (const WriteOrderNeeded&) {
    throw;  // the request runs again in a write unit (Service::handle)
  } catch (const ApiError& e) {
    return error_response(e.status, e.code, e.message);
  } catch (const Json::exception& e) {
    return error_response(400, "invalid_request", fmt::format("request body has the wrong shape: {}", e.what()));
  } catch (const StoreUnavailable& e) {
    return unavailable(e);
  } catch (const sqlite::Busy& e) {
    return unavailable(e);
  } catch (const StoreRejected& e) {
    return error_response(400, "invalid_request", e.what());
  } catch (const Error& e) {
    if (e.code() == ExitCode::conflict) return error_response(409, "conflict", e.what());
    return error_response(500, "internal", e.what());
  } catch (const std::exception& e) {
    return error_response(500, "internal", e.what());
  }
}

}  // namespace

Response Service::handle(const Request& request) {
  auto match = Impl::match_route(request);
  // A streamed body is on disk before the unit of work begins: the store waits for no client's upload.
  // A caller who may not send it gets the refusal dispatch() gives, and the body is never read.
  if (!request.read_body) return handle(request, std::move(match));
  Request spooled = request;
  spooled.read_body = {};
  bool admitted = false;
  auto gate = answer([&] {
    admitted = impl_->admits_body(request, match);
    return Response{};
  });
  if (!admitted) {
    if (gate.status >= 500) {  // the store could not tell (503): say so, with nothing stored
      gate.headers["X-Request-Id"] = random_id("req_");
      return gate;
    }
    return handle(spooled, std::move(match));
  }
  auto spool = answer([&] {
    spooled.body_file = BlobFile::spool(request.read_body, impl_->config.image_dir);
    return Response{};
  });
  if (!spooled.body_file) {
    spool.headers["X-Request-Id"] = random_id("req_");
    return spool;
  }
  return handle(spooled, std::move(match));
}

Response Service::handle(const Request& request, RouteMatch match) {
  // Each request is one unit of work of its own (no lock shared by all requests): GETs read a snapshot,
  // other methods write one at a time. What a handler stored before answering with an error stays (a
  // challenge is used up even by a failed proof); the handler's own units undo their part.
  // Every write is logged in the same unit (audit.cpp): a refused one too, with its status.
  bool reads = request.method == "GET" || request.method == "HEAD";
  auto given = header(request, "x-request-id");
  std::string request_id = sane_request_id(given) ? given : random_id("req_");
  bool own_units = !reads && match.route && match.route->own_units;
  auto access = reads ? Store::Access::read
                      : match.route && match.route->telemetry_first ? Store::Access::telemetry : Store::Access::write;
  auto one_unit = [&] {
    std::unique_ptr<Store::Transaction> unit;
    if (!own_units) unit = impl_->store->begin(access);
    AuditNote note;
    Response response = answer([&] { return impl_->dispatch(request, match, note); });
    if (own_units) unit = impl_->store->begin();  // its audit entry, in a unit of its own
    try {
      impl_->record_audit(note, request, response, request_id);
    } catch (const WriteOrderNeeded&) {
      throw;
    } catch (...) {
      // A write is never applied without its entry; a refused one (nothing applied, its unit possibly
      // unusable after a failed statement) keeps its own answer.
      if (response.status < 400) throw;
    }
    unit->commit();
    return response;
  };
  Response out = answer([&] {
    try {
      return one_unit();
    } catch (const WriteOrderNeeded&) {
      access = Store::Access::write;  // it decides something: rolled back, and run again in the write order
      return one_unit();
    }
  });
  out.headers["X-Request-Id"] = request_id;
  return out;
}

std::int64_t Service::create_tenant(const std::string& name) {
  auto unit = impl_->store->begin();
  auto id = impl_->store->create_tenant(name, now_iso8601());
  unit->commit();
  return id;
}

std::optional<std::int64_t> Service::find_tenant(const std::string& name) {
  return impl_->store->find_tenant(name);
}

std::string Service::create_token(std::int64_t tenant_id, Role role, const std::string& name) {
  std::string token = new_token();
  auto unit = impl_->store->begin();
  impl_->store->add_token(token_hash(token), {tenant_id, role_name(role), name, random_id("tok_")}, now_iso8601());
  unit->commit();
  return token;
}

}  // namespace kiln::service
