// X.509 v3 certificates signed through Signer::sign: the TBSCertificate is encoded by OpenSSL, signed by
// the Signer (file or token key), and the result checked with the issuer's public key.
#include "signing/certificate_create.hpp"

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "signing/certificate_builder.hpp"
#include "signing/key_export.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {
namespace {

ossl::Ptr<X509> parse(ByteView der, const std::string& what) {
  const unsigned char* p = der.data();
  ossl::Ptr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert || p != der.data() + der.size())
    throw Error(ExitCode::failure, fmt::format("{} is not an X.509 certificate", what)).with_detail(openssl_errors());
  return cert;
}

Bytes der_of(X509* cert) {
  int n = i2d_X509(cert, nullptr);
  if (n <= 0) throw Error(ExitCode::failure, "cannot encode the certificate").with_detail(openssl_errors());
  Bytes out(static_cast<std::size_t>(n));
  unsigned char* p = out.data();
  i2d_X509(cert, &p);
  return out;
}

void set_subject(X509_NAME* name, const std::string& subject) {
  if (subject.size() < 2 || subject[0] != '/')
    throw Error(ExitCode::usage, fmt::format("subject '{}' is not in the form /CN=NAME[/O=ORG...]", subject),
                "write it as OpenSSL does, e.g. \"/CN=Station CA/O=Example\"");
  std::size_t pos = 1;
  while (pos <= subject.size()) {
    std::size_t next = subject.find('/', pos);
    std::string part = subject.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    auto eq = part.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == part.size())
      throw Error(ExitCode::usage, fmt::format("subject part '{}' is not FIELD=VALUE", part),
                  "write it as OpenSSL does, e.g. \"/CN=Station CA/O=Example\"");
    std::string field = part.substr(0, eq), value = part.substr(eq + 1);
    if (!X509_NAME_add_entry_by_txt(name, field.c_str(), MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0)) {
      openssl_errors();
      throw Error(ExitCode::usage, fmt::format("'{}' is not a subject field kiln knows (CN, O, OU, C, ST, L...)", field));
    }
    if (next == std::string::npos) break;
    pos = next + 1;
  }
}

std::string name_text(const X509_NAME* name) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

std::string time_text(const ASN1_TIME* t) {
  struct tm tm {};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "";
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec);
}

}  // namespace

Bytes create_certificate(const CertificateRequest& request, const Signer& signer,
                         const std::optional<Bytes>& issuer_certificate_der) {
  auto scheme = certificate_scheme(signer, "kiln cert signs with ECDSA P-256/P-384 or Ed25519 keys");
  if (request.days < 1 || request.days > 36500)
    throw Error(ExitCode::usage, fmt::format("--days {} is outside 1 to 36500", request.days));
  ossl::Ptr<EVP_PKEY> subject_key = decode_public_key(request.subject_public_key);
  ossl::Ptr<X509> issuer;
  if (issuer_certificate_der) {
    issuer = parse(*issuer_certificate_der, "the issuer certificate");
    if (spki_der(X509_get0_pubkey(issuer.get())) != signer.public_key_der())
      throw Error(ExitCode::verification_failed,
                  fmt::format("{} is not the key of the issuer certificate", signer.description()),
                  "pass the issuer certificate's own key with --issuer-key");
    if (X509_check_ca(issuer.get()) == 0)
      throw Error(ExitCode::verification_failed, "the issuer certificate is not a CA (basicConstraints CA:FALSE)",
                  "issue from a certificate made with --ca");
  } else if (signer.public_key_der() != request.subject_public_key) {
    throw Error(ExitCode::usage, "a self-signed certificate is signed by its own key",
                "drop --issuer-key, or pass --issuer-cert for an issued certificate");
  }

  ossl::Ptr<X509> cert(X509_new());
  Bytes serial(16);
  if (!cert || RAND_bytes(serial.data(), 16) != 1) throw Error(ExitCode::failure, "cannot start a certificate");
  serial[0] = static_cast<std::uint8_t>((serial[0] & 0x7f) | 0x40);
  X509_set_version(cert.get(), 2);
  ossl::Ptr<BIGNUM> bn(BN_bin2bn(serial.data(), 16, nullptr));
  BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()));
  set_subject(X509_get_subject_name(cert.get()), request.subject);
  X509_set_issuer_name(cert.get(), issuer ? X509_get_subject_name(issuer.get()) : X509_get_subject_name(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
  X509_time_adj_ex(X509_getm_notAfter(cert.get()), request.days, 0, nullptr);
  X509_set_pubkey(cert.get(), subject_key.get());
  X509* issuer_for_ext = issuer ? issuer.get() : cert.get();
  add_x509_extension(cert.get(), issuer_for_ext, NID_basic_constraints, request.ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
  add_x509_extension(cert.get(), issuer_for_ext, NID_key_usage,
                     request.ca ? "critical,keyCertSign,cRLSign,digitalSignature" : "critical,digitalSignature");
  add_x509_extension(cert.get(), issuer_for_ext, NID_subject_key_identifier, "hash");
  if (issuer) add_x509_extension(cert.get(), issuer_for_ext, NID_authority_key_identifier, "keyid:always");

  sign_certificate(cert.get(), signer, scheme);

  Bytes der = der_of(cert.get());
  auto reparsed = parse(der, "the new certificate");
  EVP_PKEY* verify_key = issuer ? X509_get0_pubkey(issuer.get()) : subject_key.get();
  if (X509_verify(reparsed.get(), verify_key) != 1)
    throw Error(ExitCode::failure, fmt::format("the certificate signed by {} does not verify", signer.description()))
        .with_detail(openssl_errors());
  return der;
}

Bytes certificate_der_from_file_bytes(ByteView bytes, const std::string& what) {
  std::string text(bytes.begin(), bytes.end());
  if (text.find("-----BEGIN CERTIFICATE-----") != std::string::npos) {
    ossl::Ptr<BIO> bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    ossl::Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) throw Error(ExitCode::failure, fmt::format("{} holds a damaged PEM certificate", what)).with_detail(openssl_errors());
    return der_of(cert.get());
  }
  parse(bytes, what);
  return Bytes(bytes.begin(), bytes.end());
}

CertificateInfo describe_certificate(ByteView der) {
  auto cert = parse(der, "the certificate");
  CertificateInfo info;
  info.subject = name_text(X509_get_subject_name(cert.get()));
  info.issuer = name_text(X509_get_issuer_name(cert.get()));
  ossl::Ptr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  char* hex = BN_bn2hex(bn.get());
  info.serial_hex = hex ? hex : "";
  OPENSSL_free(hex);
  info.not_before = time_text(X509_get0_notBefore(cert.get()));
  info.not_after = time_text(X509_get0_notAfter(cert.get()));
  info.ca = X509_check_ca(cert.get()) != 0;
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (!key) throw Error(ExitCode::verification_failed, "the certificate's public key is malformed");
  info.public_key_der = spki_der(key);
  info.key_type = public_key_type(info.public_key_der);
  info.fingerprint = to_hex(digest(HashAlg::sha256, der));
  info.self_signed = X509_NAME_cmp(X509_get_subject_name(cert.get()), X509_get_issuer_name(cert.get())) == 0;
  if (info.self_signed) info.self_signature_ok = X509_verify(cert.get(), key) == 1;
  openssl_errors();
  return info;
}

std::string certificate_to_pem(ByteView der) {
  auto cert = parse(der, "the certificate");
  return certificate_pem(cert.get());
}

}  // namespace kiln
