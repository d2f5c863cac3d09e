#include "service/session_cache.hpp"

#include <ctime>

namespace kiln::service {

namespace {

int ex_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

SessionCache* cache_of(SSL* ssl) {
  return static_cast<SessionCache*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index()));
}

std::string id_of(SSL_SESSION* session) {
  unsigned int length = 0;
  const unsigned char* id = SSL_SESSION_get_id(session, &length);
  return {reinterpret_cast<const char*>(id), length};
}

// The length of the first PSK identity the ClientHello offers (RFC 8446 4.2.11), 0 when it offers none.
std::size_t first_psk_identity_length(SSL* ssl) {
  const unsigned char* data = nullptr;
  std::size_t size = 0;
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &data, &size) != 1 || size < 4) return 0;
  return static_cast<std::size_t>(data[2]) << 8 | data[3];
}

}  // namespace

SessionCache::~SessionCache() {
  for (auto& [id, entry] : sessions_) SSL_SESSION_free(entry.session);
}

void SessionCache::attach(SSL_CTX* ctx) {
  SSL_CTX_set_ex_data(ctx, ex_index(), this);
  // OpenSSL's own cache would keep every session it issues (a ticket callback is set) and is never asked:
  // this one keeps the stateful ones only, and hands each out once.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx, &SessionCache::on_new_session);
  SSL_CTX_sess_set_get_cb(ctx, &SessionCache::on_get_session);
  SSL_CTX_set_client_hello_cb(ctx, &SessionCache::on_client_hello, this);
}

std::size_t SessionCache::size() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

bool SessionCache::has_room_for(SSL* ssl) {
  auto* self = cache_of(ssl);
  return self && self->has_room();
}

void SessionCache::issue_stateful(SSL* ssl) {
  auto* self = cache_of(ssl);
  if (!self) return;
  // A full cache issues stateless tickets (resumed at their usual cost) rather than push out sessions that
  // devices are about to use: a cache smaller than the fleet must not turn resumptions into full handshakes.
  if (self->has_room())
    SSL_set_options(ssl, SSL_OP_NO_TICKET);
  else
    SSL_clear_options(ssl, SSL_OP_NO_TICKET);
}

bool SessionCache::has_room() {
  std::lock_guard lock(mutex_);
  drop_expired();
  return sessions_.size() < capacity_;
}

void SessionCache::drop_expired() {
  // Sessions go in as their tickets are issued, so the oldest expire first.
  auto now = time(nullptr);
  while (!order_.empty()) {
    auto oldest = sessions_.find(order_.front());
    SSL_SESSION* session = oldest->second.session;
    if (now - SSL_SESSION_get_time(session) < SSL_SESSION_get_timeout(session)) break;
    SSL_SESSION_free(session);
    sessions_.erase(oldest);
    order_.pop_front();
  }
}

// A stateful ticket is a session ID (32 bytes); a stateless one is far longer. OpenSSL opens the kind the
// connection's SSL_OP_NO_TICKET says, so it is set here for the kind the client offers.
int SessionCache::on_client_hello(SSL* ssl, int* /*alert*/, void* /*self*/) {
  if (first_psk_identity_length(ssl) == SSL_MAX_SSL_SESSION_ID_LENGTH)
    SSL_set_options(ssl, SSL_OP_NO_TICKET);
  else
    SSL_clear_options(ssl, SSL_OP_NO_TICKET);
  return SSL_CLIENT_HELLO_SUCCESS;
}

// Called for every ticket issued; only a stateful one's session is kept.
int SessionCache::on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* self = cache_of(ssl);
  if (!self || (SSL_get_options(ssl) & SSL_OP_NO_TICKET) == 0) return 0;
  // 1: the cache keeps the reference OpenSSL gave it. Refused (another handshake took the last room since
  // issue_stateful looked): OpenSSL frees the session, and this device's next resumption is a full handshake
  // rather than another device's.
  return self->put(session) ? 1 : 0;
}

SSL_SESSION* SessionCache::on_get_session(SSL* ssl, const unsigned char* id, int length, int* copy) {
  *copy = 0;  // the reference goes to OpenSSL: the session leaves the cache, used once
  auto* self = cache_of(ssl);
  if (!self || length <= 0) return nullptr;
  SSL_SESSION* session = self->take(std::string(reinterpret_cast<const char*>(id), static_cast<std::size_t>(length)));
  if (session && time(nullptr) - SSL_SESSION_get_time(session) >= SSL_SESSION_get_timeout(session)) {
    SSL_SESSION_free(session);  // expired: a full handshake
    return nullptr;
  }
  return session;
}

bool SessionCache::put(SSL_SESSION* session) {
  std::string id = id_of(session);
  std::lock_guard lock(mutex_);
  if (auto it = sessions_.find(id); it != sessions_.end()) {  // cannot happen (random IDs): replace it
    SSL_SESSION_free(it->second.session);
    order_.erase(it->second.position);
    sessions_.erase(it);
  }
  drop_expired();
  if (sessions_.size() >= capacity_) return false;
  order_.push_back(id);
  sessions_.emplace(std::move(id), Entry{session, std::prev(order_.end())});
  return true;
}

SSL_SESSION* SessionCache::take(const std::string& id) {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return nullptr;
  SSL_SESSION* session = it->second.session;
  order_.erase(it->second.position);
  sessions_.erase(it);
  return session;
}

}  // namespace kiln::service
