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

namespace {

struct SignedEnvelope {
  Envelope envelope;
  AuthenticationWrapper wrapper;
  std::vector<SignatureCheck> signatures;
  std::size_t trusted = 0;  // distinct keys (by DER) in the trusted set
};

// Structure, trusted keys, manifest digest, then which trusted key (if any) verifies each signature. Keys
// with the same DER are one key: the first name given wins.
SignedEnvelope check_signatures(ByteView input, const std::vector<TrustedKey>& keys) {
  SignedEnvelope out;
  try {
    out.envelope = parse_envelope(input);
    out.wrapper = authentication(out.envelope);
  } catch (const Error& e) {
    throw failed(fmt::format("not a valid SUIT envelope: {}", e.what()), e.hint());
  }
  // A trusted key that is no key at all (the point at infinity, off the curve) would accept
  // signatures anyone can make: refuse it by name before looking at any signature.
  std::vector<const TrustedKey*> distinct;
  for (const auto& key : keys) {
    try {
      check_public_key(key.public_key_der);
    } catch (const Error& e) {
      throw failed(fmt::format("key {} cannot be trusted: {}", key.name, e.what()), e.hint());
    }
    if (std::none_of(distinct.begin(), distinct.end(),
                     [&key](const TrustedKey* k) { return k->public_key_der == key.public_key_der; }))
      distinct.push_back(&key);
  }
  out.trusted = distinct.size();

  // The manifest is the one the digest (and so every signature) covers.
  const AuthenticationWrapper& wrapper = out.wrapper;
  Digest actual = compute_wrapped_digest(wrapper.digest.algorithm, manifest_bytes(out.envelope));
  if (actual != wrapper.digest)
    throw failed(
        fmt::format("manifest digest does not match: the authentication wrapper records {}, the manifest hashes to {}",
                    to_hex(wrapper.digest.bytes), to_hex(actual.bytes)),
        "the manifest was modified after signing; recreate and re-sign it");

  for (const Value& block : wrapper.authentication_blocks) {
    SignatureCheck check{cose::block_algorithm_name(block), ""};
    if (block.is_tag() && block.number == cose::sign1_tag) {
      cose::Sign1 sign1 = cose::parse_sign1(block, "authentication block");
      for (const TrustedKey* key : distinct) {
        bool ok = false;
        try {
          ok = cose::verify_detached(sign1, key->public_key_der, wrapper.digest_encoded);
        } catch (const Error&) {
          ok = false;  // a key of another type or an unsupported algorithm: not this signer
        }
        if (ok) {
          check.key = key->name;
          break;
        }
      }
    }
    out.signatures.push_back(check);
  }
  return out;
}

SignatureCount count_signers(const std::vector<SignatureCheck>& signatures, std::size_t trusted, std::size_t threshold) {
  SignatureCount c;
  c.required = threshold;
  c.trusted = trusted;
  for (const auto& s : signatures) {
    if (s.key.empty()) {
      ++c.untrusted;
    } else if (std::find(c.signers.begin(), c.signers.end(), s.key) == c.signers.end()) {
      c.signers.push_back(s.key);
    }
  }
  c.valid = c.signers.size();
  return c;
}

}  // namespace

std::string SignatureCount::describe() const {
  std::string text = fmt::format("{} valid signature{} from the trusted keys, {} required (threshold {} of {})", valid,
                                 valid == 1 ? "" : "s", required, required, trusted);
  if (untrusted > 0)
    text += fmt::format("; {} signature{} by no trusted key ignored", untrusted, untrusted == 1 ? "" : "s");
  return text;
}

void check_threshold(std::size_t m, std::size_t n, const std::string& what) {
  if (n == 0) throw Error(ExitCode::usage, fmt::format("{}: the manifest key set is empty", what),
                          "give at least one manifest key");
  if (m < 1 || m > n)
    throw Error(ExitCode::usage,
                fmt::format("{}: manifest threshold {} is outside 1..{} (the number of manifest keys)", what, m, n),
                "the threshold M of an M-of-N policy is at least 1 and at most the number of keys");
}

SignatureCount count_trusted_signatures(ByteView envelope, const std::vector<TrustedKey>& keys, std::size_t threshold) {
  SignedEnvelope checked = check_signatures(envelope, keys);
  return count_signers(checked.signatures, checked.trusted, threshold);
}

VerifyReport verify_envelope(ByteView input, const VerifyOptions& options) {
  SignedEnvelope checked = check_signatures(input, options.keys);
  const Envelope& envelope = checked.envelope;
  VerifyReport report;
  report.manifest_digest = checked.wrapper.digest;
  report.signatures = checked.signatures;
  if (report.signatures.empty() && !options.allow_unsigned)
    throw failed("the envelope is not signed: its authentication wrapper holds only the manifest digest",
                 "sign it with `kiln manifest sign FILE --key KEYREF`, or pass --unsigned to check digests only");
  if (options.threshold) {
    // M of N: distinct trusted keys with a valid signature.
    SignatureCount c = count_signers(report.signatures, checked.trusted, *options.threshold);
    if (!c.met())
      throw failed(c.describe(), "collect more signatures from the trusted keys with `kiln manifest sign`");
    report.count = c;
  } else {
    for (const auto& key : options.keys) {
      bool found = std::any_of(report.signatures.begin(), report.signatures.end(),
                               [&](const auto& s) { return !s.key.empty() && s.key == key.name; }) ||
                   // A key given twice under another name: the first name verified it.
                   std::any_of(options.keys.begin(), options.keys.end(), [&](const TrustedKey& other) {
                     return &other != &key && other.public_key_der == key.public_key_der &&
                            std::any_of(report.signatures.begin(), report.signatures.end(),
                                        [&](const auto& s) { return s.key == other.name; });
                   });
      if (!found)
        throw failed(fmt::format("no signature in the envelope verifies with key {} ({} signature{} checked)", key.name,
                                 report.signatures.size(), report.signatures.size() == 1 ? "" : "s"),
                     "the envelope was signed by a different key, or modified after signing");
    }
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
