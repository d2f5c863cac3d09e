// TLS material for kiln-service: a private CA and a server certificate for 127.0.0.1 and localhost.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>

#include <openssl/ssl.h>

namespace kiln::service {

// Writes ca.pem, ca.key (0600), server.pem, server.key (0600) into dir.
void create_tls_material(const std::filesystem::path& dir);

// Session tickets as fresh-connection check-ins need them (docs/operations.md): one ticket after a full
// handshake, and a resumed connection gets a new one only once its ticket is past half its lifetime. With
// OpenSSL 3.0 issuing a ticket costs as much as opening one (the session, its client certificate included,
// is encoded and decoded again), so a device polling with a young ticket keeps using it.
void issue_tickets_sparingly(SSL_CTX* ctx, SSL_CTX_generate_session_ticket_fn on_new_ticket = nullptr);

// The server certificate (with any chain after it in the same PEM file) and its key, replaceable while
// the service runs: each new TLS handshake takes the pair current at that moment, connections already
// established keep theirs. kiln-service reloads on SIGHUP.
class ServerCredentials {
 public:
  // Loads both files; throws Error naming the file that cannot be read or does not match.
  ServerCredentials(std::filesystem::path certificate, std::filesystem::path key);
  ~ServerCredentials();
  ServerCredentials(const ServerCredentials&) = delete;
  ServerCredentials& operator=(const ServerCredentials&) = delete;

  // Reads the files again. On any failure it throws and the previous pair stays in use.
  void reload();
  // From now on every handshake on ctx presents the current pair (an SSL_CTX certificate callback).
  void attach(SSL_CTX* ctx);
  const std::filesystem::path& certificate_file() const { return certificate_file_; }

  struct Pair;

 private:
  std::shared_ptr<const Pair> current() const;
  static int on_handshake(SSL* ssl, void* self);

  std::filesystem::path certificate_file_, key_file_;
  mutable std::mutex mutex_;
  std::shared_ptr<const Pair> current_;
};

}  // namespace kiln::service
