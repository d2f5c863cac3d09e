// Products and device groups: every product starts with the groups Development, Field Test, Production.
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "service/handlers.hpp"
#include "signing/key_info.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln::service {
namespace {

const char* const default_groups[] = {"Development", "Field Test", "Production"};

// Keys are shown by what people compare across tools (kiln key show): type, fingerprint, MCUboot key hash.
Json keys_json(const std::vector<std::string>& keys) {
  Json out = Json::array();
  for (auto& hex : keys) {
    auto der = from_hex(hex);
    auto info = describe_public_key(der);
    out.push_back(Json{{"type", key_type_name(info.type)},
                       {"fingerprint", info.fingerprint},
                       {"mcuboot_key_hash", info.mcuboot_key_hash}});
  }
  return out;
}

Json product_json(const Product& p) {
  return {{"id", p.id},
          {"name", p.name},
          {"description", p.description},
          {"boot_keys", keys_json(p.boot_keys)},
          {"manifest_keys", keys_json(p.manifest_keys)},
          {"manifest_threshold", p.manifest_threshold},
          {"slot_size", p.slot_size > 0 ? p.slot_size : default_slot_size},
          {"created_at", p.created_at}};
}

// "boot_keys" / "manifest_keys": arrays of PEM public keys (as `kiln key export --format pem` writes
// them); the hex DER SubjectPublicKeyInfo of each. ApiError 400 naming the field otherwise.
std::optional<std::vector<std::string>> pem_keys(const Json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::nullopt;
  auto bad = [&](const std::string& why) {
    return ApiError{400, "invalid_request", fmt::format("field '{}' {}", field, why)};
  };
  if (!it->is_array() || it->size() > 8) throw bad("must be an array of at most 8 PEM public keys");
  std::vector<std::string> out;
  for (auto& pem : *it) {
    if (!pem.is_string() || pem.get<std::string>().size() > 16384) throw bad("must hold PEM public keys");
    auto text = pem.get<std::string>();
    ossl::Ptr<BIO> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    ossl::Ptr<EVP_PKEY> key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
    ERR_clear_error();
    int len = key ? i2d_PUBKEY(key.get(), nullptr) : 0;
    if (len <= 0) throw bad("holds something that is not a PEM public key (-----BEGIN PUBLIC KEY-----)");
    Bytes der(static_cast<std::size_t>(len));
    auto* p = der.data();
    i2d_PUBKEY(key.get(), &p);
    try {
      describe_public_key(der);
    } catch (const Error& e) {
      throw bad(fmt::format("holds an unusable key: {}", e.what()));
    }
    auto hex = to_hex(der);
    if (std::find(out.begin(), out.end(), hex) == out.end()) out.push_back(hex);
  }
  return out;
}

std::optional<std::int64_t> slot_size_field(const Json& body) {
  auto it = body.find("slot_size");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer() || it->get<std::int64_t>() < 1024 || it->get<std::int64_t>() > (std::int64_t{1} << 32))
    throw ApiError{400, "invalid_request", "field 'slot_size' must be a number of bytes, 1024..4294967296"};
  return it->get<std::int64_t>();
}

// Sets the boot keys, manifest keys, manifest threshold and slot size the body names (others keep their
// value), then checks the M-of-N policy they make: 1 <= M <= N (M = 1 while there are no manifest keys).
void apply_trust(const Json& body, Product& product) {
  if (auto keys = pem_keys(body, "boot_keys")) product.boot_keys = *keys;
  if (auto keys = pem_keys(body, "manifest_keys")) product.manifest_keys = *keys;
  if (auto size = slot_size_field(body)) product.slot_size = *size;
  if (auto it = body.find("manifest_threshold"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 8)
      throw ApiError{400, "invalid_request", "field 'manifest_threshold' must be a number 1..8"};
    product.manifest_threshold = it->get<std::int64_t>();
  }
  const auto keys = static_cast<std::int64_t>(product.manifest_keys.size());
  if (product.manifest_threshold > std::max<std::int64_t>(keys, 1))
    throw ApiError{400, "invalid_request",
                   fmt::format("manifest_threshold {} is above the number of manifest keys ({}): no release could "
                               "ever be signed enough",
                               product.manifest_threshold, keys)};
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
  Product product;
  product.id = random_id("prd_");
  product.name = name;
  product.description = description;
  product.created_at = now_iso8601();
  apply_trust(body, product);
  auto tx = call.store.begin();
  if (call.store.product_name_taken(call.who.tenant_id, name))
    throw ApiError{409, "conflict", fmt::format("product {} already exists", name)};
  auto& id = product.id;
  auto& now = product.created_at;
  call.store.insert_product(call.who.tenant_id, product);
  Json groups = Json::array();
  for (const char* group : default_groups) {
    insert_group(call, id, group, "");
    groups.push_back(name + "/" + group);
  }
  tx->commit();
  Json out = product_json(product);
  out["groups"] = groups;
  (void)now;
  return {201, out};
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

Reply update_product(Call& call) {
  auto body = parse_object(call.request.body);
  auto tx = call.store.begin();
  auto product = call.store.find_product(call.who.tenant_id, call.params[0]);
  if (!product) throw ApiError{404, "not_found", fmt::format("product {} not found", call.params[0])};
  apply_trust(body, *product);
  call.store.update_product_trust(*product);
  tx->commit();
  Json out = product_json(*product);
  out["devices"] = call.store.devices_in_product(product->id);
  return {200, out};
}

Reply delete_product(Call& call) {
  auto id = resolve_product_id(call, call.params[0]);
  auto tx = call.store.begin();
  if (auto devices = call.store.devices_in_product(id); devices > 0)
    throw ApiError{409, "conflict", fmt::format("product {} still has {} devices", call.params[0], devices)};
  // Its groups go with it once they are empty; a deployment in any of them (finished or not) keeps it.
  std::int64_t deployments = 0;
  for (auto& group : call.store.list_groups(call.who.tenant_id, id))
    deployments += static_cast<std::int64_t>(call.store.list_deployments(call.who.tenant_id, group.id).size());
  if (deployments > 0)
    throw ApiError{409, "conflict",
                   fmt::format("product {} still has {} deployments: delete them first (kiln deployment delete)",
                               call.params[0], deployments)};
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
  if (auto deployments = call.store.list_deployments(call.who.tenant_id, id).size(); deployments > 0)
    throw ApiError{409, "conflict",
                   fmt::format("group {} still has {} deployments: delete them first (kiln deployment delete)",
                               call.params[0], deployments)};
  call.store.delete_group(id);
  tx->commit();
  return {200, Json{{"deleted", id}}};
}

}  // namespace kiln::service
