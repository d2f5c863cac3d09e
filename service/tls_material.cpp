// CA and server certificate generation with OpenSSL X509 APIs (EC P-256, SHA-256, 10 years / 2 years).
#include "service/tls_material.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <string>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "signing/certificate_builder.hpp"
#include "signing/openssl_ptr.hpp"

namespace kiln::service {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Error(ExitCode::failure, "cannot create TLS material: " + what).with_detail(openssl_errors());
}

ossl::Ptr<EVP_PKEY> new_key() {
  ossl::Ptr<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) fail("EC key generation");
  return key;
}


ossl::Ptr<X509> new_certificate(EVP_PKEY* subject_key, const char* common_name, X509* issuer, EVP_PKEY* issuer_key,
                                 long days, bool ca) {
  auto cert = start_certificate(subject_key, "kiln-service", common_name, issuer, days * 24 * 3600);
  X509* signer = issuer ? issuer : cert.get();
  if (ca) {
    add_x509_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    add_x509_extension(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_x509_extension(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_x509_extension(cert.get(), signer, NID_key_usage, "critical,digitalSignature");
    add_x509_extension(cert.get(), signer, NID_ext_key_usage, "serverAuth");
    add_x509_extension(cert.get(), signer, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
  }
  add_x509_extension(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (X509_sign(cert.get(), issuer_key, EVP_sha256()) <= 0) fail("certificate signing");
  return cert;
}

std::string pem_of(EVP_PKEY* key) {
  ossl::Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

}  // namespace

void create_tls_material(const std::filesystem::path& dir) {
  auto ca_key = new_key();
  // A unique CA name per installation: two services' CAs must never be mistaken for each other.
  unsigned char id[4];
  RAND_bytes(id, sizeof id);
  std::string ca_name = "kiln-service CA " + to_hex(ByteView(id, sizeof id));
  auto ca = new_certificate(ca_key.get(), ca_name.c_str(), nullptr, ca_key.get(), 3650, true);
  auto server_key = new_key();
  auto server = new_certificate(server_key.get(), "localhost", ca.get(), ca_key.get(), 730, false);
  auto refuse = AtomicFile::Overwrite::refuse;
  write_file_atomic(dir / "ca.key", as_bytes(pem_of(ca_key.get())), 0600, refuse);
  write_file_atomic(dir / "ca.pem", as_bytes(certificate_pem(ca.get())), 0644, refuse);
  write_file_atomic(dir / "server.key", as_bytes(pem_of(server_key.get())), 0600, refuse);
  write_file_atomic(dir / "server.pem", as_bytes(certificate_pem(server.get())), 0644, refuse);
}

}  // namespace kiln::service
