// Throwaway X.509 material for tests: a CA, and device certificates it issues (OpenSSL, EC P-256).
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace kiln::test {

struct OpenSslFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
};

inline std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(len));
}

struct TestKey {
  std::unique_ptr<EVP_PKEY, OpenSslFree> key{EVP_EC_gen("P-256")};
  std::string private_pem() const {
    std::unique_ptr<BIO, OpenSslFree> bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    return bio_text(bio.get());
  }
  std::string public_pem() const {
    std::unique_ptr<BIO, OpenSslFree> bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PUBKEY(bio.get(), key.get());
    return bio_text(bio.get());
  }
};

inline std::string certificate_pem(X509* cert) {
  std::unique_ptr<BIO, OpenSslFree> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  return bio_text(bio.get());
}

// A certificate for `subject` named `common_name`, signed by `issuer` (nullptr: self-signed CA).
inline std::string issue_certificate(const TestKey& subject, const std::string& common_name, X509* issuer_cert,
                                     const TestKey& issuer_key, bool ca, X509** out_cert = nullptr) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), static_cast<long>(std::hash<std::string>{}(common_name) & 0x7fffffff));
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
  X509_set_pubkey(cert, subject.key.get());
  X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert ? issuer_cert : cert));
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer_cert ? issuer_cert : cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
  if (!ca) {
    ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_ext_key_usage, "clientAuth");
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  if (X509_sign(cert, issuer_key.key.get(), EVP_sha256()) <= 0) throw std::runtime_error("X509_sign failed");
  std::string pem = certificate_pem(cert);
  if (out_cert) *out_cert = cert;
  else X509_free(cert);
  return pem;
}

// A CA that issues device certificates.
struct TestCa {
  TestKey key;
  X509* cert = nullptr;
  std::string pem;
  explicit TestCa(const std::string& name) { pem = issue_certificate(key, name, nullptr, key, true, &cert); }
  ~TestCa() { X509_free(cert); }
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;
  std::string issue(const TestKey& device, const std::string& uid) const {
    return issue_certificate(device, uid, cert, key, false);
  }
};

// The public half of a PEM private key file, as a PEM SubjectPublicKeyInfo.
inline std::string public_key_pem_of_file(const std::string& key_file) {
  std::unique_ptr<BIO, OpenSslFree> in(BIO_new_file(key_file.c_str(), "r"));
  std::unique_ptr<EVP_PKEY, OpenSslFree> key(in ? PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) throw std::runtime_error("cannot read private key " + key_file);
  std::unique_ptr<BIO, OpenSslFree> out(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(out.get(), key.get());
  return bio_text(out.get());
}

inline std::string pem_to_der(const std::string& pem) {
  std::unique_ptr<BIO, OpenSslFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::unique_ptr<X509, OpenSslFree> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  int len = i2d_X509(cert.get(), nullptr);
  std::string der(static_cast<std::size_t>(len), '\0');
  auto* p = reinterpret_cast<unsigned char*>(der.data());
  i2d_X509(cert.get(), &p);
  return der;
}

inline std::string hex_of(const unsigned char* data, std::size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 15]);
  }
  return out;
}

inline std::string hex_of(const std::string& bytes) {
  return hex_of(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

// `key`'s DER ECDSA signature over the SHA-256 of `message`; `digest`, when given, receives that SHA-256.
inline std::string sign_sha256(const TestKey& key, const std::string& message, std::string* digest = nullptr) {
  unsigned char md[32];
  unsigned int md_len = 0;
  EVP_Digest(message.data(), message.size(), md, &md_len, EVP_sha256(), nullptr);
  struct CtxFree {
    void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
  };
  std::unique_ptr<EVP_PKEY_CTX, CtxFree> ctx(EVP_PKEY_CTX_new(key.key.get(), nullptr));
  std::size_t sig_len = 0;
  if (EVP_PKEY_sign_init(ctx.get()) <= 0 || EVP_PKEY_sign(ctx.get(), nullptr, &sig_len, md, md_len) <= 0)
    throw std::runtime_error("EVP_PKEY_sign failed");
  std::string sig(sig_len, '\0');
  EVP_PKEY_sign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len, md, md_len);
  sig.resize(sig_len);
  if (digest) digest->assign(reinterpret_cast<const char*>(md), md_len);
  return sig;
}

// Hex of `key`'s signature over `message` as kiln signs service challenges: DER ECDSA over its SHA-256.
inline std::string sign_message_hex(const TestKey& key, const std::string& message) {
  return hex_of(sign_sha256(key, message));
}

// The body of POST /v1/factory-cas registering `ca`, answering the service's challenge (the JSON text
// POST /v1/factory-cas/challenge returned) with a signature by `signer` (default: the CA's own key).
inline std::string factory_ca_registration(const TestCa& ca, const std::string& challenge_json, bool stations = false,
                                           const TestKey* signer = nullptr) {
  auto challenge = nlohmann::json::parse(challenge_json);
  return nlohmann::json{{"certificate", ca.pem},
                        {"stations", stations},
                        {"nonce", challenge.at("nonce")},
                        {"signature", sign_message_hex(signer ? *signer : ca.key, challenge.at("message").get<std::string>())}}
      .dump();
}

// `units` (JSON lines) followed by the signed trailer `kiln factory ledger export` writes
// (docs/ledger-bundle.md), signed by `station` (ECDSA P-256 over the SHA-256 of the unit bytes).
inline std::string signed_bundle(const std::string& units, const TestKey& station) {
  std::string digest;
  std::string sig = sign_sha256(station, units, &digest);
  std::size_t count = 0;
  for (std::size_t start = 0; start < units.size();) {
    auto end = units.find('\n', start);
    if (end == std::string::npos) end = units.size();
    if (units.find_first_not_of(" \t\r", start) < end) ++count;
    start = end + 1;
  }
  nlohmann::ordered_json trailer{{"bundle_signature", hex_of(sig)},
                                 {"algorithm", "ecdsa-p256-sha256"},
                                 {"bundle_sha256", hex_of(digest)},
                                 {"units", count},
                                 {"station_public_key", station.public_pem()}};
  std::string out = units;
  out.append(trailer.dump());
  out.push_back('\n');
  return out;
}

}  // namespace kiln::test
