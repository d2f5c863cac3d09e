// Session-ticket keys: derived from the secret and the clock's period, the same on every instance with the same
// secret; a ticket opens in its own period and the next; the secret file is made private and never replaced.
#include <doctest/doctest.h>

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "core/error.hpp"
#include "service/session_tickets.hpp"
#include "tests/support/temp_dir.hpp"

using kiln::service::SessionTicketKeys;

namespace {

SessionTicketKeys::Secret secret_of(std::uint8_t fill) {
  SessionTicketKeys::Secret secret{};
  secret.fill(fill);
  return secret;
}

}  // namespace

TEST_CASE("session-ticket keys are the same for the same secret and period, and differ otherwise") {
  SessionTicketKeys one(secret_of(1)), same(secret_of(1)), other(secret_of(2));
  auto key = one.key_of(100);
  CHECK(key.name == same.key_of(100).name);
  CHECK(key.cipher == same.key_of(100).cipher);
  CHECK(key.mac == same.key_of(100).mac);
  CHECK(key.name != one.key_of(101).name);
  CHECK(key.cipher != one.key_of(101).cipher);
  CHECK(key.name != other.key_of(100).name);
  CHECK(key.mac != other.key_of(100).mac);
  CHECK(key.cipher != key.mac);
}

TEST_CASE("a ticket opens in the period it was issued in and the next, renewed in the next") {
  SessionTicketKeys keys(secret_of(7), std::chrono::seconds(3600));
  const std::int64_t issued_at = 1'800'000'000;  // inside period 500,000
  CHECK(keys.period_of(issued_at) == 500'000);
  CHECK(keys.period_of(0) == 0);
  CHECK(keys.period_of(3599) == 0);
  CHECK(keys.period_of(3600) == 1);
  CHECK(keys.period_of(-1) == -1);
  auto name = keys.key_of(keys.period_of(issued_at)).name;

  auto now = keys.find(name.data(), issued_at + 10);
  REQUIRE(now);
  CHECK_FALSE(now->renew);
  CHECK(now->key.cipher == keys.key_of(500'000).cipher);

  auto next_period = keys.find(name.data(), issued_at + 3600);
  REQUIRE(next_period);
  CHECK(next_period->renew);

  CHECK_FALSE(keys.find(name.data(), issued_at + 2 * 3600));  // expired: a full handshake
  // Issued by an instance whose clock is a period ahead of this one.
  auto ahead = keys.find(name.data(), issued_at - 3600);
  REQUIRE(ahead);
  CHECK_FALSE(ahead->renew);
  CHECK_FALSE(keys.find(name.data(), issued_at - 2 * 3600));

  // Another secret's ticket never opens.
  SessionTicketKeys stranger(secret_of(8), std::chrono::seconds(3600));
  CHECK_FALSE(stranger.find(name.data(), issued_at));
  CHECK_THROWS_AS(SessionTicketKeys(secret_of(1), std::chrono::seconds(0)), kiln::Error);
}

TEST_CASE("the secret file is created private, read back, never replaced, and refused when malformed") {
  kiln::test::TempDir dir;
  auto file = dir.path() / "session-ticket.key";
  auto made = SessionTicketKeys::load_or_create(file);
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(SessionTicketKeys::load_or_create(file) == made);
  CHECK(made != SessionTicketKeys::Secret{});
  // Another directory gets another secret.
  CHECK(SessionTicketKeys::load_or_create(dir.path() / "other.key") != made);

  std::ofstream(file, std::ios::trunc) << std::string(64, 'a') << "\n";
  CHECK(SessionTicketKeys::load_or_create(file) == secret_of(0xaa));
  for (const char* bad : {"", "abc\n", "zz00000000000000000000000000000000000000000000000000000000000000\n"}) {
    std::ofstream(file, std::ios::trunc) << bad;
    try {
      SessionTicketKeys::load_or_create(file);
      FAIL("a malformed secret was accepted: " << bad);
    } catch (const kiln::Error& error) {
      CHECK(std::string(error.what()).find(file.string()) != std::string::npos);
    }
  }
}
