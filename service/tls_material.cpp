// CA and server certificate generation with OpenSSL X509 APIs (EC P-256, SHA-256, 10 years / 2 years).
#include "service/tls_material.hpp"


#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <ctime>
#include <string>

#include "core/bytes.hpp"
#include "core/error.hpp"
#include "core/files.hpp"
#include "service/session_cache.hpp"
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

struct ServerCredentials::Pair {
  ossl::Ptr<X509> certificate;
  ossl::Ptr<EVP_PKEY> key;
  STACK_OF(X509)* chain = sk_X509_new_null();
  ~Pair() { sk_X509_pop_free(chain, X509_free); }
};

namespace {

std::shared_ptr<const ServerCredentials::Pair> load_pair(const std::filesystem::path& certificate_file,
                                                         const std::filesystem::path& key_file) {
  auto unreadable = [](const std::filesystem::path& file, const char* what) {
    return Error(ExitCode::failure, "cannot load the TLS " + std::string(what) + " from " + file.string())
        .with_detail(openssl_errors());
  };
  auto pair = std::make_shared<ServerCredentials::Pair>();
  ossl::Ptr<BIO> certificates(BIO_new_file(certificate_file.c_str(), "r"));
  if (!certificates) throw unreadable(certificate_file, "certificate");
  pair->certificate.reset(PEM_read_bio_X509(certificates.get(), nullptr, nullptr, nullptr));
  if (!pair->certificate) throw unreadable(certificate_file, "certificate");
  // Intermediate certificates may follow the server's own in the same file.
  while (X509* next = PEM_read_bio_X509(certificates.get(), nullptr, nullptr, nullptr)) sk_X509_push(pair->chain, next);
  ERR_clear_error();  // the loop ends on "no start line"
  ossl::Ptr<BIO> key(BIO_new_file(key_file.c_str(), "r"));
  if (!key) throw unreadable(key_file, "key");
  // An empty passphrase callback: a key that wants one fails here instead of prompting.
  pair->key.reset(PEM_read_bio_PrivateKey(key.get(), nullptr, [](char*, int, int, void*) { return 0; }, nullptr));
  if (!pair->key) throw unreadable(key_file, "key (an unencrypted PEM key)");
  if (X509_check_private_key(pair->certificate.get(), pair->key.get()) != 1)
    throw Error(ExitCode::failure, "the TLS key " + key_file.string() + " does not belong to the certificate " +
                                       certificate_file.string())
        .with_detail(openssl_errors());
  return pair;
}

}  // namespace

ServerCredentials::ServerCredentials(std::filesystem::path certificate, std::filesystem::path key)
    : certificate_file_(std::move(certificate)), key_file_(std::move(key)), current_(load_pair(certificate_file_, key_file_)) {}

ServerCredentials::~ServerCredentials() = default;

void ServerCredentials::reload() {
  auto fresh = load_pair(certificate_file_, key_file_);
  std::lock_guard lock(mutex_);
  current_ = std::move(fresh);
}

std::shared_ptr<const ServerCredentials::Pair> ServerCredentials::current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

int ServerCredentials::on_handshake(SSL* ssl, void* self) {
  auto pair = static_cast<ServerCredentials*>(self)->current();
  // SSL_use_cert_and_key takes its own references: the pair may be replaced while this connection lives.
  return SSL_use_cert_and_key(ssl, pair->certificate.get(), pair->key.get(), pair->chain, 1) == 1 ? 1 : 0;
}

void ServerCredentials::attach(SSL_CTX* ctx) { SSL_CTX_set_cert_cb(ctx, &ServerCredentials::on_handshake, this); }

namespace {

SSL_TICKET_RETURN on_ticket(SSL* ssl, SSL_SESSION* session, const unsigned char* /*key_name*/,
                            std::size_t /*key_name_length*/, SSL_TICKET_STATUS status, void* /*arg*/) {
  switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW: {
      // The session's time is when its ticket was issued (a renewed ticket restarts it). OpenSSL asks to renew
      // every TLS 1.3 ticket (SUCCESS_RENEW): the age decides instead.
      auto age = static_cast<long>(time(nullptr) - SSL_SESSION_get_time(session));
      // A listener that keeps sessions (--session-cache) swaps the ticket for a stateful one at once, when it has
      // room for one: a full cache would only seal another stateless ticket, at the cost the age rule avoids.
      // (Only stateless tickets come here: a stateful one is looked up in the cache, used once, and its
      // resumption issues the next whatever this callback says.)
      if (age >= SSL_SESSION_get_timeout(session) / 2 || SessionCache::has_room_for(ssl))
        return SSL_TICKET_RETURN_USE_RENEW;
      SSL_set_num_tickets(ssl, 0);
      return SSL_TICKET_RETURN_USE;
    }
    default:  // no ticket, or one this instance cannot open: a full handshake, and a new ticket after it
      return SSL_TICKET_RETURN_IGNORE_RENEW;
  }
}

}  // namespace

void issue_tickets_sparingly(SSL_CTX* ctx, SSL_CTX_generate_session_ticket_fn on_new_ticket) {
  SSL_CTX_set_num_tickets(ctx, 1);
  SSL_CTX_set_session_ticket_cb(ctx, on_new_ticket, &on_ticket, nullptr);
}

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
