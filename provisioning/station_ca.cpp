// Station CA: CSR and attestation checks, device certificates signed through Signer::sign.
#include "provisioning/station_ca.hpp"

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/certificate_builder.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln {

namespace {

struct StoreFree {
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(ASN1_INTEGER* p) const { ASN1_INTEGER_free(p); }
  void operator()(STACK_OF(X509) * p) const { sk_X509_pop_free(p, X509_free); }
};

ossl::Ptr<X509> parse_certificate(ByteView der, const std::string& what) {
  const unsigned char* p = der.data();
  ossl::Ptr<X509> cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) throw Error(ExitCode::failure, fmt::format("{} is not a DER X.509 certificate", what)).with_detail(openssl_errors());
  return cert;
}

ossl::Ptr<EVP_PKEY> parse_public_key(ByteView spki) {
  const unsigned char* p = spki.data();
  ossl::Ptr<EVP_PKEY> key(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  if (!key) throw Error(ExitCode::failure, "not a DER public key").with_detail(openssl_errors());
  return key;
}

// DER of any OpenSSL object with an i2d_* encoder.
template <typename T, typename Encoder>
Bytes to_der(T* object, Encoder encode, const char* what) {
  int len = encode(object, nullptr);
  if (len <= 0) throw Error(ExitCode::failure, fmt::format("cannot encode a {}", what)).with_detail(openssl_errors());
  Bytes out(static_cast<std::size_t>(len));
  unsigned char* p = out.data();
  encode(object, &p);
  return out;
}

Bytes spki_of(EVP_PKEY* key) { return to_der(key, i2d_PUBKEY, "public key"); }

void add_extension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  std::unique_ptr<X509_EXTENSION, StoreFree> ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value));
  if (!ext || !X509_add_ext(cert, ext.get(), -1))
    throw Error(ExitCode::failure, fmt::format("cannot add extension {}={}", OBJ_nid2sn(nid), value))
        .with_detail(openssl_errors());
}

Bytes random_serial() {
  Bytes serial(16);
  if (RAND_bytes(serial.data(), static_cast<int>(serial.size())) != 1) throw Error(ExitCode::failure, "no randomness");
  serial[0] = static_cast<std::uint8_t>((serial[0] & 0x7f) | 0x40);  // positive and a full 16 bytes
  return serial;
}

}  // namespace

Bytes verify_csr(ByteView csr_der) {
  const unsigned char* p = csr_der.data();
  ossl::Ptr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr_der.size())));
  if (!req) throw Error(ExitCode::failure, "the board's CSR is not DER PKCS#10").with_detail(openssl_errors());
  EVP_PKEY* key = X509_REQ_get0_pubkey(req.get());
  if (!key || X509_REQ_verify(req.get(), key) != 1)
    throw Error(ExitCode::verification_failed, "the board's CSR signature does not verify with the key it carries")
        .with_detail(openssl_errors());
  return spki_of(key);
}

IssuedCertificate issue_device_certificate(const Signer& ca, ByteView ca_certificate_der, ByteView device_public_key,
                                           const std::string& uid, const CertificateTemplate& certificate_template) {
  auto scheme = certificate_scheme(ca, "the station CA signs with ECDSA P-256/P-384 or Ed25519 keys");
  auto ca_cert = parse_certificate(ca_certificate_der, "the CA certificate");
  if (spki_of(X509_get0_pubkey(ca_cert.get())) != ca.public_key_der())
    throw Error(ExitCode::usage, fmt::format("CA key {} does not belong to the CA certificate", ca.description()),
                "check ca.key and ca.certificate in the station profile");
  auto device_key = parse_public_key(device_public_key);

  ossl::Ptr<X509> cert(X509_new());
  X509_set_version(cert.get(), 2);
  Bytes serial_bytes = random_serial();
  ossl::Ptr<BIGNUM> serial_bn(BN_bin2bn(serial_bytes.data(), static_cast<int>(serial_bytes.size()), nullptr));
  std::unique_ptr<ASN1_INTEGER, StoreFree> serial(BN_to_ASN1_INTEGER(serial_bn.get(), nullptr));
  X509_set_serialNumber(cert.get(), serial.get());
  X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert.get()));
  X509_NAME* subject = X509_get_subject_name(cert.get());
  auto add_name = [&](const char* field, const std::string& value) {
    if (!X509_NAME_add_entry_by_txt(subject, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.c_str()),
                                    -1, -1, 0))
      throw Error(ExitCode::failure, fmt::format("cannot put {}={} in a certificate subject", field, value));
 };
  add_name("CN", uid);
  if (!certificate_template.organization.empty()) add_name("O", certificate_template.organization);
  // The profile bounds validity_days; this is the last line of defence for any other caller.
  if (certificate_template.validity_days < min_validity_days || certificate_template.validity_days > max_validity_days)
    throw Error(ExitCode::usage, fmt::format("certificate validity of {} days is outside {} to {}",
                                             certificate_template.validity_days, min_validity_days, max_validity_days),
                "set ca.validity_days in the station profile within that range");
  if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0) ||
      !X509_time_adj_ex(X509_getm_notAfter(cert.get()), certificate_template.validity_days, 0, nullptr))
    throw Error(ExitCode::failure, "cannot set the certificate's validity").with_detail(openssl_errors());
  // Never issue a certificate that is valid at no instant (notAfter at or before notBefore).
  int day = 0, second = 0;
  if (!ASN1_TIME_diff(&day, &second, X509_get0_notBefore(cert.get()), X509_get0_notAfter(cert.get())) ||
      day < 0 || second < 0 || (day == 0 && second == 0))
    throw Error(ExitCode::failure,
                fmt::format("refusing to issue a certificate for {} whose notAfter does not follow its notBefore", uid));
  X509_set_pubkey(cert.get(), device_key.get());

  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca_cert.get(), cert.get(), nullptr, nullptr, 0);
  add_extension(cert.get(), &ctx, NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), &ctx, NID_key_usage, "critical,digitalSignature");
  add_extension(cert.get(), &ctx, NID_ext_key_usage, "clientAuth");
  add_extension(cert.get(), &ctx, NID_subject_key_identifier, "hash");
  add_extension(cert.get(), &ctx, NID_authority_key_identifier, "keyid:always");

  sign_certificate(cert.get(), ca, scheme);

  IssuedCertificate issued;
  issued.der = to_der(cert.get(), i2d_X509, "certificate");
  // Never hand out a certificate that does not verify with the CA's own public key.
  auto reparsed = parse_certificate(issued.der, "the issued certificate");
  if (X509_verify(reparsed.get(), X509_get0_pubkey(ca_cert.get())) != 1)
    throw Error(ExitCode::failure, fmt::format("the certificate signed by {} does not verify", ca.description()))
        .with_detail(openssl_errors());
  issued.pem = certificate_pem(issued.der);
  issued.serial_hex = to_hex(serial_bytes);
  return issued;
}

std::string attested_uid(ByteView attestation_certificate_der) {
  auto cert = parse_certificate(attestation_certificate_der, "the board's attestation certificate");
  X509_NAME* subject = X509_get_subject_name(cert.get());
  for (int nid : {NID_serialNumber, NID_commonName}) {
    int index = X509_NAME_get_index_by_NID(subject, nid, -1);
    if (index < 0) continue;
    unsigned char* utf8 = nullptr;
    int length = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
    if (length < 0) continue;
    std::string value(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
    OPENSSL_free(utf8);
    return value;
  }
  return {};
}

namespace {

Bytes attestation_public_key(const BoardIdentity& identity) {
  if (identity.attestation_chain.empty())
    throw Error(ExitCode::verification_failed, fmt::format("board {} sent no attestation certificate", identity.uid));
  auto attestation = parse_certificate(identity.attestation_chain.front(), "the board's attestation certificate");
  return spki_of(X509_get0_pubkey(attestation.get()));
}

bool verifies(ByteView public_key, ByteView message, ByteView signature) {
  if (signature.empty()) return false;
  try {
    return verify_signature(public_key, digest(HashAlg::sha256, message), HashAlg::sha256, signature);
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

void verify_key_attestation(const BoardIdentity& identity, ByteView nonce, ByteView device_public_key,
                            ByteView signature) {
  Bytes statement = attestation_statement(key_statement_label, nonce, identity.uid, device_public_key);
  if (!verifies(attestation_public_key(identity), statement, signature))
    throw Error(ExitCode::verification_failed,
                fmt::format("board {}: its attestation key does not vouch for the device key it reports (this "
                            "station's challenge is not answered for that key)",
                            identity.uid),
                "the key was not made in the attested secure element: a proxy or a counterfeit board; set it aside");
}

void verify_attestation(const BoardIdentity& identity, ByteView vendor_root_der, ByteView nonce) {
  if (identity.attestation_chain.empty())
    throw Error(ExitCode::verification_failed, fmt::format("board {} sent no attestation certificate", identity.uid));
  auto attestation = parse_certificate(identity.attestation_chain.front(), "the board's attestation certificate");
  auto root = parse_certificate(vendor_root_der, "the vendor root");
  std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), root.get());
  std::unique_ptr<STACK_OF(X509), StoreFree> untrusted(sk_X509_new_null());
  for (std::size_t i = 1; i < identity.attestation_chain.size(); ++i)
    sk_X509_push(untrusted.get(), parse_certificate(identity.attestation_chain[i], "an attestation chain certificate").release());
  std::unique_ptr<X509_STORE_CTX, StoreFree> ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store.get(), attestation.get(), untrusted.get());
  if (X509_verify_cert(ctx.get()) != 1)
    throw Error(ExitCode::verification_failed,
                fmt::format("board {}: silicon attestation does not chain to the profile's vendor root: {}", identity.uid,
                            X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))),
                "the board comes from another silicon vendor, or attestation.vendor_root names the wrong root");
  // The UID is what the certificate binds, not whatever the board chooses to report.
  std::string bound = attested_uid(identity.attestation_chain.front());
  if (bound != identity.uid)
    throw Error(ExitCode::verification_failed,
                fmt::format("board {} reports a UID its attestation certificate does not bind (the certificate is "
                            "for '{}')",
                            identity.uid, bound),
                "the board is not the unit it claims to be (cloned or relabelled identity): set it aside");
  Bytes attestation_key = spki_of(X509_get0_pubkey(attestation.get()));
  if (!verifies(attestation_key, identity.transport_key, identity.transport_key_signature))
    throw Error(ExitCode::verification_failed,
                fmt::format("board {}: the transport key is not signed by the board's attestation key", identity.uid));
  // A fresh nonce answered by the attestation key: a captured (replayed) identity answers another one.
  Bytes statement = attestation_statement(identity_statement_label, nonce, identity.uid, identity.transport_key);
  if (identity.attestation_signature.empty())
    throw Error(ExitCode::verification_failed,
                fmt::format("board {} did not answer this station's attestation challenge (no attestation_sig)",
                            identity.uid),
                "the board's firmware predates challenge attestation (docs/board-protocol.md), or a proxy stands "
                "between station and board");
  if (!verifies(attestation_key, statement, identity.attestation_signature))
    throw Error(ExitCode::verification_failed,
                fmt::format("board {}: the attestation signature does not answer this station's challenge: the identity "
                            "was replayed from another session or board",
                            identity.uid),
                "set the board aside: it is not the attested unit it claims to be");
}

bool certificate_matches(ByteView certificate_der, ByteView ca_certificate_der, ByteView device_public_key) {
  try {
    auto cert = parse_certificate(certificate_der, "certificate");
    auto ca = parse_certificate(ca_certificate_der, "CA certificate");
    Bytes key = spki_of(X509_get0_pubkey(cert.get()));
    return X509_NAME_cmp(X509_get_issuer_name(cert.get()), X509_get_subject_name(ca.get())) == 0 &&
           std::equal(key.begin(), key.end(), device_public_key.begin(), device_public_key.end()) &&
           X509_verify(cert.get(), X509_get0_pubkey(ca.get())) == 1;
  } catch (const Error&) {
    return false;
  }
}

std::string certificate_serial_hex(ByteView certificate_der) {
  auto cert = parse_certificate(certificate_der, "certificate");
  ossl::Ptr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
  Bytes bytes(static_cast<std::size_t>(BN_num_bytes(bn.get())));
  BN_bn2bin(bn.get(), bytes.data());
  return to_hex(bytes);
}

std::string certificate_pem(ByteView der) {
  return certificate_pem(parse_certificate(der, "certificate").get());
}

std::string public_key_pem(ByteView spki_der) {
  auto key = parse_public_key(spki_der);
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key.get());
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

Bytes read_certificate_file(const std::string& path) {
  Bytes content = read_file(path);
  std::string_view text(reinterpret_cast<const char*>(content.data()), content.size());
  if (text.find("-----BEGIN CERTIFICATE-----") == std::string_view::npos) {
    parse_certificate(content, path);
    return content;
  }
  try {
    return certificate_der_from_pem(std::string(text));
  } catch (const Error& e) {
    throw Error(ExitCode::failure, fmt::format("{} holds no readable certificate", path)).with_detail(e.detail());
  }
}

Bytes certificate_der_from_pem(const std::string& pem) {
  ossl::Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  ossl::Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) throw Error(ExitCode::failure, "no PEM certificate").with_detail(openssl_errors());
  return to_der(cert.get(), i2d_X509, "certificate");
}

}  // namespace kiln
