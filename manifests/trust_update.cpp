// Trust updates: create, parse and check against the trust in force (docs/key-rotation.md).
#include "manifests/trust_update.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.hpp"
#include "manifests/suit_verify.hpp"
#include "signing/key_info.hpp"
#include "signing/signer.hpp"

namespace kiln::trust {
namespace {

using cbor::Value;

Error usage(const std::string& what, std::string message, std::string hint = {}) {
  return Error(ExitCode::usage, fmt::format("{}: {}", what, message), std::move(hint));
}

Error malformed(const std::string& message) {
  return Error(ExitCode::verification_failed, fmt::format("not a valid trust update: {}", message),
               "make it with `kiln trust create` and sign it with `kiln trust sign`; a copy may be truncated");
}

bool has_duplicate(const std::vector<Bytes>& items) {
  for (std::size_t i = 0; i < items.size(); ++i)
    for (std::size_t j = i + 1; j < items.size(); ++j)
      if (items[i] == items[j]) return true;
  return false;
}

std::vector<Bytes> byte_strings(const Value* list, const char* field) {
  if (!list || !list->is_array()) throw malformed(fmt::format("{} is missing or not an array", field));
  std::vector<Bytes> out;
  for (const auto& item : list->items) {
    if (!item.is_bytes()) throw malformed(fmt::format("{} holds something that is not a byte string", field));
    out.push_back(item.bytes);
  }
  return out;
}

}  // namespace

void check_update_fields(const TrustUpdate& u, const std::string& what) {
  if (u.product.empty()) throw usage(what, "the trust update names no product", "pass --product NAME");
  if (u.version == 0) throw usage(what, "the trust version must be at least 1", "pass --version N (N > 0)");
  if (u.manifest_keys.empty())
    throw usage(what, "the manifest key set is empty: boards would accept no release again",
                "give at least one --manifest-key");
  for (const auto& key : u.manifest_keys) {
    bool ok = false;
    try {
      KeyType type = public_key_type(key);
      ok = type == KeyType::ecdsa_p256 || type == KeyType::ed25519;
    } catch (const Error&) {
      ok = false;
    }
    if (!ok)
      throw usage(what, fmt::format("manifest key {} is not an ECDSA P-256 or Ed25519 public key", key_fingerprint(key)));
  }
  if (has_duplicate(u.manifest_keys)) throw usage(what, "a manifest key is listed twice");
  suit::check_threshold(u.manifest_threshold, u.manifest_keys.size(), what);
  if (u.boot_key_hashes.empty())
    throw usage(what, "the boot-key set is empty: boards would boot no image again", "give at least one --boot-key");
  for (const auto& hash : u.boot_key_hashes)
    if (hash.size() != 32) throw usage(what, fmt::format("boot-key hash {} is not 32 bytes (SHA-256)", to_hex(hash)));
  if (has_duplicate(u.boot_key_hashes)) throw usage(what, "a boot key is listed twice");
  for (const auto& key : u.boot_keys) {
    Bytes hash;
    try {
      hash = boot_key_hash(key);
    } catch (const Error& e) {
      throw usage(what, fmt::format("a boot key is no public key: {}", e.what()));
    }
    if (std::find(u.boot_key_hashes.begin(), u.boot_key_hashes.end(), hash) == u.boot_key_hashes.end())
      throw usage(what, fmt::format("boot key {} is not in the boot-key set", to_hex(hash)));
  }
}

suit::Envelope create(const TrustUpdate& u) {
  check_update_fields(u, "trust create");
  Value payload = Value::map();
  payload.set(payload_key::product, Value::text_string(u.product));
  Value keys = Value::array();
  for (const auto& key : u.manifest_keys) keys.items.push_back(Value::byte_string(key));
  payload.set(payload_key::manifest_keys, keys);
  payload.set(payload_key::manifest_threshold, Value::uint(u.manifest_threshold));
  Value hashes = Value::array();
  for (const auto& hash : u.boot_key_hashes) hashes.items.push_back(Value::byte_string(hash));
  payload.set(payload_key::boot_key_hashes, hashes);
  if (!u.boot_keys.empty()) {
    Value boot_keys = Value::array();
    for (const auto& key : u.boot_keys) boot_keys.items.push_back(Value::byte_string(key));
    payload.set(payload_key::boot_keys, boot_keys);
  }

  std::string name = component_name;
  Value component = Value::array({Value::byte_string(Bytes(name.begin(), name.end()))});
  Value common = Value::map();
  common.set(suit::common_key::components, Value::array({component}));
  Value manifest = Value::map();
  manifest.set(suit::manifest_key::version, Value::uint(1));
  manifest.set(suit::manifest_key::sequence_number, Value::uint(u.version));
  manifest.set(suit::manifest_key::common, cbor::wrap(common));
  manifest.set(trust_payload_key, cbor::wrap(payload));
  suit::Envelope envelope;
  suit::set_manifest(envelope, manifest);
  return envelope;
}

TrustUpdate parse(ByteView input) {
  suit::Envelope envelope;
  Value manifest;
  try {
    envelope = suit::parse_envelope(input);
    manifest = suit::manifest(envelope);
  } catch (const Error& e) {
    throw malformed(e.what());
  }
  suit::AuthenticationWrapper wrapper = suit::authentication(envelope);
  if (suit::compute_wrapped_digest(wrapper.digest.algorithm, suit::manifest_bytes(envelope)) != wrapper.digest)
    throw malformed("the manifest does not match its digest (modified after signing)");
  const Value* wrapped = manifest.find(trust_payload_key);
  if (!wrapped || !wrapped->is_bytes())
    throw malformed("the SUIT manifest carries no trust payload (a firmware manifest?)");
  Value payload;
  try {
    payload = cbor::unwrap(*wrapped, "trust payload");
  } catch (const Error& e) {
    throw malformed(e.what());
  }
  if (!payload.is_map()) throw malformed("the trust payload is not a map");
  TrustUpdate u;
  u.version = suit::sequence_number(manifest);
  const Value* product = payload.find(payload_key::product);
  if (!product || !product->is_text()) throw malformed("product is missing or not text");
  u.product = product->text;
  u.manifest_keys = byte_strings(payload.find(payload_key::manifest_keys), "manifest_keys");
  const Value* threshold = payload.find(payload_key::manifest_threshold);
  if (!threshold || !threshold->is_uint()) throw malformed("manifest_threshold is missing or not an unsigned integer");
  u.manifest_threshold = threshold->number;
  u.boot_key_hashes = byte_strings(payload.find(payload_key::boot_key_hashes), "boot_key_hashes");
  if (const Value* boot_keys = payload.find(payload_key::boot_keys)) u.boot_keys = byte_strings(boot_keys, "boot_keys");
  return u;
}

Decision check(ByteView input, const TrustState& current) {
  Decision d;
  auto refuse = [&d](const char* check_name, std::string reason) {
    d.failed_check = check_name;
    d.reason = std::move(reason);
    return d;
  };
  try {
    d.update = parse(input);
  } catch (const Error& e) {
    return refuse("malformed", e.what());
  }
  if (!current.product.empty() && d.update.product != current.product)
    return refuse("product", fmt::format("the trust update is for product \"{}\", this is \"{}\"", d.update.product,
                                         current.product));
  if (d.update.version <= current.version)
    return refuse("version", fmt::format("trust version {} is not above the installed {} (older or replayed)",
                                         d.update.version, current.version));
  if (current.manifest_keys.empty()) return refuse("signature", "no manifest key is installed to check it with");
  try {
    std::vector<suit::TrustedKey> keys;
    for (std::size_t i = 0; i < current.manifest_keys.size(); ++i)
      keys.push_back({fmt::format("manifest key {} ({})", i + 1, key_fingerprint(current.manifest_keys[i])),
                      current.manifest_keys[i]});
    suit::SignatureCount count = suit::count_trusted_signatures(input, keys, current.manifest_threshold);
    if (!count.met()) return refuse("signature", "signatures below threshold: " + count.describe());
  } catch (const Error& e) {
    return refuse("signature", e.what());
  }
  try {
    check_update_fields(d.update, "trust update");
  } catch (const Error& e) {
    return refuse("sets", e.what());
  }
  return d;
}

TrustState apply(const TrustUpdate& u) {
  return TrustState{u.product, u.version, u.manifest_keys, u.manifest_threshold, u.boot_key_hashes};
}

Bytes boot_key_hash(ByteView der) {
  return digest(HashAlg::sha256, mcuboot_public_key_bytes(der));
}

std::string key_fingerprint(ByteView der) {
  return to_hex(digest(HashAlg::sha256, der)).substr(0, 16);
}

}  // namespace kiln::trust
