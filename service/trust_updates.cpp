// Trust updates on the service (docs/key-rotation.md): checked against the product's current trust before any
// device sees one, recorded (the product's keys follow the rotation), and handed to each device that reports
// an older trust version at check-in, in version order.
#include <fmt/format.h>

#include <algorithm>

#include "core/base64.hpp"
#include "core/error.hpp"
#include "manifests/trust_update.hpp"
#include "service/handlers.hpp"
#include "signing/key_info.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

trust::TrustState product_trust(Call& call, const Product& product) {
  trust::TrustState state;
  state.product = product.name;
  state.version = static_cast<std::uint64_t>(call.store.trust_version(product.id));
  for (const auto& hex : product.manifest_keys) state.manifest_keys.push_back(from_hex(hex));
  state.manifest_threshold = static_cast<std::uint64_t>(product.manifest_threshold);
  for (const auto& hex : product.boot_keys) state.boot_key_hashes.push_back(trust::boot_key_hash(from_hex(hex)));
  return state;
}

}  // namespace

// POST /v1/products/{}/trust-updates {"update": base64 of the signed CBOR}.
Reply publish_trust_update(Call& call) {
  auto body = parse_object(call.request.body);
  auto text = required_string(body, "update", 65536);
  auto bytes = from_base64(text);
  if (!bytes) throw ApiError{400, "invalid_request", "field 'update' must be base64"};
  auto tx = call.store.begin();
  auto product = call.store.find_product(call.who.tenant_id, call.params[0]);
  if (!product) throw ApiError{404, "not_found", fmt::format("product {} not found", call.params[0])};
  trust::TrustState current = product_trust(call, *product);
  trust::Decision decision = trust::check(*bytes, current);
  if (!decision.ok())
    throw ApiError{422, "trust_update_refused", fmt::format("trust update refused ({}): {}", decision.failed_check,
                                                            decision.reason)};
  const trust::TrustUpdate& update = decision.update;
  // The product's boot keys (full keys: deployment checks verify images with them) follow the set: the
  // update's own keys and the product's keys whose hash stays in it. A hash with no key is refused.
  std::vector<Bytes> boot_keys = update.boot_keys;
  for (const auto& hex : product->boot_keys) {
    Bytes der = from_hex(hex);
    if (std::find(boot_keys.begin(), boot_keys.end(), der) == boot_keys.end() &&
        std::find(update.boot_key_hashes.begin(), update.boot_key_hashes.end(), trust::boot_key_hash(der)) !=
            update.boot_key_hashes.end())
      boot_keys.push_back(der);
  }
  for (const auto& hash : update.boot_key_hashes)
    if (std::none_of(boot_keys.begin(), boot_keys.end(),
                     [&hash](const Bytes& key) { return trust::boot_key_hash(key) == hash; }))
      throw ApiError{422, "trust_update_refused",
                     fmt::format("trust update refused (boot_keys): boot-key hash {} names a key the service does not "
                                 "know; create the update with --boot-key KEYREF (the public key)",
                                 to_hex(hash))};
  product->manifest_keys.clear();
  for (const auto& key : update.manifest_keys) product->manifest_keys.push_back(to_hex(key));
  product->manifest_threshold = static_cast<std::int64_t>(update.manifest_threshold);
  product->boot_keys.clear();
  for (const auto& key : boot_keys) product->boot_keys.push_back(to_hex(key));
  call.store.update_product_trust(*product);
  call.store.add_trust_update(product->id, static_cast<std::int64_t>(update.version), to_base64(*bytes), now_iso8601());
  tx->commit();
  return {201, Json{{"product", product->name},
                    {"version", update.version},
                    {"manifest_keys", product->manifest_keys.size()},
                    {"manifest_threshold", product->manifest_threshold},
                    {"boot_keys", product->boot_keys.size()}}};
}

// GET /v1/products/{}/trust-updates: the accepted versions.
Reply list_trust_updates(Call& call) {
  auto product = call.store.find_product(call.who.tenant_id, call.params[0]);
  if (!product) throw ApiError{404, "not_found", fmt::format("product {} not found", call.params[0])};
  Json items = Json::array();
  for (const auto& entry : call.store.trust_updates_after(product->id, 0))
    items.push_back(Json{{"version", entry.first}, {"size", from_base64(entry.second).value_or(Bytes{}).size()}});
  return {200, Json{{"product", product->name}, {"items", items}}};
}

Json missing_trust_updates(Call& call, std::int64_t installed) {
  Json out = Json::array();
  auto device = call.store.find_device(call.who.tenant_id, call.who.device_id);
  if (!device) return out;
  auto product = call.store.find_product(call.who.tenant_id, device->product);
  if (!product) return out;
  // At most 16 per check-in: a board far behind catches up over a few check-ins, still in order.
  for (const auto& entry : call.store.trust_updates_after(product->id, installed)) {
    if (out.size() >= 16) break;
    out.push_back(Json{{"version", entry.first}, {"update", entry.second}});
  }
  return out;
}

}  // namespace kiln::service
