// Products and device groups: every product starts with the groups Development, Field Test, Production.
#include <fmt/format.h>

#include "service/handlers.hpp"

namespace kiln::service {
namespace {

const char* const default_groups[] = {"Development", "Field Test", "Production"};

Json product_json(Statement& q) {
  return {{"id", q.text(0)}, {"name", q.text(1)}, {"description", q.text(2)}, {"created_at", q.text(3)}};
}

Json group_json(Statement& q) {
  return {{"id", q.text(0)}, {"product", q.text(1)}, {"name", q.text(2)}, {"description", q.text(3)},
          {"created_at", q.text(4)}};
}

constexpr const char* group_columns =
    "SELECT g.id, p.name, g.name, g.description, g.created_at FROM device_groups g JOIN products p ON p.id = g.product_id ";

Json fetch_group(Call& call, const std::string& id) {
  auto q = call.db.prepare(std::string(group_columns) + "WHERE g.id = ? AND g.tenant_id = ?");
  q.bind(1, id).bind(2, call.who.tenant_id);
  if (!q.step()) throw ApiError{404, "not_found", fmt::format("group {} not found", id)};
  return group_json(q);
}

std::string insert_group(Call& call, const std::string& product_id, const std::string& name,
                         const std::string& description) {
  std::string id = random_id("grp_");
  call.db.prepare("INSERT INTO device_groups (id, tenant_id, product_id, name, description, created_at) VALUES (?, ?, ?, ?, ?, ?)")
      .bind(1, id)
      .bind(2, call.who.tenant_id)
      .bind(3, product_id)
      .bind(4, name)
      .bind(5, description)
      .bind(6, now_iso8601())
      .run();
  return id;
}

// Devices in a product or group; `column` is product_id or group_id (never user input).
std::int64_t devices_in(Call& call, const char* column, const std::string& id) {
  auto count = call.db.prepare(fmt::format("SELECT count(*) FROM devices WHERE {} = ?", column));
  count.bind(1, id);
  count.step();
  return count.integer(0);
}

}  // namespace

std::string resolve_product_id(Call& call, const std::string& ref) {
  auto q = call.db.prepare("SELECT id FROM products WHERE tenant_id = ? AND (id = ? OR name = ?)");
  q.bind(1, call.who.tenant_id).bind(2, ref).bind(3, ref);
  if (!q.step()) throw ApiError{404, "not_found", fmt::format("product {} not found", ref)};
  return q.text(0);
}

std::string resolve_group_id(Call& call, const std::string& ref) {
  auto slash = ref.find('/');
  if (slash == std::string::npos) {
    auto q = call.db.prepare("SELECT id FROM device_groups WHERE tenant_id = ? AND id = ?");
    q.bind(1, call.who.tenant_id).bind(2, ref);
    if (!q.step()) throw ApiError{404, "not_found", fmt::format("group {} not found (use an ID or Product/Group)", ref)};
    return q.text(0);
  }
  std::string product_id = resolve_product_id(call, ref.substr(0, slash));
  auto q = call.db.prepare("SELECT id FROM device_groups WHERE product_id = ? AND name = ?");
  q.bind(1, product_id).bind(2, ref.substr(slash + 1));
  if (!q.step()) throw ApiError{404, "not_found", fmt::format("group {} not found", ref)};
  return q.text(0);
}

Reply create_product(Call& call) {
  auto body = parse_object(call.request.body);
  auto name = required_string(body, "name", 128);
  if (name.find('/') != std::string::npos) throw ApiError{400, "invalid_request", "a product name cannot contain '/'"};
  auto description = optional_string(body, "description").value_or("");
  Transaction tx(call.db);
  auto existing = call.db.prepare("SELECT 1 FROM products WHERE tenant_id = ? AND name = ?");
  existing.bind(1, call.who.tenant_id).bind(2, name);
  if (existing.step()) throw ApiError{409, "conflict", fmt::format("product {} already exists", name)};
  std::string id = random_id("prd_");
  std::string now = now_iso8601();
  call.db.prepare("INSERT INTO products (id, tenant_id, name, description, created_at) VALUES (?, ?, ?, ?, ?)")
      .bind(1, id)
      .bind(2, call.who.tenant_id)
      .bind(3, name)
      .bind(4, description)
      .bind(5, now)
      .run();
  Json groups = Json::array();
  for (const char* group : default_groups) {
    insert_group(call, id, group, "");
    groups.push_back(name + "/" + group);
  }
  tx.commit();
  return {201, Json{{"id", id}, {"name", name}, {"description", description}, {"created_at", now}, {"groups", groups}}};
}

Reply list_products(Call& call) {
  auto q = call.db.prepare("SELECT id, name, description, created_at FROM products WHERE tenant_id = ? ORDER BY name");
  q.bind(1, call.who.tenant_id);
  Json items = Json::array();
  while (q.step()) items.push_back(product_json(q));
  return {200, Json{{"items", items}}};
}

Reply show_product(Call& call) {
  auto id = resolve_product_id(call, call.params[0]);
  auto q = call.db.prepare("SELECT id, name, description, created_at FROM products WHERE id = ?");
  q.bind(1, id);
  q.step();
  Json out = product_json(q);
  out["devices"] = devices_in(call, "product_id", id);
  return {200, out};
}

Reply delete_product(Call& call) {
  auto id = resolve_product_id(call, call.params[0]);
  Transaction tx(call.db);
  if (auto devices = devices_in(call, "product_id", id); devices > 0)
    throw ApiError{409, "conflict", fmt::format("product {} still has {} devices", call.params[0], devices)};
  call.db.prepare("DELETE FROM deployment_devices WHERE deployment_id IN (SELECT d.id FROM deployments d JOIN device_groups g "
                  "ON g.id = d.group_id WHERE g.product_id = ?)").bind(1, id).run();
  call.db.prepare("DELETE FROM deployments WHERE group_id IN (SELECT id FROM device_groups WHERE product_id = ?)").bind(1, id).run();
  call.db.prepare("DELETE FROM device_groups WHERE product_id = ?").bind(1, id).run();
  call.db.prepare("DELETE FROM products WHERE id = ?").bind(1, id).run();
  tx.commit();
  return {200, Json{{"deleted", id}}};
}

Reply create_group(Call& call) {
  auto body = parse_object(call.request.body);
  auto product_id = resolve_product_id(call, required_string(body, "product", 128));
  auto name = required_string(body, "name", 128);
  auto description = optional_string(body, "description").value_or("");
  auto existing = call.db.prepare("SELECT 1 FROM device_groups WHERE product_id = ? AND name = ?");
  existing.bind(1, product_id).bind(2, name);
  if (existing.step()) throw ApiError{409, "conflict", fmt::format("group {} already exists", name)};
  return {201, fetch_group(call, insert_group(call, product_id, name, description))};
}

Reply list_groups(Call& call) {
  auto product = call.query_value("product");
  std::string sql = std::string(group_columns) + "WHERE g.tenant_id = ?";
  if (product) sql += " AND g.product_id = ?";
  sql += " ORDER BY p.name, g.name";
  auto q = call.db.prepare(sql);
  q.bind(1, call.who.tenant_id);
  if (product) q.bind(2, resolve_product_id(call, *product));
  Json items = Json::array();
  while (q.step()) items.push_back(group_json(q));
  return {200, Json{{"items", items}}};
}

Reply show_group(Call& call) {
  auto id = resolve_group_id(call, call.params[0]);
  Json out = fetch_group(call, id);
  out["devices"] = devices_in(call, "group_id", id);
  return {200, out};
}

Reply update_group(Call& call) {
  auto body = parse_object(call.request.body);
  auto id = resolve_group_id(call, call.params[0]);
  auto name = optional_string(body, "name", 128);
  auto description = optional_string(body, "description");
  if (name && name->empty()) throw ApiError{400, "invalid_request", "field 'name' cannot be empty"};
  if (name)
    call.db.prepare("UPDATE device_groups SET name = ? WHERE id = ?").bind(1, *name).bind(2, id).run();
  if (description)
    call.db.prepare("UPDATE device_groups SET description = ? WHERE id = ?").bind(1, *description).bind(2, id).run();
  return {200, fetch_group(call, id)};
}

Reply delete_group(Call& call) {
  auto id = resolve_group_id(call, call.params[0]);
  Transaction tx(call.db);
  if (auto devices = devices_in(call, "group_id", id); devices > 0)
    throw ApiError{409, "conflict",
                   fmt::format("group {} still has {} devices: assign them elsewhere first", call.params[0], devices)};
  call.db.prepare("DELETE FROM deployment_devices WHERE deployment_id IN (SELECT id FROM deployments WHERE group_id = ?)").bind(1, id).run();
  call.db.prepare("DELETE FROM deployments WHERE group_id = ?").bind(1, id).run();
  call.db.prepare("DELETE FROM device_groups WHERE id = ?").bind(1, id).run();
  tx.commit();
  return {200, Json{{"deleted", id}}};
}

}  // namespace kiln::service
