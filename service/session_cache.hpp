// An in-memory cache of TLS sessions for `kiln-service run --session-cache N` (docs/operations.md, "Fresh-
// connection check-ins"). With it, a listener hands out stateful TLS 1.3 tickets (a 32-byte session ID whose
// session stays in this process) instead of stateless ones (the session sealed with the ticket keys): resuming
// one costs no ticket decryption and, above all, no decoding of the session and its client certificate, which
// OpenSSL 3.0 makes the largest cost of a resumed check-in. Each session is used once (a resumption takes it
// out and its new ticket puts the next one in), so a device holds one entry. Expired sessions go; with N
// live ones, new tickets are stateless until there is room again. Stateless tickets (issued then, before, or
// by another instance) are still accepted. The price: a session lives
// in one process, so a restart, or another instance behind the load balancer, meets such a ticket with a full
// handshake; and memory for each device that checked in within a ticket's lifetime.
#pragma once

#include <cstddef>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include <openssl/ssl.h>

namespace kiln::service {

class SessionCache {
 public:
  explicit SessionCache(std::size_t capacity) : capacity_(capacity) {}
  ~SessionCache();
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;

  // ctx issues stateful tickets kept here and resumes them (`this` must outlive ctx). Stateless tickets are
  // still opened as before. Call after the context's ticket callbacks are set.
  void attach(SSL_CTX* ctx);
  std::size_t size() const;

  // Whether ssl's listener keeps sessions here and has room for one more: a resumption with a stateless ticket is
  // then worth a new ticket, a stateful one (a full cache would issue another stateless one).
  static bool has_room_for(SSL* ssl);
  // A generate-ticket callback calls this first: with a cache attached, the ticket about to be issued is a
  // stateful one.
  static void issue_stateful(SSL* ssl);

  // Whether another session fits; drops the expired sessions first.
  bool has_room();
  // Keeps `session` (taking the caller's reference) when it fits, checked under the same lock as the insert:
  // two handshakes that both saw room for one session do not push out a session a device is about to use.
  // false: refused, the reference stays the caller's.
  bool put(SSL_SESSION* session);
  // The session with this ID, out of the cache (the caller's reference now), or nullptr.
  SSL_SESSION* take(const std::string& id);

 private:
  static int on_client_hello(SSL* ssl, int* alert, void* self);
  static int on_new_session(SSL* ssl, SSL_SESSION* session);
  static SSL_SESSION* on_get_session(SSL* ssl, const unsigned char* id, int length, int* copy);
  void drop_expired();  // with mutex_ held

  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::list<std::string> order_;  // oldest first
  struct Entry {
    SSL_SESSION* session;
    std::list<std::string>::iterator position;
  };
  std::unordered_map<std::string, Entry> sessions_;
};

}  // namespace kiln::service
