// SUIT envelope model: strict parse, deterministic encode, digests, signatures and severing.
#include "manifests/suit_envelope.hpp"

#include <fmt/format.h>

#include "core/error.hpp"
#include "manifests/cose.hpp"
#include "manifests/suit_json.hpp"
#include "signing/external_signing.hpp"

namespace kiln::suit {
namespace {

using cbor::Value;

const Value& member(const Envelope& envelope, std::int64_t key, const char* name) {
  const Value* v = envelope.members.find(key);
  if (!v || !v->is_bytes())
    throw Error(ExitCode::failure, fmt::format("SUIT envelope has no {} (key {})", name, key),
                "the file is not a complete SUIT envelope");
  return *v;
}

Error digest_mismatch(const Digest& recorded, const Digest& actual, const std::string& what) {
  return Error(ExitCode::verification_failed,
               fmt::format("{} digest does not match: the envelope records {} {}, the content hashes to {}", what,
                           digest_algorithm_name(recorded.algorithm), to_hex(recorded.bytes), to_hex(actual.bytes)),
               "the envelope was modified after it was made; recreate or re-sign it from the original");
}

}  // namespace

std::optional<HashAlg> digest_hash(std::int64_t algorithm) {
  switch (algorithm) {
    case digest_sha256:
      return HashAlg::sha256;
    case digest_sha384:
      return HashAlg::sha384;
    case digest_sha512:
      return HashAlg::sha512;
    default:
      return std::nullopt;
  }
}

std::string digest_algorithm_name(std::int64_t algorithm) {
  Json name = digest_to_json(Digest{algorithm, {}})["algorithm-id"];
  return name.is_string() ? name.get<std::string>() : std::to_string(algorithm);
}

Digest parse_digest(const Value& value, std::string_view what) {
  if (!value.is_array() || value.items.size() != 2)
    cbor::fail(value, what, "SUIT_Digest must be [algorithm-id, digest-bytes]");
  auto alg = value.items[0].as_int();
  if (!alg) cbor::fail(value.items[0], what, "digest algorithm-id must be an integer");
  if (!value.items[1].is_bytes()) cbor::fail(value.items[1], what, "digest-bytes must be a byte string");
  if (auto hash = digest_hash(*alg); hash && value.items[1].bytes.size() != hash_size(*hash))
    cbor::fail(value.items[1], what,
               fmt::format("digest-bytes must be {} bytes for {}", hash_size(*hash), digest_algorithm_name(*alg)));
  return Digest{*alg, value.items[1].bytes};
}

Value digest_value(const Digest& digest) {
  return Value::array({Value::integer(digest.algorithm), Value::byte_string(digest.bytes)});
}

Digest compute_digest(std::int64_t algorithm, ByteView data) {
  auto hash = digest_hash(algorithm);
  if (!hash)
    throw Error(ExitCode::verification_failed, fmt::format("digest algorithm {} is not supported", algorithm),
                "kiln computes sha256, sha384 and sha512 digests");
  return Digest{algorithm, digest(*hash, data)};
}

Digest compute_wrapped_digest(std::int64_t algorithm, ByteView content) {
  auto hash = digest_hash(algorithm);
  if (!hash) return compute_digest(algorithm, content);  // throws the unsupported-algorithm error
  Hasher hasher(*hash);
  hasher.update(cbor::byte_string_header(content.size()));
  hasher.update(content);
  return Digest{algorithm, hasher.finish()};
}

Envelope parse_envelope(ByteView input) {
  Value root = cbor::decode(input, "SUIT envelope");
  if (!root.is_tag() || root.number != envelope_tag)
    cbor::fail(root, "SUIT envelope", "expected SUIT_Envelope_Tagged (tag 107)");
  Envelope envelope;
  envelope.members = root.items.at(0);
  envelope_to_json(envelope);  // walks every element by the draft's schema; throws on the first bad one
  member(envelope, envelope_key::authentication_wrapper, "authentication-wrapper");
  Value m = manifest(envelope);
  if (!m.find(manifest_key::version) || !m.find(manifest_key::sequence_number) || !m.find(manifest_key::common))
    cbor::fail(m, "SUIT manifest", "manifest-version, manifest-sequence-number and common are required");
  if (m.find(manifest_key::version)->number != 1)
    cbor::fail(*m.find(manifest_key::version), "SUIT manifest", "manifest-version must be 1");
  return envelope;
}

Bytes encode_envelope(const Envelope& envelope) {
  return cbor::encode(Value::tagged(envelope_tag, envelope.members));
}

AuthenticationWrapper authentication(const Envelope& envelope) {
  const Value& bstr = member(envelope, envelope_key::authentication_wrapper, "authentication-wrapper");
  Value wrapper = cbor::unwrap(bstr, "authentication-wrapper");
  if (!wrapper.is_array() || wrapper.items.empty() || !wrapper.items[0].is_bytes())
    cbor::fail(wrapper, "authentication-wrapper", "expected [bstr digest, * bstr authentication-block]");
  AuthenticationWrapper out;
  out.digest_encoded = wrapper.items[0].bytes;
  out.digest =
      parse_digest(cbor::unwrap(wrapper.items[0], "authentication-wrapper digest"), "authentication-wrapper digest");
  for (std::size_t i = 1; i < wrapper.items.size(); ++i) {
    if (!wrapper.items[i].is_bytes())
      cbor::fail(wrapper.items[i], "authentication-wrapper", "authentication blocks are byte strings");
    Value block = cbor::unwrap(wrapper.items[i], "authentication block");
    // SUIT signs the manifest digest with a detached payload (nil). A COSE_Sign1 carrying its own
    // payload signs something other than this manifest's digest; refuse it rather than ignore it.
    if (block.is_tag() && block.number == cose::sign1_tag && !block.items.empty() && block.items[0].is_array() &&
        block.items[0].items.size() == 4 && block.items[0].items[2].kind != Value::Kind::null)
      cbor::fail(block.items[0].items[2], "authentication block",
                 "COSE_Sign1 carries an attached payload; SUIT signatures are detached (payload must be nil)");
    out.authentication_blocks.push_back(std::move(block));
  }
  return out;
}

void set_authentication(Envelope& envelope, const AuthenticationWrapper& wrapper) {
  Value array = Value::array({Value::byte_string(wrapper.digest_encoded)});
  for (const auto& block : wrapper.authentication_blocks) array.items.push_back(cbor::wrap(block));
  envelope.members.set(envelope_key::authentication_wrapper, cbor::wrap(array));
}

const Bytes& manifest_bytes(const Envelope& envelope) {
  return member(envelope, envelope_key::manifest, "manifest").bytes;
}

Value manifest(const Envelope& envelope) {
  const Value& bstr = member(envelope, envelope_key::manifest, "manifest");
  Value m = cbor::unwrap(bstr, "manifest");
  if (!m.is_map()) cbor::fail(m, "manifest", "SUIT_Manifest must be a map");
  return m;
}

void set_manifest(Envelope& envelope, const Value& manifest_value) {
  Bytes encoded = cbor::encode(manifest_value);
  AuthenticationWrapper wrapper;
  wrapper.digest = compute_wrapped_digest(digest_sha256, encoded);
  wrapper.digest_encoded = cbor::encode(digest_value(wrapper.digest));
  envelope.members.set(envelope_key::manifest, Value::byte_string(std::move(encoded)));
  set_authentication(envelope, wrapper);
}

std::uint64_t sequence_number(const Value& manifest_value) {
  const Value* seq = manifest_value.find(manifest_key::sequence_number);
  if (!seq || !seq->is_uint())
    cbor::fail(manifest_value, "manifest", "manifest-sequence-number missing or not an unsigned integer");
  return seq->number;
}

cose::Sign1 add_signature(Envelope& envelope, const Signer& signer) {
  AuthenticationWrapper wrapper = authentication(envelope);
  Digest actual = compute_wrapped_digest(wrapper.digest.algorithm, manifest_bytes(envelope));
  if (actual != wrapper.digest) throw digest_mismatch(wrapper.digest, actual, "manifest");
  cose::Sign1 sign1 = cose::sign_detached(signer, wrapper.digest_encoded);
  wrapper.authentication_blocks.push_back(cose::to_value(sign1));
  set_authentication(envelope, wrapper);
  return sign1;
}

Bytes signature_vector(const Envelope& envelope, ByteView public_key_der, bool want_digest) {
  AuthenticationWrapper wrapper = authentication(envelope);
  Digest actual = compute_wrapped_digest(wrapper.digest.algorithm, manifest_bytes(envelope));
  if (actual != wrapper.digest) throw digest_mismatch(wrapper.digest, actual, "manifest");
  VectorRecorder recorder(Bytes(public_key_der.begin(), public_key_der.end()));
  cose::Sign1 sign1 = cose::sign_detached(recorder, wrapper.digest_encoded);
  Bytes to_be_signed = cose::sig_structure(sign1.protected_header, wrapper.digest_encoded);
  if (!want_digest) return to_be_signed;
  if (recorder.type() == KeyType::ed25519)
    throw Error(ExitCode::usage, "EdDSA signs the COSE Sig_structure itself, not a digest",
                "use --vector-to-sign payload with an Ed25519 key");
  return recorder.recorded();
}

cose::Sign1 add_external_signature(Envelope& envelope, ByteView public_key_der, ByteView signature) {
  return add_signature(envelope, *presigned_signer(public_key_der, signature, "from --signature"));
}

std::vector<std::string> sever(Envelope& envelope) {
  Value m = manifest(envelope);
  std::vector<std::string> removed;
  for (std::int64_t key : severable_keys) {
    const Value* in_manifest = m.find(key);
    if (in_manifest && in_manifest->is_array() && envelope.members.find(key)) {
      envelope.members.erase(key);
      removed.push_back(severable_name(key));
    }
  }
  return removed;
}

std::string severable_name(std::int64_t key) {
  switch (key) {
    case manifest_key::payload_fetch:
      return "payload-fetch";
    case manifest_key::install:
      return "install";
    case manifest_key::text:
      return "text";
    default:
      return std::to_string(key);
  }
}

}  // namespace kiln::suit
