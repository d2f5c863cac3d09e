// Tests for service/tls_material: the generated CA and server certificate (a server certificate for 127.0.0.1 and
// localhost that chains to the CA, keys 0600, never overwritten), the server credentials presented in real TLS
// handshakes (in memory, OpenSSL on both ends) and replaced by reload, a key that is not the certificate's refused,
// and session tickets issued sparingly.
#include <doctest/doctest.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <filesystem>
#include <memory>
#include <string>

#include "core/error.hpp"
#include "core/files.hpp"
#include "service/session_cache.hpp"
#include "service/tls_material.hpp"
#include "signing/openssl_ptr.hpp"
#include "tests/support/errors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

ossl::Ptr<X509> read_certificate(const fs::path& file) {
  ossl::Ptr<BIO> bio(BIO_new_file(file.c_str(), "r"));
  REQUIRE(bio);
  ossl::Ptr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  return cert;
}

// Whether `cert` chains to `ca` for a TLS server named `host` (a DNS name or an IP address).
bool verifies_as_server(X509* cert, X509* ca, const std::string& host) {
  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), X509_STORE_free);
  X509_STORE_add_cert(store.get(), ca);
  std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), X509_STORE_CTX_free);
  REQUIRE(X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr) == 1);
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_SERVER);
  auto* param = X509_STORE_CTX_get0_param(ctx.get());
  if (host.find_first_not_of("0123456789.") == std::string::npos)
    X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  else
    X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
  return X509_verify_cert(ctx.get()) == 1;
}

fs::perms mode_of(const fs::path& file) { return fs::status(file).permissions() & fs::perms::all; }

// Session tickets a client context received (its new-session callback), and those the server made.
int tickets_received = 0;
int tickets_made = 0;
int on_ticket_made(SSL* /*ssl*/, void* /*arg*/) {
  ++tickets_made;
  return 1;
}
// The agent listener's generate-ticket callback with --session-cache: the cache decides the ticket's kind.
int on_ticket_made_with_cache(SSL* ssl, void* arg) {
  service::SessionCache::issue_stateful(ssl);
  return on_ticket_made(ssl, arg);
}
ossl::Ptr<SSL_SESSION> last_ticket;
int on_new_session(SSL* /*ssl*/, SSL_SESSION* session) {
  ++tickets_received;
  last_ticket.reset(session);  // returning 1: the reference is ours
  return 1;
}

// The ticket a client holds: a stateful one is the 32-byte ID of a session the server keeps.
std::size_t ticket_length(SSL_SESSION* session) {
  const unsigned char* ticket = nullptr;
  std::size_t length = 0;
  SSL_SESSION_get0_ticket(session, &ticket, &length);
  return length;
}

// A client that trusts `ca_file` and checks the name localhost; it counts the tickets it gets when asked.
ossl::Ptr<SSL_CTX> client_context(const fs::path& ca_file, bool count_tickets = false) {
  ossl::Ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_client_method()));
  REQUIRE(SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) == 1);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (count_tickets) {
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx.get(), on_new_session);
  }
  return ctx;
}

struct Connection {
  ossl::Ptr<SSL> client, server;
};

// A TLS handshake between the two contexts over an in-memory BIO pair (resuming `session` when given), and the
// client reading what the server sent after it (its session tickets).
Connection handshake(SSL_CTX* server_ctx, SSL_CTX* client_ctx, SSL_SESSION* session = nullptr) {
  Connection c{ossl::Ptr<SSL>(SSL_new(client_ctx)), ossl::Ptr<SSL>(SSL_new(server_ctx))};
  BIO* client_end = nullptr;
  BIO* server_end = nullptr;
  REQUIRE(BIO_new_bio_pair(&client_end, 0, &server_end, 0) == 1);
  SSL_set_bio(c.client.get(), client_end, client_end);
  SSL_set_bio(c.server.get(), server_end, server_end);
  SSL_set_connect_state(c.client.get());
  SSL_set_accept_state(c.server.get());
  REQUIRE(SSL_set1_host(c.client.get(), "localhost") == 1);
  if (session) REQUIRE(SSL_set_session(c.client.get(), session) == 1);
  bool client_done = false, server_done = false;
  for (int round = 0; round < 10 && !(client_done && server_done); ++round) {
    for (auto [ssl, done] : {std::pair{c.client.get(), &client_done}, std::pair{c.server.get(), &server_done}}) {
      if (*done) continue;
      int r = SSL_do_handshake(ssl);
      if (r == 1)
        *done = true;
      else
        REQUIRE(SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ);
    }
  }
  REQUIRE(client_done);
  REQUIRE(server_done);
  char byte = 0;
  CHECK(SSL_read(c.client.get(), &byte, 1) <= 0);  // nothing but tickets to read
  return c;
}

// The server's certificate as the client saw it in the handshake, after the client verified it.
X509* presented(const Connection& c) {
  CHECK(SSL_get_verify_result(c.client.get()) == X509_V_OK);
  X509* peer = SSL_get0_peer_certificate(c.client.get());
  REQUIRE(peer);
  return peer;
}

ossl::Ptr<SSL_CTX> server_context(service::ServerCredentials& credentials) {
  ossl::Ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()));
  credentials.attach(ctx.get());
  return ctx;
}

}  // namespace

TEST_CASE("tls_material: a CA and a server certificate for 127.0.0.1 and localhost chained to it; keys 0600") {
  test::TempDir dir;
  service::create_tls_material(dir.path());
  CHECK(mode_of(dir.path() / "ca.key") == (fs::perms::owner_read | fs::perms::owner_write));
  CHECK(mode_of(dir.path() / "server.key") == (fs::perms::owner_read | fs::perms::owner_write));
  CHECK((mode_of(dir.path() / "ca.pem") & fs::perms::others_read) != fs::perms::none);
  auto ca = read_certificate(dir.path() / "ca.pem");
  auto server = read_certificate(dir.path() / "server.pem");
  CHECK(verifies_as_server(server.get(), ca.get(), "localhost"));
  CHECK(verifies_as_server(server.get(), ca.get(), "127.0.0.1"));
  CHECK_FALSE(verifies_as_server(server.get(), ca.get(), "example.com"));
  CHECK_FALSE(verifies_as_server(server.get(), ca.get(), "10.0.0.1"));
  CHECK(X509_check_ca(ca.get()) == 1);
  CHECK(X509_check_ca(server.get()) == 0);

  // Another installation's CA has another name: the two are never mistaken for each other, and its server
  // certificate does not chain to this CA.
  test::TempDir other;
  service::create_tls_material(other.path());
  auto other_ca = read_certificate(other.path() / "ca.pem");
  CHECK(X509_NAME_cmp(X509_get_subject_name(ca.get()), X509_get_subject_name(other_ca.get())) != 0);
  CHECK_FALSE(verifies_as_server(read_certificate(other.path() / "server.pem").get(), ca.get(), "localhost"));

  // Existing material is never replaced.
  auto before = read_file(dir.path() / "ca.key");
  CHECK(test::exit_code_of([&] { service::create_tls_material(dir.path()); }) == ExitCode::conflict);
  CHECK(read_file(dir.path() / "ca.key") == before);
}

TEST_CASE("tls_material: the server presents its pair in a real handshake, and the next handshake after reload the new one") {
  test::TempDir dir, next;
  service::create_tls_material(dir.path());
  service::create_tls_material(next.path());
  service::ServerCredentials credentials(dir.path() / "server.pem", dir.path() / "server.key");
  CHECK(credentials.certificate_file() == dir.path() / "server.pem");
  auto server_ctx = server_context(credentials);
  auto client_ctx = client_context(dir.path() / "ca.pem");
  auto original = read_certificate(dir.path() / "server.pem");
  auto first = handshake(server_ctx.get(), client_ctx.get());
  CHECK(X509_cmp(presented(first), original.get()) == 0);

  // A renewed pair (from another CA, which a new client trusts) replaces the files; reload takes it.
  fs::copy_file(next.path() / "server.pem", dir.path() / "server.pem", fs::copy_options::overwrite_existing);
  fs::copy_file(next.path() / "server.key", dir.path() / "server.key", fs::copy_options::overwrite_existing);
  fs::copy_file(next.path() / "ca.pem", dir.path() / "ca.pem", fs::copy_options::overwrite_existing);
  credentials.reload();
  auto renewed_client = client_context(dir.path() / "ca.pem");
  auto second = handshake(server_ctx.get(), renewed_client.get());
  CHECK(X509_cmp(presented(second), read_certificate(next.path() / "server.pem").get()) == 0);
  // The connection made before keeps its certificate.
  CHECK(X509_cmp(SSL_get0_peer_certificate(first.client.get()), original.get()) == 0);

  // A reload that fails (a key from another pair) throws and leaves the current pair in use.
  fs::copy_file(next.path() / "ca.key", dir.path() / "server.key", fs::copy_options::overwrite_existing);
  CHECK_THROWS_WITH_AS(credentials.reload(), doctest::Contains("does not belong to the certificate"), Error);
  auto third = handshake(server_ctx.get(), renewed_client.get());
  CHECK(X509_cmp(presented(third), read_certificate(next.path() / "server.pem").get()) == 0);
}

TEST_CASE("tls_material: a key that is not the certificate's, or a missing file, is refused naming the file") {
  test::TempDir dir;
  service::create_tls_material(dir.path());
  CHECK_THROWS_WITH_AS(service::ServerCredentials(dir.path() / "server.pem", dir.path() / "ca.key"),
                       doctest::Contains(("the TLS key " + (dir.path() / "ca.key").string() + " does not belong to the certificate " +
                                          (dir.path() / "server.pem").string())
                                             .c_str()),
                       Error);
  CHECK_THROWS_WITH_AS(service::ServerCredentials(dir.path() / "absent.pem", dir.path() / "server.key"),
                       doctest::Contains(("cannot load the TLS certificate from " + (dir.path() / "absent.pem").string()).c_str()),
                       Error);
  CHECK_THROWS_WITH_AS(service::ServerCredentials(dir.path() / "server.pem", dir.path() / "server.pem"),
                       doctest::Contains("cannot load the TLS key"), Error);
}

TEST_CASE("tls_material: one session ticket after a full handshake, none when a young ticket resumes") {
  test::TempDir dir;
  service::create_tls_material(dir.path());
  service::ServerCredentials credentials(dir.path() / "server.pem", dir.path() / "server.key");
  auto server_ctx = server_context(credentials);
  service::issue_tickets_sparingly(server_ctx.get(), on_ticket_made);
  auto client_ctx = client_context(dir.path() / "ca.pem", true);
  tickets_received = 0;
  tickets_made = 0;
  auto full = handshake(server_ctx.get(), client_ctx.get());
  CHECK_FALSE(SSL_session_reused(full.client.get()));
  CHECK(tickets_received == 1);
  CHECK(tickets_made == 1);
  REQUIRE(last_ticket);
  ossl::Ptr<SSL_SESSION> ticket(last_ticket.release());

  auto resumed = handshake(server_ctx.get(), client_ctx.get(), ticket.get());
  CHECK(SSL_session_reused(resumed.client.get()));
  CHECK(tickets_received == 1);
  CHECK(tickets_made == 1);
  last_ticket.reset();
}

// --session-cache: a stateless ticket is swapped for a stateful one when the cache has room for it. A full cache
// would only seal another stateless ticket, so a young ticket resumes without one (the age rule), as without a cache.
TEST_CASE("tls_material: with a full session cache a young stateless ticket resumes without a new ticket") {
  test::TempDir dir;
  service::create_tls_material(dir.path());
  service::ServerCredentials credentials(dir.path() / "server.pem", dir.path() / "server.key");
  service::SessionCache cache(1);  // outlives the context whose callbacks use it
  auto server_ctx = server_context(credentials);
  service::issue_tickets_sparingly(server_ctx.get(), on_ticket_made_with_cache);
  cache.attach(server_ctx.get());
  auto client_ctx = client_context(dir.path() / "ca.pem", true);
  tickets_received = 0;
  tickets_made = 0;
  // Each connection lives to the end: one freed without its close_notify makes the client's session unresumable.
  auto first = handshake(server_ctx.get(), client_ctx.get());
  REQUIRE(last_ticket);
  ossl::Ptr<SSL_SESSION> stateful(last_ticket.release());
  CHECK(ticket_length(stateful.get()) == SSL_MAX_SSL_SESSION_ID_LENGTH);
  CHECK(cache.size() == 1);
  auto second = handshake(server_ctx.get(), client_ctx.get());  // the cache is full: a stateless ticket
  REQUIRE(last_ticket);
  ossl::Ptr<SSL_SESSION> stateless(last_ticket.release());
  CHECK(ticket_length(stateless.get()) > SSL_MAX_SSL_SESSION_ID_LENGTH);
  auto third = handshake(server_ctx.get(), client_ctx.get());  // and another, offered once room is back
  REQUIRE(last_ticket);
  ossl::Ptr<SSL_SESSION> later(last_ticket.release());
  CHECK(ticket_length(later.get()) > SSL_MAX_SSL_SESSION_ID_LENGTH);
  CHECK(tickets_made == 3);

  auto resumed = handshake(server_ctx.get(), client_ctx.get(), stateless.get());
  CHECK(SSL_session_reused(resumed.client.get()));
  CHECK(tickets_made == 3);
  CHECK(tickets_received == 3);

  // Room again (the kept session resumed elsewhere, say): the stateless ticket is swapped for a stateful one.
  const unsigned char* id = nullptr;
  std::size_t id_length = 0;
  SSL_SESSION_get0_ticket(stateful.get(), &id, &id_length);
  SSL_SESSION* taken = cache.take(std::string(reinterpret_cast<const char*>(id), id_length));
  REQUIRE(taken);
  SSL_SESSION_free(taken);
  auto swapped = handshake(server_ctx.get(), client_ctx.get(), later.get());
  CHECK(SSL_session_reused(swapped.client.get()));
  CHECK(tickets_made == 4);
  REQUIRE(last_ticket);
  CHECK(ticket_length(last_ticket.get()) == SSL_MAX_SSL_SESSION_ID_LENGTH);
  CHECK(cache.size() == 1);
  last_ticket.reset();
}
