// Digests, signature verification and ECDSA form conversions shared by every signer.
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "signing/openssl_ptr.hpp"
#include "signing/signer.hpp"

namespace kiln {
namespace {


struct KeyTypeName {
  KeyType type;
  std::string_view name;
};
constexpr KeyTypeName key_type_names[] = {
    {KeyType::ecdsa_p256, "ecdsa-p256"}, {KeyType::ecdsa_p384, "ecdsa-p384"}, {KeyType::ed25519, "ed25519"},
    {KeyType::rsa_2048, "rsa-2048"},     {KeyType::rsa_3072, "rsa-3072"},
};

}  // namespace

std::string_view key_type_name(KeyType type) {
  for (auto& k : key_type_names)
    if (k.type == type) return k.name;
  return "unknown";
}

KeyType parse_key_type(std::string_view name) {
  for (auto& k : key_type_names)
    if (k.name == name) return k.type;
  throw Error(ExitCode::usage, fmt::format("unknown key type '{}'", name),
              "use one of ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072");
}

std::string_view hash_name(HashAlg hash) {
  switch (hash) {
    case HashAlg::sha256: return "sha256";
    case HashAlg::sha384: return "sha384";
    case HashAlg::sha512: return "sha512";
  }
  return "sha256";
}

std::size_t hash_size(HashAlg hash) {
  switch (hash) {
    case HashAlg::sha256: return 32;
    case HashAlg::sha384: return 48;
    case HashAlg::sha512: return 64;
  }
  return 32;
}

bool is_ecdsa(KeyType type) { return type == KeyType::ecdsa_p256 || type == KeyType::ecdsa_p384; }
bool is_rsa(KeyType type) { return type == KeyType::rsa_2048 || type == KeyType::rsa_3072; }

Bytes digest(HashAlg hash, ByteView data) {
  Hasher h(hash);
  h.update(data);
  return h.finish();
}

Hasher::Hasher(HashAlg hash) : alg_(hash), ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), ossl::md(hash), nullptr) != 1)
    throw Error(ExitCode::failure, "cannot initialise a SHA-2 digest").with_detail(openssl_errors());
}

Hasher::~Hasher() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Hasher::update(ByteView data) {
  if (!data.empty()) EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}

Bytes Hasher::finish() {
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), out.data(), &len);
  out.resize(len);
  return out;
}

ossl::Ptr<EVP_PKEY> decode_public_key(ByteView der) {
  const unsigned char* p = der.data();
  ossl::Ptr<EVP_PKEY> key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!key || p != der.data() + der.size())
    throw Error(ExitCode::verification_failed,
                "the public key is invalid: not a DER SubjectPublicKeyInfo that decodes (malformed, or an EC point off its curve)",
                "pass the key the signer published (kiln key export-public writes it)")
        .with_detail(openssl_errors());
  // The point at infinity (and, for EC, a point outside the prime-order group) verifies signatures
  // that anyone can make: such a key must never be trusted, nor written out as a signer's key.
  ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!ctx || EVP_PKEY_public_check(ctx.get()) != 1)
    throw Error(ExitCode::verification_failed,
                "the public key is invalid (the point at infinity, or a point not in the curve's group)",
                "no genuine key looks like this: replace the key file, and distrust anything it verified")
        .with_detail(openssl_errors());
  return key;
}

void check_private_key(EVP_PKEY* key, std::string_view what) {
  // EVP_PKEY_check: the private scalar is in [1, n-1] and the public half is the one it yields
  // (a PEM may carry any public key next to its private key). An EC scalar of 0 signs with the
  // point at infinity as its public key, which anyone can forge for.
  ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
  if (!ctx || EVP_PKEY_check(ctx.get()) != 1)
    throw Error(ExitCode::verification_failed,
                fmt::format("{} holds an invalid private key (a scalar out of range, or a public key that does not "
                            "belong to it)",
                            what),
                "the file is damaged or crafted: generate a new key with kiln key generate")
        .with_detail(openssl_errors());
}

KeyType public_key_type(ByteView der) {
  auto key = decode_public_key(der);
  switch (EVP_PKEY_get_base_id(key.get())) {
    case EVP_PKEY_ED25519: return KeyType::ed25519;
    case EVP_PKEY_RSA: {
      int bits = EVP_PKEY_get_bits(key.get());
      if (bits == 2048) return KeyType::rsa_2048;
      if (bits == 3072) return KeyType::rsa_3072;
      throw Error(ExitCode::failure, fmt::format("RSA keys of {} bits are not supported", bits),
                  "use rsa-2048 or rsa-3072");
    }
    case EVP_PKEY_EC: {
      char group[64] = {};
      size_t len = 0;
      EVP_PKEY_get_utf8_string_param(key.get(), "group", group, sizeof group, &len);
      std::string_view g(group, len);
      if (g == "prime256v1" || g == "P-256") return KeyType::ecdsa_p256;
      if (g == "secp384r1" || g == "P-384") return KeyType::ecdsa_p384;
      throw Error(ExitCode::failure, fmt::format("EC curve {} is not supported", g),
                  "use ecdsa-p256 or ecdsa-p384");
    }
    default:
      throw Error(ExitCode::failure, "unsupported public key algorithm",
                  "use ecdsa-p256, ecdsa-p384, ed25519, rsa-2048 or rsa-3072");
  }
}

bool verify_signature(ByteView public_key_der, ByteView input, HashAlg hash, ByteView signature) {
  KeyType type = public_key_type(public_key_der);
  auto key = decode_public_key(public_key_der);
  bool ok = false;
  if (type == KeyType::ed25519) {
    ossl::Ptr<EVP_MD_CTX> ctx(EVP_MD_CTX_new());
    ok = EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) == 1 &&
         EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), input.data(), input.size()) == 1;
  } else {
    ossl::Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    ok = ctx && EVP_PKEY_verify_init(ctx.get()) == 1 &&
         EVP_PKEY_CTX_set_signature_md(ctx.get(), ossl::md(hash)) == 1;
    if (ok && is_rsa(type))
      ok = EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_PSS_PADDING) == 1 &&
           EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), static_cast<int>(hash_size(hash))) == 1;
    ok = ok && EVP_PKEY_verify(ctx.get(), signature.data(), signature.size(), input.data(), input.size()) == 1;
  }
  openssl_errors();  // a failed verify leaves entries on the queue; they are not news
  return ok;
}

void check_public_key(ByteView public_key_der) { public_key_type(public_key_der); }

Bytes ecdsa_der_to_raw(ByteView der, std::size_t coordinate_size) {
  const unsigned char* p = der.data();
  ossl::Ptr<ECDSA_SIG> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) throw Error(ExitCode::failure, "malformed DER ECDSA signature").with_detail(openssl_errors());
  Bytes out(coordinate_size * 2);
  const BIGNUM* r = ECDSA_SIG_get0_r(sig.get());
  const BIGNUM* s = ECDSA_SIG_get0_s(sig.get());
  if (BN_bn2binpad(r, out.data(), static_cast<int>(coordinate_size)) < 0 ||
      BN_bn2binpad(s, out.data() + coordinate_size, static_cast<int>(coordinate_size)) < 0)
    throw Error(ExitCode::failure, "ECDSA signature does not fit the curve size");
  return out;
}

Bytes ecdsa_raw_to_der(ByteView raw) {
  if (raw.empty() || raw.size() % 2 != 0)
    throw Error(ExitCode::failure, fmt::format("raw ECDSA signature has odd length {}", raw.size()));
  std::size_t half = raw.size() / 2;
  ossl::Ptr<ECDSA_SIG> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(raw.data(), static_cast<int>(half), nullptr);
  BIGNUM* s = BN_bin2bn(raw.data() + half, static_cast<int>(half), nullptr);
  ECDSA_SIG_set0(sig.get(), r, s);
  int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  Bytes out(static_cast<std::size_t>(len));
  unsigned char* p = out.data();
  i2d_ECDSA_SIG(sig.get(), &p);
  return out;
}

}  // namespace kiln
