// Session-ticket keys: derived per hour from the directory's secret, the same on every instance holding it.
#include "service/ticket_keys.hpp"

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <filesystem>

#include "core/error.hpp"
#include "core/files.hpp"
#include "tests/support/temp_dir.hpp"

using kiln::Bytes;
using kiln::service::TicketKeys;

namespace {

Bytes secret_of(std::uint8_t fill) { return Bytes(32, fill); }

// Two hours' keys are the same keys: name, cipher key and MAC key.
bool same(const TicketKeys::Keys& a, const TicketKeys::Keys& b) {
  return a.name == b.name && a.cipher_key == b.cipher_key && a.mac_key == b.mac_key;
}

}  // namespace

TEST_CASE("ticket keys: one secret gives every holder the same keys each hour, and other keys the next hour") {
  TicketKeys one(secret_of(7)), same(secret_of(7)), other(secret_of(8));
  constexpr std::int64_t noon = 1'796'904'000;  // 2026-12-10T12:00:00Z, the start of an hour
  auto keys = one.keys_at(noon);
  CHECK(keys.name == same.keys_at(noon).name);
  CHECK(keys.cipher_key == same.keys_at(noon).cipher_key);
  CHECK(keys.mac_key == same.keys_at(noon).mac_key);
  CHECK(keys.name == one.keys_at(noon + 3599).name);  // the same hour
  CHECK(keys.name != one.keys_at(noon + 3600).name);
  CHECK(keys.cipher_key != one.keys_at(noon + 3600).cipher_key);
  CHECK(keys.name != other.keys_at(noon).name);
  CHECK(keys.cipher_key != other.keys_at(noon).cipher_key);
  CHECK(keys.cipher_key != keys.mac_key);
}

TEST_CASE("ticket keys: a ticket opens for three hours, with the current hour's keys first, and never with another secret") {
  TicketKeys keys(secret_of(1)), stranger(secret_of(2));
  constexpr std::int64_t sealed_at = 1'796'904'000 + 1800;
  auto name = keys.keys_at(sealed_at).name;
  auto now = keys.find(name.data(), sealed_at);
  REQUIRE(now);
  CHECK(now->second);  // sealed this hour: no renewal asked
  CHECK(now->first.cipher_key == keys.keys_at(sealed_at).cipher_key);
  auto next_hour = keys.find(name.data(), sealed_at + 3600);
  REQUIRE(next_hour);
  CHECK_FALSE(next_hour->second);  // an older hour's keys: opened, and the ticket renewed
  CHECK(next_hour->first.mac_key == keys.keys_at(sealed_at).mac_key);
  CHECK(keys.find(name.data(), sealed_at + 2 * 3600));
  CHECK_FALSE(keys.find(name.data(), sealed_at + 3 * 3600));  // past the window: a full handshake
  CHECK_FALSE(keys.find(name.data(), sealed_at - 3600));      // a name from the future is nobody's
  CHECK_FALSE(stranger.find(name.data(), sealed_at));
}

TEST_CASE("ticket keys: each hour's keys are derived once, equal fresh ones, and roll over when the hour turns") {
  TicketKeys keys(secret_of(3));
  constexpr std::int64_t noon = 1'796'904'000;  // 2026-12-10T12:00:00Z, the start of an hour
  CHECK(same(keys.sealing_keys(noon + 10), keys.keys_at(noon)));
  CHECK(keys.derivations() == 3);  // this hour and the two before it
  for (std::int64_t back = 0; back < TicketKeys::accepted_hours; ++back) {
    auto sealed = keys.keys_at(noon - back * 3600);
    auto found = keys.find(sealed.name.data(), noon + 3599);
    REQUIRE(found);
    CHECK(same(found->first, sealed));
    CHECK(found->second == (back == 0));
  }
  CHECK(keys.derivations() == 3);  // every handshake of the hour uses them

  // The hour turns: one new hour's keys, the previous two kept; the oldest no longer opens.
  CHECK(same(keys.sealing_keys(noon + 3600), keys.keys_at(noon + 3600)));
  CHECK(keys.derivations() == 4);
  auto last_hour = keys.find(keys.keys_at(noon).name.data(), noon + 3600);
  REQUIRE(last_hour);
  CHECK(same(last_hour->first, keys.keys_at(noon)));
  CHECK_FALSE(last_hour->second);
  CHECK(keys.find(keys.keys_at(noon - 3600).name.data(), noon + 3600));
  CHECK_FALSE(keys.find(keys.keys_at(noon - 2 * 3600).name.data(), noon + 3600));
  // A handshake whose clock read came just before the turn still gets that hour's keys, and the newer hour stays.
  CHECK(same(keys.sealing_keys(noon + 3599), keys.keys_at(noon)));
  CHECK(same(keys.sealing_keys(noon + 3601), keys.keys_at(noon + 3600)));
  CHECK(keys.derivations() == 4);  // the late one's window is the previous hour's, still cached
}

TEST_CASE("ticket keys: a clock stepped back derives the keys of its hours once, not on every handshake") {
  TicketKeys keys(secret_of(4));
  constexpr std::int64_t noon = 1'796'904'000;  // 2026-12-10T12:00:00Z, the start of an hour
  CHECK(same(keys.sealing_keys(noon + 10), keys.keys_at(noon)));
  CHECK(keys.derivations() == 3);

  // Stepped back five hours: that hour and the two before it, once; every later handshake of the hour uses them.
  constexpr std::int64_t back = noon - 5 * 3600;
  for (int handshake = 0; handshake < 100; ++handshake)
    CHECK(same(keys.sealing_keys(back + handshake), keys.keys_at(back)));
  CHECK(keys.derivations() == 3 + 3);
  auto older = keys.find(keys.keys_at(back - 3600).name.data(), back + 100);
  REQUIRE(older);
  CHECK_FALSE(older->second);
  CHECK(keys.derivations() == 3 + 3);

  // Its next hour: one new hour's keys, as when no clock stepped.
  for (int handshake = 0; handshake < 100; ++handshake)
    CHECK(same(keys.sealing_keys(back + 3600 + handshake), keys.keys_at(back + 3600)));
  CHECK(keys.derivations() == 3 + 3 + 1);

  // The clock catches up: the newest window, kept all along.
  CHECK(same(keys.sealing_keys(noon + 20), keys.keys_at(noon)));
  CHECK(keys.derivations() == 3 + 3 + 1);

  // The hour turns, then the clock steps back a few seconds across the turn: the previous hour's window again,
  // not derived again on every handshake until the clock reaches the new hour.
  CHECK(same(keys.sealing_keys(noon + 3602), keys.keys_at(noon + 3600)));
  CHECK(keys.derivations() == 3 + 3 + 1 + 1);
  for (int handshake = 0; handshake < 100; ++handshake)
    CHECK(same(keys.sealing_keys(noon + 3595 + handshake % 5), keys.keys_at(noon)));
  CHECK(keys.derivations() == 3 + 3 + 1 + 1);
}

TEST_CASE("ticket keys: the secret file is created 0600 once, read back the same, and refused when others may read it") {
  kiln::test::TempDir dir;
  auto path = dir.path() / "ticket-key";
  auto first = TicketKeys::load_or_create(path);
  CHECK(std::filesystem::file_size(path) == 32);
  constexpr auto owner_only = std::filesystem::perms::owner_read | std::filesystem::perms::owner_write;
  CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::all) == owner_only);
  auto again = TicketKeys::load_or_create(path);
  CHECK(first->keys_at(0).name == again->keys_at(0).name);
  REQUIRE(::chmod(path.c_str(), 0640) == 0);
  CHECK_THROWS_WITH_AS(TicketKeys::load_or_create(path), doctest::Contains("readable by others"), kiln::Error);
  kiln::write_file_atomic(dir.path() / "short", Bytes(16, 1), 0600);
  CHECK_THROWS_WITH_AS(TicketKeys::load_or_create(dir.path() / "short"), doctest::Contains("32 bytes"), kiln::Error);
}
