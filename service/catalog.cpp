// Products and device groups: every product starts with the groups Development, Field Test, Production.
#include <fmt/format.h>

#include "service/handlers.hpp"

namespace kiln::service {
namespace {

const char* const default_groups[] = {"Development", "Field Test", "Production"};

Json product_json(const Product& p) {
  return {{"id", p.id}, {"name", p.name}, {"description", p.description}, {"created_at", p.created_at}};
}

Json group_json(const Group& g) {
  return {{"id", g.id}, {"product", g.product}, {"name", g.name}, {"description", g.description},
          {"created_at", g.created_at}};
}

Json fetch_group(Call& call, const std::string& id) {
  auto group = call.store.find_group(call.who.tenant_id, id);
  if (!group) throw ApiError{404, "not_found", fmt::format("group {} not found", id)};
  return group_json(*group);
}

std::string insert_group(Call& call, const std::string& product_id, const std::string& name,
                         const std::string& description) {
  std::string id = random_id("grp_");
  call.store.insert_group(call.who.tenant_id, {id, product_id, "", name, description, now_iso8601()});
  return id;
}

}  // namespace

std::string resolve_product_id(Call& call, const std::string& ref) {
  auto product = call.store.find_product(call.who.tenant_id, ref);
  if (!product) throw ApiError{404, "not_found", fmt::format("product {} not found", ref)};
  return product->id;
}

std::string resolve_group_id(Call& call, const std::string& ref) {
  auto slash = ref.find('/');
  if (slash == std::string::npos) {
    auto group = call.store.find_group(call.who.tenant_id, ref);
    if (!group) throw ApiError{404, "not_found", fmt::format("group {} not found (use an ID or Product/Group)", ref)};
    return group->id;
  }
  std::string product_id = resolve_product_id(call, ref.substr(0, slash));
  auto group = call.store.find_group_by_name(product_id, ref.substr(slash + 1));
  if (!group) throw ApiError{404, "not_found", fmt::format("group {} not found", ref)};
  return group->id;
}

Reply create_product(Call& call) {
  auto body = parse_object(call.request.body);
  auto name = required_string(body, "name", 128);
  if (name.find('/') != std::string::npos) throw ApiError{400, "invalid_request", "a product name cannot contain '/'"};
  auto description = optional_string(body, "description").value_or("");
  auto tx = call.store.begin();
  if (call.store.product_name_taken(call.who.tenant_id, name))
    throw ApiError{409, "conflict", fmt::format("product {} already exists", name)};
  std::string id = random_id("prd_");
  std::string now = now_iso8601();
  call.store.insert_product(call.who.tenant_id, {id, name, description, now});
  Json groups = Json::array();
  for (const char* group : default_groups) {
    insert_group(call, id, group, "");
    groups.push_back(name + "/" + group);
  }
  tx->commit();
  return {201, Json{{"id", id}, {"name", name}, {"description", description}, {"created_at", now}, {"groups", groups}}};
}

Reply list_products(Call& call) {
  Json items = Json::array();
  for (auto& product : call.store.list_products(call.who.tenant_id)) items.push_back(product_json(product));
  return {200, Json{{"items", items}}};
}

Reply show_product(Call& call) {
  auto product = call.store.find_product(call.who.tenant_id, call.params[0]);
  if (!product) throw ApiError{404, "not_found", fmt::format("product {} not found", call.params[0])};
  Json out = product_json(*product);
  out["devices"] = call.store.devices_in_product(product->id);
  return {200, out};
}

Reply delete_product(Call& call) {
  auto id = resolve_product_id(call, call.params[0]);
  auto tx = call.store.begin();
  if (auto devices = call.store.devices_in_product(id); devices > 0)
    throw ApiError{409, "conflict", fmt::format("product {} still has {} devices", call.params[0], devices)};
  call.store.delete_product(id);
  tx->commit();
  return {200, Json{{"deleted", id}}};
}

Reply create_group(Call& call) {
  auto body = parse_object(call.request.body);
  auto product_id = resolve_product_id(call, required_string(body, "product", 128));
  auto name = required_string(body, "name", 128);
  auto description = optional_string(body, "description").value_or("");
  if (call.store.find_group_by_name(product_id, name))
    throw ApiError{409, "conflict", fmt::format("group {} already exists", name)};
  return {201, fetch_group(call, insert_group(call, product_id, name, description))};
}

Reply list_groups(Call& call) {
  std::optional<std::string> product;
  if (auto v = call.query_value("product")) product = resolve_product_id(call, *v);
  Json items = Json::array();
  for (auto& group : call.store.list_groups(call.who.tenant_id, product)) items.push_back(group_json(group));
  return {200, Json{{"items", items}}};
}

Reply show_group(Call& call) {
  auto id = resolve_group_id(call, call.params[0]);
  Json out = fetch_group(call, id);
  out["devices"] = call.store.devices_in_group(id);
  return {200, out};
}

Reply update_group(Call& call) {
  auto body = parse_object(call.request.body);
  auto id = resolve_group_id(call, call.params[0]);
  auto name = optional_string(body, "name", 128);
  auto description = optional_string(body, "description");
  if (name && name->empty()) throw ApiError{400, "invalid_request", "field 'name' cannot be empty"};
  call.store.update_group(id, name, description);
  return {200, fetch_group(call, id)};
}

Reply delete_group(Call& call) {
  auto id = resolve_group_id(call, call.params[0]);
  auto tx = call.store.begin();
  if (auto devices = call.store.devices_in_group(id); devices > 0)
    throw ApiError{409, "conflict",
                   fmt::format("group {} still has {} devices: assign them elsewhere first", call.params[0], devices)};
  call.store.delete_group(id);
  tx->commit();
  return {200, Json{{"deleted", id}}};
}

}  // namespace kiln::service
