// COSE_Sign1 encode, sign and verify over the Signer interface (ECDSA raw r||s, pure EdDSA).
#include "manifests/cose.hpp"

#include <fmt/format.h>

#include "core/error.hpp"
#include "signing/message_signature.hpp"

namespace kiln::cose {
namespace {

struct AlgorithmInfo {
  std::int64_t id;
  const char* name;
  KeyType key;
  HashAlg hash;
  std::size_t coordinate_size;
};

constexpr AlgorithmInfo algorithms[] = {
    {alg_es256, "ES256", KeyType::ecdsa_p256, HashAlg::sha256, 32},
    {alg_es384, "ES384", KeyType::ecdsa_p384, HashAlg::sha384, 48},
    {alg_eddsa, "EdDSA", KeyType::ed25519, HashAlg::sha512, 0},
};

const AlgorithmInfo* find_algorithm(std::int64_t id) {
  for (const auto& info : algorithms)
    if (info.id == id) return &info;
  return nullptr;
}

}  // namespace

std::string algorithm_name(std::int64_t alg) {
  const auto* info = find_algorithm(alg);
  return info ? info->name : std::to_string(alg);
}

std::optional<std::int64_t> algorithm_from_name(const std::string& name) {
  for (const auto& info : algorithms)
    if (name == info.name) return info.id;
  return std::nullopt;
}

std::int64_t algorithm_for_key(KeyType type) {
  for (const auto& info : algorithms)
    if (info.key == type) return info.id;
  throw Error(ExitCode::usage, fmt::format("{} keys cannot sign SUIT manifests", key_type_name(type)),
              "use an ecdsa-p256 (ES256), ecdsa-p384 (ES384) or ed25519 (EdDSA) key");
}

std::int64_t algorithm(const Sign1& sign1) {
  cbor::Value header = cbor::decode(sign1.protected_header, "COSE protected header");
  const cbor::Value* alg = header.is_map() ? header.find(header_alg) : nullptr;
  if (!alg || !alg->as_int())
    throw Error(ExitCode::verification_failed, "COSE_Sign1 protected header has no algorithm (alg, label 1)",
                "the signature cannot be checked without knowing its algorithm");
  return *alg->as_int();
}

Sign1 parse_sign1(const cbor::Value& tagged, std::string_view what) {
  if (!tagged.is_tag() || tagged.number != sign1_tag) cbor::fail(tagged, what, "expected COSE_Sign1 (tag 18)");
  const cbor::Value& body = tagged.items.at(0);
  if (!body.is_array() || body.items.size() != 4) cbor::fail(body, what, "COSE_Sign1 must be an array of 4 elements");
  Sign1 out;
  if (!body.items[0].is_bytes()) cbor::fail(body.items[0], what, "protected header must be a byte string");
  out.protected_header = body.items[0].bytes;
  if (!out.protected_header.empty())
    cbor::decode(out.protected_header, "COSE protected header", body.items[0].offset + 1);
  if (!body.items[1].is_map()) cbor::fail(body.items[1], what, "unprotected header must be a map");
  out.unprotected = body.items[1];
  if (body.items[2].is_bytes())
    out.payload = body.items[2].bytes;
  else if (body.items[2].kind != cbor::Value::Kind::null)
    cbor::fail(body.items[2], what, "payload must be a byte string or nil");
  if (!body.items[3].is_bytes()) cbor::fail(body.items[3], what, "signature must be a byte string");
  out.signature = body.items[3].bytes;
  return out;
}

std::string block_algorithm_name(const cbor::Value& block) {
  if (!block.is_tag() || block.number != sign1_tag) return fmt::format("COSE tag {}", block.number);
  try {
    return algorithm_name(algorithm(parse_sign1(block, "COSE_Sign1")));
  } catch (const Error&) {
    return "no algorithm";
  }
}

cbor::Value to_value(const Sign1& sign1) {
  return cbor::Value::tagged(
      sign1_tag,
      cbor::Value::array({cbor::Value::byte_string(sign1.protected_header), sign1.unprotected,
                          sign1.payload ? cbor::Value::byte_string(*sign1.payload) : cbor::Value::null_value(),
                          cbor::Value::byte_string(sign1.signature)}));
}

Bytes sig_structure(ByteView protected_header, ByteView payload) {
  return cbor::encode(cbor::Value::array(
      {cbor::Value::text_string("Signature1"),
       cbor::Value::byte_string(Bytes(protected_header.begin(), protected_header.end())), cbor::Value::byte_string({}),
       cbor::Value::byte_string(Bytes(payload.begin(), payload.end()))}));
}

Sign1 sign_detached(const Signer& signer, ByteView detached_payload) {
  const auto* info = find_algorithm(algorithm_for_key(signer.type()));
  Sign1 out;
  out.protected_header =
      cbor::encode(cbor::Value::map({{cbor::Value::integer(header_alg), cbor::Value::integer(info->id)}}));
  Bytes to_be_signed = sig_structure(out.protected_header, detached_payload);
  out.signature = sign_message(signer, to_be_signed, info->hash);
  // COSE carries ECDSA signatures as r || s, not DER.
  if (is_ecdsa(info->key)) out.signature = ecdsa_der_to_raw(out.signature, info->coordinate_size);
  return out;
}

bool verify_detached(const Sign1& sign1, ByteView public_key_der, ByteView detached_payload) {
  if (sign1.payload)
    throw Error(ExitCode::verification_failed, "the COSE_Sign1 carries an attached payload where a detached one (nil) is required",
                "SUIT signatures are detached: re-sign with kiln manifest sign");
  const std::int64_t alg = algorithm(sign1);
  const auto* info = find_algorithm(alg);
  if (!info)
    throw Error(ExitCode::verification_failed, fmt::format("COSE algorithm {} is not supported", alg),
                "kiln verifies ES256, ES384 and EdDSA signatures");
  KeyType key_type = public_key_type(public_key_der);
  if (key_type != info->key)
    throw Error(ExitCode::verification_failed,
                fmt::format("signature algorithm {} cannot come from a {} key", info->name, key_type_name(key_type)),
                "the envelope was signed by a different kind of key; pass the key that signed it");
  Bytes to_be_signed = sig_structure(sign1.protected_header, detached_payload);
  if (!is_ecdsa(info->key)) return verify_message(public_key_der, to_be_signed, info->hash, sign1.signature);
  if (sign1.signature.size() != 2 * info->coordinate_size) return false;
  return verify_message(public_key_der, to_be_signed, info->hash, ecdsa_raw_to_der(sign1.signature));
}

}  // namespace kiln::cose
