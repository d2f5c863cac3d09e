// Devices: ledger-bundle import, filtered keyset-paginated listing, counts, assignment and claim.
#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <unordered_map>

#include <fmt/format.h>

#include "core/bytes.hpp"
#include "core/device_uid.hpp"
#include "core/error.hpp"
#include "service/factory_trust.hpp"
#include "core/maintenance_window.hpp"
#include "core/time.hpp"
#include "service/handlers.hpp"
#include "service/ledger_bundle.hpp"
#include "signing/image_crypto.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln::service {
namespace {

constexpr std::int64_t default_page = 1000;
constexpr std::int64_t max_page = 10000;
constexpr std::int64_t challenge_seconds = 300;
// The most devices one POST /v1/devices/assign moves (docs/openapi.yaml; the CLI sends batches of this size).
constexpr std::size_t max_assign_batch = 1000;

bool valid_uid(std::string_view uid) { return is_device_uid(uid); }  // core/device_uid.hpp

// DER of a PEM "PUBLIC KEY" block, checked to be one DER SEQUENCE of SEQUENCE + BIT STRING.
// The key itself is decoded when it is first used (claim, agent TLS): OpenSSL 3 spends ~0.6 ms
// decoding a PEM public key, which would make a million-unit import take ten minutes.
Bytes public_key_from_pem(const std::string& pem) {
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long length = 0;
  bool read = PEM_read_bio(bio.get(), &name, &header, &data, &length) == 1;
  ERR_clear_error();
  Bytes der;
  if (read && std::string_view(name) == "PUBLIC KEY") der.assign(data, data + length);
  OPENSSL_free(name);
  OPENSSL_free(header);
  OPENSSL_free(data);
  if (der.empty()) return {};
  const unsigned char* p = der.data();
  const unsigned char* end = der.data() + der.size();
  long inner = 0;
  int tag = 0, cls = 0;
  auto next = [&](int want_tag) {
    int flags = ASN1_get_object(&p, &inner, &tag, &cls, end - p);
    return !(flags & 0x80) && tag == want_tag && cls == V_ASN1_UNIVERSAL && inner <= end - p;
  };
  if (!next(V_ASN1_SEQUENCE) || p + inner != end) return {};
  if (!next(V_ASN1_SEQUENCE)) return {};
  p += inner;
  if (!next(V_ASN1_BIT_STRING) || p + inner != end) return {};
  return der;
}

}  // namespace

Json device_json(const DeviceView& d) {
  return Json{{"id", d.id},
              {"product", d.product},
              {"group", d.group ? Json(*d.group) : Json(nullptr)},
              {"state", d.state},
              {"version", d.version ? Json(*d.version) : Json(nullptr)},
              {"claimed", d.claimed},
              {"last_seen", d.last_seen ? Json(*d.last_seen) : Json(nullptr)},
              {"imported_at", d.imported_at},
              {"time_zone", d.time_zone ? Json(*d.time_zone) : Json(nullptr)},
              {"trust_version", d.trust_version ? Json(*d.trust_version) : Json(nullptr)},
              {"revoked_at", d.revoked_at ? Json(*d.revoked_at) : Json(nullptr)},
              {"revoked_reason", d.revoked_at && d.revoked_reason && !d.revoked_reason->empty()
                                     ? Json(*d.revoked_reason)
                                     : Json(nullptr)}};
}

namespace {

// Device visible to the caller's tenant, or 404 (other tenants' devices do not exist for you).
void require_device(Call& call, const std::string& id) {
  if (!call.store.find_device(call.who.tenant_id, id))
    throw ApiError{404, "not_found", fmt::format("device {} not found", id)};
}

// A query parameter that is a count or byte offset: decimal digits only (no sign, space or suffix: "5abc" is
// not 5), at most `max`; nullopt when absent. ApiError 400 naming the parameter otherwise.
std::optional<std::int64_t> decimal_query(const Call& call, const std::string& name, std::int64_t max) {
  auto text = call.query_value(name);
  if (!text) return std::nullopt;
  std::int64_t value = -1;
  bool digits = !text->empty() && text->find_first_not_of("0123456789") == std::string::npos;
  auto [end, error] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (!digits || error != std::errc{} || end != text->data() + text->size() || value > max)
    throw ApiError{400, "invalid_request",
                   fmt::format("query parameter '{}' must be a number in decimal digits (0 .. {}), not '{}'", name,
                               max, text->substr(0, 40))};
  return value;
}

DeviceFilter device_filter(Call& call) {
  DeviceFilter f;
  f.tenant_id = call.who.tenant_id;
  if (auto v = call.query_value("group")) f.group_id = resolve_group_id(call, *v);
  if (auto v = call.query_value("product")) f.product_id = resolve_product_id(call, *v);
  f.state = call.query_value("state");
  f.version = call.query_value("version");
  // Times compare as stored text ("YYYY-MM-DDTHH:MM:SSZ"): a malformed one would silently match nothing.
  f.seen_before = timestamp_query(call, "seen_before");
  f.seen_after = timestamp_query(call, "seen_after");
  if (auto v = call.query_value("claimed")) {
    if (*v != "true" && *v != "false") throw ApiError{400, "invalid_request", "claimed must be true or false"};
    f.claimed = *v == "true";
  }
  return f;
}

}  // namespace

std::string claim_message(const std::string& device_id, const std::string& nonce) {
  return "kiln-claim-v1:" + device_id + ":" + nonce;
}

namespace {

// A bundle's bytes split at its trailer: the unit text before it (what the station signed) and the trailer.
struct SplitBundle {
  std::string_view units;  // every byte before the trailer line
  std::optional<Json> trailer;
};

// Finds the trailer line (the one holding "bundle_signature"); only blank lines may follow it.
SplitBundle split_bundle(std::string_view body) {
  SplitBundle out{body, std::nullopt};
  std::size_t start = 0;
  while (start < body.size()) {
    auto end = body.find('\n', start);
    std::string_view line = body.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (line.find("\"bundle_signature\"") != std::string_view::npos) {
      auto parsed = Json::parse(line, nullptr, false);
      if (is_bundle_trailer(parsed)) {
        std::string_view rest = end == std::string_view::npos ? std::string_view() : body.substr(end + 1);
        if (rest.find_first_not_of(" \t\r\n") != std::string_view::npos)
          throw ApiError{422, "bundle_modified", "lines follow the bundle's signature trailer: they are not signed"};
        out.units = body.substr(0, start);
        out.trailer = std::move(parsed);
        return out;
      }
    }
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

// Applies the unit lines of a verified bundle (or one staged part of it) to the tenant's devices.
class UnitImporter {
 public:
  explicit UnitImporter(Call& call)
      : call_(call), now_(now_iso8601()) {}

  // Counts the unit lines of `text` without importing, checking each is a JSON object with a uid: a
  // malformed bundle is a 400 naming the line whether or not its signature holds.
  static std::int64_t count_units(std::string_view text, std::size_t& line_number) {
    std::int64_t units = 0;
    for_each_line(text, line_number, [&](const Json& unit) {
      require_uid(unit, line_number);
      ++units;
    });
    return units;
  }

  void apply(std::string_view text, std::size_t& line_number) {
    for_each_line(text, line_number, [&](const Json& unit) {
      try {
        import_unit(unit);
      } catch (const ApiError& e) {
        throw at_line(e, line_number);
      }
    });
  }
  // Counts the unit lines of `text` as count_units() does (a malformed line is thrown at once) and makes every
  // check apply() makes, writing nothing: the first unit apply() would refuse is kept in `refusal`, thrown by the
  // caller once the bundle's signature holds, before any unit of an import applied in several transactions is
  // written. One parse per line for both.
  std::int64_t count_and_check(std::string_view text, std::size_t& line_number, std::optional<ApiError>& refusal) {
    std::int64_t units = 0;
    for_each_line(text, line_number, [&](const Json& unit) {
      require_uid(unit, line_number);
      ++units;
      if (refusal) return;
      try {
        auto prepared = prepare(unit);
        auto existing = call_.store.device_identity(prepared.device.id);
        if (existing && (existing->tenant_id != prepared.device.tenant_id ||
                         existing->public_key != prepared.device.public_key))
          refuse_conflict(prepared.device.id, existing);
      } catch (const ApiError& e) {
        refusal = at_line(e, line_number);
      }
    });
    return units;
  }
  std::int64_t imported() const { return imported_; }

  // The first `count` lines of `text` (all of it when it has fewer), which is left holding the rest.
  static std::string_view take_lines(std::string_view& text, std::size_t count) {
    std::size_t end = 0;
    for (std::size_t i = 0; i < count && end < text.size(); ++i) {
      auto newline = text.find('\n', end);
      end = newline == std::string_view::npos ? text.size() : newline + 1;
    }
    auto taken = text.substr(0, end);
    text.remove_prefix(end);
    return taken;
  }

 private:
  // The error of a unit, naming its line.
  static ApiError at_line(const ApiError& e, std::size_t line_number) {
    return ApiError{e.status, e.code, fmt::format("bundle line {}: {}", line_number, e.message)};
  }

  static void require_uid(const Json& unit, std::size_t line_number) {
    try {
      required_string(unit, "uid", 128);
    } catch (const ApiError& e) {
      throw at_line(e, line_number);
    }
  }

  template <typename Fn>
  static void for_each_line(std::string_view text, std::size_t& line_number, Fn&& fn) {
    while (!text.empty()) {
      auto end = text.find('\n');
      std::string_view line = text.substr(0, end);
      text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
      ++line_number;
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      Json unit;
      try {
        unit = Json::parse(line);
      } catch (const Json::parse_error& e) {
        throw ApiError{400, "malformed_json", fmt::format("bundle line {} is not valid JSON: {}", line_number, e.what())};
      }
      if (!unit.is_object()) throw ApiError{400, "invalid_request", fmt::format("bundle line {} is not an object", line_number)};
      fn(unit);
    }
  }

  std::string product_id(const std::string& ref) {
    auto it = products_.find(ref);
    if (it != products_.end()) return it->second;
    return products_[ref] = resolve_product_id(call_, ref);
  }

  std::string group_id(const std::string& product, const std::string& name) {
    auto key = product + "/" + name;
    auto it = groups_.find(key);
    if (it != groups_.end()) return it->second;
    auto group = call_.store.find_group_by_name(product, name);
    if (!group) throw ApiError{404, "not_found", fmt::format("group {} not found", name)};
    return groups_[key] = group->id;
  }

  struct Prepared {
    ImportedDevice device;
    std::optional<Bytes> encryption_key;  // the unit's image-encryption public key (SPKI DER)
  };

  // A unit line checked and turned into what the store keeps (reads products and groups, writes nothing).
  Prepared prepare(const Json& unit) {
    auto uid = required_string(unit, "uid", 128);
    if (!valid_uid(uid)) throw ApiError{400, "invalid_request", "uid may only hold letters, digits and - _ . :"};
    auto product = product_id(required_string(unit, "product", 128));
    auto group = group_id(product, optional_string(unit, "group", 128).value_or("Development"));
    auto certificate = optional_string(unit, "certificate", 16384);
    auto public_key_pem = optional_string(unit, "public_key", 16384);
    if (certificate && certificate->empty()) certificate.reset();  // ledger export writes "" when there is none
    if (public_key_pem && public_key_pem->empty()) public_key_pem.reset();
    if (!certificate && !public_key_pem)
      throw ApiError{400, "invalid_request", "a unit needs 'certificate' or 'public_key' (PEM)"};
    Bytes key;
    if (certificate) {
      auto facts = certificate_facts(*certificate);
      if (!facts || !certificate->starts_with("-----BEGIN") || facts->public_key.empty())
        throw ApiError{400, "invalid_request", "certificate is not a PEM X.509 certificate"};
      // The certificate is the unit's identity: it must name this unit and carry the key the bundle states.
      if (facts->common_name != uid)
        throw ApiError{422, "bundle_unit_mismatch",
                       fmt::format("unit {}: its certificate is issued to CN={}, not to the unit's UID: the bundle "
                                   "is refused (re-export it from the station that provisioned the unit)",
                                   uid, facts->common_name.substr(0, 128))};
      if (public_key_pem && public_key_from_pem(*public_key_pem) != facts->public_key)
        throw ApiError{
            422, "bundle_unit_mismatch",
            fmt::format("unit {}: its public_key is not the key of its certificate: the bundle is refused", uid)};
      key = std::move(facts->public_key);
    } else {
      key = public_key_from_pem(*public_key_pem);
      if (key.empty()) throw ApiError{400, "invalid_request", "public_key is not a PEM public key"};
    }
    std::optional<std::string> last_seen;
    if (auto text = optional_string(unit, "last_seen", 64); text && !text->empty()) {
      last_seen = normalize_timestamp(*text);
      if (!last_seen)
        throw ApiError{400, "invalid_request",
                       fmt::format("unit {}: last_seen must be an ISO 8601 time such as 2026-01-31T12:00:00Z", uid)};
    }
    ImportedDevice device{uid,
                          call_.who.tenant_id,
                          product,
                          group,
                          optional_string(unit, "state", 32).value_or("provisioned"),
                          optional_string(unit, "version", 64),
                          to_hex(key),
                          certificate,
                          last_seen,
                          now_};
    // The unit's image-encryption public key (factory [encryption] step): releases are wrapped to it.
    std::optional<Bytes> encryption_key;
    if (auto pem = optional_string(unit, "encryption_key", 16384); pem && !pem->empty()) {
      encryption_key = public_key_from_pem(*pem);
      if (encryption_key->empty())
        throw ApiError{400, "invalid_request", fmt::format("unit {}: encryption_key is not a PEM public key", uid)};
      try {
        (void)mcuboot::encryption_key_from_spki(*encryption_key, "encryption_key");
      } catch (const Error& e) {
        throw ApiError{400, "invalid_request", fmt::format("unit {}: {}", uid, e.what())};
      }
    }
    return {std::move(device), std::move(encryption_key)};
  }

  void import_unit(const Json& unit) {
    auto [device, encryption_key] = prepare(unit);
    // A revoked device stays revoked, whatever the bundle says of its state.
    auto existing = call_.store.device_identity(device.id);
    if (existing && existing->revoked_at) device.state = "revoked";
    if (!call_.store.upsert_device(device)) refuse_conflict(device.id, existing);
    if (encryption_key) call_.store.set_device_encryption_key(device.id, to_hex(*encryption_key));
    ++imported_;
  }

  // The upsert changed nothing: the UID is registered with another tenant or with another key. A
  // registered device's key is never replaced by an import (a cloned or counterfeit unit replaying the
  // UID would take the device over); the whole import is refused and names the unit.
  [[noreturn]] void refuse_conflict(const std::string& uid, const std::optional<DeviceIdentity>& existing) {
    if (existing && existing->tenant_id != call_.who.tenant_id)
      throw ApiError{409, "conflict",
                     fmt::format("unit {} conflicts: a device with this UID is registered to another tenant", uid)};
    throw ApiError{409, "device_key_conflict",
                   fmt::format("unit {} conflicts: the service holds another key for this device, and an import never "
                               "replaces a registered device's key (a cloned or counterfeit unit, or a board "
                               "provisioned again with a new key); nothing was imported: remove the unit from the "
                               "bundle, or have its registration revoked first",
                               uid)};
  }

  Call& call_;
  std::string now_;
  std::unordered_map<std::string, std::string> products_;  // ref -> id
  std::unordered_map<std::string, std::string> groups_;    // "product id/name" -> id
  std::int64_t imported_ = 0;
};

constexpr std::int64_t staged_import_seconds = 24 * 3600;
// Units written per transaction when a staged import is applied.
constexpr std::size_t units_per_write = 1000;

}  // namespace

Reply import_devices(Call& call) {
  std::string_view body = call.request.body;
  auto import_id = call.query_value("import");
  if (!import_id) {
    // The whole bundle in one request: check its signature, then import every unit in one transaction.
    auto split = split_bundle(body);
    std::size_t line_number = 0;
    if (!split.trailer) {
      if (!body.empty() && body.back() != '\n')
        throw ApiError{422, "bundle_truncated",
                       "the bundle ends mid-line without its signature trailer: it was truncated (import the whole "
                       "file 'kiln factory ledger export' wrote)"};
      UnitImporter::count_units(split.units, line_number);  // a malformed bundle says where first
      throw ApiError{422, "bundle_unsigned",
                     "the bundle has no signature trailer: it is unsigned or truncated (export it again with "
                     "'kiln factory ledger export')"};
    }
    auto units = UnitImporter::count_units(split.units, line_number);
    auto trailer = parse_bundle_trailer(*split.trailer);
    verify_bundle(call.store, call.who.tenant_id, trailer, digest(HashAlg::sha256, as_bytes(split.units)), units);
    auto tx = call.store.begin();
    advance_ledger_head(call.store, call.who.tenant_id, trailer);
    UnitImporter importer(call);
    line_number = 0;
    importer.apply(split.units, line_number);
    tx->commit();
    return {200, Json{{"imported", importer.imported()}}};
  }

  // A large bundle in parts (?import=ID&offset=BYTES): parts are staged until the one holding the trailer
  // arrives; then the whole bundle is checked and imported at once, so nothing unsigned is ever applied.
  if (import_id->size() > 64) throw ApiError{400, "invalid_request", "import must be at most 64 characters"};
  auto offset_given = decimal_query(call, "offset", std::numeric_limits<std::int64_t>::max());
  if (!offset_given)
    throw ApiError{400, "invalid_request",
                   "query parameter 'offset' is required with 'import': the byte offset this part starts at"};
  const std::int64_t offset = *offset_given;
  std::int64_t now = unix_now();
  auto tx = call.store.begin();
  call.store.forget_import_parts_before(now - staged_import_seconds);
  std::int64_t received = call.store.import_received(call.who.tenant_id, *import_id);
  if (offset != received)
    throw ApiError{409, "offset_mismatch",
                   fmt::format("import {} continues at offset {}, not {}", *import_id, received, offset)};
  auto split = split_bundle(body);
  if (!split.trailer) {
    if (body.empty() || body.back() != '\n')
      throw ApiError{400, "invalid_request", "a bundle part must end at a line end"};
    call.store.add_import_part(call.who.tenant_id, *import_id, offset, body, now);
    tx->commit();
    return {202, Json{{"import", *import_id}, {"received", received + static_cast<std::int64_t>(body.size())}, {"imported", 0}}};
  }

  // The part with the trailer. The whole bundle is checked first (signature, then every unit, reading only);
  // then it is applied a thousand units per transaction, so that a million-unit import holds the store's write
  // lock for a fraction of a second at a time while devices check in (they get it between batches).
  tx->commit();
  auto trailer = parse_bundle_trailer(*split.trailer);
  std::vector<std::int64_t> offsets;
  auto part_at = [&](std::int64_t part_offset) {
    auto part = call.store.import_part(call.who.tenant_id, *import_id, part_offset);
    if (!part)
      throw ApiError{409, "conflict",
                     fmt::format("import {} was finished or dropped while this request applied it: run the import "
                                 "again", *import_id)};
    return std::move(*part);
  };
  auto each_part = [&](auto&& fn) {
    for (auto part_offset : offsets) fn(part_at(part_offset));
    fn(split.units);
  };
  UnitImporter importer(call);
  {
    // One pass reads every part once: its hash, its units counted and checked.
    auto read = call.store.begin(Store::Access::read);
    offsets = call.store.import_part_offsets(call.who.tenant_id, *import_id);
    Hasher hasher(HashAlg::sha256);
    std::int64_t units = 0;
    std::size_t line_number = 0;
    std::optional<ApiError> refusal;
    each_part([&](std::string_view text) {
      hasher.update(as_bytes(text));
      units += importer.count_and_check(text, line_number, refusal);
    });
    verify_bundle(call.store, call.who.tenant_id, trailer, hasher.finish(), units);
    if (refusal) throw *refusal;
    read->commit();
  }
  std::size_t line_number = 0;
  try {
    each_part([&](std::string_view text) {
      while (!text.empty()) {
        auto batch = UnitImporter::take_lines(text, units_per_write);
        auto write = call.store.begin();
        importer.apply(batch, line_number);
        write->commit();
      }
    });
    // The station's ledger head and the end of the staging, once every unit is in.
    auto write = call.store.begin();
    advance_ledger_head(call.store, call.who.tenant_id, trailer);
    call.store.delete_import(call.who.tenant_id, *import_id);
    write->commit();
  } catch (const ApiError& e) {
    // Only a change made meanwhile (a unit registered elsewhere since the check) gets here: what was applied is
    // what the bundle says, and applying it again changes nothing.
    throw ApiError{e.status, e.code,
                   fmt::format("{} ({} units were imported before this: running the import again finishes it, and "
                               "changes nothing of what was imported)", e.message, importer.imported())};
  }
  return {200, Json{{"import", *import_id}, {"imported", importer.imported()}}};
}

Reply list_devices(Call& call) {
  auto filter = device_filter(call);
  std::int64_t limit = decimal_query(call, "limit", max_page).value_or(default_page);
  if (limit < 1)
    throw ApiError{400, "invalid_request", fmt::format("query parameter 'limit' must be 1 .. {}", max_page)};
  auto cursor = call.query_value("cursor");
  auto devices = call.store.list_devices(filter, cursor, limit + 1);
  Json items = Json::array();
  Json next = nullptr;
  for (auto& device : devices) {
    if (static_cast<std::int64_t>(items.size()) == limit) {
      next = items.back()["id"];
      break;
    }
    items.push_back(device_json(device));
  }
  return {200, Json{{"items", std::move(items)}, {"next_cursor", next}}};
}

Reply count_devices(Call& call) {
  auto by = call.query_value("by").value_or("version");
  DeviceCountKey key;
  if (by == "version") key = DeviceCountKey::version;
  else if (by == "state") key = DeviceCountKey::state;
  else if (by == "group") key = DeviceCountKey::group;
  else if (by == "product") key = DeviceCountKey::product;
  else throw ApiError{400, "invalid_request", "by must be version, group, state or product"};
  auto filter = device_filter(call);
  Json counts = Json::array();
  std::int64_t total = 0;
  for (auto& count : call.store.count_devices(filter, key)) {
    counts.push_back(Json{{by, count.key ? Json(*count.key) : Json(nullptr)}, {"count", count.count}});
    total += count.count;
  }
  return {200, Json{{"by", by}, {"total", total}, {"counts", counts}}};
}

namespace {

// Whether the caller's tenant has revoked a factory CA: else no device of it chains to one (device_answer).
bool any_revoked_factory_ca(Call& call) { return !call.store.revoked_factory_ca_pems(call.who.tenant_id).empty(); }

// A device as `device show` answers it: its view, and whether the factory CA it chains to was revoked since
// (`revoked_cas`: any_revoked_factory_ca, asked once for many devices).
Json device_answer(Call& call, const DeviceView& device, bool revoked_cas) {
  auto out = device_json(device);
  // A unit whose certificate chains to a factory CA revoked since its import stays, marked.
  std::optional<FactoryCaRecord> ca;
  if (revoked_cas)
    if (auto identity = call.store.device_identity(device.id); identity && identity->certificate)
      ca = revoked_factory_ca(call.store, call.who.tenant_id, {*identity->certificate});
  out["ca_revoked"] = ca.has_value();
  out["ca"] = ca ? Json{{"id", ca->id}, {"subject", ca->subject}, {"revoked_at", ca->revoked_at.value_or("")}}
                 : Json(nullptr);
  return out;
}

}  // namespace

Reply show_device(Call& call) {
  auto device = call.store.find_device(call.who.tenant_id, call.params[0]);
  if (!device) throw ApiError{404, "not_found", fmt::format("device {} not found", call.params[0])};
  return {200, device_answer(call, *device, any_revoked_factory_ca(call))};
}

Reply assign_device(Call& call) {
  auto body = parse_object(call.request.body);
  auto& id = call.params[0];
  require_device(call, id);
  auto group = resolve_group_id(call, required_string(body, "group", 260));
  if (call.store.find_device(call.who.tenant_id, id)->revoked_at)
    throw ApiError{409, "device_revoked", fmt::format("device {} is revoked: it joins no group", id)};
  if (!call.store.group_of_device_product(id, group))
    throw ApiError{409, "conflict", fmt::format("group {} belongs to another product than device {}", group, id)};
  call.store.set_device_group(id, group);
  return show_device(call);
}

// Many devices to one group, all or none: every device is checked first with the single route's rules (an
// unknown device or another tenant's is 404, a revoked one or one of another product 409, the message naming it),
// so a refused batch changes nothing; then all move in this request's unit of work (set_devices_group), each
// device's deployments' tallies kept as set_device_group keeps them. A UID named twice is moved once.
Reply assign_devices(Call& call) {
  auto body = parse_object(call.request.body);
  auto group = *call.store.find_group(call.who.tenant_id, resolve_group_id(call, required_string(body, "group", 260)));
  auto ids = device_ids_field(body, max_assign_batch);
  auto by_id = [&] {
    std::unordered_map<std::string, DeviceView> found;
    for (auto& device : call.store.find_devices(call.who.tenant_id, ids)) found.emplace(device.id, std::move(device));
    return found;
  };
  const std::string nothing_moved = "no device of this request was moved";
  auto before = by_id();
  for (const auto& id : ids) {
    auto it = before.find(id);
    if (it == before.end()) throw ApiError{404, "not_found", fmt::format("device {} not found ({})", id, nothing_moved)};
    if (it->second.revoked_at)
      throw ApiError{409, "device_revoked",
                     fmt::format("device {} is revoked: it joins no group ({})", id, nothing_moved)};
    if (it->second.product != group.product)  // product names are unique in a tenant (group_of_device_product)
      throw ApiError{409, "conflict", fmt::format("group {} belongs to another product than device {} ({})", group.id,
                                                  id, nothing_moved)};
  }
  {
    // A unit of its own: the request's unit is committed even when the handler answers with an error, so a
    // move that fails part-way (an I/O error) must undo itself, tallies included.
    auto move = call.store.begin();
    call.store.set_devices_group(ids, group.id);
    move->commit();
  }
  auto after = by_id();
  bool revoked_cas = any_revoked_factory_ca(call);
  Json moved = Json::array();
  for (const auto& id : ids) moved.push_back(device_answer(call, after.at(id), revoked_cas));
  return {200, Json{{"assigned", ids.size()}, {"devices", std::move(moved)}}};
}

Reply update_device(Call& call) {
  auto body = parse_object(call.request.body);
  auto& id = call.params[0];
  require_device(call, id);
  for (auto& item : body.items())
    if (item.key() != "time_zone")
      throw ApiError{400, "invalid_request", fmt::format("field '{}' is not a known member (time_zone)", item.key())};
  auto it = body.find("time_zone");
  if (it == body.end()) throw ApiError{400, "invalid_request", "field 'time_zone' is required (an IANA name or null)"};
  std::optional<std::string> zone;
  if (!it->is_null()) {
    if (!it->is_string() || it->get<std::string>().size() > 64 || !known_time_zone(it->get<std::string>()))
      throw ApiError{400, "invalid_request",
                     "field 'time_zone' must be a time zone of the service's database, an IANA name such as "
                     "Europe/Berlin, or null"};
    zone = it->get<std::string>();
  }
  call.store.set_device_time_zone(id, zone);
  return show_device(call);
}

Json possession_challenge(Call& call, const std::string& device_id,
                          const std::function<std::string(const std::string& nonce)>& message) {
  std::string nonce = random_hex(16);
  std::int64_t now = unix_now();
  call.store.add_claim_challenge(nonce, device_id, call.who.tenant_id, now + challenge_seconds, now);
  return Json{{"device", device_id}, {"nonce", nonce}, {"message", message(nonce)}, {"expires_in", challenge_seconds}};
}

void require_possession(Call& call, const std::string& device_id, const std::string& nonce, ByteView signature,
                        const std::string& message, const std::string& unknown, const std::string& bad) {
  if (!call.store.take_claim_challenge(nonce, device_id, call.who.tenant_id,
                                       unix_now()))
    throw ApiError{409, "challenge_unknown", unknown};
  auto device = call.store.device_identity(device_id);
  if (!device || !verify_message_signature(from_hex(device->public_key), message, signature))
    throw ApiError{422, "signature_invalid", bad};
}

Bytes hex_signature(const std::string& hex) {
  try {
    return from_hex(hex);
  } catch (const Error&) {
    throw ApiError{400, "invalid_request", "signature must be hex"};
  }
}

Reply claim_challenge(Call& call) {
  auto& id = call.params[0];
  require_device(call, id);
  return {201, possession_challenge(call, id, [&](const std::string& nonce) { return claim_message(id, nonce); })};
}

Reply claim_device(Call& call) {
  auto body = parse_object(call.request.body);
  auto& id = call.params[0];
  require_device(call, id);
  auto nonce = required_string(body, "nonce", 64);
  auto signature = hex_signature(required_string(body, "signature", 2048));
  require_possession(call, id, nonce, signature, claim_message(id, nonce),
                     "no live challenge with this nonce: ask for a new claim-challenge",
                     fmt::format("the claim signature does not verify with device {}'s imported public key", id));
  call.store.mark_claimed(id, now_iso8601());
  return show_device(call);
}

}  // namespace kiln::service
