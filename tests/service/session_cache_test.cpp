// Tests for service/session_cache: the room check and the insert of a kept TLS session (--session-cache). A full
// cache refuses a session rather than push out one a device is about to resume; expired sessions make room.
#include <doctest/doctest.h>

#include <openssl/ssl.h>

#include <ctime>
#include <string>

#include "service/session_cache.hpp"

using kiln::service::SessionCache;

namespace {

// A session with a 32-byte ID of `fill`, issued `age` seconds ago for two hours (the listener's ticket lifetime).
SSL_SESSION* session_of(unsigned char fill, long age = 0) {
  SSL_SESSION* session = SSL_SESSION_new();
  REQUIRE(session);
  std::string id(SSL_MAX_SSL_SESSION_ID_LENGTH, static_cast<char>(fill));
  REQUIRE(SSL_SESSION_set1_id(session, reinterpret_cast<const unsigned char*>(id.data()),
                              static_cast<unsigned int>(id.size())) == 1);
  SSL_SESSION_set_time(session, static_cast<long>(time(nullptr)) - age);
  SSL_SESSION_set_timeout(session, 7200);
  return session;
}

std::string id_of(unsigned char fill) {
  return std::string(SSL_MAX_SSL_SESSION_ID_LENGTH, static_cast<char>(fill));
}

}  // namespace

TEST_CASE("session cache: a full cache refuses a session instead of pushing out the oldest") {
  SessionCache cache(2);
  REQUIRE(cache.put(session_of(1)));
  // Both handshakes ask before either ticket is issued: each is told there is room.
  CHECK(cache.has_room());
  CHECK(cache.has_room());
  CHECK(cache.put(session_of(2)));
  SSL_SESSION* late = session_of(3);
  CHECK_FALSE(cache.put(late));  // full: refused, the reference stays ours
  SSL_SESSION_free(late);
  CHECK(cache.size() == 2);
  CHECK_FALSE(cache.has_room());
  // The oldest session, the one an eviction would have taken, still resumes; the refused one does not.
  SSL_SESSION* oldest = cache.take(id_of(1));
  CHECK(oldest);
  SSL_SESSION_free(oldest);
  CHECK_FALSE(cache.take(id_of(3)));
  // Taking one out makes room again.
  CHECK(cache.has_room());
  CHECK(cache.put(session_of(4)));
  CHECK(cache.size() == 2);
}

TEST_CASE("session cache: an expired session makes room for a new one at the insert") {
  SessionCache cache(1);
  REQUIRE(cache.put(session_of(1, 7200)));  // issued two hours ago: expired
  CHECK(cache.put(session_of(2)));
  CHECK(cache.size() == 1);
  CHECK_FALSE(cache.take(id_of(1)));
  SSL_SESSION* fresh = cache.take(id_of(2));
  CHECK(fresh);
  SSL_SESSION_free(fresh);
}
