// Ownership (issue 17 item 4): unclaim, and transfer between tenants with a signed, single-use, expiring
// voucher redeemed by the new owner, every device proving possession of its key again (as at claim).
// docs/security.md "Ownership transfer" says what each refusal means.
#include <set>

#include <fmt/format.h>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/time.hpp"
#include "service/handlers.hpp"
#include "service/rollout.hpp"
#include "service/transfer_voucher.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

constexpr std::int64_t default_voucher_seconds = 24 * 3600;
constexpr std::int64_t max_voucher_seconds = 30 * 24 * 3600;

const VoucherKey& voucher_key(const Call& call) {
  if (call.config.voucher_key) return *call.config.voucher_key;
  static const auto fallback = VoucherKey::ephemeral();  // a service without a data directory (tests)
  return *fallback;
}

// A device the caller's tenant owns (claimed, not revoked), or the ApiError saying why not.
void require_transferable(Call& call, const std::string& id) {
  auto device = call.store.find_device(call.who.tenant_id, id);
  if (!device) throw ApiError{404, "not_found", fmt::format("device {} not found", id)};
  if (device->revoked_at)
    throw ApiError{409, "device_revoked", fmt::format("device {} is revoked: it cannot be transferred", id)};
  if (!device->claimed)
    throw ApiError{409, "not_claimed", fmt::format("device {} is not claimed: only claimed devices are transferred", id)};
}

struct CheckedVoucher {
  TransferVoucher voucher;
  TransferVoucherRecord record;
  std::map<std::string, std::string> products;  // device -> the caller's product of the same name
};

// The voucher of the request body, checked in this order: well-formed and issued by this service with this
// exact content (else 422 voucher_invalid), for the caller's tenant (403 voucher_wrong_tenant), not redeemed
// (409 voucher_redeemed), not expired (422 voucher_expired), every device still its issuer's, claimed and not
// revoked (409 transfer_conflict), and the caller has a product of each device's product name (409
// product_missing: products are a tenant's own, with its trust; the device joins the one of the same name).
CheckedVoucher checked_voucher(Call& call, const Json& body) {
  auto text = required_string(body, "voucher", max_voucher_bytes);
  CheckedVoucher out;
  try {
    out.voucher = parse_transfer_voucher(text);
  } catch (const Error& e) {
    throw ApiError{422, "voucher_invalid", e.what()};
  }
  auto& v = out.voucher;
  auto record = call.store.find_transfer_voucher(v.id);
  auto signed_bytes = voucher_signed_bytes(v);
  bool genuine = record && voucher_signature_valid(v, from_hex(record->public_key)) &&
                 record->payload_sha256 == to_hex(digest(HashAlg::sha256, as_bytes(signed_bytes)));
  if (!genuine)
    throw ApiError{422, "voucher_invalid",
                   fmt::format("voucher {}'s signature does not verify: it was edited, or this service did not issue it",
                               v.id)};
  out.record = *record;
  if (record->to_tenant_id != call.who.tenant_id)
    throw ApiError{403, "voucher_wrong_tenant",
                   fmt::format("voucher {} is for tenant {}, not for yours ({})", v.id, v.to_tenant,
                               call.store.tenant_name(call.who.tenant_id))};
  if (record->redeemed_at)
    throw ApiError{409, "voucher_redeemed",
                   fmt::format("voucher {} was redeemed at {}: a voucher is single-use", v.id, *record->redeemed_at)};
  if (unix_now() > record->expires_at)
    throw ApiError{422, "voucher_expired",
                   fmt::format("voucher {} expired at {}: ask the owner for a new one", v.id, v.expires_at)};
  for (auto& id : record->devices) {
    auto device = call.store.device_identity(id);
    if (!device || device->tenant_id != record->from_tenant_id || !device->claimed || device->revoked_at)
      throw ApiError{409, "transfer_conflict",
                     fmt::format("device {} is no longer a claimed, unrevoked device of tenant {}: the voucher cannot "
                                 "be redeemed",
                                 id, v.from_tenant)};
    auto view = call.store.find_device(record->from_tenant_id, id);
    auto product = view ? call.store.find_product(call.who.tenant_id, view->product) : std::nullopt;
    if (!product)
      throw ApiError{409, "product_missing",
                     fmt::format("device {} is a {}, and tenant {} has no product of that name: create it first "
                                 "(kiln product create {} --boot-key ... --manifest-key ...)",
                                 id, view ? view->product : "?", v.to_tenant, view ? view->product : "NAME")};
    out.products[id] = product->id;
  }
  return out;
}

}  // namespace

std::string transfer_message(const std::string& voucher_id, const std::string& device_id, const std::string& nonce) {
  return "kiln-transfer-v1:" + voucher_id + ":" + device_id + ":" + nonce;
}

Reply unclaim_device(Call& call) {
  const auto& id = call.params[0];
  auto device = call.store.find_device(call.who.tenant_id, id);
  if (!device) throw ApiError{404, "not_found", fmt::format("device {} not found", id)};
  if (!device->claimed) throw ApiError{409, "not_claimed", fmt::format("device {} is not claimed", id)};
  auto tx = call.store.begin();
  auto left = leave_open_deployments(call.store, call.who.tenant_id, id, DeviceStatus::unclaimed, "device unclaimed",
                                     [&] { call.store.unclaim_device(id); });
  tx->commit();
  auto out = device_json(*call.store.find_device(call.who.tenant_id, id));
  out["deployments_left"] = left;
  return {200, out};
}

Reply create_transfer(Call& call) {
  auto body = parse_object(call.request.body);
  for (auto& item : body.items())
    if (item.key() != "to_tenant" && item.key() != "devices" && item.key() != "expires_in")
      throw ApiError{400, "invalid_request",
                     fmt::format("field '{}' is not a known member (to_tenant, devices, expires_in)", item.key())};
  auto to_name = required_string(body, "to_tenant", 128);
  auto devices = device_ids_field(body, max_voucher_devices);
  std::int64_t expires_in = default_voucher_seconds;
  if (auto it = body.find("expires_in"); it != body.end()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > max_voucher_seconds)
      throw ApiError{400, "invalid_request",
                     fmt::format("field 'expires_in' must be whole seconds from 1 to {} (30 days)", max_voucher_seconds)};
    expires_in = it->get<std::int64_t>();
  }
  auto to_tenant = call.store.find_tenant(to_name);
  if (!to_tenant) throw ApiError{404, "not_found", fmt::format("tenant {} not found", to_name)};
  if (*to_tenant == call.who.tenant_id)
    throw ApiError{400, "invalid_request", "the devices already belong to tenant " + to_name};
  for (auto& id : devices) require_transferable(call, id);

  const auto& key = voucher_key(call);
  auto now = unix_now();
  TransferVoucher v;
  v.id = "xfer_" + random_hex(16);
  v.from_tenant = call.store.tenant_name(call.who.tenant_id);
  v.to_tenant = to_name;
  v.devices = devices;
  v.issued_at = iso8601(now);
  v.expires_at = iso8601(now + expires_in);
  v.key_id = key.key_id();
  auto signed_bytes = voucher_signed_bytes(v);
  v.signature = key.sign(signed_bytes);

  TransferVoucherRecord record;
  record.id = v.id;
  record.from_tenant_id = call.who.tenant_id;
  record.to_tenant_id = *to_tenant;
  record.devices = devices;
  record.payload_sha256 = to_hex(digest(HashAlg::sha256, as_bytes(signed_bytes)));
  record.public_key = to_hex(key.public_key_der());
  record.expires_at = now + expires_in;
  record.created_at = v.issued_at;
  call.store.add_transfer_voucher(record);
  return {201, voucher_json(v)};
}

Reply transfer_challenge(Call& call) {
  auto checked = checked_voucher(call, parse_object(call.request.body));
  Json challenges = Json::array();
  for (auto& id : checked.record.devices)
    challenges.push_back(possession_challenge(
        call, id, [&](const std::string& nonce) { return transfer_message(checked.voucher.id, id, nonce); }));
  return {201, Json{{"voucher", checked.voucher.id}, {"challenges", challenges}}};
}

Reply accept_transfer(Call& call) {
  auto body = parse_object(call.request.body);
  auto checked = checked_voucher(call, body);
  const auto& v = checked.voucher;
  auto it = body.find("proofs");
  if (it == body.end() || !it->is_array())
    throw ApiError{400, "invalid_request", "field 'proofs' must be an array of {device, nonce, signature}"};
  std::map<std::string, std::pair<std::string, Bytes>> proofs;  // device -> (nonce, signature)
  for (auto& p : *it) {
    if (!p.is_object()) throw ApiError{400, "invalid_request", "each proof must be an object {device, nonce, signature}"};
    auto device = required_string(p, "device", 128);
    auto nonce = required_string(p, "nonce", 64);
    proofs[device] = {nonce, hex_signature(required_string(p, "signature", 2048))};
  }
  for (auto& id : checked.record.devices)
    if (!proofs.contains(id))
      throw ApiError{400, "invalid_request", fmt::format("no proof of possession for device {}", id)};

  // All or nothing: the voucher, every challenge and every move commit together.
  auto tx = call.store.begin();
  auto now = now_iso8601();
  if (!call.store.take_transfer_voucher(v.id, now))
    throw ApiError{409, "voucher_redeemed", fmt::format("voucher {} was redeemed: a voucher is single-use", v.id)};
  for (auto& id : checked.record.devices) {
    const auto& proof = proofs[id];
    require_possession(
        call, id, proof.first, proof.second, transfer_message(v.id, id, proof.first),
        fmt::format("no live transfer challenge for device {} with this nonce: ask for new challenges", id),
        fmt::format("device {}'s proof does not verify with its imported public key: nothing was transferred", id));
  }
  Json moved = Json::array();
  for (auto& id : checked.record.devices) {
    auto left = leave_open_deployments(
        call.store, checked.record.from_tenant_id, id, DeviceStatus::unclaimed,
        "device transferred to tenant " + v.to_tenant,
        [&] { call.store.transfer_device(id, call.who.tenant_id, checked.products[id], now); });
    auto row = device_json(*call.store.find_device(call.who.tenant_id, id));
    row["deployments_left"] = left;
    moved.push_back(row);
  }
  tx->commit();
  if (call.config.log)
    call.config.log(fmt::format("voucher {}: {} device(s) transferred from tenant {} to {}", v.id,
                                checked.record.devices.size(), v.from_tenant, v.to_tenant));
  return {200, Json{{"voucher", v.id}, {"from_tenant", v.from_tenant}, {"to_tenant", v.to_tenant}, {"devices", moved}}};
}

}  // namespace kiln::service
