// Trust updates on the service (docs/key-rotation.md): checked against the product's current trust before any
// device sees one, recorded (the product's keys follow the rotation), and handed out by trust deployments to
// the devices they admit that report an older trust version at check-in, in version order.
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

ApiError trust_refused(const std::string& reason) { return ApiError{422, "trust_update_refused", reason}; }

// The recorded update of `version` (base64), if any.
std::optional<std::string> recorded_update(Call& call, const Product& product, std::int64_t version) {
  for (const auto& entry : call.store.trust_updates_after(product.id, version - 1))
    if (entry.first == version) return entry.second;
  return std::nullopt;
}

}  // namespace

std::int64_t register_trust_update(Call& call, Product& product, ByteView bytes, bool record) {
  trust::TrustState current = product_trust(call, product);
  trust::Decision decision = trust::check(bytes, current);
  if (!decision.ok())
    throw trust_refused(fmt::format("trust update refused ({}): {}", decision.failed_check, decision.reason));
  const trust::TrustUpdate& update = decision.update;
  auto version = static_cast<std::int64_t>(update.version);
  // The product's boot keys (full keys: deployment checks verify images with them) follow the set: the
  // update's own keys and the product's keys whose hash stays in it. A hash with no key is refused.
  std::vector<Bytes> boot_keys = update.boot_keys;
  for (const auto& hex : product.boot_keys) {
    Bytes der = from_hex(hex);
    if (std::find(boot_keys.begin(), boot_keys.end(), der) == boot_keys.end() &&
        std::find(update.boot_key_hashes.begin(), update.boot_key_hashes.end(), trust::boot_key_hash(der)) !=
            update.boot_key_hashes.end())
      boot_keys.push_back(der);
  }
  for (const auto& hash : update.boot_key_hashes)
    if (std::none_of(boot_keys.begin(), boot_keys.end(),
                     [&hash](const Bytes& key) { return trust::boot_key_hash(key) == hash; }))
      throw trust_refused(
          fmt::format("trust update refused (boot_keys): boot-key hash {} names a key the service does not know; "
                      "create the update with --boot-key KEYREF (the public key)",
                      to_hex(hash)));
  if (!record) return version;
  product.manifest_keys.clear();
  for (const auto& key : update.manifest_keys) product.manifest_keys.push_back(to_hex(key));
  product.manifest_threshold = static_cast<std::int64_t>(update.manifest_threshold);
  product.boot_keys.clear();
  for (const auto& key : boot_keys) product.boot_keys.push_back(to_hex(key));
  call.store.update_product_trust(product);
  call.store.add_trust_update(product.id, version, to_base64(bytes), now_iso8601());
  return version;
}

std::int64_t deployable_trust_version(Call& call, Product& product, ByteView bytes, bool record) {
  trust::TrustUpdate update;
  try {
    update = trust::parse(bytes);
  } catch (const Error&) {
    return register_trust_update(call, product, bytes, record);  // refused with the check's reason
  }
  auto current = call.store.trust_version(product.id);
  auto version = static_cast<std::int64_t>(update.version);
  // Above the product's: a new rotation, checked and recorded as publish does.
  if (update.version > static_cast<std::uint64_t>(current) || update.product != product.name)
    return register_trust_update(call, product, bytes, record);
  // The product's newest, recorded already (published, or deployed to another group): deployed as recorded.
  if (version == current && recorded_update(call, product, version) == to_base64(bytes)) return version;
  if (version == current)
    throw trust_refused(fmt::format("trust update refused (version): product {} recorded another trust update of "
                                    "version {}: a replayed or conflicting update",
                                    product.name, version));
  throw trust_refused(fmt::format("trust update refused (version): version {} is older than product {}'s trust "
                                  "version {}: deploy version {} (boards behind catch up in order)",
                                  version, product.name, current, current));
}

// POST /v1/products/{}/trust-updates {"update": base64 of the signed CBOR}: registered for later deployments.
Reply publish_trust_update(Call& call) {
  auto body = parse_object(call.request.body);
  auto text = required_string(body, "update", 65536);
  auto bytes = from_base64(text);
  if (!bytes) throw ApiError{400, "invalid_request", "field 'update' must be base64"};
  auto tx = call.store.begin();
  auto product = call.store.find_product(call.who.tenant_id, call.params[0]);
  if (!product) throw ApiError{404, "not_found", fmt::format("product {} not found", call.params[0])};
  auto version = register_trust_update(call, *product, *bytes, true);
  tx->commit();
  return {201, Json{{"product", product->name},
                    {"version", version},
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

Json trust_updates_between(Call& call, const std::string& product_id, std::int64_t installed, std::int64_t target) {
  Json out = Json::array();
  // At most 16 per check-in: a board far behind catches up over a few check-ins, still in order.
  for (const auto& entry : call.store.trust_updates_after(product_id, installed)) {
    if (out.size() >= 16 || entry.first > target) break;
    out.push_back(Json{{"version", entry.first}, {"update", entry.second}});
  }
  return out;
}

}  // namespace kiln::service
