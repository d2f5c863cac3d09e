// TLS session tickets that every kiln-service instance started on a copy of one --dir can open.
//
// Devices check in on fresh connections; a resumed TLS 1.3 handshake (a ticket from an earlier connection)
// skips the certificate checks and signatures of a full one. OpenSSL's own ticket keys are random per process,
// so a restart, or the next instance behind a load balancer, would answer every ticket with a full handshake.
// Here the ticket keys are derived (HKDF-SHA256) from a secret kept in the service directory
// (session-ticket.key, 0600, made by `kiln-service init`) and the current period of the clock: each period has
// its own key, a ticket is accepted for the period it was issued in and the next one (so it lives one to two
// periods), and a ticket from the previous period is renewed. Instances share tickets by sharing the file, as
// they share the TLS certificate; replacing the file on every instance invalidates every ticket.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace kiln::service {

class SessionTicketKeys {
 public:
  using Secret = std::array<std::uint8_t, 32>;
  struct Key {
    std::array<std::uint8_t, 16> name;  // sent in the clear in the ticket: which key opens it
    std::array<std::uint8_t, 32> cipher;  // AES-256-CBC
    std::array<std::uint8_t, 32> mac;     // HMAC-SHA256
  };
  struct Found {
    Key key;
    bool renew;  // issued in an earlier period: accept it and give the client a new ticket
  };

  explicit SessionTicketKeys(const Secret& secret, std::chrono::seconds period = std::chrono::hours(1));

  // Reads the secret from `file` (64 hex digits), creating the file (0600, never replacing one that appears
  // meanwhile) when it does not exist. Throws Error naming the file when it cannot be read or is malformed.
  static Secret load_or_create(const std::filesystem::path& file);

  // From now on `ctx` issues and opens tickets with these keys, and sessions live as long as their ticket
  // (two periods). A ticket also carries the client's certificate chain (see peer_certificates). This object
  // must outlive `ctx`.
  void attach(SSL_CTX* ctx) const;

  std::int64_t period_of(std::int64_t unix_seconds) const;
  // The key of the period with this index (deterministic: every instance with the same secret derives it).
  Key key_of(std::int64_t period) const;
  // The key whose name is `name`, when it is the key of the current period or of the one before (renew), or
  // of the next one (another instance's clock is a little ahead). nullopt: the ticket cannot be opened here.
  std::optional<Found> find(const std::uint8_t* name, std::int64_t unix_seconds) const;
  std::chrono::seconds period() const { return period_; }

  // The client's certificate (first) and the chain it sent (DER each; empty: none). A resumed session
  // carries only the leaf in OpenSSL's session state: the chain comes from the ticket, where attach() put it
  // when the ticket was issued, so a device certified through an intermediate CA is the same on every
  // connection, full or resumed.
  static std::vector<std::string> peer_certificates(SSL* ssl);

 private:
  static int on_new_ticket(SSL* ssl, void* self);
  static int on_ticket(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                       int encrypt);

  Secret secret_;
  std::chrono::seconds period_;
};

}  // namespace kiln::service
