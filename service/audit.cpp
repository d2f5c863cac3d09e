// The audit log: one entry per write request (who, what, on which object, with what result, when), and
// GET /v1/audit to read a tenant's entries with filters, page by page.
#include <fmt/format.h>

#include <charconv>
#include <limits>

#include "service/handlers.hpp"

namespace kiln::service {
namespace {

constexpr std::int64_t default_audit_page = 100;
constexpr std::int64_t max_audit_page = 1000;

std::vector<std::string> segments_of(const std::string& pattern) {
  std::vector<std::string> out;
  std::size_t start = 1;  // after the leading '/'
  while (start <= pattern.size()) {
    auto end = pattern.find('/', start);
    if (end == std::string::npos) end = pattern.size();
    out.push_back(pattern.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// "products" -> "product", "factory-cas" -> "factory-ca"; "agent" stays.
std::string singular(const std::string& collection) {
  if (collection.size() > 1 && collection.back() == 's') return collection.substr(0, collection.size() - 1);
  return collection;
}

Json entry_json(const AuditEntry& e) {
  return {{"id", e.id},         {"at", e.at},         {"actor", e.actor},   {"role", e.role},
          {"action", e.action}, {"method", e.method}, {"route", e.route},   {"target", e.target},
          {"status", e.status}, {"request_id", e.request_id}};
}

std::int64_t number_query(const Call& call, const char* name, std::int64_t fallback, std::int64_t low,
                          std::int64_t high) {
  auto value = call.query_value(name);
  if (!value) return fallback;
  std::int64_t n = 0;
  auto [end, error] = std::from_chars(value->data(), value->data() + value->size(), n);
  if (error != std::errc{} || end != value->data() + value->size() || n < low || n > high)
    throw ApiError{400, "invalid_request", fmt::format("{} must be a whole number {}..{}", name, low, high)};
  return n;
}

}  // namespace

std::string audit_action(const std::string& method, const std::string& pattern) {
  auto parts = segments_of(pattern);  // "v1", collection, ...
  std::string noun = parts.size() > 1 ? singular(parts[1]) : pattern;
  std::string verb;
  if (method == "DELETE")
    verb = "delete";
  else if (method == "PATCH")
    verb = "update";
  else if (method == "PUT")
    verb = "upload";
  else if (parts.size() <= 2)
    verb = "create";
  else
    verb = parts.back() == "{}" ? "create" : parts.back();
  return noun + "." + verb;
}

Reply list_audit(Call& call) {
  AuditFilter filter;
  filter.tenant_id = call.who.tenant_id;
  filter.actor = call.query_value("actor");
  filter.action = call.query_value("action");
  filter.target = call.query_value("target");
  filter.since = timestamp_query(call, "since");
  filter.until = timestamp_query(call, "until");
  auto limit = number_query(call, "limit", default_audit_page, 1, max_audit_page);
  std::optional<std::int64_t> after;
  if (call.query_value("cursor"))
    after = number_query(call, "cursor", 0, 0, std::numeric_limits<std::int64_t>::max());
  auto entries = call.store.list_audit(filter, after, limit + 1);
  Json items = Json::array();
  Json next = nullptr;
  for (auto& entry : entries) {
    if (static_cast<std::int64_t>(items.size()) == limit) {
      next = std::to_string(items.back()["id"].get<std::int64_t>());
      break;
    }
    items.push_back(entry_json(entry));
  }
  return {200, Json{{"items", std::move(items)}, {"next_cursor", next}}};
}

}  // namespace kiln::service
