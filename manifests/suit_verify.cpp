// SUIT envelope verification: every check a device makes before it installs, with reasons a person can act on.
#include "manifests/suit_verify.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/image_delivery.hpp"
#include "signing/signer.hpp"

namespace kiln::suit {
namespace {

using cbor::Value;

Error failed(std::string message, std::string hint) {
  return Error(ExitCode::verification_failed, std::move(message), std::move(hint));
}

constexpr std::int64_t override_parameters = 20, try_each = 15, run_sequence = 32;
constexpr std::int64_t parameter_image_digest = 3, parameter_image_size = 14;

void collect_from_sequence(const Value& wrapped, std::vector<DeclaredImage>& out) {
  if (!wrapped.is_bytes()) return;
  Value seq = cbor::unwrap(wrapped, "command sequence");
  for (std::size_t i = 0; i + 1 < seq.items.size(); i += 2) {
    auto id = seq.items[i].as_int();
    const Value& arg = seq.items[i + 1];
    if (id == override_parameters) {
      if (const Value* d = arg.find(parameter_image_digest); d && d->is_bytes()) {
        DeclaredImage image{parse_digest(cbor::unwrap(*d, "image-digest"), "image-digest"), std::nullopt};
        if (const Value* s = arg.find(parameter_image_size); s && s->is_uint()) image.size = s->number;
        out.push_back(image);
      }
    } else if (id == try_each) {
      for (const auto& choice : arg.items) collect_from_sequence(choice, out);
    } else if (id == run_sequence) {
      collect_from_sequence(arg, out);
    }
  }
}

std::string short_hex(const Bytes& b) {
  return to_hex(b).substr(0, 16) + "…";
}

}  // namespace

std::vector<DeclaredImage> declared_images(const Envelope& envelope) {
  std::vector<DeclaredImage> out;
  Value m = manifest(envelope);
  Value common = cbor::unwrap(*m.find(manifest_key::common), "common");
  if (const Value* shared = common.find(common_key::shared_sequence)) collect_from_sequence(*shared, out);
  for (const auto& [k, v] : m.entries) {
    if (k.as_int() == manifest_key::common) continue;
    if (v.is_bytes()) collect_from_sequence(v, out);
  }
  for (std::int64_t key : severable_keys)
    if (const Value* v = envelope.members.find(key); v && key != manifest_key::text) collect_from_sequence(*v, out);
  return out;
}

VerifyReport verify_envelope(ByteView input, const VerifyOptions& options) {
  Envelope envelope;
  try {
    envelope = parse_envelope(input);
  } catch (const Error& e) {
    throw failed(fmt::format("not a valid SUIT envelope: {}", e.what()), e.hint());
  }
  VerifyReport report;
  AuthenticationWrapper wrapper;
  try {
    wrapper = authentication(envelope);
  } catch (const Error& e) {
    throw failed(fmt::format("not a valid SUIT envelope: {}", e.what()), e.hint());
  }
  // A trusted key that is no key at all (the point at infinity, off the curve) would accept
  // signatures anyone can make: refuse it by name before looking at any signature.
  for (const auto& key : options.keys) {
    try {
      check_public_key(key.public_key_der);
    } catch (const Error& e) {
      throw failed(fmt::format("key {} cannot be trusted: {}", key.name, e.what()), e.hint());
    }
  }
  report.manifest_digest = wrapper.digest;

  // 1. The manifest is the one the digest (and so every signature) covers.
  Digest actual = compute_wrapped_digest(wrapper.digest.algorithm, manifest_bytes(envelope));
  if (actual != wrapper.digest)
    throw failed(
        fmt::format("manifest digest does not match: the authentication wrapper records {}, the manifest hashes to {}",
                    to_hex(wrapper.digest.bytes), to_hex(actual.bytes)),
        "the manifest was modified after signing; recreate and re-sign it");

  // 2. Signatures: each trusted key must have made one of them.
  for (const Value& block : wrapper.authentication_blocks) {
    SignatureCheck check{cose::block_algorithm_name(block), ""};
    if (block.is_tag() && block.number == cose::sign1_tag) {
      cose::Sign1 sign1 = cose::parse_sign1(block, "authentication block");
      for (const auto& key : options.keys) {
        bool ok = false;
        try {
          ok = cose::verify_detached(sign1, key.public_key_der, wrapper.digest_encoded);
        } catch (const Error&) {
          ok = false;  // a key of another type or an unsupported algorithm: not this signer
        }
        if (ok) {
          check.key = key.name;
          break;
        }
      }
    }
    report.signatures.push_back(check);
  }
  if (report.signatures.empty() && !options.allow_unsigned)
    throw failed("the envelope is not signed: its authentication wrapper holds only the manifest digest",
                 "sign it with `kiln manifest sign FILE --key KEYREF`, or pass --unsigned to check digests only");
  for (const auto& key : options.keys) {
    bool found = std::any_of(report.signatures.begin(), report.signatures.end(),
                             [&](const auto& s) { return s.key == key.name; });
    if (!found)
      throw failed(fmt::format("no signature in the envelope verifies with key {} ({} signature{} checked)", key.name,
                               report.signatures.size(), report.signatures.size() == 1 ? "" : "s"),
                   "the envelope was signed by a different key, or modified after signing");
  }

  // 3. Severable elements carried in the envelope match the digests the manifest holds.
  Value m = manifest(envelope);
  for (std::int64_t key : severable_keys) {
    const Value* in_manifest = m.find(key);
    const Value* in_envelope = envelope.members.find(key);
    std::string name = severable_name(key);
    if (in_envelope && (!in_manifest || !in_manifest->is_array()))
      throw failed(fmt::format("the envelope carries a severable {} the manifest does not reference by digest", name),
                   "the element was added after signing; remove it or recreate the envelope");
    if (!in_manifest || !in_manifest->is_array()) continue;
    if (!in_envelope) {
      report.severed.push_back(name);
      continue;
    }
    Digest recorded = parse_digest(*in_manifest, name);
    Digest carried = compute_wrapped_digest(recorded.algorithm, in_envelope->bytes);
    if (carried != recorded)
      throw failed(
          fmt::format(
              "severable {} does not match its digest in the manifest (recorded {}, carried element hashes to {})",
              name, to_hex(recorded.bytes), to_hex(carried.bytes)),
          "the severable element was modified; sever it or restore the original");
    report.severable_checked.push_back(name);
  }

  // 4. Anti-rollback floor.
  report.sequence_number = sequence_number(m);
  if (options.min_sequence && report.sequence_number < *options.min_sequence)
    throw failed(fmt::format("manifest-sequence-number {} is below the minimum {}: this would be a rollback",
                             report.sequence_number, *options.min_sequence),
                 "a device that has installed sequence number N refuses anything older; create a newer manifest");

  // 5. Images: each must be one the manifest declares (digest, and size when declared).
  std::vector<DeclaredImage> declared = declared_images(envelope);
  for (const auto& path : options.images) {
    std::map<std::int64_t, std::unique_ptr<Hasher>> hashers;
    for (const auto& d : declared)
      if (auto hash = digest_hash(d.digest.algorithm); hash && !hashers.count(d.digest.algorithm))
        hashers.emplace(d.digest.algorithm, std::make_unique<Hasher>(*hash));
    if (!hashers.count(digest_sha256)) hashers.emplace(digest_sha256, std::make_unique<Hasher>(HashAlg::sha256));
    ChunkReader reader(path);
    std::uint64_t size = 0;
    for (auto chunk = reader.next(); !chunk.empty(); chunk = reader.next()) {
      for (auto& [alg, hasher] : hashers) hasher->update(chunk);
      size += chunk.size();
    }
    std::map<std::int64_t, Bytes> digests;
    for (auto& [alg, hasher] : hashers) digests[alg] = hasher->finish();
    // An encrypted MCUboot image is declared without its content-key TLV (docs/encrypted-delivery.md): the
    // digest every device's wrap of it shares.
    std::optional<mcuboot::KeylessDigest> keyless;
    try {
      keyless = mcuboot::keyless_digest(path);
    } catch (const Error&) {
    }
    bool digest_known = false;
    for (const auto& d : declared) {
      if (keyless && d.digest.algorithm == digest_sha256 && d.digest.bytes == keyless->sha256) {
        if (d.size && *d.size != keyless->size)
          throw failed(fmt::format("image {} has the declared digest but {} bytes without its content-key TLV, the "
                                   "manifest says {}",
                                   path.string(), keyless->size, *d.size),
                       "the manifest's image-size is wrong; recreate the manifest from this image");
        digest_known = true;
        report.images.push_back({path, d.digest, keyless->size});
        break;
      }
      if (digests[d.digest.algorithm] != d.digest.bytes) continue;
      digest_known = true;
      if (d.size && *d.size != size)
        throw failed(fmt::format("image {} has the declared digest but {} bytes, the manifest says {}", path.string(),
                                 size, *d.size),
                     "the manifest's image-size is wrong; recreate the manifest from this image");
      report.images.push_back({path, d.digest, size});
      break;
    }
    if (!digest_known) {
      std::string list;
      for (const auto& d : declared)
        list += fmt::format("{}{} {}{}", list.empty() ? "" : ", ", digest_algorithm_name(d.digest.algorithm),
                            short_hex(d.digest.bytes), d.size ? fmt::format(" ({} bytes)", *d.size) : "");
      throw failed(fmt::format("image {} (sha256 {}, {} bytes) matches no image-digest in the manifest (declared: {})",
                               path.string(), to_hex(digests[digest_sha256]), size, list.empty() ? "none" : list),
                   "this is not the image the manifest was made for; pass the right file or recreate the manifest");
    }
  }
  return report;
}

}  // namespace kiln::suit
